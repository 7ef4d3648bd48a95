"""Strategy behaviour a user would notice: which layers train, LR per layer, gradual growth,
LoRA save/merge, and config mistakes named clearly."""

import json

import pytest
import torch
from conftest import base_config

import tunesmith
from tunesmith.cli import main
from tunesmith.config import config_from_dict
from tunesmith.errors import ConfigError
from tunesmith.models.text_backbone import load_text_backbone
from tunesmith.strategies import STRATEGIES
from tunesmith.tasks.base import TaskModel
from tunesmith.tasks.text_classification import TextClassificationTask


def _model(folder):
    b = load_text_backbone(folder)
    return TaskModel(b, TextClassificationTask(["a", "b"]).build_head(b))


def test_partial_trains_top_k_groups_and_refuses_more_than_exist(tiny_bert_mean):
    m = _model(tiny_bert_mean)
    STRATEGIES.get("partial")(unfreeze_top=1).prepare(m)
    trainable = {n for n, p in m.named_parameters() if p.requires_grad}
    assert any(".layer.1." in n for n in trainable) and not any(".layer.0." in n for n in trainable)
    assert not any("embeddings" in n for n in trainable) and "head.classifier.weight" in trainable
    groups = m.backbone.layer_groups()  # embeddings + 2 layers
    with pytest.raises(ConfigError, match=f"has {len(groups)}"):
        STRATEGIES.get("partial")(unfreeze_top=len(groups) + 1).prepare(_model(tiny_bert_mean))


def test_layer_decay_scales_each_group_from_the_top(tiny_bert_mean):
    m = _model(tiny_bert_mean)
    s = STRATEGIES.get("full")()
    s.prepare(m)
    tc = config_from_dict({"train": {"lr": 1e-3, "layer_decay": 0.5}}).resolved().train
    lrs = {g["name"]: g["lr"] for g in s.param_groups(m, tc)}
    assert lrs["backbone.layer.1"] == pytest.approx(1e-3)
    assert lrs["backbone.layer.0"] == pytest.approx(5e-4)
    assert lrs["backbone.embeddings"] == pytest.approx(2.5e-4)
    assert lrs["head"] == pytest.approx(tc.head_lr)


def test_gradual_unfreezes_one_group_per_epoch_and_keeps_optimizer_state(tiny_bert_mean, sentiment_csv, tmp_path):
    cfg = base_config(tiny_bert_mean, sentiment_csv, tmp_path / "g", epochs=4, early_stopping_patience=None)
    cfg["strategy"] = {"name": "gradual"}
    res = tunesmith.finetune(cfg, quiet=False)
    assert res.params["trainable_at_start"] == 32 * 2 + 2
    assert res.params["trainable"] == res.params["total"]  # by epoch 4 all 3 groups train


def test_gradual_by_steps_unfreezes_during_the_first_epoch(tiny_bert_mean, sentiment_csv, tmp_path):
    # 144 training rows / batch 16 = 9 steps per epoch; a group joins every 3 steps
    cfg = base_config(tiny_bert_mean, sentiment_csv, tmp_path / "g", epochs=1, early_stopping_patience=None)
    cfg["strategy"] = {"name": "gradual", "unfreeze_every_steps": 3}
    res = tunesmith.finetune(cfg, quiet=True)
    assert res.params["trainable_at_start"] == 32 * 2 + 2
    assert res.params["trainable"] == res.params["total"]  # 3 groups joined within one epoch
    with pytest.raises(ConfigError, match="set one"):
        config_from_dict({"strategy": {"name": "gradual", "unfreeze_every": 1, "unfreeze_every_steps": 3}})
    with pytest.raises(ConfigError, match="unfreeze_every_steps applies only to strategy gradual"):
        config_from_dict({"strategy": {"name": "full", "unfreeze_every_steps": 3}})


def test_new_param_groups_keep_the_optimizer_state_of_weights_already_training():

    from tunesmith.training.optim import build_optimizer, refresh_param_groups, warmup_linear_decay

    torch.manual_seed(0)
    head, body = torch.nn.Linear(4, 2), torch.nn.Linear(4, 4)
    body.requires_grad_(False)
    opt = build_optimizer([{"params": list(head.parameters()), "lr": 1e-2}], 1e-2, "cpu")
    sched = warmup_linear_decay(opt, 10, 0.0)
    for _ in range(2):
        head(body(torch.randn(8, 4))).pow(2).mean().backward()
        opt.step(), sched.step(), opt.zero_grad()
    moments = {k: v.clone() for k, v in opt.state[head.weight].items()}
    body.requires_grad_(True)
    refresh_param_groups(
        opt, sched, [{"params": list(head.parameters()), "lr": 1e-2}, {"params": list(body.parameters()), "lr": 1e-3}]
    )
    for k, v in moments.items():
        assert torch.equal(opt.state[head.weight][k], v)  # kept, not reset
    assert body.weight not in opt.state  # new weights start fresh...
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([1e-2 * 0.8, 1e-3 * 0.8])  # ...at the current decay
    head(body(torch.randn(8, 4))).pow(2).mean().backward()
    opt.step()
    assert int(opt.state[head.weight]["step"]) == 3 and int(opt.state[body.weight]["step"]) == 1


def test_strategy_option_for_another_strategy_is_an_error():
    with pytest.raises(ConfigError, match="strategy.lora applies only to strategy lora"):
        config_from_dict({"strategy": {"name": "full", "lora": {"rank": 4}}})
    with pytest.raises(ConfigError, match="strategy.unfreeze_top applies only to strategy partial"):
        config_from_dict({"strategy": {"name": "gradual", "unfreeze_top": 2}})
    with pytest.raises(ConfigError, match="train.layer_decay applies to"):
        config_from_dict({"strategy": {"name": "lora"}, "train": {"layer_decay": 0.8}})


def test_lora_run_keeps_head_reloads_and_merges_with_parity(tiny_bert_mean, sentiment_csv, tmp_path, capsys):
    cfg = base_config(tiny_bert_mean, sentiment_csv, tmp_path / "lora", epochs=3, lr=5e-3)
    cfg["strategy"] = {"name": "lora", "lora": {"rank": 4, "alpha": 8}}
    res = tunesmith.finetune(cfg, quiet=True)
    assert res.params["trainable"] < res.params["total"] / 5
    assert not (res.out / "model.safetensors").exists() and (res.out / "adapter.safetensors").is_file()
    texts = ["the movie was good", "awful plot", "so happy"]
    a, b = tunesmith.load(res.out).predict(texts), tunesmith.load(res.out).predict(texts)
    assert a == b
    assert main(["export", str(res.out), "--merge", "--out", str(tmp_path / "merged")]) == 0
    out = capsys.readouterr().out
    assert "transformers.pipeline (merged folder, no peft)" in out and "max difference" in out
    merged = tunesmith.load(tmp_path / "merged").predict(texts)
    for x, y in zip(a, merged):
        assert x["label"] == y["label"] and x["score"] == pytest.approx(y["score"], abs=1e-4)
    meta = json.loads((tmp_path / "merged" / "tunesmith.json").read_text())
    assert meta["layout"] == "xlm-mean" and "lora" not in meta
    from transformers import AutoModelForSequenceClassification

    assert not any(
        "lora" in k for k in AutoModelForSequenceClassification.from_pretrained(tmp_path / "merged").state_dict()
    )
    # export refuses a non-LoRA run and a non-empty target
    assert main(["export", str(tmp_path / "merged"), "--merge", "--out", str(tmp_path / "m2")]) == 2
    assert main(["export", str(res.out), "--merge", "--out", str(tmp_path / "merged")]) == 2


def test_auto_follows_the_study_table_and_steps_down_when_memory_is_short():
    from tunesmith.strategies.auto import TABLE, choose

    rules = json.loads(TABLE.read_text())["rules"]
    per_class = sorted((r for r in rules if r["per_class"] is not None), key=lambda r: r["per_class"])
    assert per_class, "auto_table.json must come from bench/strategy_study.py"
    for r in per_class:
        labels = ["a"] * r["per_class"] + ["b"] * (r["per_class"] + 3)
        got = choose(labels, 22_000_000, 64 << 30)
        assert got.strategy == r["strategy"]
        assert any("smallest class 'a'" in why for why in got.reasons)
    assert not any("guess" in why for why in got.reasons)  # text: the study's own modality
    image = choose(labels, 22_000_000, 64 << 30, "image")
    assert image.strategy == got.strategy and any("study is of text classification" in w for w in image.reasons)
    small = choose(["a"] * 600 + ["b"] * 600, 7_000_000_000, 8 << 30)  # a 7B model in 8 GiB
    assert small.strategy in ("lora", "head-only") and any("stepping down" in w for w in small.reasons)


def test_lora_on_a_cnn_with_depthwise_convolutions_adapts_the_ungrouped_ones():
    """EfficientNet-Lite's depthwise convolutions take LoRA only at a rank divisible by their groups
    (peft refuses rank 8): the default targets leave them frozen and adapt every other convolution."""
    import torch

    from tunesmith.models.efficientnet_lite import EfficientNetLite0
    from tunesmith.strategies.lora import DEFAULT_LORA, default_targets, inject_lora

    net = EfficientNetLite0()
    targets = default_targets(net)
    assert "depthwise_conv" not in targets and {"expand_conv", "project_conv"} <= set(targets)
    inject_lora(net, DEFAULT_LORA)
    adapted = {n.rsplit(".", 1)[0] for n, _ in net.named_parameters() if "lora_A" in n}
    assert adapted and not any("depthwise" in n for n in adapted)
    out = net.forward_features(torch.randn(2, 3, 64, 64))
    out.sum().backward()
    assert all(p.grad is not None for n, p in net.named_parameters() if "lora_" in n)
