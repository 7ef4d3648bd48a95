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
    defaults: ClassVar[dict[str, float]]  # epochs, lr, head_lr_factor, patience when the config leaves them unset
    uses_feature_cache: ClassVar[bool]  # True: the backbone is frozen and run once, features cached
    options: ClassVar[tuple[str, ...]]  # strategy.* config options it reads; others are config errors
    supports_layer_decay: ClassVar[bool]

    def prepare(self, model: nn.Module) -> ParamCounts: ...

    def param_groups(self, model: nn.Module, train_cfg: Any) -> list[dict[str, Any]]: ...

    def on_epoch_start(self, model: nn.Module, epoch: int) -> bool: ...  # True: the trainable set changed

    def on_step(self, model: nn.Module, step: int) -> bool: ...  # after optimizer step `step`; True: changed

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


def backbone_param_groups(model: nn.Module, train_cfg: Any) -> list[dict]:
    """Backbone parameters grouped by `layer_groups()` (bottom to top). With train.layer_decay d,
    the top group learns at lr, the one below at lr*d, and so on down to the embeddings
    (DESIGN rule 4: the same order drives unfreezing)."""
    params = dict(model.backbone.named_parameters())
    groups = model.backbone.layer_groups()
    decay = train_cfg.layer_decay or 1.0
    out = []
    for i, (gname, names) in enumerate(groups):
        lr = train_cfg.lr * decay ** (len(groups) - 1 - i)
        out += split_decay([(n, params[n]) for n in names], lr, train_cfg.weight_decay, f"backbone.{gname}")
    return out


def head_param_groups(model: nn.Module, train_cfg: Any) -> list[dict]:
    return split_decay(list(model.head.named_parameters(prefix="head")), train_cfg.head_lr,
                       train_cfg.weight_decay, "head")


def set_trainable_groups(model: nn.Module, top: int) -> None:
    """Freeze the backbone except its `top` highest layer groups; the head always trains."""
    groups = model.backbone.layer_groups()
    if top > len(groups):
        from ..errors import ConfigError

        raise ConfigError(
            f"cannot unfreeze {top} layer groups: this backbone has {len(groups)} "
            f"({', '.join(g for g, _ in groups)})"
        )
    train_names = {n for _, names in groups[len(groups) - top:] for n in names} if top else set()
    for n, p in model.backbone.named_parameters():
        p.requires_grad_(n in train_names)
    for p in model.head.parameters():
        p.requires_grad_(True)


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
