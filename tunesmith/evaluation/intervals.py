"""95% confidence intervals for the metrics a run reports: how far the true score (on more data from the
same source) may be from the one measured on a small held-out split.

- accuracy: the Wilson score interval (a proportion; right near 0 and 1 and for small n, where the
  normal approximation is not).
- macro-F1, WER / CER, perplexity: the percentile bootstrap over examples (utterances, conversations),
  resampling whole examples with multinomial weights, all resamples at once: a metric that is a
  function of per-example sums (true positives per class, word errors and words, token losses and
  tokens) is recomputed from the weighted sums, so 1,000 resamples of thousands of rows cost
  milliseconds. Seeded: the same rows give the same interval.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

Z95 = 1.959963984540054
BOOTSTRAP_RESAMPLES = 1000
_CHUNK = 200  # resamples per matrix product: bounds memory at _CHUNK x rows weights


def wilson(successes: int, n: int, z: float = Z95) -> list[float]:
    """[low, high] of the Wilson score interval for successes / n."""
    if n <= 0:
        return [0.0, 1.0]
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return [max(0.0, centre - half), min(1.0, centre + half)]


def bootstrap(
    per_example: np.ndarray,
    statistic: Callable[[np.ndarray], np.ndarray],
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = 0,
) -> list[float]:
    """[low, high]: the 2.5th and 97.5th percentiles of `statistic` over bootstrap resamples of the rows
    of `per_example` ([examples, columns]); `statistic` maps column sums ([resamples, columns]) to one
    value per resample."""
    x = np.asarray(per_example, dtype=np.float64)
    n = x.shape[0]
    if n == 0:
        return [math.nan, math.nan]
    rng = np.random.default_rng(seed)
    values = []
    for start in range(0, resamples, _CHUNK):
        k = min(_CHUNK, resamples - start)
        weights = rng.multinomial(n, np.full(n, 1.0 / n), size=k).astype(np.float64)  # [k, n]
        values.append(np.asarray(statistic(weights @ x), dtype=np.float64))
    v = np.concatenate(values)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return [math.nan, math.nan]
    return [float(np.percentile(v, 2.5)), float(np.percentile(v, 97.5))]


def ratio(sums: np.ndarray) -> np.ndarray:
    """column 0 / column 1 (errors / words): WER, CER."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return sums[:, 0] / sums[:, 1]


def exp_ratio(sums: np.ndarray) -> np.ndarray:
    """exp(column 0 / column 1) (token loss / tokens): perplexity."""
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        return np.exp(np.minimum(sums[:, 0] / sums[:, 1], 50.0))


def macro_f1_columns(pred: np.ndarray, ref: np.ndarray, classes: int) -> np.ndarray:
    """Per-example columns whose sums give each class's true positives, predicted and true counts."""
    p = np.eye(classes)[np.asarray(pred, dtype=int)]
    t = np.eye(classes)[np.asarray(ref, dtype=int)]
    return np.concatenate([p * t, p, t], axis=1)


def macro_f1_from_sums(classes: int) -> Callable[[np.ndarray], np.ndarray]:
    """Macro-F1 over every class (scikit-learn's average="macro", zero_division=0) from those sums."""

    def f1(sums: np.ndarray) -> np.ndarray:
        tp, predicted, true = (sums[:, i * classes : (i + 1) * classes] for i in range(3))
        denom = predicted + true
        with np.errstate(divide="ignore", invalid="ignore"):
            per_class = np.where(denom > 0, 2 * tp / np.where(denom > 0, denom, 1), 0.0)
        return per_class.mean(axis=1)

    return f1


def classification_intervals(pred: np.ndarray, ref: np.ndarray, classes: int) -> dict[str, list[float]]:
    pred, ref = np.asarray(pred, dtype=int), np.asarray(ref, dtype=int)
    return {
        "accuracy": wilson(int((pred == ref).sum()), len(ref)),
        "macro_f1": bootstrap(macro_f1_columns(pred, ref, classes), macro_f1_from_sums(classes)),
    }


def half_width(interval: list[float] | None) -> float | None:
    if not interval or any(not math.isfinite(v) for v in interval):
        return None
    return (interval[1] - interval[0]) / 2


def format_interval(interval: list[float] | None, fmt: str = "{:.4f}") -> str:
    """' (95% CI 0.8123-0.8712)', or '' where there is none."""
    if not interval or any(not math.isfinite(v) for v in interval):
        return ""
    return f" (95% CI {fmt.format(interval[0])}-{fmt.format(interval[1])})"
