"""Where image and audio examples come from: a folder with one sub-folder per class, or a table
whose column holds file paths (relative to the table) or encoded bytes.

One reader serves both modalities: what differs is only the file kinds accepted and the words in
the messages (`MediaKind`). Decoding and checking each file stays with the modality
(data/images.py, data/audio.py), which turns what this returns into its examples.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import DataError
from .preflight import _column, _is_missing, _rows
from .sources import row_ref

_IGNORED = {"thumbs.db", "desktop.ini"}  # OS litter; names starting with "." are ignored too


@dataclass(frozen=True)
class MediaKind:
    """The words and file kinds of one modality, for its messages."""

    extensions: frozenset[str]
    kind: str  # "image", "audio": in "Supported image types", "image cell"
    files: str  # "images", "clips": what a class folder holds
    empty_folder: str  # "images", "audio clips": in "class folder with no ..."
    examples: tuple[str, str, str, str]  # two class/file pairs for the "no class sub-folders" message
    convert: str  # how to convert files of another type
    path_noun: str  # "the image path": what an empty table cell should hold
    bytes_noun: str  # "the image's encoded bytes"
    flag: str  # "--image-column"
    skip_flag: str | None = None  # a flag that skips missing files too (audio), or None: missing is an error


def file_keys(items) -> list[str]:
    """sha1 of each item's encoded bytes (a path's file, or the bytes themselves): equal keys mean the
    same file, e.g. a train/validation leak."""
    return [hashlib.sha1(it if isinstance(it, bytes) else Path(it).read_bytes()).hexdigest() for it in items]


def visible(name: str) -> bool:
    return not name.startswith(".") and name.lower() not in _IGNORED


def media_files(folder: Path, kind: MediaKind) -> list[Path]:
    """Files of `kind` under folder, recursively, sorted; hidden files/folders ignored, anything else refused."""
    files = sorted(p for p in folder.rglob("*") if p.is_file() and all(map(visible, p.relative_to(folder).parts)))
    others = [p for p in files if p.suffix.lower() not in kind.extensions]
    if others:
        shown = ", ".join(str(p) for p in others[:5]) + (f" and {len(others) - 5} more" if len(others) > 5 else "")
        raise DataError(
            f"unsupported file type: {shown}. Supported {kind.kind} types: "
            f"{', '.join(sorted(kind.extensions))}. {kind.convert} or move these files out of the data "
            "folder."
        )
    return files


def class_folder(
    root: str | Path, role: str, require_labels: bool, kind: MediaKind
) -> tuple[list[str], list[str] | None, list[str]]:
    """root/<label>/<files> -> (absolute paths, labels, display names). Without require_labels, a flat
    folder of files is accepted too (labels None)."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{role} folder not found: {root}")
    entries = sorted(p for p in root.iterdir() if visible(p.name))
    classes = [p for p in entries if p.is_dir()]
    loose = [p for p in entries if p.is_file()]
    if not classes and (require_labels or not loose):
        a, fa, b, fb = kind.examples
        raise DataError(
            f"{root}: no class sub-folders. Put each class's {kind.files} in a sub-folder named after "
            f"the class, e.g. {root / a / fa} and {root / b / fb}."
        )
    if classes and loose:  # not inside a class folder, so they have no label: say so rather than drop them
        raise DataError(
            f"{root}: files outside the class sub-folders have no label: "
            f"{', '.join(p.name for p in loose[:5])}{' ...' if len(loose) > 5 else ''}. "
            "Move them into the sub-folder of their class, or out of the data folder."
        )
    items, labels, names, empty = [], [], [], []
    for folder in classes or [root]:  # a flat folder (unlabelled) is one group
        files = media_files(folder, kind)
        if not files:
            empty.append(str(folder))
        items += [os.path.abspath(p) for p in files]
        names += [str(p) for p in files]
        labels += [folder.name] * len(files)
    if empty:
        raise DataError(
            f"class folder{'s' if len(empty) > 1 else ''} with no {kind.empty_folder}: "
            f"{', '.join(empty)}. Add {kind.files} ({', '.join(sorted(kind.extensions))}) or remove "
            "the folder."
        )
    return items, labels if classes else None, names


def _cell(v: Any, base: Path) -> str | bytes | None:
    """A table cell -> absolute path or bytes; None when empty. HF datasets writes {"bytes", "path"}."""
    if isinstance(v, dict):
        v = v.get("bytes") or v.get("path")
    if isinstance(v, (bytearray, memoryview)):
        v = bytes(v)
    if _is_missing(v) or (isinstance(v, (str, bytes)) and not v.strip()):
        return None
    if isinstance(v, bytes):
        return v
    if isinstance(v, str):
        return os.path.abspath(base / Path(v.strip()).expanduser())
    raise TypeError(type(v).__name__)


def table_files(path: str, df, column: str, kind: MediaKind, skip_bad: bool) -> tuple[list, list[str]]:
    """The file column of a table -> (absolute paths or bytes, display names). An empty cell is an
    error; a missing file too, unless kind.skip_flag is set and given (the modality then skips it)."""
    base = Path(path).parent
    items, empty, missing = [], [], []
    for i, v in enumerate(_column(df, column, path, kind.kind, kind.flag)):
        try:
            item = _cell(v, base)
        except TypeError as e:
            raise DataError(
                f"{row_ref(path, i)}: {kind.kind} cell in column {column!r} is a {e}; expected a file "
                f"path or {kind.bytes_noun}."
            ) from None
        if item is None:
            empty.append(i)
        elif isinstance(item, str) and not os.path.isfile(item):
            missing.append(i)
        items.append(item)
    if empty:
        raise DataError(
            f"{path}: empty {kind.kind} cell in column {column!r} at {_rows(empty)} (data rows, "
            f"header excluded). Fill in {kind.path_noun} or drop those rows."
        )
    if missing and not (skip_bad and kind.skip_flag):
        shown = "; ".join(f"{row_ref(path, i)}: {kind.kind} file not found: {items[i]}" for i in missing[:5])
        more = f" (and {len(missing) - 5} more)" if len(missing) > 5 else ""
        skip = f", or pass {kind.skip_flag} to skip them (listed in the report)" if kind.skip_flag else ""
        raise DataError(
            f"{shown}{more}. Relative paths are read from the table's folder ({os.path.abspath(base)}); "
            f"fix the paths or drop those rows{skip}."
        )
    names = [row_ref(path, i) + (f" ({it})" if isinstance(it, str) else "") for i, it in enumerate(items)]
    return items, names
