"""Overfitting said plainly (evaluation/fit_summary.py): a run made to overfit says so in one sentence, in
metrics.json, the console, the report and the card, naming the weights it kept; a run that did not never
says it, and one still improving at its last evaluation is told more epochs may help."""

from __future__ import annotations

import json

from conftest import base_config

import tunesmith
from tunesmith.evaluation.fit_summary import fit_summary
from tunesmith.testing import sentiment_rows, write_csv


def test_a_run_made_to_overfit_says_so_and_names_the_kept_weights(tiny_bert_mean, tmp_path, capsys):
    data = write_csv(tmp_path / "small.csv", sentiment_rows(60, seed=4))
    cfg = base_config(tiny_bert_mean, data, tmp_path / "run", epochs=12, lr=1e-2, batch_size=8)
    cfg["train"]["early_stopping_patience"] = 100  # let it run on past its best
    cfg["data"]["validation_split"] = 0.4
    tunesmith.finetune(cfg)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    fit, best = metrics["fit"], metrics["best_evaluation"]
    assert "while training loss fell" in fit and ": overfitting; the weights from epoch" in fit
    assert f"the weights from epoch {best['epoch']} were kept" in fit
    assert " ".join(fit.split()) in " ".join(capsys.readouterr().err.split())  # the console (stderr)
    assert fit in (tmp_path / "run" / "README.md").read_text()
    assert "overfitting; the weights from" in (tmp_path / "run" / "report.html").read_text()


def test_a_run_that_did_not_overfit_never_says_it(tiny_bert_mean, sentiment_csv, tmp_path):
    tunesmith.finetune(base_config(tiny_bert_mean, sentiment_csv, tmp_path / "run", epochs=3), quiet=True)
    fit = json.loads((tmp_path / "run" / "metrics.json").read_text())["fit"]
    assert "overfitting" not in fit and "gap" in fit


def test_each_shape_of_curve_gets_its_own_sentence():
    def rec(epoch, train, val):
        return {"epoch": epoch, "step": epoch * 10, "train_loss": train, "loss": val}

    improving = [rec(1, 0.9, 0.8), rec(2, 0.7, 0.6), rec(3, 0.5, 0.45)]
    assert "may not have converged; more epochs" in fit_summary(improving, improving[-1], "accuracy")
    peaked = fit_summary(improving, improving[1], "accuracy")
    assert "best at epoch 2, whose weights were kept" in peaked and "converged" not in peaked
    one_rise = [rec(1, 0.9, 0.8), rec(2, 0.7, 0.6), rec(3, 0.5, 0.65)]
    said = fit_summary(one_rise, one_rise[1], "accuracy")
    assert "overfitting" not in said and "lowest at epoch 2" in said
    assert fit_summary([rec(1, 0.4, 0.5)], None, "accuracy").startswith("One evaluation")
    assert fit_summary([], None, "accuracy") == ""
