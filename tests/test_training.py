"""End to end on a tiny random BERT: train, reload, predict, pipeline parity, feature cache."""

import json

import pytest
import torch
from conftest import base_config
from safetensors.torch import load_file

import tunesmith


@pytest.fixture(scope="module")
def full_run(tiny_bert_mean, sentiment_csv, sentiment_test_csv, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "full"
    cfg = base_config(tiny_bert_mean, sentiment_csv, out, epochs=6)
    cfg["data"]["test"] = str(sentiment_test_csv)
    return tunesmith.finetune(cfg, quiet=True)


def test_full_run_learns_and_writes_a_complete_folder(full_run):
    out = full_run.out
    assert full_run.metrics["accuracy"] >= 0.8, full_run.history
    assert full_run.test_metrics["accuracy"] >= 0.8
    for name in (
        "model.safetensors",
        "config.json",
        "tunesmith.json",
        "run_config.yaml",
        "report.html",
        "README.md",
        "metrics.json",
        "tokenizer.json",
    ):
        assert (out / name).is_file(), name
    assert not (out / "checkpoints").exists()
    m = json.loads((out / "metrics.json").read_text())
    assert m["params"]["trainable"] == m["params"]["total"] > 0
    assert set(m["validation"]["per_class"]) == {"negative", "positive"}
    assert m["validation"]["confusion_matrix"]["labels"] == ["negative", "positive"]
    assert m["run"]["seed"] == 0


def test_best_weights_are_restored(full_run):
    hist = full_run.history
    best = max(h["macro_f1"] for h in hist)
    assert full_run.metrics["macro_f1"] == pytest.approx(best)


def test_reload_gives_identical_predictions_and_real_label_names(full_run, sentiment_test_csv):
    texts = ["the movie was good", "awful plot and poor actors", "so happy with this story"]
    p1 = tunesmith.load(full_run.out)
    first = p1.predict(texts)
    second = tunesmith.load(full_run.out).predict(texts)
    assert first == second
    assert {r["label"] for r in first} <= {"negative", "positive"}
    r = first[0]
    assert set(r) == {"input", "label", "score", "scores"} and r["input"] == texts[0]
    assert r["score"] == pytest.approx(max(r["scores"].values()))
    assert sum(r["scores"].values()) == pytest.approx(1.0, abs=1e-5)
    # The predictor scores the test file as well as training's final evaluation did.
    m = tunesmith.evaluate(full_run.out, sentiment_test_csv)
    assert m["accuracy"] == pytest.approx(full_run.test_metrics["accuracy"], abs=0.02)


def _pipeline_matches(out, texts, pairs=None):
    from transformers import pipeline

    ours = tunesmith.load(out).predict(texts, pairs=pairs)
    pipe = pipeline("text-classification", model=str(out), device="cpu", top_k=None)
    inputs = texts if pairs is None else [{"text": t, "text_pair": p} for t, p in zip(texts, pairs)]
    theirs = [pipe(x) for x in inputs]
    theirs = [p[0] if isinstance(p[0], list) else p for p in theirs]  # one input -> one list of scores
    for o, p in zip(ours, theirs):
        scores = {d["label"]: d["score"] for d in p}
        assert max(scores, key=scores.get) == o["label"]
        for label, s in o["scores"].items():
            assert scores[label] == pytest.approx(s, abs=1e-5)
    return pipe


def test_mean_pooled_bert_loads_with_pipeline_same_scores_and_refuses_batches(full_run):
    meta = json.loads((full_run.out / "tunesmith.json").read_text())
    assert meta["layout"] == "xlm-mean" and meta["pooling"] == "mean"
    texts = ["the movie was good", "awful plot and poor actors", "meh", "so happy with this story today"]
    pipe = _pipeline_matches(full_run.out, texts)
    _pipeline_matches(full_run.out, ["a story", "the plot"], pairs=["great fun", "poor actors"])
    with pytest.raises(ValueError, match="batching"):
        pipe(texts, batch_size=4)  # XLM's mean would count pads: refused, never silently diluted
    card = (full_run.out / "README.md").read_text()
    assert "XLMForSequenceClassification" in card and "batch" in card


def test_pooling_without_native_head_is_refused_by_transformers_not_misloaded(tiny_bert, sentiment_csv, tmp_path):
    """CLS pooling without the pooler has no transformers-native head: pipeline must fail loudly,
    never load a different model silently; the card says how to load it."""
    from transformers import pipeline

    cfg = base_config(tiny_bert, sentiment_csv, tmp_path / "cls", epochs=1)
    cfg["model"]["pooling"] = "cls"
    res = tunesmith.finetune(cfg, quiet=True)
    assert json.loads((res.out / "tunesmith.json").read_text())["layout"] == "tunesmith"
    with pytest.raises(ValueError, match="model_type"):
        pipeline("text-classification", model=str(res.out))
    assert "tunesmith.load" in (res.out / "README.md").read_text()
    assert tunesmith.load(res.out).predict(["good"])[0]["label"] in {"negative", "positive"}


def test_pooler_model_folder_loads_with_transformers_pipeline_same_scores(tiny_bert, sentiment_csv, tmp_path):
    res = tunesmith.finetune(base_config(tiny_bert, sentiment_csv, tmp_path / "native", epochs=2, lr=5e-3), quiet=True)
    assert json.loads((res.out / "tunesmith.json").read_text())["layout"] == "native"
    pipe = _pipeline_matches(res.out, ["the movie was good", "awful plot and poor actors", "meh"])
    assert len(pipe(["good", "bad plot"], batch_size=2)) == 2  # native BERT masks pads: batching is fine


def test_head_only_trains_only_the_head_and_reuses_cached_features(tiny_bert_mean, sentiment_csv, tmp_path):
    cfg = base_config(tiny_bert_mean, sentiment_csv, tmp_path / "h1")
    cfg["strategy"] = {"name": "head-only"}  # solved: no epochs or learning rate
    del cfg["train"]["epochs"], cfg["train"]["lr"]
    first = tunesmith.finetune(cfg, quiet=True)
    assert first.timings["feature_cache_hit"] == 0.0
    assert first.params["trainable"] == 32 * 2 + 2
    # Backbone weights of the saved, reloaded model are the pre-trained ones, bit for bit.
    saved = tunesmith.load(first.out).model.state_dict()
    orig = load_file(str(tiny_bert_mean / "model.safetensors"))
    for k, v in orig.items():
        if not k.endswith("position_ids") and not k.startswith("pooler"):
            assert torch.equal(saved[f"backbone.encoder.{k}"], v), k
    cfg["out"] = str(tmp_path / "h2")
    second = tunesmith.finetune(cfg, quiet=True)
    assert second.timings["feature_cache_hit"] == 1.0
    assert second.metrics == first.metrics


def test_head_only_feature_cache_is_keyed_by_data(tiny_bert_mean, sentiment_csv, tmp_path):
    from conftest import sentiment_rows, write_csv

    cfg = base_config(tiny_bert_mean, sentiment_csv, tmp_path / "a", epochs=1)
    cfg["strategy"] = {"name": "head-only", "solver": "sgd"}
    tunesmith.finetune(cfg, quiet=True)
    other = write_csv(tmp_path / "other.csv", sentiment_rows(100, seed=9))
    cfg.update(out=str(tmp_path / "b"))
    cfg["data"]["train"] = str(other)
    assert tunesmith.finetune(cfg, quiet=True).timings["feature_cache_hit"] == 0.0


def test_gradient_accumulation_and_step_evaluation(tiny_bert_mean, sentiment_csv, tmp_path):
    """grad_accum=3 takes one optimizer step per 3 batches; eval_every=4 evaluates on steps."""
    cfg = base_config(
        tiny_bert_mean,
        sentiment_csv,
        tmp_path / "ga",
        epochs=2,
        batch_size=8,
        grad_accum=3,
        eval_every=4,
        early_stopping_patience=None,
    )
    res = tunesmith.finetune(cfg, quiet=True)
    m = json.loads((res.out / "metrics.json").read_text())
    batches_per_epoch = -(-144 // 8)  # 144 training rows after the 10% validation split
    assert m["train"]["steps"] == 2 * -(-batches_per_epoch // 3)
    steps = [h["step"] for h in res.history]
    assert steps[:3] == [4, 8, 12] and steps[-1] == m["train"]["steps"]


def test_gradient_accumulation_takes_the_same_step_as_the_bigger_batch(tmp_path):
    """grad_accum=2 at batch b hands the optimizer the gradient of batch 2b, and so takes the same
    step (fp32, one optimizer step, a model without dropout or batch-dependent layers). The bug this
    guards: the loop divided the loss by grad_accum and accelerate divided it again, a k^2 gradient.
    AdamW's step is almost blind to a gradient's scale (it divides by the gradient's own size), so the
    gradient the optimizer receives is what shows the bug; the weights must agree as well."""
    from torch.optim.optimizer import register_optimizer_step_pre_hook

    from tunesmith.testing import make_tiny_bert, sentiment_rows, write_csv

    model = make_tiny_bert(tmp_path / "bert", pooling="mean", dropout=0.0)
    train = write_csv(tmp_path / "train.csv", sentiment_rows(16, seed=1))
    val = write_csv(tmp_path / "val.csv", sentiment_rows(8, seed=2))

    def one_step(name: str, batch_size: int, grad_accum: int) -> tuple[list, dict]:
        grads: list = []
        hook = register_optimizer_step_pre_hook(
            lambda opt, args, kwargs: grads.extend(p.grad.clone() for g in opt.param_groups for p in g["params"])
        )
        cfg = base_config(
            model,
            train,
            tmp_path / name,
            epochs=1,
            batch_size=batch_size,
            grad_accum=grad_accum,
            lr=1e-3,
            warmup_ratio=0.0,
            dropout=0.0,
            max_grad_norm=None,
            weight_decay=0.0,
        )
        cfg["data"]["validation"] = str(val)
        try:
            res = tunesmith.finetune(cfg, quiet=True)
        finally:
            hook.remove()
        assert res.history[-1]["step"] == 1
        return grads, load_file(str(res.out / "model.safetensors"))

    (g_whole, whole), (g_acc, accumulated) = one_step("whole", 16, 1), one_step("accumulated", 8, 2)
    assert len(g_whole) == len(g_acc) > 0
    for a, b in zip(g_whole, g_acc):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-8), (a.abs().max(), (a - b).abs().max())
    bad = {
        k: float((whole[k] - accumulated[k]).abs().max())
        for k in whole
        if not torch.allclose(whole[k], accumulated[k], rtol=0, atol=1e-6)
    }
    assert not bad, bad


def test_gradual_restores_the_model_its_best_evaluation_scored(tiny_bert_mean, sentiment_csv, tmp_path):
    """The best evaluation comes before the last layer group joins (a large LR wrecks what trains
    after it): restoring must bring back the whole model that evaluation scored, the layers unfrozen
    later included. The bug this guards: only the weights trainable at the best evaluation came back,
    so the later-unfrozen layers kept their final values, a model nobody evaluated."""
    cfg = base_config(
        tiny_bert_mean,
        sentiment_csv,
        tmp_path / "g",
        epochs=4,
        lr=0.5,
        head_lr=5e-3,
        metric="loss",
        early_stopping_patience=None,
    )
    cfg["strategy"] = {"name": "gradual"}
    res = tunesmith.finetune(cfg, quiet=True)
    best = min(res.history, key=lambda h: h["loss"])
    assert best["epoch"] < 3, res.history  # the case under test: layer groups joined after the best evaluation
    for k in ("loss", "accuracy", "macro_f1"):
        assert res.metrics[k] == pytest.approx(best[k], abs=1e-6), (k, res.history)


def test_every_run_format_saves_a_tokenizer_that_pads_and_pipeline_batches_exactly(
    tiny_bert, tiny_bert_mean, sentiment_csv, tmp_path
):
    """The folder's own tokenizer pads (transformers' AutoTokenizer, as other tools load it), and
    wherever transformers loads the folder, pipeline(batch_size=8) gives tunesmith predict's scores.
    The one exception is xlm-mean, and it refuses batches loudly: XLM's mean counts padding, so a
    padding tokenizer there would return diluted scores silently (see formats/xlm_mean.py)."""
    from transformers import AutoTokenizer

    from tunesmith.cli import main
    from tunesmith.formats import format_of, pipeline_outputs, read_meta

    texts = [
        "the movie was good",
        "awful plot and poor actors",
        "meh",
        "so happy with this story today",
        "a very boring story",
        "the actors were fine",
        "it",
        "love the plot",
    ]
    runs = {}
    for name, model, pooling, strategy in (
        ("native", tiny_bert, "pooler", "full"),
        ("own", tiny_bert, "cls", "full"),
        ("lora", tiny_bert, "pooler", "lora"),
        ("xlm", tiny_bert_mean, None, "full"),
    ):
        cfg = base_config(model, sentiment_csv, tmp_path / name, epochs=1)
        cfg["model"]["pooling"] = pooling
        cfg["strategy"] = {"name": strategy}
        runs[name] = tunesmith.finetune(cfg, quiet=True).out
    assert main(["export", str(runs["lora"]), "--merge", "--out", str(tmp_path / "merged")]) == 0
    runs["merged"] = tmp_path / "merged"
    layouts = {name: read_meta(out)["layout"] for name, out in runs.items()}
    assert layouts == {
        "native": "native",
        "own": "tunesmith",
        "lora": "lora-adapter",
        "xlm": "xlm-mean",
        "merged": "native",
    }
    for name, out in runs.items():
        tok = AutoTokenizer.from_pretrained(out)
        if layouts[name] == "xlm-mean":
            assert tok.pad_token is None
            continue
        assert tok.pad_token == "[PAD]" and tok(texts, padding=True)["input_ids"].__len__() == len(texts)
        predictor = tunesmith.load(out)
        theirs = pipeline_outputs(out, predictor.task, predictor.modality, texts, batch_size=8)
        assert (theirs is not None) == format_of(read_meta(out)).pipeline_loads
        if theirs is not None:
            ours = predictor.task.parity_view(predictor.outputs(texts))
            assert predictor.task.output_difference(ours, theirs) <= 1e-5, name


def test_a_run_no_better_than_the_majority_class_says_so_everywhere(tiny_bert_mean, sentiment_csv, tmp_path, capsys):
    cfg = base_config(tiny_bert_mean, sentiment_csv, tmp_path / "flat", epochs=1, lr=1e-9)
    res = tunesmith.finetune(cfg)
    assert "NO BETTER THAN TRIVIAL" in capsys.readouterr().err
    m = json.loads((res.out / "metrics.json").read_text())
    assert any("NO BETTER THAN TRIVIAL: validation macro_f1" in w and "majority class" in w for w in m["warnings"])
    assert "NO BETTER THAN TRIVIAL" in (res.out / "report.html").read_text()
    assert "NO BETTER THAN TRIVIAL" in (res.out / "README.md").read_text()
