"""Image data: a folder of class sub-folders or a table of image paths/bytes -> ImageExamples, with
every image decoded once up front so a bad file fails before any model loads (or, with skip_bad,
is listed in the report: never dropped silently)."""

from __future__ import annotations

import contextlib
import io
from collections import abc
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..errors import DataError
from .media_sources import MediaKind, class_folder, file_keys, table_files
from .preflight import table_labels
from .sources import read_table

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".dcm"}
_SKIP_HINT = "Remove or replace it, or pass --skip-bad-images to skip bad images (they are listed in the report)."


@dataclass
class ImageExamples:
    source: str
    items: list[str | bytes]  # absolute file path, or the encoded bytes of the image
    labels: list[str] | None
    names: list[str]  # how messages and reports name each item
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (name, reason), from skip_bad

    def __len__(self) -> int:
        return len(self.items)

    display_column = "input"  # how reports head the column of display(i)

    def display(self, i: int) -> str:
        return self.names[i]

    def subset(self, idx: Sequence[int], source: str | None = None) -> ImageExamples:
        # skipped describes the source, not the rows, so a subset keeps it and the report still shows it
        return ImageExamples(
            source or self.source,
            [self.items[i] for i in idx],
            [self.labels[i] for i in idx] if self.labels is not None else None,
            [self.names[i] for i in idx],
            list(self.skipped),
        )

    def dedup_keys(self) -> list[str]:
        """sha1 of each image's encoded bytes: equal keys mean the same file, e.g. a train/validation leak."""
        return file_keys(self.items)


class BadImageError(DataError):
    """An image that cannot be decoded; `name` and `reason` let skip_bad list it in the report."""

    def __init__(self, name: str, reason: str):
        super().__init__(f"{name}: cannot decode image ({reason}). {_SKIP_HINT}")
        self.name, self.reason = name, reason


def load_image(item: str | bytes, name: str | None = None) -> Image.Image:
    """Decode fully to RGB. Raises BadImageError (a DataError) naming the file and what is wrong."""
    name = name or (item if isinstance(item, str) else "<image bytes>")
    try:
        return _decode_dicom(item) if _is_dicom(item) else _decode_pillow(item)
    except FileNotFoundError:
        raise BadImageError(name, f"file not found: {item}") from None
    except Exception as e:  # Pillow and pydicom raise many unrelated types for a bad file
        raise BadImageError(name, f"{type(e).__name__}: {e}") from None


def _is_dicom(item: str | bytes) -> bool:
    if isinstance(item, bytes):
        return item[128:132] == b"DICM"
    return Path(item).suffix.lower() == ".dcm"


def _decode_pillow(item: str | bytes) -> Image.Image:
    # ImageFile.LOAD_TRUNCATED_IMAGES stays False: .load() must fail on a truncated file, here
    with Image.open(io.BytesIO(item) if isinstance(item, bytes) else item) as im:
        im.load()
        if im.mode.startswith("I;16"):  # 16-bit grey: full 0..65535 range -> 0..255, same for every image
            return _grey_rgb(np.asarray(im, dtype=np.float64), 0.0, 65535.0)
        if im.mode in ("I", "F"):  # 32-bit int/float has no fixed range: stretch this image's min..max
            a = np.asarray(im, dtype=np.float64)
            return _grey_rgb(a, float(a.min()), float(a.max()))
        if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
            # transparent pixels often hold black or junk colour: show them as white paper instead
            rgba = im.convert("RGBA")
            return Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB")
        return im.convert("RGB")


def _grey_rgb(a: np.ndarray, lo: float, hi: float, invert: bool = False) -> Image.Image:
    """Linear map lo..hi -> 0..255 (clipped outside), as an RGB image; a flat image (hi == lo) is black."""
    u = np.clip((a - lo) / (hi - lo), 0.0, 1.0) if hi > lo else np.zeros_like(a)
    u8 = np.rint(u * 255.0).astype(np.uint8)
    return Image.fromarray(255 - u8 if invert else u8).convert("RGB")


def _first(v: Any) -> float:
    """A DICOM number that may be multi-valued (several windows): the first value, as the viewer default."""
    return float(v[0]) if isinstance(v, abc.Sequence) and not isinstance(v, str) else float(v)


def _decode_dicom(item: str | bytes) -> Image.Image:
    import pydicom  # only DICOM data pays for the import

    ds = pydicom.dcmread(io.BytesIO(item) if isinstance(item, bytes) else item)
    a = ds.pixel_array
    if int(ds.get("NumberOfFrames", 1) or 1) > 1:
        a = a[len(a) // 2]  # a multi-frame series is represented by its middle frame
    if int(ds.get("SamplesPerPixel", 1)) == 3:  # colour (ultrasound, photos): pydicom already gives RGB
        if a.dtype != np.uint8:
            a = np.rint(a.astype(np.float64) / max(float(a.max()), 1.0) * 255.0).astype(np.uint8)
        return Image.fromarray(np.ascontiguousarray(a))
    a = a.astype(np.float64) * float(ds.get("RescaleSlope", 1) or 1) + float(ds.get("RescaleIntercept", 0) or 0)
    center, width = ds.get("WindowCenter"), ds.get("WindowWidth")
    if center is not None and width is not None and _first(width) > 0:
        lo, hi = _first(center) - _first(width) / 2, _first(center) + _first(width) / 2
    else:
        lo, hi = float(a.min()), float(a.max())
    return _grey_rgb(a, lo, hi, invert=ds.get("PhotometricInterpretation") == "MONOCHROME1")


def _verify(
    source: str, items: list, labels: list[str] | None, names: list[str], skip_bad: bool, reporter=None
) -> ImageExamples:
    """Decode every image once; a bad one raises, or with skip_bad is recorded in .skipped."""
    keep, skipped = [], []
    bar_ctx = reporter.bar(f"checking images ({source})", len(items), unit="images") if reporter else None
    with bar_ctx or contextlib.nullcontext() as bar:
        for i, (item, name) in enumerate(zip(items, names)):
            try:
                load_image(item, name)
                keep.append(i)
            except BadImageError as e:
                if not skip_bad:
                    raise
                skipped.append((name, e.reason))
            if bar is not None:
                bar.advance()
    if not keep:
        raise DataError(
            f"{source}: none of its {len(items)} images could be decoded (first: {skipped[0][0]}: "
            f"{skipped[0][1]}). Check that these are image files of a supported type."
        )
    out = ImageExamples(source, items, labels, names, skipped).subset(keep)
    if labels is not None:
        emptied = sorted(set(labels) - set(out.labels))
        if emptied:
            bad = [n for n, y in zip(names, labels) if y in emptied]
            raise DataError(
                f"{source}: every image of class{'es' if len(emptied) > 1 else ''} "
                f"{', '.join(repr(c) for c in emptied)} was unreadable and skipped, leaving the class "
                f"empty ({', '.join(bad[:5])}{' ...' if len(bad) > 5 else ''}). Replace those images, "
                "or remove the class."
            )
    return out


_KIND = MediaKind(
    frozenset(IMAGE_EXTENSIONS),
    "image",
    "images",
    "images",
    ("cat", "img1.png", "dog", "img2.png"),
    "Convert",
    "the image path",
    "the image's encoded bytes",
    "--image-column",
)


def image_examples_from_folder(
    root: str | Path, role: str = "data", skip_bad: bool = False, require_labels: bool = True, reporter=None
) -> ImageExamples:
    """root/<label>/<images>: one sub-folder per class. Without require_labels, a flat folder of images is
    accepted too (labels None)."""
    items, labels, names = class_folder(root, role, require_labels, _KIND)
    return _verify(str(Path(root)), items, labels, names, skip_bad, reporter)


def image_examples_from_table(
    path: str | Path,
    image_column: str = "image",
    label_column: str = "label",
    role: str = "data",
    skip_bad: bool = False,
    require_labels: bool = True,
    reporter=None,
) -> ImageExamples:
    """A table whose image column holds paths (relative to the table's folder) or encoded image bytes."""
    path = str(path)
    df = read_table(path, role)
    items, names = table_files(path, df, image_column, _KIND, skip_bad)
    labels = table_labels(path, df, label_column) if require_labels else None
    return _verify(path, items, labels, names, skip_bad, reporter)


def image_examples(
    path: str | Path,
    image_column: str = "image",
    label_column: str = "label",
    role: str = "data",
    skip_bad: bool = False,
    require_labels: bool = True,
    reporter=None,
) -> ImageExamples:
    """A folder of class sub-folders, or a table file (CSV/TSV/JSONL/JSON/Parquet) of images and labels."""
    p = Path(path)
    if p.is_dir():
        return image_examples_from_folder(p, role, skip_bad, require_labels, reporter)
    if not p.exists():
        raise DataError(
            f"{role} path not found: {p}. Give a folder with one sub-folder per class, or a table "
            "(.csv, .tsv, .jsonl, .json, .parquet) with image and label columns."
        )
    return image_examples_from_table(p, image_column, label_column, role, skip_bad, require_labels, reporter)
