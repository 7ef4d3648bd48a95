"""`tunesmith search`: an Optuna study whose trials are ordinary run folders (out/trials/NNN) made by
api.finetune, selected on validation only; the best trial's config is written as best.yaml and the
test split is scored once, by the best trial's model.

Storage: a SQLite file in the study folder by default; Optuna's journal file there for several local
worker processes (--workers N); any SQLAlchemy URL (PostgreSQL) for workers on many machines, with
heartbeats so a killed worker's trial is failed and retried. --trials is the study's total across
workers, and running the command again continues the study.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import time
import warnings
from pathlib import Path
from typing import Any

import optuna
import yaml

from ..config import RunConfig, config_from_dict, config_to_yaml
from ..errors import ConfigError
from ..progress import Reporter
from ..run_folder import CONFIG_FILE
from .space import Space, with_params
from .trial import metric_of, run_trial

SAMPLERS = {
    "tpe": lambda seed: optuna.samplers.TPESampler(seed=seed),
    "random": lambda seed: optuna.samplers.RandomSampler(seed=seed),
}
PRUNERS = {
    "median": lambda: optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=0),
    "successive-halving": lambda: optuna.pruners.SuccessiveHalvingPruner(),
    "hyperband": lambda: optuna.pruners.HyperbandPruner(),
    "none": lambda: optuna.pruners.NopPruner(),
}
DONE = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.FAIL)
HEARTBEAT_SECONDS, GRACE_SECONDS = 20, 60


def storage_for(out: Path, url: str | None, workers: int):
    """The study's storage; an unreachable URL is an error before any trial runs."""
    if url is None and workers > 1:
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend

        return JournalStorage(JournalFileBackend(str(out / "study.journal")))
    url = url or f"sqlite:///{out / 'study.db'}"
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)  # heartbeats: stable enough
    for attempt in range(3):
        try:
            return optuna.storages.RDBStorage(
                url,
                heartbeat_interval=HEARTBEAT_SECONDS,
                grace_period=GRACE_SECONDS,
                heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=2),
            )
        except Exception as e:  # sqlalchemy's errors: bad URL, no server, no driver
            # workers started together on an empty database race to create its tables: the loser retries
            if "IntegrityError" in type(e).__name__ and attempt < 2:
                time.sleep(1.0 + attempt)
                continue
            raise ConfigError(f"--storage {url}: cannot open the study storage: {type(e).__name__}: {e}") from None


def make_study(storage, study_name: str, direction: str, sampler, pruner, load_if_exists: bool = True):
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # tunesmith's own progress bar says what happens
    return optuna.create_study(
        storage=storage,
        study_name=study_name,
        direction=direction,
        sampler=sampler,
        pruner=pruner,
        load_if_exists=load_if_exists,
    )


def _open(base: RunConfig, space: Space, out: Path, storage_url, study_name, sampler, pruner, workers, seed):
    if sampler not in SAMPLERS:
        raise ConfigError(f"--sampler {sampler!r}: use one of {', '.join(SAMPLERS)}")
    if pruner not in PRUNERS:
        raise ConfigError(f"--pruner {pruner!r}: use one of {', '.join(PRUNERS)}")
    metric, lower = metric_of(base)
    study = make_study(
        storage_for(out, storage_url, workers),
        study_name,
        "minimize" if lower else "maximize",
        SAMPLERS[sampler](seed),
        PRUNERS[pruner](),
    )
    # a study keeps the space, metric and data it was started with: a changed one is a new study
    signature = {"space": space.as_dict(), "metric": metric, "data": base.data.model_dump(mode="json")}
    saved = study.user_attrs.get("signature")
    if saved is None:
        study.set_user_attr("signature", signature)
        study.set_user_attr("base_config", base.model_dump(mode="json", exclude_unset=True))
    elif saved != signature:
        changed = [k for k in signature if saved.get(k) != signature[k]]
        raise ConfigError(
            f"study {study_name!r} in {storage_url or out} was started with another {' and '.join(changed)}; "
            "give a new --study name (or a new --out) for a changed search"
        )
    return study, metric


def _objective(base: RunConfig, space: Space, out: Path):
    def objective(trial: optuna.Trial) -> float:
        values = space.suggest(trial)
        cfg = config_from_dict(with_params(base, values), f"trial {trial.number}")
        return run_trial(trial, cfg, out / "trials" / f"{trial.number:03d}")

    return objective


def _worker(base_json, space_path, out, storage_url, study_name, sampler, pruner, workers, seed, trials):
    """One worker process: runs trials until the study holds `trials` finished ones."""
    base = config_from_dict(base_json)
    from .space import load_space

    space = load_space(space_path, base)
    study, _ = _open(base, space, Path(out), storage_url, study_name, sampler, pruner, workers, seed)
    study.optimize(
        _objective(base, space, Path(out)),
        callbacks=[optuna.study.MaxTrialsCallback(trials, states=DONE)],
        catch=(Exception,),
        gc_after_trial=True,
    )


def search(
    base: RunConfig,
    space_path: str | Path,
    out: str | Path,
    trials: int,
    *,
    storage: str | None = None,
    study_name: str = "tunesmith",
    sampler: str = "tpe",
    pruner: str = "median",
    workers: int = 1,
    quiet: bool = False,
) -> dict[str, Any]:
    """Run (or continue) the study to `trials` finished trials; write best.yaml, the best trial's one
    test score, the trial table and report.html. -> the summary written to out/search.json."""
    from .space import load_space

    if trials < 1:
        raise ConfigError("--trials must be at least 1")
    if workers < 1:
        raise ConfigError("--workers must be at least 1")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    space = load_space(space_path, base)
    seed = base.train.seed
    study, metric = _open(base, space, out, storage, study_name, sampler, pruner, workers, seed)
    reporter, t0 = Reporter(quiet), time.perf_counter()
    args = (base.model_dump(mode="json", exclude_unset=True), str(space_path), str(out), storage, study_name)
    args += (sampler, pruner, workers, seed, trials)
    done_before = sum(t.state in DONE for t in study.get_trials(deepcopy=False))
    reporter.info(
        f"search: study {study_name!r}, {done_before} of {trials} trials done; {sampler} sampler, {pruner} pruning "
        f"on validation {metric}; {workers} worker(s)"
    )
    with reporter.bar("trials", trials, unit="trials") as bar:
        bar.advance(min(done_before, trials))
        if workers == 1:
            seen = done_before

            def progress(study_, trial_):
                nonlocal seen
                seen += 1
                best = _best_value(study_)
                bar.advance(1, postfix="" if best is None else f"best {metric} {best:.4f}")

            study.optimize(
                _objective(base, space, out),
                callbacks=[optuna.study.MaxTrialsCallback(trials, states=DONE), progress],
                catch=(Exception,),
                gc_after_trial=True,
            )
        else:
            ctx = multiprocessing.get_context("spawn")
            procs = [ctx.Process(target=_worker, args=args) for _ in range(workers)]
            for p in procs:
                p.start()
            last = done_before
            while any(p.is_alive() for p in procs):
                time.sleep(1.0)
                now = sum(t.state in DONE for t in study.get_trials(deepcopy=False))
                if now > last:
                    best = _best_value(study)
                    bar.advance(now - last, postfix="" if best is None else f"best {metric} {best:.4f}")
                    last = now
            for p in procs:
                p.join()
            bad = [p.exitcode for p in procs if p.exitcode]
            if bad:
                reporter.warn(f"{len(bad)} worker process(es) exited with an error (codes {bad}); see their output")
    summary = finish(study, base, out, metric, space, time.perf_counter() - t0, reporter)
    return summary


def _best_value(study) -> float | None:
    try:
        return study.best_value
    except ValueError:
        return None


def trial_rows(study) -> list[dict[str, Any]]:
    """Every trial, best first (finished ones by value, then pruned, failed, running)."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        rows.append(
            {
                "number": t.number,
                "state": t.state.name.lower(),
                "value": t.value,
                "params": t.params,
                "seconds": t.user_attrs.get("seconds"),
                "pruned_at": t.user_attrs.get("pruned_at"),
                "error": t.user_attrs.get("error"),
                "run": t.user_attrs.get("run"),
                "intermediate": {str(k): v for k, v in sorted(t.intermediate_values.items())},
            }
        )
    sign = -1 if study.direction == optuna.study.StudyDirection.MAXIMIZE else 1
    order = {"complete": 0, "pruned": 1, "fail": 2}
    return sorted(
        rows, key=lambda r: (order.get(r["state"], 3), sign * (r["value"] or 0) if r["value"] is not None else 0)
    )


def finish(study, base: RunConfig, out: Path, metric: str, space: Space, seconds: float, reporter) -> dict[str, Any]:
    """best.yaml, the test split scored once by the best trial, search.json, report.html."""
    from .report import write_search_report

    rows = trial_rows(study)
    complete = [r for r in rows if r["state"] == "complete"]
    summary: dict[str, Any] = {
        "study": study.study_name,
        "metric": metric,
        "direction": study.direction.name.lower(),
        "trials": rows,
        "space": space.as_dict(),
        "seconds": seconds,
        "best": None,
        "test": None,
    }
    if complete:
        best = complete[0]
        run = Path(best["run"])
        tree = yaml.safe_load((run / CONFIG_FILE).read_text(encoding="utf-8"))
        tree.pop("out", None)
        tree["data"]["test"] = base.data.test  # trials never saw it; the rerun may score it
        best_cfg = config_from_dict(tree, "best trial")
        (out / "best.yaml").write_text(
            f"# best trial {best['number']} of study {study.study_name!r}: validation {metric} {best['value']:.6f}\n"
            f"# reproduce: tunesmith train -c {out / 'best.yaml'} --out runs/best\n" + config_to_yaml(best_cfg),
            encoding="utf-8",
        )
        summary["best"] = {"number": best["number"], "value": best["value"], "params": best["params"], "run": str(run)}
        if base.data.test:  # scored once, here, by the model selection picked
            from ..api import evaluate

            summary["test"] = {k: v for k, v in evaluate(run, base.data.test).items() if isinstance(v, (int, float))}
        reporter.info(
            f"best: trial {best['number']} validation {metric} {best['value']:.4f} {best['params']}"
            + (
                f"; test {metric} {summary['test'].get(metric, float('nan')):.4f} (scored once)"
                if summary["test"]
                else ""
            )
            + f"\n  {out / 'best.yaml'} reproduces it; report: {out / 'report.html'}"
        )
    else:
        reporter.warn("no trial finished: see the errors in the trial table (tunesmith search --show)")
    tmp = out / f".search.json.tmp{os.getpid()}"
    tmp.write_text(json.dumps(summary, indent=2, default=str), encoding="utf-8")
    os.replace(tmp, out / "search.json")
    write_search_report(out, study, summary)
    return summary


def show(out: str | Path, storage: str | None = None, study_name: str = "tunesmith") -> str:
    """The trial table, best first, as text."""
    out = Path(out)
    if storage is None and not (out / "study.db").is_file() and not (out / "study.journal").is_file():
        raise ConfigError(f"{out}: no study here (no study.db or study.journal); give --storage for a shared one")
    if storage is None and (out / "study.journal").is_file() and not (out / "study.db").is_file():
        store = storage_for(out, None, 2)
    else:
        store = storage_for(out, storage, 1)
    try:
        study = optuna.load_study(study_name=study_name, storage=store)
    except KeyError:
        raise ConfigError(f"no study named {study_name!r} in {storage or out}") from None
    rows = trial_rows(study)
    lines = [f"study {study_name!r}: {len(rows)} trials, {study.direction.name.lower()} validation metric"]
    lines.append(f"{'#':>4}  {'state':<9} {'value':>8} {'seconds':>8}  params / error")
    for r in rows:
        value = f"{r['value']:.4f}" if r["value"] is not None else "-"
        secs = f"{r['seconds']:.1f}" if r["seconds"] is not None else "-"
        extra = r["error"] or (f"pruned at epoch {r['pruned_at']}; " if r["pruned_at"] else "") + json.dumps(
            r["params"]
        )
        lines.append(f"{r['number']:>4}  {r['state']:<9} {value:>8} {secs:>8}  {extra}")
    return "\n".join(lines)
