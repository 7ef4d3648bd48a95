"""gradual: ULMFiT-style gradual unfreezing. Epoch 0 trains the head alone; every
`unfreeze_every` epochs one more backbone layer group (from the top) joins. The optimizer keeps
the state of parameters already training and picks up the new ones."""
from __future__ import annotations

from typing import Any

from torch import nn

from . import STRATEGIES
from .base import (ParamCounts, backbone_param_groups, count_params, head_param_groups, set_trainable_groups,
                   trainable_state)


@STRATEGIES.register("gradual")
class GradualStrategy:
    name = "gradual"
    defaults = {"epochs": 4, "lr": 1e-4, "head_lr_factor": 10.0, "patience": 3}
    uses_feature_cache = False
    options = ("unfreeze_every",)
    supports_layer_decay = True

    def __init__(self, unfreeze_every: int | None = None, **_: Any):
        self.every = unfreeze_every or 1
        self.top = 0

    def _top_for(self, model: nn.Module, epoch: int) -> int:
        return min(epoch // self.every, len(model.backbone.layer_groups()))

    def prepare(self, model: nn.Module) -> ParamCounts:
        self.top = 0
        set_trainable_groups(model, 0)
        return count_params(model)

    def param_groups(self, model: nn.Module, train_cfg: Any) -> list[dict[str, Any]]:
        return backbone_param_groups(model, train_cfg) + head_param_groups(model, train_cfg)

    def on_epoch_start(self, model: nn.Module, epoch: int) -> bool:
        top = self._top_for(model, epoch)
        if top == self.top:
            return False
        self.top = top
        set_trainable_groups(model, top)
        return True

    def trainable_state(self, model: nn.Module):
        return trainable_state(model)
