"""kill -9 soak: one tiny run SIGKILLed again and again at random steps, each time continued with --resume,
must end bit-identical to the same run left alone.

The run (a registered task's tiny example: a random tiny model and its data) checkpoints every
--checkpoint-every steps. For each kill a seeded random target step is drawn; the run is SIGKILLed from
outside as soon as its checkpoints folder shows a step at or past it, so a kill lands wherever the run is
then: mid-step, mid-evaluation, or mid-way through writing the next checkpoint. After the last kill the
run is resumed to the end, and every tensor of its weight files (torch.equal) and its metrics history must
equal those of an uninterrupted run of the same config.

    python bench/soak.py                 # 10 kills, 60 steps
    python bench/soak.py --kills 3 --no-write --work /tmp/soak

Results: stdout, and bench/results/soak.md (unless --no-write).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))


def _flat(tree: dict, prefix: str = "") -> list[str]:
    out = []
    for k, v in tree.items():
        out += _flat(v, f"{prefix}{k}.") if isinstance(v, dict) else [f"{prefix}{k}={json.dumps(v)}"]
    return out


def train_args(task: str, ex, out: Path, a) -> list[str]:
    args = ["train", "--task", task, "--model", str(ex.model), "--data", str(ex.train)]
    args += ["--validation-data", str(ex.validation), "--out", str(out), "--strategy", a.strategy]
    args += ["--epochs", str(a.epochs), "--batch-size", "8", "--lr", "1e-3", "--seed", str(a.seed)]
    args += ["--precision", "fp32", "--quiet"]
    for item in [
        f"train.checkpoint_every={a.checkpoint_every}",
        "train.eval_every=5",
        "train.threads=1",
        "train.early_stopping_patience=null",
        *_flat(ex.config),
    ]:
        args += ["--set", item]
    return args


def newest_step(out: Path) -> int:
    folder = out / "checkpoints"
    steps = [int(p.name[5:]) for p in folder.glob("step-*") if p.name[5:].isdigit()] if folder.is_dir() else []
    return max(steps, default=-1)


def run_until(args: list[str], out: Path, target: int, env: dict) -> dict:
    """Run `tunesmith ARGS` and SIGKILL it once its checkpoints folder shows step >= target."""
    proc = subprocess.Popen([sys.executable, "-m", "tunesmith", *args], env=env, stderr=subprocess.PIPE, text=True)
    while proc.poll() is None:
        if newest_step(out) >= target:
            os.kill(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.005)
    err = proc.communicate()[1]
    if proc.returncode != -signal.SIGKILL:
        return {"target": target, "killed": False, "rc": proc.returncode, "stderr": err[-2000:]}
    temps = sorted(p.name for p in (out / "checkpoints").glob(".tmp-*"))
    return {"target": target, "killed": True, "newest_checkpoint": newest_step(out), "temp_left": bool(temps)}


def same_run(ref: Path, out: Path) -> list[str]:
    """What differs between two finished runs: weight tensors (torch.equal) and metrics history."""
    import torch
    from safetensors.torch import load_file

    diffs = []
    names = sorted(p.name for p in ref.glob("*.safetensors"))
    if not names or names != sorted(p.name for p in out.glob("*.safetensors")):
        diffs.append(f"weight files differ: {names}")
    for name in names:
        a, b = load_file(str(ref / name)), load_file(str(out / name))
        if a.keys() != b.keys():
            diffs.append(f"{name}: tensor names differ")
        diffs += [f"{name}: {k} differs" for k in a if k in b and not torch.equal(a[k], b[k])]
    m_ref, m_out = (json.loads((d / "metrics.json").read_text()) for d in (ref, out))
    if m_ref["history"] != m_out["history"]:
        diffs.append("metrics.json history differs")
    if m_ref["validation"] != m_out["validation"]:
        diffs.append("validation metrics differ")
    return diffs


def main(argv: list[str] | None = None) -> int:
    from tunesmith.config import RunConfig
    from tunesmith.tasks import TASKS

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", default=RunConfig.model_fields["task"].default)
    ap.add_argument("--strategy", default="full")
    ap.add_argument("--kills", type=int, default=10)
    ap.add_argument("--epochs", type=int, default=5, help="5 epochs of the tiny example: 60 steps")
    ap.add_argument("--checkpoint-every", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0, help="draws the kill steps (and seeds the run)")
    ap.add_argument("--work", type=Path, help="folder for the runs (default: a temp folder, removed after)")
    ap.add_argument("--no-write", action="store_true", help="do not write bench/results/soak.md")
    a = ap.parse_args(argv)

    work = a.work or Path(tempfile.mkdtemp(prefix="tunesmith-soak-"))
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "TUNESMITH_CACHE": str(work / "cache")}
    t0 = time.perf_counter()
    ex = TASKS.get(a.task).tiny_example(work / "example")
    ref, out = work / "uninterrupted", work / "killed"

    r = subprocess.run([sys.executable, "-m", "tunesmith", *train_args(a.task, ex, ref, a)], env=env, text=True)
    if r.returncode != 0:
        print("the uninterrupted run failed", file=sys.stderr)
        return 1
    steps = json.loads((ref / "metrics.json").read_text())["train"]["steps"]
    targets = sorted(random.Random(a.seed).sample(range(1, steps), min(a.kills, steps - 1)))

    kills = []
    for target in targets:
        target = max(target, newest_step(out) + 1)  # each kill after some progress
        if target >= steps:
            break
        resume = ["--resume"] if (out / "run_config.yaml").is_file() else []
        kill = run_until(train_args(a.task, ex, out, a) + resume, out, target, env)
        kills.append(kill)
        print(f"kill {len(kills)}: target step {target}: {kill}", flush=True)
        if not kill["killed"]:
            break
    done = subprocess.run(
        [sys.executable, "-m", "tunesmith", *train_args(a.task, ex, out, a), "--resume"],
        env=env,
        capture_output=True,
        text=True,
    )
    diffs = ["the last --resume failed: " + done.stderr[-2000:]] if done.returncode != 0 else same_run(ref, out)
    killed = [k for k in kills if k["killed"]]
    identical = not diffs and len(killed) == a.kills
    seconds = time.perf_counter() - t0

    cmd = " ".join(["python bench/soak.py", *(sys.argv[1:] if argv is None else argv)])
    lines = [
        "# kill -9 soak",
        "",
        f"`{cmd}` ({seconds:.0f} s in all)",
        "",
        f"One tiny run ({a.task}, {a.strategy}, {steps} steps, a checkpoint every {a.checkpoint_every} steps, "
        f"seed {a.seed}) SIGKILLed {len(killed)} times from outside, as soon as its checkpoints folder showed "
        "the target step, each time continued with `--resume`, then resumed to the end and compared with an "
        "uninterrupted run of the same config.",
        "",
        "| kill | target step | newest checkpoint when killed | killed while writing a checkpoint |",
        "|---:|---:|---:|:--|",
        *(
            f"| {i} | {k['target']} | {k.get('newest_checkpoint', '-')} | "
            f"{'yes (temp folder left)' if k.get('temp_left') else 'no'} |"
            for i, k in enumerate(kills, 1)
        ),
        "",
        f"kills done: {len(killed)} of {a.kills}",
        f"steps killed at: {', '.join(str(k['newest_checkpoint']) for k in killed)}",
        "identical: " + ("yes" if identical else "NO"),
        "",
        "Result: "
        + (
            "every tensor of every weight file is bit-identical (torch.equal), and metrics.json's history and "
            "validation metrics equal the uninterrupted run's."
            if identical
            else "differs: " + "; ".join(diffs or [f"only {len(killed)} of {a.kills} kills landed"])
        ),
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if not a.no_write:
        (HERE / "results").mkdir(exist_ok=True)
        (HERE / "results" / "soak.md").write_text(text, encoding="utf-8")
    if a.work is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())
