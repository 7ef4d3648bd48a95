"""Speech recognition models from local Hugging Face folders, and their run-folder format.

Two kinds, told apart by the folder's config.json:
- "seq2seq": Whisper (`WhisperForConditionalGeneration`): an encoder-decoder that writes text
  token by token; transcribing means `generate()`.
- "ctc": wav2vec2 / HuBERT / WavLM-style encoders: one character distribution per audio frame,
  read greedily (CTC). The output layer is new: it is sized to a character vocabulary built from
  the training transcripts, so any pre-trained encoder (with or without a CTC head) works.

The task head. Strategies train "the head" plus some backbone layer groups (gradual starts with the
head alone), so every speech model needs a head with weights:
- CTC: the new linear layer over characters (`lm_head` in transformers' *ForCTC).
- Whisper: there is no new layer (its output projection is tied to the token embeddings), so the
  head is the decoder's final layer norm, the last thing before the projection. It is held by the
  TaskModel (`head.*` names) and Whisper's own slot for it calls it through `HeadSlot`, so
  `generate()` and training run Whisper's own code with the head's weights in place.

Both declare their transformers-native layout (WhisperForConditionalGeneration, *ForCTC), so run
folders are written as that checkpoint and `transformers.pipeline("automatic-speech-recognition",
model=OUT)` loads them (formats/native.py).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError, ModelError
from .backbone import BACKBONES, BackboneDefaults, HeadSlot, NativeLayout, hf_config

CTC_MODEL_TYPES = {
    "wav2vec2",
    "hubert",
    "wavlm",
    "data2vec-audio",
    "unispeech",
    "unispeech-sat",
    "sew",
    "sew-d",
    "wav2vec2-conformer",
}


def speech_kind(folder: Path) -> str:
    """ "seq2seq" (Whisper) or "ctc" (wav2vec2-style encoder), from config.json; else a clear error."""
    cfg_file = Path(folder) / "config.json"
    try:
        cfg = json.loads(cfg_file.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise ModelError(f"{cfg_file}: cannot read the model config: {e}") from None
    model_type = cfg.get("model_type")
    if model_type == "whisper":
        return "seq2seq"
    if model_type in CTC_MODEL_TYPES:
        return "ctc"
    raise ModelError(
        f"{folder}: model type {model_type!r} is not a speech recognition model tunesmith trains. "
        "Use a Whisper folder (encoder-decoder) or a wav2vec2/HuBERT/WavLM-style encoder (CTC), e.g. "
        "--model whisper-tiny.en"
    )


@BACKBONES.register("whisper-asr")
class WhisperBackbone(BackboneDefaults, nn.Module):
    """A pre-trained Whisper. `encoder` is the name every backbone gives its transformers model
    (strategies reach for it: LoRA injects into it); here it is the whole encoder-decoder."""

    name = "whisper-asr"
    modality = "speech"
    description = "Whisper (encoder-decoder: writes text token by token)"
    # The published Whisper fine-tuning recipe (Hugging Face's "Fine-Tune Whisper"): lr 1e-5 with warmup;
    # higher rates forget general speech fast (configs/speech/accent.yaml).
    train_defaults = {"full": {"lr": 1e-5, "warmup_ratio": 0.1}}
    kind = "seq2seq"
    pooling = "none"  # a sequence model: nothing is pooled
    head_inside = True  # TaskModel.forward: this model calls its head itself (see take_head)

    def __init__(self, model: nn.Module):
        super().__init__()
        from .audio_backbone import _freeze_as_buffer

        # The encoder's positions are fixed sinusoids transformers keeps frozen; as a buffer (same
        # state_dict key) no strategy can start training them.
        _freeze_as_buffer(model.model.encoder.embed_positions, "weight")
        self.encoder = model
        self.feature_dim = int(model.config.d_model)
        self.apply_batch_norm_policy()  # none in Whisper (layer norms); every backbone applies the policy

    @classmethod
    def handles(cls, config: dict) -> bool:
        return config.get("model_type") == "whisper"

    @classmethod
    def load(cls, folder: Path, model_cfg, options=None) -> tuple[WhisperBackbone, object]:
        """The recogniser and its processor, at model.window_seconds if set. options: the speech config
        (SpecAugment settings, which the model config must hold when it is built)."""
        from .whisper_window import set_whisper_window

        backbone = load_speech_backbone(folder, model_cfg.trust_remote_code, options)
        processor = load_speech_processor(folder, "seq2seq", model_cfg.trust_remote_code)
        if model_cfg.window_seconds is not None:
            set_whisper_window(backbone.encoder, processor.feature_extractor, model_cfg.window_seconds)
        return backbone, processor

    @classmethod
    def from_config(cls, config: dict, meta: dict) -> WhisperBackbone:
        return load_speech_backbone(
            None, bool(meta.get("trust_remote_code", False)), weights=False, config=hf_config(config)
        )

    @classmethod
    def load_preprocessor(cls, folder: Path, trust_remote_code: bool = False):
        return load_speech_processor(folder, "seq2seq", trust_remote_code)

    def native_layout(self, head: nn.Module) -> NativeLayout:
        """WhisperForConditionalGeneration itself, the head back in the decoder's final-norm slot; the
        output projection is tied to the token embeddings (not written, tied again on load)."""
        tied = ("proj_out.weight",) if self.encoder.config.tie_word_embeddings else ()
        return NativeLayout(
            architecture=type(self.encoder).__name__,
            head={p: f"model.decoder.layer_norm.{p}" for p in ("weight", "bias")},
            tied=tied,
        )

    def take_head(self) -> nn.Module:
        """Move the decoder's final layer norm out into the task head (once) and leave the slot calling it."""
        decoder = self.encoder.model.decoder
        if not isinstance(decoder.layer_norm, HeadSlot):
            decoder.layer_norm = HeadSlot(decoder.layer_norm)
        return decoder.layer_norm.head

    def forward_features(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.encoder.model.encoder(batch["input_features"]).last_hidden_state

    def forward(self, batch: dict[str, torch.Tensor], encoder_outputs=None) -> torch.Tensor:
        """Teacher-forced logits for the batch's decoder inputs; `encoder_outputs` (evaluation) saves
        a second encoder pass."""
        return self.encoder(
            input_features=None if encoder_outputs is not None else batch["input_features"],
            attention_mask=batch["frame_mask"],
            encoder_outputs=encoder_outputs,
            decoder_input_ids=batch["decoder_input_ids"],
            use_cache=False,
        ).logits

    def layer_groups(self) -> list[tuple[str, list[str]]]:
        """Bottom to top: the audio stem (two convolutions), each encoder layer, the
        encoder's final norm, the decoder's positions, each decoder layer, and "top": the token
        embeddings, which are also the output projection (tied), so they sit next to the head."""
        named = [n for n, _ in self.encoder.named_parameters()]
        m = self.encoder.model
        groups: list[tuple[str, list[str]]] = []

        def pick(prefixes: tuple[str, ...]) -> list[str]:
            return [f"encoder.{n}" for n in named if n.startswith(prefixes)]

        groups.append(("encoder.stem", pick(("model.encoder.conv1.", "model.encoder.conv2."))))
        groups += [(f"encoder.layer.{i}", pick((f"model.encoder.layers.{i}.",))) for i in range(len(m.encoder.layers))]
        groups.append(("encoder.norm", pick(("model.encoder.layer_norm.",))))
        groups.append(("decoder.embeddings", pick(("model.decoder.embed_positions.",))))
        groups += [(f"decoder.layer.{i}", pick((f"model.decoder.layers.{i}.",))) for i in range(len(m.decoder.layers))]
        groups.append(("top", pick(("model.decoder.embed_tokens.", "proj_out."))))
        groups = [(g, names) for g, names in groups if names]
        seen = [n for _, names in groups for n in names]
        # LoRA adds adapter weights, which belong to no group (the lora strategy trains them itself).
        missing = [n for n in named if f"encoder.{n}" not in seen and "lora_" not in n]
        if missing or len(seen) != len(set(seen)):
            raise ModelError(f"Whisper layer groups do not cover the model exactly (unplaced: {missing[:5]})")
        return groups


@BACKBONES.register("ctc-asr")
class CtcBackbone(BackboneDefaults, nn.Module):
    """A pre-trained speech encoder (wav2vec2-style, no head): audio -> one hidden state per frame."""

    name = "ctc-asr"
    modality = "speech"
    description = "a wav2vec2-style encoder (wav2vec2, HuBERT, WavLM, ...) with a new CTC head over characters"
    # The wav2vec2 CTC fine-tuning recipe (transformers' examples/pytorch/speech-recognition): lr 1e-4,
    # warmup, tens of epochs: the character head is new and emits only blanks for a while.
    train_defaults = {"full": {"lr": 1e-4, "epochs": 20, "warmup_ratio": 0.1, "patience": 5}}
    kind = "ctc"
    pooling = "none"

    def __init__(self, model: nn.Module):
        super().__init__()
        self.encoder = model
        self.feature_dim = int(model.config.hidden_size)
        # Group-norm feature encoders (wav2vec2-base) normalise over time, padding included, and are
        # meant to get zero-padded input without a mask (transformers' own advice); layer-norm ones take it.
        self.uses_attention_mask = getattr(model.config, "feat_extract_norm", "layer") == "layer"
        self.apply_batch_norm_policy()  # wav2vec2-conformer's convolution modules have batch norm

    @classmethod
    def handles(cls, config: dict) -> bool:
        return config.get("model_type") in CTC_MODEL_TYPES

    @classmethod
    def load(cls, folder: Path, model_cfg, options=None) -> tuple[CtcBackbone, object]:
        """The encoder and its feature extractor (the tokenizer is built from the training transcripts)."""
        if model_cfg.window_seconds is not None:
            raise ConfigError(
                "model.window_seconds applies to Whisper-style models (a fixed input window); "
                f"{folder} is a CTC encoder, which already reads each clip at its own length"
            )
        backbone = load_speech_backbone(folder, model_cfg.trust_remote_code, options)
        return backbone, load_speech_processor(folder, "ctc", model_cfg.trust_remote_code)

    @classmethod
    def from_config(cls, config: dict, meta: dict) -> CtcBackbone:
        return load_speech_backbone(
            None, bool(meta.get("trust_remote_code", False)), weights=False, config=hf_config(config)
        )

    @classmethod
    def load_preprocessor(cls, folder: Path, trust_remote_code: bool = False):
        return load_speech_processor(folder, "ctc", trust_remote_code)

    def native_layout(self, head: nn.Module) -> NativeLayout:
        """transformers' *ForCTC: this encoder, then dropout and our linear as its lm_head."""
        from transformers.models.auto.modeling_auto import MODEL_FOR_CTC_MAPPING_NAMES

        model_type = self.encoder.config.model_type
        return NativeLayout(
            architecture=MODEL_FOR_CTC_MAPPING_NAMES[model_type],
            prefix=f"{self.encoder.base_model_prefix}.",
            head={f"lm_head.{p}": f"lm_head.{p}" for p in ("weight", "bias")},
            config={"vocab_size": head.lm_head.out_features, "ctc_loss_reduction": "mean"},
        )

    def forward_features(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        mask = batch.get("attention_mask") if self.uses_attention_mask else None
        return self.encoder(batch["input_values"], attention_mask=mask).last_hidden_state

    def frame_lengths(self, attention_mask: torch.Tensor) -> torch.Tensor:
        """Output frames per input: what CTC's input_lengths must be."""
        return self.encoder._get_feat_extract_output_lengths(attention_mask.sum(-1)).to(torch.long)

    def layer_groups(self) -> list[tuple[str, list[str]]]:
        """Convolutional feature encoder + projection + positional convolution ("embeddings"), each
        transformer layer, then whatever follows (final norm)."""
        from .layer_order import group_parameters

        return group_parameters(self.encoder, "encoder.")


class CtcHead(nn.Module):
    """dropout -> linear to the character vocabulary (transformers' *ForCTC: dropout, lm_head)."""

    def __init__(self, in_dim: int, vocab_size: int, dropout: float):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.lm_head = nn.Linear(in_dim, vocab_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lm_head(self.dropout(x))


def _spec_augment_config(options: dict[str, Any] | None) -> dict[str, Any]:
    """Config overrides that switch SpecAugment on or off (same keys in Whisper and wav2vec2)."""
    if not options:
        return {}
    if not options.get("spec_augment"):
        return {"apply_spec_augment": False}
    return {
        "apply_spec_augment": True,
        "mask_time_prob": options["mask_time_prob"],
        "mask_time_length": options["mask_time_length"],
        "mask_feature_prob": options["mask_feature_prob"],
        "mask_feature_length": options["mask_feature_length"],
    }


def load_speech_backbone(
    folder: Path,
    trust_remote_code: bool = False,
    options: dict[str, Any] | None = None,
    weights: bool = True,
    config=None,
):
    """The speech model in `folder`. options: the speech config (SpecAugment settings). weights=False
    builds it from `config` only (reloading a run, whose weights are read separately)."""
    from transformers import AutoConfig, AutoModel, WhisperForConditionalGeneration
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    kind = speech_kind(folder) if config is None else ("seq2seq" if config.model_type == "whisper" else "ctc")
    if config is None:
        try:
            config = AutoConfig.from_pretrained(folder, trust_remote_code=trust_remote_code, local_files_only=True)
        except ValueError as e:
            raise ModelError(f"{folder}: cannot read config.json: {e}") from None
    for k, v in _spec_augment_config(options).items():
        setattr(config, k, v)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            if kind == "seq2seq":
                if weights:
                    model = WhisperForConditionalGeneration.from_pretrained(
                        folder, config=config, local_files_only=True, use_safetensors=True, dtype=torch.float32
                    )
                else:
                    model = WhisperForConditionalGeneration(config)
                return WhisperBackbone(model)
            if weights:  # a *ForCTC folder loads its encoder; its old lm_head (another vocabulary) is dropped
                model = AutoModel.from_pretrained(
                    folder,
                    config=config,
                    trust_remote_code=trust_remote_code,
                    local_files_only=True,
                    use_safetensors=True,
                    dtype=torch.float32,
                )
            else:
                model = AutoModel.from_config(config, trust_remote_code=trust_remote_code)
        except (OSError, ValueError, KeyError) as e:
            raise ModelError(f"cannot load the model in {folder}: {e}") from None
    return CtcBackbone(model)


def load_speech_processor(folder: Path, kind: str, trust_remote_code: bool = False):
    """Whisper: its WhisperProcessor (feature extractor + tokenizer). CTC: the folder's feature
    extractor only (the tokenizer is built from the training transcripts)."""
    from transformers import AutoFeatureExtractor, WhisperProcessor

    folder = Path(folder)
    if not any((folder / f).is_file() for f in ("preprocessor_config.json", "processor_config.json")):
        raise ModelError(
            f"{folder} has no preprocessor_config.json: tunesmith takes the sampling rate and audio "
            "features from the model's own feature extractor config; add the one it was trained with"
        )
    try:
        if kind == "seq2seq":
            return WhisperProcessor.from_pretrained(folder, local_files_only=True)
        return AutoFeatureExtractor.from_pretrained(folder, local_files_only=True, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as e:
        raise ModelError(f"cannot load the speech processor of {folder}: {e}") from None
