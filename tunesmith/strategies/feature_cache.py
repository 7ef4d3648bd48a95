"""Frozen-backbone features, computed once and cached on disk.

The key covers the model (a hash of its weight and config files), the pooling, the precision and
the exact token ids fed in (so the tokenizer, max_length and the data itself), so a second run on
the same data reads features and never runs the backbone. Within one process, rows are also kept one
by one (`_ROWS`), so another set of the same rows (a cross-validation fold, a curve's sample) runs only
its new rows through the backbone.
"""

from __future__ import annotations

import hashlib
import os
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ..data.batching import call_overhead_for, eval_batches, row_lengths

_FINGERPRINTS: dict[tuple, str] = {}
# Per-row features this process has computed or read, by model, pooling, precision and row: cross-validation
# folds, seeds and curve sizes are other sets of the same rows, so each row runs through the backbone once.
# (A row's features come from whatever batch it was first computed in: equal to a fresh batch's to ~1e-7.)
_ROWS: OrderedDict[str, torch.Tensor] = OrderedDict()
MAX_ROWS_KEPT = 100_000


def cache_dir() -> Path:
    root = os.environ.get("TUNESMITH_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "tunesmith"
    )
    return Path(root)


def model_fingerprint(folder: Path) -> str:
    """sha256 of the files that define the model's outputs; memoised per (path, size, mtime)."""
    files = sorted(
        p for p in Path(folder).iterdir() if p.is_file() and (p.suffix == ".safetensors" or p.name == "config.json")
    )
    stamp = tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in files)
    if stamp not in _FINGERPRINTS:
        h = hashlib.sha256()
        for p in files:
            h.update(p.name.encode())
            with open(p, "rb") as f:
                for block in iter(lambda: f.read(1 << 22), b""):
                    h.update(block)
        _FINGERPRINTS[stamp] = h.hexdigest()
    return _FINGERPRINTS[stamp]


def _row_identity(r: dict) -> str:
    """What decides one row's features: its token ids, or (images, audio) its content hash + preprocessing."""
    ident = r["cache_key"] if "cache_key" in r else (r["input_ids"], r.get("token_type_ids"))
    return hashlib.sha1(repr(ident).encode()).hexdigest()


def _remember(keys: Sequence[str], feats: torch.Tensor) -> None:
    """Keep each row's features under its key, most recent last; the oldest go past MAX_ROWS_KEPT."""
    for k, f in zip(keys, feats):
        _ROWS[k] = f
        _ROWS.move_to_end(k)
    while len(_ROWS) > MAX_ROWS_KEPT:
        _ROWS.popitem(last=False)


def features_key(model_fp: str, pooling: str, precision: str, rows: Sequence[dict]) -> str:
    h = hashlib.sha256(f"v1|{model_fp}|{pooling}|{precision}|".encode())
    for r in rows:
        # what decides the backbone's output: token ids, or (images) content hash + preprocessing
        h.update(repr(r["cache_key"] if "cache_key" in r else (r["input_ids"], r.get("token_type_ids"))).encode())
        h.update(b"\n")
    return h.hexdigest()[:32]


@torch.no_grad()
def compute_features(
    backbone, collate, rows: Sequence[dict], batch_size: int, autocast, reporter, what: str
) -> torch.Tensor:
    backbone.eval()
    out = torch.empty(len(rows), backbone.feature_dim)
    lengths = row_lengths(rows)
    with reporter.bar(f"features ({what})", len(rows)) as bar:
        device_type = next(backbone.parameters()).device.type
        for idx in eval_batches(lengths, batch_size, call_overhead_for(autocast, device_type)):
            batch = collate([{k: v for k, v in rows[i].items() if k not in ("label", "cache_key")} for i in idx])
            with autocast():
                feats = backbone.forward_features(batch)
            out[idx] = feats.float()
            bar.advance(len(idx))
    return out


def cached_features(
    backbone,
    model_folder: Path,
    collate,
    rows: Sequence[dict],
    batch_size: int,
    precision: str,
    autocast,
    reporter,
    what: str,
    variant: str = "",
) -> tuple[torch.Tensor, bool]:
    """-> (features [N, D], True if read from the cache). `variant`: what else makes the backbone's weights
    differ from the folder's (a from-scratch re-initialisation and its seed)."""
    model_fp = model_fingerprint(model_folder) + variant
    key = features_key(model_fp, backbone.pooling, precision, rows)
    path = cache_dir() / "features" / f"{key}.safetensors"
    prefix = f"{cache_dir()}|{model_fp}|{backbone.pooling}|{precision}|"  # one cache: its folder and this view
    if path.is_file():
        try:
            feats = load_file(path)["features"]
            _remember([prefix + _row_identity(r) for r in rows], feats)
            return feats, True
        except Exception:  # a damaged cache file is recomputed, and says so
            reporter.warn(f"feature cache {path} is unreadable; recomputing")
    # rows this process has already run through the same backbone (another fold, seed or curve size) are
    # reused; only the others go through it
    keys = [prefix + _row_identity(r) for r in rows]
    todo = [i for i, k in enumerate(keys) if k not in _ROWS]
    fresh = compute_features(backbone, collate, [rows[i] for i in todo], batch_size, autocast, reporter, what)
    new = dict(zip((keys[i] for i in todo), fresh))
    feats = torch.stack([new[k] if k in new else _ROWS[k] for k in keys]) if rows else fresh
    _remember(keys, feats)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    save_file({"features": feats.contiguous()}, str(tmp))
    os.replace(tmp, path)
    return feats, not todo
