"""bitfit: only the backbone's bias terms (about 0.1% of weights) and the head train
(Ben Zaken et al., 2022): tiny checkpoints, little forgetting."""

from __future__ import annotations

from typing import Any

from torch import nn

from . import STRATEGIES
from .base import MIN_STEPS, ParamCounts, StrategyDefaults, count_params, head_param_groups, split_decay


@STRATEGIES.register("bitfit")
class BitFitStrategy(StrategyDefaults):
    name = "bitfit"
    defaults = {"epochs": 5, "lr": 1e-3, "head_lr_factor": 1.0, "patience": 3, "min_steps": MIN_STEPS}

    def prepare(self, model: nn.Module) -> ParamCounts:
        for n, p in model.backbone.named_parameters():
            p.requires_grad_(n.endswith(".bias"))
        for p in model.head.parameters():
            p.requires_grad_(True)
        return count_params(model)

    def param_groups(self, model: nn.Module, train_cfg: Any) -> list[dict[str, Any]]:
        body = split_decay(list(model.backbone.named_parameters(prefix="backbone")), train_cfg.lr, 0.0, "backbone")
        return body + head_param_groups(model, train_cfg)
