"""Config: unknown keys and bad values are errors naming the key and the allowed values."""

import pytest

from tunesmith.config import config_from_dict, load_config, parse_override
from tunesmith.errors import ConfigError


def test_unknown_key_names_key_and_allowed_keys():
    with pytest.raises(ConfigError) as e:
        load_config(sets=["train.lrr=3e-5"])
    msg = str(e.value)
    assert "train.lrr" in msg and "unknown key" in msg and "lr" in msg and "batch_size" in msg


def test_bad_value_lists_allowed_values():
    with pytest.raises(ConfigError) as e:
        load_config(sets=["train.metric=f2"])
    assert "train.metric" in str(e.value) and "macro_f1" in str(e.value)
    with pytest.raises(ConfigError) as e:
        load_config(sets=["strategy.name=magic"])
    assert "magic" in str(e.value) and "head-only" in str(e.value) and "full" in str(e.value)


def test_yaml_then_flags_then_set(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("train:\n  lr: 1.0e-4\n  epochs: 2\nmodel:\n  name: minilm\n")
    cfg = load_config(p, {"train.epochs": 5}, ["train.lr=3e-5", "data.text_column=review"])
    assert cfg.train.lr == pytest.approx(3e-5)
    assert cfg.train.epochs == 5
    assert cfg.data.text_column == "review"


def test_strategy_defaults_are_resolved_and_explicit_values_kept():
    full = config_from_dict({"strategy": {"name": "full"}}).resolved()
    head = config_from_dict({"strategy": {"name": "head-only"}}).resolved()
    assert full.train.epochs == 3 and full.train.lr == pytest.approx(5e-5) and full.train.head_lr == pytest.approx(5e-4)
    assert head.train.epochs == 50 and head.train.lr == pytest.approx(5e-3)
    assert head.train.early_stopping_patience == 10 and full.train.early_stopping_patience == 3
    never = config_from_dict({"strategy": {"name": "head-only"}, "train": {"early_stopping_patience": None}})
    assert never.resolved().train.early_stopping_patience is None
    mine = config_from_dict({"strategy": {"name": "full"}, "train": {"epochs": 7}}).resolved()
    assert mine.train.epochs == 7


def test_cross_field_checks():
    with pytest.raises(ConfigError, match="label_column must differ"):
        config_from_dict({"data": {"text_column": "x", "label_column": "x"}})
    # Checkpoints and evaluations are independent schedules.
    assert config_from_dict({"train": {"eval_every": 4, "checkpoint_every": 6}}).train.checkpoint_every == 6


def test_bad_yaml_file_and_override_syntax(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_override("train.lr")
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")


def test_readme_config_reference_is_current():
    from pathlib import Path

    from tunesmith.config import config_reference

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = readme.split("<!-- config-reference:start -->\n", 1)[1].split("\n<!-- config-reference:end -->", 1)[0]
    assert block == config_reference(), (
        "README config reference is stale: regenerate it: python scripts/update_config_reference.py"
    )
