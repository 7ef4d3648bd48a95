"""A SIGKILLed run continues with --resume and ends exactly where an uninterrupted run ends."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import sentiment_rows, write_csv
from tunesmith.strategies import STRATEGIES


def _train_cmd(model: Path, data: Path, out: Path, strategy: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "tunesmith", "train", "--model", str(model), "--data", str(data),
            "--out", str(out), "--strategy", strategy, "--epochs", "3", "--batch-size", "8", "--lr", "1e-3",
            "--seed", "3", "--precision", "fp32", "--quiet",
            "--set", "train.checkpoint_every=3", "--set", "train.eval_every=5", "--set", "train.threads=1",
            "--set", "train.early_stopping_patience=null", "--set", "model.max_length=32", *extra]


def _env(tmp_path: Path) -> dict:
    return {**os.environ, "TUNESMITH_CACHE": str(tmp_path / "cache")}


def _kill_after_first_checkpoint(cmd: list[str], out: Path, env: dict) -> None:
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while time.time() < deadline:
        ckpts = list((out / "checkpoints").glob("step-*")) if (out / "checkpoints").is_dir() else []
        if ckpts or proc.poll() is not None:
            break
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "metrics.json").exists(), "the run finished before it could be killed"


RESUME_CASES = [(name, ()) for name in STRATEGIES.names()] + [
    ("gradual", ("--set", "strategy.unfreeze_every_steps=2")),  # killed at step 3: one group had joined
]


@pytest.mark.parametrize("strategy,extra", RESUME_CASES, ids=lambda v: v if isinstance(v, str) else "-".join(v)[6:])
def test_resume_after_sigkill_matches_uninterrupted(tiny_bert_mean, tmp_path, strategy, extra):
    data = write_csv(tmp_path / "train.csv", sentiment_rows(320, seed=5))
    env = _env(tmp_path)
    ref = tmp_path / "ref"
    subprocess.run(_train_cmd(tiny_bert_mean, data, ref, strategy, *extra), env=env, check=True, capture_output=True)

    out = tmp_path / "killed"
    _kill_after_first_checkpoint(_train_cmd(tiny_bert_mean, data, out, strategy, *extra), out, env)
    # Without --resume the unfinished folder is protected.
    blocked = subprocess.run(_train_cmd(tiny_bert_mean, data, out, strategy, *extra), env=env, capture_output=True,
                             text=True)
    assert blocked.returncode != 0 and "--resume" in blocked.stderr
    done = subprocess.run(_train_cmd(tiny_bert_mean, data, out, strategy, *extra, "--resume"), env=env,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr

    m_ref = json.loads((ref / "metrics.json").read_text())
    m_res = json.loads((out / "metrics.json").read_text())
    assert m_res["train"]["resumed_from_step"] > 0
    assert m_res["validation"] == m_ref["validation"]
    assert m_res["history"] == m_ref["history"]
    weight_files = sorted(p.name for p in ref.glob("*.safetensors"))
    assert weight_files and weight_files == sorted(p.name for p in out.glob("*.safetensors"))
    for name in weight_files:
        w_ref, w_res = load_file(str(ref / name)), load_file(str(out / name))
        assert w_ref.keys() == w_res.keys()
        for k in w_ref:
            assert torch.equal(w_ref[k], w_res[k]), (name, k)


def test_resume_refuses_a_changed_config(tiny_bert_mean, tmp_path):
    data = write_csv(tmp_path / "train.csv", sentiment_rows(320, seed=5))
    out = tmp_path / "run"
    env = _env(tmp_path)
    _kill_after_first_checkpoint(_train_cmd(tiny_bert_mean, data, out, "full"), out, env)
    changed = _train_cmd(tiny_bert_mean, data, out, "full", "--resume")
    changed[changed.index("--lr") + 1] = "5e-4"
    r = subprocess.run(changed, env=env, capture_output=True, text=True)
    assert r.returncode == 2 and "train.lr" in r.stderr and "Traceback" not in r.stderr
