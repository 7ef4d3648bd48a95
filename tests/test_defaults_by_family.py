"""Defaults that learn: a backbone family declares what it trains with, per strategy, over the strategy's
own; a small training set gets enough optimizer steps; the saved run_config.yaml says what ran."""

from __future__ import annotations

import json
import math

import pytest
import yaml

import tunesmith
from tunesmith.config import config_from_dict
from tunesmith.models import BACKBONES, select_backbone
from tunesmith.models.efficientnet_lite import EfficientNetLiteBackbone
from tunesmith.models.text_backbone import TextBackbone
from tunesmith.models.vision_backbone import ConvVisionBackbone, VisionBackbone
from tunesmith.strategies import STRATEGIES
from tunesmith.strategies.base import MAX_DEFAULT_EPOCHS, MIN_STEPS

KNOWN_KEYS = {"epochs", "lr", "head_lr_factor", "patience", "min_steps", "warmup_ratio"}


@pytest.mark.parametrize("name", BACKBONES.names())
def test_every_family_declares_known_keys_for_strategies_that_train(name):
    declared = BACKBONES.get(name).train_defaults
    for strategy, values in declared.items():
        assert strategy in STRATEGIES.names() and STRATEGIES.get(strategy).defaults, (name, strategy)
        assert set(values) <= KNOWN_KEYS, (name, strategy, set(values) - KNOWN_KEYS)
        cfg = config_from_dict({"strategy": {"name": strategy}}).resolved(BACKBONES.get(name), 1000)
        assert 0 < cfg.train.lr < 1 and cfg.train.head_lr < 1 and 0 <= cfg.train.warmup_ratio < 1


def test_without_a_backbone_the_strategy_defaults_are_unchanged():
    c = config_from_dict({"strategy": {"name": "full"}}).resolved()
    assert (c.train.epochs, c.train.lr, c.train.head_lr, c.train.warmup_ratio) == (3, 5e-5, pytest.approx(5e-4), 0.06)


@pytest.mark.parametrize("family", [EfficientNetLiteBackbone, ConvVisionBackbone])
@pytest.mark.parametrize("strategy", ["full", "partial"])
def test_cnns_train_at_far_larger_rates(family, strategy):
    c = config_from_dict({"task": "image-classification", "strategy": {"name": strategy}}).resolved(family, 5000)
    assert c.train.lr == pytest.approx(1e-3) and c.train.head_lr == pytest.approx(1e-3)
    assert c.train.epochs == 15 and c.train.early_stopping_patience == 5


def test_text_follows_mosbach_more_epochs_warmup_small_lr_early_stopping():
    c = config_from_dict({"strategy": {"name": "full"}}).resolved(TextBackbone, 5000)
    assert c.train.lr == pytest.approx(2e-5) and c.train.head_lr == pytest.approx(2e-4)
    assert c.train.epochs == 10 and c.train.warmup_ratio == pytest.approx(0.1)
    assert c.train.early_stopping_patience == 3
    # what the user set stays, family or not: warmup included, even at its default value
    mine = config_from_dict({"strategy": {"name": "full"}, "train": {"warmup_ratio": 0.06, "lr": 3e-5, "epochs": 2}})
    r = mine.resolved(TextBackbone, 5000)
    assert (r.train.warmup_ratio, r.train.lr, r.train.epochs) == (0.06, 3e-5, 2)


@pytest.mark.parametrize(
    "n_train, batch, accum", [(270, 32, 1), (100, 32, 1), (40, 8, 2), (5, 32, 1), (100_000, 32, 1)]
)
def test_a_small_set_gets_enough_steps(n_train, batch, accum):
    c = config_from_dict(
        {
            "task": "image-classification",
            "strategy": {"name": "full"},
            "train": {"batch_size": batch, "grad_accum": accum},
        }
    ).resolved(EfficientNetLiteBackbone, n_train)
    steps_per_epoch = math.ceil(math.ceil(n_train / batch) / accum)
    assert c.train.epochs == min(max(15, math.ceil(MIN_STEPS / steps_per_epoch)), MAX_DEFAULT_EPOCHS)
    assert c.train.epochs * steps_per_epoch >= min(MIN_STEPS, MAX_DEFAULT_EPOCHS * steps_per_epoch)
    # epochs the user gave are what runs, however few steps they make
    given = config_from_dict({"task": "image-classification", "train": {"epochs": 1}})
    assert given.resolved(EfficientNetLiteBackbone, n_train).train.epochs == 1


def test_the_family_is_picked_from_config_json_alone(tmp_path):
    for model_type, family in [
        ("resnet", ConvVisionBackbone),
        ("mobilenet_v2", ConvVisionBackbone),
        ("vit", VisionBackbone),
    ]:
        d = tmp_path / model_type
        d.mkdir()
        (d / "config.json").write_text(json.dumps({"model_type": model_type}))
        assert select_backbone("image", d) is family
    assert VisionBackbone.train_defaults == {}  # ViT, ConvNeXt, Swin: the strategies' own defaults


def test_a_run_records_the_defaults_it_trained_with(tiny_resnet, image_folders, tmp_path):
    train, val = image_folders
    res = tunesmith.finetune(
        {
            "task": "image-classification",
            "out": str(tmp_path / "run"),
            "model": {"name": str(tiny_resnet)},
            "data": {"train": str(train), "validation": str(val)},
            "strategy": {"name": "full"},
            "train": {"batch_size": 16, "precision": "fp32", "seed": 0, "threads": 1},
        },
        quiet=True,
    )
    ran = yaml.safe_load((res.out / "run_config.yaml").read_text())["train"]
    n_train = sum(1 for p in train.rglob("*.png"))
    steps_per_epoch = math.ceil(n_train / 16)
    assert ran["lr"] == pytest.approx(1e-3) and ran["head_lr"] == pytest.approx(1e-3)
    assert ran["epochs"] == max(15, math.ceil(MIN_STEPS / steps_per_epoch))
    assert ran["early_stopping_patience"] == 5
    meta = json.loads((res.out / "tunesmith.json").read_text())
    assert meta["backbone"] == "hf-image-cnn"
    steps = json.loads((res.out / "metrics.json").read_text())["train"]["steps"]
    assert steps == len(res.history) * steps_per_epoch  # every epoch ran in full, up to any early stop
