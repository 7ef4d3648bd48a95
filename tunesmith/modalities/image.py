"""Image inputs: files/bytes -> the model's own image processor, once.

Evaluation rows hold the processor's exact output (what `pipeline` computes). Training rows hold
the processor's resized, cropped pixels as uint8 before normalisation (exact: PIL resizes in 8 bit),
so each epoch only augments and normalises tensors in collate and never decodes a file again.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Sequence

import torch

from ..data.images import ImageExamples, image_examples, load_image
from . import file_inputs

CHUNK = 64  # images per processor call


def processor_fingerprint(processor) -> str:
    return hashlib.sha256(json.dumps(processor.to_dict(), sort_keys=True, default=str).encode()).hexdigest()[:16]


class ImageInputs:
    modality = "image"

    def read(self, path: str, data_cfg, role: str, require_labels: bool = True, reporter=None) -> ImageExamples:
        return image_examples(path, data_cfg.image_column, data_cfg.label_column, role,
                              skip_bad=data_cfg.skip_bad_images, require_labels=require_labels, reporter=reporter)

    def load(self, model_dir: Path, model_cfg):
        from ..models.vision_backbone import load_image_processor, load_vision_backbone

        processor = load_image_processor(model_dir, model_cfg.trust_remote_code)
        return load_vision_backbone(model_dir, model_cfg.trust_remote_code), processor

    def task_kwargs(self, processor, augment_cfg=None) -> dict[str, Any]:
        kw: dict[str, Any] = {"image_mean": list(processor.image_mean), "image_std": list(processor.image_std)}
        if augment_cfg is not None:
            kw["augment"] = augment_cfg.model_dump()
        return kw

    def encode(self, task, processor, ex: ImageExamples, max_length: int | None = None, augment: bool = False,
               reporter=None) -> list[dict]:
        keys = ex.dedup_keys()
        salt = processor_fingerprint(processor)
        rows: list[dict] = []
        bar = reporter.bar("preprocess images", len(ex)) if reporter is not None else None
        with (bar if bar is not None else _Null()) as b:
            for start in range(0, len(ex), CHUNK):
                names = ex.names[start:start + CHUNK]
                images = [load_image(item, name) for item, name in zip(ex.items[start:start + CHUNK], names)]
                if augment:
                    px = processor(images=images, return_tensors="pt", do_normalize=False)["pixel_values"]
                    px = (px * 255).round().clamp(0, 255).to(torch.uint8)
                    rows += [{"pixels_u8": p} for p in px]
                else:
                    px = processor(images=images, return_tensors="pt")["pixel_values"].float()
                    rows += [{"pixel_values": p} for p in px]
                if b is not None:
                    b.advance(len(images))
        for r, k in zip(rows, keys):
            r["cache_key"] = f"{k}|{salt}"
        return rows

    def examples_from_inputs(self, inputs: Sequence[Any], pairs=None) -> ImageExamples:
        """What `predict` was given (paths or encoded bytes) -> examples, each one decodable."""
        items = file_inputs(inputs, "image file", "an image path or encoded image bytes")
        names = [x if isinstance(x, str) else f"input {i + 1}" for i, x in enumerate(items)]
        return ImageExamples("input", items, None, names, [])


class _Null:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False
