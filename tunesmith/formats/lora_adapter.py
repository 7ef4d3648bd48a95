"""lora-adapter: LoRA adapters + the task head only (a few MB); the base model is read from its own
folder at load time, checked by fingerprint. `tunesmith export --merge` writes plain weights in one
of the other layouts. The head always travels with the adapters (peft #310/#577 cannot happen here)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from safetensors.torch import load_file

from ..errors import RunFolderError
from . import (
    FORMATS,
    atomic_save_tensors,
    atomic_write_json,
    how_to_load_lines,
    keeps_adapters,
    model_options,
    shell_word,
)

ADAPTER_FILE = "adapter.safetensors"


def is_adapter_or_head(name: str) -> bool:
    return "lora_" in name or name.startswith("head.")


def base_folder(folder: Path, meta: dict[str, Any]) -> Path:
    """The base model the adapters were trained on, where it is now; refused if its weights changed."""
    from ..models.catalogue import resolve_model
    from ..strategies.feature_cache import model_fingerprint

    base = resolve_model(meta.get("catalogue_name") or meta["base_model_path"])
    if model_fingerprint(base) != meta["base_model_fingerprint"]:
        raise RunFolderError(
            f"{folder} holds LoRA adapters for the base model at {meta['base_model_path']}, but the weights "
            f"found at {base} differ from the ones it was trained on; restore that model folder"
        )
    return base


@FORMATS.register("lora-adapter")
class LoraAdapterFormat:
    name = "lora-adapter"
    pipeline_loads = False

    def applies(self, model, task, meta: dict[str, Any]) -> bool:
        return keeps_adapters(task, meta)

    def save(self, folder: Path, model, task, meta: dict[str, Any]) -> dict[str, Any]:
        atomic_save_tensors(
            {k: v for k, v in model.state_dict().items() if is_adapter_or_head(k)}, folder / ADAPTER_FILE, self.name
        )
        atomic_write_json(
            folder / "config.json",
            {
                "architectures": ["TunesmithLoraAdapter"],
                "tunesmith_note": "LoRA adapters + task head over the base model named in tunesmith.json; load with "
                "tunesmith.load(folder), or write plain weights with `tunesmith export FOLDER --merge`.",
                **task.config_entries(),
            },
        )
        return {}

    def architecture(self, folder: Path, meta: dict[str, Any]) -> dict[str, Any]:
        from ..models import read_config

        return read_config(base_folder(folder, meta))

    def load(self, folder: Path, meta: dict[str, Any], backbone_cls, task, architecture: dict[str, Any]):
        from ..strategies.lora import inject_lora
        from ..tasks.base import TaskModel

        # the run's model options (pooling, model.window_seconds) rebuild the base exactly as it trained
        backbone, _ = backbone_cls.load(base_folder(folder, meta), model_options(meta), meta.get("backbone_options"))
        inject_lora(backbone.encoder, meta["lora_options"])
        model = TaskModel(backbone, task.build_head(backbone))
        state = load_file(str(folder / ADAPTER_FILE))
        expected = {k for k in model.state_dict() if is_adapter_or_head(k)}
        if set(state) != expected:
            raise RunFolderError(
                f"{folder}/{ADAPTER_FILE} does not match the adapters of its base model "
                f"(missing {sorted(expected - set(state))[:5]}, unexpected {sorted(set(state) - expected)[:5]})"
            )
        model.load_state_dict(state, strict=False)
        return model

    def how_to_load(self, name: str, meta: dict[str, Any], task, example: str) -> list[str]:
        return how_to_load_lines(name, example) + [
            "**Note:** this folder holds LoRA adapters and the task head (a few MB); the base model is read from "
            "its own folder, checked by fingerprint. For plain weights that load with transformers alone (no "
            "peft), merge them; the export checks merged against unmerged logits:",
            "",
            "```bash",
            f"tunesmith export {shell_word(name)} --merge --out {shell_word(name + '-merged')}",
            "```",
            "",
        ]
