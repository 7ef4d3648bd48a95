"""A bf16 run trains in bf16 for every task (also where a task's loss calls its backbone directly,
as speech recognition does), and the scores it reports are the scores its saved model gives through
`tunesmith.evaluate` (full precision, like `predict` and transformers.pipeline), head-only's cached
features included."""

from __future__ import annotations

import contextlib

import torch
from speech_helpers import speech_config

import tunesmith


def _dtypes_seen_in_training(module_cls, run):
    seen = []
    original = module_cls.forward

    def spy(self, *a, **k):
        out = original(self, *a, **k)
        if self.training:
            t = out[0] if isinstance(out, tuple) else out
            seen.append(t.dtype)
        return out

    module_cls.forward = spy
    try:
        res = run()
    finally:
        module_cls.forward = original
    return res, seen


def test_speech_recognition_trains_in_bf16_and_reports_what_the_saved_model_scores(
    tiny_asr_whisper, speech_tables, tmp_path
):
    from transformers.models.whisper import modeling_whisper

    train, val = speech_tables
    cfg = speech_config(tiny_asr_whisper, train, tmp_path / "run", val, epochs=1, precision="bf16")
    res, seen = _dtypes_seen_in_training(modeling_whisper.WhisperAttention, lambda: tunesmith.finetune(cfg, quiet=True))
    assert seen and set(seen) == {torch.bfloat16}, set(seen)
    again = tunesmith.evaluate(res.out, val, text_column="transcript", compare_base=False)
    assert (again["wer"], again["cer"]) == (res.metrics["wer"], res.metrics["cer"])


def test_head_only_in_bf16_reports_what_the_saved_model_scores(
    tiny_bert_mean, sentiment_csv, sentiment_test_csv, tmp_path
):
    """head-only trains on cached features; those of the splits it scores are computed in full
    precision, so its reported test loss is the saved model's."""
    import torch.nn.functional as F
    from conftest import base_config

    from tunesmith.api import saved_data_config

    cfg = base_config(tiny_bert_mean, sentiment_csv, tmp_path / "run", precision="bf16", epochs=40, lr=0.2)
    cfg["strategy"] = {"name": "head-only", "solver": "sgd"}  # bf16 features, trained head
    cfg["data"]["test"] = str(sentiment_test_csv)
    res = tunesmith.finetune(cfg, quiet=True)
    predictor = tunesmith.load(res.out)
    ex = predictor.modality.read(str(sentiment_test_csv), saved_data_config(res.out), "test")
    rows = predictor.task.encode(ex)
    logits = torch.as_tensor(predictor.task.evaluate(predictor.model, rows, 64, contextlib.nullcontext).logits)
    refs = torch.tensor([predictor.task.label2id[y] for y in ex.labels])
    saved_loss = F.cross_entropy(logits.float(), refs).item()
    # bf16 features left it 8.7e-6 off here (their matmuls round; the final norm is fp32 either way)
    assert abs(res.test_metrics["loss"] - saved_loss) < 1e-6, (res.test_metrics["loss"], saved_loss)
