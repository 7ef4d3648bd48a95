"""Calibration (eval.calibrate, evaluation/calibration.py): a deliberately over-confident model's expected
calibration error falls once a temperature is fitted on validation and folded into its head; predict and
transformers.pipeline then give the same calibrated scores, and the labels do not change."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import base_config

import tunesmith
from tunesmith.config import config_from_dict
from tunesmith.errors import ConfigError
from tunesmith.evaluation.calibration import ece, fit_temperature, softmax
from tunesmith.formats import pipeline_outputs
from tunesmith.testing import sentiment_rows, write_csv


def test_temperature_scaling_undoes_a_known_over_confidence():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 2000)
    true_logits = rng.normal(size=(2000, 3)) + 2.0 * np.eye(3)[labels]
    # labels drawn from softmax(true_logits); the model reports 4x sharper logits: over-confident
    drawn = np.array([rng.choice(3, p=p) for p in softmax(true_logits)])
    t = fit_temperature(4.0 * true_logits, drawn)
    assert t == pytest.approx(4.0, rel=0.15)
    assert ece(softmax(4.0 * true_logits / t), drawn) < ece(softmax(4.0 * true_logits), drawn) / 2


def test_an_over_confident_run_is_calibrated_and_every_loader_agrees(tiny_bert_mean, tmp_path):
    data = write_csv(tmp_path / "small.csv", sentiment_rows(60, seed=4))
    cfg = base_config(tiny_bert_mean, data, tmp_path / "run", epochs=12, lr=1e-2, batch_size=8)
    cfg["train"]["early_stopping_patience"] = 100  # trained far past its best: over-confident
    cfg["data"]["validation_split"] = 0.4
    cfg["eval"] = {"calibrate": True}
    tunesmith.finetune(cfg, quiet=True)
    run = tmp_path / "run"
    metrics = json.loads((run / "metrics.json").read_text())
    cal = metrics["calibration"]
    assert cal["temperature"] > 1.5 and cal["ece_after"] < cal["ece_before"]
    assert metrics["validation"]["ece"] == pytest.approx(cal["ece_after"], abs=1e-6)  # the saved head is calibrated
    texts = ["loved it", "dull and slow", "what a film", "never again"]
    p = tunesmith.load(run)
    ours = p.task.parity_view(p.outputs(texts))
    theirs = pipeline_outputs(run, p.task, p.modality, texts)
    assert theirs is not None and p.task.output_difference(ours, theirs) < 1e-5
    assert "Calibrated (eval.calibrate): temperature" in (run / "report.html").read_text()
    assert "Scores calibrated by temperature scaling" in (run / "README.md").read_text()


def test_calibration_is_refused_for_tasks_without_scores_per_label():
    with pytest.raises(ConfigError, match="eval.* applies to"):
        config_from_dict({"task": "chat", "eval": {"calibrate": True}})
