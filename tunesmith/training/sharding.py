"""Sharded training (`train.distributed: fsdp`): FSDP2 through torch.distributed, processes formed by accelerate.

Each backbone layer (the repeated blocks of `layer_groups()`), then the whole task model, is wrapped with
`torch.distributed.fsdp.fully_shard` over a 1-D mesh of every process: each process keeps 1/N of every
parameter, of its gradient and of the optimizer state (the optimizer is built after sharding, on the shards),
and a layer's full weights exist only while it runs. The same code runs on CPU (gloo) and GPUs (NCCL);
accelerate's own FSDP plugin is not used: on CPU it silently leaves the model unsharded.

What leaves the sharded model is always whole: `trainable_state` gathers the trainable weights, full, onto
the main process's CPU (every process must call it: it is a collective), `load_trainable` spreads the main
process's full weights back into every process's shards, and `unsharded` rebuilds an ordinary model on the
main process at the end of training for the final evaluation and the run folder.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Iterable

import torch
from torch import nn

from ..errors import ConfigError
from ..strategies.base import StrategyDefaults


def wanted(train_cfg, world: int) -> bool:
    """Shard this run? train.distributed fsdp, or `accelerate launch` with an FSDP config of accelerate's
    (ACCELERATE_USE_FSDP: tunesmith shards the model itself, the same way). One process has nothing to
    shard: it trains as without fsdp."""
    asked = train_cfg.distributed == "fsdp" or os.environ.get("ACCELERATE_USE_FSDP", "").lower() in ("1", "true")
    return asked and world > 1


def check(strategy, train_cfg, precision: str | None = None) -> None:
    """What sharded training refuses, before any work."""
    cls = type(strategy)
    if cls.on_epoch_start is not StrategyDefaults.on_epoch_start or cls.on_step is not StrategyDefaults.on_step:
        raise ConfigError(
            f"train.distributed fsdp: strategy {strategy.name!r} changes which weights train during the run, which "
            "sharded training does not follow (the shards and the optimizer are built once). Use full, partial, "
            "bitfit or lora, or train.distributed ddp"
        )
    if precision == "fp16":
        raise ConfigError("train.distributed fsdp: fp16's loss scaling does not apply to sharded gradients; use bf16")


def layer_modules(model: nn.Module) -> list[nn.Module]:
    """The backbone's repeated layers (its "layer.i" groups, the ones partial and gradual unfreeze), each the
    module holding all of that group's parameters."""
    out = []
    for group, names in model.backbone.layer_groups():
        if not group.startswith("layer.") or not names:
            continue
        parts = [n.split(".")[:-1] for n in names]  # each parameter's module path
        common = parts[0]
        for p in parts[1:]:
            k = 0
            while k < min(len(common), len(p)) and common[k] == p[k]:
                k += 1
            common = common[:k]
        if common:
            out.append(model.backbone.get_submodule(".".join(common)))
    return out


def meta_copy(model: nn.Module) -> nn.Module:
    """The model's structure with its parameters on the "meta" device (no memory): what `unsharded` fills
    with the full weights at the end. Buffers are copied as they are (small; some are not in a state dict)."""
    memo = {id(p): nn.Parameter(torch.empty_like(p, device="meta"), p.requires_grad) for p in model.parameters()}
    return copy.deepcopy(model, memo)


def shard(model: nn.Module, device: torch.device, world: int) -> int:
    """Shard `model` in place over `world` processes: every backbone layer, then the rest (embeddings, head).
    -> the number of parameter elements this process holds."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh(device.type, (world,))
    model.to(device)
    for layer in layer_modules(model):
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return sum(_local(p).numel() for p in model.parameters())


def resharded(model: nn.Module) -> nn.Module:
    """Every layer back to its shards. The root keeps its weights gathered after a forward pass (FSDP2's default
    for the root, whose backward follows at once): after an evaluation, its parameters would be plain tensors."""
    from torch.distributed.fsdp import FSDPModule

    for m in model.modules():
        if isinstance(m, FSDPModule):
            m.reshard()
    return model


def _local(t: torch.Tensor) -> torch.Tensor:
    from torch.distributed.tensor import DTensor

    return t.to_local() if isinstance(t, DTensor) else t


def trainable_names(strategy, model: nn.Module) -> set[str]:
    return set(strategy.trainable_state(model))


def trainable_state(model: nn.Module, names: Iterable[str], main: bool) -> dict[str, torch.Tensor]:
    """The weights named `names`, full, on the main process's CPU ({} on the others). Gathers one parameter
    at a time (a collective: every process calls it), never the frozen ones."""
    from torch.distributed.tensor import DTensor

    names = set(names)
    out: dict[str, torch.Tensor] = {}
    resharded(model)
    for name, t in [*model.named_parameters(), *model.named_buffers()]:  # the same order on every process
        if name in names:
            full = t.full_tensor() if isinstance(t, DTensor) else t
            if main:
                out[name] = full.detach().to("cpu", copy=True)
    return out


def load_trainable(model: nn.Module, weights: dict[str, torch.Tensor]) -> None:
    """The main process's full `weights` (a subset of the model's) into every process's shards."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    opts = StateDictOptions(full_state_dict=True, broadcast_from_rank0=True, strict=False)
    set_model_state_dict(resharded(model), dict(weights), options=opts)


def optimizer_state(model: nn.Module, optimizer) -> dict:
    """The optimizer's state, full and keyed by parameter name, on the main process's CPU (a collective)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return get_optimizer_state_dict(resharded(model), optimizer, options=opts)


def load_optimizer_state(model: nn.Module, optimizer, state: dict) -> None:
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    opts = StateDictOptions(full_state_dict=True, broadcast_from_rank0=True)
    set_optimizer_state_dict(resharded(model), optimizer, state, options=opts)


class Saved:
    """A state dict already gathered, where save_checkpoint expects an optimizer."""

    def __init__(self, state: dict):
        self.state = state

    def state_dict(self) -> dict:
        return self.state


def unsharded(model: nn.Module, skeleton: nn.Module | None, device: torch.device) -> nn.Module | None:
    """The whole trained model as an ordinary module on the main process (None on the others: `skeleton`,
    the `meta_copy` taken before sharding, is the main process's only). A collective. On the training
    device where it fits (the final evaluation runs there), else on the CPU."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    full = get_model_state_dict(resharded(model), options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if skeleton is None:
        return None
    skeleton.load_state_dict(full, assign=True)
    missing = [n for n, p in skeleton.named_parameters() if p.is_meta]
    if missing:
        raise RuntimeError(f"fsdp: the gathered weights lack {', '.join(missing[:5])}")
    try:
        return skeleton.to(device)
    except torch.OutOfMemoryError:  # a model trained sharded because it does not fit one device
        return skeleton.to("cpu")
