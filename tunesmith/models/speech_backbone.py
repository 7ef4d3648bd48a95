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
  TaskModel (`head.*` names) and Whisper's own slot for it calls it through `_HeadSlot`, so
  `generate()` and training run Whisper's own code with the head's weights in place.

Run folders are written in transformers' own layout (config.json, model.safetensors, generation
config, tokenizer, feature extractor) so `transformers.pipeline("automatic-speech-recognition",
model=OUT)` loads them; a LoRA run is merged into plain weights on save (the adapters are small but a
Whisper run is only useful to others as a plain checkpoint). tunesmith.json carries the task state.
"""
from __future__ import annotations

import copy
import json
import os
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import ModelError, RunFolderError

CTC_MODEL_TYPES = {"wav2vec2", "hubert", "wavlm", "data2vec-audio", "unispeech", "unispeech-sat", "sew", "sew-d",
                   "wav2vec2-conformer"}


def speech_kind(folder: Path) -> str:
    """"seq2seq" (Whisper) or "ctc" (wav2vec2-style encoder), from config.json; else a clear error."""
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
    raise ModelError(f"{folder}: model type {model_type!r} is not a speech recognition model tunesmith trains. "
                     "Use a Whisper folder (encoder-decoder) or a wav2vec2/HuBERT/WavLM-style encoder (CTC), e.g. "
                     "--model whisper-tiny.en")


class _HeadSlot(nn.Module):
    """Stands in Whisper's decoder for its final layer norm and calls the task head, which the
    TaskModel owns. The head is kept in a plain list so it is not registered twice (its parameters
    are `head.*`, never also `backbone.*`)."""

    def __init__(self, head: nn.Module):
        super().__init__()
        self._head = [head]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._head[0](x)

    def __deepcopy__(self, memo):
        return _HeadSlot(copy.deepcopy(self._head[0], memo))


class WhisperBackbone(nn.Module):
    """A pre-trained Whisper. `encoder` is the name every backbone gives its transformers model
    (strategies reach for it: LoRA injects into it); here it is the whole encoder-decoder."""

    modality = "speech"
    kind = "seq2seq"
    pooling = "none"  # a sequence model: nothing is pooled
    native_classification_head = False
    head_inside = True  # TaskModel.forward: this model calls its head itself (see take_head)

    def __init__(self, model: nn.Module):
        super().__init__()
        from .audio_backbone import _freeze_as_buffer

        # The encoder's positions are fixed sinusoids transformers keeps frozen; as a buffer (same
        # state_dict key) no strategy can start training them.
        _freeze_as_buffer(model.model.encoder.embed_positions, "weight")
        self.encoder = model
        self.feature_dim = int(model.config.d_model)

    @property
    def config(self):
        return self.encoder.config

    def take_head(self) -> nn.Module:
        """Move the decoder's final layer norm out into the task head (once) and leave the slot calling it."""
        decoder = self.encoder.model.decoder
        if not isinstance(decoder.layer_norm, _HeadSlot):
            decoder.layer_norm = _HeadSlot(decoder.layer_norm)
        return decoder.layer_norm._head[0]

    def forward_features(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.encoder.model.encoder(batch["input_features"]).last_hidden_state

    def forward(self, batch: dict[str, torch.Tensor], encoder_outputs=None) -> torch.Tensor:
        """Teacher-forced logits for the batch's decoder inputs; `encoder_outputs` (evaluation) saves
        a second encoder pass."""
        return self.encoder(input_features=None if encoder_outputs is not None else batch["input_features"],
                            attention_mask=batch["frame_mask"], encoder_outputs=encoder_outputs,
                            decoder_input_ids=batch["decoder_input_ids"], use_cache=False).logits

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


class CtcBackbone(nn.Module):
    """A pre-trained speech encoder (wav2vec2-style, no head): audio -> one hidden state per frame."""

    modality = "speech"
    kind = "ctc"
    pooling = "none"
    native_classification_head = False

    def __init__(self, model: nn.Module):
        super().__init__()
        self.encoder = model
        self.feature_dim = int(model.config.hidden_size)
        # Group-norm feature encoders (wav2vec2-base) normalise over time, padding included, and are
        # meant to get zero-padded input without a mask (transformers' own advice); layer-norm ones take it.
        self.uses_attention_mask = getattr(model.config, "feat_extract_norm", "layer") == "layer"

    @property
    def config(self):
        return self.encoder.config

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
    return {"apply_spec_augment": True, "mask_time_prob": options["mask_time_prob"],
            "mask_time_length": options["mask_time_length"], "mask_feature_prob": options["mask_feature_prob"],
            "mask_feature_length": options["mask_feature_length"]}


def load_speech_backbone(folder: Path, trust_remote_code: bool = False, options: dict[str, Any] | None = None,
                         weights: bool = True, config=None):
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
                        folder, config=config, local_files_only=True, use_safetensors=True, dtype=torch.float32)
                else:
                    model = WhisperForConditionalGeneration(config)
                return WhisperBackbone(model)
            if weights:  # a *ForCTC folder loads its encoder; its old lm_head (another vocabulary) is dropped
                model = AutoModel.from_pretrained(folder, config=config, trust_remote_code=trust_remote_code,
                                                  local_files_only=True, use_safetensors=True, dtype=torch.float32)
            else:
                model = AutoModel.from_config(config, trust_remote_code=trust_remote_code)
        except (OSError, ValueError, KeyError) as e:
            raise ModelError(f"cannot load the model in {folder}: {e}") from None
    return CtcBackbone(model)


def speech_base_model(folder: Path, trust_remote_code: bool, task):
    """The pre-trained model in `folder` as shipped (its own window), carrying `task`'s head and
    decoding settings: what a run's "before" scores and `evaluate --compare-base` measure."""
    from ..tasks.base import TaskModel

    backbone = load_speech_backbone(folder, trust_remote_code)
    model = TaskModel(backbone, task.build_head(backbone)).eval()
    task.prepare_model(model)
    return model


def load_speech_processor(folder: Path, kind: str, trust_remote_code: bool = False):
    """Whisper: its WhisperProcessor (feature extractor + tokenizer). CTC: the folder's feature
    extractor only (the tokenizer is built from the training transcripts)."""
    from transformers import AutoFeatureExtractor, WhisperProcessor

    folder = Path(folder)
    if not any((folder / f).is_file() for f in ("preprocessor_config.json", "processor_config.json")):
        raise ModelError(f"{folder} has no preprocessor_config.json: tunesmith takes the sampling rate and audio "
                         "features from the model's own feature extractor config; add the one it was trained with")
    try:
        if kind == "seq2seq":
            return WhisperProcessor.from_pretrained(folder, local_files_only=True)
        return AutoFeatureExtractor.from_pretrained(folder, local_files_only=True, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as e:
        raise ModelError(f"cannot load the speech processor of {folder}: {e}") from None


# --------------------------------------------------------------------------------------------
# Run folders


def _plain_model(model) -> nn.Module:
    """A transformers *ForConditionalGeneration / *ForCTC computing exactly `model` (a TaskModel),
    LoRA merged in, for save_pretrained."""
    from ..strategies.lora import merge_lora

    backbone = model.backbone
    if backbone.kind == "seq2seq":
        plain = copy.deepcopy(backbone.encoder)  # the head comes along as its own copy (_HeadSlot.__deepcopy__)
        decoder = plain.model.decoder
        if isinstance(decoder.layer_norm, _HeadSlot):  # put Whisper's own final norm back in place
            decoder.layer_norm = decoder.layer_norm._head[0]
        merge_lora(plain)
        return plain
    from transformers import AutoModelForCTC

    encoder = copy.deepcopy(backbone.encoder)
    merge_lora(encoder)
    config = copy.deepcopy(encoder.config)
    vocab_size = model.head.lm_head.out_features
    config.vocab_size = vocab_size
    plain = AutoModelForCTC.from_config(config)
    state = {f"{plain.base_model_prefix}.{k}": v for k, v in encoder.state_dict().items()}
    state["lm_head.weight"] = model.head.lm_head.weight
    state["lm_head.bias"] = model.head.lm_head.bias
    missing, unexpected = plain.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise RunFolderError(f"cannot lay out the CTC model as {type(plain).__name__}: missing {missing[:5]}, "
                             f"unexpected {unexpected[:5]}")
    return plain


def save_speech_run(folder: Path, model, task, meta: dict[str, Any], meta_file: str, format_version: int) -> str:
    """Write the run as a transformers checkpoint + processor + tunesmith.json. Returns the layout."""
    folder.mkdir(parents=True, exist_ok=True)
    plain = _plain_model(model)
    plain.config.architectures = [type(plain).__name__]
    if model.backbone.kind == "seq2seq":
        plain.generation_config = copy.deepcopy(task.generation_config)
    else:
        config = plain.config
        config.pad_token_id = task.tokenizer.pad_token_id
        config.ctc_loss_reduction = "mean"
    tmp = folder / f".model.tmp{os.getpid()}"
    plain.save_pretrained(tmp, safe_serialization=True)
    for f in tmp.iterdir():  # config.json, generation_config.json, model.safetensors: each replaced whole
        os.replace(f, folder / f.name)
    tmp.rmdir()
    task.processor_to_save().save_pretrained(folder)
    # transformers 5 keeps the feature extractor in processor_config.json; older loaders and other tools
    # read preprocessor_config.json, so write that too.
    task.feature_extractor.save_pretrained(folder)
    full_meta = {"format_version": format_version, "layout": "native", "task": task.name, "labels": [],
                 "pooling": "none", "dropout": task.dropout, "speech": task.state(), **meta}
    if meta.get("lora") is not None:
        full_meta["lora_merged"] = True
    path = folder / meta_file
    tmp_meta = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp_meta.write_text(json.dumps(full_meta, indent=2), encoding="utf-8")
    os.replace(tmp_meta, path)
    return "native"


def load_speech_run(folder: Path, meta: dict[str, Any], device):
    """-> (TaskModel in eval mode, task, processor, meta), from the folder alone."""
    from transformers import AutoConfig

    from ..tasks import TASKS
    from ..tasks.base import TaskModel
    from safetensors.torch import load_file

    folder = Path(folder)
    trust = bool(meta.get("trust_remote_code", False))
    cfg_dict = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    config = AutoConfig.for_model(cfg_dict.pop("model_type"), **cfg_dict)
    state = meta["speech"]
    task = TASKS.get(meta["task"]).from_saved(folder, state, dropout=meta.get("dropout", 0.0))
    if state["kind"] == "seq2seq":
        from transformers import GenerationConfig

        backbone = load_speech_backbone(folder, trust, weights=False, config=config)
        tensors = load_file(str(folder / "model.safetensors"))
        model = TaskModel(backbone, task.build_head(backbone))
        sd = {f"backbone.encoder.{k}": v for k, v in tensors.items()}
        for p in ("weight", "bias"):
            sd[f"head.{p}"] = sd.pop(f"backbone.encoder.model.decoder.layer_norm.{p}")
        if config.tie_word_embeddings:
            sd.pop("backbone.encoder.proj_out.weight", None)
        backbone.encoder.generation_config = GenerationConfig.from_pretrained(folder)
    else:
        backbone = load_speech_backbone(folder, trust, weights=False, config=config)  # the encoder alone
        task.set_conv_geometry(config)  # the frame rate behind the CTC length check of labelled clips
        tensors = load_file(str(folder / "model.safetensors"))
        model = TaskModel(backbone, task.build_head(backbone))
        prefix = backbone.encoder.base_model_prefix + "."
        sd = {f"backbone.encoder.{k[len(prefix):]}": v for k, v in tensors.items() if k.startswith(prefix)}
        sd["head.lm_head.weight"] = tensors["lm_head.weight"]
        sd["head.lm_head.bias"] = tensors["lm_head.bias"]
    missing, unexpected = model.load_state_dict(sd, strict=False)
    missing = [k for k in missing if not k.endswith("proj_out.weight")]
    if missing or unexpected:
        raise RunFolderError(f"{folder}/model.safetensors does not match its config: missing {missing[:5]}, "
                             f"unexpected {unexpected[:5]}")
    if state["kind"] == "seq2seq" and config.tie_word_embeddings:
        backbone.encoder.tie_weights()
    task.prepare_model(model)
    model.to(device).eval()
    return model, task, task.processor, meta
