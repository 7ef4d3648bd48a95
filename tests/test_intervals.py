"""95% confidence intervals (evaluation/intervals.py): they cover the true value about 95% of the time
over many synthetic draws, the bootstrap's statistic is the metric itself, and a finished run reports
them in metrics.json, the card and its headline."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import base_config
from sklearn.metrics import f1_score

import tunesmith
from tunesmith.evaluation.intervals import (
    bootstrap,
    classification_intervals,
    macro_f1_columns,
    macro_f1_from_sums,
    ratio,
    wilson,
)


@pytest.mark.parametrize("p,n", [(0.5, 40), (0.85, 60), (0.97, 200)])
def test_wilson_covers_the_true_accuracy_about_95_percent_of_the_time(p, n):
    rng = np.random.default_rng(0)
    draws = rng.binomial(n, p, size=4000)
    covered = np.mean([lo <= p <= hi for lo, hi in (wilson(int(k), n) for k in draws)])
    assert 0.925 <= covered <= 0.975, covered


def test_the_bootstrap_covers_a_true_error_rate_about_95_percent_of_the_time():
    """WER-style: errors / words over utterances of different lengths, true rate 0.2."""
    rng = np.random.default_rng(1)
    covered = []
    for _ in range(300):
        words = rng.integers(3, 20, size=120)
        errors = rng.binomial(words, 0.2)
        lo, hi = bootstrap(np.stack([errors, words], 1), ratio, resamples=500, seed=int(rng.integers(1 << 30)))
        covered.append(lo <= 0.2 <= hi)
    assert 0.90 <= np.mean(covered) <= 0.98, np.mean(covered)


def test_macro_f1_from_sums_is_scikit_learns_and_its_interval_holds_it():
    rng = np.random.default_rng(2)
    ref = rng.integers(0, 4, 300)
    pred = np.where(rng.random(300) < 0.7, ref, rng.integers(0, 4, 300))
    pred[pred == 3] = 2  # a class never predicted: sklearn counts its F1 as 0
    sums = macro_f1_columns(pred, ref, 4).sum(0, keepdims=True)
    expected = f1_score(ref, pred, labels=range(4), average="macro", zero_division=0)
    assert macro_f1_from_sums(4)(sums)[0] == pytest.approx(expected)
    ci = classification_intervals(pred, ref, 4)
    assert ci["macro_f1"][0] < expected < ci["macro_f1"][1]
    assert ci == classification_intervals(pred, ref, 4)  # seeded: the same rows, the same interval
    narrow = classification_intervals(np.tile(pred, 10), np.tile(ref, 10), 4)
    assert narrow["accuracy"][1] - narrow["accuracy"][0] < (ci["accuracy"][1] - ci["accuracy"][0]) / 2


def test_a_run_reports_intervals_in_metrics_the_card_and_the_cli(tiny_bert_mean, sentiment_csv, tmp_path, capsys):
    from tunesmith.cli import main

    out = tmp_path / "run"
    tunesmith.finetune(base_config(tiny_bert_mean, sentiment_csv, out, epochs=1), quiet=True)
    val = json.loads((out / "metrics.json").read_text())["validation"]
    for key in ("accuracy", "macro_f1"):
        lo, hi = val["intervals"][key]
        assert lo <= val[key] <= hi and hi - lo > 0.05  # 16 validation rows: a wide interval, said
    assert (
        f"[{val['intervals']['accuracy'][0]:.4f}, {val['intervals']['accuracy'][1]:.4f}]"
        in (out / "README.md").read_text()
    )
    assert "accuracy [95% CI]" in (out / "report.html").read_text()
    assert main(["evaluate", str(out), "--data", str(sentiment_csv)]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert first.startswith("accuracy ") and "[95% CI]" in first and first.count("[") == 3, first


def test_a_choice_the_validation_split_cannot_separate_is_called_too_close(tiny_bert_mean, sentiment_csv, tmp_path):
    """Three evaluations that barely differ (a learning rate too small to move the model), scored on 16
    validation rows: early stopping's pick is within noise, and the run says so; one evaluation is no choice."""
    cfg = base_config(tiny_bert_mean, sentiment_csv, tmp_path / "flat", epochs=3, lr=1e-7)
    warned = [w for w in tunesmith.finetune(cfg, quiet=True).warnings if w.startswith("TOO CLOSE TO CALL")]
    assert len(warned) == 1 and "3 candidates early stopping compared" in warned[0] and "16 validation" in warned[0]
    once = base_config(tiny_bert_mean, sentiment_csv, tmp_path / "once", epochs=1)
    assert not [w for w in tunesmith.finetune(once, quiet=True).warnings if w.startswith("TOO CLOSE")]
