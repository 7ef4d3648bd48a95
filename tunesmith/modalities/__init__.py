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

    # the server's JSON "inputs" -> what `predict` takes, each checked against `limits` (serve/app.py:
    # Limits); a bad one raises RequestError naming it. Never a path: a request reads no server file.
    def from_request(self, values: list, limits) -> list: ...

    request_kind: ClassVar[str]  # what one JSON input is, for the API docs and the web page: string, file, messages
    # the content types a file input may be uploaded as (multipart; "image/*": any image); () where inputs are not files
    media_types: ClassVar[tuple[str, ...]]
    # data.streaming: `read` walks a training file in batches into a memory-mapped cache (data larger than memory)
    streams: ClassVar[bool]


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


def request_texts(values: list, limits, what: str = "a non-empty string") -> list[str]:
    """JSON inputs that must each be text no longer than limits.max_text_chars."""
    from ..errors import RequestError

    for i, v in enumerate(values):
        if not isinstance(v, str) or not v.strip():
            raise RequestError(f"inputs[{i}]", f"expected {what}, got {type(v).__name__ if v else repr(v)}")
        if len(v) > limits.max_text_chars:
            raise RequestError(
                f"inputs[{i}]", f"{len(v)} characters, more than the server allows ({limits.max_text_chars})", 413
            )
    return list(values)


def request_files(values: list, limits, kind: str) -> list[bytes]:
    """JSON inputs that must each be a base64-encoded file (an image, a clip) of at most
    limits.max_file_bytes once decoded: bytes, never a path."""
    import base64
    import binascii

    from ..errors import RequestError

    out = []
    for i, v in enumerate(values):
        if not isinstance(v, str) or not v:
            raise RequestError(f"inputs[{i}]", f"expected a base64-encoded {kind} file as a string")
        too_big = f"the {kind} is larger than the server allows ({limits.max_file_bytes} bytes)"
        if len(v) > 4 * (limits.max_file_bytes // 3 + 1) + 256:  # refused before decoding (256: a data: header)
            raise RequestError(f"inputs[{i}]", too_big, 413)
        try:
            data = base64.b64decode(v.split(",", 1)[1] if v.startswith("data:") else v, validate=True)
        except (binascii.Error, ValueError):
            raise RequestError(f"inputs[{i}]", f"not valid base64 (expected a base64-encoded {kind} file)") from None
        if len(data) > limits.max_file_bytes:
            raise RequestError(f"inputs[{i}]", too_big, 413)
        if not data:
            raise RequestError(f"inputs[{i}]", f"an empty {kind} file")
        out.append(data)
    return out


from . import audio, conversations, image, speech, text  # noqa: E402,F401  (register themselves)

__all__ = ["MODALITIES", "Modality", "Examples", "file_inputs", "request_texts", "request_files"]
