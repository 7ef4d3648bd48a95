"""onnx: an ONNX export (`tunesmith export RUN --onnx`): the task's graphs (model.onnx, or
encoder.onnx + decoder.onnx for an encoder-decoder), the run's preprocessing files, label map and
scores, and parity.json. Never written by `save_run` (a run is saved as weights); read by `load_run`,
so `tunesmith.load`, predict, evaluate and serve run such a folder on onnxruntime."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import RunFolderError
from . import FORMATS, how_to_load_lines


@FORMATS.register("onnx")
class OnnxFormat:
    name = "onnx"
    pipeline_loads = False

    def applies(self, model, task, meta: dict[str, Any]) -> bool:
        return False  # written by export/onnx.py only

    def save(self, folder: Path, model, task, meta: dict[str, Any]) -> dict[str, Any]:
        raise RunFolderError("an ONNX folder is written by `tunesmith export RUN --onnx`, not saved from weights")

    def architecture(self, folder: Path, meta: dict[str, Any]) -> dict[str, Any]:
        return {}  # the graphs hold the architecture

    def load(self, folder: Path, meta: dict[str, Any], backbone_cls, task, architecture: dict[str, Any]):
        from ..models.onnx_runtime import session

        graphs = meta["onnx"]["graphs"]
        missing = [f for f in graphs.values() if not (folder / f).is_file()]
        if missing:
            raise RunFolderError(f"{folder}: ONNX export is missing {missing}; export the run again")
        try:
            import onnxruntime  # noqa: F401
        except ImportError as e:
            raise RunFolderError(
                f"{folder} is an ONNX export: running it needs onnxruntime (pip install onnxruntime)"
            ) from e
        return task.onnx_model({name: session(folder / f) for name, f in graphs.items()})

    def how_to_load(self, name: str, meta: dict[str, Any], task, example: str) -> list[str]:
        files = ", ".join(json.dumps(f) for f in meta["onnx"]["graphs"].values())
        return how_to_load_lines(name, example) + [
            f"tunesmith runs this folder on onnxruntime ({files}), with the run's own preprocessing.",
            "",
        ]
