"""partial: the head plus the top K backbone layer groups train; everything below stays frozen,
so the backward pass stops early (cheaper) and low-level features are kept."""
from __future__ import annotations

from typing import Any

from torch import nn

from . import STRATEGIES
from .base import (ParamCounts, backbone_param_groups, count_params, head_param_groups, set_trainable_groups,
                   trainable_state)


@STRATEGIES.register("partial")
class PartialStrategy:
    name = "partial"
    defaults = {"epochs": 3, "lr": 1e-4, "head_lr_factor": 10.0, "patience": 3}
    uses_feature_cache = False
    options = ("unfreeze_top",)
    supports_layer_decay = True

    def __init__(self, unfreeze_top: int | None = None, **_: Any):
        self.top = 2 if unfreeze_top is None else unfreeze_top

    def prepare(self, model: nn.Module) -> ParamCounts:
        set_trainable_groups(model, self.top)
        return count_params(model)

    def param_groups(self, model: nn.Module, train_cfg: Any) -> list[dict[str, Any]]:
        return backbone_param_groups(model, train_cfg) + head_param_groups(model, train_cfg)

    def on_epoch_start(self, model: nn.Module, epoch: int) -> bool:
        return False

    def on_step(self, model: nn.Module, step: int) -> bool:
        return False

    def trainable_state(self, model: nn.Module):
        return trainable_state(model)
