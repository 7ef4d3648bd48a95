"""Modalities: what differs between text, images, audio and transcribed audio before a model sees
a batch: reading examples from files, what `predict` accepts, and probe inputs for parity checks.

Tasks name their modality; api.finetune, the Predictor, the CLI and export go through the
registered Modality and never ask which one they hold. Encoding examples into model rows belongs
to the task (it knows its preprocessor and targets), built from the helpers each modality module
offers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, Protocol

from ..registry import Registry


class Examples(Protocol):
    """What a modality reads: one entry per example, plus where it came from."""

    source: str
    labels: list[str] | None  # class names where the data has them
    skipped: list[tuple[str, str]]  # (input, reason) skipped on request (--skip-bad-*)

    def __len__(self) -> int: ...

    def subset(self, idx: Sequence[int], source: str | None = None) -> Examples: ...

    def dedup_keys(self) -> list: ...  # equal keys: the same example (a train/validation leak)

    def display(self, i: int) -> str: ...  # how reports show example i (its text, or the file's name)


class Modality(Protocol):
    name: ClassVar[str]
    example_input: ClassVar[str]  # what a model card's how-to-load snippet passes to predict, e.g. "clip.wav"

    def read(self, path: str, data_cfg, role: str, require_labels: bool = True, reporter=None) -> Examples: ...

    def examples_from_inputs(self, inputs: Sequence[Any], pairs: Sequence[str] | None = None) -> Examples: ...

    def predict_inputs(self, examples) -> tuple[list, list | None]: ...  # rows of `predict --file`: (inputs, pairs)

    def probe_inputs(self, examples, n: int) -> list: ...  # export parity probes: real rows if any, else made up

    # predict's inputs as transformers.pipeline takes them (texts, decoded images, decoded clips)
    def pipeline_inputs(self, inputs: list, preprocessor) -> list: ...


MODALITIES: Registry = Registry("modality")


def file_inputs(inputs, file_kind: str, expected: str) -> list:
    """What `predict` was given for a file modality (paths or encoded bytes) -> items to decode:
    bytes as they are, paths resolved and checked to exist, anything else refused naming the input."""
    from pathlib import Path

    from ..errors import DataError

    items: list = []
    for i, x in enumerate(inputs):
        if isinstance(x, (bytes, bytearray)):
            items.append(bytes(x))
        elif isinstance(x, (str, Path)):
            p = Path(x)
            if not p.is_file():
                raise DataError(f"input {i + 1}: {file_kind} not found: {p}")
            items.append(str(p.resolve()))
        else:
            raise DataError(f"input {i + 1}: expected {expected}, got {type(x).__name__}")
    return items


from . import audio, conversations, image, speech, text  # noqa: E402,F401  (register themselves)

__all__ = ["MODALITIES", "Modality", "Examples", "file_inputs"]
