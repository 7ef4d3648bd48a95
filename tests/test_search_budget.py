"""What a study costs and how exactly it stops: the data is read and encoded once per process, the
study ends with exactly --trials trials however many workers race for the last one, a dead worker's
trial is failed and retried, and a budget below what a study already holds is refused up front."""

import multiprocessing
import os
import time

import optuna
import pytest
import yaml
from conftest import base_config

import tunesmith.api as api
from tunesmith.cli import main
from tunesmith.config import config_from_dict
from tunesmith.errors import ConfigError
from tunesmith.modalities import MODALITIES
from tunesmith.search import study as st
from tunesmith.search.space import load_space
from tunesmith.tasks import TASKS


def _quick(trial: optuna.Trial) -> float:
    time.sleep(0.05)  # long enough for workers to overlap
    return trial.suggest_float("x", 0.0, 1.0)


def _open(out, workers=1):
    return st.make_study(st.storage_for(out, None, workers), "s", "maximize", optuna.samplers.RandomSampler(), None)


def _worker(out, trials, workers):
    study = _open(out, workers)
    lock = st.TrialLock(out, None, "s")
    try:
        st.run_trials(study, _quick, trials, lock)
    finally:
        lock.close()


@pytest.mark.parametrize("workers,trials", [(3, 7), (3, 1)])
def test_workers_racing_for_the_last_trials_end_with_exactly_the_budget(workers, trials, tmp_path):
    ctx = multiprocessing.get_context("fork")  # no training here: nothing torch-threaded in the children
    procs = [ctx.Process(target=_worker, args=(tmp_path, trials, workers)) for _ in range(workers)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    done = _open(tmp_path, workers).get_trials()
    assert len(done) == trials and len({t.number for t in done}) == trials
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in done)


def _dies_mid_trial(out):
    study = _open(out)

    def objective(trial):
        trial.suggest_float("x", 0.0, 1.0)
        time.sleep(0.3)  # the heartbeat thread has beaten once
        os._exit(9)  # killed: no tell, the trial stays RUNNING

    st.run_trials(study, objective, 5, st.TrialLock(out, None, "s"))


def test_a_killed_workers_trial_is_failed_and_retried_and_counts_once(tmp_path, monkeypatch):
    monkeypatch.setattr(st, "HEARTBEAT_SECONDS", 1)
    monkeypatch.setattr(st, "GRACE_SECONDS", 1)
    p = multiprocessing.get_context("fork").Process(target=_dies_mid_trial, args=(tmp_path,))
    p.start()
    p.join(60)
    assert p.exitcode == 9
    study = _open(tmp_path)
    (dead,) = study.get_trials()
    assert dead.state == optuna.trial.TrialState.RUNNING
    time.sleep(2.5)  # past the grace period
    st.run_trials(study, _quick, 3, st.TrialLock(tmp_path, None, "s"))
    trials = study.get_trials()
    states = [t.state.name for t in trials]
    assert states == ["FAIL", "COMPLETE", "COMPLETE", "COMPLETE"]
    retry = trials[1]
    assert optuna.storages.RetryHeartbeatStaleTrialCallback.retried_trial_number(retry) == 0
    assert retry.params == dead.params  # the same parameters, run again
    assert st.budget_used(study) == (3, 0)


def test_a_budget_below_what_the_study_holds_is_refused_before_any_trial(tmp_path):
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump({"train.lr": {"low": 1e-3, "high": 1e-2, "log": True}}))
    base = config_from_dict({"data": {"train": str(tmp_path / "unused.csv")}})
    study, _ = st._open(base, load_space(space, base), tmp_path, None, "tunesmith", "tpe", "median", 1, 0, 2)
    lr = {"train.lr": optuna.distributions.FloatDistribution(1e-3, 1e-2, log=True)}
    for v in (0.5, 0.6):  # a study that already ran two trials
        study.add_trial(optuna.create_trial(value=v, params={"train.lr": 2e-3}, distributions=lr))
    with pytest.raises(ConfigError, match="already holds 2 trials"):
        st.search(base, space, tmp_path, 1, quiet=True)
    assert not (tmp_path / "trials").exists()


def test_cli_bad_space_exits_non_zero_before_any_trial(tmp_path, capsys):
    cfg = tmp_path / "base.yaml"
    cfg.write_text(yaml.safe_dump({"data": {"train": str(tmp_path / "train.csv")}}))
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump({"train.learning_rate": {"low": 1e-4, "high": 1e-2}}))
    code = main(["search", "-c", str(cfg), "--space", str(space), "--out", str(tmp_path / "s"), "--quiet"])
    assert code != 0
    assert "train.learning_rate" in capsys.readouterr().err
    assert not (tmp_path / "s" / "trials").exists()


def test_sampler_seeds_differ_per_worker_and_per_continuation():
    seeds = {st.sampler_seed(0, existing, worker, False) for existing in (0, 3) for worker in (0, 1, 2)}
    assert len(seeds) == 6
    assert st.sampler_seed(0, 0, 1, False) == st.sampler_seed(0, 0, 1, False)  # local: reproducible


def _counting(monkeypatch, cls, name, calls):
    real = getattr(cls, name)

    def wrapper(self, *a, **kw):
        calls.append(name)
        return real(self, *a, **kw)

    monkeypatch.setattr(cls, name, wrapper)


def test_a_search_reads_and_encodes_its_data_once(tiny_bert_mean, sentiment_csv, tmp_path, monkeypatch):
    calls: list[str] = []
    _counting(monkeypatch, MODALITIES.get("text"), "read", calls)
    _counting(monkeypatch, TASKS.get("text-classification"), "encode", calls)
    cfg = base_config(tiny_bert_mean, sentiment_csv, tmp_path / "unused", epochs=1, threads=1)
    cfg.pop("out")
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump({"train.lr": {"low": 1e-3, "high": 1e-2, "log": True}}))
    summary = st.search(config_from_dict(cfg), space, tmp_path / "s", 2, quiet=True)
    assert [r["state"] for r in summary["trials"]] == ["complete"] * 2
    assert calls.count("read") == 1  # training data (validation split off it), once for both trials
    assert calls.count("encode") == 2  # train and validation, once each


def test_reuse_data_keys_on_the_files_and_keeps_nothing_outside(sentiment_rows_csv, monkeypatch):
    cfg = config_from_dict({"data": {"train": str(sentiment_rows_csv)}})
    calls: list[str] = []
    _counting(monkeypatch, MODALITIES.get("text"), "read", calls)
    api.read_data(cfg)
    api.read_data(cfg)
    assert len(calls) == 2  # no reuse outside the context
    with api.reuse_data():
        first = api.read_data(cfg)
        first.preflight.warnings.append("this run's own")
        again = api.read_data(cfg)
        assert len(calls) == 3 and "this run's own" not in again.preflight.warnings
        text = sentiment_rows_csv.read_text()
        sentiment_rows_csv.write_text(text + text.splitlines()[1] + "\n")  # an edited file is read again
        assert (
            len(api.read_data(cfg).train) + len(api.read_data(cfg).splits["validation"])
            == len(first.train) + len(first.splits["validation"]) + 1
        )
        assert len(calls) == 4
    assert api._REUSE is None


@pytest.fixture
def sentiment_rows_csv(tmp_path):
    from conftest import sentiment_rows, write_csv

    return write_csv(tmp_path / "train.csv", sentiment_rows(60, seed=3))


def test_a_head_only_search_writes_a_best_yaml_that_loads_and_reproduces(tiny_bert_mean, sentiment_csv, tmp_path):
    """best.yaml comes from the trial's resolved config, less what its strategy refuses to be given
    (a solved head's epochs and learning rate)."""
    import tunesmith
    from tunesmith.config import load_config

    cfg = base_config(tiny_bert_mean, sentiment_csv, tmp_path / "unused")
    cfg.pop("out")
    cfg["train"] = {"precision": "fp32", "seed": 0, "threads": 1}
    cfg["strategy"] = {"name": "head-only"}
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump({"strategy.head_c": {"low": 1e-2, "high": 1e2, "log": True}}))
    summary = st.search(config_from_dict(cfg), space, tmp_path / "s", 2, pruner="none", quiet=True)
    again = tunesmith.finetune(load_config(tmp_path / "s" / "best.yaml", {"out": str(tmp_path / "rerun")}), quiet=True)
    assert again.metrics["macro_f1"] == pytest.approx(summary["best"]["value"], abs=1e-9)
