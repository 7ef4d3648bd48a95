"""Predictor: a finished run folder -> predictions, with the run's own head, labels and preprocessing."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch

from ..data.batching import eval_batches
from ..errors import DataError
from ..models.run_format import load_model


class Predictor:
    def __init__(self, folder: str | Path, device: str = "cpu", batch_size: int = 64):
        self.folder = Path(folder)
        self.model, self.task, self.tokenizer, self.meta = load_model(self.folder, device)
        self.batch_size = batch_size
        self.device = torch.device(device)
        self.max_length = int(self.meta["max_length"])

    @property
    def labels(self) -> list[str]:
        return list(self.task.labels)

    @torch.no_grad()
    def logits(self, texts: Sequence[str], pairs: Sequence[str] | None = None) -> torch.Tensor:
        for i, t in enumerate(texts):
            if not isinstance(t, str) or not t.strip():
                raise DataError(f"input {i + 1} is empty or not text: {t!r}")
        rows = self.task.encode(self.tokenizer, texts, pairs, self.max_length)
        out = torch.empty(len(rows), len(self.task.labels))
        for idx in eval_batches([len(r["input_ids"]) for r in rows], self.batch_size):
            batch = {k: v.to(self.device) for k, v in self.task.collate([rows[i] for i in idx]).items()}
            out[idx] = self.model(batch).float().cpu()
        return out

    def predict(self, texts: str | Sequence[str], pairs: Sequence[str] | None = None) -> list[dict[str, Any]]:
        """One dict per input: {"input", "label", "score", "scores"}."""
        if isinstance(texts, str):
            texts = [texts]
        texts = list(texts)
        if not texts:
            return []
        decoded = self.task.decode(self.logits(texts, pairs))
        return [{"input": t, **d} for t, d in zip(texts, decoded)]


def load(folder: str | Path, device: str = "cpu") -> Predictor:
    """tunesmith.load(out) -> a Predictor for a finished run folder."""
    return Predictor(folder, device)
