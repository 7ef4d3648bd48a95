"""`tunesmith train --seeds K` (tunesmith/seeds.py): K seeded runs, mean ± std (min, max) of every score,
the best on validation kept as --out (and reproduced exactly by its run_config.yaml), the others'
reports in --out/seeds/, degenerate seeds flagged; bad counts refused before anything trains."""

from __future__ import annotations

import json
import statistics

import pytest
import yaml

import tunesmith
from tunesmith.cli import main
from tunesmith.errors import RunFolderError


def _train(tiny_bert_mean, data, out, *extra):
    args = ["train", "--model", str(tiny_bert_mean), "--data", str(data), "--out", str(out)]
    args += ["--set", "train.epochs=1", "--set", "train.precision=fp32", "--set", "model.max_length=32", *extra]
    return main(args)


def test_seeds_report_their_spread_keep_the_best_and_it_reproduces(tiny_bert_mean, sentiment_csv, tmp_path, capsys):
    out = tmp_path / "run"
    assert _train(tiny_bert_mean, sentiment_csv, out, "--seeds", "3", "--set", "train.lr=2e-3") == 0
    seeds = json.loads((out / "metrics.json").read_text())["seeds"]
    per = {r["seed"]: r["validation"] for r in seeds["per_seed"]}
    assert sorted(per) == seeds["seeds"] == [42, 43, 44]  # train.seed (42 by default), +1, +2
    f1 = [v["macro_f1"] for v in per.values()]
    s = seeds["summary"]["validation"]["macro_f1"]
    assert s["mean"] == pytest.approx(statistics.fmean(f1)) and s["std"] == pytest.approx(statistics.stdev(f1))
    assert (s["min"], s["max"]) == (min(f1), max(f1))
    assert per[seeds["kept_seed"]]["macro_f1"] == max(f1)
    # one model on disk: the kept seed's, at --out; the others' reports and scores in seeds/
    assert (out / "model.safetensors").is_file() and not list((out / "seeds").rglob("*.safetensors"))
    others = sorted(f"seed-{k}" for k in per if k != seeds["kept_seed"])
    assert sorted(p.name for p in (out / "seeds").iterdir()) == others
    with pytest.raises(RunFolderError, match="was not the best on validation"):
        tunesmith.load(out / "seeds" / others[0])
    assert "## Seed variance" in (out / "README.md").read_text()
    assert "Seed variance" in (out / "report.html").read_text()
    assert f"3 seeds: validation macro-F1 {s['mean']:.4f} ± {s['std']:.4f}" in capsys.readouterr().err
    # the kept run's config names its seed and folder: training it again gives the same model, exactly
    saved = yaml.safe_load((out / "run_config.yaml").read_text())
    assert saved["train"]["seed"] == seeds["kept_seed"] and saved["out"] == str(out)
    assert main(["train", "-c", str(out / "run_config.yaml"), "--out", str(tmp_path / "again")]) == 0
    again = json.loads((tmp_path / "again" / "metrics.json").read_text())["validation"]
    assert again["macro_f1"] == per[seeds["kept_seed"]]["macro_f1"]
    assert again["loss"] == json.loads((out / "metrics.json").read_text())["validation"]["loss"]


def test_seeds_that_learned_nothing_are_flagged_degenerate(tiny_bert_mean, sentiment_csv, tmp_path, capsys):
    out = tmp_path / "run"
    assert _train(tiny_bert_mean, sentiment_csv, out, "--seeds", "2", "--set", "train.lr=1e-9") == 0
    seeds = json.loads((out / "metrics.json").read_text())["seeds"]
    assert set(seeds["degenerate"]) == {"42", "43"}
    assert "DEGENERATE SEED 42: no better than the trivial predictor" in capsys.readouterr().err


@pytest.mark.parametrize("k", ["0", "-2"])
def test_a_seed_count_below_one_is_refused_before_training(tiny_bert_mean, sentiment_csv, tmp_path, capsys, k):
    assert _train(tiny_bert_mean, sentiment_csv, tmp_path / "run", "--seeds", k) == 2
    assert "give at least 1" in capsys.readouterr().err and not (tmp_path / "run").exists()
