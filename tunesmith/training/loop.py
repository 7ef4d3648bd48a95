"""fit(): the one training loop. Read it top to bottom; every feature is a visible branch."""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import set_seed

from ..data.batching import pad_waste, row_lengths, train_batches
from ..precision import accelerate_mixed_precision
from ..strategies.base import count_params
from .checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint, set_rng_state
from .optim import build_optimizer, refresh_param_groups, warmup_linear_decay


@dataclass
class FitState:
    """Everything the loop needs to continue exactly after a crash; saved in every checkpoint."""

    epoch: int = 0  # epochs finished
    batch_in_epoch: int = 0  # batches of the current epoch already trained
    step: int = 0  # optimizer steps taken
    best: dict[str, Any] | None = None  # the evaluation whose weights are kept
    evals_since_best: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    stopped_early: bool = False
    train_seconds: float = 0.0
    samples: int = 0
    tokens: int = 0  # non-pad tokens seen by the backbone
    loss_window: list[float] = field(default_factory=list)  # training losses since the last evaluation

    @classmethod
    def from_dict(cls, saved: dict[str, Any]) -> FitState:
        saved = dict(saved)
        if "best_eval" in saved:  # checkpoints written before FitState named it "best_eval"
            saved["best"] = saved.pop("best_eval")
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in saved.items() if k in known})


@dataclass
class FitResult:
    history: list[dict[str, Any]] = field(default_factory=list)
    best: dict[str, Any] | None = None  # the evaluation whose weights were kept
    stopped_early: bool = False
    steps: int = 0
    train_seconds: float = 0.0
    samples: int = 0
    tokens: int = 0  # non-pad tokens seen by the backbone
    pad_waste: float = 0.0
    resumed_from_step: int | None = None
    solver: dict[str, Any] | None = None  # a head solved instead of trained (training/solve.py): how


def make_accelerator(precision: str, grad_accum: int, log_to=(), project_dir: Path | None = None) -> Accelerator:
    """One Accelerator per run. accelerate keeps its state process-wide; a previous run in this
    process (tests, search, the Python API) may have used another precision, so reset it while
    keeping the distributed (partial) state. `log_to`: accelerate's trackers (train.log_to), writing
    under `project_dir`."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state()
    return Accelerator(
        mixed_precision=accelerate_mixed_precision(precision),
        gradient_accumulation_steps=grad_accum,
        log_with=list(log_to) or None,
        project_dir=str(project_dir) if project_dir is not None and log_to else None,
    )


def record_evaluation(
    state: FitState, record: dict[str, Any], task, metric: str, patience: int | None, keep: str = "best"
) -> bool:
    """Add an evaluation to the history; True when its weights are the ones to keep so far: the best
    (keep "best"), or every latest one (keep "last": a fixed schedule, never stopped early). Early
    stopping is decided here: `patience` evaluations in a row without improvement stop the run."""
    state.history.append(record)
    improved = keep == "last" or task.improved(record, state.best, metric)
    if improved:
        state.best, state.evals_since_best = record, 0
    else:
        state.evals_since_best += 1
    if patience is not None and state.evals_since_best >= patience:
        state.stopped_early = True
    return improved


def fit(
    model,
    task,
    strategy,
    train_rows: Sequence[dict],
    val_rows: Sequence[dict],
    train_cfg,
    accelerator: Accelerator,
    checkpoint_dir: Path,
    reporter,
    resume: bool = False,
    on_evaluation=None,
) -> FitResult:
    """Train `model` in place; at the end it holds the best weights seen on validation.

    `on_evaluation(record)` is called after each validation evaluation (the record the history
    keeps, plus `final`: true when the run ends after it, at its last step or stopped early): a
    hyperparameter search reports it to its pruner there, and may raise to stop the run."""
    tc = train_cfg
    set_seed(tc.seed)
    result = FitResult()

    # Where to start: a resumed run re-enters its epoch, so strategies whose trainable set changes
    # by epoch or step (gradual) rebuild that set before the optimizer state is loaded into it.
    ckpt = latest_checkpoint(checkpoint_dir) if resume else None
    saved = json.loads((ckpt / "state.json").read_text()) if ckpt else {"epoch": 0, "step": 0}
    strategy.on_epoch_start(model, saved["epoch"])
    strategy.on_step(model, saved["step"])

    # Which weights train, at which learning rates.
    optimizer = build_optimizer(strategy.param_groups(model, tc), tc.lr, accelerator.device.type)
    lengths = row_lengths(train_rows)
    steps_per_epoch = math.ceil(math.ceil(len(train_rows) / tc.batch_size) / tc.grad_accum)
    scheduler = warmup_linear_decay(optimizer, steps_per_epoch * tc.epochs, tc.warmup_ratio)
    model, optimizer = accelerator.prepare(model, optimizer)
    raw_model = accelerator.unwrap_model(model)

    state = FitState()
    best_weights: dict[str, torch.Tensor] | None = None
    if ckpt is not None:
        loaded = load_checkpoint(ckpt)
        raw_model.load_state_dict(loaded["weights"], strict=False)
        optimizer.load_state_dict(loaded["optimizer"])
        scheduler.load_state_dict(loaded["scheduler"])
        set_rng_state(loaded["rng"])
        best_weights = loaded["best"]
        state = FitState.from_dict(loaded["state"])
        result.resumed_from_step = state.step
        reporter.info(f"resumed from {ckpt.name} (epoch {state.epoch + 1}, step {state.step})")

    def trainable_set_changed() -> None:
        """The strategy unfroze more weights: they train from now on. Weights frozen until now still
        hold their values at the best evaluation, so the best snapshot records them before they move:
        restoring it then gives the very model that evaluation scored."""
        refresh_param_groups(optimizer, scheduler, strategy.param_groups(raw_model, tc))
        if best_weights is not None:
            for name, tensor in strategy.trainable_state(raw_model).items():
                best_weights.setdefault(name, tensor)

    def evaluate(epoch: int, final: bool) -> None:
        """Evaluate after `epoch` (1-based: the epoch in progress, or just finished); `final`: the
        run's last step is done."""
        nonlocal best_weights
        ev = task.evaluate(model, val_rows, tc.eval_batch_size, accelerator.autocast, tracked_only=True)
        window, state.loss_window = state.loss_window, []
        record = {
            "epoch": epoch,
            "step": state.step,
            "train_loss": float(np.mean(window)) if window else None,
            **{k: ev.metrics[k] for k in task.metrics_tracked},
        }
        if record_evaluation(state, record, task, tc.metric, tc.early_stopping_patience, tc.keep):
            best_weights = strategy.trainable_state(raw_model)
        reporter.info(
            f"  step {record['step']}: "
            + "  ".join(f"val {k} {record[k]:.4f}" for k in task.metrics_tracked)
            + (f"  ({'kept' if tc.keep == 'last' else 'best'})" if state.evals_since_best == 0 else "")
        )
        if on_evaluation is not None:
            on_evaluation({**record, "final": final or state.stopped_early})

    def checkpoint() -> None:
        save_checkpoint(
            checkpoint_dir,
            state.step,
            strategy.trainable_state(raw_model),
            best_weights,
            optimizer,
            scheduler,
            asdict(state),
        )

    model.train()
    while state.epoch < tc.epochs and not state.stopped_early:
        epoch = state.epoch
        if strategy.on_epoch_start(raw_model, epoch):
            trainable_set_changed()
            reporter.info(f"epoch {epoch + 1}: {count_params(raw_model).describe()}")
        batches = train_batches(lengths, tc.batch_size, tc.seed, epoch, tc.group_size, tc.length_grouping)
        batches = batches[accelerator.process_index :: accelerator.num_processes]
        if epoch == 0:
            result.pad_waste = pad_waste(batches, lengths)
        start_batch = state.batch_in_epoch
        with reporter.bar(f"epoch {epoch + 1}/{tc.epochs}", sum(len(b) for b in batches)) as bar:
            bar.advance(sum(len(b) for b in batches[:start_batch]))
            t0 = time.perf_counter()
            for bi in range(start_batch, len(batches)):
                idx = batches[bi]
                batch = {k: v.to(accelerator.device) for k, v in task.collate([train_rows[i] for i in idx]).items()}
                sync = (bi + 1) % tc.grad_accum == 0 or bi == len(batches) - 1
                with contextlib.nullcontext() if sync else accelerator.no_sync(model):
                    out = task.compute_loss(model, batch)
                    # accelerate divides by gradient_accumulation_steps itself: pass the batch's mean loss
                    accelerator.backward(out["loss"])
                state.loss_window.append(out["loss"].item())
                state.samples += len(idx)
                state.tokens += task.tokens(batch)
                if sync:
                    if tc.max_grad_norm is not None:
                        accelerator.clip_grad_norm_(model.parameters(), tc.max_grad_norm)
                    optimizer.step()
                    scheduler.step()
                    optimizer.zero_grad(set_to_none=True)
                    state.step += 1
                    if strategy.on_step(raw_model, state.step):  # gradual unfreezing by steps
                        trainable_set_changed()
                state.batch_in_epoch = bi + 1
                bar.advance(len(idx), postfix=f"loss {np.mean(state.loss_window[-20:]):.4f}")
                if sync and tc.eval_every and state.step % tc.eval_every == 0:
                    state.train_seconds += time.perf_counter() - t0
                    evaluate(epoch + 1, final=epoch + 1 == tc.epochs and bi == len(batches) - 1)
                    t0 = time.perf_counter()
                    if state.stopped_early:
                        break
                if sync and tc.checkpoint_every and state.step % tc.checkpoint_every == 0:
                    state.train_seconds += time.perf_counter() - t0
                    checkpoint()
                    t0 = time.perf_counter()
            state.train_seconds += time.perf_counter() - t0
        if state.stopped_early:
            break
        state.epoch += 1
        state.batch_in_epoch = 0
        if not tc.eval_every:
            evaluate(state.epoch, final=state.epoch >= tc.epochs)
        if not tc.checkpoint_every:
            checkpoint()

    if tc.eval_every and (not state.history or state.history[-1]["step"] != state.step) and not state.stopped_early:
        evaluate(state.epoch, final=True)  # the last steps since the previous evaluation also compete for best
    if state.stopped_early:
        reporter.info(f"early stopping: no {tc.metric} improvement in {tc.early_stopping_patience} evaluations")
    if best_weights is not None:
        raw_model.load_state_dict(best_weights, strict=False)
    result.history, result.best, result.stopped_early = state.history, state.best, state.stopped_early
    result.steps, result.train_seconds = state.step, state.train_seconds
    result.samples, result.tokens = state.samples, state.tokens
    return result
