"""A SIGKILLed speech-recognition run continues with --resume and ends exactly where an
uninterrupted run ends (weights, history, WER)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from speech_helpers import SENTENCES, make_asr_whisper, write_speech_table
from test_resume import _env, _kill_after_first_checkpoint


def _cmd(model: Path, train: Path, val: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "tunesmith", "train", "--task", "speech-recognition", "--model", str(model),
            "--data", str(train), "--validation-data", str(val), "--audio-column", "audio",
            "--text-column", "transcript", "--out", str(out), "--epochs", "2", "--batch-size", "4", "--lr", "2e-3",
            "--seed", "3", "--precision", "fp32", "--quiet", "--set", "train.checkpoint_every=2",
            "--set", "train.eval_every=3", "--set", "train.threads=1", "--set", "speech.max_new_tokens=6",
            "--set", "train.early_stopping_patience=null", *extra]


@pytest.mark.parametrize("window", [None, 1])  # the model's own window; model.window_seconds=1 on a 2 s model
def test_speech_resume_after_sigkill_matches_uninterrupted(window, tiny_asr_whisper, tmp_path):
    model, extra = tiny_asr_whisper, ()
    if window:
        model, extra = make_asr_whisper(tmp_path / "w2s", window=2), ("--set", f"model.window_seconds={window}")
    train = write_speech_table(tmp_path / "d", SENTENCES * 3, "train.csv")
    val = write_speech_table(tmp_path / "d", SENTENCES[:3], "val.csv", seed=7)
    env = _env(tmp_path)
    ref = tmp_path / "ref"
    subprocess.run(_cmd(model, train, val, ref, *extra), env=env, check=True, capture_output=True)
    out = tmp_path / "killed"
    _kill_after_first_checkpoint(_cmd(model, train, val, out, *extra), out, env)
    done = subprocess.run(_cmd(model, train, val, out, *extra, "--resume"), env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    m_ref, m_res = (json.loads((d / "metrics.json").read_text()) for d in (ref, out))
    assert m_res["train"]["resumed_from_step"] > 0
    assert m_res["history"] == m_ref["history"] and m_res["validation"] == m_ref["validation"]
    w_ref, w_res = load_file(str(ref / "model.safetensors")), load_file(str(out / "model.safetensors"))
    assert w_ref.keys() == w_res.keys()
    for k in w_ref:
        assert torch.equal(w_ref[k], w_res[k]), k
    if window:
        assert json.loads((out / "config.json").read_text())["max_source_positions"] == 50 * window
