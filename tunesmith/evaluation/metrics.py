"""Classification metrics from scikit-learn, named by label."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support


def classification_metrics(pred: np.ndarray, ref: np.ndarray, labels: Sequence[str]) -> dict[str, Any]:
    ids = list(range(len(labels)))
    p, r, f, s = precision_recall_fscore_support(ref, pred, labels=ids, zero_division=0)
    return {
        "accuracy": float(accuracy_score(ref, pred)),
        "macro_f1": float(f1_score(ref, pred, labels=ids, average="macro", zero_division=0)),
        "per_class": {
            label: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(s[i])}
            for i, label in enumerate(labels)
        },
        "confusion_matrix": {
            "labels": list(labels),
            "matrix": confusion_matrix(ref, pred, labels=ids).tolist(),
        },
        "n": int(len(ref)),
    }
