"""A head on frozen features, solved rather than trained: a convex problem (multinomial logistic
regression for a linear classifier), fitted to convergence by full-batch L-BFGS, with its L2
strength chosen by k-fold cross-validation on the training split alone. On cached features a solve
costs milliseconds, so the whole regularisation path costs less than one SGD epoch of old.

Generic: the loss is the task's own `compute_loss` on a batch of every row, the score is the task's
selection metric from `task.evaluate`; nothing here knows what the head predicts.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from .loop import FitResult

# sklearn LogisticRegressionCV's range: C from 1e-4 to 1e4 (C = 1 / (lambda * N) on a mean loss)
C_GRID = np.logspace(-4, 4, 9)
MAX_FOLDS = 5
CV_TOLERANCE, FINAL_TOLERANCE = 1e-5, 1e-7  # gradient norm at which a solve stops (CV solves only rank C)


def _folds(keys: Sequence | None, n: int, k: int, seed: int) -> list[np.ndarray]:
    """k held-out index sets; stratified by `keys` (e.g. classes) where given, each key spread round-robin."""
    rng = np.random.default_rng(seed)
    assign = np.empty(n, dtype=int)
    if keys is None:
        assign[rng.permutation(n)] = np.arange(n) % k
    else:
        keys = np.asarray([str(x) for x in keys])
        offset = 0
        for key in sorted(set(keys)):
            idx = rng.permutation(np.flatnonzero(keys == key))
            assign[idx] = (np.arange(len(idx)) + offset) % k
            offset += len(idx)
    return [np.flatnonzero(assign == f) for f in range(k)]


def _weights(head: torch.nn.Module) -> list[torch.Tensor]:
    return [p for p in head.parameters() if p.ndim >= 2]  # L2 on weight matrices, not biases


def _solve(model, task, batch: dict, lam: float, tolerance: float = FINAL_TOLERANCE) -> tuple[float, int]:
    """Minimise mean loss + lam/2 ||W||^2 over the head; -> (objective, iterations)."""
    head = model.head
    opt = torch.optim.LBFGS(
        list(head.parameters()),
        lr=1.0,
        max_iter=300 if tolerance > FINAL_TOLERANCE else 2000,
        tolerance_grad=tolerance,
        tolerance_change=1e-10,
        history_size=20,
        line_search_fn="strong_wolfe",
    )

    def closure():
        opt.zero_grad()
        loss = task.compute_loss(model, batch)["loss"] + 0.5 * lam * sum((w * w).sum() for w in _weights(head))
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        final = float(task.compute_loss(model, batch)["loss"] + 0.5 * lam * sum((w * w).sum() for w in _weights(head)))
    return final, int(opt.state[opt._params[0]].get("n_iter", 0))


def _score(task, model, rows, metric: str) -> float:
    return float(task.evaluate(model, rows, max(len(rows), 1), contextlib.nullcontext).metrics[metric])


def solve_head(model, task, train_rows, val_rows, train_cfg, keys, reporter, c: float | None = None) -> FitResult:
    """Fit `model.head` on feature rows: C chosen by k-fold CV on `train_rows` (unless given), then
    solved on all of them; scored on `val_rows` as one evaluation. `keys`: what folds stratify on."""
    t0 = time.perf_counter()
    metric = train_cfg.metric
    lower = metric in task.lower_is_better
    model.eval()  # dropout off: the solution is the head's deterministic optimum
    for p in model.backbone.parameters():
        p.requires_grad_(False)
    torch.manual_seed(train_cfg.seed)
    init = {k: v.detach().clone() for k, v in model.head.state_dict().items()}
    n = len(train_rows)
    cv: list[dict[str, Any]] = []
    if c is None:
        smallest = min(np.unique(np.asarray([str(x) for x in keys]), return_counts=True)[1]) if keys else n
        k = int(min(MAX_FOLDS, max(2, smallest), n))
        folds = _folds(keys, n, k, train_cfg.seed)
        scores = np.zeros((len(C_GRID), k))
        for f, held in enumerate(folds):
            held_set = set(held.tolist())
            fit_rows = [r for i, r in enumerate(train_rows) if i not in held_set]
            held_rows = [train_rows[i] for i in held]
            batch = task.collate(fit_rows)
            model.head.load_state_dict(init)
            for j, cj in enumerate(C_GRID):  # weak to strong: each solve warm-starts from the last
                _solve(model, task, batch, 1.0 / (cj * len(fit_rows)), CV_TOLERANCE)
                scores[j, f] = _score(task, model, held_rows, metric)
        mean = scores.mean(axis=1)
        best = int(np.argmin(mean) if lower else np.argmax(mean))  # ties: the strongest regularisation
        c = float(C_GRID[best])
        cv = [{"C": float(cj), "cv_score": float(m)} for cj, m in zip(C_GRID, mean)]
        how = f"C {c:g} chosen by {k}-fold cross-validation on the training split (CV {metric} {mean[best]:.4f})"
    else:
        k, how = 0, f"C {c:g} as set (strategy.head_c)"
    model.head.load_state_dict(init)
    objective, iters = _solve(model, task, task.collate(list(train_rows)), 1.0 / (c * n))
    ev = task.evaluate(model, val_rows, train_cfg.eval_batch_size, contextlib.nullcontext)
    record = {"epoch": 1, "step": iters, "train_loss": objective, **{m: ev.metrics[m] for m in task.metrics_tracked}}
    seconds = time.perf_counter() - t0
    reporter.info(
        f"head solved (L-BFGS, {iters} iterations): {how}; validation {metric} {record[metric]:.4f} in {seconds:.2f}s"
    )
    result = FitResult(history=[record], best=record, steps=iters, train_seconds=seconds, samples=n)
    result.solver = {
        "method": "L-BFGS, L2 on the weight matrices (multinomial logistic regression for a linear classifier)",
        "C": c,
        "folds": k,
        "cv": cv,
        "iterations": iters,
        "objective": objective if math.isfinite(objective) else None,
        "seconds": seconds,
    }
    return result
