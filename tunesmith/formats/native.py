"""native: the run folder is a transformers checkpoint of the class the backbone names
(Backbone.native_layout): config.json + model.safetensors in that class's names, plus the task's
preprocessing, so `transformers.pipeline(task, model=OUT)` loads it and computes what we compute.
LoRA runs of tasks that keep plain weights (speech recognition) are merged on the way out."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from ..errors import RunFolderError
from . import (
    FORMATS,
    atomic_save_tensors,
    atomic_write_json,
    check_state,
    how_to_load_lines,
    keeps_adapters,
    pipeline_lines,
    read_json,
)


@FORMATS.register("native")
class NativeFormat:
    name = "native"
    pipeline_loads = True

    def applies(self, model, task, meta: dict[str, Any]) -> bool:
        return not keeps_adapters(task, meta) and model.backbone.native_layout(model.head) is not None

    def save(self, folder: Path, model, task, meta: dict[str, Any]) -> dict[str, Any]:
        spec = model.backbone.native_layout(model.head)
        config = {
            **model.backbone.config_dict(),
            **spec.config,
            **task.config_entries(),
            "architectures": [spec.architecture],
        }
        tensors = {f"{spec.prefix}{k}": v for k, v in model.backbone.encoder.state_dict().items()}
        tensors.update({spec.head[k]: v for k, v in model.head.state_dict().items()})
        tensors.update(spec.fixed)
        for key in spec.tied:
            tensors.pop(key, None)
        atomic_write_json(folder / "config.json", config)
        atomic_save_tensors(tensors, folder / "model.safetensors", self.name)
        return {}

    def architecture(self, folder: Path, meta: dict[str, Any]) -> dict[str, Any]:
        return read_json(folder / "config.json")

    def load(self, folder: Path, meta: dict[str, Any], backbone_cls, task, architecture: dict[str, Any]):
        from ..tasks.base import TaskModel

        backbone = backbone_cls.from_config(architecture, meta)
        model = TaskModel(backbone, task.build_head(backbone))
        spec = backbone.native_layout(model.head)
        tensors = load_file(str(folder / "model.safetensors"))
        head_of = {theirs: ours for ours, theirs in spec.head.items()}
        state, foreign = {}, []
        for key, t in tensors.items():
            if key in head_of:
                state[f"head.{head_of[key]}"] = t
            elif key in spec.fixed:
                if not torch.equal(t, spec.fixed[key]):
                    raise RunFolderError(
                        f"{folder}/model.safetensors: {key} is not the fixed tensor tunesmith saves "
                        "there; this folder was changed after training (train it again, or load it "
                        "with transformers)"
                    )
            elif key.startswith(spec.prefix):
                state[f"backbone.encoder.{key[len(spec.prefix) :]}"] = t
            else:
                foreign.append(key)
        absent = [k for k in spec.fixed if k not in tensors]
        if foreign or absent:
            raise RunFolderError(
                f"{folder}/model.safetensors does not match its config: unexpected {foreign[:5]}, missing {absent[:5]}"
            )
        check_state(folder, model, state, ignore=spec.tied)
        if spec.tied:
            backbone.encoder.tie_weights()
        return model

    def how_to_load(self, name: str, meta: dict[str, Any], task, example: str) -> list[str]:
        return how_to_load_lines(name, example) + pipeline_lines(name, task, example)
