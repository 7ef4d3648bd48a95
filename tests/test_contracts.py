"""Contract tests run for every registered strategy (and the task): adding one to a registry
puts it under these tests automatically (DESIGN: shared contract tests)."""
import pytest
import torch

import tunesmith
from conftest import base_config, sentiment_rows, write_csv
from tunesmith.config import config_from_dict
from tunesmith.errors import ConfigError
from tunesmith.strategies import STRATEGIES
from tunesmith.tasks import TASKS
from tunesmith.tasks.base import TaskModel
from tunesmith.training.optim import build_optimizer


def _model_and_batch(folder, task_name="text-classification", image_root=None):
    from tunesmith.config import ModelConfig
    from tunesmith.modalities import inputs_for

    task_cls = TASKS.get(task_name)
    inputs = inputs_for(task_cls.modality)
    backbone, pre = inputs.load(folder, ModelConfig(name=str(folder)))
    if task_cls.modality == "speech":  # transcripts, not labels: the task comes from the model's processor
        from tunesmith.config import DataConfig

        ex = inputs.read(str(image_root), DataConfig(text_column="transcript"), "data").subset(range(6))
        task = task_cls.for_run(backbone, pre, ex.texts, {"max_new_tokens": 6}, 0.0)
        torch.manual_seed(0)
        model = TaskModel(backbone, task.build_head(backbone))
        task.prepare_model(model)
        return model, task, task.collate(task.encode(ex))
    if task_cls.modality == "image":
        from tunesmith.data.images import image_examples

        ex = image_examples(str(image_root)).subset(range(0, 48, 3))
        labels = sorted(set(ex.labels))
    elif task_cls.modality == "audio":
        from tunesmith.data.audio import audio_examples

        ex = audio_examples(str(image_root)).subset(range(0, 36, 3))
        labels = sorted(set(ex.labels))
    else:
        from tunesmith.data.preflight import TextExamples

        rows = sentiment_rows(16, seed=3)
        ex = TextExamples("rows", [r["text"] for r in rows], None, [r["label"] for r in rows])
        labels = ["negative", "positive"]
    task = task_cls(labels, dropout=0.0, **inputs.task_kwargs(pre))
    torch.manual_seed(0)
    model = TaskModel(backbone, task.build_head(backbone))
    enc = inputs.encode(task, pre, ex, 32)
    for e, y in zip(enc, ex.labels):
        e["label"] = task.label2id[y]
    return model, task, task.collate(enc)


@pytest.fixture(params=TASKS.names())
def task_setup(request, tiny_bert_mean, tiny_resnet, image_folders):
    """(task name, model folder, training data, validation data) for every registered task."""
    name = request.param
    if TASKS.get(name).modality == "image":
        return name, tiny_resnet, *image_folders
    if TASKS.get(name).modality == "speech":
        return name, request.getfixturevalue("tiny_asr_whisper"), *request.getfixturevalue("speech_tables")
    if TASKS.get(name).modality == "audio":  # audio fixtures are built only when an audio task runs
        return name, request.getfixturevalue("tiny_whisper"), *request.getfixturevalue("audio_folders")
    return name, tiny_bert_mean, None, None


@pytest.mark.parametrize("name", STRATEGIES.names())
def test_one_step_changes_exactly_the_trainable_parameters(name, task_setup):
    task_name, folder, train_root, _ = task_setup
    if name == "head-only" and getattr(TASKS.get(task_name), "generates_text", False):
        # head-only trains on cached pooled features; a recogniser has none: a config error, not a silent no-op
        with pytest.raises(ConfigError, match="head-only"):
            config_from_dict({"task": task_name, "strategy": {"name": name}})
        return
    model, task, batch = _model_and_batch(folder, task_name, train_root)
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
    frozen_norms = {n: {b: t.clone() for b, t in m.named_buffers()} for n, m in model.named_modules()
                    if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
                    and not any(p.requires_grad for p in m.parameters())}
    opt = build_optimizer(groups, tc.lr, "cpu")
    model.train()
    task.compute_loss(model, batch)["loss"].backward()
    opt.step()
    for n, p in model.named_parameters():
        if n in trainable:
            assert not torch.equal(p, before[n]), f"{name}: trainable {n} did not change"
        else:
            assert torch.equal(p, before[n]), f"{name}: frozen {n} changed"
    for n, bufs in frozen_norms.items():  # frozen batch norms keep their running statistics too
        for b, t in dict(model.get_submodule(n).named_buffers()).items():
            assert torch.equal(t, bufs[b]), f"{name}: frozen batch norm {n}.{b} changed"


@pytest.mark.parametrize("name", STRATEGIES.names())
def test_saved_run_reproduces_its_validation_metrics(name, task_setup, tmp_path):
    task_name, folder, train, val = task_setup
    if train is None:
        train = write_csv(tmp_path / "train.csv", sentiment_rows(96, seed=1))
        val = write_csv(tmp_path / "val.csv", sentiment_rows(40, seed=2))
    cfg = base_config(folder, train, tmp_path / name, epochs=2)
    cfg["task"] = task_name
    cfg["data"]["validation"] = str(val)
    if task_name != "text-classification":
        del cfg["model"]["max_length"]
    cfg["strategy"] = {"name": name}
    speech = getattr(TASKS.get(task_name), "generates_text", False)
    if speech:
        if name == "head-only":  # see test_one_step_changes_exactly_the_trainable_parameters
            pytest.skip("head-only does not apply to speech-recognition (a config error)")
        cfg["data"].update(text_column="transcript", audio_column="audio")
        cfg["speech"] = {"max_new_tokens": 6}
    res = tunesmith.finetune(cfg, quiet=True)
    reloaded = tunesmith.evaluate(res.out, val)
    for key in (("wer", "cer", "loss") if speech else ("accuracy", "macro_f1", "confusion_matrix")):
        assert reloaded[key] == res.metrics[key]


def test_task_contract(task_setup):
    task_name, folder, train_root, _ = task_setup
    model, task, batch = _model_and_batch(folder, task_name, train_root)
    out = task.compute_loss(model, batch)
    assert set(out) >= {"loss", "logits"} and out["loss"].ndim == 0
    if getattr(task, "generates_text", False):  # speech recognition: decode generated ids, score transcripts
        with torch.no_grad():
            ids = model.backbone.encoder.generate(input_features=batch["input_features"])
        decoded = task.decode(ids)
        assert len(decoded) == batch["labels"].shape[0] and all(isinstance(d["text"], str) for d in decoded)
        m = task.metrics([d["text"] for d in decoded], ["yes go"] * len(decoded))
        assert m["wer"] >= 0.0 and m["cer"] >= 0.0 and m["n"] == len(decoded)
        return
    decoded = task.decode(out["logits"])
    assert len(decoded) == batch["labels"].shape[0]
    m = task.metrics([task.label2id[d["label"]] for d in decoded], batch["labels"].tolist())
    assert 0.0 <= m["accuracy"] <= 1.0
