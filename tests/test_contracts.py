"""Contract tests from the registries: every registered task, each from its own tiny example
(Task.tiny_example), under every registered strategy. A newly registered task or strategy is
picked up here without editing this file, and nothing here asks which task or modality it holds."""

from __future__ import annotations

import json
import math

import pytest
import torch

import tunesmith
from tunesmith.config import config_from_dict
from tunesmith.errors import ConfigError
from tunesmith.formats import format_of, pipeline_outputs, read_meta
from tunesmith.modalities import MODALITIES
from tunesmith.strategies import STRATEGIES
from tunesmith.tasks import TASKS
from tunesmith.tasks.base import EvalOutput
from tunesmith.testing import task_and_model
from tunesmith.training.optim import build_optimizer

# every task under every strategy that trains; a strategy that chooses (auto) races these same
# strategies as its candidates: tests/test_auto.py runs its race
CASES = [(t, s) for t in TASKS.names() for s in STRATEGIES.names() if STRATEGIES.get(s).defaults]


@pytest.fixture
def examples(task_examples):
    return task_examples


def _config(task_name: str, ex, out, strategy: str, **train) -> dict:
    """The task's example config, fast training settings, fp32 for exact comparisons."""
    cfg = json.loads(json.dumps(ex.config))  # a deep copy: examples are shared
    cfg.update(task=task_name, out=str(out), strategy={"name": strategy})
    cfg.setdefault("model", {})["name"] = str(ex.model)
    cfg.setdefault("data", {}).update(train=str(ex.train), validation=str(ex.validation))
    cfg["train"] = {"epochs": 2, "batch_size": 16, "lr": 2e-3, "precision": "fp32", "seed": 0, "threads": 1, **train}
    return STRATEGIES.get(strategy).adapt(cfg)  # less what the strategy refuses (a solved head: epochs, lr)


def _refusal(task_name: str, strategy: str) -> str | None:
    """Why the config refuses this pairing (a strategy that cannot train this task), else None."""
    try:
        config_from_dict({"task": task_name, "strategy": {"name": strategy}})
    except ConfigError as e:
        return str(e)
    return None


def _train_examples(task_name: str, ex):
    modality = MODALITIES.get(TASKS.get(task_name).modality)()
    cfg = config_from_dict(_config(task_name, ex, "unused", "full"))
    return modality.read(str(ex.train), cfg.data, "training data")


@pytest.mark.parametrize("task_name,strategy", CASES)
def test_one_step_changes_exactly_the_trainable_parameters(task_name, strategy, examples):
    refused = _refusal(task_name, strategy)
    if refused:  # a strategy that cannot train this task is a config error naming it, never a silent no-op
        assert strategy in refused and task_name in refused
        return
    ex = examples(task_name)
    train = _train_examples(task_name, ex)
    task, model = task_and_model(
        task_name, ex.model, train, **{k: v for k, v in ex.config.items() if k != "data"}, train={"dropout": 0.0}
    )
    picked = strategy
    s = STRATEGIES.get(picked)()
    counts = s.prepare(model)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert counts.trainable == sum(p.numel() for n, p in model.named_parameters() if n in trainable) > 0
    assert counts.total == sum(p.numel() for p in model.parameters())
    # The optimizer sees exactly the trainable parameters, each once.
    tc = config_from_dict({"strategy": {"name": picked}}).resolved().train
    groups = s.param_groups(model, tc)
    in_groups = [id(p) for g in groups for p in g["params"]]
    assert len(in_groups) == len(set(in_groups))
    assert set(in_groups) == {id(p) for n, p in model.named_parameters() if n in trainable}
    params = {n for n, _ in model.named_parameters()}
    assert {k for k in s.trainable_state(model) if k in params} == trainable  # (+ running stats of norms that train)

    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    frozen_norms = {
        n: {b: t.clone() for b, t in m.named_buffers()}
        for n, m in model.named_modules()
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and not any(p.requires_grad for p in m.parameters())
    }
    batch = task.collate(task.encode(train.subset(range(min(6, len(train))))))
    opt = build_optimizer(groups, tc.lr, "cpu")
    model.train()
    task.compute_loss(model, batch)["loss"].backward()
    opt.step()
    for n, p in model.named_parameters():
        if n in trainable:
            assert not torch.equal(p, before[n]), f"{picked}: trainable {n} did not change"
        else:
            assert torch.equal(p, before[n]), f"{picked}: frozen {n} changed"
    for n, bufs in frozen_norms.items():  # frozen batch norms keep their running statistics too
        for b, t in dict(model.get_submodule(n).named_buffers()).items():
            assert torch.equal(t, bufs[b]), f"{picked}: frozen batch norm {n}.{b} changed"


@pytest.mark.parametrize("task_name,strategy", CASES)
def test_run_keeps_its_best_evaluation_and_its_folder_reproduces_it(task_name, strategy, examples, tmp_path):
    if _refusal(task_name, strategy):
        pytest.skip(f"{strategy} does not apply to {task_name} (a config error, tested above)")
    ex = examples(task_name)
    task_cls = TASKS.get(task_name)
    res = tunesmith.finetune(
        _config(task_name, ex, tmp_path / "run", strategy, epochs=3, early_stopping_patience=None), quiet=True
    )
    # the model it kept is the one its best evaluation scored, every tracked metric (bug: strategies that
    # unfreeze later kept later weights for the layers they unfroze after that evaluation)
    metrics = json.loads((res.out / "metrics.json").read_text())
    best = metrics["best_evaluation"]
    solved = STRATEGIES.get(strategy)().solves_head  # one evaluation: the solution
    assert best in res.history and len(res.history) == (1 if solved else 3)
    for k in task_cls.metrics_tracked:
        assert res.metrics[k] == pytest.approx(best[k], abs=1e-6), (k, res.history)
    # the saved folder scores its validation data exactly as the run reported
    again = tunesmith.evaluate(res.out, ex.validation)
    for k in task_cls.metrics_tracked:
        # relative too: perplexity (exp of the loss) of a LoRA run, scored merged at load, moves in its 8th digit
        assert again[k] == pytest.approx(res.metrics[k], rel=1e-6, abs=1e-6), k
    # and predicts the same twice, in the task's output shape; transformers.pipeline agrees where it loads it
    predictor = tunesmith.load(res.out)
    probes = predictor.modality.probe_inputs(
        predictor.modality.read(str(ex.validation), _data_cfg(task_name, ex), "probe"), 6
    )
    out = predictor.predict(probes)
    assert out == predictor.predict(probes) and len(out) == len(probes)
    assert all(set(o) == {"input", *task_cls.output_keys} for o in out)
    ours = predictor.task.parity_view(predictor.outputs(probes))
    theirs = pipeline_outputs(res.out, predictor.task, predictor.modality, probes)
    assert (theirs is None) == (not format_of(read_meta(res.out)).pipeline_loads)
    if theirs is not None:
        assert predictor.task.output_difference(ours, theirs) <= 1e-4


def _data_cfg(task_name, ex):
    return config_from_dict(_config(task_name, ex, "unused", "full")).data


@pytest.mark.parametrize("task_name", TASKS.names())
def test_task_contract(task_name, examples):
    ex = examples(task_name)
    train = _train_examples(task_name, ex)
    task_cls = TASKS.get(task_name)
    task, model = task_and_model(task_name, ex.model, train, **{k: v for k, v in ex.config.items() if k != "data"})
    assert task_cls.default_metric in task_cls.metrics_tracked and "loss" in task_cls.metrics_tracked
    assert task_cls.lower_is_better <= set(task_cls.metrics_tracked)
    rows = task.encode(train.subset(range(min(6, len(train)))))
    out = task.compute_loss(model, task.collate(rows))
    assert set(out) >= {"loss", "logits"} and out["loss"].ndim == 0 and math.isfinite(out["loss"].item())
    ev = task.evaluate(model, rows, 4, torch.no_grad)
    assert isinstance(ev, EvalOutput) and len(ev.predictions) == len(rows)
    assert set(task_cls.metrics_tracked) <= set(ev.metrics) and ev.metrics["loss"] == pytest.approx(ev.loss)
    decoded = task.decode(ev)
    assert len(decoded) == len(rows) and all(set(d) == set(task_cls.output_keys) for d in decoded)
    json.dumps(task.state())  # what tunesmith.json keeps to rebuild the task
    assert task.summary_lines(ev.metrics | task.describe_evaluation(train.subset(range(len(rows))), ev))
    # a record that is better on the default metric is "improved"; the same record again is not
    worse, better = dict(ev.metrics), dict(ev.metrics)
    step = -0.1 if task_cls.default_metric in task_cls.lower_is_better else 0.1
    better[task_cls.default_metric] += step
    assert task_cls.improved(better, worse, task_cls.default_metric)
    assert not task_cls.improved(worse, worse, task_cls.default_metric)
