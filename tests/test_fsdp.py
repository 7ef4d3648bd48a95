"""Sharded training (train.distributed fsdp, FSDP2) on CPU processes (gloo): 2 processes really hold half of
every weight each, and train the model one process trains (the tiny text model of test_distributed.py);
gradient accumulation keeps its gradients local until the step; a rank's SIGKILL resumes exactly; what
sharding cannot follow is refused."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tunesmith.testing import make_tiny_bert, sentiment_rows, write_csv

pytestmark = pytest.mark.slow

KILL_AT_STEP = 6
FSDP = ("--set", "train.distributed=fsdp")

# `tunesmith ARGS` in each process, writing what sharding left this process to hold to argv[1]-RANK.json.
_RECORD_SHARDS = """
import json, os, sys
from pathlib import Path
import tunesmith.training.sharding as sharding
from tunesmith.cli import main

record, argv = sys.argv[1], sys.argv[2:]
shard = sharding.shard

def recorded(model, device, world):
    total = sum(p.numel() for p in model.parameters())
    held = shard(model, device, world)
    local = sum(p.to_local().numel() for p in model.parameters())
    kinds = sorted({type(p).__name__ for p in model.parameters()})
    held_by = dict(total=total, held=held, local=local, kinds=kinds)
    Path(f"{record}-{os.environ['RANK']}.json").write_text(json.dumps(held_by))
    return held

sharding.shard = recorded
sys.exit(main(argv))
"""

# rank 1 SIGKILLs itself once the checkpoint of step argv[1] is on disk (as in test_distributed.py).
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


@pytest.fixture(scope="module")
def example(tmp_path_factory):
    root = tmp_path_factory.mktemp("fsdp")
    model = make_tiny_bert(root / "bert", pooling="mean", dropout=0.0)  # no dropout: rows' split does not matter
    train = write_csv(root / "train.csv", sentiment_rows(101, seed=1))  # 13 batches of 8: the last has 5 rows
    val = write_csv(root / "val.csv", sentiment_rows(41, seed=2))
    return root, model, train, val


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


def assert_same_model(run: Path, ref: Path) -> None:
    m, r = metrics(run), metrics(ref)
    assert [h["step"] for h in m["history"]] == [h["step"] for h in r["history"]]
    for h, g in zip(m["history"], r["history"]):
        assert h["train_loss"] == pytest.approx(g["train_loss"], abs=1e-5)
        assert h["loss"] == pytest.approx(g["loss"], abs=1e-5)
    assert m["validation"]["n"] == r["validation"]["n"] == 41
    assert m["validation"]["accuracy"] == pytest.approx(r["validation"]["accuracy"])
    w, v = weights(run), weights(ref)
    assert w.keys() == v.keys()
    assert max((w[k] - v[k]).abs().max().item() for k in w) < 1e-4


@pytest.fixture(scope="module")
def one_and_fsdp(example):
    """The same run trained by one process, and sharded over two (recording what each process held)."""
    root = example[0]
    one, sharded = root / "one", root / "fsdp"
    r = tunesmith(args(example, one), env(example))
    assert r.returncode == 0, r.stderr
    r = torchrun(_RECORD_SHARDS, [str(root / "held"), *args(example, sharded, *FSDP)], env(example))
    assert r.returncode == 0, r.stderr
    return one, sharded


def test_two_sharded_processes_train_what_one_trains(example, one_and_fsdp):
    one, sharded = one_and_fsdp
    held = [json.loads((example[0] / f"held-{rank}.json").read_text()) for rank in (0, 1)]
    for h in held:  # every parameter a DTensor; each process holds about half of every one (odd sizes: +1)
        assert h["kinds"] == ["DTensor"]
        assert h["held"] == h["local"] < 0.6 * h["total"]
    assert held[0]["held"] + held[1]["held"] == held[0]["total"]
    assert metrics(sharded)["train"]["samples"] == metrics(one)["train"]["samples"]
    assert metrics(sharded)["train"]["tokens"] == metrics(one)["train"]["tokens"]
    assert_same_model(sharded, one)
    # the saved run is an ordinary one: it reloads and scores as it reported
    import tunesmith

    again = tunesmith.evaluate(sharded, example[3])
    assert again["accuracy"] == pytest.approx(metrics(sharded)["validation"]["accuracy"])


def test_gradient_accumulation_syncs_at_the_step_only(example, tmp_path):
    accum = ("--set", "train.grad_accum=2")
    one, sharded = tmp_path / "one", tmp_path / "fsdp"
    assert tunesmith(args(example, one, *accum), env(example)).returncode == 0
    r = tunesmith(args(example, sharded, *accum, *FSDP, "--processes", "2"), env(example))
    assert r.returncode == 0, r.stderr
    assert_same_model(sharded, one)


def test_sigkill_of_one_process_resumes_exactly(example, one_and_fsdp, tmp_path):
    _, sharded = one_and_fsdp
    out = tmp_path / "killed"
    r = torchrun(_KILL_RANK_1, [str(KILL_AT_STEP), *args(example, out, *FSDP)], env(example))
    assert r.returncode != 0 and not (out / "metrics.json").exists()
    assert (out / "checkpoints" / f"step-{KILL_AT_STEP:08d}").is_dir()
    # resuming a sharded run's checkpoint without sharding is refused, naming the setting
    r = tunesmith(args(example, out, "--resume", "--processes", "2"), env(example))
    assert r.returncode != 0 and "train.distributed" in r.stderr, r.stderr
    r = tunesmith(args(example, out, "--resume", "--processes", "2", *FSDP), env(example))
    assert r.returncode == 0, r.stderr
    resumed, ref = metrics(out), metrics(sharded)
    assert resumed["train"]["resumed_from_step"] == KILL_AT_STEP
    assert resumed["history"] == ref["history"] and resumed["validation"] == ref["validation"]
    w_ref, w_res = weights(sharded), weights(out)
    assert all(torch.equal(w_ref[k], w_res[k]) for k in w_ref)


def test_a_changing_trainable_set_is_refused(example, tmp_path):
    r = tunesmith(args(example, tmp_path / "gradual", *FSDP, "--strategy", "gradual", "--processes", "2"), env(example))
    assert r.returncode != 0 and "changes which weights train during the run" in r.stderr, r.stderr


def test_one_process_trains_as_without_sharding(example, one_and_fsdp, tmp_path):
    one, _ = one_and_fsdp
    out = tmp_path / "alone"
    r = tunesmith(args(example, out, *FSDP), env(example))
    assert r.returncode == 0, r.stderr
    assert metrics(out)["history"] == metrics(one)["history"]
    w, v = weights(out), weights(one)
    assert all(torch.equal(w[k], v[k]) for k in w)
