"""`tunesmith search`: an Optuna study whose trials are ordinary run folders; the space is checked
before any trial; best.yaml reproduces the best trial; several workers share one study."""

import json
import subprocess
import sys

import pytest
import yaml
from conftest import base_config

import tunesmith
from tunesmith.cli import main
from tunesmith.config import config_from_dict, load_config
from tunesmith.errors import ConfigError
from tunesmith.search.space import load_space
from tunesmith.search.study import search, show

SPACE = {
    "train.lr": {"low": 1e-3, "high": 1e-2, "log": True},
    "train.epochs": {"low": 1, "high": 2},
}


def _base(model, data, test, tmp_path):
    cfg = base_config(model, data, tmp_path / "unused", epochs=1)
    cfg.pop("out")
    cfg["data"]["test"] = str(test)
    cfg["train"]["threads"] = 1
    return config_from_dict(cfg)


def _space(tmp_path, space=SPACE, name="space.yaml"):
    p = tmp_path / name
    p.write_text(yaml.safe_dump(space))
    return p


@pytest.mark.parametrize(
    "space,message",
    [
        ({"train.lrr": {"low": 1, "high": 2}}, "unknown config key 'train.lrr'"),
        ({"train.lr": {"low": 1e-2, "high": 1e-3}}, "low < high"),
        ({"train.lr": {"low": 0.0, "high": 1e-3, "log": True}}, "log range needs low > 0"),
        ({"train.lr": {"choices": []}}, "non-empty list"),
        ({"train.lr": 0.1}, "give {low"),
        ({"train.batch_size": {"low": 0, "high": 8}}, "train.batch_size=0 is not a valid config"),
        ({"data.train": {"choices": ["a.csv"]}}, "the data are the study's"),
        ({"strategy.lora.rank": {"low": 2, "high": 8, "when": {"strategy.name": "lora"}}}, "`when` must map"),
    ],
)
def test_a_bad_space_is_an_error_naming_the_key(space, message, tmp_path):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("{", r"\{")):
        load_space(_space(tmp_path, space), config_from_dict({}))


def test_conditional_parameters_apply_only_under_their_strategy(tmp_path):
    space = load_space(
        _space(
            tmp_path,
            {
                "strategy.name": {"choices": ["full", "lora"]},
                "strategy.lora.rank": {"low": 2, "high": 8, "when": {"strategy.name": "lora"}},
            },
        ),
        config_from_dict({}),
    )
    import optuna

    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = [space.suggest(study.ask()) for _ in range(12)]
    assert all(("strategy.lora.rank" in v) == (v["strategy.name"] == "lora") for v in seen)
    assert {v["strategy.name"] for v in seen} == {"full", "lora"}


def test_study_trials_are_runs_best_yaml_reproduces_and_test_is_scored_once(
    tiny_bert_mean, sentiment_csv, sentiment_test_csv, tmp_path, capsys
):
    base = _base(tiny_bert_mean, sentiment_csv, sentiment_test_csv, tmp_path)
    out = tmp_path / "s1"
    summary = search(base, _space(tmp_path), out, 3, quiet=True)
    rows = summary["trials"]
    assert len(rows) == 3 and {r["number"] for r in rows} == {0, 1, 2}
    for r in rows:  # each trial an ordinary run folder, scored on validation only
        m = json.loads((out / "trials" / f"{r['number']:03d}" / "metrics.json").read_text())
        assert m["test"] is None
    best = summary["best"]
    assert best["value"] == max(r["value"] for r in rows if r["value"] is not None)
    assert summary["test"] and "accuracy" in summary["test"]  # the best trial's model, once
    # 16 validation rows cannot separate trials within the best's 95% interval: said, naming them
    best_val = json.loads((out / "trials" / f"{best['number']:03d}" / "metrics.json").read_text())["validation"]
    lo, hi = best_val["intervals"]["macro_f1"]
    close = [
        r["number"] for r in rows if r["number"] != best["number"] and abs(r["value"] - best["value"]) < (hi - lo) / 2
    ]
    assert bool(close) == ("too_close_to_call" in summary)
    if close:
        assert f"{len(close)} other trial(s)" in summary["too_close_to_call"]
    report = (out / "report.html").read_text()
    assert "Optimisation history" in report and "scored once" in report
    # best.yaml reproduces the best trial's validation metric
    again = tunesmith.finetune(load_config(out / "best.yaml", {"out": str(tmp_path / "rerun")}), quiet=True)
    assert again.metrics["macro_f1"] == pytest.approx(best["value"], abs=1e-9)
    # rerunning the command continues the study; --show prints the table, best first
    assert main(["search", "--show", str(out)]) == 0
    table = capsys.readouterr().out
    assert "3 trials" in table and table.index(f"\n{best['number']:>4}  complete") < table.index(
        "complete", table.index("\n   ")
    )
    assert len(search(base, _space(tmp_path), out, 4, quiet=True)["trials"]) == 4
    # a changed space is a new study, refused before any trial runs
    changed = _space(tmp_path, {"train.lr": {"low": 1e-4, "high": 1e-2, "log": True}}, "other.yaml")
    with pytest.raises(ConfigError, match="another space"):
        search(base, changed, out, 5, quiet=True)


def test_a_failing_trial_is_recorded_and_the_study_goes_on(
    tiny_bert_mean, sentiment_csv, sentiment_test_csv, tmp_path, monkeypatch
):
    import tunesmith.api as api

    real, calls = api.finetune, []

    def flaky(cfg, **kw):
        calls.append(cfg.out)
        if len(calls) == 2:
            raise RuntimeError("disk full (simulated)")
        return real(cfg, **kw)

    monkeypatch.setattr(api, "finetune", flaky)
    summary = search(
        _base(tiny_bert_mean, sentiment_csv, sentiment_test_csv, tmp_path),
        _space(tmp_path),
        tmp_path / "s",
        3,
        quiet=True,
    )
    states = sorted(r["state"] for r in summary["trials"])
    assert states == ["complete", "complete", "fail"]
    assert any("disk full" in (r["error"] or "") for r in summary["trials"])


def test_two_worker_processes_share_one_study_exactly(tiny_bert_mean, sentiment_csv, sentiment_test_csv, tmp_path):
    cfg = tmp_path / "base.yaml"
    base = _base(tiny_bert_mean, sentiment_csv, sentiment_test_csv, tmp_path)
    cfg.write_text(yaml.safe_dump(base.model_dump(mode="json", exclude_unset=True)))
    out = tmp_path / "w2"
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "tunesmith",
            "search",
            "-c",
            str(cfg),
            "--space",
            str(_space(tmp_path)),
            "--trials",
            "4",
            "--workers",
            "2",
            "--out",
            str(out),
            "--quiet",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr
    assert "lock" not in r.stderr.lower() and "Traceback" not in r.stderr
    rows = json.loads((out / "search.json").read_text())["trials"]
    assert len(rows) == 4 and len({r["number"] for r in rows}) == 4 and len({r["run"] for r in rows}) == 4
    assert all(r["state"] in ("complete", "pruned") for r in rows)  # median pruning may stop one
    assert "4 trials" in show(out)


def test_unreachable_storage_is_an_error_before_any_trial(tiny_bert_mean, sentiment_csv, sentiment_test_csv, tmp_path):
    base = _base(tiny_bert_mean, sentiment_csv, sentiment_test_csv, tmp_path)
    with pytest.raises(ConfigError, match="cannot open the study storage"):
        search(base, _space(tmp_path), tmp_path / "s", 2, storage="postgresql://nobody@127.0.0.1:1/none", quiet=True)
    assert not (tmp_path / "s").exists()  # nothing half-written: not even an empty folder


def test_two_workers_share_a_study_on_a_real_postgresql_server(
    postgres_url, tiny_bert_mean, sentiment_csv, sentiment_test_csv, tmp_path
):
    cfg = tmp_path / "base.yaml"
    base = _base(tiny_bert_mean, sentiment_csv, sentiment_test_csv, tmp_path)
    cfg.write_text(yaml.safe_dump(base.model_dump(mode="json", exclude_unset=True)))
    out = tmp_path / "pg"
    common = ["search", "-c", str(cfg), "--space", str(_space(tmp_path)), "--storage", postgres_url, "--study", "s1"]
    # two workers on two "machines": separate processes, each its own output folder, one study
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "tunesmith", *common, "--trials", "4", "--out", str(out / f"m{i}"), "--quiet"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    for p in procs:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err
        assert "Traceback" not in err
    import optuna

    study = optuna.load_study(study_name="s1", storage=postgres_url)
    trials = study.get_trials()
    assert len(trials) == 4 and len({t.number for t in trials}) == 4
    assert len({t.user_attrs["run"] for t in trials}) == 4
    done = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)  # median pruning may stop one
    assert all(t.state in done for t in trials) and any(t.state == done[0] for t in trials)


def test_a_space_written_as_people_write_learning_rates_loads(tmp_path):
    """YAML 1.1 reads `1e-5` (no dot) as a string; a space file written that way is still a range."""
    p = tmp_path / "space.yaml"
    p.write_text("train.lr: {low: 1e-5, high: 1e-3, log: true}\ntrain.epochs: {low: 2, high: 4}\n")
    space = load_space(p, config_from_dict({}))
    lr, epochs = sorted(space.params, key=lambda q: q.key)[::-1]
    assert (lr.low, lr.high, lr.log, lr.integer) == (1e-5, 1e-3, True, False)
    assert (epochs.low, epochs.high, epochs.integer) == (2, 4, True)


@pytest.mark.parametrize("keep", ["best", "all"])
def test_only_trials_that_beat_the_best_so_far_save_their_model(
    keep, tiny_bert_mean, sentiment_csv, sentiment_test_csv, tmp_path
):
    """Three identical head-only trials: under --keep-models best only the first saves its model (a tie
    does not beat it); the others keep config, metrics and report, and loading one says why it holds no
    model and how to train it again. Under --keep-models all every trial saves its model."""
    from tunesmith.errors import RunFolderError

    cfg = base_config(tiny_bert_mean, sentiment_csv, tmp_path / "unused")
    cfg.pop("out")
    cfg["strategy"] = {"name": "head-only"}
    cfg["train"] = {k: v for k, v in cfg["train"].items() if k not in ("epochs", "lr")}  # a solved head has none
    cfg["data"]["test"] = str(sentiment_test_csv)
    base = config_from_dict(cfg)
    out = tmp_path / "s"
    space = _space(tmp_path, {"strategy.head_c": {"choices": [1.0]}})
    summary = search(base, space, out, 3, keep_models=keep, quiet=True)
    assert summary["best"]["number"] == 0 and summary["test"]  # the best trial's model scored the test split
    for n in range(3):
        run = out / "trials" / f"{n:03d}"
        assert (run / "metrics.json").is_file() and (run / "report.html").is_file()
        assert (run / "model.safetensors").is_file() == (keep == "all" or n == 0)
    if keep == "best":
        with pytest.raises(RunFolderError, match=r"kept no model \(trial 1's validation .* did not beat") as e:
            tunesmith.load(out / "trials" / "001")
        assert f"tunesmith train -c {out / 'trials' / '001' / 'run_config.yaml'} --out" in str(e.value)


def test_among_equal_values_the_trial_that_kept_its_model_is_the_best():
    """Two workers finishing together: trial 1 finished first and saved its model, trial 0 tied it
    and did not; the study's best must be the one with a model, whatever its number."""
    import optuna

    from tunesmith.search.study import trial_rows

    study = optuna.create_study(direction="maximize")
    for kept in (False, True, False):
        t = study.ask()
        t.set_user_attr("model_kept", kept)
        study.tell(t, 0.5)
    assert [r["number"] for r in trial_rows(study)] == [1, 0, 2]


@pytest.mark.parametrize("epochs", [1, 3])
def test_a_pruner_never_cuts_a_runs_final_evaluation(
    tiny_bert_mean, sentiment_csv, sentiment_test_csv, tmp_path, epochs
):
    """A pruner that would stop every trial stops a 3-epoch run after its first epoch, but a run at its
    last evaluation completes: cutting it there saves no time and would throw its finished score away."""
    import optuna

    from tunesmith.search.trial import run_trial

    cfg = _base(tiny_bert_mean, sentiment_csv, sentiment_test_csv, tmp_path)
    cfg.train.epochs = epochs
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.ThresholdPruner(lower=2.0))
    trial = study.ask()
    if epochs == 1:
        value = run_trial(trial, cfg, tmp_path / "t")
        assert 0.0 <= value <= 1.0 and trial.user_attrs["epochs_run"] == 1
    else:
        with pytest.raises(optuna.TrialPruned, match="pruned at epoch 1"):
            run_trial(trial, cfg, tmp_path / "t")
        assert trial.user_attrs["epochs_run"] == 1


def test_median_pruning_waits_for_a_trials_second_evaluation():
    """The default pruner never cuts on a first evaluation (mostly learning-rate warmup, where a small
    learning rate that ends best still trails), and cuts a trial below the median from its second."""
    import optuna

    from tunesmith.search.study import PRUNERS

    study = optuna.create_study(direction="maximize", pruner=PRUNERS["median"]())
    for _ in range(3):
        t = study.ask()
        for epoch in range(1, 5):
            t.report(0.9, step=epoch)
        study.tell(t, 0.9)
    late = study.ask()
    late.report(0.1, step=1)
    assert not late.should_prune()
    late.report(0.1, step=2)
    assert late.should_prune()
