"""model.window_seconds: a Whisper that hears a shorter window than it was built with. The run
trains and decodes at that window, saves it so a reload and `transformers.pipeline` hear the same,
scores its base model at it, and refuses what does not fit."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from speech_helpers import SENTENCES, make_asr_whisper, say, speech_config, write_speech_table

import tunesmith
from tunesmith.errors import ConfigError, DataError


@pytest.fixture(scope="module")
def whisper_2s(tmp_path_factory) -> Path:
    return make_asr_whisper(tmp_path_factory.mktemp("models") / "whisper-2s", window=2)


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("speech")
    return write_speech_table(d, SENTENCES * 2, "train.csv"), write_speech_table(d, SENTENCES[:4], "val.csv", seed=50)


def test_shorter_window_trains_saves_and_matches_pipeline(whisper_2s, clips, tmp_path, monkeypatch):
    from transformers import pipeline

    from tunesmith.data.audio import load_audio
    from tunesmith.tasks.speech_recognition import SpeechRecognitionTask

    frames = []
    collate = SpeechRecognitionTask.collate

    def spy(self, rows, window=None):
        batch = collate(self, rows, window)
        frames.append(batch["input_features"].shape[-1])
        return batch

    monkeypatch.setattr(SpeechRecognitionTask, "collate", spy)
    train, val = clips
    cfg = speech_config(whisper_2s, train, tmp_path / "run", val, epochs=2)
    cfg["model"]["window_seconds"] = 1
    res = tunesmith.finetune(cfg, quiet=True)
    # the "before" score is the model as shipped, hearing its own 2 s (200 frames); training and every
    # evaluation of the run: 1 s
    assert frames[0] == 200 and set(frames[1:]) == {100}
    # the folder says 1 s everywhere a loader looks
    config = json.loads((res.out / "config.json").read_text())
    pre = json.loads((res.out / "preprocessor_config.json").read_text())
    assert config["max_source_positions"] == 50 and pre["chunk_length"] == 1 and pre["n_samples"] == 16000
    card = " ".join((res.out / "README.md").read_text().split())
    assert "Clips longer than 1 s are refused, never cut (`model.window_seconds: 1`" in card
    from safetensors import safe_open

    with safe_open(str(res.out / "model.safetensors"), "pt") as f:
        assert f.get_slice("model.encoder.embed_positions.weight").get_shape()[0] == 50
    # reload, evaluate against the base model heard at the same window, predict == pipeline
    n = len(frames)
    again = tunesmith.evaluate(res.out, val, text_column="transcript")
    assert frames[n:] == [100, 200]  # the run at its window, then the base model at its own
    m = json.loads((res.out / "metrics.json").read_text())
    assert again["wer"] == res.metrics["wer"]
    assert again["base_model"]["wer"] == m["before_finetuning"]["validation"]["wer"]
    wavs = sorted(val.parent.glob("val-*.wav"))
    predicted = tunesmith.load(res.out).predict([str(p) for p in wavs])
    asr = pipeline("automatic-speech-recognition", model=str(res.out), device="cpu")
    raw = [asr(load_audio(str(p), p.name, 16000))["text"] for p in wavs]
    assert all(raw)
    assert [t.strip() for t in raw] == [r["text"] for r in predicted]


def test_a_clip_longer_than_the_chosen_window_names_the_option(whisper_2s, tmp_path):
    import soundfile as sf

    long = tmp_path / "long.wav"
    sf.write(long, np.concatenate([say("yes go"), say("no stop"), say("up down")]), 16000)  # ~1.6 s
    (tmp_path / "t.csv").write_text(f"audio,transcript\n{long.name},yes go no stop up down\n")
    cfg = speech_config(whisper_2s, tmp_path / "t.csv", tmp_path / "run", tmp_path / "t.csv", epochs=1)
    cfg["model"]["window_seconds"] = 1
    with pytest.raises(DataError, match=r"long.wav.*at most 1 s.*model.window_seconds \(now 1"):
        tunesmith.finetune(cfg, quiet=True)
    assert not (tmp_path / "run" / "model.safetensors").exists()
    cfg["model"]["window_seconds"] = 2  # the model's own window takes it
    cfg["out"] = str(tmp_path / "run2")
    assert tunesmith.finetune(cfg, quiet=True).out.is_dir()


def test_window_longer_than_the_model_or_on_a_ctc_model_is_refused(whisper_2s, clips, tmp_path):
    from speech_helpers import make_ctc_wav2vec2

    train, val = clips
    cfg = speech_config(whisper_2s, train, tmp_path / "run", val, epochs=1)
    cfg["model"]["window_seconds"] = 3
    with pytest.raises(ConfigError, match="window_seconds 3: this model hears at most 2 s"):
        tunesmith.finetune(cfg, quiet=True)
    ctc = make_ctc_wav2vec2(tmp_path / "ctc")
    cfg = speech_config(ctc, train, tmp_path / "run-ctc", val, epochs=1)
    cfg["model"]["window_seconds"] = 1
    with pytest.raises(ConfigError, match="window_seconds applies to Whisper"):
        tunesmith.finetune(cfg, quiet=True)


def test_a_run_on_clips_far_shorter_than_the_window_says_so(clips, tmp_path, capsys):
    whisper_4s = make_asr_whisper(tmp_path / "whisper-4s", window=4)
    train, val = clips  # clips of at most 0.8 s against a 4 s window
    res = tunesmith.finetune(speech_config(whisper_4s, train, tmp_path / "run", val, epochs=1), quiet=False)
    err = " ".join(capsys.readouterr().err.split())
    assert "model.window_seconds: 2 would make its encoder's work about 2x smaller" in err
    assert json.loads((res.out / "config.json").read_text())["max_source_positions"] == 200  # not applied unasked
