"""`--strategy auto` decides by measuring: a race of candidate strategies on the user's own
validation data, the winner's model kept exactly as the race scored it, every candidate on record."""

import json

import pytest
from conftest import base_config

import tunesmith
from tunesmith.config import config_from_dict
from tunesmith.errors import ConfigError, RunFolderError
from tunesmith.strategies.auto import parse_budget


def _auto_config(model, data, out, **strategy):
    cfg = base_config(model, data, out, epochs=3)
    cfg["train"].pop("lr")  # auto races full at the default learning rate and 3x it
    cfg["strategy"] = {"name": "auto", **strategy}
    return cfg


def test_auto_races_candidates_and_keeps_the_winner_as_scored(tiny_bert_mean, sentiment_csv, tmp_path, capsys):
    res = tunesmith.finetune(_auto_config(tiny_bert_mean, sentiment_csv, tmp_path / "auto"))
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
    strip = [[{k: v for k, v in c.items() if k != "seconds"} for c in r["candidates"]] for r in runs]
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
