"""report.html and README.md from small fake run results: what a reader of the run folder sees."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tunesmith.config import config_from_dict
from tunesmith.data.preflight import TextExamples
from tunesmith.evaluation.metrics import classification_metrics
from tunesmith.evaluation.model_card import write_model_card
from tunesmith.evaluation.report import write_report
from tunesmith.tasks.base import EvalOutput
from tunesmith.tasks.text_classification import TextClassificationTask

LABELS = ["negative", "positive"]
TASK = TextClassificationTask(LABELS)
EVIL = "<script>alert('x')</script> & more"


def _meta(out, layout: str) -> None:
    """The tunesmith.json a run of this layout writes (the card reads the layout and its note there)."""
    from types import SimpleNamespace

    from tunesmith.models.text_backbone import TextBackbone

    note = TextBackbone.own_layout_note(SimpleNamespace(pooling="mean"))  # what a mean-pooled BERT's run says
    (out / "tunesmith.json").write_text(json.dumps({"layout": layout, "pooling": "mean", "format_note": note}))


def _split(texts, truth, probs, with_loss=0.5):
    probs = np.asarray(probs, dtype=float)
    preds = probs.argmax(-1).tolist()
    ref = [LABELS.index(y) for y in truth]
    m = classification_metrics(np.array(preds), np.array(ref), LABELS) | {"loss": with_loss}
    return TextExamples("val.csv", list(texts), None, list(truth)), EvalOutput(m, preds, np.log(probs))


@pytest.fixture
def run(tmp_path):
    cfg = config_from_dict({"out": str(tmp_path / "my-run"), "data": {"train": "x.csv"}}).resolved()
    out = tmp_path / "my-run"
    out.mkdir()
    val_ex, val_ev = _split(
        ["great film", "awful plot", EVIL, "fine, I guess"],
        ["positive", "negative", "positive", "negative"],
        [[0.1, 0.9], [0.8, 0.2], [0.97, 0.03], [0.4, 0.6]],
    )
    test_ex, test_ev = _split(["loved it", "hated it"], ["positive", "negative"], [[0.3, 0.7], [0.6, 0.4]], 0.4)
    metrics = {
        "validation": val_ev.metrics,
        "test": test_ev.metrics,
        "history": [
            {"epoch": 1, "step": 5, "train_loss": 0.7, "loss": 0.6, "accuracy": 0.5, "macro_f1": 0.4},
            {"epoch": 2, "step": 10, "train_loss": 0.5, "loss": 0.55, "accuracy": 0.75, "macro_f1": 0.73},
        ],
        "stopped_early": False,
        "params": {"trainable": 1538, "total": 22_714_370},
        "train": {
            "steps": 5,
            "samples": 40,
            "tokens": 400,
            "pad_waste": 0.1,
            "train_seconds": 1.5,
            "train_samples_per_second": 26.7,
            "total_seconds": 3.0,
        },
        "run": {
            "task": "text-classification",
            "strategy": cfg.strategy.name,
            "model": "minilm",
            "pooling": "mean",
            "precision": "fp32",
            "seed": 42,
            "layout": "tunesmith",
        },
        "warnings": ["label 'positive' has only 2 <rows>"],
    }
    metrics["best_evaluation"] = metrics["history"][0]
    return out, cfg, metrics, {"validation": val_ex, "test": test_ex}, {"validation": val_ev, "test": test_ev}


def test_report_is_self_contained_and_escapes_user_text(run):
    out, cfg, metrics, examples, evals = run
    path = write_report(out, cfg, metrics, examples, evals, TASK)
    assert path == out / "report.html"
    page = path.read_text(encoding="utf-8")
    assert "negative" in page and "positive" in page
    assert page.count("data:image/png;base64,") >= 3  # two confusion matrices + curves
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert "&lt;rows&gt;" in page  # warnings are escaped too
    # The worst example (p(true)=0.03) is listed before the mildly wrong one (0.4).
    assert page.index("&lt;script&gt;") < page.index("fine, I guess")
    assert "0.970" in page  # its confidence in the wrong prediction
    assert not list(out.glob(".report.html.tmp*"))


def test_report_without_test_split_or_history(run):
    out, cfg, metrics, examples, evals = run
    metrics = metrics | {"test": None, "history": [], "best_evaluation": None, "warnings": []}
    page = write_report(out, cfg, metrics, examples | {"test": None}, evals | {"test": None}, TASK).read_text()
    assert page.count("data:image/png;base64,") == 1
    assert "Confusion matrix (test)" not in page


def test_report_of_one_evaluation_says_it_in_words(run):
    # a solved head evaluates once: no one-point curve, its scores said instead
    out, cfg, metrics, examples, evals = run
    metrics = metrics | {"history": metrics["history"][:1]}
    page = write_report(out, cfg, metrics, examples, evals, TASK).read_text()
    assert page.count("data:image/png;base64,") == 2  # the two confusion matrices only
    assert "One evaluation, at step 5: validation loss 0.6" in page and "no curve to draw" in page


def test_report_many_labels(run, tmp_path):
    out, cfg, metrics, _, _ = run
    labels = [f"class_{i}" for i in range(60)]
    rng = np.random.default_rng(0)
    ref = rng.integers(0, 60, 300)
    probs = rng.dirichlet(np.ones(60), 300)
    m = classification_metrics(probs.argmax(-1), ref, labels) | {"loss": 3.0}
    ex = TextExamples("v.csv", [f"t{i}" for i in range(300)], None, [labels[i] for i in ref])
    ev = EvalOutput(m, probs.argmax(-1).tolist(), np.log(probs))
    page = write_report(
        out,
        cfg,
        metrics | {"validation": m, "test": None},
        {"validation": ex, "test": None},
        {"validation": ev, "test": None},
        TextClassificationTask(labels),
    ).read_text()
    assert "class_59" in page
    assert page.count("<tr>") > 20


def test_model_card_tunesmith_layout_explains_pipeline_limit(run):
    out, cfg, metrics, _, _ = run
    _meta(out, "tunesmith")
    path = write_model_card(out, cfg, metrics, TASK)
    card = path.read_text(encoding="utf-8")
    assert path == out / "README.md"
    assert card.startswith("---\nlibrary_name: tunesmith\n")
    assert "pipeline_tag: text-classification" in card and "base_model: minilm" in card
    assert "1,538" in card and "22,714,370" in card
    assert 'tunesmith.load("my-run")' in card and 'tunesmith predict my-run "' in card
    assert 'pipeline("text-classification", model=' not in card  # no snippet that would fail
    assert "cannot" in card and "--set model.pooling=pooler" in card and "`mean` pooling" in card
    assert "&lt;" not in card and "<rows>" in card  # warnings listed verbatim under limitations
    assert not list(out.glob(".README.md.tmp*"))


def test_model_card_native_layout_shows_pipeline(run):
    out, cfg, metrics, _, _ = run
    _meta(out, "native")
    card = write_model_card(out, cfg, metrics, TASK).read_text(encoding="utf-8")
    assert 'pipeline("text-classification", model="my-run")' in card
    assert "model.pooling=pooler" not in card
    assert "| positive |" in card and "| test |" in card
