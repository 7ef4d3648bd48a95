"""More than one training process (CPU, gloo): N processes train the run one process trains at the same
global batch, survive a rank's SIGKILL with --resume, score an odd-sized validation set once per row, and
stop cleanly on SIGTERM / SIGINT with a checkpoint. Processes are launched as a user launches them:
`tunesmith train --processes 2`, or torchrun."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tunesmith.testing import make_tiny_bert, sentiment_rows, write_csv

KILL_AT_STEP = 6

# torchrun runs this in each process: `tunesmith ARGS`, where rank 1 SIGKILLs itself once the checkpoint of
# step argv[1] is on disk (after the barrier that follows every checkpoint: the main process has written it).
_KILL_RANK_1 = """
import os, signal, sys
from pathlib import Path
import tunesmith.training.loop as loop
from tunesmith.cli import main

kill_at, argv = int(sys.argv[1]), sys.argv[2:]
out = Path(argv[argv.index("--out") + 1]) / "checkpoints"
barrier = loop.distributed.barrier

def barrier_then_die():
    barrier()
    if os.environ["RANK"] == "1" and (out / f"step-{kill_at:08d}").is_dir():
        os.kill(os.getpid(), signal.SIGKILL)

loop.distributed.barrier = barrier_then_die
sys.exit(main(argv))
"""

# `tunesmith ARGS` in which process RANK argv[2] sends itself signal argv[3] during optimizer step argv[1].
_SIGNAL_AT_STEP = """
import os, signal, sys
from torch.optim.lr_scheduler import LambdaLR
from tunesmith.cli import main

at, rank, signum, argv = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4:]
step, calls = LambdaLR.step, [0]

def signalling_step(self, *a, **k):  # once when made, then once per optimizer step
    calls[0] += 1
    if calls[0] == at + 1 and os.environ.get("RANK", "0") == rank:
        os.kill(os.getpid(), signum)
    return step(self, *a, **k)

LambdaLR.step = signalling_step
sys.exit(main(argv))
"""


def make_example(root: Path) -> tuple[Path, Path, Path, Path]:
    # no dropout: a batch's gradient does not depend on which process computed which rows
    model = make_tiny_bert(root / "bert", pooling="mean", dropout=0.0)
    train = write_csv(root / "train.csv", sentiment_rows(101, seed=1))  # 13 batches of 8: the last has 5 rows
    val = write_csv(root / "val.csv", sentiment_rows(41, seed=2))  # odd: each process would hold a different count
    return root, model, train, val


@pytest.fixture(scope="module")
def example(tmp_path_factory):
    return make_example(tmp_path_factory.mktemp("dist"))


def args(example, out: Path, *extra: str) -> list[str]:
    root, model, train, val = example
    return [
        "train",
        "--task",
        "text-classification",
        "--model",
        str(model),
        "--data",
        str(train),
        "--validation-data",
        str(val),
        "--out",
        str(out),
        "--strategy",
        "full",
        "--epochs",
        "2",
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
        "train.dropout=0",
        "--set",
        "model.max_length=32",
        "--set",
        "train.early_stopping_patience=null",
        "--set",
        "train.checkpoint_every=3",
        "--set",
        "train.threads=1",
        *extra,
    ]


def env(example) -> dict:
    return {**os.environ, "TUNESMITH_CACHE": str(example[0] / "cache"), "OMP_NUM_THREADS": "1"}


def tunesmith(argv: list[str], environ: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tunesmith", *argv], env=environ, capture_output=True, text=True)


def torchrun(script: str, argv: list[str], environ: dict) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    script_file = Path(environ["TUNESMITH_CACHE"]).parent / f"script-{abs(hash(script))}.py"
    script_file.write_text(script)
    return subprocess.run([*cmd, str(script_file), *argv], env=environ, capture_output=True, text=True)


def weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "model.safetensors"))


def metrics(run: Path) -> dict:
    return json.loads((run / "metrics.json").read_text())


@pytest.fixture(scope="module")
def one_and_two(example):
    """The same run trained by one process and by two."""
    root = example[0]
    one, two = root / "one", root / "two"
    for out, extra in ((one, []), (two, ["--processes", "2"])):
        r = tunesmith(args(example, out, *extra), env(example))
        assert r.returncode == 0, r.stderr
    return one, two


def test_two_processes_train_what_one_trains(one_and_two):
    one, two = one_and_two
    m1, m2 = metrics(one), metrics(two)
    # the validation set is scored once per row (41, odd), with the same scores
    assert m2["validation"]["n"] == m1["validation"]["n"] == 41
    assert m2["validation"]["accuracy"] == pytest.approx(m1["validation"]["accuracy"])
    assert [h["step"] for h in m2["history"]] == [h["step"] for h in m1["history"]]
    for h1, h2 in zip(m1["history"], m2["history"]):
        assert h2["train_loss"] == pytest.approx(h1["train_loss"], abs=1e-5)  # both processes' losses
        assert h2["loss"] == pytest.approx(h1["loss"], abs=1e-5)
    assert m2["train"]["samples"] == m1["train"]["samples"] and m2["train"]["tokens"] == m1["train"]["tokens"]
    w1, w2 = weights(one), weights(two)
    assert w1.keys() == w2.keys()
    assert max((w1[k] - w2[k]).abs().max().item() for k in w1) < 1e-4


def test_sigkill_of_one_process_resumes_exactly(example, one_and_two, tmp_path):
    _, two = one_and_two
    out = tmp_path / "killed"
    r = torchrun(_KILL_RANK_1, [str(KILL_AT_STEP), *args(example, out)], env(example))
    assert r.returncode != 0 and not (out / "metrics.json").exists()
    assert (out / "checkpoints" / f"step-{KILL_AT_STEP:08d}").is_dir()
    # another process count is refused, naming both
    r = tunesmith(args(example, out, "--resume"), env(example))
    assert r.returncode == 2 and "run of 2 process(es); this one has 1" in r.stderr, r.stderr
    r = tunesmith(args(example, out, "--resume", "--processes", "2"), env(example))
    assert r.returncode == 0, r.stderr
    resumed, ref = metrics(out), metrics(two)
    assert resumed["train"]["resumed_from_step"] == KILL_AT_STEP
    assert resumed["history"] == ref["history"] and resumed["validation"] == ref["validation"]
    w_ref, w_res = weights(two), weights(out)
    assert all(torch.equal(w_ref[k], w_res[k]) for k in w_ref)


@pytest.mark.parametrize(
    "signum, rank, processes",
    [
        (signal.SIGINT, "0", 1),
        pytest.param(signal.SIGTERM, "1", 2, marks=pytest.mark.slow),  # one process told: all stop together
    ],
)
def test_a_signal_writes_a_checkpoint_and_resume_continues(example, one_and_two, tmp_path, signum, rank, processes):
    reference = one_and_two[processes - 1]
    out = tmp_path / "signalled"
    argv = [str(5), rank, str(int(signum)), *args(example, out)]
    if processes == 1:
        r = subprocess.run(
            [sys.executable, "-c", _SIGNAL_AT_STEP, *argv], env=env(example), capture_output=True, text=True
        )
        assert r.returncode == 128 + signum, r.stderr
    else:
        r = torchrun(_SIGNAL_AT_STEP, argv, env(example))
        assert r.returncode != 0
    assert f"stopped by {signal.Signals(signum).name} at step 5" in r.stderr and "--resume" in r.stderr, r.stderr
    assert (out / "checkpoints" / "step-00000005").is_dir() and not (out / "metrics.json").exists()
    extra = ["--processes", str(processes)] if processes > 1 else []
    r = tunesmith(args(example, out, "--resume", *extra), env(example))
    assert r.returncode == 0, r.stderr
    assert metrics(out)["history"] == metrics(reference)["history"]
    w_ref, w_res = weights(reference), weights(out)
    assert all(torch.equal(w_ref[k], w_res[k]) for k in w_ref)


def test_checkpoints_by_time(example, tmp_path, monkeypatch):
    """train.checkpoint_every_minutes writes a checkpoint whenever that much time has passed, beside the
    per-epoch ones (here: a time so short that every step is due)."""
    import tunesmith.training.loop as loop
    from tunesmith.cli import main

    written, save = [], loop.save_checkpoint

    def counted(root, step, *a, **k):
        written.append(step)
        return save(root, step, *a, **k)

    monkeypatch.setattr(loop, "save_checkpoint", counted)
    monkeypatch.setenv("TUNESMITH_CACHE", str(example[0] / "cache"))
    argv = args(example, tmp_path / "timed", "--set", "train.checkpoint_every=0", "--set", "train.epochs=1")
    assert main([*argv, "--set", "train.checkpoint_every_minutes=1e-9"]) == 0
    assert written == [*range(1, 14), 13]  # every one of the 13 steps by time, then the epoch's own


def test_a_launcher_whose_group_did_not_form_fails_loudly(monkeypatch):
    """WORLD_SIZE says 2 but accelerate joined 1 (its fallback on CPU): each process would train alone on all
    the data, so the run refuses to start."""
    import accelerate

    from tunesmith import distributed
    from tunesmith.errors import ConfigError

    class Alone:
        num_processes = 1

        def __init__(self, *a, **k):
            pass

    monkeypatch.setattr(accelerate, "PartialState", Alone)
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ConfigError, match="each process would train alone on all the data"):
        distributed.state()


@pytest.mark.slow
def test_gradual_unfreezing_with_two_processes(example, tmp_path):
    """Weights unfrozen mid-run are averaged across processes too (the gradient-averaging wrapper is rebuilt
    when the trainable set grows): 2 processes end where 1 does."""
    runs = []
    for n in (1, 2):
        out = tmp_path / f"gradual-{n}"
        extra = ["--strategy", "gradual", "--set", "strategy.unfreeze_every_steps=5"]
        r = tunesmith(args(example, out, *extra, "--processes", str(n)), env(example))
        assert r.returncode == 0, r.stderr
        runs.append(out)
    w1, w2 = weights(runs[0]), weights(runs[1])
    assert max((w1[k] - w2[k]).abs().max().item() for k in w1) < 1e-4
    h1, h2 = metrics(runs[0])["history"], metrics(runs[1])["history"]
    assert [h["loss"] for h in h2] == pytest.approx([h["loss"] for h in h1], abs=1e-5)


def test_processes_pass_sigterm_on_and_exit_with_its_code(example, tmp_path):
    """`--processes 2` under a preemption notice: SIGTERM to the launcher reaches both processes, which write a
    checkpoint and stop; the launcher exits 128 + SIGTERM, saying how to continue."""
    import time

    out = tmp_path / "preempted"
    argv = args(example, out, "--processes", "2", "--set", "train.epochs=30")
    p = subprocess.Popen(
        [sys.executable, "-m", "tunesmith", *argv], env=env(example), stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 120
    while not any((out / "checkpoints").glob("step-*")) and time.monotonic() < deadline and p.poll() is None:
        time.sleep(0.05)
    p.send_signal(signal.SIGTERM)
    _, stderr = p.communicate(timeout=120)
    assert p.returncode == 128 + signal.SIGTERM, stderr
    assert "stopped by SIGTERM" in stderr and "--resume" in stderr and stderr.count("stopped by SIGTERM") == 1
    assert not (out / "metrics.json").exists()
    step = max(int(c.name.split("-")[1]) for c in (out / "checkpoints").glob("step-*"))
    assert step < 30 * 13  # stopped early, at a checkpoint of its own


def _every_task_and_strategy():
    from tunesmith.strategies import STRATEGIES
    from tunesmith.tasks import TASKS

    for task in TASKS.names():
        for strategy in STRATEGIES.names():
            cls = STRATEGIES.get(strategy)
            if cls.uses_feature_cache and not TASKS.get(task).pooled_features:
                continue  # (refused for such a task in any number of processes)
            if cls.defaults:  # (a strategy that chooses, auto, is refused: tested below)
                yield pytest.param(task, strategy, marks=pytest.mark.slow)


@pytest.mark.parametrize("task, strategy", list(_every_task_and_strategy()))
def test_every_task_and_strategy_trains_with_two_processes(task, strategy, tmp_path):
    """Each task's own tiny example under each strategy, as 2 processes: the run finishes and its validation
    split is scored once per row."""
    from test_resume import env as resume_env
    from test_resume import train_args

    from tunesmith.tasks import TASKS

    ex = TASKS.get(task).tiny_example(tmp_path)
    out = tmp_path / "out"
    from tunesmith.strategies import STRATEGIES

    argv = train_args(task, ex, out, strategy, "--processes", "2")
    if STRATEGIES.get(strategy)().solves_head:  # a solved head has neither epochs nor a learning rate
        for flag in ("--epochs", "--lr"):
            i = argv.index(flag)
            del argv[i : i + 2]
    r = tunesmith(argv, resume_env(tmp_path))
    assert r.returncode == 0, r.stderr
    assert metrics(out)["validation"]


def test_a_strategy_that_chooses_is_refused_with_more_processes(example, tmp_path):
    r = tunesmith(args(example, tmp_path / "auto", "--strategy", "auto", "--processes", "2"), env(example))
    assert r.returncode == 2 and "chooses among candidate runs" in r.stderr and r.stderr.count("error:") == 1
