"""Image encoders from local Hugging Face folders (ResNet, ConvNeXt, ViT, EfficientNet, ...).

The backbone is transformers' own *ForImageClassification with its final linear layer replaced by
an identity, so its "logits" are exactly the features that architecture's classifier reads (ResNet:
pooled and flattened; ViT: the normed CLS token; ConvNeXt: the normed mean). Putting our trained
linear back in that slot gives a folder `transformers.pipeline("image-classification")` loads and
that computes what we computed, for every architecture, without per-model pooling code.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

from ..errors import ModelError
from .backbone import BACKBONES, CNN_TRAIN_DEFAULTS, BackboneDefaults, NativeLayout, hf_config
from .layer_order import group_parameters


def find_classifier(model: nn.Module) -> str:
    """Dotted path of the final linear layer of a *ForImageClassification model."""
    for attr in ("classifier", "head", "fc"):
        mod = getattr(model, attr, None)
        if isinstance(mod, nn.Linear):
            return attr
        if isinstance(mod, nn.Sequential):
            last = [i for i, m in enumerate(mod) if isinstance(m, nn.Linear)]
            if last and last[-1] == len(mod) - 1:
                return f"{attr}.{last[-1]}"
    raise ModelError(
        f"{type(model).__name__}: cannot find its final classifier layer (looked for classifier, "
        "head, fc); tunesmith cannot graft a head on this architecture"
    )


# transformers image classifiers that are convolutional networks with batch norm: a family of their own
# (hf-image-cnn), which trains with the CNN defaults; ViT, ConvNeXt, Swin, ... keep the strategies' own.
BATCH_NORM_CNNS = frozenset({"resnet", "regnet", "mobilenet_v1", "mobilenet_v2", "efficientnet"})


@BACKBONES.register("hf-image")
class VisionBackbone(BackboneDefaults, nn.Module):
    """A pre-trained image model whose classifier slot is empty: pixels -> one feature vector."""

    name = "hf-image"
    modality = "image"
    description = "a transformers image classifier (ResNet, ConvNeXt, ViT, EfficientNet, ...)"
    pooling = "model"  # the architecture's own pooling, whatever its classifier reads

    def __init__(self, model: nn.Module, classifier_path: str | None = None):
        super().__init__()
        path = classifier_path or find_classifier(model)
        linear = model.get_submodule(path)
        if isinstance(linear, nn.Linear):
            model.set_submodule(path, nn.Identity())
            self.feature_dim = int(linear.in_features)
        else:  # already emptied (a reload): the width comes from the config
            self.feature_dim = _feature_dim_from_config(model.config)
        self.encoder = model
        self.classifier_path = path
        self.apply_batch_norm_policy()  # MobileNet / EfficientNet in transformers: TF's decay as momentum

    @classmethod
    def handles(cls, config: dict) -> bool:
        return _builtin_name(config) is None and config.get("model_type") not in BATCH_NORM_CNNS

    @classmethod
    def load(cls, folder: Path, model_cfg, options=None) -> tuple[VisionBackbone, object]:
        processor = load_image_processor(folder, model_cfg.trust_remote_code)
        return load_vision_backbone(folder, model_cfg.trust_remote_code), processor

    @classmethod
    def from_config(cls, config: dict, meta: dict) -> VisionBackbone:
        return load_vision_backbone(
            None, bool(meta.get("trust_remote_code", False)), weights=False, config=hf_config(config)
        )

    @classmethod
    def load_preprocessor(cls, folder: Path, trust_remote_code: bool = False):
        return load_image_processor(folder, trust_remote_code)

    def forward_features(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.encoder(pixel_values=batch["pixel_values"]).logits

    def native_layout(self, head: nn.Module) -> NativeLayout:
        """transformers' own *ForImageClassification with our linear back in its classifier slot."""
        return NativeLayout(
            architecture=type(self.encoder).__name__,
            head={f"classifier.{p}": f"{self.classifier_path}.{p}" for p in ("weight", "bias")},
        )

    def layer_groups(self) -> list[tuple[str, list[str]]]:
        """Stem ('embeddings'), each stage or block, then final norms ('top'), bottom to top."""
        return group_parameters(self.encoder, "encoder.")


@BACKBONES.register("hf-image-cnn")
class ConvVisionBackbone(VisionBackbone):
    """A transformers CNN with batch norm (ResNet, RegNet, MobileNet, EfficientNet): the same backbone,
    declaring what its family trains with."""

    name = "hf-image-cnn"
    description = "a transformers convolutional image classifier with batch norm (ResNet, RegNet, MobileNet, ...)"
    train_defaults = CNN_TRAIN_DEFAULTS

    @classmethod
    def handles(cls, config: dict) -> bool:
        return _builtin_name(config) is None and config.get("model_type") in BATCH_NORM_CNNS


def _feature_dim_from_config(config) -> int:
    for key in ("hidden_size", "hidden_dim"):
        if isinstance(getattr(config, key, None), int):
            return int(getattr(config, key))
    sizes = getattr(config, "hidden_sizes", None)
    if sizes:
        return int(sizes[-1])
    raise ModelError(f"cannot tell the feature width of {config.model_type}")


def load_vision_backbone(
    folder: Path, trust_remote_code: bool = False, weights: bool = True, config=None
) -> VisionBackbone:
    """The image model in `folder` (any checkpoint AutoModelForImageClassification reads; its own
    classifier, if any, is dropped). weights=False builds it from `config` (reloading a run)."""
    from transformers import AutoConfig, AutoModelForImageClassification
    from transformers.utils import logging as hf_logging

    builtin = _builtin(folder) if folder is not None else None
    if builtin is not None:
        return channels_last_if_cnn(builtin.load_backbone(folder, weights))
    hf_logging.disable_progress_bar()
    if config is None:
        try:
            config = AutoConfig.from_pretrained(folder, trust_remote_code=trust_remote_code, local_files_only=True)
        except ValueError as e:
            raise ModelError(f"{folder}: cannot read config.json: {e}") from None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            if weights:
                model = AutoModelForImageClassification.from_pretrained(
                    folder,
                    config=config,
                    trust_remote_code=trust_remote_code,
                    local_files_only=True,
                    use_safetensors=True,
                )
            else:
                model = AutoModelForImageClassification.from_config(config, trust_remote_code=trust_remote_code)
        except ValueError as e:
            if "Unrecognized configuration class" in str(e):
                raise ModelError(
                    f"{folder}: model type {config.model_type!r} is not an image model transformers "
                    "can classify with (AutoModelForImageClassification)"
                ) from None
            raise ModelError(f"cannot load the model in {folder}: {e}") from None
        except (OSError, KeyError) as e:
            raise ModelError(f"cannot load the model in {folder}: {e}") from None
    family = ConvVisionBackbone if config.model_type in BATCH_NORM_CNNS else VisionBackbone
    return channels_last_if_cnn(family(model))


def channels_last_if_cnn(backbone: nn.Module) -> nn.Module:
    """Store a convolutional network's weights channels-last (NHWC). oneDNN's CPU convolutions,
    depthwise ones above all, run much faster in that layout (EfficientNet-Lite0, bf16, batch 32:
    see bench/vision_vs_hf_trainer.py), and an NHWC weight makes every convolution return NHWC, so the
    whole network stays in it. Same weights, same maths; a saved folder is written contiguous.
    Networks whose weights are mostly not convolutions (ViT, ConvNeXt: linear layers) are left as they are."""
    conv = sum(p.numel() for m in backbone.modules() if isinstance(m, nn.Conv2d) for p in m.parameters(recurse=False))
    total = sum(p.numel() for p in backbone.parameters())
    if total and conv / total >= 0.5:
        backbone.to(memory_format=torch.channels_last)
    return backbone


def load_image_processor(folder: Path, trust_remote_code: bool = False):
    """The folder's own preprocessing (size, crop, mean, std), as `pipeline` would use it."""
    from transformers import AutoImageProcessor

    builtin = _builtin(folder)
    if builtin is not None:
        return builtin.EfficientNetLiteProcessor()
    if not (Path(folder) / "preprocessor_config.json").is_file():
        raise ModelError(
            f"{folder} has no preprocessor_config.json: tunesmith takes image size, mean and std "
            "from the model's own image processor config; add the one the model was trained with"
        )
    try:
        return AutoImageProcessor.from_pretrained(folder, local_files_only=True, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as e:
        raise ModelError(f"cannot load the image processor of {folder}: {e}") from None


def _builtin_name(config: dict) -> str | None:
    return config.get("tunesmith_builtin")


def _builtin(folder: Path):
    """The module implementing a tunesmith-built model folder (config.json names it), else None."""
    import json

    cfg = Path(folder) / "config.json"
    try:
        name = _builtin_name(json.loads(cfg.read_text(encoding="utf-8"))) if cfg.is_file() else None
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    if name is None:
        return None
    if name != "efficientnet-lite0":
        raise ModelError(f"{cfg}: unknown tunesmith_builtin model {name!r}")
    from . import efficientnet_lite

    return efficientnet_lite
