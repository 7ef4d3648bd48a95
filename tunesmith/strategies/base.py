"""The Strategy contract and the helpers strategies share."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

import torch
from torch import nn

# A small set gets at least this many optimizer steps when train.epochs is left to the defaults: on
# 10 image classes, 3 epochs were 27 steps, too few to move a pre-trained model (issue 12). Early
# stopping still ends a run that has stopped improving.
MIN_STEPS = 100
MAX_DEFAULT_EPOCHS = 100


@dataclass
class ParamCounts:
    trainable: int
    total: int

    def describe(self) -> str:
        pct = 100.0 * self.trainable / max(self.total, 1)
        return f"{self.trainable:,} of {self.total:,} parameters train ({pct:.2f}%)"


@dataclass
class Choice:
    """Which strategy a run uses, and why: itself for every strategy but one that chooses (auto)."""

    strategy: str
    reasons: list[str] = field(default_factory=list)
    asked: str | None = None  # the strategy that chose, where it is another
    settings: dict[str, Any] = field(default_factory=dict)  # dotted config keys the choice also sets (train.lr)
    candidates: list[dict[str, Any]] = field(default_factory=list)  # what was measured, for log, metrics, report
    checkpoints: Path | None = None  # a finished candidate's checkpoints: the run resumes from them, not from zero
    refit: bool = False  # the run trains on training + validation rows (settings fix its schedule)
    # with a refit that trains for epochs: the training loss its settings reached at its last epoch when chosen
    # (the run warns when its own ends far above it)
    refit_train_loss: float | None = None
    record: dict[str, Any] = field(default_factory=dict)  # anything else metrics.json["run"][asked] keeps

    def describe(self) -> str:
        return f"{self.asked} picked {self.strategy}: " + "; ".join(self.reasons)


@dataclass
class ChoiceContext:
    """What a strategy that chooses may look at: the training data, the model, the task. (What it
    costs to look, e.g. counting the model's parameters, is that strategy's to pay, not every run's.)"""

    labels: list[str] | None  # class names of the training rows (tasks with labels)
    model_dir: Path
    modality: str
    task: Any  # the task class
    validation_size: int | None = None  # rows in the validation split
    cfg: Any = None  # the run's config as given (a strategy that races candidates derives theirs from it)
    workdir: Path | None = None  # where a strategy that measures may write candidate runs (deleted after)
    resolve: Any = None  # cfg -> the same cfg with every strategy default filled in, as the run would fill them
    reporter: Any = None  # the run's console


class Strategy(Protocol):
    name: ClassVar[str]
    defaults: ClassVar[dict[str, float]]  # epochs, lr, head_lr_factor, patience when the config leaves them unset
    uses_feature_cache: ClassVar[bool]  # True: the backbone is frozen and run once, features cached
    options: ClassVar[tuple[str, ...]]  # strategy.* config options it reads; others are config errors
    supports_layer_decay: ClassVar[bool]

    solves_head: bool  # the head is solved on cached features (training/solve.py) rather than trained by fit()

    @classmethod
    def check_task(cls, task_cls) -> None: ...  # ValueError naming why this strategy cannot train that task

    @classmethod
    def check_config(cls, cfg) -> None: ...  # ValueError naming config keys that do not apply to it

    @classmethod
    def adapt(cls, tree: dict) -> dict: ...  # a config tree less the keys check_config would refuse

    @classmethod
    def pick(cls, context: ChoiceContext) -> Choice: ...  # the strategy a run with this name trains with

    def prepare(self, model: nn.Module) -> ParamCounts: ...

    def param_groups(self, model: nn.Module, train_cfg: Any) -> list[dict[str, Any]]: ...

    def on_epoch_start(self, model: nn.Module, epoch: int) -> bool: ...  # True: the trainable set changed

    def on_step(self, model: nn.Module, step: int) -> bool: ...  # after optimizer step `step`; True: changed

    def trainable_state(self, model: nn.Module) -> dict[str, torch.Tensor]: ...

    def adapter_config(self) -> dict[str, Any] | None: ...  # peft config of adapters it added, saved with the run


class StrategyDefaults:
    """The hooks most strategies leave alone; a strategy file holds only what differs."""

    uses_feature_cache: ClassVar[bool] = False
    options: ClassVar[tuple[str, ...]] = ()
    supports_layer_decay: ClassVar[bool] = False
    solves_head: bool = False  # True: the head is solved on cached features (training/solve.py), not trained

    def __init__(self, **_: Any):
        pass

    @classmethod
    def check_task(cls, task_cls) -> None:
        return None

    @classmethod
    def check_config(cls, cfg) -> None:
        return None

    @classmethod
    def adapt(cls, tree: dict) -> dict:
        """A config tree written for another strategy (auto's candidates share the user's), less the
        keys this one refuses (check_config)."""
        return tree

    @classmethod
    def pick(cls, context: ChoiceContext) -> Choice:
        return Choice(cls.name)

    def param_groups(self, model: nn.Module, train_cfg: Any) -> list[dict[str, Any]]:
        """Every backbone layer group (with train.layer_decay where supported) and the head."""
        return backbone_param_groups(model, train_cfg) + head_param_groups(model, train_cfg)

    def on_epoch_start(self, model: nn.Module, epoch: int) -> bool:
        return False

    def on_step(self, model: nn.Module, step: int) -> bool:
        return False

    def trainable_state(self, model: nn.Module) -> dict[str, torch.Tensor]:
        return trainable_state(model)

    def adapter_config(self) -> dict[str, Any] | None:
        return None


def require_pooled_features(strategy: str, task_cls, why: str) -> None:
    """For strategies that only make sense on one pooled vector per example (head-only, auto)."""
    if not task_cls.pooled_features:
        raise ValueError(
            f"strategy {strategy!r} does not apply to {task_cls.name}: {why}, and this task's head needs the "
            "whole sequence. Use full, partial, gradual, bitfit or lora"
        )


def count_params(model: nn.Module) -> ParamCounts:
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return ParamCounts(trainable, total)


def no_decay(name: str, p: torch.Tensor) -> bool:
    """Biases and normalisation weights are not decayed (standard AdamW practice)."""
    return p.ndim < 2 or "norm" in name.lower() or name.endswith(".bias")


def split_decay(named: list[tuple[str, torch.Tensor]], lr: float, weight_decay: float, tag: str) -> list[dict]:
    decay = [p for n, p in named if p.requires_grad and not no_decay(n, p)]
    plain = [p for n, p in named if p.requires_grad and no_decay(n, p)]
    groups = []
    if decay:
        groups.append({"params": decay, "lr": lr, "weight_decay": weight_decay, "name": f"{tag}"})
    if plain:
        groups.append({"params": plain, "lr": lr, "weight_decay": 0.0, "name": f"{tag}.no_decay"})
    return groups


def backbone_param_groups(model: nn.Module, train_cfg: Any) -> list[dict]:
    """Backbone parameters grouped by `layer_groups()` (bottom to top). With train.layer_decay d,
    the top group learns at lr, the one below at lr*d, and so on down to the embeddings
    (DESIGN rule 4: the same order drives unfreezing)."""
    params = dict(model.backbone.named_parameters())
    groups = model.backbone.layer_groups()
    decay = train_cfg.layer_decay or 1.0
    out = []
    for i, (gname, names) in enumerate(groups):
        lr = train_cfg.lr * decay ** (len(groups) - 1 - i)
        out += split_decay([(n, params[n]) for n in names], lr, train_cfg.weight_decay, f"backbone.{gname}")
    return out


def head_param_groups(model: nn.Module, train_cfg: Any) -> list[dict]:
    return split_decay(
        list(model.head.named_parameters(prefix="head")), train_cfg.head_lr, train_cfg.weight_decay, "head"
    )


def set_trainable_groups(model: nn.Module, top: int) -> None:
    """Freeze the backbone except its `top` highest layer groups; the head always trains."""
    groups = model.backbone.layer_groups()
    if top > len(groups):
        from ..errors import ConfigError

        raise ConfigError(
            f"cannot unfreeze {top} layer groups: this backbone has {len(groups)} ({', '.join(g for g, _ in groups)})"
        )
    train_names = {n for _, names in groups[len(groups) - top :] for n in names} if top else set()
    for n, p in model.backbone.named_parameters():
        p.requires_grad_(n in train_names)
    for p in model.head.parameters():
        p.requires_grad_(True)


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """A copy of everything training changes: the trainable parameters, and the running statistics
    of the batch-norm layers that train (TaskModel.train keeps frozen ones in eval mode)."""
    state = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    for name, m in model.named_modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and any(p.requires_grad for p in m.parameters()):
            for b, t in m.named_buffers(recurse=False):
                state[f"{name}.{b}" if name else b] = t.detach().clone()
    return state
