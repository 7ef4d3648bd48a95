"""`--strategy auto` decides by measuring: a race of candidate strategies on the user's own
validation data, the winner's model kept exactly as the race scored it, every candidate on record."""

import json

import pytest
import yaml
from conftest import base_config

import tunesmith
from tunesmith.config import config_from_dict
from tunesmith.errors import ConfigError, RunFolderError
from tunesmith.strategies import auto
from tunesmith.strategies.auto import parse_budget


def _auto_config(model, data, out, **strategy):
    cfg = base_config(model, data, out, epochs=3)
    cfg["train"].pop("lr")  # auto races full at the default learning rate and 3x it
    cfg["strategy"] = {"name": "auto", **strategy}
    return cfg


def test_auto_races_candidates_and_keeps_the_winner_as_scored(tiny_bert_mean, sentiment_csv, tmp_path, capsys):
    cfg = _auto_config(tiny_bert_mean, sentiment_csv, tmp_path / "auto", auto_refit=False)
    res = tunesmith.finetune(cfg)
    err = capsys.readouterr().err
    assert "auto candidate 1/" in err and "auto picked" in err
    m = json.loads((res.out / "metrics.json").read_text())
    auto = m["run"]["choice"]
    table = auto["candidates"]
    names = [c["strategy"] for c in table]
    assert names[0] == "head-only" and {"full", "partial", "lora"} <= set(names)
    assert sum(c["strategy"] == "full" for c in table) == 2  # two learning rates
    done = [c for c in table if c["state"] == "complete"]
    assert done and all(c["state"] in ("complete", "pruned", "failed", "not run") for c in table)
    assert all("seconds" in c for c in table if c["state"] != "not run")
    winner = max(done, key=lambda c: c["value"])  # macro_f1: higher is better
    assert [c for c in table if c.get("winner")] == [winner]
    assert m["run"]["strategy"] == auto["picked"] == winner["strategy"]
    # the run's model is the winner's, not a retrained one: its validation score is the race's
    assert m["validation"][auto["metric"]] == pytest.approx(winner["value"], abs=1e-6)
    assert auto["reasons"] and auto["race_seconds"] > 0
    assert auto["refit"] is None and any("no refit (strategy.auto_refit false)" in r for r in auto["reasons"])
    # the candidates' folders are gone; the choice is recorded next to the run
    assert not any(p.name.startswith(".auto.candidates") for p in tmp_path.iterdir())
    assert (res.out / "strategy_choice.json").is_file()
    for page in ("report.html", "README.md"):
        text = (res.out / page).read_text()
        assert "candidate" in text.lower() and winner["strategy"] in text


def test_auto_is_deterministic_under_its_seed(  # decisions depend on time only where the budget cuts the race
    tiny_bert_mean, sentiment_csv, tmp_path
):
    runs = [
        json.loads(
            (
                tunesmith.finetune(
                    _auto_config(tiny_bert_mean, sentiment_csv, tmp_path / f"r{i}", auto_budget="1h"), quiet=True
                ).out
                / "metrics.json"
            ).read_text()
        )["run"]["choice"]
        for i in range(2)
    ]
    strip = [[{k: v for k, v in c.items() if not k.endswith("seconds")} for c in r["candidates"]] for r in runs]
    assert strip[0] == strip[1] and runs[0]["picked"] == runs[1]["picked"]


@pytest.mark.parametrize("budget", ["0.5x", "3", "five minutes", "2s"])
def test_a_budget_too_small_or_unreadable_is_a_config_error(budget):
    with pytest.raises(ConfigError, match="auto_budget"):
        config_from_dict({"strategy": {"name": "auto", "auto_budget": budget}})


def test_budget_forms():
    assert parse_budget("10m") == ("seconds", 600) and parse_budget("1.5h") == ("seconds", 5400)
    assert parse_budget("20x") == ("x", 20) and parse_budget(None) is None
    with pytest.raises(ConfigError, match="applies only to strategy auto"):
        config_from_dict({"strategy": {"name": "full", "auto_budget": "10m"}})


def test_an_occupied_out_folder_is_refused_before_the_race(tiny_bert_mean, sentiment_csv, tmp_path):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(RunFolderError, match="holds no tunesmith run"):
        tunesmith.finetune(_auto_config(tiny_bert_mean, sentiment_csv, out), quiet=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]  # no candidate ran


def _only(monkeypatch, *entrants):
    """The race limited to these candidates (the tiny model's head-only wins every race otherwise)."""
    monkeypatch.setattr(auto, "candidates", lambda context, pick, memory_ok: ([dict(e) for e in entrants], []))


def test_the_winner_trains_again_on_training_and_validation_rows(tiny_bert_mean, sentiment_csv, tmp_path, monkeypatch):
    monkeypatch.setattr(auto, "FIRST_RUNG", 10)  # no cut: both finish, one wins
    _only(monkeypatch, {"strategy": "full", "train.lr": 1e-5}, {"strategy": "full", "train.lr": 2e-3})
    cfg = _auto_config(tiny_bert_mean, sentiment_csv, tmp_path / "auto", auto_budget="1h")
    cfg["train"]["epochs"] = 4
    res = tunesmith.finetune(cfg, quiet=True)
    m = json.loads((res.out / "metrics.json").read_text())
    choice = m["run"]["choice"]
    winner = next(c for c in choice["candidates"] if c.get("winner"))
    assert winner["train.lr"] == 2e-3
    refit = choice["refit"]
    # every labelled row trains (144 training + 16 validation), for the epochs at which the winner scored best
    assert refit["rows"] == 160 and refit["epochs"] == winner["best_epoch"]
    assert m["train"]["samples"] == 160 * winner["best_epoch"]
    assert [h["epoch"] for h in m["history"]] == list(range(1, winner["best_epoch"] + 1))
    assert m["validation"]["macro_f1"] == m["history"][-1]["macro_f1"]  # the last weights, not the best
    saved = yaml.safe_load((res.out / "run_config.yaml").read_text())["train"]
    assert saved["epochs"] == winner["best_epoch"] and saved["keep"] == "last"
    assert saved["early_stopping_patience"] is None and saved["lr"] == 2e-3
    assert refit["race_validation"] == winner["value"]
    assert refit["race_train_loss"] == winner["best_train_loss"] > 0
    assert any("in-sample" in w for w in m["warnings"])
    assert not any("REFIT TRAINED WORSE" in w for w in m["warnings"])
    for page in ("report.html", "README.md"):
        assert "in-sample" in (res.out / page).read_text()
    assert not (res.out / "checkpoints").exists()
    # the folder reloads and its config trains again
    tunesmith.load(res.out)
    tunesmith.config.load_config(res.out / "run_config.yaml")


def test_a_solved_head_refits_on_every_row_without_epochs(tiny_bert_mean, sentiment_csv, tmp_path, monkeypatch):
    _only(monkeypatch, {"strategy": "head-only"})
    cfg = _auto_config(tiny_bert_mean, sentiment_csv, tmp_path / "auto", auto_budget="1h")
    res = tunesmith.finetune(cfg, quiet=True)
    m = json.loads((res.out / "metrics.json").read_text())
    assert m["run"]["choice"]["refit"]["rows"] == 160 and m["run"]["choice"]["refit"]["epochs"] is None
    assert m["train"]["samples"] == 160 and m["train"]["head_solver"]["C"] > 0
    tunesmith.config.load_config(res.out / "run_config.yaml")  # no sgd-only keys written for a solved head


def test_no_refit_where_the_budget_has_no_room(tiny_bert_mean, sentiment_csv, tmp_path, monkeypatch):
    _only(monkeypatch, {"strategy": "full", "train.lr": 2e-3})
    monkeypatch.setattr(auto, "FIRST_RUNG", 10)
    cfg = _auto_config(tiny_bert_mean, sentiment_csv, tmp_path / "auto", auto_budget="10s")
    monkeypatch.setattr(auto, "plan_refit", _spy_plan(auto.plan_refit, cap=0.0))
    res = tunesmith.finetune(cfg, quiet=True)
    m = json.loads((res.out / "metrics.json").read_text())
    choice = m["run"]["choice"]
    assert choice["refit"] is None and any(r.startswith("no refit: the race left") for r in choice["reasons"])
    # the race's model is kept as scored: its validation value, out of sample
    assert m["validation"]["macro_f1"] == pytest.approx(choice["candidates"][0]["value"], abs=1e-6)
    assert not any("in-sample" in w for w in m["warnings"])


@pytest.mark.parametrize("share", [0.0, 1e6])
def test_successive_halving_spares_a_candidate_cheap_to_finish(
    share, tiny_bert_mean, sentiment_csv, tmp_path, monkeypatch
):
    """A candidate behind at its rung is cut, unless finishing it costs under CHEAP_SHARE of the first
    full-length run: then it runs to its end and its score counts."""
    monkeypatch.setattr(auto, "FIRST_RUNG", 1)
    monkeypatch.setattr(auto, "CHEAP_SHARE", share)
    _only(monkeypatch, {"strategy": "full", "train.lr": 2e-3}, {"strategy": "full", "train.lr": 1e-7})
    cfg = _auto_config(tiny_bert_mean, sentiment_csv, tmp_path / "auto", auto_budget="1h", auto_refit=False)
    cfg["train"]["epochs"] = 4
    res = tunesmith.finetune(cfg, quiet=True)
    first, slow = json.loads((res.out / "metrics.json").read_text())["run"]["choice"]["candidates"]
    assert first["state"] == "complete" and first.get("winner")
    if share == 0.0:
        assert slow["state"] == "pruned" and slow["epochs_run"] == 1 and "spared" not in slow
    else:
        assert slow["state"] == "complete" and slow["epochs_run"] == 4 and "value" in slow
        assert slow["spared"].startswith("cut by successive halving at epoch 1, finished")


def test_a_refit_that_costs_little_runs_even_where_the_race_spent_the_budget(
    tiny_bert_mean, sentiment_csv, tmp_path, monkeypatch
):
    """A solved head's refit takes about a second: where the race used its whole budget, it still runs
    (under SMALL_REFIT_SHARE of the budget), where a trained winner's would not."""
    _only(monkeypatch, {"strategy": "head-only"})
    plan = auto.plan_refit
    monkeypatch.setattr(auto, "plan_refit", lambda cfg, context, best, cap, spent: plan(cfg, context, best, 1e3, 1e3))
    cfg = _auto_config(tiny_bert_mean, sentiment_csv, tmp_path / "auto", auto_budget="1h")
    m = json.loads((tunesmith.finetune(cfg, quiet=True).out / "metrics.json").read_text())
    assert m["run"]["choice"]["refit"]["rows"] == 160 and m["train"]["samples"] == 160


def test_a_refit_that_trains_worse_than_the_race_says_so(tiny_bert_mean, sentiment_csv, tmp_path, monkeypatch):
    """The refit has no out-of-sample score to check it: a training loss that ends far above the race's
    at the same epoch (here: the race's recorded as 0) is a loud warning on every page."""
    _only(monkeypatch, {"strategy": "full", "train.lr": 2e-3})
    monkeypatch.setattr(auto, "FIRST_RUNG", 10)
    plan = auto.plan_refit

    def as_if_the_race_fitted_perfectly(*args):
        refit, why = plan(*args)
        return {**refit, "race_train_loss": 0.0}, why

    monkeypatch.setattr(auto, "plan_refit", as_if_the_race_fitted_perfectly)
    cfg = _auto_config(tiny_bert_mean, sentiment_csv, tmp_path / "auto", auto_budget="1h")
    cfg["train"]["epochs"] = 2
    res = tunesmith.finetune(cfg, quiet=True)
    m = json.loads((res.out / "metrics.json").read_text())
    last = m["history"][-1]["train_loss"]
    assert last > 0.1
    (warning,) = [w for w in m["warnings"] if w.startswith("REFIT TRAINED WORSE")]
    assert f"{last:.4f}" in warning and "strategy.auto_refit=false" in warning
    for page in ("report.html", "README.md"):
        assert "REFIT TRAINED WORSE" in (res.out / page).read_text()


def _spy_plan(plan, cap):
    """plan_refit as if the budget were spent (`cap` seconds): the race itself is not cut."""
    return lambda cfg, context, best, _cap, spent: plan(cfg, context, best, cap, spent)


def test_a_tie_on_the_validation_score_goes_to_the_lower_validation_loss():
    """On a small validation split two candidates often score the same accuracy; the one whose
    validation loss is lower (surer where it is right) wins, not whichever ran first."""
    rows = [
        {"name": "head-only", "value": 0.983, "best_validation_loss": 0.40},
        {"name": "full", "value": 0.983, "best_validation_loss": 0.12},
        {"name": "partial", "value": 0.950, "best_validation_loss": 0.01},  # a lower loss never beats a higher score
        {"name": "lora", "value": 0.983},  # no loss on record: last of those tied
    ]
    assert [r["name"] for r in auto.rank_candidates(rows, lower=False)] == ["full", "head-only", "lora", "partial"]
    assert [r["name"] for r in auto.rank_candidates(rows[:2], lower=True)] == ["full", "head-only"]
    unknown = [{"name": "first", "value": 0.9}, {"name": "second", "value": 0.9}]  # no losses: the running order
    assert [r["name"] for r in auto.rank_candidates(unknown, lower=False)] == ["first", "second"]
