"""AdamW with linear warmup and linear decay to zero."""

from __future__ import annotations

import torch


def build_optimizer(param_groups: list[dict], lr: float, device_type: str) -> torch.optim.Optimizer:
    kwargs = {}
    if device_type in ("cpu", "cuda"):
        kwargs["fused"] = True  # one kernel per step instead of a loop over tensors
    return torch.optim.AdamW(param_groups, lr=lr, **kwargs)


def warmup_linear_decay(optimizer: torch.optim.Optimizer, total_steps: int, warmup_ratio: float):
    warmup = int(round(total_steps * warmup_ratio))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def refresh_param_groups(optimizer, scheduler, groups: list[dict]) -> None:
    """Swap in a new set of param groups mid-run (gradual unfreezing). Optimizer state is keyed by
    parameter, so parameters already training keep their moments; new ones start fresh. The
    scheduler learns the new groups' base LRs and the current warmup/decay factor applies at once."""
    factor_fn = scheduler.lr_lambdas[0]
    optimizer.param_groups.clear()
    for g in groups:
        optimizer.add_param_group(g)
    factor = factor_fn(scheduler.last_epoch)
    scheduler.base_lrs = []
    for g in optimizer.param_groups:
        g["initial_lr"] = g["lr"]
        scheduler.base_lrs.append(g["lr"])
        g["lr"] = g["initial_lr"] * factor
    scheduler.lr_lambdas = [factor_fn] * len(optimizer.param_groups)
