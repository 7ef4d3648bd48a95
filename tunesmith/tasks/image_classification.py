"""Image classification (photos, medical scans, product shots): pixels -> backbone features ->
dropout -> linear. Training batches are augmented here, in collate, on tensors (kornia); evaluation
batches never are."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..modalities.image import encode_images
from . import TASKS
from .base import TaskExample
from .classification import ClassificationTask

DEFAULT_AUGMENT = {"enabled": True, "crop_scale": 0.6, "flip": True, "color_jitter": 0.1}


@TASKS.register("image-classification")
class ImageClassificationTask(ClassificationTask):
    name = "image-classification"
    modality = "image"
    pipeline_task = "image-classification"
    config_sections = frozenset({"augment", "eval"})

    def __init__(
        self, labels: Sequence[str], preprocessor=None, dropout: float = 0.1, augment: dict[str, Any] | None = None
    ):
        super().__init__(labels, preprocessor, dropout)
        mean = getattr(preprocessor, "image_mean", None) or (0.5, 0.5, 0.5)
        std = getattr(preprocessor, "image_std", None) or (0.5, 0.5, 0.5)
        self.mean = torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1)
        self.std = torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1)
        self.augment = {**DEFAULT_AUGMENT, **(augment or {})}
        self._augmenter: nn.Module | None = None

    @classmethod
    def _options(cls, cfg, processor, train, reporter) -> dict[str, Any]:
        return {"augment": cfg.augment.model_dump()}

    # -- data --------------------------------------------------------------------------------
    def _encode_inputs(self, examples, augment: bool, reporter) -> list[dict]:
        return encode_images(self.preprocessor, examples, augment, reporter)

    def _augmentations(self, size: tuple[int, int]) -> nn.Module:
        """Random resized crop (back to the model's size), horizontal flip, small colour jitter."""
        if self._augmenter is None:
            import kornia.augmentation as K

            a = self.augment
            ops: list[nn.Module] = (
                [K.RandomResizedCrop(size, scale=(a["crop_scale"], 1.0))] if a["crop_scale"] < 1 else []
            )
            if a["flip"]:
                ops.append(K.RandomHorizontalFlip())
            if a["color_jitter"] > 0:
                j = a["color_jitter"]
                ops.append(K.ColorJitter(brightness=j, contrast=j, saturation=j, hue=0.0, p=1.0))
            self._augmenter = nn.Sequential(*ops)
        return self._augmenter

    def _collate_inputs(self, rows: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        if "pixels_u8" in rows[0]:  # training rows: augment in [0, 1], then normalise
            x = torch.stack([r["pixels_u8"] for r in rows]).float().div_(255.0)
            if self.augment["enabled"]:
                x = self._augmentations(tuple(x.shape[-2:]))(x).clamp_(0.0, 1.0)
            return {"pixel_values": (x - self.mean) / self.std}
        return {"pixel_values": torch.stack([r["pixel_values"] for r in rows])}

    def _validation_gallery(self, ex, ev) -> list[str]:
        """The misclassified validation images themselves, most confident mistakes first."""
        from ..evaluation.classification_report import misclassified_grid

        return ["<h2>Misclassified validation images</h2>", misclassified_grid(ex, ev, self.labels)]

    @classmethod
    def tiny_example(cls, root: Path) -> TaskExample:
        from ..testing import make_image_folder, make_tiny_resnet

        return TaskExample(
            make_tiny_resnet(root / "tiny-resnet"),
            make_image_folder(root / "train", 16, seed=1),
            make_image_folder(root / "val", 6, seed=2),
        )
