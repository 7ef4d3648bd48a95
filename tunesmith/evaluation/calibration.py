"""Calibration of a classifier's scores: does "0.9" come true 90% of the time?

- expected calibration error (ECE): top-label, 15 equal-width confidence bins, the bins' |accuracy -
  confidence| weighted by their share of examples (Guo et al. 2017);
- the reliability diagram: accuracy against confidence per bin, with the diagonal of perfect calibration;
- temperature scaling: one scalar T > 0 fitted on validation logits by minimising the negative
  log-likelihood of softmax(logits / T) (L-BFGS on log T); dividing the head's last linear layer by T
  applies it inside the saved model, so every way of loading it gives the calibrated scores, and no
  prediction changes (argmax is unchanged by a positive scale).
"""

from __future__ import annotations

import numpy as np
import torch

BINS = 15


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def reliability(probs: np.ndarray, labels: np.ndarray, bins: int = BINS) -> list[dict]:
    """Per non-empty bin: its confidence range, mean confidence, accuracy and count."""
    conf, pred = probs.max(axis=-1), probs.argmax(axis=-1)
    correct = pred == np.asarray(labels)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, bins - 1)
    out = []
    for b in range(bins):
        m = which == b
        if m.any():
            out.append(
                {
                    "low": float(edges[b]),
                    "high": float(edges[b + 1]),
                    "confidence": float(conf[m].mean()),
                    "accuracy": float(correct[m].mean()),
                    "count": int(m.sum()),
                }
            )
    return out


def ece(probs: np.ndarray, labels: np.ndarray, bins: int = BINS) -> float:
    n = len(labels)
    if n == 0:
        return float("nan")
    return float(sum(b["count"] / n * abs(b["accuracy"] - b["confidence"]) for b in reliability(probs, labels, bins)))


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """T minimising the mean NLL of softmax(logits / T) on these rows (float64, L-BFGS on log T)."""
    x = torch.as_tensor(np.asarray(logits), dtype=torch.float64)
    y = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    log_t = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=0.5, max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(x / log_t.exp(), y)
        loss.backward()
        return loss

    opt.step(closure)
    return float(log_t.detach().exp().clamp(1e-2, 1e2))


def reliability_png(probs: np.ndarray, labels: np.ndarray, png) -> str:
    """The reliability diagram as the report's inline PNG (`png`: the report's figure encoder)."""
    import matplotlib.pyplot as plt

    bins = reliability(probs, labels)
    fig, ax = plt.subplots(figsize=(4.2, 4.0), dpi=100)
    ax.plot([0, 1], [0, 1], "--", color="grey", linewidth=1, label="perfect calibration")
    if bins:
        ax.bar(
            [(b["low"] + b["high"]) / 2 for b in bins],
            [b["accuracy"] for b in bins],
            width=1.0 / BINS * 0.9,
            alpha=0.7,
            label="accuracy in bin",
        )
        ax.plot([b["confidence"] for b in bins], [b["accuracy"] for b in bins], "o", color="C1", markersize=4)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence (top label's probability)")
    ax.set_ylabel("accuracy")
    ax.set_title(f"reliability (ECE {ece(probs, labels):.3f})")
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    return png(fig)
