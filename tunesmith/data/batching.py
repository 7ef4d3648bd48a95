"""Length-grouped batches that stay random.

Padding waste, not framework overhead, decides CPU fine-tuning speed (shared/MEASUREMENTS.md):
random batches waste ~40% of the compute on pads. Fully length-sorted batches waste almost none
but cost accuracy, because each batch then holds only similar-length (often similar-label)
examples. We shuffle, cut the shuffled order into windows of `group_size` batches, sort inside
each window and shuffle the batch order: pads fall to a few percent while every batch is still a
random draw from a window of the data.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class _Counted(Protocol):
    def lengths(self) -> np.ndarray: ...  # each row's token count


def train_batches(
    lengths: Sequence[int], batch_size: int, seed: int, epoch: int, group_size: int = 8, grouping: bool = True
) -> list[list[int]]:
    """Batches for one epoch, a pure function of (seed, epoch): resume needs no sampler state."""
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(lengths))
    if not grouping:
        return [order[i : i + batch_size].tolist() for i in range(0, len(order), batch_size)]
    lengths = np.asarray(lengths)
    window = batch_size * group_size
    batches = []
    for start in range(0, len(order), window):
        chunk = order[start : start + window]
        chunk = chunk[np.argsort(-lengths[chunk], kind="stable")]
        batches.extend(chunk[i : i + batch_size].tolist() for i in range(0, len(chunk), batch_size))
    perm = rng.permutation(len(batches))
    return [batches[i] for i in perm]


# What one more forward call costs beside its tokens, in tokens: measured on all-MiniLM-L6-v2 at fp32 on 2 cores
# (500 length-sorted tweets: batches of 8 against 32 cost 7.7 ms per extra call, ~74 tokens' worth). Larger models
# spend relatively less per call, so this overstates theirs: they get fewer, larger batches, never more padding
# than fixed-size batches would have.
CALL_OVERHEAD_TOKENS = 64
# Under bf16 autocast (a token costs about half as much, a call more: weights re-cast, new batch shapes) cutting
# did not pay: 500 tweets in calls of 30, MiniLM on 2 AMX cores, 267 inputs/s at 64 and 396 at 512 against 370
# with fixed batches, and no gain over fixed batches for 500 at once; so callers under autocast keep fixed batches.


def call_overhead_for(autocast, device_type: str) -> int | None:
    """eval_batches' `call_overhead` argument for batches run under `autocast()`: CALL_OVERHEAD_TOKENS at full
    precision, None (fixed-size batches) where it lowers precision."""
    import torch

    with autocast():
        return None if torch.is_autocast_enabled(device_type) else CALL_OVERHEAD_TOKENS


def eval_batches(lengths: Sequence[int], batch_size: int, call_overhead: int | None = None) -> list[list[int]]:
    """Sorted by length (least padding); callers put results back in input order. `call_overhead` (tokens, e.g.
    CALL_OVERHEAD_TOKENS): batches of up to `batch_size` rows cut where padded tokens plus `call_overhead` per
    batch is least, so a small mixed-length set (the 30 requests a server gathers: one batch pads them to the
    longest, ~40% waste) becomes a few batches of similar lengths. None: fixed-size batches."""
    lengths = np.asarray(lengths, dtype=np.int64)
    order = np.argsort(-lengths, kind="stable")
    n = len(order)
    ls = lengths[order]
    if call_overhead is None or n <= 1 or ls[0] == ls[-1]:
        return [order[i : i + batch_size].tolist() for i in range(0, n, batch_size)]
    # cost[j]: the least cost of the first j sorted rows; a batch [i, j) costs ls[i] * (j - i) + call_overhead
    # (ls descends: its first row is its longest); ties go to the longer batch
    cost = np.zeros(n + 1)
    start = np.zeros(n + 1, dtype=np.int64)
    for j in range(1, n + 1):
        i0 = max(0, j - batch_size)
        options = cost[i0:j] + ls[i0:j] * (j - np.arange(i0, j)) + call_overhead
        k = int(np.argmin(options))
        cost[j], start[j] = options[k], i0 + k
    cuts, j = [], n
    while j > 0:
        cuts.append((int(start[j]), j))
        j = int(start[j])
    return [order[i:j].tolist() for i, j in reversed(cuts)]


def pad_waste(batches: list[list[int]], lengths: Sequence[int]) -> float:
    lengths = np.asarray(lengths)
    real = padded = 0
    for b in batches:
        ls = lengths[b]
        real += int(ls.sum())
        padded += int(ls.max()) * len(b)
    return 1.0 - real / max(padded, 1)


def row_lengths(rows: Sequence[dict]) -> list[int]:
    """Token counts for text rows; 1 for fixed-size inputs (images, features), where order is free. Rows
    that count their own (rows mapped from a disk cache: `lengths()`) are not read one by one."""
    if isinstance(rows, _Counted):
        return rows.lengths().tolist()
    return [len(r["input_ids"]) if "input_ids" in r else 1 for r in rows]
