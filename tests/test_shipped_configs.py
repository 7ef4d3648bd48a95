"""Every YAML in configs/ validates and runs (DESIGN rule 8), on a tiny model and tiny data of its task."""
from pathlib import Path

import pytest
import yaml

import tunesmith
from tunesmith.config import load_config
from tunesmith.tasks import TASKS

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").rglob("*.yaml"))


def test_there_are_configs():
    assert CONFIGS


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_runs(path, tiny_bert_mean, sentiment_csv, sentiment_test_csv, tiny_resnet, image_folders, tmp_path,
                     request):
    task = (yaml.safe_load(path.read_text()) or {}).get("task", "text-classification")
    if TASKS.get(task).modality == "image":
        model, train, test, extra = tiny_resnet, *image_folders, {}
    elif TASKS.get(task).modality == "speech":  # clips + transcripts; the tiny Whisper's decoder is short
        model, (train, test) = request.getfixturevalue("tiny_asr_whisper"), request.getfixturevalue("speech_tables")
        extra = {"speech.max_new_tokens": 6}
    elif TASKS.get(task).modality == "audio":
        model, (train, test), extra = request.getfixturevalue("tiny_whisper"), request.getfixturevalue("audio_folders"), {}
    else:
        model, train, test, extra = tiny_bert_mean, sentiment_csv, sentiment_test_csv, {"model.max_length": 32}
    if (yaml.safe_load(path.read_text()).get("model") or {}).get("window_seconds"):
        extra["model.window_seconds"] = 1  # the tiny Whispers' own window is 1 s
    cfg = load_config(path, {"model.name": str(model), "data.train": str(train), "data.validation": None,
                             "data.test": str(test), "out": str(tmp_path / "run"), "train.epochs": 1, **extra})
    res = tunesmith.finetune(cfg, quiet=True)
    assert (res.out / "metrics.json").is_file()
    assert res.test_metrics is not None
