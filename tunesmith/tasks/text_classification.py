"""Text classification (sentiment, topic, intent, NLI with text pairs)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ..modalities.text import collate_tokens, encode_texts
from . import TASKS
from .base import TaskExample
from .classification import ClassificationTask


@TASKS.register("text-classification")
class TextClassificationTask(ClassificationTask):
    name = "text-classification"
    modality = "text"
    pipeline_task = "text-classification"

    def __init__(
        self,
        labels: Sequence[str],
        preprocessor=None,
        dropout: float = 0.1,
        pad_token_id: int = 0,
        max_length: int = 128,
    ):
        super().__init__(labels, preprocessor, dropout)
        self.pad_token_id = pad_token_id
        self.max_length = max_length

    @classmethod
    def _options(cls, cfg, tokenizer, train, reporter) -> dict[str, Any]:
        return {"pad_token_id": tokenizer.pad_token_id or 0, "max_length": cfg.model.max_length}

    @classmethod
    def _legacy_state(cls, meta: dict[str, Any]) -> dict[str, Any]:
        return {
            **super()._legacy_state(meta),
            "pad_token_id": meta.get("pad_token_id", 0),
            "max_length": meta.get("max_length", 128),
        }

    def state(self) -> dict[str, Any]:
        return {**super().state(), "pad_token_id": self.pad_token_id, "max_length": self.max_length}

    def _encode_inputs(self, examples, augment: bool, reporter) -> Sequence[dict]:
        return encode_texts(self.preprocessor, examples, self.max_length, reporter)

    def _collate_inputs(self, rows: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        return collate_tokens(rows, self.pad_token_id)

    @classmethod
    def tiny_example(cls, root: Path) -> TaskExample:
        from ..testing import make_tiny_bert, sentiment_rows, write_csv

        return TaskExample(
            make_tiny_bert(root / "tiny-bert-mean", pooling="mean"),
            write_csv(root / "train.csv", sentiment_rows(96, seed=1)),
            write_csv(root / "val.csv", sentiment_rows(40, seed=2)),
            {"model": {"max_length": 32}},
        )
