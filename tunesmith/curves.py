"""`tunesmith curve`: data-efficiency curves on the user's own data.

    tunesmith curve -c cfg.yaml --sizes 8,32,128,all --seeds 3 --strategies head-only,lora,full \\
        --from-scratch --out curves/c

For each training size (examples per class for tasks with labels; examples for speech and chat), each
strategy and each seed, one run (`api.finetune`) trains on a seeded, class-balanced sample of the training
split and is scored on the same validation split (read once; runs keep no weights). `--from-scratch` adds
the same architecture with random weights (model.from_scratch, strategy full): what pre-training buys.
The result is curve.json and curve.html: the task's metric against training size, a mean ± std band
per strategy, the table, and against from-scratch: the size each strategy needs to match from-scratch's
best, how much better it ends at the largest size, and the time each takes there. Validation features
are extracted once for every head-only point (the feature cache); each sample's training features are
its own. Strategies that train for epochs keep their best epoch on the same validation split the curve
reports (head-only chooses its regularisation by cross-validation on the training rows), so at the
smallest sizes their points lean optimistic; the page says so.
"""

from __future__ import annotations

import base64
import html
import io
import json
import random
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

from .config import RunConfig, config_from_dict
from .errors import ConfigError, DataError, RunFolderError

SCRATCH = "from-scratch"


def parse_sizes(text: str) -> list[int | None]:
    """ "8,32,all" -> [8, 32, None] (None: all the training data), sorted, each once."""
    sizes: list[int | None] = []
    for part in (p.strip() for p in text.split(",") if p.strip()):
        if part == "all":
            sizes.append(None)
            continue
        try:
            n = int(part)
        except ValueError:
            raise ConfigError(f"--sizes {text!r}: {part!r} is neither a whole number nor 'all'") from None
        if n < 1:
            raise ConfigError(f"--sizes {text!r}: sizes count training examples (per class): use 1 or more")
        sizes.append(n)
    if not sizes:
        raise ConfigError("--sizes: give at least one size, e.g. 8,32,all")
    return sorted(set(sizes), key=lambda s: float("inf") if s is None else s)


def sample(key: list | None, n: int | None, seed: int) -> list[int]:
    """Row indices: n per class (key: the class of each row) or n in all (no key), seeded; None: every row."""
    rows = list(range(len(key))) if key is not None else None
    rng = random.Random(seed)
    if n is None:
        return rows if rows is not None else []
    by_class: dict = {}
    for i, y in enumerate(key):
        by_class.setdefault(y, []).append(i)
    picked = []
    for y in sorted(by_class, key=str):
        idx = list(by_class[y])
        rng.shuffle(idx)
        picked += idx[:n]
    return sorted(picked)


def check_sizes(sizes: list[int | None], key: list, per_class: bool, source: str) -> None:
    counts: dict = {}
    for y in key:
        counts[y] = counts.get(y, 0) + 1
    limit = min(counts.values())
    too_big = [s for s in sizes if s is not None and s > limit]
    if too_big:
        what = f"the smallest class ({min(counts, key=lambda y: (counts[y], str(y)))!r}) has" if per_class else "it has"
        raise DataError(
            f"--sizes {','.join(map(str, too_big))}: larger than the training data of {source}: {what} {limit} "
            f"example(s); use sizes up to {limit}, or 'all'"
        )


def run_curve(
    cfg: RunConfig,
    sizes: list[int | None],
    seeds: int,
    strategies: list[str],
    from_scratch: bool,
    out: Path,
    overwrite: bool = False,
    quiet: bool = False,
) -> dict[str, Any]:
    from .api import RunData, finetune, read_data
    from .data.preflight import Preflight
    from .progress import Reporter
    from .tasks import TASKS

    if seeds < 1:
        raise ConfigError(f"--seeds {seeds}: give at least 1")
    if not strategies:
        raise ConfigError("--strategies: give at least one, e.g. head-only,full")
    from .strategies import STRATEGIES

    base = cfg.model_dump(mode="json", exclude_unset=True)  # what the user set; each point's strategy fills the rest

    def point_tree(strategy: str) -> dict:
        """The user's config for one strategy, less what that strategy refuses (a solved head takes no epochs)."""
        if strategy not in STRATEGIES:
            raise ConfigError(f"--strategies: unknown strategy {strategy!r}; known: {', '.join(STRATEGIES.names())}")
        tree = json.loads(json.dumps(base))
        cls = STRATEGIES.get(strategy)
        given = tree.get("strategy") or {}  # the user's options that apply to this strategy (lora's rank, ...)
        tree["strategy"] = {"name": strategy, **{k: v for k, v in given.items() if k in cls.options}}
        return cls.adapt(tree)

    for s in strategies:  # every pairing checked (and its config error raised) before anything trains
        config_from_dict(point_tree(s), f"--strategies {s}")
    if cfg.data.test:
        raise ConfigError("tunesmith curve scores every point on the validation split; remove --test-data")
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        if not overwrite or not (out / "curve.json").is_file():
            raise RunFolderError(f"--out {out} is not empty; choose a new folder (or --overwrite a previous curve)")
        shutil.rmtree(out)
    task_cls = TASKS.get(cfg.task)
    reporter = Reporter(quiet)
    data = read_data(cfg, reporter)
    train, val = data.splits["train"], data.splits["validation"]
    key = task_cls.split_key(train)
    per_class = key is not None
    key = key if key is not None else [""] * len(train)
    check_sizes(sizes, key, per_class, cfg.data.train)
    metric = cfg.train.metric or task_cls.default_metric
    lower = metric in task_cls.lower_is_better
    arms = [(s, s, False) for s in strategies] + ([(SCRATCH, "full", True)] if from_scratch else [])
    points: list[dict[str, Any]] = []
    work = out / "runs"
    total = len(sizes) * len(arms) * seeds
    done = 0
    for size in sizes:
        for name, strategy, scratch in arms:
            for i in range(seeds):
                seed = cfg.train.seed + i
                idx = sample(key, size, seed)
                sub = train.subset(idx, f"{cfg.data.train} ({len(idx)} sampled, seed {seed})")
                tree = point_tree(strategy)
                tree.setdefault("model", {})["from_scratch"] = scratch
                tree.setdefault("train", {})["seed"] = seed
                tree["out"] = str(work / name / f"n{size or 'all'}-s{seed}")
                run_cfg = config_from_dict(tree, f"curve point {name} n={size or 'all'} seed {seed}")
                done += 1
                reporter.info(f"curve point {done}/{total}: {name}, {size or 'all'} per class, seed {seed}")
                t0 = time.perf_counter()
                res = finetune(
                    run_cfg,
                    quiet=True,
                    keep_weights=lambda _m: "a curve point",
                    data=RunData({"train": sub, "validation": val}, Preflight()),
                )
                points.append(
                    {
                        "arm": name,
                        "size": size,
                        "examples": len(idx),
                        "seed": seed,
                        "value": float(res.metrics[metric]),
                        "seconds": time.perf_counter() - t0,
                    }
                )
    curve = summarise(points, [a[0] for a in arms], sizes, metric, lower, per_class)
    curve.update(
        task=cfg.task,
        model=cfg.model.name,
        metric=metric,
        metric_name=task_cls.metric_name(metric),
        lower_is_better=lower,
        per_class=per_class,
        validation=f"{len(val)} rows ({val.source})",
        points=points,
    )
    out.mkdir(parents=True, exist_ok=True)
    (out / "curve.json").write_text(json.dumps(curve, indent=2), encoding="utf-8")
    (out / "curve.html").write_text(page(curve), encoding="utf-8")
    for line in curve["findings"]:
        reporter.info(line)
    reporter.info(f"curve: {out / 'curve.html'}")
    return curve


def summarise(
    points: list[dict], arms: list[str], sizes: list, metric: str, lower: bool, per_class: bool = True
) -> dict[str, Any]:
    """Per arm and size: mean, std, min, max, mean seconds; and the findings against from-scratch."""
    table: dict[str, list[dict[str, Any]]] = {}
    for arm in arms:
        rows = []
        for size in sizes:
            vals = [p["value"] for p in points if p["arm"] == arm and p["size"] == size]
            secs = [p["seconds"] for p in points if p["arm"] == arm and p["size"] == size]
            ex = [p["examples"] for p in points if p["arm"] == arm and p["size"] == size]
            rows.append(
                {
                    "size": size,
                    "examples": round(statistics.fmean(ex)),
                    "mean": statistics.fmean(vals),
                    "std": statistics.stdev(vals) if len(vals) > 1 else 0.0,
                    "min": min(vals),
                    "max": max(vals),
                    "seconds": statistics.fmean(secs),
                }
            )
        table[arm] = rows
    findings = []
    vs = {}
    if SCRATCH in table:
        scratch = table[SCRATCH]
        target = min(r["mean"] for r in scratch) if lower else max(r["mean"] for r in scratch)
        for arm in (a for a in arms if a != SCRATCH):
            reach = next((r for r in table[arm] if (r["mean"] <= target if lower else r["mean"] >= target)), None)
            end, end_s = table[arm][-1], scratch[-1]
            better = (end_s["mean"] - end["mean"]) if lower else (end["mean"] - end_s["mean"])
            vs[arm] = {
                "matches_scratch_best_at": (reach["size"] or "all") if reach else None,
                "ahead_at_largest": better,
                "seconds_at_largest": end["seconds"],
                "scratch_seconds_at_largest": end_s["seconds"],
            }
            said = (
                f"{arm}: matches from-scratch's best ({target:.4f}) with {reach['size'] or 'all'} examples"
                + ((" per class" if per_class else " in all") if reach and reach["size"] else "")
                if reach
                else f"{arm}: never reaches from-scratch's best ({target:.4f})"
            )
            findings.append(
                f"{said}; at the largest size it is {better:+.4f} {metric} ahead, in {end['seconds']:.1f}s "
                f"against from-scratch's {end_s['seconds']:.1f}s"
            )
    return {"sizes": [s or "all" for s in sizes], "arms": table, "vs_from_scratch": vs, "findings": findings}


def _plot(curve: dict[str, Any]) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=100)
    for arm, rows in curve["arms"].items():
        x = [r["examples"] for r in rows]
        m = [r["mean"] for r in rows]
        lo = [r["mean"] - r["std"] for r in rows]
        hi = [r["mean"] + r["std"] for r in rows]
        ax.plot(x, m, marker="o", label=arm, linestyle="--" if arm == SCRATCH else "-")
        ax.fill_between(x, lo, hi, alpha=0.2)
    ax.set_xscale("log")
    ax.set_xlabel("training examples (all classes)")
    ax.set_ylabel(f"validation {curve['metric_name']}")
    ax.set_title("data efficiency: mean ± std over seeds")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return f'<img alt="data-efficiency curve" src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}">'


def page(curve: dict[str, Any]) -> str:
    unit = "per class" if curve["per_class"] else "in all"
    head = "".join(
        f"<th>{h}</th>" for h in ("strategy", f"size ({unit})", "examples", "mean", "std", "min", "max", "s")
    )
    body = "".join(
        "<tr>"
        + "".join(
            f"<td>{html.escape(str(c))}</td>"
            for c in (
                arm,
                r["size"] or "all",
                r["examples"],
                f"{r['mean']:.4f}",
                f"{r['std']:.4f}",
                f"{r['min']:.4f}",
                f"{r['max']:.4f}",
                f"{r['seconds']:.1f}",
            )
        )
        + "</tr>"
        for arm, rows in curve["arms"].items()
        for r in rows
    )
    found = "".join(f"<li>{html.escape(f)}</li>" for f in curve["findings"])
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>tunesmith curve</title>"
        "<style>body{font-family:sans-serif;margin:2em;max-width:60em}td,th{padding:.2em .6em;text-align:right}"
        "td:first-child,th:first-child{text-align:left}</style></head><body>"
        f"<h1>Data-efficiency curve: {html.escape(curve['task'])} on {html.escape(str(curve['model']))}</h1>"
        f"<p>Validation {html.escape(curve['metric_name'])} on {html.escape(curve['validation'])}, mean ± std over "
        f"seeds, against the number of training examples. Strategies that train for epochs keep their best epoch "
        f"on this same validation split, so their points lean optimistic at small sizes.</p>{_plot(curve)}"
        + (f"<h2>Against training from scratch</h2><ul>{found}</ul>" if found else "")
        + f"<h2>Table</h2><table><tr>{head}</tr>{body}</table></body></html>"
    )
