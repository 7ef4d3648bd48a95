"""Stratified validation split: each class keeps its share, and every class keeps training rows."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import numpy as np


def stratified_split(labels: Sequence[str], fraction: float, seed: int) -> tuple[list[int], list[int], list[str]]:
    """-> (train indices, validation indices, warnings). Classes with one example stay in training."""
    by_class: dict[str, list[int]] = defaultdict(list)
    for i, y in enumerate(labels):
        by_class[y].append(i)
    rng = np.random.default_rng(seed)
    train, val, warnings = [], [], []
    for label in sorted(by_class):
        idx = np.array(by_class[label])
        rng.shuffle(idx)
        n = len(idx)
        n_val = min(max(1, round(n * fraction)), n - 1) if n >= 2 else 0
        if n_val == 0:
            warnings.append(f"class {label!r} has 1 example: none held out, so validation cannot score it")
        val.extend(idx[:n_val].tolist())
        train.extend(idx[n_val:].tolist())
    return sorted(train), sorted(val), warnings
