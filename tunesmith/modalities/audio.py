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

import contextlib
import hashlib
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data.audio import AudioExamples, BadAudioError, audio_examples, load_audio
from ..errors import DataError
from . import MODALITIES, file_inputs

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


@MODALITIES.register("audio")
class AudioModality:
    name = "audio"
    example_input = "clip.wav"
    request_kind = "file"
    media_types = ("audio/*",)
    streams = False

    def from_request(self, values: list, limits) -> list:
        from . import request_files

        return request_files(values, limits, "audio")

    def read(
        self, path: str, data_cfg, role: str, require_labels: bool = True, reporter=None, text_column: str | None = None
    ) -> AudioExamples:
        return audio_examples(
            path,
            data_cfg.audio_column,
            data_cfg.label_column,
            role,
            skip_bad=data_cfg.skip_bad_audio,
            require_labels=require_labels,
            reporter=reporter,
            text_column=text_column,
            max_seconds=data_cfg.max_audio_seconds,
        )

    def examples_from_inputs(self, inputs: Sequence[Any], pairs=None) -> AudioExamples:
        """What `predict` was given (paths or encoded bytes) -> examples; each is checked when encoded."""
        items = file_inputs(inputs, "audio file", "an audio file path or encoded audio bytes")
        names = [str(x) if isinstance(x, (str, Path)) else f"input {i + 1}" for i, x in enumerate(inputs)]
        return AudioExamples("input", items, None, names, [])

    def predict_inputs(self, examples: AudioExamples) -> tuple[list, list | None]:
        return list(examples.items), None

    def probe_inputs(self, examples: AudioExamples | None, n: int) -> list:
        return list(examples.items[:n]) if examples is not None else synthetic_clips(8)

    def pipeline_inputs(self, inputs: list, preprocessor) -> list:
        """Decoded clips at the model's rate (our decoder and resampler, so both sides hear the same
        samples, and the pipeline needs no ffmpeg)."""
        extractor = getattr(preprocessor, "feature_extractor", preprocessor)  # a processor holds one
        rate = int(extractor.sampling_rate)
        items = file_inputs(inputs, "audio file", "an audio file path or encoded audio bytes")
        return [{"raw": load_audio(x, f"input {i + 1}", rate), "sampling_rate": rate} for i, x in enumerate(items)]


def encode_clips(extractor, ex: AudioExamples, reporter=None) -> list[dict]:
    """One row per clip, features computed here once (training epochs only pad and stack)."""
    rate = int(extractor.sampling_rate)
    limit = model_max_seconds(extractor)
    whisper = is_whisper_extractor(extractor)
    keys = ex.dedup_keys()
    salt = extractor_fingerprint(extractor)
    rows: list[dict] = []
    bar = reporter.bar("audio features", len(ex), unit="clips") if reporter is not None else contextlib.nullcontext()
    with bar as b:
        for item, name, key in zip(ex.items, ex.names, keys):
            audio = _model_audio(item, name, rate, limit)
            out = extractor(audio, sampling_rate=rate, return_tensors="np")
            if whisper:
                mel, fill = split_mel(out["input_features"][0], len(audio), extractor.hop_length)
                # encoder frames holding audio: conv1 keeps the mel rate, conv2 halves it (ceil)
                frames = math.ceil(math.ceil(len(audio) / extractor.hop_length) / 2)
                rows.append(
                    {"mel": mel, "mel_fill": fill, "mel_frames": int(out["input_features"].shape[-1]), "frames": frames}
                )
            else:
                rows.append(
                    {"input_values": torch.from_numpy(np.ascontiguousarray(out["input_values"][0], dtype=np.float32))}
                )
            rows[-1]["cache_key"] = f"{key}|{salt}"
            if b is not None:
                b.advance()
    return rows


def collate_clips(rows: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """Model inputs of a batch of `encode_clips` rows. Whisper: the full mel window (kept frames, then
    the row's constant padding value) plus the count of encoder frames holding audio. wav2vec2-style:
    zero-padded waveforms plus their lengths (the backbone masks or groups by them)."""
    if "mel" in rows[0]:
        n_mels, width = rows[0]["mel"].shape[0], int(rows[0]["mel_frames"])
        x = torch.empty(len(rows), n_mels, width)
        for i, r in enumerate(rows):
            k = r["mel"].shape[1]
            x[i, :, :k] = r["mel"]
            x[i, :, k:] = float(r["mel_fill"])
        return {"input_features": x, "frames": torch.tensor([int(r["frames"]) for r in rows], dtype=torch.long)}
    lengths = [int(r["input_values"].shape[0]) for r in rows]
    x = torch.zeros(len(rows), max(lengths))
    for i, r in enumerate(rows):
        x[i, : lengths[i]] = r["input_values"]
    return {"input_values": x, "lengths": torch.tensor(lengths, dtype=torch.long)}


def window_hint(extractor, chosen: int | None, seconds: list[float] | None, reporter) -> None:
    """Whisper pads every clip to its window (30 s): say when the training clips (`seconds`: their
    durations, from the up-front audio check) fill little of it."""
    if chosen is not None or not seconds or not is_whisper_extractor(extractor):
        return
    window = model_max_seconds(extractor)
    longest = max(seconds)
    suggest = int(math.ceil(longest * 1.5))
    if window and suggest <= window / 2:
        reporter.info(
            f"the longest training clip is {longest:.1f} s of Whisper's {window:g} s window, which every "
            f"clip is padded to; model.window_seconds: {suggest} would make its encoder's work about "
            f"{window / suggest:.0f}x smaller (longer clips are then refused; README: Speech recognition)"
        )


def synthetic_clips(n: int) -> list[bytes]:
    """Half-second WAVs (tones of rising pitch in noise) at 16 kHz: valid, non-silent audio."""
    import io

    import soundfile as sf

    rng = np.random.default_rng(0)
    t = np.arange(8000) / 16000
    out = []
    for i in range(n):
        buf = io.BytesIO()
        x = 0.3 * np.sin(2 * np.pi * 200 * (i + 1) * t) + rng.normal(0, 0.05, t.shape)
        sf.write(buf, x.astype("float32"), 16000, format="WAV")
        out.append(buf.getvalue())
    return out


def _model_audio(item, name: str, rate: int, limit: float | None) -> np.ndarray:
    """load_audio for encoding. "Too long" here means longer than the model's window, so
    data.max_audio_seconds (checked when the data was read, where --skip-bad-audio applies) was set
    above it; the fix is different, and so is the message."""
    try:
        return load_audio(item, name, rate, limit)
    except BadAudioError as e:
        if limit is not None and e.reason.startswith("clip too long"):
            raise DataError(
                f"{name}: {e.reason.split(', the limit')[0]}, longer than this model's {limit:g} s window "
                f"(Whisper cannot take it whole, and tunesmith never cuts clips silently). Cut the clip, "
                f"or set data.max_audio_seconds to {limit:g} or less so that --skip-bad-audio skips such "
                "clips (or, if model.window_seconds shortened the window, raise it)."
            ) from None
        # here (predict, or a clip changed since it was read) --skip-bad-audio does not apply: no hint
        raise DataError(f"{e.name}: {e.reason}. Remove or replace the clip.") from None


def window_card_line(out: Path, chosen: int | None) -> list[str]:
    """For a model card: Whisper hears a fixed window and refuses longer clips; say how long, and
    whether the run chose it (model.window_seconds). Nothing for models without a fixed window."""
    try:
        pre = json.loads((Path(out) / "preprocessor_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    if pre.get("feature_extractor_type") != "WhisperFeatureExtractor" or not pre.get("chunk_length"):
        return []
    return [
        f"- Clips longer than {pre['chunk_length']:g} s are refused, never cut"
        + (
            f" (`model.window_seconds: {chosen}` shortened Whisper's window to fit short clips, for less encoder work; "
            "cut longer audio into pieces)."
            if chosen
            else ": Whisper hears that window whole."
        )
    ]
