"""A SIGKILLed run continues with --resume and ends exactly where an uninterrupted run ends: every
registered task (its own tiny example) under full fine-tuning and LoRA, and every registered strategy
on the default task. The kill is deterministic: the training process kills itself with SIGKILL right after
it has written the checkpoint of a given step, so no wall-clock deadline can be missed on a loaded
machine and the run can never finish before it is killed."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tunesmith.config import RunConfig
from tunesmith.strategies import STRATEGIES
from tunesmith.tasks import TASKS

DEFAULT_TASK = RunConfig.model_fields["task"].default
KILL_AT_STEP = 3

# Runs `tunesmith train ARGS` and SIGKILLs the process once the checkpoint of step argv[1] is on disk.
_KILLER = """
import os, signal, sys
import tunesmith.training.loop as loop
from tunesmith.cli import main

kill_at, write = int(sys.argv[1]), loop.save_checkpoint

def write_then_die(root, step, *args, **kwargs):
    path = write(root, step, *args, **kwargs)
    if step >= kill_at:
        os.kill(os.getpid(), signal.SIGKILL)
    return path

loop.save_checkpoint = write_then_die
sys.exit(main(sys.argv[2:]))
"""


# Runs `tunesmith train ARGS` and SIGKILLs the process once a solved head (head-only) has its solution,
# before the run folder is written: what a resumed solved run has to redo.
_KILL_AFTER_SOLVE = """
import os, signal, sys
import tunesmith.api as api
from tunesmith.cli import main

solve = api.solve_head

def solve_then_die(*args, **kwargs):
    solve(*args, **kwargs)
    os.kill(os.getpid(), signal.SIGKILL)

api.solve_head = solve_then_die
sys.exit(main(sys.argv[1:]))
"""


def _flat(tree: dict, prefix: str = "") -> list[str]:
    out = []
    for k, v in tree.items():
        out += _flat(v, f"{prefix}{k}.") if isinstance(v, dict) else [f"{prefix}{k}={json.dumps(v)}"]
    return out


def train_args(task: str, ex, out: Path, strategy: str, *extra: str) -> list[str]:
    args = [
        "train",
        "--task",
        task,
        "--model",
        str(ex.model),
        "--data",
        str(ex.train),
        "--validation-data",
        str(ex.validation),
        "--out",
        str(out),
        "--strategy",
        strategy,
        "--epochs",
        "3",
        "--batch-size",
        "8",
        "--lr",
        "1e-3",
        "--seed",
        "3",
        "--precision",
        "fp32",
        "--quiet",
        "--set",
        "train.checkpoint_every=3",
        "--set",
        "train.eval_every=5",
        "--set",
        "train.threads=1",
        "--set",
        "train.early_stopping_patience=null",
    ]
    for item in _flat(ex.config):
        args += ["--set", item]
    return args + list(extra)


def env(tmp_path: Path) -> dict:
    return {**os.environ, "TUNESMITH_CACHE": str(tmp_path / "cache")}


def run_killed(args: list[str], out: Path, environ: dict, step: int = KILL_AT_STEP) -> None:
    """Run `tunesmith ARGS`, killed by SIGKILL right after its checkpoint of `step` is written."""
    r = subprocess.run([sys.executable, "-c", _KILLER, str(step), *args], env=environ, capture_output=True, text=True)
    assert r.returncode == -signal.SIGKILL, r.stderr
    assert (out / "checkpoints" / f"step-{step:08d}").is_dir() and not (out / "metrics.json").exists()


def tunesmith_cli(args: list[str], environ: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tunesmith", *args], env=environ, capture_output=True, text=True)


def assert_same_run(ref: Path, out: Path) -> None:
    m_ref = json.loads((ref / "metrics.json").read_text())
    m_res = json.loads((out / "metrics.json").read_text())
    assert m_res["train"]["resumed_from_step"] == KILL_AT_STEP
    assert m_res["history"] == m_ref["history"]
    assert m_res["validation"] == m_ref["validation"]
    weight_files = sorted(p.name for p in ref.glob("*.safetensors"))
    assert weight_files and weight_files == sorted(p.name for p in out.glob("*.safetensors"))
    for name in weight_files:
        w_ref, w_res = load_file(str(ref / name)), load_file(str(out / name))
        assert w_ref.keys() == w_res.keys()
        for k in w_ref:
            assert torch.equal(w_ref[k], w_res[k]), (name, k)


def _slow(task, strategy, extra=()):
    return pytest.param(task, strategy, extra, marks=pytest.mark.slow)


# The default suite resumes every task's full run, the default task's LoRA, a stepped head and a
# gradual unfreeze killed after one joined; the rest of the matrix runs with -m slow.
RESUME_CASES = (
    [(task, "full", ()) for task in TASKS.names()]
    + [(DEFAULT_TASK, "lora", ())]
    + [_slow(task, "lora") for task in TASKS.names() if task != DEFAULT_TASK]
    + [
        _slow(DEFAULT_TASK, s)
        for s in STRATEGIES.names()
        if s not in ("full", "lora") and not STRATEGIES.get(s).uses_feature_cache and STRATEGIES.get(s).defaults
    ]
    + [(DEFAULT_TASK, "head-only", ("--set", "strategy.solver=sgd"))]  # a solved head has no steps to resume
    + [(DEFAULT_TASK, "gradual", ("--set", "strategy.unfreeze_every_steps=2"))]  # killed after one joined
)


@pytest.mark.parametrize(
    "task,strategy,extra", RESUME_CASES, ids=lambda v: v if isinstance(v, str) else "-".join(v)[6:]
)
def test_resume_after_sigkill_matches_uninterrupted(task, strategy, extra, task_examples, tmp_path):
    from tunesmith.cli import main

    ex = task_examples(task)
    environ = env(tmp_path)
    ref, out = tmp_path / "ref", tmp_path / "killed"
    assert main(train_args(task, ex, ref, strategy, *extra)) == 0  # the uninterrupted run, in this process
    run_killed(train_args(task, ex, out, strategy, *extra), out, environ)
    done = tunesmith_cli(train_args(task, ex, out, strategy, *extra, "--resume"), environ)
    assert done.returncode == 0, done.stderr
    assert_same_run(ref, out)


def test_an_unfinished_run_is_protected_and_resumes_only_its_own_config(task_examples, tmp_path):
    ex = task_examples(DEFAULT_TASK)
    out, environ = tmp_path / "run", env(tmp_path)
    run_killed(train_args(DEFAULT_TASK, ex, out, "full"), out, environ)
    # Without --resume the unfinished folder is protected.
    blocked = tunesmith_cli(train_args(DEFAULT_TASK, ex, out, "full"), environ)
    assert blocked.returncode != 0 and "--resume" in blocked.stderr
    changed = train_args(DEFAULT_TASK, ex, out, "full", "--resume")
    changed[changed.index("--lr") + 1] = "5e-4"
    r = tunesmith_cli(changed, environ)
    assert r.returncode == 2 and "train.lr" in r.stderr and "Traceback" not in r.stderr


def test_a_solved_head_killed_before_saving_resumes_to_the_identical_run(task_examples, tmp_path):
    """A solved head (head-only's default) has no steps to checkpoint: --resume solves it again, from the
    cached features, to the same solution the uninterrupted run saved."""
    from tunesmith.cli import main

    ex = task_examples(DEFAULT_TASK)
    environ = env(tmp_path)
    ref, out = tmp_path / "ref", tmp_path / "killed"

    def args(folder: Path, *extra: str) -> list[str]:
        a = train_args(DEFAULT_TASK, ex, folder, "head-only", *extra)
        for flag in ("--epochs", "--lr"):  # a solved head has neither
            i = a.index(flag)
            del a[i : i + 2]
        return a

    assert main(args(ref)) == 0
    killer = [sys.executable, "-c", _KILL_AFTER_SOLVE, *args(out)]
    r = subprocess.run(killer, env=environ, capture_output=True, text=True)
    assert r.returncode == -signal.SIGKILL, r.stderr
    assert (out / "run_config.yaml").is_file() and not (out / "metrics.json").exists()
    done = tunesmith_cli(args(out, "--resume"), environ)
    assert done.returncode == 0, done.stderr
    m_ref, m_res = (json.loads((d / "metrics.json").read_text()) for d in (ref, out))
    assert m_res["train"]["head_solver"]["C"] == m_ref["train"]["head_solver"]["C"]
    assert m_res["history"] == m_ref["history"] and m_res["validation"] == m_ref["validation"]
    assert m_res["train"]["feature_cache_hit"] == 1.0  # the killed run's features were kept
    for name in sorted(p.name for p in ref.glob("*.safetensors")):
        w_ref, w_res = load_file(str(ref / name)), load_file(str(out / name))
        assert w_ref.keys() == w_res.keys() and all(torch.equal(w_ref[k], w_res[k]) for k in w_ref), name
