"""Sharded training (train.distributed fsdp, FSDP2) on CPU processes (gloo): 2 processes really hold half of
every weight each, and train the model one process trains (the tiny text model of test_distributed.py);
gradient accumulation keeps its gradients local until the step; a rank's SIGKILL resumes exactly; what
sharding cannot follow is refused."""

import json
from pathlib import Path

import pytest
import torch

# the tiny example, its command line and the ways of launching it: test_distributed.py's
from test_distributed import _KILL_RANK_1, KILL_AT_STEP, args, env, make_example, metrics, torchrun, tunesmith, weights

pytestmark = pytest.mark.slow

FSDP = ("--set", "train.distributed=fsdp")


@pytest.fixture(scope="module")
def example(tmp_path_factory):
    return make_example(tmp_path_factory.mktemp("fsdp"))


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
