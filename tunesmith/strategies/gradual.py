"""gradual: ULMFiT-style gradual unfreezing. The head trains alone first; every `unfreeze_every`
epochs (or `unfreeze_every_steps` optimizer steps) one more backbone layer group, from the top,
joins. The optimizer keeps the state of parameters already training and picks up the new ones."""

from __future__ import annotations

from typing import Any

from torch import nn

from . import STRATEGIES
from .base import MIN_STEPS, ParamCounts, StrategyDefaults, count_params, set_trainable_groups


@STRATEGIES.register("gradual")
class GradualStrategy(StrategyDefaults):
    name = "gradual"
    defaults = {"epochs": 4, "lr": 1e-4, "head_lr_factor": 10.0, "patience": 3, "min_steps": MIN_STEPS}
    options = ("unfreeze_every", "unfreeze_every_steps")
    supports_layer_decay = True

    def __init__(self, unfreeze_every: int | None = None, unfreeze_every_steps: int | None = None, **_: Any):
        self.every_steps = unfreeze_every_steps
        self.every = unfreeze_every or 1
        self.top = 0

    def _set_top(self, model: nn.Module, top: int) -> bool:
        top = min(top, len(model.backbone.layer_groups()))
        if top == self.top:
            return False
        self.top = top
        set_trainable_groups(model, top)
        return True

    def prepare(self, model: nn.Module) -> ParamCounts:
        self.top = 0
        set_trainable_groups(model, 0)
        return count_params(model)

    def on_epoch_start(self, model: nn.Module, epoch: int) -> bool:
        return False if self.every_steps else self._set_top(model, epoch // self.every)

    def on_step(self, model: nn.Module, step: int) -> bool:
        return self._set_top(model, step // self.every_steps) if self.every_steps else False
