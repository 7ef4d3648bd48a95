"""data.streaming: peak RSS at 1x and 10x the rows, streamed and in memory.

A synthetic sentiment table (Parquet) at `--rows` and at `--factor` times as many, each trained for one
epoch with a tiny random BERT by `tunesmith train` in a fresh child process; the child's own peak RSS comes
from os.wait4 (its rusage alone, not the maximum over every child so far). The streamed path runs twice per
size: the first run tokenises into the cache, the second (--warm) reads it. A child that only imports what `train`
imports gives the floor every run stands on. Target: streamed, 10x the rows under 1.2x the peak RSS.

    python bench/streaming.py                  # 20k and 200k rows -> bench/results/streaming.md
    python bench/streaming.py --rows 2000      # a quick look
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def run_child(cmd: list[str], env: dict) -> tuple[float, float, str]:
    """-> (peak RSS in MiB, wall seconds, the last lines of its output) of one child process."""
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=ROOT)
    out = p.stdout.read().decode(errors="replace")
    _, status, usage = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit(f"failed ({p.returncode}): {' '.join(cmd)}\n{out[-3000:]}")
    return usage.ru_maxrss / 1024, wall, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=20_000)
    ap.add_argument("--factor", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=1024)
    ap.add_argument(
        "--validation-rows",
        type=int,
        default=2000,
        help="a validation file of this many rows at every size (0: split 10%% off the training rows, whose "
        "evaluation then grows with them: its bootstrap intervals alone hold 200 x rows float64 weights)",
    )
    ap.add_argument("--warm", action="store_true", help="also a second streamed run per size, reading the cache")
    ap.add_argument("--work", type=Path, default=ROOT / "runs" / "bench-streaming")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "streaming.md")
    args = ap.parse_args()

    from tunesmith.testing import make_tiny_bert, sentiment_rows

    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    model = make_tiny_bert(args.work / "tiny-bert", pooling="mean")
    sizes = {"1x": args.rows, f"{args.factor}x": args.rows * args.factor}
    data = {}
    for name, n in sizes.items():
        data[name] = args.work / f"train_{name}.parquet"
        pd.DataFrame(sentiment_rows(n, seed=1)).to_parquet(data[name], row_group_size=50_000)
    validation = ""
    if args.validation_rows:
        pd.DataFrame(sentiment_rows(args.validation_rows, seed=2)).to_parquet(args.work / "val.parquet")
        validation = f"data: {{validation: {args.work / 'val.parquet'}}}\n"
    cfg = args.work / "cfg.yaml"
    cfg.write_text(
        f"model: {{name: {model}, max_length: 32}}\n"
        f"train: {{epochs: 1, batch_size: {args.batch_size}, lr: 0.002, precision: fp32, seed: 0}}\n"
        "strategy: {name: full}\n" + validation,
        encoding="utf-8",
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TUNESMITH_CACHE": str(args.work / "cache")}
    floor, _, _ = run_child([sys.executable, "-c", "import tunesmith.cli, tunesmith.api, transformers"], env)

    results = []  # (path, size, rows, run, peak MiB, seconds)
    runs = [("streamed", "tokenises"), *([("streamed", "cache read")] if args.warm else []), ("in memory", "")]
    for name, n in sizes.items():
        for path, note in runs:
            cmd = ["-m", "tunesmith", "train", "-c", str(cfg), "--data", str(data[name]), "--quiet", "--overwrite"]
            cmd += ["--out", str(args.work / "runs" / f"{path.replace(' ', '-')}-{name}")]
            if path == "streamed":
                cmd += ["--set", "data.streaming=true"]
            peak, wall, _ = run_child([sys.executable, *cmd], env)
            results.append((path, name, n, note, peak, wall))
            print(f"{path:>9} {name:>4} {n:>8} rows {note:>10}: peak RSS {peak:7.1f} MiB, {wall:6.1f} s", flush=True)

    def peak(path: str, name: str, note: str) -> float:
        return next(r[4] for r in results if r[0] == path and r[1] == name and r[3] == note)

    big = f"{args.factor}x"
    lines = [
        "# data.streaming: peak RSS against rows",
        "",
        f"`python bench/streaming.py --rows {args.rows} --factor {args.factor} "
        f"--validation-rows {args.validation_rows}{' --warm' * args.warm}` on "
        f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
        f"{time.strftime('%Y-%m-%d')}.",
        "",
        "A synthetic sentiment table (Parquet, 2-9 words a row), one epoch of a tiny random BERT (2 layers,",
        f"32 dims, max_length 32, batch {args.batch_size}, fp32, full fine-tuning), each run `tunesmith train -c",
        "cfg.yaml --data train.parquet [--set data.streaming=true]` in a fresh child process; peak RSS is its own",
        "(os.wait4). A streamed run tokenises into the cache; with --warm a second one per size reads it.",
        (
            f"The validation file is the same {args.validation_rows} rows at every size, so what grows is the "
            "training data alone."
            if args.validation_rows
            else "Validation is 10% of the training rows, so its evaluation grows with them."
        ),
        f"Importing what `train` imports alone peaks at {floor:.0f} MiB: the floor every run stands on.",
        "",
        "| path | size | rows | run | peak RSS (MiB) | above the import floor (MiB) | wall (s) |",
        "|---|---|---:|---|---:|---:|---:|",
    ]
    for path, name, n, note, mib, wall in results:
        lines.append(f"| {path} | {name} | {n:,} | {note or '-'} | {mib:.0f} | {mib - floor:.0f} | {wall:.1f} |")
    lines.append("")
    for path, note in runs:
        ratio = peak(path, big, note) / peak(path, "1x", note)
        above = (peak(path, big, note) - floor) / max(peak(path, "1x", note) - floor, 1e-9)
        what = f"{path}{f' ({note})' if note else ''}"
        lines.append(f"- {what}: {big} the rows takes {ratio:.2f}x the peak RSS ({above:.2f}x above the import floor).")
    target = peak("streamed", big, "tokenises") / peak("streamed", "1x", "tokenises")
    lines += [
        "",
        f"Target (streamed, {big} the rows under 1.2x the peak RSS): {'met' if target < 1.2 else 'NOT met'} "
        f"({target:.2f}x).",
        "",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines), encoding="utf-8")
    print("\n".join(lines))
    shutil.rmtree(args.work, ignore_errors=True)


if __name__ == "__main__":
    main()
