"""train.log_to (accelerate's trackers): TensorBoard event files and a local MLflow store (SQLite) get the run's
config and every evaluation's numbers at its step; an unknown tracker is a config error naming the key."""

from __future__ import annotations

import json

import pytest
from conftest import base_config

import tunesmith
from tunesmith.config import config_from_dict
from tunesmith.errors import ConfigError


def test_tensorboard_and_mlflow_receive_every_evaluation(tiny_bert_mean, sentiment_csv, tmp_path, monkeypatch):
    pytest.importorskip("tensorboard")
    mlflow = pytest.importorskip("mlflow")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    out = tmp_path / "run"
    cfg = base_config(tiny_bert_mean, sentiment_csv, out, epochs=3)
    cfg["train"]["log_to"] = ["tensorboard", "mlflow"]
    tunesmith.finetune(cfg, quiet=True)
    history = json.loads((out / "metrics.json").read_text())["history"]
    events = list((out / "logs").rglob("events.out.tfevents.*"))
    assert events
    acc = EventAccumulator(str(events[0].parent))
    acc.Reload()
    logged = acc.Scalars("macro_f1")
    assert [e.step for e in logged] == [h["step"] for h in history]
    assert [round(e.value, 5) for e in logged] == [round(h["macro_f1"], 5) for h in history]
    mlflow.set_tracking_uri(f"sqlite:///{(out / 'mlflow.db').resolve()}")
    runs = mlflow.search_runs(search_all_experiments=True)
    assert len(runs) == 1
    assert runs["metrics.loss"].iloc[0] == pytest.approx(history[-1]["loss"], rel=1e-5)
    assert runs["params.train.epochs"].iloc[0] == "3"


def test_an_unknown_tracker_is_a_config_error():
    with pytest.raises(ConfigError, match="train.log_to"):
        config_from_dict({"train": {"log_to": ["wandb"]}})
