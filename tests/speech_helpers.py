"""Tiny speech-recognition models and synthetic speech for the fast tests (offline, deterministic).

Whisper: a 2+2-layer random WhisperForConditionalGeneration with a real (byte-level, merge-free)
WhisperTokenizer, a 1 s feature-extractor window and a generation config like the real ones, in
English-only or multilingual form. Speech: each word is a short chord of two tones, so a clip's
content is learnable by a tiny model in a few steps.
"""

from __future__ import annotations

from pathlib import Path

# the builders live in the package (the speech task's own tiny example uses them); tests import them here
from tunesmith.testing import (
    SENTENCES,
    SPECIALS_EN,
    SPECIALS_MULTI,
    WORDS,
    bytes_to_unicode,
    make_asr_whisper,
    make_ctc_wav2vec2,
    say,
    write_speech_table,
)

__all__ = [
    "SENTENCES",
    "SPECIALS_EN",
    "SPECIALS_MULTI",
    "WORDS",
    "bytes_to_unicode",
    "make_asr_whisper",
    "make_ctc_wav2vec2",
    "say",
    "write_speech_table",
    "speech_config",
]


def speech_config(model: Path, train: Path, out: Path, val: Path | None = None, **train_opts) -> dict:
    t = {
        "epochs": 2,
        "batch_size": 4,
        "eval_batch_size": 8,
        "lr": 3e-3,
        "precision": "fp32",
        "seed": 0,
        "early_stopping_patience": None,
    }
    t.update(train_opts)
    cfg = {
        "task": "speech-recognition",
        "out": str(out),
        "model": {"name": str(model)},
        "data": {"train": str(train), "text_column": "transcript", "audio_column": "audio"},
        "train": t,
        "speech": {"max_new_tokens": 12},
    }
    if val is not None:
        cfg["data"]["validation"] = str(val)
    return cfg
