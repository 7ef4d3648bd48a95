"""A bf16 run trains in bf16 for every task (also where a task's loss calls its backbone directly,
as speech recognition does), and the scores it reports are the scores its saved model gives through
`tunesmith.evaluate` (full precision, like `predict` and transformers.pipeline)."""
from __future__ import annotations

import torch

import tunesmith
from speech_helpers import speech_config


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


def test_speech_recognition_trains_in_bf16_and_reports_what_the_saved_model_scores(tiny_asr_whisper, speech_tables,
                                                                                   tmp_path):
    from transformers.models.whisper import modeling_whisper

    train, val = speech_tables
    cfg = speech_config(tiny_asr_whisper, train, tmp_path / "run", val, epochs=1, precision="bf16")
    res, seen = _dtypes_seen_in_training(modeling_whisper.WhisperAttention,
                                         lambda: tunesmith.finetune(cfg, quiet=True))
    assert seen and set(seen) == {torch.bfloat16}, set(seen)
    again = tunesmith.evaluate(res.out, val, text_column="transcript", compare_base=False)
    assert (again["wer"], again["cer"]) == (res.metrics["wer"], res.metrics["cer"])

