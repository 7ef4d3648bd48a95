"""Batch norm while fine-tuning (models/backbone.py): every backbone puts its batch-norm layers at the
fine-tuning momentum (0.1) whatever its checkpoint was ported with, so the running statistics of layers
that train follow the weights; frozen layers keep their pre-trained ones; a saved run reloads with the
statistics it trained with."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import tunesmith
from tunesmith.models.backbone import FINE_TUNING_BN_MOMENTUM
from tunesmith.models.vision_backbone import ConvVisionBackbone, load_vision_backbone

BN = nn.modules.batchnorm._BatchNorm


def _momenta(module: nn.Module) -> set:
    return {m.momentum for m in module.modules() if isinstance(m, BN)}


def test_ported_momenta_give_way_to_the_fine_tuning_policy(tmp_path):
    from transformers import HubertConfig, HubertModel, MobileNetV2Config, MobileNetV2ForImageClassification

    from tunesmith.models.audio_backbone import AudioBackbone
    from tunesmith.models.efficientnet_lite import load_backbone

    # transformers' MobileNetV2 passes TF's decay 0.997 as PyTorch's momentum: the last batch's statistics
    cfg = MobileNetV2Config(num_channels=3, image_size=32, depth_multiplier=0.35, min_depth=4, num_labels=3)
    MobileNetV2ForImageClassification(cfg).save_pretrained(tmp_path / "mobilenet")
    assert _momenta(MobileNetV2ForImageClassification(cfg)) == {0.997}
    mobilenet = load_vision_backbone(tmp_path / "mobilenet")
    assert isinstance(mobilenet, ConvVisionBackbone) and _momenta(mobilenet) == {FINE_TUNING_BN_MOMENTUM}
    # EfficientNet-Lite0, ported from TF (decay 0.99, i.e. momentum 0.01)
    assert _momenta(load_backbone(None, weights=False)) == {FINE_TUNING_BN_MOMENTUM}
    # an audio encoder with batch norm: HuBERT's batch-norm positional convolution, momentum set off the policy
    hubert = HubertModel(
        HubertConfig(
            hidden_size=16,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=32,
            conv_dim=(8, 8),
            conv_stride=(5, 2),
            conv_kernel=(10, 3),
            num_conv_pos_embeddings=4,
            num_conv_pos_embedding_groups=2,
            conv_pos_batch_norm=True,
        )
    )
    for m in hubert.modules():
        if isinstance(m, BN):
            m.momentum = 0.5
    assert _momenta(AudioBackbone(hubert, "wav2vec2")) == {FINE_TUNING_BN_MOMENTUM}


def _fit(model, train, val, out, strategy="full"):
    return tunesmith.finetune(
        {
            "task": "image-classification",
            "out": str(out),
            "model": {"name": str(model)},
            "data": {"train": str(train), "validation": str(val)},
            "strategy": {"name": strategy},
            "augment": {"enabled": False},  # the statistics of exactly the images scored below
            # the best model is the last (validation loss falls to the end), so its statistics had every step
            "train": {
                "epochs": 10,
                "lr": 3e-3,
                "batch_size": 8,
                "precision": "fp32",
                "seed": 0,
                "threads": 1,
                "metric": "loss",
                "early_stopping_patience": None,
            },
        },
        quiet=True,
    )


def _statistics_gap(run, train) -> tuple[float, float]:
    """(mean over batch-norm layers of the median |running mean - the activations' mean| / their std, on the
    training images scored by the reloaded model; its accuracy on them)."""
    predictor = tunesmith.load(run)
    sums: dict[str, list] = {}

    def hook(name):
        def record(module, inputs):
            x = inputs[0].detach().double()
            s = sums.setdefault(name, [0.0, 0.0, 0])
            s[0] = s[0] + x.sum((0, 2, 3))
            s[1] = s[1] + (x * x).sum((0, 2, 3))
            s[2] += x.numel() // x.shape[1]

        return record

    bns = {n: m for n, m in predictor.model.backbone.named_modules() if isinstance(m, BN)}
    handles = [m.register_forward_pre_hook(hook(n)) for n, m in bns.items()]
    images = sorted(train.rglob("*.png"))
    predicted = [p["label"] for p in predictor.predict(images)]
    for h in handles:
        h.remove()
    gaps = []
    for name, m in bns.items():
        total, squares, count = sums[name]
        mean = total / count
        std = (squares / count - mean**2).clamp(min=1e-12).sqrt()
        gaps.append(((m.running_mean.double() - mean).abs() / std).median().item())
    accuracy = sum(p == f.parent.name for p, f in zip(predicted, images)) / len(images)
    return sum(gaps) / len(gaps), accuracy


def test_running_statistics_follow_the_fine_tuned_weights(tiny_resnet, image_folders, tmp_path, monkeypatch):
    train, val = image_folders
    res = _fit(tiny_resnet, train, val, tmp_path / "policy")
    gap, accuracy = _statistics_gap(res.out, train)
    assert accuracy == 1.0  # evaluated (running statistics) on the very images it fitted
    assert gap < 0.12, gap
    # the saved folder scores validation exactly as the run did: the statistics were saved with the weights
    again = tunesmith.evaluate(res.out, val)
    assert again["confusion_matrix"] == res.metrics["confusion_matrix"]
    assert again["loss"] == pytest.approx(res.metrics["loss"], abs=1e-6)

    # TF's decay 0.99 (momentum 0.01), which EfficientNet-Lite's checkpoint carried: statistics far behind
    monkeypatch.setattr(ConvVisionBackbone, "batch_norm_momentum", 0.01)
    lagging, _ = _statistics_gap(_fit(tiny_resnet, train, val, tmp_path / "tf").out, train)
    assert lagging > 2.5 * gap, (lagging, gap)


def test_frozen_layers_keep_their_pretrained_statistics(tiny_resnet, image_folders, tmp_path):
    """partial (the top 2 layer groups train): batch-norm layers below them never move, those in them do."""
    train, val = image_folders
    before = load_vision_backbone(tiny_resnet)
    trains = {n.rsplit(".", 1)[0] for _, names in before.layer_groups()[-2:] for n in names}
    after = tunesmith.load(_fit(tiny_resnet, train, val, tmp_path / "partial", strategy="partial").out).model.backbone
    moved = {
        name: not torch.equal(m.running_mean, after.get_submodule(name).running_mean)
        for name, m in before.named_modules()
        if isinstance(m, BN)
    }
    assert {n for n, m in moved.items() if m} == {n for n in moved if n in trains} != set(), (moved, trains)
    assert set(moved) - trains  # some stayed frozen
