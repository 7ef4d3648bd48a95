"""Check rows before any model loads: every problem names the file, the rows and the fix."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ..errors import DataError
from .sources import read_table

_SHOW = 5  # row numbers shown per problem


@dataclass
class TextExamples:
    source: str
    texts: list[str]
    pairs: list[str] | None
    labels: list[str] | None
    skipped: list[tuple[str, str]] = field(default_factory=list)  # text rows are never skipped; the field is shared

    def __len__(self) -> int:
        return len(self.texts)

    display_column = "text"  # how reports head the column of display(i)

    def display(self, i: int) -> str:
        return self.texts[i] if self.pairs is None else f"{self.texts[i]}\n⟷ {self.pairs[i]}"

    def dedup_keys(self) -> list:
        """Equal keys: the same example (text and pair), e.g. a train/validation leak."""
        return [(t, self.pairs[i] if self.pairs is not None else None) for i, t in enumerate(self.texts)]

    def subset(self, idx: Sequence[int], source: str | None = None) -> TextExamples:
        return TextExamples(
            source or self.source,
            [self.texts[i] for i in idx],
            [self.pairs[i] for i in idx] if self.pairs is not None else None,
            [self.labels[i] for i in idx] if self.labels is not None else None,
        )


@dataclass
class Preflight:
    warnings: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (input, reason) skipped on request


def _rows(idx: list[int]) -> str:
    shown = ", ".join(str(i + 1) for i in idx[:_SHOW])
    more = f" and {len(idx) - _SHOW} more" if len(idx) > _SHOW else ""
    return f"row{'s' if len(idx) > 1 else ''} {shown}{more}"


def _is_missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NA


def _label_str(v: Any) -> str:
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v).strip()


def _column(df: pd.DataFrame, name: str, path: str, what: str, flag: str) -> list[Any]:
    if name not in df.columns:
        found = ", ".join(repr(str(c)) for c in df.columns)
        raise DataError(f"{path}: no {what} column {name!r}. Columns found: {found}. Set it with {flag}.")
    return df[name].tolist()


def _texts(values: list[Any], path: str, column: str, start: int = 0) -> list[str]:
    """`start`: the data row of values[0] (a streamed batch's place in its file)."""
    empty = [start + i for i, v in enumerate(values) if _is_missing(v) or not str(v).strip()]
    if empty:
        raise DataError(
            f"{path}: empty text in column {column!r} at {_rows(empty)} (data rows, header excluded). "
            "Remove these rows or fill in their text."
        )
    return [v if isinstance(v, str) else str(v) for v in values]


def text_examples(
    path: str,
    text_column: str,
    label_column: str,
    pair_column: str | None = None,
    require_labels: bool = True,
    role: str = "data",
) -> TextExamples:
    df = read_table(path, role)
    texts = _texts(_column(df, text_column, path, "text", "--text-column"), path, text_column)
    pairs = None
    if pair_column:
        pairs = _texts(_column(df, pair_column, path, "text-pair", "--text-pair-column"), path, pair_column)
    labels = table_labels(path, df, label_column) if require_labels else None
    return TextExamples(path, texts, pairs, labels)


def table_labels(path: str, df, label_column: str) -> list[str]:
    """A table's label column (text, image and audio tables alike): every row needs one."""
    return labels_of(_column(df, label_column, path, "label", "--label-column"), path, label_column)


def labels_of(raw: list[Any], path: str, label_column: str, start: int = 0) -> list[str]:
    """Label values -> label strings; a missing one is a DataError naming its data row (`start`: the row of
    raw[0], a streamed batch's place in its file)."""
    unlabelled = [start + i for i, v in enumerate(raw) if _is_missing(v) or not str(v).strip()]
    if unlabelled:
        raise DataError(
            f"{path}: missing label (empty or NaN) in column {label_column!r} at {_rows(unlabelled)}. "
            "Every training and validation row needs a label: fill them in or drop those rows."
        )
    return [_label_str(v) for v in raw]


def check_train_validation(train, val, report: Preflight) -> None:
    """Cross-set checks: enough classes, no unseen validation labels; warn on leaks and imbalance."""
    counts = Counter(train.labels)
    if len(counts) < 2:
        only = next(iter(counts))
        raise DataError(
            f"{train.source}: every training row has the label {only!r}; a classifier needs at least two "
            "classes. Check --label-column, or add examples of the other classes."
        )
    if val is not None:
        unseen = sorted(set(val.labels) - set(counts))
        if unseen:
            rows = [i for i, y in enumerate(val.labels) if y in set(unseen)]
            raise DataError(
                f"{val.source}: validation label{'s' if len(unseen) > 1 else ''} "
                f"{', '.join(repr(u) for u in unseen)} never appear in the training data ({_rows(rows)}). "
                f"Training labels: {', '.join(repr(c) for c in sorted(counts))}. Fix the spelling, add training "
                "examples of that class, or drop those rows."
            )
        warn_of_leaks(train, val, report, "examples", "scores")
    most, least = counts.most_common()[0], counts.most_common()[-1]
    if most[1] >= 10 * least[1]:
        dist = ", ".join(f"{k}: {v}" for k, v in counts.most_common())
        report.warnings.append(
            f"heavy class imbalance in {train.source} ({dist}): {least[0]!r} has {most[1] / least[1]:.0f}x "
            f"fewer examples than {most[0]!r}; watch per-class recall and macro-F1, not accuracy."
        )


def warn_of_leaks(train, val, report, items: str, scores: str) -> None:
    """Validation examples that also appear in the training data (equal dedup keys) make validation
    `scores` optimistic: a warning naming them (`items`: examples, clips, conversations)."""
    train_keys, val_keys = train.dedup_keys(), val.dedup_keys()
    if isinstance(val_keys, np.ndarray):  # streamed data: one 64-bit hash per example, compared without a set
        dup = np.flatnonzero(np.isin(val_keys, np.asarray(train_keys))).tolist()
    else:
        train_keys = set(train_keys)
        dup = [i for i, k in enumerate(val_keys) if k in train_keys]
    if dup:
        report.warnings.append(
            f"{len(dup)} of {len(val)} validation {items} also appear in the training data "
            f"({val.source} {_rows(dup)}): validation {scores} will be optimistic."
        )
