"""CheapDropout (tunesmith/training/dropout.py) against torch's own dropout, alone: the same full fine-tuning
run under several seeds with each, for speed and accuracy (issue 17: each change measured alone and held to
the same accuracy within noise over 3 seeds).

all-MiniLM-L6-v2, strategy full, on bench/quality_setup.sh's rotten-tomatoes splits (800 train / 200
validation / 1,000 test), --epochs (2) at lr 5e-5, batch 32, --precision (fp32); "torch" replaces fit's
`use_cheap_dropout` with a no-op. Settings alternate within each seed, each run in its own child process.
samples/s is fit's train_samples_per_second (training steps only).

    python bench/cheap_dropout.py [--seeds 42,43,44] [--precision fp32|bf16] [--data-root /tmp/qb/data]

Results: stdout and bench/results/cheap_dropout[_bf16].{json,md}.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from child_runs import env_versions, wait_for_idle  # noqa: E402  (shared, not copied)

SETTINGS = ("torch", "cheap")


def child(setting: str, seed: int, precision: str, epochs: int, data: Path, out: Path) -> dict:
    sys.path.insert(0, str(ROOT))
    import tunesmith.training.loop as loop
    from tunesmith.api import finetune

    if setting == "torch":
        loop.use_cheap_dropout = lambda model: 0
    cfg = {
        "task": "text-classification",
        "model": {"name": "minilm"},
        "data": {"train": str(data / "train.csv"), "validation": str(data / "val.csv"), "test": str(data / "test.csv")},
        "strategy": {"name": "full"},
        "train": {"epochs": epochs, "lr": 5e-5, "batch_size": 32, "precision": precision, "seed": seed, "threads": 2},
        "out": str(out),
    }
    finetune(cfg, quiet=True)
    m = json.loads((out / "metrics.json").read_text())
    return {
        "setting": setting,
        "seed": seed,
        "samples_per_second": m["train"]["train_samples_per_second"],
        "validation_accuracy": m["validation"]["accuracy"],
        "test_accuracy": m["test"]["accuracy"],
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", default="42,43,44")
    ap.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--data-root", default="/tmp/qb/data")
    ap.add_argument("--max-wait", type=float, default=120)
    ap.add_argument("--one", nargs=2, help=argparse.SUPPRESS)  # child: SETTING SEED
    ap.add_argument("--json", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    data = Path(args.data_root) / "rotten-tomatoes"
    if args.one:
        with tempfile.TemporaryDirectory() as tmp:
            r = child(args.one[0], int(args.one[1]), args.precision, args.epochs, data, Path(tmp) / "run")
        Path(args.json).write_text(json.dumps(r))
        return 0
    if not (data / "train.csv").is_file():
        sys.exit(f"{data}/train.csv missing: run bash bench/quality_setup.sh first")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in [int(s) for s in args.seeds.split(",")]:
            for setting in SETTINGS if seed % 2 == 0 else SETTINGS[::-1]:
                wait_for_idle(0.5, args.max_wait)
                out = Path(tmp) / f"{setting}-{seed}.json"
                cmd = [sys.executable, __file__, "--one", setting, str(seed), "--json", str(out)]
                cmd += ["--precision", args.precision, "--epochs", str(args.epochs), "--data-root", args.data_root]
                subprocess.run(cmd, check=True)
                rows.append(json.loads(out.read_text()))
                r = rows[-1]
                print(
                    f"{setting} seed {seed}: {r['samples_per_second']:.1f} samples/s, validation "
                    f"{r['validation_accuracy']:.3f}, test {r['test_accuracy']:.3f}",
                    flush=True,
                )
    lines = [
        f"# CheapDropout vs torch dropout ({args.precision})",
        "",
        f"Command: `python bench/cheap_dropout.py --seeds {args.seeds} --precision {args.precision}`  ",
        f"Machine: {json.dumps(env_versions())}",
        "",
        "MiniLM full fine-tuning, rotten-tomatoes (800 train / 200 validation / 1,000 test), "
        f"{args.epochs} epochs, lr 5e-5, batch 32.",
        "",
        "| setting | seed | samples/s | validation acc | test acc |",
        "|---|---|---:|---:|---:|",
    ]
    lines += [
        f"| {r['setting']} | {r['seed']} | {r['samples_per_second']:.1f} | {r['validation_accuracy']:.3f} | "
        f"{r['test_accuracy']:.3f} |"
        for r in rows
    ]
    lines.append("")
    summary = {}
    for setting in SETTINGS:
        mine = [r for r in rows if r["setting"] == setting]
        summary[setting] = {
            k: (statistics.mean(r[k] for r in mine), statistics.pstdev(r[k] for r in mine))
            for k in ("samples_per_second", "validation_accuracy", "test_accuracy")
        }
        s = summary[setting]
        lines.append(
            f"- {setting}: {s['samples_per_second'][0]:.1f} ± {s['samples_per_second'][1]:.1f} samples/s, validation "
            f"{s['validation_accuracy'][0]:.3f} ± {s['validation_accuracy'][1]:.3f}, test "
            f"{s['test_accuracy'][0]:.3f} ± {s['test_accuracy'][1]:.3f}"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    stem = "cheap_dropout" + ("_bf16" if args.precision == "bf16" else "")
    (HERE / "results" / f"{stem}.md").write_text(text)
    (HERE / "results" / f"{stem}.json").write_text(json.dumps({"rows": rows, "summary": summary}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
