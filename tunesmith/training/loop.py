"""fit(): the one training loop. Read it top to bottom; every feature is a visible branch."""
from __future__ import annotations

import contextlib
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import set_seed

from ..data.batching import eval_batches, pad_waste, row_lengths, train_batches
from .checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint, set_rng_state
from ..strategies.base import count_params
from .optim import build_optimizer, refresh_param_groups, warmup_linear_decay
from .precision import accelerate_mixed_precision


# What each evaluation records in the history (and the metrics train.metric may pick from), unless
# the task names its own (speech recognition: loss, wer, cer).
CLASSIFICATION_METRICS = ("loss", "accuracy", "macro_f1")
LOWER_IS_BETTER = {"loss", "wer", "cer"}


@dataclass
class EvalOutput:
    loss: float
    predictions: list  # class ids (classification) or transcripts (speech recognition)
    probabilities: np.ndarray | None  # classification only
    metrics: dict[str, Any]
    details: list[dict] | None = None  # per-example scores where the task gives them (speech: WER per utterance)


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


def make_accelerator(precision: str, grad_accum: int) -> Accelerator:
    """One Accelerator per run. accelerate keeps its state process-wide; a previous run in this
    process (tests, search, the Python API) may have used another precision, so reset it while
    keeping the distributed (partial) state."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state()
    return Accelerator(mixed_precision=accelerate_mixed_precision(precision),
                       gradient_accumulation_steps=grad_accum)


@torch.no_grad()
def evaluate_rows(model, task, rows: Sequence[dict], batch_size: int, autocast: Callable,
                  reporter=None, what: str = "eval") -> EvalOutput:
    """Loss, predictions and probabilities in input order, batched by length for speed."""
    if hasattr(task, "evaluate"):
        # A task that generates its output (speech recognition) scores itself: batched generate(),
        # then WER/CER. Classification below needs only logits.
        metrics, predictions, details = task.evaluate(model, rows, batch_size, autocast)
        return EvalOutput(metrics.get("loss", float("nan")), predictions, None, metrics, details)
    was_training = model.training
    model.eval()
    lengths = row_lengths(rows)
    logits_all: list[torch.Tensor | None] = [None] * len(rows)
    loss_sum = 0.0
    bar_ctx = reporter.bar(what, len(rows)) if reporter is not None else contextlib.nullcontext()
    with bar_ctx as bar:
        for idx in eval_batches(lengths, batch_size):
            batch = task.collate([rows[i] for i in idx])
            batch = {k: v.to(_device(model)) for k, v in batch.items()}
            with autocast():
                out = task.compute_loss(model, batch)
            loss_sum += out["loss"].item() * len(idx)
            for j, i in enumerate(idx):
                logits_all[i] = out["logits"][j].float().cpu()
            if bar is not None:
                bar.advance(len(idx))
    model.train(was_training)
    logits = torch.stack(logits_all)  # type: ignore[arg-type]
    probs = torch.softmax(logits, dim=-1).numpy()
    preds = probs.argmax(-1).tolist()
    refs = [r["label"] for r in rows]
    metrics = task.metrics(preds, refs)
    metrics["loss"] = loss_sum / len(rows)
    return EvalOutput(metrics["loss"], preds, probs, metrics)


def _device(model) -> torch.device:
    return next(model.parameters()).device


def _improved(record: dict[str, Any], best: dict[str, Any] | None, metric: str) -> bool:
    if best is None:
        return True
    value, ref = record[metric], best[metric]
    if metric in ("wer", "cer") and abs(value - ref) <= 1e-12:
        # Error rates tie often on a small validation set (a few dozen utterances); the lower
        # validation loss breaks the tie rather than the earliest evaluation winning.
        return record["loss"] < best["loss"] - 1e-12
    return value < ref - 1e-12 if metric in LOWER_IS_BETTER else value > ref + 1e-12


def fit(model, task, strategy, train_rows: Sequence[dict], val_rows: Sequence[dict], train_cfg,
        accelerator: Accelerator, checkpoint_dir: Path, reporter, resume: bool = False) -> FitResult:
    """Train `model` in place; at the end it holds the best weights seen on validation."""
    tc = train_cfg
    set_seed(tc.seed)
    history_metrics = getattr(task, "history_metrics", CLASSIFICATION_METRICS)
    result = FitResult()

    # Where to start: a resumed run re-enters its epoch, so strategies whose trainable set changes
    # by epoch or step (gradual) rebuild that set before the optimizer state is loaded into it.
    ckpt = latest_checkpoint(checkpoint_dir) if resume else None
    saved = json.loads((ckpt / "state.json").read_text()) if ckpt else {"epoch": 0, "step": 0}
    strategy.on_epoch_start(model, saved["epoch"])
    strategy.on_step(model, saved["step"])

    # Which weights train, at which learning rates.
    groups = strategy.param_groups(model, tc)
    optimizer = build_optimizer(groups, tc.lr, accelerator.device.type)
    lengths = row_lengths(train_rows)
    batches_per_epoch = math.ceil(len(train_rows) / tc.batch_size)
    steps_per_epoch = math.ceil(batches_per_epoch / tc.grad_accum)
    total_steps = steps_per_epoch * tc.epochs
    scheduler = warmup_linear_decay(optimizer, total_steps, tc.warmup_ratio)
    model, optimizer = accelerator.prepare(model, optimizer)
    raw_model = accelerator.unwrap_model(model)

    # Loop state: everything needed to continue exactly after a crash.
    state: dict[str, Any] = {"epoch": 0, "batch_in_epoch": 0, "step": 0, "best_value": None, "best_eval": None,
                             "evals_since_best": 0, "history": [], "stopped_early": False,
                             "train_seconds": 0.0, "samples": 0, "tokens": 0, "loss_window": []}
    best_weights: dict[str, torch.Tensor] | None = None
    if ckpt is not None:
        loaded = load_checkpoint(ckpt)
        raw_model.load_state_dict(loaded["weights"], strict=False)
        optimizer.load_state_dict(loaded["optimizer"])
        scheduler.load_state_dict(loaded["scheduler"])
        set_rng_state(loaded["rng"])
        best_weights = loaded["best"]
        state = loaded["state"]
        result.resumed_from_step = state["step"]
        reporter.info(f"resumed from {ckpt.name} (epoch {state['epoch'] + 1}, step {state['step']})")

    def run_eval(epoch: int) -> dict[str, Any]:
        """Evaluate after `epoch` (1-based: the epoch in progress, or just finished)."""
        nonlocal best_weights
        ev = evaluate_rows(model, task, val_rows, tc.eval_batch_size, accelerator.autocast)
        window = state["loss_window"]
        state["loss_window"] = []
        record = {"epoch": epoch, "step": state["step"],
                  "train_loss": float(np.mean(window)) if window else None,
                  **{k: ev.metrics[k] for k in history_metrics}}
        state["history"].append(record)
        value = record[tc.metric]
        if _improved(record, state["best_eval"], tc.metric):
            state["best_value"], state["best_eval"], state["evals_since_best"] = value, record, 0
            best_weights = strategy.trainable_state(raw_model)
        else:
            state["evals_since_best"] += 1
        patience = tc.early_stopping_patience
        if patience is not None and state["evals_since_best"] >= patience:
            state["stopped_early"] = True
        reporter.info(f"  step {record['step']}: " + "  ".join(f"val {k} {record[k]:.4f}" for k in history_metrics)
                      + ("  (best)" if state["evals_since_best"] == 0 else ""))
        return record

    def checkpoint() -> None:
        save_checkpoint(checkpoint_dir, state["step"], strategy.trainable_state(raw_model), best_weights,
                        optimizer, scheduler, state)

    model.train()
    while state["epoch"] < tc.epochs and not state["stopped_early"]:
        epoch = state["epoch"]
        if strategy.on_epoch_start(raw_model, epoch):
            refresh_param_groups(optimizer, scheduler, strategy.param_groups(raw_model, tc))
            reporter.info(f"epoch {epoch + 1}: {count_params(raw_model).describe()}")
        batches = train_batches(lengths, tc.batch_size, tc.seed, epoch, tc.group_size, tc.length_grouping)
        batches = batches[accelerator.process_index::accelerator.num_processes]
        if epoch == 0:
            result.pad_waste = pad_waste(batches, lengths)
        start_batch = state["batch_in_epoch"]
        with reporter.bar(f"epoch {epoch + 1}/{tc.epochs}", sum(len(b) for b in batches)) as bar:
            bar.advance(sum(len(b) for b in batches[:start_batch]))
            t0 = time.perf_counter()
            for bi in range(start_batch, len(batches)):
                idx = batches[bi]
                batch = task.collate([train_rows[i] for i in idx])
                batch = {k: v.to(accelerator.device) for k, v in batch.items()}
                sync = (bi + 1) % tc.grad_accum == 0 or bi == len(batches) - 1
                ctx = contextlib.nullcontext() if sync else accelerator.no_sync(model)
                with ctx:
                    out = task.compute_loss(model, batch)
                    accelerator.backward(out["loss"] / tc.grad_accum)
                state["loss_window"].append(out["loss"].item())
                state["samples"] += len(idx)
                if "attention_mask" in batch:
                    state["tokens"] += int(batch["attention_mask"].sum())
                if sync:
                    if tc.max_grad_norm is not None:
                        accelerator.clip_grad_norm_(model.parameters(), tc.max_grad_norm)
                    optimizer.step()
                    scheduler.step()
                    optimizer.zero_grad(set_to_none=True)
                    state["step"] += 1
                    if strategy.on_step(raw_model, state["step"]):  # gradual unfreezing by steps
                        refresh_param_groups(optimizer, scheduler, strategy.param_groups(raw_model, tc))
                state["batch_in_epoch"] = bi + 1
                bar.advance(len(idx), postfix=f"loss {np.mean(state['loss_window'][-20:]):.4f}")
                if sync and tc.eval_every and state["step"] % tc.eval_every == 0:
                    state["train_seconds"] += time.perf_counter() - t0
                    run_eval(epoch + 1)
                    t0 = time.perf_counter()
                    if state["stopped_early"]:
                        break
                if sync and tc.checkpoint_every and state["step"] % tc.checkpoint_every == 0:
                    state["train_seconds"] += time.perf_counter() - t0
                    checkpoint()
                    t0 = time.perf_counter()
            state["train_seconds"] += time.perf_counter() - t0
        if state["stopped_early"]:
            break
        state["epoch"] += 1
        state["batch_in_epoch"] = 0
        if not tc.eval_every:
            run_eval(state["epoch"])
        if not tc.checkpoint_every:
            checkpoint()

    if tc.eval_every and (not state["history"] or state["history"][-1]["step"] != state["step"]) \
            and not state["stopped_early"]:
        run_eval(state["epoch"])  # the last steps since the previous evaluation also compete for best
    if state["stopped_early"]:
        reporter.info(f"early stopping: no {tc.metric} improvement in {tc.early_stopping_patience} evaluations")
    if best_weights is not None:
        raw_model.load_state_dict(best_weights, strict=False)
    result.history = state["history"]
    result.best = state["best_eval"]
    result.stopped_early = state["stopped_early"]
    result.steps = state["step"]
    result.train_seconds = state["train_seconds"]
    result.samples = state["samples"]
    result.tokens = state["tokens"]
    return result
