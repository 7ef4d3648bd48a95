"""Audio data: a folder of class sub-folders or a table of audio paths/bytes -> AudioExamples.

Every clip is decoded once up front (soundfile, at its own rate), so a missing, unreadable, empty,
silent or too-long clip, or one at an unusable sample rate, fails before any model loads with an error
naming the file; with skip_bad it is listed in the report instead. Never dropped silently.
`load_audio` is what every consumer calls to get the model's input: float32 mono, resampled with soxr.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import DataError
from .media_sources import MediaKind, class_folder, file_keys, table_files
from .preflight import _column, _is_missing, _rows, table_labels
from .sources import read_table

# What libsndfile decodes (MP3 only from libsndfile 1.1 on: see _extensions()).
_BASE_EXTENSIONS = {".wav", ".flac", ".ogg", ".oga", ".opus", ".aif", ".aiff"}
_SKIP_HINT = "Remove or replace it, or pass --skip-bad-audio to skip bad clips (they are listed in the report)."
# Below 4 kHz a clip holds no speech band (telephone audio is 8 kHz); above 768 kHz it is not audio
# any decoder here produces. Both mean a mislabelled header or a file that is not what it says.
MIN_RATE, MAX_RATE = 4000, 768000
# Digital silence: peak under -80 dBFS, about 3 LSB of 16-bit audio. A quiet room is well above this;
# an all-zero clip is a failed recording or a broken export, and would train the head on nothing.
SILENCE_PEAK = 1e-4
# shorter than this holds no word, and is below a wav2vec2-style encoder's first receptive field (25 ms)
MIN_SECONDS = 0.05
# Longest clip accepted when the config does not say: Whisper's 30 s window.
DEFAULT_MAX_SECONDS = 30.0


def _extensions() -> set[str]:
    import soundfile as sf

    return _BASE_EXTENSIONS | ({".mp3"} if "MP3" in sf.available_formats() else set())


@dataclass
class AudioExamples:
    source: str
    items: list[str | bytes]  # absolute file path, or the encoded bytes of the clip
    labels: list[str] | None  # class names (audio-classification); None for unlabelled data and speech recognition
    names: list[str]  # how messages and reports name each item
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (name, reason), from skip_bad
    texts: list[str] | None = None  # transcripts (speech recognition), from data.text_column
    seconds: list[float] | None = None  # duration of each clip at its own rate, from the up-front check

    def __len__(self) -> int:
        return len(self.items)

    display_column = "input"  # how reports head the column of display(i)

    def display(self, i: int) -> str:
        return self.names[i]

    def subset(self, idx: Sequence[int], source: str | None = None) -> AudioExamples:
        # skipped describes the source, not the rows, so a subset keeps it and the report still shows it
        def pick(xs):
            return [xs[i] for i in idx] if xs is not None else None

        return AudioExamples(
            source or self.source,
            pick(self.items),
            pick(self.labels),
            pick(self.names),
            list(self.skipped),
            pick(self.texts),
            pick(self.seconds),
        )

    def dedup_keys(self) -> list[str]:
        """sha1 of each clip's encoded bytes: equal keys mean the same file, e.g. a train/validation leak."""
        return file_keys(self.items)


class BadAudioError(DataError):
    """A clip we cannot use; `name` and `reason` let skip_bad list it in the report."""

    def __init__(self, name: str, reason: str):
        super().__init__(f"{name}: {reason}. {_SKIP_HINT}")
        self.name, self.reason = name, reason


def _decode(item: str | bytes, name: str, max_seconds: float | None) -> tuple[np.ndarray, int]:
    """Decode fully to float32 mono at the file's own rate; BadAudioError for every unusable clip."""
    import soundfile as sf

    if isinstance(item, str) and not os.path.isfile(item):
        raise BadAudioError(name, f"audio file not found: {item}")
    if isinstance(item, bytes) and not item:
        raise BadAudioError(name, "empty clip: no bytes")
    try:
        with sf.SoundFile(io.BytesIO(item) if isinstance(item, bytes) else item) as f:
            rate, frames = int(f.samplerate), f.frames
            if not MIN_RATE <= rate <= MAX_RATE:
                raise BadAudioError(
                    name,
                    f"unsupported sample rate {rate} Hz (expected {MIN_RATE}..{MAX_RATE} Hz; "
                    "the header is probably wrong: re-export the clip, e.g. at 16000 Hz)",
                )
            if max_seconds is not None and frames > 0 and frames / rate > max_seconds:
                raise BadAudioError(
                    name,
                    f"clip too long: {frames / rate:.1f} s, the limit is {max_seconds:g} s "
                    "(data.max_audio_seconds, and the model's own window). Cut it into "
                    "shorter clips",
                )
            data = f.read(dtype="float32", always_2d=True)
    except BadAudioError:
        raise
    except Exception as e:  # libsndfile reports unknown formats, truncation and corrupt headers alike
        hint = f"supported: {', '.join(sorted(_extensions()))}"
        raise BadAudioError(name, f"cannot decode audio ({type(e).__name__}: {e}; {hint})") from None
    if data.shape[0] == 0:
        raise BadAudioError(name, "empty clip: it holds no audio samples")
    if data.shape[0] < MIN_SECONDS * rate:
        raise BadAudioError(
            name,
            f"clip too short: {1000 * data.shape[0] / rate:.0f} ms, less than the {1000 * MIN_SECONDS:.0f} ms a model "
            "can hear (a cut-off file?)",
        )
    if max_seconds is not None and data.shape[0] / rate > max_seconds:  # frames may be an estimate (MP3)
        raise BadAudioError(
            name,
            f"clip too long: {data.shape[0] / rate:.1f} s, the limit is {max_seconds:g} s "
            "(data.max_audio_seconds, and the model's own window). Cut it into shorter clips",
        )
    if not np.isfinite(data).all():
        raise BadAudioError(name, "clip holds NaN or infinite samples (a broken float export)")
    mono = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]  # stereo -> mono: the channels' mean
    peak = float(np.abs(mono).max())
    if peak < SILENCE_PEAK:
        level = "all zeros" if peak == 0 else f"peak {20 * math.log10(peak):.0f} dBFS"
        raise BadAudioError(
            name,
            f"silent clip ({level}"
            + (
                ", channels cancel out when mixed to mono"
                if data.shape[1] > 1 and np.abs(data).max() >= SILENCE_PEAK
                else ""
            )
            + ")",
        )
    return mono, rate


def load_audio(item: str | bytes, name: str, sampling_rate: int, max_seconds: float | None = None) -> np.ndarray:
    """A clip as the model takes it: float32 mono at `sampling_rate`, resampled with soxr (HQ).

    Raises BadAudioError (a DataError) naming the clip for a missing or undecodable file, an empty or
    silent clip, a sample rate outside 4 kHz..768 kHz, or a clip longer than max_seconds."""
    if not isinstance(sampling_rate, (int, np.integer)) or sampling_rate <= 0:
        raise ValueError(f"sampling_rate must be a positive integer, got {sampling_rate!r}")
    mono, rate = _decode(item, name, max_seconds)
    if rate != sampling_rate:
        import soxr

        mono = soxr.resample(mono, rate, int(sampling_rate), quality="HQ")
    return np.ascontiguousarray(mono, dtype=np.float32)


def _verify(
    source: str,
    items: list,
    labels: list[str] | None,
    names: list[str],
    skip_bad: bool,
    reporter=None,
    texts: list[str] | None = None,
    max_seconds: float | None = None,
) -> AudioExamples:
    """Decode every clip once; a bad one raises, or with skip_bad is recorded in .skipped."""
    keep, skipped, seconds = [], [], []
    bar_ctx = reporter.bar(f"checking audio ({source})", len(items), unit="clips") if reporter else None
    with bar_ctx or contextlib.nullcontext() as bar:
        for i, (item, name) in enumerate(zip(items, names)):
            try:
                mono, rate = _decode(item, name, max_seconds)
                keep.append(i)
                seconds.append(len(mono) / rate)
            except BadAudioError as e:
                if not skip_bad:
                    raise
                skipped.append((name, e.reason))
                seconds.append(0.0)
            if bar is not None:
                bar.advance()
    if not keep:
        raise DataError(
            f"{source}: none of its {len(items)} clips is usable (first: {skipped[0][0]}: "
            f"{skipped[0][1]}). Check that these are audio files of a supported type "
            f"({', '.join(sorted(_extensions()))})."
        )
    out = AudioExamples(source, items, labels, names, skipped, texts, seconds).subset(keep)
    if labels is not None:
        emptied = sorted(set(labels) - set(out.labels))
        if emptied:
            bad = [n for n, y in zip(names, labels) if y in emptied]
            raise DataError(
                f"{source}: every clip of class{'es' if len(emptied) > 1 else ''} "
                f"{', '.join(repr(c) for c in emptied)} was unusable and skipped, leaving the class "
                f"empty ({', '.join(bad[:5])}{' ...' if len(bad) > 5 else ''}). Replace those clips, "
                "or remove the class."
            )
    return out


def _kind() -> MediaKind:
    return MediaKind(
        frozenset(_extensions()),
        "audio",
        "clips",
        "audio clips",
        ("dog", "bark1.wav", "cat", "meow1.wav"),
        "Convert (e.g. `ffmpeg -i in.m4a out.flac`)",
        "the audio file path",
        "the clip's encoded bytes",
        "--audio-column",
        "--skip-bad-audio",
    )


def audio_examples_from_folder(
    root: str | Path,
    role: str = "data",
    skip_bad: bool = False,
    require_labels: bool = True,
    reporter=None,
    max_seconds: float | None = DEFAULT_MAX_SECONDS,
) -> AudioExamples:
    """root/<label>/<clips>: one sub-folder per class. Without require_labels, a flat folder of clips is
    accepted too (labels None)."""
    items, labels, names = class_folder(root, role, require_labels, _kind())
    return _verify(str(Path(root)), items, labels, names, skip_bad, reporter, None, max_seconds)


def audio_examples_from_table(
    path: str | Path,
    audio_column: str = "audio",
    label_column: str = "label",
    role: str = "data",
    skip_bad: bool = False,
    require_labels: bool = True,
    reporter=None,
    text_column: str | None = None,
    max_seconds: float | None = DEFAULT_MAX_SECONDS,
) -> AudioExamples:
    """A table whose audio column holds paths (relative to the table's folder) or encoded audio bytes;
    with text_column, that column's transcripts come along (speech recognition)."""
    path = str(path)
    df = read_table(path, role)
    items, names = table_files(path, df, audio_column, _kind(), skip_bad)
    texts = None
    if text_column:
        raw = _column(df, text_column, path, "transcript", "--text-column")
        blank = [i for i, v in enumerate(raw) if _is_missing(v) or not str(v).strip()]
        if blank:
            raise DataError(
                f"{path}: empty transcript in column {text_column!r} at {_rows(blank)} (data rows, "
                "header excluded). Fill in what is said in each clip, or drop those rows."
            )
        texts = [str(v).strip() for v in raw]
    labels = table_labels(path, df, label_column) if require_labels else None
    return _verify(path, items, labels, names, skip_bad, reporter, texts, max_seconds)


def audio_examples(
    path: str | Path,
    audio_column: str = "audio",
    label_column: str = "label",
    role: str = "data",
    skip_bad: bool = False,
    require_labels: bool = True,
    reporter=None,
    text_column: str | None = None,
    max_seconds: float | None = DEFAULT_MAX_SECONDS,
) -> AudioExamples:
    """A folder of class sub-folders, or a table file (CSV/TSV/JSONL/JSON/Parquet) of clips with labels
    and/or transcripts (text_column). max_seconds: longest clip accepted (None: no limit here)."""
    p = Path(path)
    if p.is_dir():
        if text_column:
            raise DataError(
                f"{p}: a folder of clips has no transcripts. Give a table (.csv, .jsonl, .parquet, ...) "
                f"with an audio column and a {text_column!r} column holding what each clip says."
            )
        return audio_examples_from_folder(p, role, skip_bad, require_labels, reporter, max_seconds)
    if not p.exists():
        raise DataError(
            f"{role} path not found: {p}. Give a folder with one sub-folder per class, or a table "
            "(.csv, .tsv, .jsonl, .json, .parquet) with audio and label (or transcript) columns."
        )
    return audio_examples_from_table(
        p, audio_column, label_column, role, skip_bad, require_labels, reporter, text_column, max_seconds
    )
