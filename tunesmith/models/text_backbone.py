"""Text encoders from local Hugging Face folders, with the pooling the folder declares."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch
from torch import nn

from ..errors import ModelError
from .backbone import BACKBONES, BackboneDefaults, NativeLayout, hf_config
from .layer_order import group_parameters

POOLINGS = ("mean", "cls", "pooler")
# Architectures whose *ForSequenceClassification is exactly pooler -> dropout -> linear, so a run
# with pooling="pooler" saves as that class and `transformers.pipeline` computes what we compute.
NATIVE_POOLER_HEAD = {"bert"}


def declared_pooling(folder: Path) -> str | None:
    """Read sentence-transformers' 1_Pooling/config.json, where the model's authors state it."""
    modules = folder / "modules.json"
    pool_dir = folder / "1_Pooling"
    if modules.is_file():
        try:
            for m in json.loads(modules.read_text(encoding="utf-8")):
                if m.get("type", "").endswith("Pooling"):
                    pool_dir = folder / m.get("path", "1_Pooling")
        except (json.JSONDecodeError, AttributeError):
            pass
    cfg_file = pool_dir / "config.json"
    if not cfg_file.is_file():
        return None
    cfg = json.loads(cfg_file.read_text(encoding="utf-8"))
    if cfg.get("pooling_mode_mean_tokens"):
        return "mean"
    if cfg.get("pooling_mode_cls_token"):
        return "cls"
    mode = cfg.get("pooling_mode")
    if mode in ("mean", "cls"):
        return mode
    raise ModelError(
        f"{cfg_file} declares a pooling tunesmith does not implement ({cfg}); "
        "set model.pooling to mean or cls explicitly."
    )


@BACKBONES.register("hf-text")
class TextBackbone(BackboneDefaults, nn.Module):
    """A pre-trained text encoder plus its pooling: token states -> one feature vector per input."""

    name = "hf-text"
    modality = "text"
    description = "a transformers text encoder (BERT, RoBERTa, MiniLM, DeBERTa, ...)"
    # Mosbach et al. 2021, "On the Stability of Fine-tuning BERT": a small learning rate (2e-5) with a
    # bias-corrected AdamW (torch.optim.AdamW always corrects; BERT's own optimizer did not, the main
    # cause of failed runs on small sets), linear warmup over the first 10% of steps, and many more
    # steps than the 3 epochs BERT's paper used, keeping the best validation checkpoint: early stopping
    # ends a run that has stopped improving. (all-MiniLM-L6-v2 itself was trained at 2e-5.)
    train_defaults = {
        "full": {"lr": 2e-5, "epochs": 10, "warmup_ratio": 0.1, "patience": 3},
        "partial": {"epochs": 10, "warmup_ratio": 0.1, "patience": 3},
    }

    def __init__(self, encoder: nn.Module, pooling: str):
        super().__init__()
        if pooling not in POOLINGS:
            raise ModelError(f"unknown pooling {pooling!r}; allowed: {', '.join(POOLINGS)}")
        if pooling == "pooler" and getattr(encoder, "pooler", None) is None:
            raise ModelError("pooling 'pooler' needs an encoder with a pooler layer; use mean or cls")
        if pooling != "pooler" and getattr(encoder, "pooler", None) is not None:
            # An unused pooler would count as trainable and waste an allreduce; drop it.
            encoder.pooler = None
        self.encoder = encoder
        self.pooling = pooling
        self.feature_dim = int(encoder.config.hidden_size)
        self._accepts_token_types = "token_type_ids" in _forward_args(encoder)
        self.apply_batch_norm_policy()  # text encoders rarely have batch norm; where one does, the same policy

    @classmethod
    def handles(cls, config: dict) -> bool:
        return True  # any encoder AutoModel builds; a folder it cannot load fails in `load` with the reason

    @classmethod
    def load(cls, folder: Path, model_cfg, options=None) -> tuple[TextBackbone, object]:
        backbone = load_text_backbone(folder, model_cfg.pooling, model_cfg.trust_remote_code)
        return backbone, load_tokenizer(folder, model_cfg.trust_remote_code)

    @classmethod
    def from_config(cls, config: dict, meta: dict) -> TextBackbone:
        from transformers import AutoModel

        trust = bool(meta.get("trust_remote_code", False))
        return cls(AutoModel.from_config(hf_config(config), trust_remote_code=trust), meta["pooling"])

    @classmethod
    def load_preprocessor(cls, folder: Path, trust_remote_code: bool = False):
        return load_tokenizer(folder, trust_remote_code)

    def forward_features(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        mask = batch["attention_mask"]
        kwargs = {"input_ids": batch["input_ids"], "attention_mask": mask}
        if self._accepts_token_types and "token_type_ids" in batch:
            kwargs["token_type_ids"] = batch["token_type_ids"]
        out = self.encoder(**kwargs)
        if self.pooling == "pooler":
            return out.pooler_output
        hidden = out.last_hidden_state
        if self.pooling == "cls":
            return hidden[:, 0]
        m = mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)

    def layer_groups(self) -> list[tuple[str, list[str]]]:
        """Parameter names (prefixed 'encoder.') grouped bottom to top: embeddings, each block, top.

        The single source of layer order for unfreezing and layer-wise LR decay (DESIGN rule 4).
        """
        return group_parameters(self.encoder, "encoder.")

    def native_layout(self, head: nn.Module) -> NativeLayout | None:
        """transformers' own *ForSequenceClassification computes exactly our model where it is
        pooler -> dropout -> linear (BERT with pooling "pooler")."""
        if self.pooling != "pooler" or self.encoder.config.model_type not in NATIVE_POOLER_HEAD:
            return None
        return NativeLayout(
            architecture=type(self.encoder).__name__.replace("Model", "ForSequenceClassification"),
            prefix=f"{self.encoder.base_model_prefix}.",
            head={f"classifier.{p}": f"classifier.{p}" for p in ("weight", "bias")},
        )

    def own_layout_note(self) -> str:
        return (
            f"this model pools token states with `{self.pooling}` pooling, which has no transformers-native "
            "classification head. `transformers.pipeline` therefore cannot load this folder as-is; use "
            "`tunesmith.load` as above. tunesmith refuses to silently switch pooling to fit a format, because "
            "pooling changes what the model predicts.\n\nThe nearest standard format: train with "
            "`--set model.pooling=pooler` (BERT-family models). That saves a folder which "
            '`transformers.pipeline("text-classification", ...)` loads directly; compare its validation scores '
            "with this run's before switching."
        )


def _forward_args(module: nn.Module) -> set[str]:
    import inspect

    return set(inspect.signature(module.forward).parameters)


def load_text_backbone(
    folder: Path, pooling: str | None = None, trust_remote_code: bool = False, weights: bool = True
) -> TextBackbone:
    """Load the encoder of a local folder. weights=False builds it from config.json only (for
    reloading a saved run, whose weights are loaded separately)."""
    from transformers import AutoConfig, AutoModel
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # our own bars report progress; theirs would interleave
    try:
        config = AutoConfig.from_pretrained(folder, trust_remote_code=trust_remote_code, local_files_only=True)
    except ValueError as e:
        if "trust_remote_code" in str(e):
            raise ModelError(
                f"{folder} needs custom code to load. tunesmith does not run code from model folders unless "
                "you ask for it: set model.trust_remote_code=true only if you trust this folder."
            ) from None
        raise ModelError(f"{folder}: cannot read config.json: {e}") from None
    if pooling is None:
        pooling = declared_pooling(folder)
    if pooling is None:
        pooling = "pooler" if config.model_type in NATIVE_POOLER_HEAD else "cls"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            if weights:
                encoder = AutoModel.from_pretrained(
                    folder,
                    config=config,
                    trust_remote_code=trust_remote_code,
                    local_files_only=True,
                    use_safetensors=True,
                )
            else:
                encoder = AutoModel.from_config(config, trust_remote_code=trust_remote_code)
        except (OSError, ValueError, KeyError) as e:
            raise ModelError(f"cannot load the model in {folder}: {e}") from None
    return TextBackbone(encoder, pooling)


def load_tokenizer(folder: Path, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(folder, local_files_only=True, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as e:
        raise ModelError(f"cannot load a tokenizer from {folder}: {e}") from None
