"""Contract tests run for every registered strategy (and the task): adding one to a registry
puts it under these tests automatically (DESIGN: shared contract tests)."""
import pytest
import torch

import tunesmith
from conftest import base_config, sentiment_rows, write_csv
from tunesmith.config import config_from_dict
from tunesmith.models.text_backbone import load_text_backbone, load_tokenizer
from tunesmith.strategies import STRATEGIES
from tunesmith.tasks import TASKS
from tunesmith.tasks.base import TaskModel
from tunesmith.training.optim import build_optimizer


def _model_and_batch(folder, task_name="text-classification"):
    backbone = load_text_backbone(folder)
    tok = load_tokenizer(folder)
    task = TASKS.get(task_name)(["negative", "positive"], dropout=0.0, pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    model = TaskModel(backbone, task.build_head(backbone))
    rows = sentiment_rows(16, seed=3)
    enc = task.encode(tok, [r["text"] for r in rows], None, 32)
    for e, r in zip(enc, rows):
        e["label"] = task.label2id[r["label"]]
    return model, task, task.collate(enc)


@pytest.mark.parametrize("name", STRATEGIES.names())
def test_one_step_changes_exactly_the_trainable_parameters(name, tiny_bert_mean):
    model, task, batch = _model_and_batch(tiny_bert_mean)
    strategy = STRATEGIES.get(name)()
    counts = strategy.prepare(model)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert counts.trainable == sum(p.numel() for n, p in model.named_parameters() if n in trainable) > 0
    assert counts.total == sum(p.numel() for p in model.parameters())
    # The optimizer sees exactly the trainable parameters, each once.
    tc = config_from_dict({"strategy": {"name": name}}).resolved().train
    groups = strategy.param_groups(model, tc)
    in_groups = [id(p) for g in groups for p in g["params"]]
    assert len(in_groups) == len(set(in_groups))
    assert set(in_groups) == {id(p) for n, p in model.named_parameters() if n in trainable}
    assert set(strategy.trainable_state(model)) == trainable

    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = build_optimizer(groups, tc.lr, "cpu")
    task.compute_loss(model, batch)["loss"].backward()
    opt.step()
    for n, p in model.named_parameters():
        if n in trainable:
            assert not torch.equal(p, before[n]), f"{name}: trainable {n} did not change"
        else:
            assert torch.equal(p, before[n]), f"{name}: frozen {n} changed"


@pytest.mark.parametrize("name", STRATEGIES.names())
def test_saved_run_reproduces_its_validation_metrics(name, tiny_bert_mean, tmp_path):
    train = write_csv(tmp_path / "train.csv", sentiment_rows(96, seed=1))
    val = write_csv(tmp_path / "val.csv", sentiment_rows(40, seed=2))
    cfg = base_config(tiny_bert_mean, train, tmp_path / name, epochs=2)
    cfg["data"]["validation"] = str(val)
    cfg["strategy"] = {"name": name}
    res = tunesmith.finetune(cfg, quiet=True)
    reloaded = tunesmith.evaluate(res.out, val)
    for key in ("accuracy", "macro_f1", "confusion_matrix"):
        assert reloaded[key] == res.metrics[key]


@pytest.mark.parametrize("task_name", TASKS.names())
def test_task_contract(task_name, tiny_bert_mean):
    model, task, batch = _model_and_batch(tiny_bert_mean, task_name)
    out = task.compute_loss(model, batch)
    assert set(out) >= {"loss", "logits"} and out["loss"].ndim == 0
    decoded = task.decode(out["logits"])
    assert len(decoded) == batch["labels"].shape[0]
    m = task.metrics([task.label2id[d["label"]] for d in decoded], batch["labels"].tolist())
    assert 0.0 <= m["accuracy"] <= 1.0
