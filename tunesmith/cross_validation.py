"""`tunesmith train --cv K`: stratified K-fold cross-validation, for data too small to spare a validation split.

The training data is cut into K folds (stratified by the task's split key, the labels; a plain shuffled
K-fold where the task has none), each fold is held out once while a run trains on the others
(`api.finetune` with the splits handed over, so the data is read and checked once; head-only folds share
one feature extraction through the feature cache), and every validation score is reported as mean ± std
(min, max) over the folds: the estimate to quote. The model kept at --out is then trained on all the rows
with the same settings for the folds' median best epoch count (early stopping has nothing left to hold
out): its own validation scores are in-sample, and its card and metrics.json say so. The folds' reports
stay in --out/folds/ (their weights are not kept).
"""

from __future__ import annotations

import json
import shutil
import statistics
from pathlib import Path
from typing import Any

from .config import RunConfig
from .errors import ConfigError, DataError
from .run_folder import METRICS_FILE
from .run_folder import check as check_out
from .seeds import add_section, drop_weights, point_config_at, run_scores, spread_rows, summarise_seeds

FOLDS_DIR = "folds"


def fold_indices(key: list | None, n: int, k: int, seed: int) -> list[tuple[list[int], list[int]]]:
    """(training, held-out) row indices per fold: stratified by `key` (the labels) where the task has one,
    else a shuffled plain K-fold. A class with fewer rows than folds is a DataError naming it."""
    import numpy as np
    from sklearn.model_selection import KFold, StratifiedKFold

    if key is None:
        splitter = KFold(n_splits=k, shuffle=True, random_state=seed)
        return [(tr.tolist(), va.tolist()) for tr, va in splitter.split(np.zeros(n))]
    counts: dict = {}
    for y in key:
        counts[y] = counts.get(y, 0) + 1
    smallest = min(counts, key=lambda y: (counts[y], str(y)))
    if counts[smallest] < k:
        raise DataError(
            f"--cv {k}: class {smallest!r} has only {counts[smallest]} example(s), so it cannot appear in every "
            f"held-out fold; use at most {max(counts[smallest], 2)} folds, or add examples of it"
        )
    splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    return [(tr.tolist(), va.tolist()) for tr, va in splitter.split(np.zeros(n), key)]


def finetune_cv(cfg: RunConfig, k: int, overwrite: bool = False, quiet: bool = False) -> dict[str, Any]:
    from .api import RunData, finetune
    from .data.preflight import Preflight
    from .modalities import MODALITIES
    from .progress import Reporter
    from .tasks import TASKS

    if k < 2:
        raise ConfigError(f"--cv {k}: give at least 2 folds (each fold is held out once)")
    if cfg.data.validation:
        raise ConfigError(
            "--cv folds the training data itself, holding out each fold in turn; remove data.validation "
            "(--validation-data), or train without --cv to score on it"
        )
    if not cfg.data.train:
        raise ConfigError("no training data: give --data FILE (or data.train in the config)")
    out = Path(cfg.out)
    check_out(out, False, overwrite)
    task_cls = TASKS.get(cfg.task)
    modality = MODALITIES.get(task_cls.modality)()
    reporter = Reporter(quiet)
    rows = modality.read(cfg.data.train, cfg.data, "training data", reporter=reporter)
    key = task_cls.split_key(rows)
    if len(rows) < k:
        raise DataError(f"--cv {k}: {cfg.data.train} has {len(rows)} rows; use at most {len(rows)} folds")
    folds = fold_indices(key, len(rows), k, cfg.data.split_seed)
    test = modality.read(cfg.data.test, cfg.data, "test data", reporter=reporter) if cfg.data.test else None
    metric = cfg.resolved().train.metric
    work = out.with_name(f".{out.name}.folds")
    shutil.rmtree(work, ignore_errors=True)
    per_fold: list[dict[str, Any]] = []
    try:
        for i, (tr, va) in enumerate(folds):
            reporter.info(f"fold {i + 1} of {k}: {len(tr)} training, {len(va)} held-out rows ...")
            fold_cfg = cfg.model_copy(deep=True)
            fold_cfg.out = str(work / f"fold-{i + 1}")
            splits = {
                "train": rows.subset(tr),
                "validation": rows.subset(va, f"{cfg.data.train} (fold {i + 1} of {k})"),
            }
            pre = Preflight()
            task_cls.check_splits(splits["train"], splits["validation"], None, pre)
            finetune(
                fold_cfg, quiet=quiet, keep_weights=lambda _m: "a cross-validation fold", data=RunData(splits, pre)
            )
            m = json.loads((Path(fold_cfg.out) / METRICS_FILE).read_text(encoding="utf-8"))
            best = m.get("best_evaluation") or {}
            per_fold.append(
                {"fold": i + 1, "validation": run_scores(m.get("validation")), "best_epoch": best.get("epoch")}
            )
        epochs = [f["best_epoch"] for f in per_fold if f["best_epoch"] is not None]
        final_cfg = cfg.model_copy(deep=True)
        resolved = cfg.resolved().train
        final_epochs = max(1, round(statistics.median(epochs))) if epochs else resolved.epochs
        from .strategies import STRATEGIES

        strategy = STRATEGIES.get(cfg.strategy.name)(**cfg.strategy.model_dump(exclude={"name"}))
        if not strategy.solves_head:  # a solved head has no epochs to fix (and refuses them)
            final_cfg.train.epochs = final_epochs
            final_cfg.train.early_stopping_patience = None
        final_cfg.out = str(work / "final")
        reporter.info(f"final model: all {len(rows)} rows, {final_epochs} epoch(s) (the folds' median best)")
        splits = {"train": rows, "validation": rows.subset(range(len(rows)), f"{cfg.data.train} (in-sample)")}
        if test is not None:
            splits["test"] = test
        pre = Preflight()
        pre.warnings.append(
            f"trained on all {len(rows)} rows after {k}-fold cross-validation: this model's validation scores are "
            "in-sample; quote the cross-validation scores (metrics.json 'cv')"
        )
        finetune(final_cfg, quiet=quiet, data=RunData(splits, pre))
        if out.exists():  # check_out let it through: --overwrite
            shutil.rmtree(out)
        (work / "final").rename(out)
        point_config_at(out)
        (out / FOLDS_DIR).mkdir()
        for f in per_fold:
            folder = out / FOLDS_DIR / f"fold-{f['fold']}"
            (work / f"fold-{f['fold']}").rename(folder)
            drop_weights(folder, "a cross-validation fold: its scores count, its weights are not kept")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    summary = {
        "folds": k,
        "stratified": key is not None,
        "metric": metric,
        "per_fold": per_fold,
        "summary": summarise_seeds(per_fold),
        "final_model": (
            f"trained on all {len(rows)} rows for {final_epochs} epoch(s); its validation scores are in-sample"
        ),
    }
    s = summary["summary"]["validation"][metric]
    said = (
        f"{k}-fold cross-validation{' (stratified)' if key is not None else ''}: validation "
        f"{task_cls.metric_name(metric)} {s['mean']:.4f} ± {s['std']:.4f} (min {s['min']:.4f}, max {s['max']:.4f}). "
        f"The model here was then {summary['final_model']}. The folds' reports are in `folds/`."
    )
    path = out / METRICS_FILE
    metrics = json.loads(path.read_text(encoding="utf-8"))
    metrics["cv"] = summary
    add_section(out, "Cross-validation", said, spread_rows(summary["summary"], task_cls))
    tmp = out / f".{METRICS_FILE}.tmp"
    tmp.write_text(json.dumps(metrics, indent=2), encoding="utf-8")
    tmp.replace(path)
    reporter.info(said)
    return summary
