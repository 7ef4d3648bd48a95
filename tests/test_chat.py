"""Chat fine-tuning end to end on tiny causal LMs built here (Llama and GPT-2, with a byte-level BPE
tokenizer and a ChatML template): LoRA by default, the loss on assistant tokens only, before/after
scores, replies from `predict` (texts or message lists), and the errors a user meets first. The
task's contract, every strategy, resume and pipeline parity run in test_contracts.py / test_resume.py."""

import contextlib
import json

import pytest
import torch

import tunesmith
from tunesmith.errors import ConfigError, DataError
from tunesmith.modalities.conversations import IGNORE
from tunesmith.testing import chat_rows, make_tiny_causal_lm, write_jsonl


@pytest.fixture(scope="module")
def chat_data(tmp_path_factory):
    d = tmp_path_factory.mktemp("chat")
    return (
        write_jsonl(d / "train.jsonl", chat_rows(24, seed=1)),
        write_jsonl(d / "val.jsonl", chat_rows(8, seed=2, ask="Which colour has the {}?")),
    )


@pytest.fixture(scope="module", params=["llama", "gpt2"])
def tiny_lm(request, tmp_path_factory):
    return make_tiny_causal_lm(tmp_path_factory.mktemp(request.param) / request.param, family=request.param)


def _config(model, splits, out, **extra):
    train, val = splits
    cfg = {
        "task": "chat",
        "out": str(out),
        "model": {"name": str(model), "max_length": 96},
        "data": {"train": str(train), "validation": str(val)},
        "chat": {"max_new_tokens": 6, "eval_generations": 4},
        "train": {"epochs": 3, "batch_size": 8, "lr": 3e-3, "precision": "fp32", "seed": 0, "threads": 1},
    }
    for k, v in extra.items():
        cfg.setdefault(k, {}).update(v)
    return cfg


def test_lora_by_default_lowers_the_held_out_loss_and_answers(tiny_lm, chat_data, tmp_path):
    res = tunesmith.finetune(_config(tiny_lm, chat_data, tmp_path / "run"), quiet=True)
    m = json.loads((res.out / "metrics.json").read_text())
    assert m["run"]["strategy"] == "lora"  # chat's default, not full
    meta = json.loads((res.out / "tunesmith.json").read_text())
    targets = set(meta["lora"]["target_modules"])  # attention and MLP projections, not only q/v
    assert len(targets) >= 3 and not targets & {"lm_head", "embed_tokens", "wte"}
    before, after = m["before_finetuning"]["validation"], m["validation"]
    assert after["loss"] < before["loss"] and after["perplexity"] == pytest.approx(torch.tensor(after["loss"]).exp())
    assert {"stop_rate", "chrf", "distinct_2", "reply_tokens"} <= set(after) and after["generated"] == 4
    # sample replies before and after fine-tuning, side by side
    assert len(m["samples"]) == 4 and {"prompt", "reference", "before", "reply"} == set(m["samples"][0])
    assert [s["before"] for s in m["samples"]] == before["sample_replies"][:4]
    assert [s["reply"] for s in m["samples"]] == after["sample_replies"][:4]
    held_out = tunesmith.evaluate(res.out, chat_data[1])  # `tunesmith evaluate`: the base model scored beside it
    assert held_out["loss"] == pytest.approx(after["loss"], rel=1e-4)
    assert held_out["base_model"]["loss"] == pytest.approx(before["loss"], rel=1e-4)
    assert [s["before"] for s in held_out["samples"]] == [s["before"] for s in m["samples"]]
    predictor = tunesmith.load(res.out)
    one = predictor.predict("What colour is the sky?")
    conv = [
        {"role": "user", "content": "What colour is the sky?"},
        {"role": "assistant", "content": "The sky is blue."},
        {"role": "user", "content": "And the grass?"},
    ]
    both = predictor.predict(["What colour is the sky?", conv])
    assert set(one[0]) == {"input", "text"} and both[0]["text"] == one[0]["text"]
    # the adapters are folded in once, at load: each generated token costs what the plain model's does
    from peft.tuners.lora import LoraLayer

    assert not any(isinstance(x, LoraLayer) for x in predictor.model.modules())
    unmerged = tunesmith.load(res.out, merge_adapters=False)
    assert any(isinstance(x, LoraLayer) for x in unmerged.model.modules())
    assert unmerged.predict(["What colour is the sky?", conv]) == both
    for page in ("report.html", "README.md"):
        text = (res.out / page).read_text()
        assert "perplexity" in text and "before fine-tuning" in text and m["samples"][0]["prompt"] in text


def test_the_loss_covers_assistant_tokens_only(tiny_lm, chat_data):
    """A change to a user's words leaves the loss-bearing tokens alone; the labels are exactly the
    assistant's tokens (test_chat_data.py checks the mask on five template families)."""
    from tunesmith.modalities.conversations import read_conversations
    from tunesmith.testing import task_and_model

    train = read_conversations(chat_data[0])
    task, model = task_and_model("chat", tiny_lm, train, model={"max_length": 96})
    rows = task.encode(train.subset(range(3)))
    for r, conv in zip(rows, train.conversations[:3]):
        labelled = [t for t, lab in zip(r["input_ids"], r["labels"]) if lab != IGNORE]
        replies = [m["content"] for m in conv if m["role"] == "assistant"]
        assert task.tokenizer.decode(labelled) == "".join(x + "<|im_end|>" for x in replies)
    batch = task.collate(rows)
    assert set(batch) == {"input_ids", "attention_mask", "labels"}
    assert torch.isfinite(task.compute_loss(model, batch)["loss"])
    # training's per-epoch check reads the loss alone: no replies generated there (they cost the most)
    full = task.evaluate(model, rows, 4, contextlib.nullcontext)
    check = task.evaluate(model, rows, 4, contextlib.nullcontext, tracked_only=True)
    assert "chrf" in full.metrics and "chrf" not in check.metrics and set(check.predictions) == {""}
    assert check.metrics["loss"] == pytest.approx(full.metrics["loss"])


def test_full_fine_tuning_saves_a_folder_transformers_generates_from(tiny_lm, chat_data, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    res = tunesmith.finetune(_config(tiny_lm, chat_data, tmp_path / "full", strategy={"name": "full"}), quiet=True)
    tok = AutoTokenizer.from_pretrained(res.out)
    lm = AutoModelForCausalLM.from_pretrained(res.out)
    ids = tok.apply_chat_template(
        [{"role": "user", "content": "What colour is the snow?"}],
        add_generation_prompt=True,
        return_dict=True,
        return_tensors="pt",
    )["input_ids"]
    out = lm.generate(input_ids=ids, attention_mask=torch.ones_like(ids))
    text = tok.decode(out[0, ids.shape[1] :], skip_special_tokens=True).strip()
    assert text == tunesmith.load(res.out).predict("What colour is the snow?")[0]["text"]


def test_head_only_and_auto_are_config_errors_naming_what_applies(tiny_lm, chat_data, tmp_path):
    for name in ("head-only", "auto"):
        with pytest.raises(ConfigError, match=f"{name}.*chat|chat.*{name}"):
            tunesmith.finetune(_config(tiny_lm, chat_data, tmp_path / name, strategy={"name": name}), quiet=True)


def test_a_model_without_a_chat_template_needs_one(chat_data, tmp_path):
    base = make_tiny_causal_lm(tmp_path / "base", template=False)
    with pytest.raises(ConfigError, match="no chat template.*chat.template=chatml"):
        tunesmith.finetune(_config(base, chat_data, tmp_path / "r"), quiet=True)
    res = tunesmith.finetune(
        _config(base, chat_data, tmp_path / "r2", chat={"template": "chatml"}, train={"epochs": 1}), quiet=True
    )
    tok = tunesmith.load(res.out).task.tokenizer
    assert "<|im_end|>" in tok.get_vocab() and "<|im_start|>" in tok.chat_template
    assert tunesmith.load(res.out).predict("What colour is the sea?")[0]["text"] is not None


def test_predict_refuses_bad_messages_naming_the_input(tiny_lm, chat_data, tmp_path):
    res = tunesmith.finetune(_config(tiny_lm, chat_data, tmp_path / "run", train={"epochs": 1}), quiet=True)
    predictor = tunesmith.load(res.out)
    with pytest.raises(DataError, match="input 2 is empty"):
        predictor.predict(["hi", "  "])
    with pytest.raises(DataError, match="input 1: the last message is 'assistant'"):
        predictor.predict([[{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]])
    with pytest.raises(DataError, match="input 1: message 1 has unknown role 'robot'"):
        predictor.predict([[{"role": "robot", "content": "hi"}]])


def test_conversations_too_long_are_cut_or_dropped_and_counted(tiny_lm, chat_data, tmp_path, capsys):
    train, val = chat_data
    long_reply = " ".join(["The sky is blue."] * 40)
    rows = chat_rows(20, seed=1) + [
        {"messages": [{"role": "user", "content": "Tell me everything."}, {"role": "assistant", "content": long_reply}]}
    ]
    path = write_jsonl(tmp_path / "long.jsonl", rows)
    res = tunesmith.finetune(_config(tiny_lm, (path, val), tmp_path / "run", train={"epochs": 1}), quiet=False)
    err = capsys.readouterr().err
    assert "1 were dropped" in err and "model.max_length" in err
    m = json.loads((res.out / "metrics.json").read_text())
    assert m["length_cuts"][str(path)]["dropped"] == 1
    assert "dropped" in (res.out / "report.html").read_text()


def test_the_chat_command_streams_replies_keeps_the_conversation_and_resets(
    tiny_lm, chat_data, tmp_path, monkeypatch, capsys
):
    import io

    from tunesmith.cli import main

    res = tunesmith.finetune(_config(tiny_lm, chat_data, tmp_path / "run", train={"epochs": 1}), quiet=True)
    turns = "What colour is the sky?\nAnd the grass?\n/reset\nWhat colour is the sky?\n/exit\nnever read\n"
    monkeypatch.setattr("sys.stdin", io.StringIO(turns))
    capsys.readouterr()  # what training printed
    assert main(["chat", str(res.out), "--system", "Answer briefly."]) == 0
    out = capsys.readouterr()
    assert "(conversation reset)" in out.err
    system = {"role": "system", "content": "Answer briefly."}
    ask = {"role": "user", "content": "What colour is the sky?"}
    predictor = tunesmith.load(res.out)
    first = predictor.predict([[system, ask]])[0]["text"]
    so_far = [system, ask, {"role": "assistant", "content": first}] if first else [system]  # an empty reply is dropped
    second = predictor.predict([[*so_far, {"role": "user", "content": "And the grass?"}]])[0]["text"]

    # the streamed replies, in order: the second turn sees the first; after /reset the conversation starts over
    # (compared without spacing, and without the replacement characters a random model's broken UTF-8 byte
    # tokens decode to, which depend on where a stream splits them)
    def same(text):
        return "".join(text.replace("\ufffd", "").split())

    assert same(out.out) == same(first + second + first)


def test_packing_gives_the_loss_of_one_conversation_per_row(tiny_lm, chat_data):
    from tunesmith.modalities.conversations import read_conversations
    from tunesmith.testing import task_and_model

    train = read_conversations(chat_data[0])
    task, model = task_and_model("chat", tiny_lm, train, model={"max_length": 96}, chat={"packing": True})
    model.eval()
    rows = task.encode(train.subset(range(8)))
    packed = task.collate(rows)
    assert packed["input_ids"].shape[0] < len(rows) and "attention_mask" not in packed
    task.options["packing"] = False
    padded = task.collate(rows)
    with torch.no_grad():
        a, b = task.compute_loss(model, packed)["loss"], task.compute_loss(model, padded)["loss"]
    assert torch.allclose(a, b, atol=1e-5)


def test_a_lora_run_exports_merged_weights_transformers_generates_the_same_from(tiny_lm, chat_data, tmp_path):
    from tunesmith.export.merge import export_merged
    from tunesmith.formats import pipeline_outputs

    res = tunesmith.finetune(_config(tiny_lm, chat_data, tmp_path / "run"), quiet=True)
    r = export_merged(res.out, tmp_path / "merged")
    assert r["pipeline_loads"] and max(r["max_abs_logit_diff"].values()) == 0  # not one reply differs
    predictor = tunesmith.load(tmp_path / "merged")
    asks = ["What colour is the lemon?", [{"role": "user", "content": "Which colour has the rose?"}]]
    theirs = pipeline_outputs(tmp_path / "merged", predictor.task, predictor.modality, asks)
    assert theirs == predictor.task.parity_view(tunesmith.load(res.out).outputs(asks))


def test_a_model_that_is_not_a_causal_lm_is_refused_naming_what_applies(tiny_bert, chat_data, tmp_path):
    from tunesmith.errors import ModelError

    with pytest.raises(ModelError, match="not a model tunesmith can use for this task.*causal language model"):
        tunesmith.finetune(_config(tiny_bert, chat_data, tmp_path / "r"), quiet=True)


def test_a_guard_set_is_scored_before_and_after_and_forgetting_warns(tiny_lm, chat_data, tmp_path):
    guard = write_jsonl(tmp_path / "guard.jsonl", chat_rows(6, seed=7, ask="Do you know the colour of the {}?"))
    cfg = _config(tiny_lm, chat_data, tmp_path / "run", data={"guard": str(guard)}, train={"epochs": 1})
    res = tunesmith.finetune(cfg, quiet=True)
    m = json.loads((res.out / "metrics.json").read_text())
    g = m["guard"]
    assert g["loss_before"] == pytest.approx(m["before_finetuning"]["guard"]["loss"]) and g["source"] == str(guard)
    assert g["loss_increase"] == pytest.approx(g["loss_after"] - g["loss_before"])
    assert "Guard set" in (res.out / "report.html").read_text() and "Guard set" in (res.out / "README.md").read_text()
    summary, warning = tunesmith.load(res.out).task.guard_check("g.jsonl", {"loss": 1.0}, {"loss": 1.3})
    assert summary["forgetting"] and "forgetting general conversation" in warning
    assert tunesmith.load(res.out).task.guard_check("g.jsonl", {"loss": 1.0}, {"loss": 1.05})[1] is None


def test_the_chat_command_refuses_a_run_that_does_not_converse(tiny_bert, sentiment_csv, tmp_path, capsys):
    from conftest import base_config

    from tunesmith.cli import main

    res = tunesmith.finetune(base_config(tiny_bert, sentiment_csv, tmp_path / "cls", epochs=1), quiet=True)
    assert main(["chat", str(res.out)]) == 2
    assert "text-classification run: it does not answer conversations" in capsys.readouterr().err
