"""The Strategy contract and the helpers strategies share."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import torch
from torch import nn


@dataclass
class ParamCounts:
    trainable: int
    total: int

    def describe(self) -> str:
        pct = 100.0 * self.trainable / max(self.total, 1)
        return f"{self.trainable:,} of {self.total:,} parameters train ({pct:.2f}%)"


class Strategy(Protocol):
    name: ClassVar[str]
    defaults: ClassVar[dict[str, float]]  # epochs, lr, head_lr_factor when the config leaves them unset
    uses_feature_cache: ClassVar[bool]  # True: the backbone is frozen and run once, features cached

    def prepare(self, model: nn.Module) -> ParamCounts: ...

    def param_groups(self, model: nn.Module, train_cfg: Any) -> list[dict[str, Any]]: ...

    def on_epoch_start(self, model: nn.Module, epoch: int) -> bool: ...

    def trainable_state(self, model: nn.Module) -> dict[str, torch.Tensor]: ...


def count_params(model: nn.Module) -> ParamCounts:
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return ParamCounts(trainable, total)


def no_decay(name: str, p: torch.Tensor) -> bool:
    """Biases and normalisation weights are not decayed (standard AdamW practice)."""
    return p.ndim < 2 or "norm" in name.lower() or name.endswith(".bias")


def split_decay(named: list[tuple[str, torch.Tensor]], lr: float, weight_decay: float, tag: str) -> list[dict]:
    decay = [p for n, p in named if p.requires_grad and not no_decay(n, p)]
    plain = [p for n, p in named if p.requires_grad and no_decay(n, p)]
    groups = []
    if decay:
        groups.append({"params": decay, "lr": lr, "weight_decay": weight_decay, "name": f"{tag}"})
    if plain:
        groups.append({"params": plain, "lr": lr, "weight_decay": 0.0, "name": f"{tag}.no_decay"})
    return groups


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
