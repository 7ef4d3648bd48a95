"""full: every weight trains; the new head at a higher LR than the pre-trained body."""
from __future__ import annotations

from typing import Any

from torch import nn

from . import STRATEGIES
from .base import ParamCounts, backbone_param_groups, count_params, head_param_groups, trainable_state


@STRATEGIES.register("full")
class FullStrategy:
    name = "full"
    defaults = {"epochs": 3, "lr": 5e-5, "head_lr_factor": 10.0, "patience": 3}
    uses_feature_cache = False
    options = ()
    supports_layer_decay = True

    def __init__(self, **_: Any):
        pass

    def prepare(self, model: nn.Module) -> ParamCounts:
        for p in model.parameters():
            p.requires_grad_(True)
        return count_params(model)

    def param_groups(self, model: nn.Module, train_cfg: Any) -> list[dict[str, Any]]:
        return backbone_param_groups(model, train_cfg) + head_param_groups(model, train_cfg)

    def on_epoch_start(self, model: nn.Module, epoch: int) -> bool:
        return False

    def on_step(self, model: nn.Module, step: int) -> bool:
        return False

    def trainable_state(self, model: nn.Module):
        return trainable_state(model)
