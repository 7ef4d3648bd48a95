"""Image classification (photos, medical scans, product shots): pixels -> backbone features ->
dropout -> linear. Training batches are augmented here, in collate, on tensors (kornia); evaluation
batches never are."""
from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

from . import TASKS
from .base import (ClassificationHead, TaskModel, classification_loss, classification_metrics,
                   decode_classification)

DEFAULT_AUGMENT = {"enabled": True, "crop_scale": 0.6, "flip": True, "color_jitter": 0.1}


@TASKS.register("image-classification")
class ImageClassificationTask:
    name = "image-classification"
    modality = "image"
    pipeline_task = "image-classification"

    def __init__(self, labels: Sequence[str], dropout: float = 0.1, image_mean: Sequence[float] = (0.5, 0.5, 0.5),
                 image_std: Sequence[float] = (0.5, 0.5, 0.5), augment: dict[str, Any] | None = None):
        self.labels = list(labels)
        self.label2id = {label: i for i, label in enumerate(self.labels)}
        self.dropout = dropout
        self.mean = torch.tensor(list(image_mean), dtype=torch.float32).view(1, -1, 1, 1)
        self.std = torch.tensor(list(image_std), dtype=torch.float32).view(1, -1, 1, 1)
        self.augment = {**DEFAULT_AUGMENT, **(augment or {})}
        self._augmenter: nn.Module | None = None

    def build_head(self, backbone: nn.Module) -> nn.Module:
        return ClassificationHead(backbone.feature_dim, len(self.labels), self.dropout)

    # -- data --------------------------------------------------------------------------------
    def _augmentations(self, size: tuple[int, int]) -> nn.Module:
        """Random resized crop (back to the model's size), horizontal flip, small colour jitter."""
        if self._augmenter is None:
            import kornia.augmentation as K

            a = self.augment
            ops: list[nn.Module] = [K.RandomResizedCrop(size, scale=(a["crop_scale"], 1.0))] if a["crop_scale"] < 1 else []
            if a["flip"]:
                ops.append(K.RandomHorizontalFlip())
            if a["color_jitter"] > 0:
                j = a["color_jitter"]
                ops.append(K.ColorJitter(brightness=j, contrast=j, saturation=j, hue=0.0, p=1.0))
            self._augmenter = nn.Sequential(*ops)
        return self._augmenter

    def collate(self, rows: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        if "features" in rows[0]:
            batch = {"features": torch.stack([torch.as_tensor(r["features"]) for r in rows])}
        elif "pixels_u8" in rows[0]:  # training rows: augment in [0, 1], then normalise
            x = torch.stack([r["pixels_u8"] for r in rows]).float().div_(255.0)
            if self.augment["enabled"]:
                x = self._augmentations(tuple(x.shape[-2:]))(x).clamp_(0.0, 1.0)
            batch = {"pixel_values": (x - self.mean) / self.std}
        else:
            batch = {"pixel_values": torch.stack([r["pixel_values"] for r in rows])}
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
