"""How a finished run's model is written into its folder and read back: one registered layout per
format, named in tunesmith.json ("layout").

- native: a transformers class computes the model exactly (the backbone declares which:
  BertForSequenceClassification, *ForImageClassification, Wav2Vec2ForSequenceClassification,
  WhisperForConditionalGeneration, *ForCTC), so `transformers.pipeline` loads the folder.
- xlm-mean: BERT with mean pooling, saved as the equivalent XLMForSequenceClassification.
- lora-adapter: LoRA adapters + head only; the base model is read from its folder (fingerprinted).
- tunesmith: our own names, for models no transformers class computes; `tunesmith.load` only.

`save_run` writes the first layout (in registration order) that applies, the task's preprocessing
(tokenizer, processor, generation config) and tunesmith.json; `load_run` reads any of them, and
folders written by earlier versions too. serve/ and export/ go through these functions only.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, ClassVar, Protocol

import torch
from safetensors.torch import save_file

from ..errors import RunFolderError
from ..registry import Registry
from ..run_folder import CONFIG_FILE, METRICS_FILE

FORMAT_VERSION = 2
META_FILE = "tunesmith.json"
FORMATS: Registry = Registry("run format")


class RunFormat(Protocol):
    name: ClassVar[str]
    pipeline_loads: ClassVar[bool]  # transformers.pipeline(task.pipeline_task, model=folder) loads it

    def applies(self, model, task, meta: dict[str, Any]) -> bool: ...

    # writes the model's files; returns entries for tunesmith.json
    def save(self, folder: Path, model, task, meta: dict[str, Any]) -> dict[str, Any]: ...

    # the config.json dict the backbone is rebuilt from
    def architecture(self, folder: Path, meta: dict[str, Any]) -> dict[str, Any]: ...

    def load(self, folder: Path, meta: dict[str, Any], backbone_cls, task, architecture: dict[str, Any]): ...

    def how_to_load(self, name: str, meta: dict[str, Any], task, example: str) -> list[str]: ...


# -- writing files atomically -------------------------------------------------------------------
def atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def atomic_write_json(path: Path, data: dict[str, Any]) -> None:
    atomic_write_text(path, json.dumps(data, indent=2))


def atomic_save_tensors(tensors: dict[str, torch.Tensor], path: Path, layout: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items() if not k.endswith("position_ids")}
    save_file(tensors, str(tmp), metadata={"format": "pt", "tunesmith_layout": layout})
    os.replace(tmp, path)


def keeps_adapters(task, meta: dict[str, Any]) -> bool:
    """The run trained LoRA adapters and saves them as they are (tasks that keep plain weights merge them)."""
    return meta.get("lora") is not None and not task.merge_adapters_on_save


def read_json(path: Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text(encoding="utf-8"))


# -- the run folder's model ---------------------------------------------------------------------
def read_meta(folder: Path) -> dict[str, Any]:
    path = Path(folder) / META_FILE
    metrics = Path(folder) / METRICS_FILE
    if not path.is_file() and metrics.is_file():
        dropped = (json.loads(metrics.read_text(encoding="utf-8")).get("run") or {}).get("weights_not_kept")
        if dropped:
            raise RunFolderError(
                f"{folder}: this run kept no model ({dropped}). Its run_config.yaml trains it again: "
                f"tunesmith train -c {Path(folder) / CONFIG_FILE} --out runs/again"
            )
    if not path.is_file():
        raise RunFolderError(
            f"{folder} is not a tunesmith model folder (no {META_FILE}); give the --out folder of a finished "
            "`tunesmith train` run"
        )
    return json.loads(path.read_text(encoding="utf-8"))


def format_of(meta: dict[str, Any]) -> RunFormat:
    """The layout a folder was written in. Speech recognition folders of format version 1 say
    "native" like every transformers-native folder; they are."""
    return FORMATS.get(meta["layout"])()


def save_run(folder: Path, model, task, meta: dict[str, Any]) -> str:
    """Write the model, the task's preprocessing and tunesmith.json into `folder`; returns the layout.
    `meta` holds what the run knows (base model, strategy, model options, adapters). LoRA adapters are
    kept as they are where the task keeps them (the lora-adapter layout), else folded into plain weights
    first (a copy: the live model keeps its adapters)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    fmt = next(f for f in (cls() for _, cls in FORMATS.items()) if f.applies(model, task, meta))
    merged = meta.get("lora") is not None and not keeps_adapters(task, meta)
    if merged:
        model = plain_copy(model)
    task.save_preprocessing(folder)  # first: a layout may adjust what it wrote (xlm-mean's tokenizer)
    extra = fmt.save(folder, model, task, meta)
    full = {
        "format_version": FORMAT_VERSION,
        "layout": fmt.name,
        "task": task.name,
        "backbone": model.backbone.name,
        "task_state": task.state(),
        "labels": list(task.labels),
        "pooling": model.backbone.pooling,
        "dropout": task.dropout,
        **meta,
        **extra,
        **({"lora_merged": True} if merged else {}),
    }
    atomic_write_json(folder / META_FILE, full)
    return fmt.name


def plain_copy(model):
    """`model` with its LoRA adapters folded into plain weights, as a copy."""
    import copy

    from ..strategies.lora import merge_lora

    plain = copy.deepcopy(model)
    merge_lora(plain.backbone.encoder)
    return plain


def load_run(folder: Path, device: str | torch.device = "cpu"):
    """-> (model in eval mode, task, meta). Builds the architecture from the folder's config and
    loads the saved weights only: no network, no pickle, no remote code unless the run asked for it."""
    from ..models import BACKBONES
    from ..tasks import TASKS

    folder = Path(folder)
    meta = read_meta(folder)
    fmt = format_of(meta)
    task_cls = TASKS.get(meta["task"])
    architecture = fmt.architecture(folder, meta)
    backbone_cls = (
        BACKBONES.get(meta["backbone"]) if "backbone" in meta else legacy_backbone(task_cls.modality, architecture)
    )
    preprocessor = backbone_cls.load_preprocessor(folder, bool(meta.get("trust_remote_code", False)))
    task = task_cls.from_saved(folder, meta, preprocessor)
    model = fmt.load(folder, meta, backbone_cls, task, architecture)
    model.to(device).eval()
    return model, task, meta


def legacy_backbone(modality: str, config: dict[str, Any]):
    """Folders written before tunesmith.json named the backbone class: the one that takes its config."""
    from ..models import BACKBONES

    for _, cls in BACKBONES.items():
        if cls.modality == modality and cls.handles(config):
            return cls
    raise RunFolderError(f"no backbone for a {modality} model of type {config.get('model_type')!r}")


def check_state(folder: Path, model, state: dict[str, torch.Tensor], ignore=()) -> None:
    """Load `state` into `model`; a missing or unexpected tensor means a changed or foreign folder."""
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith("position_ids") and not any(k.endswith(i) for i in ignore)]
    if missing or unexpected:
        raise RunFolderError(
            f"{folder}/model.safetensors does not match its config: missing {missing[:5]}, unexpected {unexpected[:5]}"
        )


def shell_word(text: str) -> str:
    """`text` as one shell word: bare where that is safe, else double-quoted (our examples hold no $ or `)."""
    import re
    import shlex

    if re.fullmatch(r"[\w./-]+", text):
        return text
    return json.dumps(text) if not re.search(r"[$`\\!]", text) else shlex.quote(text)


def how_to_load_lines(name: str, example: str) -> list[str]:
    """The model card's first way in, whatever the layout: tunesmith's own loader and CLI."""
    return [
        "```python",
        "import tunesmith",
        "",
        f"predictor = tunesmith.load({json.dumps(name)})",
        f"print(predictor.predict([{json.dumps(example)}]))",
        "```",
        "",
        "From the command line:",
        "",
        "```bash",
        f"tunesmith predict {shell_word(name)} {shell_word(example)}",
        "```",
        "",
    ]


def pipeline_lines(name: str, task, example: str) -> list[str]:
    """For layouts transformers loads: the same model through `transformers.pipeline`."""
    return [
        f"This folder is also a standard transformers {task.pipeline_task} checkpoint:",
        "",
        "```python",
        "from transformers import pipeline",
        "",
        f"pipe = pipeline({json.dumps(task.pipeline_task)}, model={json.dumps(name)})",
        f"print(pipe({json.dumps(example)}))",
        "```",
        "",
    ]


def model_options(meta: dict[str, Any]):
    """The run's model config (pooling, window, trust): what rebuilds its base model."""
    from ..config import ModelConfig

    if "model_options" in meta:
        return ModelConfig.model_validate(meta["model_options"])
    pooling = meta.get("pooling")  # folders written before model_options: the pooling the run used
    return ModelConfig(
        name=meta.get("base_model") or "minilm",
        max_length=meta.get("max_length") or 128,
        pooling=pooling if pooling in ("mean", "cls", "pooler") else None,
        trust_remote_code=bool(meta.get("trust_remote_code", False)),
        window_seconds=meta.get("window_seconds"),
    )


def pipeline_outputs(folder: Path, task, modality, inputs: list, batch_size: int = 1) -> list[dict] | None:
    """What `transformers.pipeline(task.pipeline_task, model=folder)` gives for `inputs`, in the shape of
    the task's parity view (logits per label, or text). None where the folder's layout is not one
    transformers loads. One input per call by default: exact for every model (a group-norm wav2vec2
    hears a batch's padding, and XLM's mean counts it; tunesmith never batches those together)."""
    meta = read_meta(folder)
    fmt = format_of(meta)
    if not fmt.pipeline_loads:
        return None
    from transformers import pipeline

    pipe = pipeline(task.pipeline_task, model=str(folder), device="cpu")
    prepared = modality.pipeline_inputs(inputs, task.preprocessor)
    outputs = pipe(prepared, batch_size=batch_size, **task.pipeline_kwargs)
    return task.from_pipeline(outputs)


from . import lora_adapter, native, xlm_mean, tunesmith_own, onnx_graphs  # noqa: E402,F401,I001  (register, in priority order)

__all__ = [
    "FORMATS",
    "META_FILE",
    "FORMAT_VERSION",
    "save_run",
    "load_run",
    "read_meta",
    "format_of",
    "pipeline_outputs",
]
