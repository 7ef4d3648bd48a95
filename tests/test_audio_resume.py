"""A SIGKILLed audio-classification run continues with --resume and ends exactly where an uninterrupted
run ends (tests/test_resume.py does this for every strategy on text; here the audio path: Whisper
features, the frozen-position buffer, the LoRA adapters over Whisper attention)."""
import json
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from test_resume import _env, _kill_after_first_checkpoint


def _cmd(model, data, out, strategy, *extra):
    return [sys.executable, "-m", "tunesmith", "train", "--task", "audio-classification", "--model", str(model),
            "--data", str(data), "--out", str(out), "--strategy", strategy, "--epochs", "6", "--batch-size", "4",
            "--lr", "1e-3", "--seed", "3", "--precision", "fp32", "--quiet",
            "--set", "train.checkpoint_every=3", "--set", "train.eval_every=5", "--set", "train.threads=1",
            "--set", "train.early_stopping_patience=null", *extra]


@pytest.mark.parametrize("strategy", ["full", "lora"])
def test_audio_resume_after_sigkill_matches_uninterrupted(strategy, tiny_whisper, audio_folders, tmp_path):
    train, _ = audio_folders
    env = _env(tmp_path)
    ref = tmp_path / "ref"
    subprocess.run(_cmd(tiny_whisper, train, ref, strategy), env=env, check=True, capture_output=True)
    out = tmp_path / "killed"
    _kill_after_first_checkpoint(_cmd(tiny_whisper, train, out, strategy), out, env)
    done = subprocess.run(_cmd(tiny_whisper, train, out, strategy, "--resume"), env=env, capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr
    m_ref = json.loads((ref / "metrics.json").read_text())
    m_res = json.loads((out / "metrics.json").read_text())
    assert m_res["train"]["resumed_from_step"] > 0
    assert m_res["validation"] == m_ref["validation"] and m_res["history"] == m_ref["history"]
    files = sorted(p.name for p in ref.glob("*.safetensors"))
    assert files and files == sorted(p.name for p in out.glob("*.safetensors"))
    for name in files:
        a, b = load_file(str(ref / name)), load_file(str(out / name))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
