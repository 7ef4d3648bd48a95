"""Predictor: a finished run folder -> predictions, with the run's own head, labels and preprocessing."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch

from ..data.batching import eval_batches, row_lengths
from ..modalities import inputs_for
from ..models.run_format import load_model


class Predictor:
    def __init__(self, folder: str | Path, device: str = "cpu", batch_size: int = 64):
        self.folder = Path(folder)
        self.model, self.task, self.preprocessor, self.meta = load_model(self.folder, device)
        self.inputs = inputs_for(self.task.modality)
        self.batch_size = batch_size
        self.device = torch.device(device)
        self.max_length = self.meta.get("max_length")

    @property
    def labels(self) -> list[str]:
        return list(self.task.labels)

    @property
    def tokenizer(self):
        return self.preprocessor

    @torch.no_grad()
    def logits_for(self, examples) -> torch.Tensor:
        """Logits for examples read by the run's modality (texts, or image paths/bytes)."""
        rows = self.inputs.encode(self.task, self.preprocessor, examples, self.max_length)
        out = torch.empty(len(rows), len(self.task.labels))
        for idx in eval_batches(row_lengths(rows), self.batch_size):
            batch = self.task.collate([{k: v for k, v in rows[i].items() if k != "cache_key"} for i in idx])
            out[idx] = self.model({k: v.to(self.device) for k, v in batch.items()}).float().cpu()
        return out

    @torch.no_grad()
    def transcribe_examples(self, examples) -> list[str]:
        """Speech recognition: transcripts in input order, by the run's own greedy decoding (batched)."""
        import contextlib

        rows = self.inputs.encode(self.task, self.preprocessor, examples)
        _, texts, _ = self.task.evaluate(self.model, rows, self.batch_size, contextlib.nullcontext)
        return texts

    def transcribe(self, inputs: Sequence[Any]) -> list[str]:
        return self.transcribe_examples(self.inputs.examples_from_inputs(list(inputs)))

    def logits(self, inputs: Sequence[Any], pairs: Sequence[str] | None = None) -> torch.Tensor:
        return self.logits_for(self.inputs.examples_from_inputs(list(inputs), pairs))

    def predict(self, inputs: Any, pairs: Sequence[str] | None = None) -> list[dict[str, Any]]:
        """One dict per input: {"input", "label", "score", "scores"}; speech recognition: {"input", "text"}."""
        if isinstance(inputs, (str, bytes, Path)):
            inputs = [inputs]
        inputs = list(inputs)
        if not inputs:
            return []
        if getattr(self.task, "generates_text", False):
            decoded = [{"text": t} for t in self.transcribe(inputs)]
        else:
            decoded = self.task.decode(self.logits(inputs, pairs))
        shown = [x if isinstance(x, str) else str(x) if isinstance(x, Path) else f"input {i + 1}"
                 for i, x in enumerate(inputs)]
        return [{"input": s, **d} for s, d in zip(shown, decoded)]


def load(folder: str | Path, device: str = "cpu") -> Predictor:
    """tunesmith.load(out) -> a Predictor for a finished run folder."""
    return Predictor(folder, device)
