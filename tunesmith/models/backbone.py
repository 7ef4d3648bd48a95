"""The Backbone contract, its registry, and how a folder finds its backbone class.

A backbone is a pre-trained network plus what tunesmith needs to train a head on it: the feature
width, the pooling it declares, its layer groups (bottom to top: the one order for unfreezing and
layer-wise LR decay), and whether a transformers class computes backbone + head exactly (so a run
folder can be written in that class's layout and `transformers.pipeline` loads it).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

import torch
from torch import nn

from ..errors import ModelError
from ..registry import Registry

BACKBONES: Registry = Registry("backbone")


def reinitialise(module: nn.Module) -> int:
    """Every layer of `module` back to its random initialisation (each layer's own `reset_parameters`:
    PyTorch's default init; batch norms' running statistics too): the same architecture, untrained.
    -> how many layers were reset (0 means nothing could be: an error for the caller)."""
    n = 0
    for m in module.modules():
        reset = getattr(m, "reset_parameters", None)
        if callable(reset):
            reset()
            n += 1
    return n


@dataclass(frozen=True)
class NativeLayout:
    """A transformers class that computes this backbone and its task head exactly, and where each
    of our tensors sits in that class's state dict. The run format `native` writes and reads it."""

    architecture: str  # e.g. BertForSequenceClassification
    prefix: str = ""  # where the backbone's own state dict sits in that class ("bert."; "" = at the top)
    head: dict[str, str] = field(default_factory=dict)  # head state key -> that class's key
    fixed: dict[str, torch.Tensor] = field(default_factory=dict)  # tensors it has and we don't (checked on load)
    config: dict[str, Any] = field(default_factory=dict)  # config.json entries that make it compute our head
    tied: tuple[str, ...] = ()  # keys it ties to another weight: not written, tied again on load


class Backbone(Protocol):
    name: ClassVar[str]  # its registry name, kept in tunesmith.json
    modality: ClassVar[str]
    description: ClassVar[str]  # what checkpoints it takes, for the error when none does
    head_inside: ClassVar[bool]  # True: forward() runs the task head itself (an encoder-decoder's decoder)
    train_defaults: ClassVar[dict[str, dict[str, float]]]  # by strategy: what this family trains with
    batch_norm_momentum: ClassVar[float]  # batch-norm layers that train follow the weights at this momentum
    encoder: nn.Module  # the transformers (or own) module that strategies adapt (LoRA injects into it)
    feature_dim: int
    pooling: str  # how a sequence becomes one vector ("mean", "cls", ...); "none" for sequence outputs

    @classmethod
    def handles(cls, config: dict[str, Any]) -> bool: ...  # does this class take a folder with this config.json?

    @classmethod
    def load(cls, folder: Path, model_cfg, options: dict[str, Any] | None = None) -> tuple[Backbone, Any]: ...

    @classmethod
    def from_config(cls, config: dict[str, Any], meta: dict[str, Any]) -> Backbone: ...  # architecture, no weights

    @classmethod
    def load_preprocessor(cls, folder: Path, trust_remote_code: bool = False) -> Any: ...

    def forward_features(self, batch: dict[str, torch.Tensor]) -> torch.Tensor: ...

    def layer_groups(self) -> list[tuple[str, list[str]]]: ...

    def native_layout(self, head: nn.Module) -> NativeLayout | None: ...

    def lora_targets(self) -> list[str] | None: ...  # LoRA's default modules for this family, or None

    def own_layout_note(self) -> str: ...  # for the card: why no transformers class computes this model

    def config_dict(self) -> dict[str, Any]: ...  # what rebuilds the architecture (tunesmith's own layout)

    def apply_batch_norm_policy(self) -> None: ...  # the constructor's last step


# Batch norm while fine-tuning, the policy every backbone applies to its own batch-norm layers when built
# (`BackboneDefaults.apply_batch_norm_policy`): a layer that trains updates its running statistics at
# PyTorch's momentum 0.1, whatever the checkpoint was ported with, and a frozen layer keeps its pre-trained
# ones (TaskModel.train). Ported checkpoints carry other conventions: TF's EfficientNet-Lite decay 0.99
# (momentum 0.01), whose statistics lag far behind weights that move fast on a small set, and transformers'
# MobileNetV1/V2 and EfficientNet pass TF's *decay* (0.9997, 0.997, 0.99) as PyTorch's *momentum*, so their
# statistics are the last training batch's alone. Measured on the tuning set (EfficientNet-Lite0, full,
# lr 1e-3, 8 epochs, 200 Fashion-MNIST training images at 112 px, augmentation off; validation / test
# accuracy): momentum 0.01 0.71 / 0.665, momentum 0.1 0.78 / 0.735, statistics re-estimated on the training
# set before each evaluation 0.80 / 0.74, statistics frozen (every layer in eval mode) 0.78 / 0.775; with
# augmentation and 15 epochs at 64 px, 0.1 0.73 / 0.77 and frozen 0.76 / 0.71. Frozen and re-estimated are
# no better than 0.1 within the noise (100 / 200 images) and cost a changed network or a pass over the
# training set per evaluation; 0.01 is behind at every evaluation (epoch 2: 0.51 against 0.70).
FINE_TUNING_BN_MOMENTUM = 0.1

# Training defaults of convolutional networks with batch norm (EfficientNet-Lite, ResNet-style): far larger
# learning rates than a transformer's. Measured on the tuning set (EfficientNet-Lite0, 200 Fashion-MNIST
# training images at 64 px, augmentation on, 15 epochs; validation / test accuracy): full at lr 3e-4
# 0.67 / 0.645, 1e-3 0.73 / 0.77, 3e-3 0.77 / 0.70; partial 0.72 / 0.705, 0.75 / 0.735, 0.71 / 0.74. The
# transformer defaults these replace (full lr 5e-5, partial 1e-4, 3 epochs: 21 steps) ended at 0.27 / 0.27
# and 0.47 / 0.475 (full at 112 px: 0.27 / 0.25; reported at 224 px on 10 classes: 0.12, chance); at 112
# px the new partial defaults reach 0.77 / 0.76.
CNN_TRAIN_DEFAULTS: dict[str, dict[str, float]] = {
    "full": {"lr": 1e-3, "epochs": 15, "head_lr_factor": 1.0, "patience": 5},
    "partial": {"lr": 1e-3, "epochs": 15, "head_lr_factor": 1.0, "patience": 5},
    "gradual": {"lr": 1e-3, "epochs": 15, "head_lr_factor": 1.0, "patience": 5},
}


class HeadSlot(nn.Module):
    """Stands in a model's own module (a decoder's final norm) for the task head, which the TaskModel
    owns, and calls it: for backbones whose model computes its outputs itself (`head_inside`). The
    head is kept in a plain list so it is not registered twice (its parameters are `head.*`, never
    also `backbone.*`)."""

    def __init__(self, head: nn.Module):
        super().__init__()
        self._head = [head]

    @property
    def head(self) -> nn.Module:
        return self._head[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._head[0](x)

    def __deepcopy__(self, memo):
        import copy

        return HeadSlot(copy.deepcopy(self._head[0], memo))


class BackboneDefaults:
    """Defaults for the optional parts of the contract; a backbone class overrides what differs."""

    head_inside: ClassVar[bool] = False
    # Training defaults this family has measured, by strategy, over the strategy's own: any of epochs, lr,
    # head_lr_factor, patience, min_steps (optimizer steps a small set gets at least, when train.epochs is
    # left to the defaults) and warmup_ratio (when train.warmup_ratio is). RunConfig.resolved merges them.
    train_defaults: ClassVar[dict[str, dict[str, float]]] = {}
    # The momentum at which batch-norm layers that train follow the weights (see FINE_TUNING_BN_MOMENTUM).
    batch_norm_momentum: ClassVar[float] = FINE_TUNING_BN_MOMENTUM

    def apply_batch_norm_policy(self) -> None:
        """Every batch-norm layer of this backbone at the family's fine-tuning momentum; called by each
        backbone's constructor, so a model built for training or reloaded from a run behaves alike."""
        for m in self.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.momentum = self.batch_norm_momentum

    def native_layout(self, head: nn.Module) -> NativeLayout | None:
        return None

    def lora_targets(self) -> list[str] | None:
        """The modules LoRA adapts by default where this family has its own choice (None: the lora
        strategy's default for the model type)."""
        return None

    def own_layout_note(self) -> str:
        return (
            "no transformers class computes this model, so `transformers.pipeline` cannot load the folder; "
            "use `tunesmith.load` or the CLI as above. The weights are safetensors."
        )

    def config_dict(self) -> dict[str, Any]:
        config = self.encoder.config.to_dict()
        config.pop("_name_or_path", None)
        config["architectures"] = [type(self.encoder).__name__]
        return config

    @property
    def config(self):
        return self.encoder.config


def read_config(folder: Path) -> dict[str, Any]:
    cfg_file = Path(folder) / "config.json"
    try:
        return json.loads(cfg_file.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ModelError(f"{cfg_file}: cannot read the model config: {e}") from None


def select_backbone(modality: str, folder: Path):
    """The first registered backbone class of `modality` that takes the checkpoint in `folder`."""
    config = read_config(folder)
    candidates = [cls for _, cls in BACKBONES.items() if cls.modality == modality]
    for cls in candidates:
        if cls.handles(config):
            return cls
    kinds = "; ".join(cls.description for cls in candidates)
    raise ModelError(
        f"{folder}: model type {config.get('model_type')!r} is not a model tunesmith can use for this "
        f"task. It takes: {kinds}."
    )


def hf_config(config: dict[str, Any]):
    """A transformers config object from a config.json dict (no network, no files)."""
    from transformers import AutoConfig

    cfg = dict(config)
    return AutoConfig.for_model(cfg.pop("model_type"), **cfg)
