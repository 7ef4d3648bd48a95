"""`tunesmith curve` (tunesmith/curves.py) and model.from_scratch: a curve point per size, strategy and seed
on class-balanced samples, mean ± std per strategy, a page with the plot and table, the findings against
the same architecture trained from random weights; bad sizes, seeds and strategies refused before training."""

from __future__ import annotations

import json

import pytest
import torch

from tunesmith.cli import main
from tunesmith.curves import sample


def _curve(model, data, out, *extra):
    args = ["curve", "--model", str(model), "--data", str(data), "--out", str(out), "--quiet"]
    args += ["--set", "train.epochs=2", "--set", "train.precision=fp32", "--set", "model.max_length=32", *extra]
    return main(args)


def test_a_curve_with_from_scratch_scores_every_point_and_says_what_pretraining_buys(
    tiny_bert_mean, sentiment_csv, tmp_path
):
    out = tmp_path / "c"
    args = ["--sizes", "4,all", "--seeds", "2", "--strategies", "head-only", "--from-scratch"]
    assert _curve(tiny_bert_mean, sentiment_csv, out, *args) == 0
    curve = json.loads((out / "curve.json").read_text())
    assert set(curve["arms"]) == {"head-only", "from-scratch"} and curve["sizes"] == [4, "all"]
    assert len(curve["points"]) == 2 * 2 * 2
    small = [p for p in curve["points"] if p["size"] == 4]
    assert all(p["examples"] == 8 for p in small)  # 4 per class, 2 classes
    for arm, rows in curve["arms"].items():
        vals = [p["value"] for p in curve["points"] if p["arm"] == arm and p["size"] == 4]
        assert rows[0]["mean"] == pytest.approx(sum(vals) / 2) and rows[0]["min"] == min(vals)
    assert set(curve["vs_from_scratch"]) == {"head-only"} and len(curve["findings"]) == 1
    page = (out / "curve.html").read_text()
    assert "data:image/png;base64," in page and "Against training from scratch" in page
    assert not list(out.rglob("*.safetensors"))  # curve points keep reports, not weights


def test_from_scratch_reinitialises_the_backbone(tiny_bert_mean):
    from tunesmith.config import ModelConfig
    from tunesmith.models.backbone import reinitialise
    from tunesmith.models.text_backbone import TextBackbone

    backbone, _ = TextBackbone.load(tiny_bert_mean, ModelConfig(name=str(tiny_bert_mean)), {})
    before = {n: p.detach().clone() for n, p in backbone.named_parameters()}
    torch.manual_seed(0)
    assert reinitialise(backbone) > 0
    changed = [n for n, p in backbone.named_parameters() if not torch.equal(p, before[n]) and "LayerNorm" not in n]
    assert len(changed) > len(before) // 2


def test_sampling_is_class_balanced_and_seeded():
    key = ["a"] * 10 + ["b"] * 5
    picked = sample(key, 3, seed=1)
    assert sorted(key[i] for i in picked) == ["a"] * 3 + ["b"] * 3
    assert picked == sample(key, 3, seed=1) != sample(key, 3, seed=2)
    assert sample(key, None, seed=1) == list(range(15))


@pytest.mark.parametrize(
    "extra,expect",
    [
        (["--sizes", "500"], "larger than the training data"),
        (["--sizes", "0,8"], "use 1 or more"),
        (["--sizes", "8,lots"], "neither a whole number nor 'all'"),
        (["--seeds", "0"], "give at least 1"),
        (["--strategies", "head-only,bogus"], "bogus"),
    ],
)
def test_bad_curves_are_refused_before_training(tiny_bert_mean, sentiment_csv, tmp_path, capsys, extra, expect):
    assert _curve(tiny_bert_mean, sentiment_csv, tmp_path / "c", *extra) == 2
    assert expect in capsys.readouterr().err and not (tmp_path / "c").exists()
