"""Text classification (sentiment, topic, intent, NLI with text pairs)."""
from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

from . import TASKS
from .base import (ClassificationHead, TaskModel, classification_loss, classification_metrics,
                   decode_classification)


@TASKS.register("text-classification")
class TextClassificationTask:
    name = "text-classification"
    modality = "text"
    pipeline_task = "text-classification"

    def __init__(self, labels: Sequence[str], dropout: float = 0.1, pad_token_id: int = 0):
        self.labels = list(labels)
        self.label2id = {label: i for i, label in enumerate(self.labels)}
        self.dropout = dropout
        self.pad_token_id = pad_token_id

    # -- model -------------------------------------------------------------------------------
    def build_head(self, backbone: nn.Module) -> nn.Module:
        return ClassificationHead(backbone.feature_dim, len(self.labels), self.dropout)

    # -- data --------------------------------------------------------------------------------
    def encode(self, tokenizer, texts: Sequence[str], pairs: Sequence[str] | None, max_length: int) -> list[dict]:
        """Tokenize once, unpadded; padding happens per batch in collate."""
        enc = tokenizer(
            list(texts), list(pairs) if pairs is not None else None,
            truncation=True, max_length=max_length, padding=False,
        )
        keys = [k for k in ("input_ids", "token_type_ids", "attention_mask") if k in enc]
        return [{k: enc[k][i] for k in keys if k != "attention_mask"} for i in range(len(texts))]

    def collate(self, rows: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        if "features" in rows[0]:
            batch = {"features": torch.stack([torch.as_tensor(r["features"]) for r in rows])}
        else:
            longest = max(len(r["input_ids"]) for r in rows)
            ids = torch.full((len(rows), longest), self.pad_token_id, dtype=torch.long)
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
        if "label" in rows[0]:
            batch["labels"] = torch.tensor([r["label"] for r in rows], dtype=torch.long)
        return batch

    # -- training / evaluation -------------------------------------------------------------
    def compute_loss(self, model: TaskModel, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return classification_loss(model, batch)

    def metrics(self, predictions: Sequence[int], references: Sequence[int]) -> dict[str, Any]:
        return classification_metrics(self.labels, predictions, references)

    def decode(self, logits: torch.Tensor) -> list[dict[str, Any]]:
        return decode_classification(self.labels, logits)
