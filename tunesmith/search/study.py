"""`tunesmith search`: an Optuna study whose trials are ordinary run folders (out/trials/NNN) made by
api.finetune, selected on validation only; the best trial's config is written as best.yaml and the
test split is scored once, by the best trial's model.

Storage: a SQLite file in the study folder by default; Optuna's journal file there for several local
worker processes (--workers N); any SQLAlchemy URL (PostgreSQL) for workers on many machines, with
heartbeats so a killed worker's trial is failed and retried. --trials is the study's total across
workers, and running the command again continues the study.

A trial saves its model only when it beats every trial finished before it (--keep-models all: every
trial): the others keep their config, metrics and report, and 30 trials do not write 30 copies of
the weights. Of the trials sharing the best value, the first to finish saved its model, and the
study's selection prefers a trial that kept its model among equals, so the best's model is there.
"""

from __future__ import annotations

import gc
import hashlib
import json
import multiprocessing
import os
import socket
import time
import warnings
import zlib
from pathlib import Path
from typing import Any

import optuna
import yaml

from ..api import reuse_data
from ..config import RunConfig, config_from_dict
from ..errors import ConfigError
from ..progress import Reporter
from ..run_folder import CONFIG_FILE
from ..strategies import STRATEGIES
from .space import Space, with_params
from .trial import best_so_far_only, metric_of, run_trial


def tpe_startup(trials: int) -> int:
    """TPE's random start, in trials: a quarter of the study, 4 to 10. Optuna's default, 10, is most of
    a 16-trial study, which then samples at random for all but its last 6 trials."""
    return max(4, min(10, trials // 4))


SAMPLERS = {  # (seed, the study's total trials) -> sampler
    "tpe": lambda seed, trials: optuna.samplers.TPESampler(seed=seed, n_startup_trials=tpe_startup(trials)),
    "random": lambda seed, trials: optuna.samplers.RandomSampler(seed=seed),
}
# Median pruning from a trial's second evaluation: the first is mostly learning-rate warmup, where a
# small learning rate that ends best still trails (auto's race waits 3 epochs for the same reason).
FIRST_PRUNED_EVALUATION = 2
PRUNERS = {
    "median": lambda: optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=FIRST_PRUNED_EVALUATION),
    "successive-halving": lambda: optuna.pruners.SuccessiveHalvingPruner(),
    "hyperband": lambda: optuna.pruners.HyperbandPruner(),
    "none": lambda: optuna.pruners.NopPruner(),
}
DONE = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.FAIL)
HEARTBEAT_SECONDS, GRACE_SECONDS = 20, 60
KEEP_MODELS = ("best", "all")  # --keep-models: which trials save their model


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


class TrialLock:
    """Makes "is the budget spent? if not, start a trial" one step across every worker of a study, so
    the study ends with exactly --trials trials (MaxTrialsCallback counts after a trial ends: workers
    finishing together, or more workers than trials, overshoot). A file lock beside a local storage
    (SQLite file, journal); a session advisory lock on a PostgreSQL or MySQL server, which the server
    drops with a killed worker's connection. Released as the trial starts training."""

    def __init__(self, out: Path, url: str | None, study_name: str):
        self._file = self._conn = None
        self._held, self.exact = False, True
        if url is None or url.startswith("sqlite:///"):
            path = Path(url.removeprefix("sqlite:///") + ".lock") if url else out / ".trials.lock"
            self._file = open(path, "a+")  # noqa: SIM115  (held for the worker's life)
            return
        import sqlalchemy
        from sqlalchemy.pool import NullPool

        engine = sqlalchemy.create_engine(url, poolclass=NullPool)
        key = zlib.crc32(f"tunesmith search {study_name}".encode())
        sql = {
            "postgresql": ("SELECT pg_advisory_lock(:k)", "SELECT pg_advisory_unlock(:k)"),
            "mysql": ("SELECT GET_LOCK(CONCAT('tunesmith', :k), -1)", "SELECT RELEASE_LOCK(CONCAT('tunesmith', :k))"),
        }.get(engine.dialect.name)
        if sql is None:  # no lock to share: the total may exceed --trials by the workers running at its end
            self.exact = False
            return
        self._conn, self._sql, self._key = engine.connect(), [sqlalchemy.text(q) for q in sql], key

    def acquire(self) -> None:
        if self._file is not None:
            import fcntl

            fcntl.flock(self._file, fcntl.LOCK_EX)
        elif self._conn is not None:
            self._conn.execute(self._sql[0], {"k": self._key})
            self._conn.commit()
        self._held = True

    def release(self) -> None:
        if not self._held:
            return
        self._held = False
        if self._file is not None:
            import fcntl

            fcntl.flock(self._file, fcntl.LOCK_UN)
        elif self._conn is not None:
            self._conn.execute(self._sql[1], {"k": self._key})
            self._conn.commit()

    def close(self) -> None:
        self.release()
        for handle in (self._file, self._conn):
            if handle is not None:
                handle.close()


def budget_used(study) -> tuple[int, int]:
    """-> (trials that count against --trials, trials waiting to run). Every trial started counts
    (finished, pruned, failed or running), except one whose worker died: the heartbeat failed it and
    queued a retry (RetryHeartbeatStaleTrialCallback), which counts instead."""
    trials = study.get_trials(deepcopy=False)
    retried = {n for t in trials for n in t.system_attrs.get("retry_history", [])}
    waiting = sum(t.state == optuna.trial.TrialState.WAITING for t in trials)
    used = sum(t.state != optuna.trial.TrialState.WAITING and t.number not in retried for t in trials)
    return used, waiting


def run_trials(study, objective, trials: int, lock: TrialLock, callbacks=()) -> int:
    """Run trials until the study holds `trials` (all workers together); -> how many this worker ran.
    A trial that raises is recorded as failed (its error in the trial's user attrs) and the study goes
    on; a queued retry of a dead worker's trial runs first. Garbage is collected after each trial and
    what survives is frozen (gc.freeze), so the next collection walks only what later trials made, not
    every object of torch, transformers and the loaded model again (0.24 s a trial otherwise: a third
    of a head-only trial)."""
    ran = 0
    try:
        while True:
            lock.acquire()
            try:
                optuna.storages.fail_stale_trials(study)  # a dead worker's trial: failed, a retry queued
                used, waiting = budget_used(study)
                if used >= trials and not waiting:
                    return ran
            except BaseException:
                lock.release()
                raise

            def started(trial: optuna.Trial) -> float:
                lock.release()  # the trial exists now: the next worker may take the next one
                return objective(trial)

            try:
                study.optimize(started, n_trials=1, callbacks=list(callbacks), catch=(Exception,))
            finally:
                lock.release()
            ran += 1
            gc.collect()
            gc.freeze()
    finally:
        gc.unfreeze()


def sampler_seed(seed: int, existing: int, worker: int, shared: bool) -> int:
    """A seed per (study state, worker): the same study continued, or a second worker, would otherwise
    replay the first one's random start and sample the same parameters again. Workers on other
    machines (a shared storage URL) add their host and process."""
    where = f":{socket.gethostname()}:{os.getpid()}" if shared else ""
    return int.from_bytes(hashlib.sha256(f"{seed}:{existing}:{worker}{where}".encode()).digest()[:4], "little")


def _open(
    base: RunConfig, space: Space, out: Path, storage_url, study_name, sampler, pruner, workers, seed, trials, worker=0
):
    if sampler not in SAMPLERS:
        raise ConfigError(f"--sampler {sampler!r}: use one of {', '.join(SAMPLERS)}")
    if pruner not in PRUNERS:
        raise ConfigError(f"--pruner {pruner!r}: use one of {', '.join(PRUNERS)}")
    metric, lower = metric_of(base)
    study = make_study(
        storage_for(out, storage_url, workers),
        study_name,
        "minimize" if lower else "maximize",
        SAMPLERS[sampler](seed, trials),
        PRUNERS[pruner](),
    )
    existing = len(study.get_trials(deepcopy=False))
    study.sampler = SAMPLERS[sampler](sampler_seed(seed, existing, worker, storage_url is not None), trials)
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


def _objective(base: RunConfig, space: Space, out: Path, keep_models: str = "best"):
    metric, _ = metric_of(base)

    def objective(trial: optuna.Trial) -> float:
        values = space.suggest(trial)
        cfg = config_from_dict(with_params(base, values), f"trial {trial.number}")
        keep = best_so_far_only(trial, metric) if keep_models == "best" else None
        return run_trial(trial, cfg, out / "trials" / f"{trial.number:03d}", keep_weights=keep)

    return objective


def _worker(
    base_json, space_path, out, storage_url, study_name, sampler, pruner, workers, seed, trials, keep_models, worker
):
    """One worker process: runs trials until the study holds `trials`, reading the data once."""
    base = config_from_dict(base_json)
    from .space import load_space

    space = load_space(space_path, base)
    study, _ = _open(base, space, Path(out), storage_url, study_name, sampler, pruner, workers, seed, trials, worker)
    lock = TrialLock(Path(out), storage_url, study_name)
    try:
        with reuse_data():
            run_trials(study, _objective(base, space, Path(out), keep_models), trials, lock)
    finally:
        lock.close()


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
    keep_models: str = "best",
    quiet: bool = False,
) -> dict[str, Any]:
    """Run (or continue) the study to `trials` finished trials; write best.yaml, the best trial's one
    test score, the trial table and report.html. -> the summary written to out/search.json."""
    from .space import load_space

    if trials < 1:
        raise ConfigError("--trials must be at least 1")
    if workers < 1:
        raise ConfigError("--workers must be at least 1")
    if keep_models not in KEEP_MODELS:
        raise ConfigError(f"--keep-models {keep_models!r}: use one of {', '.join(KEEP_MODELS)}")
    out = Path(out)
    space = load_space(space_path, base)
    seed = base.train.seed
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    try:
        study, metric = _open(base, space, out, storage, study_name, sampler, pruner, workers, seed, trials)
    except BaseException:
        if created and not any(out.iterdir()):
            out.rmdir()  # a study that could not open leaves no empty folder behind
        raise
    reporter, t0 = Reporter(quiet), time.perf_counter()
    args = (base.model_dump(mode="json", exclude_unset=True), str(space_path), str(out), storage, study_name)
    args += (sampler, pruner, workers, seed, trials, keep_models)
    done_before, _ = budget_used(study)
    if trials < done_before:
        raise ConfigError(
            f"--trials {trials}: study {study_name!r} already holds {done_before} trials; give --trials above "
            f"{done_before} to continue it (or a new --study / --out)"
        )
    lock = TrialLock(out, storage, study_name)
    if not lock.exact:
        reporter.warn(f"{storage}: no shared lock on this database; the study may end a few trials above {trials}")
    reporter.info(
        f"search: study {study_name!r}, {done_before} of {trials} trials done; {sampler} sampler, {pruner} pruning "
        f"on validation {metric}; {workers} worker(s)"
    )
    with reporter.bar("trials", trials, unit="trials") as bar:
        bar.advance(min(done_before, trials))
        if workers == 1:

            def progress(study_, trial_):
                best = _best_value(study_)
                bar.advance(1, postfix="" if best is None else f"best {metric} {best:.4f}")

            try:
                with reuse_data():  # data read and encoded once for all the trials
                    run_trials(study, _objective(base, space, out, keep_models), trials, lock, [progress])
            finally:
                lock.close()
        else:
            lock.close()
            ctx = multiprocessing.get_context("spawn")
            procs = [ctx.Process(target=_worker, args=(*args, i + 1)) for i in range(workers)]
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
                "model_kept": t.user_attrs.get("model_kept", True),
                "intermediate": {str(k): v for k, v in sorted(t.intermediate_values.items())},
            }
        )
    sign = -1 if study.direction == optuna.study.StudyDirection.MAXIMIZE else 1
    order = {"complete": 0, "pruned": 1, "fail": 2}
    # equal values: a trial that kept its model first (workers finishing together: the one that finished
    # first saved it, whatever its number), then the lower number
    return sorted(
        rows,
        key=lambda r: (
            order.get(r["state"], 3),
            sign * (r["value"] or 0) if r["value"] is not None else 0,
            not r["model_kept"],
            r["number"],
        ),
    )


def too_close_to_call(run: Path, metric: str, best: dict[str, Any], complete: list[dict[str, Any]]) -> str | None:
    """Where other trials score within the best trial's 95% validation interval, the validation split cannot
    tell them from the best: say so, with how many and the interval."""
    from ..evaluation.intervals import half_width

    try:
        val = json.loads((run / "metrics.json").read_text(encoding="utf-8"))["validation"]
    except (OSError, ValueError, KeyError):
        return None
    hw = half_width((val.get("intervals") or {}).get(metric))
    if hw is None:
        return None
    close = [r["number"] for r in complete[1:] if r.get("value") is not None and abs(r["value"] - best["value"]) < hw]
    if not close:
        return None
    return (
        f"TOO CLOSE TO CALL: {len(close)} other trial(s) ({', '.join(map(str, close[:10]))}"
        f"{' ...' if len(close) > 10 else ''}) score within the best trial's 95% interval (+/-{hw:.4f} on "
        f"{val.get('n')} validation examples) of its validation {metric} {best['value']:.4f}: the validation "
        "split cannot tell them apart. More validation data (or --cv) would"
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
        # the resolved config, less what its strategy refuses to be given (head-only's solved head: epochs, lr)
        tree = STRATEGIES.get(tree["strategy"]["name"]).adapt(tree)
        best_cfg = config_from_dict(tree, "best trial")
        # only the keys the tree holds: a dump of every field would give head-only the epochs it refuses
        body = yaml.safe_dump(best_cfg.model_dump(mode="json", exclude_unset=True), sort_keys=False)
        (out / "best.yaml").write_text(
            f"# best trial {best['number']} of study {study.study_name!r}: validation {metric} {best['value']:.6f}\n"
            f"# reproduce: tunesmith train -c {out / 'best.yaml'} --out runs/best\n" + body,
            encoding="utf-8",
        )
        summary["best"] = {"number": best["number"], "value": best["value"], "params": best["params"], "run": str(run)}
        close = too_close_to_call(run, metric, best, complete)
        if close:
            summary["too_close_to_call"] = close
            reporter.warn(close)
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
