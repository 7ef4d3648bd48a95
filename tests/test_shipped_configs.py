"""Every YAML in configs/ validates and runs (DESIGN rule 8) on its task's own tiny example, and the
run does what the file says: the saved config holds every setting the file makes, and the folder
reproduces the test scores the run reported."""

from pathlib import Path

import pytest
import yaml

import tunesmith
from tunesmith.config import load_config
from tunesmith.strategies import STRATEGIES
from tunesmith.tasks import TASKS

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").rglob("*.yaml"))


def _flat(tree: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def test_there_are_configs():
    assert CONFIGS


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_runs_as_written(path, task_examples, tmp_path):
    written = yaml.safe_load(path.read_text()) or {}
    task = written.get("task", "text-classification")
    ex = task_examples(task)
    overrides = {
        "model.name": str(ex.model),
        "data.train": str(ex.train),
        "data.validation": None,
        "data.test": str(ex.validation),
        "out": str(tmp_path / "run"),
        **_flat(ex.config),
    }
    strategy = written.get("strategy") or {}
    if not STRATEGIES.get(strategy.get("name", "full"))(
        **{k: v for k, v in strategy.items() if k != "name"}
    ).solves_head:
        overrides["train.epochs"] = 1  # a solved head has none
    if (written.get("model") or {}).get("window_seconds"):
        overrides["model.window_seconds"] = 1  # the tiny examples' Whispers hear 1 s
    cfg = load_config(path, overrides)
    res = tunesmith.finetune(cfg, quiet=True)
    saved = _flat(yaml.safe_load((res.out / "run_config.yaml").read_text()))
    picks = written.get("strategy", {}).get("name") == "auto"  # auto's file names auto; the run, its pick
    for key, value in _flat(written).items():
        if key not in overrides and not (picks and key == "strategy.name"):
            assert saved[key] == value, (key, saved[key], value)
    again = tunesmith.evaluate(res.out, ex.validation)
    for k in TASKS.get(task).metrics_tracked:
        assert again[k] == pytest.approx(res.test_metrics[k], abs=1e-6), k
