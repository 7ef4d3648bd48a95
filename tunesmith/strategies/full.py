"""full: every weight trains; the new head at a higher LR than the pre-trained body."""
from __future__ import annotations

from typing import Any

from torch import nn

from . import STRATEGIES
from .base import ParamCounts, count_params, split_decay, trainable_state


@STRATEGIES.register("full")
class FullStrategy:
    name = "full"
    defaults = {"epochs": 3, "lr": 5e-5, "head_lr_factor": 10.0, "patience": 3}
    uses_feature_cache = False

    def prepare(self, model: nn.Module) -> ParamCounts:
        for p in model.parameters():
            p.requires_grad_(True)
        return count_params(model)

    def param_groups(self, model: nn.Module, train_cfg: Any) -> list[dict[str, Any]]:
        body = list(model.backbone.named_parameters(prefix="backbone"))
        head = list(model.head.named_parameters(prefix="head"))
        return (split_decay(body, train_cfg.lr, train_cfg.weight_decay, "backbone")
                + split_decay(head, train_cfg.head_lr, train_cfg.weight_decay, "head"))

    def on_epoch_start(self, model: nn.Module, epoch: int) -> bool:
        return False

    def trainable_state(self, model: nn.Module):
        return trainable_state(model)
