"""full: every weight trains; the new head at a higher LR than the pre-trained body."""

from __future__ import annotations

from torch import nn

from . import STRATEGIES
from .base import MIN_STEPS, ParamCounts, StrategyDefaults, count_params


@STRATEGIES.register("full")
class FullStrategy(StrategyDefaults):
    name = "full"
    defaults = {"epochs": 3, "lr": 5e-5, "head_lr_factor": 10.0, "patience": 3, "min_steps": MIN_STEPS}
    supports_layer_decay = True

    def prepare(self, model: nn.Module) -> ParamCounts:
        for p in model.parameters():
            p.requires_grad_(True)
        return count_params(model)
