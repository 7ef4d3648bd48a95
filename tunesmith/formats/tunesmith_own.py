"""tunesmith: the model in our own names, for backbones no transformers class computes (a pooling
with no native head, a module of our own). config.json carries no model_type, so transformers refuses
the folder loudly instead of silently loading a different model; encoder_config.json rebuilds the
backbone, and `tunesmith.load(OUT)` is the way in (the card says so, and why)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from safetensors.torch import load_file

from . import FORMATS, atomic_save_tensors, atomic_write_json, check_state, how_to_load_lines, read_json

ENCODER_CONFIG = "encoder_config.json"


@FORMATS.register("tunesmith")
class TunesmithFormat:
    name = "tunesmith"
    pipeline_loads = False

    def applies(self, model, task, meta: dict[str, Any]) -> bool:
        return True  # the layout of last resort: every model has one

    def save(self, folder: Path, model, task, meta: dict[str, Any]) -> dict[str, Any]:
        note = model.backbone.own_layout_note()
        atomic_write_json(folder / ENCODER_CONFIG, model.backbone.config_dict())
        atomic_write_json(
            folder / "config.json",
            {"architectures": ["TunesmithModel"], "tunesmith_note": note.split("\n")[0], **task.config_entries()},
        )
        atomic_save_tensors(dict(model.state_dict()), folder / "model.safetensors", self.name)
        return {"format_note": note}

    def architecture(self, folder: Path, meta: dict[str, Any]) -> dict[str, Any]:
        # folders of our own image module written before encoder_config.json kept its name in config.json
        path = folder / ENCODER_CONFIG
        return read_json(path if path.is_file() else folder / "config.json")

    def load(self, folder: Path, meta: dict[str, Any], backbone_cls, task, architecture: dict[str, Any]):
        from ..tasks.base import TaskModel

        backbone = backbone_cls.from_config(architecture, meta)
        model = TaskModel(backbone, task.build_head(backbone))
        check_state(folder, model, load_file(str(folder / "model.safetensors")))
        return model

    def how_to_load(self, name: str, meta: dict[str, Any], task, example: str) -> list[str]:
        note = meta.get("format_note") or (
            "no transformers class computes this model, so `transformers.pipeline` "
            "cannot load this folder; use `tunesmith.load` or the CLI as above."
        )
        return how_to_load_lines(name, example) + [f"**Note:** {note}", ""]
