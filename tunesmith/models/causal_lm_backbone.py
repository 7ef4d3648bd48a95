"""Causal language models (decoder-only: Llama, Qwen2, Mistral, SmolLM, Phi, Gemma, GPT-2 families)
from local Hugging Face folders, for tasks that generate text (chat).

The model computes its own logits (`head_inside`, as Whisper does): the task head is the decoder's
final norm, moved out of the model into the TaskModel and called from its slot, so every strategy
trains it and the saved folder is the plain `*ForCausalLM` checkpoint (`native_layout`) that
`transformers.pipeline("text-generation")` loads. The output projection is the one the model ships
(tied to the token embeddings where its config says so).
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import ModelError
from .backbone import BACKBONES, BackboneDefaults, HeadSlot, NativeLayout, hf_config
from .layer_order import group_parameters

# Where transformers' decoder-only models keep the final norm, on their base model
FINAL_NORMS = ("norm", "ln_f", "final_layernorm", "final_layer_norm")
CAUSAL_SUFFIXES = ("ForCausalLM", "LMHeadModel")


def load_causal_tokenizer(folder: Path, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(folder, local_files_only=True, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as e:
        raise ModelError(f"{folder}: cannot load the model's tokenizer: {e}") from None
    if tok.pad_token_id is None:  # GPT-2 and many base models have none: padding is masked out anyway
        tok.pad_token = tok.eos_token
    return tok


@BACKBONES.register("hf-causal-lm")
class CausalLMBackbone(BackboneDefaults, nn.Module):
    """A pre-trained causal LM; `encoder` is the whole `*ForCausalLM` (strategies reach for it: LoRA
    injects into it)."""

    name = "hf-causal-lm"
    modality = "conversations"
    description = "a causal language model (config architectures *ForCausalLM / *LMHeadModel: Llama, Qwen2, GPT-2, ...)"
    head_inside = True
    pooling = "none"
    # Fine-tuning recipes for small chat models (TRL's SFT examples, the SmolLM2 and Alpaca-LoRA recipes):
    # full weights at 2e-5 with a short warmup, LoRA adapters at 2e-4.
    train_defaults = {
        "full": {"lr": 2e-5, "warmup_ratio": 0.03, "epochs": 3},
        "partial": {"lr": 5e-5, "warmup_ratio": 0.03, "epochs": 3},
        "lora": {"lr": 2e-4, "warmup_ratio": 0.03, "epochs": 3},
    }

    def __init__(self, model: nn.Module):
        super().__init__()
        self.encoder = model
        self.feature_dim = int(model.config.get_text_config().hidden_size)
        self._norm_name = _final_norm_name(model)
        # whether it computes logits at chosen positions only (transformers' `logits_to_keep`, which most
        # causal LMs take; a boolean mask needs transformers >= 5)
        self.keeps_logits = "logits_to_keep" in inspect.signature(model.forward).parameters
        self.apply_batch_norm_policy()

    @classmethod
    def handles(cls, config: dict) -> bool:
        return any(str(a).endswith(CAUSAL_SUFFIXES) for a in config.get("architectures") or ())

    @classmethod
    def load(cls, folder: Path, model_cfg, options=None) -> tuple[CausalLMBackbone, Any]:
        from transformers import AutoModelForCausalLM

        try:
            model = AutoModelForCausalLM.from_pretrained(
                folder, local_files_only=True, trust_remote_code=model_cfg.trust_remote_code, dtype=torch.float32
            )
        except (OSError, ValueError) as e:
            raise ModelError(f"{folder}: cannot load it as a causal language model: {e}") from None
        return cls(model), load_causal_tokenizer(folder, model_cfg.trust_remote_code)

    @classmethod
    def from_config(cls, config: dict, meta: dict) -> CausalLMBackbone:
        from transformers import AutoModelForCausalLM

        trust = bool(meta.get("trust_remote_code", False))
        return cls(AutoModelForCausalLM.from_config(hf_config(config), trust_remote_code=trust, dtype=torch.float32))

    @classmethod
    def load_preprocessor(cls, folder: Path, trust_remote_code: bool = False):
        return load_causal_tokenizer(folder, trust_remote_code)

    @property
    def _base(self) -> nn.Module:
        return getattr(self.encoder, self.encoder.base_model_prefix)

    def take_head(self) -> nn.Module:
        """Move the final norm out into the task head (once) and leave its slot calling it."""
        norm = getattr(self._base, self._norm_name)
        if not isinstance(norm, HeadSlot):
            norm = HeadSlot(norm)
            setattr(self._base, self._norm_name, norm)
        return norm.head

    def native_layout(self, head: nn.Module) -> NativeLayout:
        """The `*ForCausalLM` itself, the head back in the final norm's slot; a tied output projection
        is not written (tied again on load)."""
        where = f"{self.encoder.base_model_prefix}.{self._norm_name}"
        tied = ("lm_head.weight",) if self.encoder.config.get_text_config().tie_word_embeddings else ()
        return NativeLayout(
            architecture=type(self.encoder).__name__,
            head={k: f"{where}.{k}" for k in head.state_dict()},
            tied=tied,
        )

    def forward_features(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        raise ModelError("a causal language model generates text: it gives no pooled features")

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Next-token logits (padded rows with an attention mask, or packed rows with positions restarting
        per conversation and no mask): for every position, or, where the batch has a boolean
        `logits_to_keep` (rows x positions) and the model takes one, for those positions only, flattened
        to (kept, vocabulary). The output projection over a large vocabulary is a good part of a small
        model's compute and most of its activation memory; positions without a label need none of it."""
        kwargs = {k: batch[k] for k in ("attention_mask", "position_ids") if k in batch}
        keep = batch.get("logits_to_keep")
        if keep is not None and self.keeps_logits:
            kwargs["logits_to_keep"] = keep
        return self.encoder(input_ids=batch["input_ids"], use_cache=False, **kwargs).logits

    def layer_groups(self) -> list[tuple[str, list[str]]]:
        """Bottom to top: token (and position) embeddings, each decoder layer, then the output
        projection where it is not tied to the embeddings."""
        return group_parameters(self.encoder, "encoder.")

    def lora_targets(self) -> list[str]:
        """Every projection inside the decoder layers (attention and MLP), as LoRA recipes for chat
        models adapt them: Linear layers, or GPT-2's Conv1D."""
        from transformers.pytorch_utils import Conv1D

        blocks = group_parameters(self.encoder, "")
        inside = {n.rsplit(".", 1)[0] for g, names in blocks if g.startswith("layer.") for n in names}
        return sorted(
            {
                name.rsplit(".", 1)[-1]
                for name, m in self.encoder.named_modules()
                if name in inside and isinstance(m, (nn.Linear, Conv1D))
            }
        )


def _final_norm_name(model: nn.Module) -> str:
    base = getattr(model, model.base_model_prefix, None)
    for name in FINAL_NORMS:
        if base is not None and isinstance(getattr(base, name, None), (nn.Module,)):
            return name
    raise ModelError(
        f"{type(model).__name__}: cannot find its final norm (looked for {', '.join(FINAL_NORMS)} on "
        f"`{model.base_model_prefix}`), which tunesmith trains as the task head"
    )
