"""train.gradient_checkpointing: layers really are recomputed in the backward pass, and the run
trains to the same weights and metrics as without it (dropout masks replayed, not redrawn)."""

from __future__ import annotations

import pytest
import torch
from conftest import base_config

import tunesmith
from tunesmith.errors import ConfigError


def _run(model, data, out, strategy, recompute, calls):
    from transformers.models.bert import modeling_bert

    original = modeling_bert.BertIntermediate.forward  # inside each layer (the layer's own
    # forward is transformers' checkpointing wrapper and must stay in place)

    def counting(self, *a, **k):
        calls.append(self.training)
        return original(self, *a, **k)

    cfg = base_config(model, data, out, epochs=1, gradient_checkpointing=recompute)
    cfg["strategy"] = {"name": strategy}
    modeling_bert.BertIntermediate.forward = counting
    try:
        return tunesmith.finetune(cfg, quiet=True)
    finally:
        modeling_bert.BertIntermediate.forward = original


@pytest.mark.parametrize("strategy", ["full", "lora"])
def test_recompute_replays_layers_and_changes_nothing_else(strategy, tiny_bert_mean, sentiment_csv, tmp_path):
    from safetensors.torch import load_file

    plain_calls, re_calls = [], []
    plain = _run(tiny_bert_mean, sentiment_csv, tmp_path / "plain", strategy, False, plain_calls)
    again = _run(tiny_bert_mean, sentiment_csv, tmp_path / "recompute", strategy, True, re_calls)
    # every training forward of a layer runs once more inside backward; evaluation is untouched
    assert sum(re_calls) == 2 * sum(plain_calls) > 0
    assert re_calls.count(False) == plain_calls.count(False)
    assert again.history == plain.history
    name = "adapter.safetensors" if strategy == "lora" else "model.safetensors"
    a, b = load_file(str(plain.out / name)), load_file(str(again.out / name))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-6), k


def test_recompute_is_refused_where_it_cannot_apply(tiny_bert_mean, sentiment_csv, tmp_path):
    cfg = base_config(tiny_bert_mean, sentiment_csv, tmp_path / "h", gradient_checkpointing=True)
    cfg["strategy"] = {"name": "head-only"}
    del cfg["train"]["epochs"], cfg["train"]["lr"]  # a solved head has none
    with pytest.raises(ConfigError, match="gradient_checkpointing does nothing with 'head-only'"):
        tunesmith.finetune(cfg, quiet=True)

    from tunesmith.models import efficientnet_lite
    from tunesmith.training.recompute import enable_activation_recompute

    with pytest.raises(ConfigError, match="does not support it"):
        enable_activation_recompute(efficientnet_lite.load_backbone(None, weights=False))
