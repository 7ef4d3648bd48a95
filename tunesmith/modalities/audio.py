"""Audio inputs: clip files/bytes -> the model's own feature extractor, once.

Each clip is decoded, mixed to mono and resampled (soxr) to the feature extractor's rate, then run
through that extractor alone, as `pipeline("audio-classification")` does, so a clip's features never
depend on which other clips share its batch:
- Whisper (WhisperFeatureExtractor): log-mel over the model's fixed window (30 s for real
  checkpoints). A row keeps only the mel frames up to the end of the audio: every frame after that
  is pure zero-padding, whose log-mel is one constant (the extractor clamps to max - 8), kept as
  `mel_fill`; collate rebuilds the exact full window. 30 s of float32 mel per clip would be ~1 MB.
- wav2vec2 / HuBERT-style (Wav2Vec2FeatureExtractor): the normalised waveform, padded per batch.
"""
from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from ..data.audio import DEFAULT_MAX_SECONDS, AudioExamples, BadAudioError, audio_examples, load_audio
from ..errors import DataError
from . import file_inputs

# Mel frames kept past the last one that holds audio: the centred STFT window (n_fft 400 = 2.5 hops)
# reaches 2 frames beyond the audio; 4 leaves margin, and `split_mel` checks the rest is constant.
_MEL_MARGIN = 4


def extractor_fingerprint(extractor) -> str:
    return hashlib.sha256(json.dumps(extractor.to_dict(), sort_keys=True, default=str).encode()).hexdigest()[:16]


def model_max_seconds(extractor) -> float | None:
    """The longest clip the model takes whole: Whisper's window (chunk_length); None: no fixed limit."""
    n = getattr(extractor, "n_samples", None)
    return float(n) / extractor.sampling_rate if n else None


def is_whisper_extractor(extractor) -> bool:
    return type(extractor).__name__ == "WhisperFeatureExtractor"


def split_mel(mel: np.ndarray, samples: int, hop_length: int) -> tuple[torch.Tensor, float]:
    """Full-window log-mel [n_mels, N] -> (the frames up to the audio's end + margin, the constant
    value of every later frame). Raises if those later frames are not one constant (it would mean a
    feature extractor that does something else than zero-pad: then keep the full window)."""
    keep = min(mel.shape[1], math.ceil(samples / hop_length) + _MEL_MARGIN)
    rest = mel[:, keep:]
    fill = float(rest.flat[0]) if rest.size else 0.0
    if rest.size and not np.all(rest == fill):
        raise RuntimeError("the feature extractor's padding frames are not constant; cannot store them compactly")
    return torch.from_numpy(np.ascontiguousarray(mel[:, :keep], dtype=np.float32)), fill


class AudioInputs:
    modality = "audio"

    def read(self, path: str, data_cfg, role: str, require_labels: bool = True, reporter=None,
             text_column: str | None = None) -> AudioExamples:
        return audio_examples(path, data_cfg.audio_column, data_cfg.label_column, role,
                              skip_bad=data_cfg.skip_bad_audio, require_labels=require_labels, reporter=reporter,
                              text_column=text_column,
                              max_seconds=getattr(data_cfg, "max_audio_seconds", DEFAULT_MAX_SECONDS))

    def load(self, model_dir: Path, model_cfg):
        """The encoder and its feature extractor, at model.window_seconds if set (Whisper)."""
        from ..errors import ConfigError
        from ..models.audio_backbone import load_audio_backbone, load_feature_extractor
        from ..models.whisper_window import set_whisper_window

        extractor = load_feature_extractor(model_dir, model_cfg.trust_remote_code)
        backbone = load_audio_backbone(model_dir, model_cfg.trust_remote_code)
        window = model_cfg.window_seconds
        if window is not None and backbone.kind != "whisper":
            raise ConfigError("model.window_seconds applies to Whisper encoders (a fixed input window); "
                              f"{model_dir} is a {backbone.kind} encoder, which already reads each clip at its own "
                              "length")
        set_whisper_window(backbone.encoder, extractor, window)
        return backbone, extractor

    def task_kwargs(self, extractor, augment_cfg=None) -> dict[str, Any]:
        return {}

    def encode(self, task, extractor, ex: AudioExamples, max_length: int | None = None, augment: bool = False,
               reporter=None) -> list[dict]:
        """One row per clip, features computed here once (training epochs only pad and stack)."""
        rate = int(extractor.sampling_rate)
        limit = model_max_seconds(extractor)
        whisper = is_whisper_extractor(extractor)
        keys = ex.dedup_keys()
        salt = extractor_fingerprint(extractor)
        rows: list[dict] = []
        bar = reporter.bar("audio features", len(ex), unit="clips") if reporter is not None else None
        with (bar if bar is not None else _Null()) as b:
            for item, name, key in zip(ex.items, ex.names, keys):
                audio = _model_audio(item, name, rate, limit)
                if whisper:
                    out = extractor(audio, sampling_rate=rate, return_tensors="np")
                    mel, fill = split_mel(out["input_features"][0], len(audio), extractor.hop_length)
                    # encoder frames holding audio: conv1 keeps the mel rate, conv2 halves it (ceil)
                    frames = math.ceil(math.ceil(len(audio) / extractor.hop_length) / 2)
                    rows.append({"mel": mel, "mel_fill": fill, "mel_frames": int(out["input_features"].shape[-1]),
                                 "frames": frames})
                else:
                    out = extractor(audio, sampling_rate=rate, return_tensors="np")
                    rows.append({"input_values": torch.from_numpy(np.ascontiguousarray(out["input_values"][0],
                                                                                       dtype=np.float32))})
                rows[-1]["cache_key"] = f"{key}|{salt}"
                if b is not None:
                    b.advance()
        return rows

    def examples_from_inputs(self, inputs: Sequence[Any], pairs=None) -> AudioExamples:
        """What `predict` was given (paths or encoded bytes) -> examples; each is checked when encoded."""
        items = file_inputs(inputs, "audio file", "an audio file path or encoded audio bytes")
        names = [str(x) if isinstance(x, (str, Path)) else f"input {i + 1}" for i, x in enumerate(inputs)]
        return AudioExamples("input", items, None, names, [])


def _model_audio(item, name: str, rate: int, limit: float | None) -> np.ndarray:
    """load_audio for encoding. "Too long" here means longer than the model's window, so
    data.max_audio_seconds (checked when the data was read, where --skip-bad-audio applies) was set
    above it; the fix is different, and so is the message."""
    try:
        return load_audio(item, name, rate, limit)
    except BadAudioError as e:
        if limit is not None and e.reason.startswith("clip too long"):
            raise DataError(f"{name}: {e.reason.split(', the limit')[0]}, longer than this model's {limit:g} s window "
                            f"(Whisper cannot take it whole, and tunesmith never cuts clips silently). Cut the clip, "
                            f"or set data.max_audio_seconds to {limit:g} or less so that --skip-bad-audio skips such "
                            "clips (or, if model.window_seconds shortened the window, raise it).") from None
        # here (predict, or a clip changed since it was read) --skip-bad-audio does not apply: no hint
        raise DataError(f"{e.name}: {e.reason}. Remove or replace the clip.") from None


class _Null:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False
