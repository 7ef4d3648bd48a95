"""Image inputs: files/bytes -> the model's own image processor, once.

Evaluation rows hold the processor's exact output (what `pipeline` computes). Training rows hold
the processor's resized, cropped pixels as uint8 before normalisation (exact: PIL resizes in 8 bit),
so each epoch only augments and normalises tensors in collate and never decodes a file again.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Sequence
from typing import Any

import torch

from ..data.images import ImageExamples, image_examples, load_image
from . import MODALITIES, file_inputs

CHUNK = 64  # images per processor call


def processor_fingerprint(processor) -> str:
    return hashlib.sha256(json.dumps(processor.to_dict(), sort_keys=True, default=str).encode()).hexdigest()[:16]


@MODALITIES.register("image")
class ImageModality:
    name = "image"
    example_input = "image.png"
    request_kind = "file"
    media_types = ("image/*", "application/dicom")
    streams = False

    def from_request(self, values: list, limits) -> list:
        from . import request_files

        return request_files(values, limits, "image")

    def read(self, path: str, data_cfg, role: str, require_labels: bool = True, reporter=None) -> ImageExamples:
        return image_examples(
            path,
            data_cfg.image_column,
            data_cfg.label_column,
            role,
            skip_bad=data_cfg.skip_bad_images,
            require_labels=require_labels,
            reporter=reporter,
        )

    def examples_from_inputs(self, inputs: Sequence[Any], pairs=None) -> ImageExamples:
        """What `predict` was given (paths or encoded bytes) -> examples, each one decodable."""
        items = file_inputs(inputs, "image file", "an image path or encoded image bytes")
        names = [x if isinstance(x, str) else f"input {i + 1}" for i, x in enumerate(items)]
        return ImageExamples("input", items, None, names, [])

    def predict_inputs(self, examples: ImageExamples) -> tuple[list, list | None]:
        return list(examples.items), None

    def probe_inputs(self, examples: ImageExamples | None, n: int) -> list:
        return list(examples.items[:n]) if examples is not None else synthetic_images(8)

    def pipeline_inputs(self, inputs: list, preprocessor) -> list:
        """Decoded images: our decoder (DICOM included), so both sides see the same pixels."""
        return [load_image(x) for x in file_inputs(inputs, "image file", "an image path or encoded image bytes")]


def encode_images(processor, ex: ImageExamples, augment: bool = False, reporter=None) -> list[dict]:
    """One row per image: normalised pixels (evaluation), or 8-bit pixels to augment per epoch."""
    keys = ex.dedup_keys()
    salt = processor_fingerprint(processor)
    rows: list[dict] = []
    bar = reporter.bar("preprocess images", len(ex)) if reporter is not None else contextlib.nullcontext()
    with bar as b:
        for start in range(0, len(ex), CHUNK):
            names = ex.names[start : start + CHUNK]
            images = [load_image(item, name) for item, name in zip(ex.items[start : start + CHUNK], names)]
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


def synthetic_images(n: int) -> list[bytes]:
    """Random-noise PNGs: valid images for parity probes when a run's own data is gone."""
    import io

    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    out = []
    for _ in range(n):
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (64, 80, 3), dtype=np.uint8)).save(buf, format="PNG")
        out.append(buf.getvalue())
    return out
