"""`tunesmith train --cv K` (tunesmith/cross_validation.py): stratified folds, each held out once, the scores'
mean ± std over folds, then one model trained on all the rows (its in-sample validation said so); bad
fold counts refused before anything trains."""

from __future__ import annotations

import json
import statistics

import pytest

import tunesmith
from tunesmith.cli import main
from tunesmith.errors import RunFolderError
from tunesmith.testing import sentiment_rows, write_csv


def _train(model, data, out, *extra):
    args = ["train", "--model", str(model), "--data", str(data), "--out", str(out)]
    args += ["--set", "train.epochs=2", "--set", "train.precision=fp32", "--set", "model.max_length=32", *extra]
    return main(args)


def test_folds_are_stratified_scored_and_the_final_model_trains_on_everything(tiny_bert_mean, tmp_path, capsys):
    data = write_csv(tmp_path / "d.csv", sentiment_rows(60, seed=5))
    out = tmp_path / "run"
    assert _train(tiny_bert_mean, data, out, "--cv", "3") == 0
    metrics = json.loads((out / "metrics.json").read_text())
    cv = metrics["cv"]
    assert cv["folds"] == 3 and cv["stratified"] and [f["fold"] for f in cv["per_fold"]] == [1, 2, 3]
    acc = [f["validation"]["accuracy"] for f in cv["per_fold"]]
    assert cv["summary"]["validation"]["accuracy"]["mean"] == pytest.approx(statistics.fmean(acc))
    # every row held out exactly once, each fold keeping the classes' shares (60 rows, 30 per class)
    held = [json.loads((out / "folds" / f"fold-{i}" / "metrics.json").read_text())["validation"] for i in (1, 2, 3)]
    assert sum(h["n"] for h in held) == 60
    assert all(h["per_class"]["positive"]["support"] == 10 for h in held)
    # the model kept was trained on all 60 rows, and says its own validation scores are in-sample
    assert metrics["validation"]["n"] == 60 and any("in-sample" in w for w in metrics["warnings"])
    assert tunesmith.load(out).predict("good")[0]["label"] in ("positive", "negative")
    with pytest.raises(RunFolderError, match="cross-validation fold"):
        tunesmith.load(out / "folds" / "fold-1")
    assert "## Cross-validation" in (out / "README.md").read_text()
    assert "3-fold cross-validation (stratified): validation macro-F1" in capsys.readouterr().err


@pytest.mark.parametrize(
    "k,expect",
    [("1", "give at least 2 folds"), ("31", "has only 30 example(s)")],
)
def test_bad_fold_counts_are_refused_before_training(tiny_bert_mean, tmp_path, capsys, k, expect):
    data = write_csv(tmp_path / "d.csv", sentiment_rows(60, seed=5))
    assert _train(tiny_bert_mean, data, tmp_path / "run", "--cv", k) == 2
    assert expect in capsys.readouterr().err and not (tmp_path / "run").exists()


def test_cv_with_a_validation_file_is_refused(tiny_bert_mean, sentiment_csv, tmp_path, capsys):
    args = ["--cv", "3", "--validation-data", str(sentiment_csv)]
    assert _train(tiny_bert_mean, sentiment_csv, tmp_path / "run", *args) == 2
    assert "remove data.validation" in capsys.readouterr().err


def test_head_only_folds_share_one_feature_extraction(tiny_bert_mean, tmp_path):
    """Fold 1 runs every row through the frozen backbone (its training and held-out rows are all of them);
    the later folds and the final model are other sets of the same rows: read, not recomputed."""
    data = write_csv(tmp_path / "d.csv", sentiment_rows(60, seed=5))
    out = tmp_path / "run"
    args = ["train", "--model", str(tiny_bert_mean), "--data", str(data), "--out", str(out), "--quiet"]
    assert main([*args, "--strategy", "head-only", "--cv", "3", "--set", "train.precision=fp32"]) == 0
    hits = [
        json.loads((out / "folds" / f"fold-{i}" / "metrics.json").read_text())["train"]["feature_cache_hit"]
        for i in (1, 2, 3)
    ]
    assert hits == [0.0, 1.0, 1.0]
    assert json.loads((out / "metrics.json").read_text())["train"]["feature_cache_hit"] == 1.0
