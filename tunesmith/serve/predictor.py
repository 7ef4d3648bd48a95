"""Predictor: a finished run folder -> predictions, with the run's own head, labels and preprocessing."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..formats import load_run
from ..modalities import MODALITIES
from ..tasks.base import EvalOutput

PREDICT_BLOCK = 1  # batches decoded and preprocessed at a time by predict() (the next one while the model runs)
# preprocessed rows predict() holds before running them: rows held together are length-sorted and batched
# together (text: every input of a call at once; on 1,000 tweets, blocks of 8 batches ran ~15% fewer inputs/s
# than one evaluation of all), while large rows (pixels: ~0.6 MB an image) run about two batches at a time,
# overlapping the decoding of the next block
PREDICT_HELD_BYTES = 64 * 2**20


def row_nbytes(row: dict[str, Any]) -> int:
    """What a preprocessed row holds, in bytes: its tensors and arrays, 8 bytes per element of a list (the
    int64 / float64 it becomes in a batch)."""
    total = 0
    for v in row.values():
        if isinstance(v, (torch.Tensor, np.ndarray)):
            total += v.nbytes
        elif isinstance(v, (list, tuple)):
            total += 8 * len(v)
    return total


class Predictor:
    """`merge_adapters`: a LoRA run's adapters are folded into its weights once, at load, so each forward
    pass (each generated token) costs what the plain model's does; `export --merge` loads without, to
    check the merged weights against the adapters."""

    def __init__(
        self,
        folder: str | Path,
        device: str = "cpu",
        batch_size: int = 64,
        merge_adapters: bool = True,
        precision: str = "fp32",
    ):
        from ..precision import resolve_precision

        self.folder = Path(folder)
        # fp32: exactly what training measured; bf16 (autocast): faster where the CPU computes bf16 fast (AMX),
        # scores within about 1e-2; auto picks bf16 only where it measured faster here
        self.precision = resolve_precision(precision)
        if self.precision not in ("fp32", "bf16"):
            raise ValueError(f"precision {precision!r}: choose fp32, bf16 or auto")
        self.model, self.task, self.meta = load_run(self.folder, device)
        if merge_adapters and self.meta.get("lora") is not None:
            from ..strategies.lora import merge_lora

            merge_lora(self.model.backbone.encoder)  # nothing to do where the run saved them merged
        self.modality = MODALITIES.get(self.task.modality)()
        self.batch_size = batch_size
        self.device = torch.device(device)

    @property
    def labels(self) -> list[str]:
        return list(self.task.labels)

    @property
    def preprocessor(self):
        return self.task.preprocessor

    @torch.no_grad()
    def outputs(self, inputs: Sequence[Any], pairs: Sequence[str] | None = None) -> EvalOutput:
        """The model's outputs for `inputs` (texts, or image / audio paths or bytes), in input order."""
        return self._evaluate(self._rows(inputs, pairs))

    def _rows(self, inputs: Sequence[Any], pairs: Sequence[str] | None) -> list[dict]:
        return self.task.encode(self.modality.examples_from_inputs(list(inputs), pairs))

    def _evaluate(self, rows: list[dict]) -> EvalOutput:
        return self.task.evaluate(self.model, rows, self.batch_size, self._autocast)

    def _autocast(self):
        if self.precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def logits(self, inputs: Sequence[Any], pairs: Sequence[str] | None = None) -> torch.Tensor:
        """Scores per label before softmax, for tasks that output labels."""
        ev = self.outputs(inputs, pairs)
        if ev.logits is None:
            raise TypeError(f"a {self.task.name} model outputs {self.task.output}, not scores per label")
        return torch.as_tensor(ev.logits)

    def predict(self, inputs: Any, pairs: Sequence[str] | None = None) -> list[dict[str, Any]]:
        """One dict per input: "input" and the task's output (classifiers: label, score and scores;
        recognisers: the transcript)."""
        if isinstance(inputs, (str, bytes, Path)):
            inputs = [inputs]
        inputs = list(inputs)
        if not inputs:
            return []
        # in blocks: inputs are decoded and preprocessed a block at a time, and rows are run once they hold
        # PREDICT_HELD_BYTES, so memory stays bounded however many are given (800 images at once held ~0.5 GB of
        # pixels before the first batch); small rows (tokens) gather into one evaluation, batched by length.
        # The next block is decoded in a worker thread while the model runs (ResNet-18 int8 ONNX, 800 images:
        # 113.9 -> 124.5 images/s, bench/inference.py)
        block = PREDICT_BLOCK * self.batch_size
        spans = [(at, min(at + block, len(inputs))) for at in range(0, len(inputs), block)]

        def rows_of(span: tuple[int, int]) -> list[dict]:
            a, b = span
            return self._rows(inputs[a:b], pairs[a:b] if pairs is not None else None)

        decoded, held, held_bytes = [], [], 0
        for part in _decoded_ahead(rows_of, spans):
            held += part
            held_bytes += sum(row_nbytes(r) for r in part)
            if held_bytes >= PREDICT_HELD_BYTES:
                decoded += self.task.decode(self._evaluate(held))
                held, held_bytes = [], 0
        if held:
            decoded += self.task.decode(self._evaluate(held))
        shown = [
            x if isinstance(x, str) else str(x) if isinstance(x, Path) else f"input {i + 1}"
            for i, x in enumerate(inputs)
        ]
        return [{"input": s, **d} for s, d in zip(shown, decoded)]


def _decoded_ahead(rows_of, spans: list[tuple[int, int]]):
    """rows_of(span) for each span in order, the next one computed in a worker thread while the caller works on
    the one it was given (one span: no thread)."""
    if len(spans) == 1:
        yield rows_of(spans[0])
        return
    with ThreadPoolExecutor(1, thread_name_prefix="tunesmith-decode") as pool:
        upcoming = pool.submit(rows_of, spans[0])
        for span in spans[1:]:
            part = upcoming.result()
            upcoming = pool.submit(rows_of, span)
            yield part
        yield upcoming.result()


def load(folder: str | Path, device: str = "cpu", merge_adapters: bool = True, precision: str = "fp32") -> Predictor:
    """tunesmith.load(out) -> a Predictor for a finished run folder (or an ONNX export of one).
    precision: fp32 (default: the scores training measured), bf16 or auto (bf16 where it is faster here)."""
    return Predictor(folder, device, merge_adapters=merge_adapters, precision=precision)
