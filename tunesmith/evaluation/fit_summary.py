"""Overfitting, said plainly: one or two sentences a user can act on, from the run's evaluations.

They say where validation loss turned up while training loss kept falling (overfitting, and which
weights were kept because of it), or that validation loss was still falling at the last evaluation
(the run may not have converged: more epochs may help), and the train/validation loss gap at the kept
weights. The same words go to metrics.json ("fit"), the console, report.html and the model card.
"""

from __future__ import annotations

from typing import Any

MIN_RISE = 2  # evaluations in a row above the lowest validation loss that call it overfitting


def _when(r: dict[str, Any]) -> str:
    return f"epoch {r['epoch']}" if r.get("epoch") is not None else f"step {r.get('step')}"


def fit_summary(history: list[dict[str, Any]], best: dict[str, Any] | None, metric_name: str) -> str:
    """history: the evaluations (validation "loss", "train_loss", "epoch", "step"); best: the kept one."""
    h = [r for r in history if r.get("loss") is not None]
    if not h:
        return ""
    kept = best or h[-1]
    gap = ""
    if kept.get("train_loss") is not None and kept.get("loss") is not None:
        gap = (
            f"At the kept weights ({_when(kept)}) training loss is {kept['train_loss']:.4f} and validation loss "
            f"{kept['loss']:.4f} (gap {kept['loss'] - kept['train_loss']:+.4f})."
        )
    if len(h) == 1:
        return f"One evaluation, so no curve to read. {gap}".strip()
    low = min(range(len(h)), key=lambda i: h[i]["loss"])
    after = h[low + 1 :]
    trains = [r.get("train_loss") for r in (h[low], h[-1])]
    train_fell = None not in trains and trains[1] < trains[0]
    if len(after) >= MIN_RISE and train_fell:
        said = (
            f"Validation loss rose for {len(after)} evaluations after {_when(h[low])} while training loss fell "
            f"({trains[0]:.4f} -> {trains[1]:.4f}): overfitting; the weights from {_when(kept)} were kept "
            f"(best validation {metric_name})."
        )
    elif after:
        said = (
            f"Validation loss was lowest at {_when(h[low])} and higher at the {len(after)} evaluation(s) after it; "
            f"the weights from {_when(kept)} were kept (best validation {metric_name})."
        )
    elif kept is h[-1] or kept.get("step") == h[-1].get("step"):
        said = (
            f"Validation loss was still falling at the last evaluation ({h[-2]['loss']:.4f} -> {h[-1]['loss']:.4f}) "
            f"and validation {metric_name} was best there: the run may not have converged; more epochs "
            "(train.epochs) may help."
        )
    else:
        said = (
            f"Validation loss was lowest at the last evaluation, but validation {metric_name} was best at "
            f"{_when(kept)}, whose weights were kept."
        )
    return f"{said} {gap}".strip()
