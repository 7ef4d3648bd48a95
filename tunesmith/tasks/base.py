"""The Task contract and the model every task trains: backbone -> head."""
from __future__ import annotations

from typing import Any, Protocol, Sequence

import torch
from torch import nn


class Task(Protocol):
    """What a task must provide. Tasks are small classes registered in ``tasks.TASKS``."""

    name: str

    def build_head(self, backbone: nn.Module) -> nn.Module: ...

    def collate(self, rows: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]: ...

    def compute_loss(self, model: "TaskModel", batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]: ...

    def metrics(self, predictions: Sequence[int], references: Sequence[int]) -> dict[str, Any]: ...

    def decode(self, logits: torch.Tensor) -> list[dict[str, Any]]: ...


class TaskModel(nn.Module):
    """Backbone plus task head. A batch holding precomputed ``features`` skips the backbone: that is
    how head-only training on cached features shares this model, loss and loop."""

    def __init__(self, backbone: nn.Module, head: nn.Module):
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        if "features" in batch:
            features = batch["features"]
        elif getattr(self.backbone, "head_inside", False):
            # an encoder-decoder (Whisper): the head runs inside its own forward (in the decoder's
            # final-norm slot), so the backbone returns the logits
            return self.backbone(batch)
        else:
            features = self.backbone.forward_features(batch)
        return self.head(features.to(self.head_dtype))

    def train(self, mode: bool = True) -> "TaskModel":
        """Batch-norm layers whose weights are frozen keep their pre-trained running statistics:
        frozen means frozen (and a LoRA run, which saves adapters only, reloads exactly)."""
        super().train(mode)
        if mode:
            for m in self.backbone.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm) and not any(p.requires_grad for p in m.parameters()):
                    m.eval()
        return self

    @property
    def head_dtype(self) -> torch.dtype:
        return next(self.head.parameters()).dtype


class ClassificationHead(nn.Module):
    """pooled features -> dropout -> linear; the layout transformers' BERT classifier uses too."""

    def __init__(self, in_dim: int, num_labels: int, dropout: float):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(in_dim, num_labels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(x))


def classification_loss(model: TaskModel, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Cross-entropy in fp32 (logits may come from a bf16 autocast)."""
    import torch.nn.functional as F

    logits = model(batch)
    return {"loss": F.cross_entropy(logits.float(), batch["labels"]), "logits": logits}


def classification_metrics(labels: Sequence[str], predictions: Sequence[int], references: Sequence[int]) -> dict[str, Any]:
    import numpy as np

    from ..evaluation.metrics import classification_metrics as metrics

    return metrics(np.asarray(predictions), np.asarray(references), list(labels))


def decode_classification(labels: Sequence[str], logits: torch.Tensor) -> list[dict[str, Any]]:
    """{"label", "score", "scores"} per row: the same shape for every classification task."""
    probs = torch.softmax(logits.detach().float(), dim=-1).cpu().numpy()
    out = []
    for p in probs:
        k = int(p.argmax())
        out.append({"label": labels[k], "score": float(p[k]),
                    "scores": {label: float(p[i]) for i, label in enumerate(labels)}})
    return out
