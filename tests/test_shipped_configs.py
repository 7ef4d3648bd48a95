"""Every YAML in configs/ validates and runs (DESIGN rule 8), on a tiny model and tiny data."""
from pathlib import Path

import pytest

import tunesmith
from tunesmith.config import load_config

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").rglob("*.yaml"))


def test_there_are_configs():
    assert CONFIGS


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_runs(path, tiny_bert_mean, sentiment_csv, sentiment_test_csv, tmp_path):
    cfg = load_config(path, {"model.name": str(tiny_bert_mean), "data.train": str(sentiment_csv),
                             "data.test": str(sentiment_test_csv), "out": str(tmp_path / "run"),
                             "train.epochs": 1, "model.max_length": 32})
    res = tunesmith.finetune(cfg, quiet=True)
    assert (res.out / "metrics.json").is_file()
    assert res.test_metrics is not None
