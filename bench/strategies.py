"""Every strategy side by side on the same data: speed, peak memory, trainable params, accuracy.

all-MiniLM-L6-v2 on the shipped sentiment data (2000 train / 200 validation / 1000 test), the
same epochs, batch and precision for every strategy, each in a fresh child process so its peak
RSS (ru_maxrss) is its own. samples/s covers training steps only (no evaluation); for head-only
that is the head on cached features, and the one-off feature extraction is reported beside it.

    python bench/strategies.py [--epochs 1] [--train 2000] [--quick]

Bars (issue 4): lora's peak training memory below full's; partial (K=2) at least 1.5x full's
samples/s. `full+recompute` and `lora+recompute` repeat full and lora with
train.gradient_checkpointing: activations (~1 GB here) otherwise set the peak for every strategy,
hiding what lora saves. Results: stdout and bench/results/strategies.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from child_runs import cpu_jiffies, tweet_splits, wait_for_idle  # noqa: E402  (shared, not copied)


def child(args) -> None:
    import torch

    import tunesmith

    torch.set_num_threads(args.threads)
    data = Path(args.data)
    name, _, variant = args.one.partition("+")
    train = {
        "seed": 0,
        "batch_size": 32,
        "early_stopping_patience": None,
        "threads": args.threads,
        "precision": "fp32",
        "gradient_checkpointing": variant == "recompute",
    }
    if name != "head-only":
        train["epochs"] = args.epochs
    strategy = {"name": name}
    if name == "partial":
        strategy["unfreeze_top"] = 2
    res = tunesmith.finetune(
        {
            "out": str(Path(args.work) / args.one),
            "model": {"name": "minilm"},
            "data": {
                "train": str(data / "train.csv"),
                "validation": str(data / "val.csv"),
                "test": str(data / "test.csv"),
            },
            "strategy": strategy,
            "train": train,
        },
        quiet=True,
        overwrite=True,
    )
    t = res.timings
    print(
        json.dumps(
            {
                "strategy": args.one,
                "samples_per_second": t["train_samples_per_second"],
                "train_seconds": t["train_seconds"],
                "feature_seconds": t.get("feature_seconds"),
                "epochs": len(res.history),
                "trainable": res.params["trainable"],
                "total": res.params["total"],
                "accuracy": res.test_metrics["accuracy"],
                "macro_f1": res.test_metrics["macro_f1"],
                "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            }
        )
    )


def main(argv=None) -> int:
    sys.path.insert(0, str(ROOT))
    from tunesmith.strategies import STRATEGIES

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--train", type=int, default=2000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument(
        "--strategies",
        default=",".join(
            [n for n in STRATEGIES.names() if STRATEGIES.get(n).defaults] + ["full+recompute", "lora+recompute"]
        ),
    )
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    ap.add_argument("--data", help=argparse.SUPPRESS)
    ap.add_argument("--work", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.one:
        child(args)
        return 0
    if args.quick:
        args.train = 300
    work = Path(tempfile.mkdtemp(prefix="bench_strategies_"))
    data = work / "data"
    tweet_splits(data, args.train, 1000)
    results = {}
    hz = __import__("os").sysconf("SC_CLK_TCK")
    for s in args.strategies.split(","):
        env_cache = {"TUNESMITH_CACHE": str(work / "cache")}
        wait_for_idle(0.3, 120)
        ru0, j0, t0 = resource.getrusage(resource.RUSAGE_CHILDREN), cpu_jiffies(), time.perf_counter()
        p = subprocess.run(
            [
                sys.executable,
                __file__,
                "--one",
                s,
                "--data",
                str(data),
                "--work",
                str(work),
                "--epochs",
                str(args.epochs),
                "--threads",
                str(args.threads),
            ],
            capture_output=True,
            text=True,
            env={**__import__("os").environ, **env_cache},
        )
        wall, j1, ru1 = time.perf_counter() - t0, cpu_jiffies(), resource.getrusage(resource.RUSAGE_CHILDREN)
        ours = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
        other = max(0.0, ((j1[0] - j0[0]) / hz - ours) / wall)
        if p.returncode != 0:
            results[s] = {"error": p.stderr[-2000:]}
            print(f"{s}: FAILED\n{p.stderr[-2000:]}", flush=True)
            continue
        results[s] = json.loads(p.stdout.strip().splitlines()[-1])
        r = results[s]
        r["other_load_cores"] = other
        print(
            f"{s:<15} {r['samples_per_second']:>9.1f} samples/s  RSS {r['peak_rss_mb']:.0f} MB  "
            f"trainable {r['trainable']:,}  acc {r['accuracy']:.3f}  other load {other:.2f} cores",
            flush=True,
        )
    lines = [
        f"# Strategies side by side\n\n`python bench/strategies.py{' --quick' if args.quick else ''}`: "
        f"all-MiniLM-L6-v2, {args.train} train / 200 validation / 1000 test tweets, {args.epochs} epoch(s) "
        f"(head-only: its default {STRATEGIES.get('head-only').defaults['epochs']} head epochs), batch 32, fp32, "
        f"{args.threads} threads, each strategy's default LR.\n",
        "| strategy | samples/s (training) | peak RSS MB | trainable / total params | held-out acc | macro-F1 "
        "| other load |",
        "|---|---|---|---|---|---|---|",
    ]
    for s, r in results.items():
        if "error" in r:
            lines.append(f"| {s} | failed | | | | | |")
            continue
        sps = f"{r['samples_per_second']:.1f}"
        if r.get("feature_seconds") is not None:
            sps += f" (head on cached features; extraction {r['feature_seconds']:.1f} s once)"
        lines.append(
            f"| {s} | {sps} | {r['peak_rss_mb']:.0f} | {r['trainable']:,} / {r['total']:,} | "
            f"{r['accuracy']:.3f} | {r['macro_f1']:.3f} | {r['other_load_cores']:.2f} |"
        )
    ok = lambda k: k in results and "error" not in results[k]  # noqa: E731
    for suffix in ("", "+recompute"):
        if ok("full" + suffix) and ok("lora" + suffix):
            lines.append(
                f"\n- lora{suffix} peak RSS {results['lora' + suffix]['peak_rss_mb']:.0f} MB vs full{suffix} "
                f"{results['full' + suffix]['peak_rss_mb']:.0f} MB"
            )
    if ok("full") and ok("partial"):
        lines.append(
            "- partial (K=2) ÷ full samples/s: "
            f"**{results['partial']['samples_per_second'] / results['full']['samples_per_second']:.2f}x**"
        )
    lines.append(
        "\nother load: cores other processes kept busy while the row ran (a loaded 2-core machine "
        "slows a 2-thread run several-fold; compare rows with other load near 0)."
    )
    md = "\n".join(lines) + "\n"
    print(md)
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    suffix = "_quick" if args.quick else ""
    (out / f"strategies{suffix}.md").write_text(md)
    (out / f"strategies{suffix}.json").write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
