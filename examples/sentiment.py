"""The main job: fine-tune the shipped all-MiniLM-L6-v2 on real tweets and show before/after.

before: a linear head on the untouched pre-trained model (frozen features, `head-only`)
after:  every weight fine-tuned (`full`)
Both are scored on the same held-out test split, never seen in training or model selection.

    python examples/sentiment.py [--train 2000 --test 1000 --epochs 3]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from prepare_sentiment import main as prepare  # noqa: E402

import tunesmith  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train", type=int, default=2000)
    ap.add_argument("--test", type=int, default=1000)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--data", default="data/sentiment")
    ap.add_argument("--out", default="runs")
    args = ap.parse_args()

    prepare(["--out", args.data, "--train", str(args.train), "--test", str(args.test)])
    common = {
        "data": {"train": f"{args.data}/train.csv", "test": f"{args.data}/test.csv"},
        "model": {"name": "minilm", "max_length": 128},
    }
    rows = []
    for label, strategy, extra in [
        ("before: head on the untouched model", "head-only", {}),
        ("after: full fine-tune", "full", {"epochs": args.epochs}),
    ]:
        print(f"\n== {label} ({strategy})", flush=True)
        t0 = time.perf_counter()
        res = tunesmith.finetune(
            {**common, "out": f"{args.out}/sentiment-{strategy}", "strategy": {"name": strategy}, "train": extra},
            overwrite=True,
        )
        rows.append((label, res, time.perf_counter() - t0))

    majority = max(rows[0][1].test_metrics["per_class"].values(), key=lambda s: s["support"])["support"]
    n = rows[0][1].test_metrics["n"]
    print(f"\nheld-out test set: {n} tweets (majority class {majority / n:.3f})")
    print(f"{'':<38} {'accuracy':>8} {'macro-F1':>8} {'trainable params':>17} {'time':>7}")
    for label, res, secs in rows:
        t = res.test_metrics
        print(f"{label:<38} {t['accuracy']:>8.3f} {t['macro_f1']:>8.3f} {res.params['trainable']:>17,} {secs:>6.0f}s")
    print(f"\nreport: {rows[1][1].files['report']}\nmodel card: {rows[1][1].files['model_card']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
