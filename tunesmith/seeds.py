"""`tunesmith train --seeds K`: the same recipe under K seeds, reported as mean ± std (min, max).

Fine-tuning on small data is unstable: another seed can land several points away or fail outright
(Dodge et al. 2020; Mosbach et al. 2021). Each seed is a whole run (`api.finetune`, seed = train.seed
+ i); a seed's weights are kept only while it is the best on validation so far (as search's trials),
so K seeds cost K trainings but one model on disk. The best seed's run folder becomes --out (its
run_config.yaml reproduces it exactly); the others' reports and metrics stay in --out/seeds/. Head-only
seeds share one feature extraction (the feature cache: the frozen backbone's features do not depend on
the seed). metrics.json gains "seeds": per seed, the mean, std, min and max of every score, which seed
was kept, and the seeds flagged degenerate (no better than the trivial predictor, or than the untouched
model where the task scores one); report.html and README.md gain the same table.
"""

from __future__ import annotations

import html
import json
import math
import shutil
import statistics
from pathlib import Path
from typing import Any

from .config import RunConfig
from .errors import ConfigError
from .run_folder import METRICS_FILE
from .run_folder import check as check_out

SEEDS_DIR = "seeds"


def run_scores(m: dict[str, Any] | None) -> dict[str, float]:
    """A run's scores that are one finite number each (per-class tables, intervals and the row count left out)."""
    return {
        k: float(v)
        for k, v in (m or {}).items()
        if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "n" and math.isfinite(float(v))
    }


def spread(values: list[float]) -> dict[str, float]:
    return {
        "mean": statistics.fmean(values),
        "std": statistics.stdev(values) if len(values) > 1 else 0.0,
        "min": min(values),
        "max": max(values),
    }


def summarise_seeds(per_seed: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, float]]]:
    """{split: {metric: {mean, std, min, max}}} over the seeds that scored it."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for split in ("validation", "test"):
        keys = sorted({k for s in per_seed for k in s.get(split, {})})
        table = {k: spread([s[split][k] for s in per_seed if k in s.get(split, {})]) for k in keys}
        if table:
            out[split] = table
    return out


def _degenerate(metrics: dict[str, Any], warnings: list[str], task, metric: str) -> str | None:
    """Why a seed's run learned nothing usable, or None."""
    trivial = next((w for w in warnings if w.startswith("NO BETTER THAN TRIVIAL")), None)
    if trivial:
        return "no better than the trivial predictor"
    before = ((metrics.get("before_finetuning") or {}).get("validation") or {}).get(metric)
    after = (metrics.get("validation") or {}).get(metric)
    if before is not None and after is not None and not task.improved({metric: after}, {metric: before}, metric):
        return f"no better than the untouched model (validation {metric} {after:.4f} vs {before:.4f})"
    return None


def finetune_seeds(cfg: RunConfig, seeds: int, overwrite: bool = False, quiet: bool = False):
    """Run `cfg` under `seeds` seeds; --out ends up holding the best seed's run plus the seeds' summary."""
    from .api import finetune
    from .progress import Reporter
    from .tasks import TASKS

    if seeds < 1:
        raise ConfigError(f"--seeds {seeds}: give at least 1 (the number of seeds to train)")
    if seeds == 1:
        return finetune(cfg, overwrite=overwrite, quiet=quiet)
    out = Path(cfg.out)
    check_out(out, False, overwrite)  # before any seed trains: the result could not be written
    task = TASKS.get(cfg.task)
    metric = cfg.resolved().train.metric
    reporter = Reporter(quiet)
    work = out.with_name(f".{out.name}.seeds")
    shutil.rmtree(work, ignore_errors=True)
    best: dict[str, Any] | None = None
    per_seed: list[dict[str, Any]] = []

    def keep(val: dict[str, Any]):
        """Keep a seed's weights only while it is the best on validation so far."""
        return None if task.improved(val, best, metric) else "not the best seed so far"

    first = cfg.train.seed
    try:
        for i in range(seeds):
            seed = first + i
            reporter.info(f"seed {seed} ({i + 1} of {seeds}) ...")
            run_cfg = cfg.model_copy(deep=True)
            run_cfg.train.seed = seed
            run_cfg.out = str(work / f"seed-{seed}")
            res = finetune(run_cfg, quiet=quiet, keep_weights=keep)
            m = json.loads((Path(run_cfg.out) / METRICS_FILE).read_text(encoding="utf-8"))
            row = {
                "seed": seed,
                "validation": run_scores(m.get("validation")),
                **({"test": run_scores(m["test"])} if m.get("test") else {}),
                "degenerate": _degenerate(m, res.warnings, task, metric),
            }
            per_seed.append(row)
            if keep(m["validation"]) is None:
                best = {**m["validation"], "seed": seed}
        kept = best["seed"]
        if out.exists():  # check_out let it through: --overwrite
            shutil.rmtree(out)
        (work / f"seed-{kept}").rename(out)
        point_config_at(out)
        (out / SEEDS_DIR).mkdir()
        for row in per_seed:
            if row["seed"] != kept:
                folder = out / SEEDS_DIR / f"seed-{row['seed']}"
                (work / f"seed-{row['seed']}").rename(folder)
                drop_weights(folder, f"seed {row['seed']} was not the best on validation; seed {kept} was kept")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    summary = {
        "seeds": [r["seed"] for r in per_seed],
        "metric": metric,
        "kept_seed": kept,
        "per_seed": per_seed,
        "summary": summarise_seeds(per_seed),
        "degenerate": {str(r["seed"]): r["degenerate"] for r in per_seed if r["degenerate"]},
    }
    metrics_path = out / METRICS_FILE
    metrics = json.loads(metrics_path.read_text(encoding="utf-8"))
    metrics["seeds"] = summary
    _add_to_card_and_report(out, summary, task)
    tmp = out / f".{METRICS_FILE}.tmp"
    tmp.write_text(json.dumps(metrics, indent=2), encoding="utf-8")
    tmp.replace(metrics_path)  # written last, as every run's metrics.json
    reporter.info(describe(summary, task))
    for seed, why in summary["degenerate"].items():
        reporter.warn(f"DEGENERATE SEED {seed}: {why}")
    return summary


def drop_weights(folder: Path, why: str) -> None:
    """A seed that was the best so far when it finished, beaten later: its model goes (weights, the files
    that load them, the card describing them); its report, scores and config stay, and loading it says why."""
    from .formats import META_FILE

    for f in [*folder.glob("*.safetensors"), folder / META_FILE, folder / "README.md"]:
        f.unlink(missing_ok=True)
    path = folder / METRICS_FILE
    m = json.loads(path.read_text(encoding="utf-8"))
    m.setdefault("run", {})["weights_not_kept"] = why
    path.write_text(json.dumps(m, indent=2), encoding="utf-8")


def point_config_at(out: Path) -> None:
    """The kept seed's run_config.yaml names --out itself, so `train -c OUT/run_config.yaml` retrains it."""
    import yaml

    from .config import config_from_dict, config_to_yaml
    from .run_folder import CONFIG_FILE

    path = out / CONFIG_FILE
    tree = yaml.safe_load(path.read_text(encoding="utf-8"))
    tree["out"] = str(out)
    path.write_text(config_to_yaml(config_from_dict(tree, str(path))), encoding="utf-8")


def describe(summary: dict[str, Any], task) -> str:
    metric = summary["metric"]
    s = summary["summary"]["validation"][metric]
    return (
        f"{len(summary['seeds'])} seeds: validation {task.metric_name(metric)} {s['mean']:.4f} ± {s['std']:.4f} "
        f"(min {s['min']:.4f}, max {s['max']:.4f}); kept seed {summary['kept_seed']} (best on validation)"
        + (f"; degenerate: seeds {', '.join(summary['degenerate'])}" if summary["degenerate"] else "")
    )


def spread_rows(by_split: dict[str, dict[str, dict[str, float]]], task) -> list[tuple[str, ...]]:
    rows = []
    for split, table in by_split.items():
        for k, s in table.items():
            rows.append((split, task.metric_name(k), *(f"{s[x]:.4f}" for x in ("mean", "std", "min", "max"))))
    return rows


def _add_to_card_and_report(out: Path, summary: dict[str, Any], task) -> None:
    add_section(
        out,
        "Seed variance",
        describe(summary, task) + ". The other seeds' reports are in `seeds/`.",
        spread_rows(summary["summary"], task),
    )


def add_section(out: Path, title: str, said: str, rows: list[tuple[str, ...]]) -> None:
    """A titled table of spreads in README.md (before "## How to load") and report.html (before the curves)."""
    head = ("split", "metric", "mean", "std", "min", "max")
    card = out / "README.md"
    if card.is_file():
        md = [
            f"## {title}",
            "",
            said,
            "",
            "| " + " | ".join(head) + " |",
            "|---|---|---:|---:|---:|---:|",
            *["| " + " | ".join(r) + " |" for r in rows],
            "",
        ]
        text = card.read_text(encoding="utf-8")
        anchor = "## How to load"
        text = text.replace(anchor, "\n".join(md) + "\n" + anchor, 1) if anchor in text else text + "\n".join(md)
        card.write_text(text, encoding="utf-8")
    report = out / "report.html"
    if report.is_file():
        cells = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
        section = (
            f"<h2>{html.escape(title)}</h2><p>{html.escape(said)}</p><table><tr>"
            + "".join(f"<th>{h}</th>" for h in head)
            + f"</tr>{cells}</table>"
        )
        text = report.read_text(encoding="utf-8")
        anchor = "<h2>Training curves</h2>"
        if anchor not in text:
            anchor = "</body>"
        report.write_text(text.replace(anchor, section + anchor, 1), encoding="utf-8")
