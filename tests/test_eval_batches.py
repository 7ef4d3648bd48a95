"""Evaluation batches cut by padding cost: a server's gathered requests or a small validation split of mixed
lengths is split into batches of similar lengths, every row once, never more padding than fixed-size batches."""

import numpy as np

from tunesmith.data.batching import CALL_OVERHEAD_TOKENS, eval_batches, pad_waste


def _check_cover(batches, n, batch_size):
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(n))
    assert all(1 <= len(b) <= batch_size for b in batches)


def test_mixed_lengths_are_split_with_less_padding():
    rng = np.random.default_rng(0)
    lengths = rng.integers(8, 64, size=30).tolist()  # what 30 gathered requests look like
    fixed = eval_batches(lengths, 64)
    cut = eval_batches(lengths, 64, CALL_OVERHEAD_TOKENS)
    _check_cover(cut, 30, 64)
    assert len(fixed) == 1 and len(cut) > 1
    assert pad_waste(cut, lengths) < pad_waste(fixed, lengths) / 2
    # the cost it minimises: padded tokens plus one call's overhead per batch
    cost = lambda bs: sum(max(lengths[i] for i in b) * len(b) + CALL_OVERHEAD_TOKENS for b in bs)  # noqa: E731
    assert cost(cut) <= cost(fixed)


def test_equal_lengths_keep_full_batches():
    assert eval_batches([1] * 130, 64, CALL_OVERHEAD_TOKENS) == eval_batches([1] * 130, 64)
    assert [len(b) for b in eval_batches([1] * 130, 64, CALL_OVERHEAD_TOKENS)] == [64, 64, 2]


def test_batch_size_is_respected_and_similar_lengths_stay_together():
    lengths = [40] * 100 + [10] * 100
    cut = eval_batches(lengths, 32, CALL_OVERHEAD_TOKENS)
    _check_cover(cut, 200, 32)
    assert all(len({lengths[i] for i in b}) == 1 for b in cut)  # no batch mixes the two lengths
    assert pad_waste(cut, lengths) == 0.0


def test_cut_only_at_full_precision():
    import contextlib

    import torch

    from tunesmith.data.batching import call_overhead_for

    assert call_overhead_for(contextlib.nullcontext, "cpu") == CALL_OVERHEAD_TOKENS
    assert call_overhead_for(lambda: torch.autocast("cpu", dtype=torch.bfloat16), "cpu") is None
