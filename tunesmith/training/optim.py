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
