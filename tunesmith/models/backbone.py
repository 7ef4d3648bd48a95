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

    def own_layout_note(self) -> str: ...  # for the card: why no transformers class computes this model

    def config_dict(self) -> dict[str, Any]: ...  # what rebuilds the architecture (tunesmith's own layout)


class BackboneDefaults:
    """Defaults for the optional parts of the contract; a backbone class overrides what differs."""

    head_inside: ClassVar[bool] = False
    # Training defaults this family has measured, by strategy, over the strategy's own (epochs, lr,
    # head_lr_factor, patience, min_steps): a CNN learns at far larger rates than a transformer.
    train_defaults: ClassVar[dict[str, dict[str, float]]] = {}

    def native_layout(self, head: nn.Module) -> NativeLayout | None:
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
