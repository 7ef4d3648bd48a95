"""partial: the head plus the top K backbone layer groups train; everything below stays frozen,
so the backward pass stops early (cheaper) and low-level features are kept."""

from __future__ import annotations

from typing import Any

from torch import nn

from . import STRATEGIES
from .base import MIN_STEPS, ParamCounts, StrategyDefaults, count_params, set_trainable_groups


@STRATEGIES.register("partial")
class PartialStrategy(StrategyDefaults):
    name = "partial"
    defaults = {"epochs": 3, "lr": 1e-4, "head_lr_factor": 10.0, "patience": 3, "min_steps": MIN_STEPS}
    options = ("unfreeze_top",)
    supports_layer_decay = True

    def __init__(self, unfreeze_top: int | None = None, **_: Any):
        self.top = 2 if unfreeze_top is None else unfreeze_top

    def prepare(self, model: nn.Module) -> ParamCounts:
        set_trainable_groups(model, self.top)
        return count_params(model)
