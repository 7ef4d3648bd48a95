"""Training throughput of 1 process against N processes on this machine, like for like.

The same full fine-tuning of the shipped MiniLM (rotten-tomatoes reviews, bench/quality_setup.sh's data;
a synthetic sentiment set where it is missing), the same global batch (train.batch_size 32), the same
cores: one process with --cores threads, then --processes N each with cores / N threads (`tunesmith
train --processes N`: torch.distributed over gloo on CPU). On a 2-core machine no gain is expected: the
cores are the limit, and N processes add the gradient all-reduce and N copies of the model. The point is
that it runs, what it costs here, and that both train the same model (validation scores side by side).

Samples/s is the run's own figure (metrics.json train.train_samples_per_second: training rows over the
training loop's seconds, on the main process); wall is the whole command (process start, data, model).

On a GPU machine (not lent to this project's sessions so far) the issue also asks for 1-GPU full
fine-tuning MFU of a 100M+ parameter model: not measured here; the table says so.

    python bench/scale.py                    # 1024 training rows, 1 epoch, fp32 and bf16
    python bench/scale.py --rows 256 --precisions fp32   # a quick look

Results: stdout and bench/results/scale.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = Path("/tmp/qb/data/rotten-tomatoes")


def data(work: Path, rows: int) -> tuple[Path, Path, str]:
    import pandas as pd

    work.mkdir(parents=True, exist_ok=True)
    if (DATA / "train.csv").is_file():
        train = pd.read_csv(DATA / "train.csv").sample(frac=1.0, random_state=0).head(rows)
        val = pd.read_csv(DATA / "val.csv").head(256)
        source = f"rotten-tomatoes ({DATA})"
    else:
        from tunesmith.testing import sentiment_rows

        train, val = pd.DataFrame(sentiment_rows(rows, seed=1)), pd.DataFrame(sentiment_rows(256, seed=2))
        source = "synthetic sentiment rows (tunesmith.testing); run bench/quality_setup.sh for real reviews"
    train.to_csv(work / "train.csv", index=False)
    val.to_csv(work / "val.csv", index=False)
    return work / "train.csv", work / "val.csv", source


def run(train: Path, val: Path, out: Path, processes: int, threads: int, precision: str, epochs: int) -> dict:
    args = [
        sys.executable, "-m", "tunesmith", "train", "--task", "text-classification", "--model", "minilm",
        "--data", str(train), "--validation-data", str(val), "--text-column", "text", "--label-column", "label",
        "--strategy", "full", "--epochs", str(epochs), "--batch-size", "32", "--precision", precision,
        "--seed", "0", "--out", str(out), "--overwrite", "--quiet",
        "--set", "train.early_stopping_patience=null", "--set", "model.max_length=128",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "TOKENIZERS_PARALLELISM": "false"}
    if processes > 1:
        args += ["--processes", str(processes)]
    else:
        args += ["--set", f"train.threads={threads}"]
    t0 = time.perf_counter()
    r = subprocess.run(args, env=env, capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        return {"error": r.stderr.strip().splitlines()[-5:], "wall_s": wall}
    m = json.loads((out / "metrics.json").read_text())
    return {
        "samples_per_s": m["train"]["train_samples_per_second"],
        "train_s": m["train"]["train_seconds"],
        "wall_s": wall,
        "val_accuracy": m["validation"]["accuracy"],
        "val_loss": m["validation"]["loss"],
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1024)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--cores", type=int, default=len(os.sched_getaffinity(0)))
    ap.add_argument("--precisions", nargs="+", default=["fp32", "bf16"])
    ap.add_argument("--work", type=Path, default=Path("/tmp/tunesmith-bench-scale"))
    a = ap.parse_args()
    train, val, source = data(a.work, a.rows)
    rows = []
    for precision in a.precisions:
        for n in (1, a.processes):
            threads = max(1, a.cores // n)
            r = run(train, val, a.work / f"run-{precision}-{n}", n, threads, precision, a.epochs)
            rows.append({"precision": precision, "processes": n, "threads_each": threads, **r})
            print(json.dumps(rows[-1]), flush=True)
    lines = [
        "# Training throughput: 1 process vs N processes (bench/scale.py)",
        "",
        f"`python bench/scale.py --rows {a.rows} --epochs {a.epochs} --processes {a.processes}` on "
        f"{platform.processor() or platform.machine()}, {a.cores} cores; {time.strftime('%Y-%m-%d')}.",
        f"MiniLM full fine-tuning, global batch 32, {a.rows} training rows of {source}, max_length 128.",
        "",
        "| precision | processes x threads | samples/s (training loop) | wall s (whole command) | val accuracy | "
        "val loss |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['precision']} | {r['processes']} x {r['threads_each']} | failed: {r['error'][-1]} |")
            continue
        lines.append(
            f"| {r['precision']} | {r['processes']} x {r['threads_each']} | {r['samples_per_s']:.1f} | "
            f"{r['wall_s']:.1f} | {r['val_accuracy']:.4f} | {r['val_loss']:.4f} |"
        )
    lines += [
        "",
        "GPU (1-GPU full fine-tuning MFU of a 100M+ parameter model, goal 40% bf16): not measured, no GPU was lent "
        "to the session that ran this.",
    ]
    out = ROOT / "bench" / "results" / "scale.md"
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))
    return 1 if any("error" in r for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
