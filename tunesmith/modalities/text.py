"""Text inputs: table columns -> tokenizer ids, once, unpadded (padding happens per batch)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from ..data.preflight import TextExamples, text_examples
from ..data.streaming import (
    MappedRows,
    StreamedTextExamples,
    preprocessor_fingerprint,
    stream_text_examples,
    token_cache,
)
from ..errors import DataError
from . import MODALITIES

FALLBACK_PROBES = [
    "the plot was dull",
    "loved every minute of it",
    "an average day",
    "not what I ordered",
    "absolutely wonderful service",
    "terrible, never again",
    "it arrived on time",
    "meh",
]


@MODALITIES.register("text")
class TextModality:
    name = "text"
    example_input = "an example text"
    request_kind = "string"
    media_types = ()
    streams = True  # data.streaming: tables read in batches and tokenised into a disk cache (data/streaming.py)

    def from_request(self, values: list, limits) -> list:
        from . import request_texts

        return request_texts(values, limits)

    def read(
        self, path: str, data_cfg, role: str, require_labels: bool = True, reporter=None
    ) -> TextExamples | StreamedTextExamples:
        if data_cfg.streaming and require_labels:  # (predict's and export's unlabelled reads want the texts)
            return stream_text_examples(
                path,
                data_cfg.text_column,
                data_cfg.label_column,
                data_cfg.text_pair_column,
                require_labels,
                role,
                data_cfg.streaming_batch_rows,
            )
        return text_examples(
            path, data_cfg.text_column, data_cfg.label_column, data_cfg.text_pair_column, require_labels, role
        )

    def examples_from_inputs(self, inputs: Sequence[Any], pairs: Sequence[str] | None = None) -> TextExamples:
        """What `predict` was given -> examples; every input must be non-empty text."""
        for i, t in enumerate(inputs):
            if not isinstance(t, str) or not t.strip():
                raise DataError(f"input {i + 1} is empty or not text: {t!r}")
        return TextExamples("input", list(inputs), list(pairs) if pairs is not None else None, None)

    def predict_inputs(self, examples: TextExamples) -> tuple[list, list | None]:
        return list(examples.texts), examples.pairs

    def probe_inputs(self, examples: TextExamples | None, n: int) -> list:
        return list(examples.texts[:n]) if examples is not None else list(FALLBACK_PROBES)

    def pipeline_inputs(self, inputs: list, preprocessor) -> list:
        return list(inputs)


def tokenize(tokenizer, texts: Sequence[str], pairs: Sequence[str] | None, max_length: int) -> list[dict]:
    """Tokenize once, unpadded; padding happens per batch in `collate_tokens`."""
    enc = tokenizer(
        list(texts), list(pairs) if pairs is not None else None, truncation=True, max_length=max_length, padding=False
    )
    keys = [k for k in ("input_ids", "token_type_ids") if k in enc]
    return [{k: enc[k][i] for k in keys} for i in range(len(texts))]


def encode_texts(tokenizer, examples, max_length: int, reporter=None) -> list[dict] | MappedRows:
    """Examples -> token rows: in memory, or (data.streaming) rows mapped from the file's token cache, which
    the first run on a file writes batch by batch and later runs read."""
    if not isinstance(examples, StreamedTextExamples):
        return tokenize(tokenizer, examples.texts, examples.pairs, max_length)

    def encode(texts: list[str], pairs: list[str] | None) -> dict:
        return tokenizer(texts, pairs, truncation=True, max_length=max_length, padding=False)

    store, _ = token_cache(examples.spec, preprocessor_fingerprint(tokenizer), max_length, encode, reporter)
    return examples.rows(store)


def collate_tokens(rows: Sequence[dict[str, Any]], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Token rows -> input_ids / attention_mask (/ token_type_ids), padded to the batch's longest."""
    longest = max(len(r["input_ids"]) for r in rows)
    ids = torch.full((len(rows), longest), pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(rows), longest), dtype=torch.long)
    types = torch.zeros((len(rows), longest), dtype=torch.long) if "token_type_ids" in rows[0] else None
    for i, r in enumerate(rows):
        n = len(r["input_ids"])
        ids[i, :n] = torch.as_tensor(r["input_ids"])
        mask[i, :n] = 1
        if types is not None:
            types[i, :n] = torch.as_tensor(r["token_type_ids"])
    batch = {"input_ids": ids, "attention_mask": mask}
    if types is not None:
        batch["token_type_ids"] = types
    return batch
