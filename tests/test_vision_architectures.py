"""Vision backbones beyond ResNet: a tiny ViT (CLS token + final norm) and a tiny ConvNeXt (normed mean)
go through the same task, strategies and run format: they learn, their layer groups come in order,
and the saved folder loads with transformers.pipeline giving tunesmith's scores."""

from __future__ import annotations

from pathlib import Path

import pytest

import tunesmith


def make_tiny_vit(folder: Path) -> Path:
    import torch
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessorPil

    torch.manual_seed(0)
    cfg = ViTConfig(
        image_size=32,
        patch_size=8,
        num_channels=3,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        num_labels=4,
    )
    ViTForImageClassification(cfg).save_pretrained(folder)
    ViTImageProcessorPil(size={"height": 32, "width": 32}, image_mean=[0.5] * 3, image_std=[0.5] * 3).save_pretrained(
        folder
    )
    return folder


def make_tiny_convnext(folder: Path) -> Path:
    import torch
    from transformers import ConvNextConfig, ConvNextForImageClassification, ConvNextImageProcessorPil

    torch.manual_seed(0)
    cfg = ConvNextConfig(num_channels=3, num_stages=2, hidden_sizes=[8, 16], depths=[1, 1], num_labels=4)
    ConvNextForImageClassification(cfg).save_pretrained(folder)
    ConvNextImageProcessorPil(
        size={"shortest_edge": 32}, crop_pct=0.875, image_mean=[0.5] * 3, image_std=[0.5] * 3
    ).save_pretrained(folder)
    return folder


BUILDERS = {"vit": make_tiny_vit, "convnext": make_tiny_convnext}


@pytest.mark.parametrize("arch", sorted(BUILDERS))
def test_backbone_learns_orders_its_layers_and_pipeline_agrees(arch, image_folders, tmp_path):
    from transformers import pipeline

    from tunesmith.models.vision_backbone import load_vision_backbone

    model = BUILDERS[arch](tmp_path / arch)
    groups = [name for name, _ in load_vision_backbone(model).layer_groups()]
    assert groups[0] == "embeddings" and groups[-1] == "top" and groups[1:-1] == ["layer.0", "layer.1"], groups

    train, val = image_folders
    res = tunesmith.finetune(
        {
            "task": "image-classification",
            "out": str(tmp_path / "run"),
            "model": {"name": str(model)},
            "data": {"train": str(train), "validation": str(val)},
            "strategy": {"name": "full"},
            "train": {
                "epochs": 6,
                "batch_size": 8,
                "lr": 3e-3,
                "precision": "fp32",
                "seed": 0,
                "early_stopping_patience": None,
            },
        },
        quiet=True,
    )
    assert res.metrics["accuracy"] >= 0.8, res.history

    images = sorted(str(p) for p in val.rglob("*.png"))[::2]
    ours = tunesmith.load(res.out).predict(images)
    pipe = pipeline("image-classification", model=str(res.out), top_k=None)
    for mine, theirs in zip(ours, pipe(images)):
        assert theirs[0]["label"] == mine["label"]
        for t in theirs:
            assert abs(t["score"] - mine["scores"][t["label"]]) <= 1e-5


@pytest.mark.parametrize("arch", sorted(BUILDERS))
def test_partial_trains_only_the_top_group(arch, image_folders, tmp_path):
    from tunesmith.models.vision_backbone import load_vision_backbone
    from tunesmith.strategies import STRATEGIES
    from tunesmith.tasks.base import TaskModel
    from tunesmith.tasks.classification import ClassificationHead

    backbone = load_vision_backbone(BUILDERS[arch](tmp_path / arch))
    model = TaskModel(backbone, ClassificationHead(backbone.feature_dim, 3, 0.0))
    STRATEGIES.get("partial")(unfreeze_top=1).prepare(model)
    top = {f"backbone.{n}" for n in dict(backbone.layer_groups())["top"]}
    for name, p in model.named_parameters():
        expected = name.startswith("head.") or name in top
        assert p.requires_grad == expected, name
