"""Exports of a finished run: merged weights (merge.py) and ONNX graphs (onnx.py), each checked against the run."""

from __future__ import annotations

import shutil
from pathlib import Path

from ..errors import RunFolderError


def check_out(out: Path, overwrite: bool) -> None:
    """--out must be new or empty; --overwrite replaces a previous export (a folder with tunesmith.json) only."""
    if out.exists() and any(out.iterdir()):
        if not overwrite or not (out / "tunesmith.json").is_file():
            raise RunFolderError(f"--out {out} is not empty; choose a new folder (or --overwrite a previous export)")


def publish(tmp: Path, out: Path) -> None:
    """The finished export takes --out's place; a previous export there is removed only now, so a failed
    export leaves it as it was."""
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
