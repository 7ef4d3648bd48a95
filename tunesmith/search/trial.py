"""One trial: an ordinary run folder made by api.finetune, its validation evaluations reported to
Optuna's pruner as they happen. Shared by `tunesmith search` and `--strategy auto`'s race."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import optuna

from ..config import RunConfig
from ..run_folder import METRICS_FILE


def best_so_far_only(trial: optuna.Trial, metric: str) -> Callable[[dict], str | None]:
    """keep_weights for a study that keeps the best trials' models only: a trial whose validation value
    does not beat every finished trial's (read as it finishes, so with several workers too) says why not.
    Of the trials sharing the final best value, the first to finish saw none of the others finished, so
    it saved its model; with workers finishing together that need not be the lowest number, and the
    study's selection (trial_rows) puts a trial that kept its model first among equals."""

    def why_not(metrics: dict) -> str | None:
        study, value = trial.study, float(metrics[metric])
        done = [t.value for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))]
        if not done:
            return None
        lower = study.direction == optuna.study.StudyDirection.MINIMIZE
        best = min(done) if lower else max(done)
        if (value < best) if lower else (value > best):
            return None
        return (
            f"trial {trial.number}'s validation {metric} {value:.4f} did not beat the study's best so far "
            f"({best:.4f}); `tunesmith search --keep-models all` keeps every trial's model"
        )

    return why_not


def metric_of(cfg: RunConfig) -> tuple[str, bool]:
    """-> (the validation metric that selects, True when lower is better)."""
    from ..tasks import TASKS

    task_cls = TASKS.get(cfg.task)
    metric = cfg.train.metric or task_cls.default_metric
    return metric, metric in task_cls.lower_is_better


def run_trial(
    trial: optuna.Trial,
    cfg: RunConfig,
    out: Path,
    *,
    quiet: bool = True,
    stop: Callable[[], str | None] | None = None,
    keep_weights: Callable[[dict], str | None] | None = None,
) -> float:
    """Train `cfg` into `out` (its test split removed: trials select on validation only), reporting
    each evaluation's metric at its epoch; pruned when the pruner or `stop()` (a spent budget: it
    returns why) says so, except at the run's final evaluation, which completes the trial;
    `keep_weights` as in api.finetune. -> the run's validation value of the metric (its kept model's)."""
    from ..api import finetune

    metric, _ = metric_of(cfg)
    cfg = cfg.model_copy(deep=True)
    cfg.out, cfg.data.test = str(out), None
    t0 = time.perf_counter()
    epochs: list[int] = []

    def on_evaluation(record: dict) -> None:
        epochs.append(record["epoch"])
        trial.report(float(record[metric]), step=int(record["epoch"]))
        if record.get("final"):  # the run ends here anyway: stopping it now would only lose its score
            return
        why = stop() if stop is not None else None
        if why:
            trial.set_user_attr("pruned_at", record["epoch"])
            raise optuna.TrialPruned(why)
        if trial.should_prune():
            trial.set_user_attr("pruned_at", record["epoch"])
            raise optuna.TrialPruned(f"pruned at epoch {record['epoch']} ({metric} {record[metric]:.4f})")

    trial.set_user_attr("run", str(out))
    trial.set_user_attr("strategy", cfg.strategy.name)
    try:
        result = finetune(cfg, quiet=quiet, overwrite=True, on_evaluation=on_evaluation, keep_weights=keep_weights)
    except optuna.TrialPruned:
        trial.set_user_attr("epochs_run", max(epochs, default=0))
        trial.set_user_attr("seconds", time.perf_counter() - t0)
        raise
    except Exception as e:
        trial.set_user_attr("error", f"{type(e).__name__}: {e}")
        trial.set_user_attr("seconds", time.perf_counter() - t0)
        raise
    trial.set_user_attr("seconds", time.perf_counter() - t0)
    trial.set_user_attr("epochs_run", max(epochs, default=0))
    trial.set_user_attr("model_kept", "model" in result.files)
    trial.set_user_attr("train_seconds", result.timings.get("train_seconds"))  # training alone, not loading or saving
    best = json.loads((Path(out) / METRICS_FILE).read_text(encoding="utf-8")).get("best_evaluation") or {}
    trial.set_user_attr("best_epoch", best.get("epoch"))
    trial.set_user_attr("best_train_loss", best.get("train_loss"))  # what a refit of it should come near
    trial.set_user_attr("best_validation_loss", best.get("loss"))  # breaks a tie in the metric (auto's race)
    return float(result.metrics[metric])
