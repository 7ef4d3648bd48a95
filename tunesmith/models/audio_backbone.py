"""Audio encoders from local Hugging Face folders: the Whisper encoder, or a wav2vec2-style encoder.

Pooling (DESIGN: the backbone declares it) is the mean over the encoder frames that hold audio:
- Whisper always sees a fixed window (30 s for real checkpoints) of which a short clip fills a
  little; averaging the padding frames too (what transformers' WhisperForAudioClassification does)
  would drown a 1 s clip in 29 s of silence. So no transformers class computes our Whisper model,
  and its runs save in tunesmith's own layout (the model card says so).
- wav2vec2 / HuBERT: the mean over the frames of the unpadded clip, which is exactly what
  Wav2Vec2ForSequenceClassification / HubertForSequenceClassification compute (their projector is
  linear, so it commutes with the mean): these runs save as that class and `pipeline()` loads them.
Models whose feature extractor normalises over the whole padded batch (group-norm wav2vec2: no
attention mask) are run on equal-length clips only, so a clip's features never depend on its batch.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch
from torch import nn

from ..errors import ConfigError, ModelError
from .backbone import BACKBONES, BackboneDefaults, NativeLayout, hf_config

# wav2vec2-style model types whose *ForSequenceClassification pools exactly like we do (checked in
# tests/test_audio_classification.py against pipeline("audio-classification")).
NATIVE_SEQUENCE_CLASSIFIERS = {
    "wav2vec2": "Wav2Vec2ForSequenceClassification",
    "hubert": "HubertForSequenceClassification",
}


def _freeze_as_buffer(module: nn.Module, name: str) -> None:
    """Turn a parameter the model never trains into a buffer of the same name (same state_dict key)."""
    value = getattr(module, name).detach().clone()
    delattr(module, name)
    module.register_buffer(name, value)


@BACKBONES.register("hf-audio")
class AudioBackbone(BackboneDefaults, nn.Module):
    """A pre-trained audio encoder: features of a batch of clips -> one vector per clip."""

    name = "hf-audio"
    modality = "audio"
    description = "a Whisper encoder, or a wav2vec2-style encoder (wav2vec2, HuBERT, WavLM, ...)"
    # transformers' audio-classification recipe (examples/pytorch/audio-classification): lr 3e-5, warmup
    # over 10% of steps, several epochs with the best validation checkpoint kept.
    train_defaults = {
        "full": {"lr": 3e-5, "epochs": 10, "warmup_ratio": 0.1, "patience": 3},
        "partial": {"epochs": 10, "warmup_ratio": 0.1, "patience": 3},
    }
    pooling = "mean"  # over the encoder frames that hold audio

    def __init__(self, encoder: nn.Module, kind: str):
        super().__init__()
        self.encoder = encoder
        self.kind = kind  # "whisper" or "wav2vec2" (any encoder with the wav2vec2 interface)
        cfg = encoder.config
        self.feature_dim = int(cfg.d_model if kind == "whisper" else cfg.hidden_size)
        if kind == "whisper":
            # Whisper's positions are fixed sinusoids that transformers keeps frozen
            # (requires_grad False); as a buffer, no strategy can start training them.
            _freeze_as_buffer(encoder.embed_positions, "weight")
        # group-norm feature extractors normalise over time, padding included: see the module docstring
        self.uses_attention_mask = kind == "wav2vec2" and getattr(cfg, "feat_extract_norm", "layer") == "layer"
        self.apply_batch_norm_policy()  # e.g. HuBERT's batch-norm positional convolution

    @classmethod
    def handles(cls, config: dict) -> bool:
        return config.get("model_type") == "whisper" or "conv_dim" in config

    @classmethod
    def load(cls, folder: Path, model_cfg, options=None) -> tuple[AudioBackbone, object]:
        """The encoder and its feature extractor, at model.window_seconds if set (Whisper)."""
        from .whisper_window import set_whisper_window

        extractor = load_feature_extractor(folder, model_cfg.trust_remote_code)
        backbone = load_audio_backbone(folder, model_cfg.trust_remote_code)
        window = model_cfg.window_seconds
        if window is not None and backbone.kind != "whisper":
            raise ConfigError(
                "model.window_seconds applies to Whisper encoders (a fixed input window); "
                f"{folder} is a {backbone.kind} encoder, which already reads each clip at its own "
                "length"
            )
        set_whisper_window(backbone.encoder, extractor, window)
        return backbone, extractor

    @classmethod
    def from_config(cls, config: dict, meta: dict) -> AudioBackbone:
        return load_audio_backbone(
            None, bool(meta.get("trust_remote_code", False)), weights=False, config=hf_config(config)
        )

    @classmethod
    def load_preprocessor(cls, folder: Path, trust_remote_code: bool = False):
        return load_feature_extractor(folder, trust_remote_code)

    def native_layout(self, head: nn.Module) -> NativeLayout | None:
        """wav2vec2 / HuBERT: transformers' *ForSequenceClassification computes exactly our mean-pooled
        model when its projector is the identity and its classifier is our linear (pooling a linear map
        of the frames = that map of the pooled frames), so `pipeline("audio-classification")` loads the
        folder. Whisper (and other encoders): no transformers class pools over the audio frames only."""
        model_type = self.encoder.config.model_type
        if self.kind != "wav2vec2" or model_type not in NATIVE_SEQUENCE_CLASSIFIERS:
            return None
        d = self.feature_dim
        return NativeLayout(
            architecture=NATIVE_SEQUENCE_CLASSIFIERS[model_type],
            prefix=f"{self.encoder.base_model_prefix}.",
            head={f"classifier.{p}": f"classifier.{p}" for p in ("weight", "bias")},
            fixed={"projector.weight": torch.eye(d), "projector.bias": torch.zeros(d)},
            config={"classifier_proj_size": d, "use_weighted_layer_sum": False},
        )

    def own_layout_note(self) -> str:
        return (
            "this model averages the encoder's states over the frames that hold audio only, and no "
            "transformers class computes exactly that for this encoder: for Whisper, "
            "`WhisperForAudioClassification` averages over the whole padded 30 s window (a 1 s clip would be "
            "29 parts silence), so it would predict differently, and tunesmith refuses to silently switch "
            "pooling to fit a format. `transformers.pipeline` therefore cannot load this folder; use "
            "`tunesmith.load` or the CLI as above. The weights are safetensors.\n\nThe nearest standard "
            "format: a wav2vec2 or HuBERT encoder (`--model` a local folder). Its runs save as "
            "`Wav2Vec2ForSequenceClassification` / `HubertForSequenceClassification`, which "
            '`transformers.pipeline("audio-classification", ...)` loads with the same scores.'
        )

    def forward_features(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.kind == "whisper":
            hidden = self.encoder(input_features=batch["input_features"]).last_hidden_state
            mask = torch.arange(hidden.shape[1], device=hidden.device)[None, :] < batch["frames"][:, None]
            return _masked_mean(hidden, mask)
        x, lengths = batch["input_values"], batch["lengths"]
        if self.uses_attention_mask:
            attn = (torch.arange(x.shape[1], device=x.device)[None, :] < lengths[:, None]).long()
            hidden = self.encoder(input_values=x, attention_mask=attn).last_hidden_state
            mask = self.encoder._get_feature_vector_attention_mask(hidden.shape[1], attn)
            return _masked_mean(hidden, mask.bool())
        out = [None] * x.shape[0]
        for n in torch.unique(lengths).tolist():  # equal lengths together, never padded
            idx = (lengths == n).nonzero().flatten()
            pooled = self.encoder(input_values=x[idx, :n]).last_hidden_state.mean(dim=1)
            for j, i in enumerate(idx.tolist()):
                out[i] = pooled[j]
        return torch.stack(out)

    def layer_groups(self) -> list[tuple[str, list[str]]]:
        """Bottom to top: 'stem' (the convolutional front end), 'embeddings' (wav2vec2: feature
        projection, positional convolution, mask embedding), each transformer layer, 'top' (final
        norm). One source for partial/gradual unfreezing and layer-wise LR decay."""
        if self.kind == "whisper":
            blocks, stem, top = "layers.", ("conv1.", "conv2."), ("layer_norm.",)
        else:
            blocks, stem = "encoder.layers.", ("feature_extractor.",)
            # the stable-layer-norm variant applies encoder.layer_norm after the layers
            top = ("encoder.layer_norm.",) if getattr(self.config, "do_stable_layer_norm", False) else ()
        n_layers = len(self.encoder.get_submodule(blocks[:-1]))
        groups: dict[str, list[str]] = {"stem": [], "embeddings": []}
        groups.update({f"layer.{i}": [] for i in range(n_layers)})
        groups["top"] = []
        seen_block = False
        for name, _ in self.encoder.named_parameters():
            full = f"encoder.{name}"
            if name.startswith(blocks):
                groups[f"layer.{int(name[len(blocks) :].split('.')[0])}"].append(full)
                seen_block = True
            elif name.startswith(top) or seen_block:  # anything registered after the layers is above them
                groups["top"].append(full)
            elif name.startswith(stem):
                groups["stem"].append(full)
            else:
                groups["embeddings"].append(full)
        return [(g, names) for g, names in groups.items() if names]


def _masked_mean(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    m = mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * m).sum(dim=1) / m.sum(dim=1).clamp(min=1.0)


def _read_config(folder: Path) -> dict:
    try:
        return json.loads((Path(folder) / "config.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise ModelError(f"{folder}: cannot read config.json: {e}") from None


def _whisper_encoder(folder: Path, config, weights: bool) -> nn.Module:
    """Only the encoder of a Whisper folder (WhisperForConditionalGeneration, WhisperModel or
    WhisperForAudioClassification): its tensors are read from the safetensors files, the decoder's never."""
    from safetensors import safe_open
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    encoder = WhisperEncoder(config)
    if not weights:
        return encoder
    state = {}
    files = sorted(Path(folder).glob("*.safetensors"))
    for f in files:
        with safe_open(str(f), "pt") as st:
            for k in st.keys():
                for prefix in ("model.encoder.", "encoder."):
                    if k.startswith(prefix):
                        state[k[len(prefix) :]] = st.get_tensor(k)
    expected = set(encoder.state_dict())
    missing = sorted(expected - set(state))
    if missing:
        raise ModelError(
            f"{folder}: the Whisper encoder weights are incomplete in "
            f"{', '.join(f.name for f in files)} (missing {', '.join(missing[:5])}"
            f"{' ...' if len(missing) > 5 else ''}); re-save the model with save_pretrained"
        )
    encoder.load_state_dict({k: v for k, v in state.items() if k in expected})
    return encoder


def load_audio_backbone(
    folder: Path, trust_remote_code: bool = False, weights: bool = True, config=None
) -> AudioBackbone:
    """The audio encoder in `folder`: Whisper (encoder only) or any wav2vec2-style encoder transformers'
    AutoModel reads (wav2vec2, HuBERT, WavLM, ...; a CTC or classification head in the folder is
    dropped). weights=False builds it from `config` (reloading a run)."""
    from transformers import AutoConfig, AutoModel
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    if config is None:
        _read_config(folder)
        try:
            config = AutoConfig.from_pretrained(folder, trust_remote_code=trust_remote_code, local_files_only=True)
        except (ValueError, OSError) as e:
            raise ModelError(f"{folder}: cannot read config.json: {e}") from None
    if config.model_type == "whisper":
        return AudioBackbone(_whisper_encoder(Path(folder) if weights else None, config, weights), "whisper")
    if not hasattr(config, "conv_dim"):
        raise ModelError(
            f"{folder}: model type {config.model_type!r} is not an audio encoder tunesmith can "
            "classify with. Use a Whisper folder (WhisperForConditionalGeneration / WhisperModel) "
            "or a wav2vec2-style encoder (wav2vec2, HuBERT, WavLM, ...)."
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            if weights:
                model = AutoModel.from_pretrained(
                    folder,
                    config=config,
                    trust_remote_code=trust_remote_code,
                    local_files_only=True,
                    use_safetensors=True,
                )
            else:
                model = AutoModel.from_config(config, trust_remote_code=trust_remote_code)
        except (OSError, ValueError, KeyError) as e:
            raise ModelError(f"cannot load the audio model in {folder}: {e}") from None
    if not (
        hasattr(model, "encoder")
        and hasattr(model.encoder, "layers")
        and hasattr(model, "_get_feature_vector_attention_mask")
    ):
        raise ModelError(
            f"{folder}: {type(model).__name__} does not have the wav2vec2 encoder interface tunesmith "
            "pools over (encoder.layers, feature-vector attention mask)"
        )
    return AudioBackbone(model, "wav2vec2")


def load_feature_extractor(folder: Path, trust_remote_code: bool = False):
    """The folder's own audio preprocessing (sampling rate, log-mel or normalisation), as `pipeline` uses it."""
    from transformers import AutoFeatureExtractor

    if not (Path(folder) / "preprocessor_config.json").is_file():
        raise ModelError(
            f"{folder} has no preprocessor_config.json: tunesmith takes the sampling rate and the "
            "audio features from the model's own feature extractor (WhisperFeatureExtractor, "
            "Wav2Vec2FeatureExtractor); save the one the model was trained with into the folder "
            "(feature_extractor.save_pretrained(folder))"
        )
    try:
        extractor = AutoFeatureExtractor.from_pretrained(
            folder, local_files_only=True, trust_remote_code=trust_remote_code
        )
    except (OSError, ValueError) as e:
        raise ModelError(f"cannot load the feature extractor of {folder}: {e}") from None
    if not getattr(extractor, "sampling_rate", None):
        raise ModelError(
            f"{folder}/preprocessor_config.json names no sampling_rate; audio cannot be resampled for this model"
        )
    return extractor
