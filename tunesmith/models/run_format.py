"""The trained model inside a run folder: written so others can load it, read back identically.

Layouts:
- "native": transformers' own *ForSequenceClassification computes exactly our model (e.g. BERT
  with its pooler), so config.json + model.safetensors are that class and
  `transformers.pipeline("text-classification", model=OUT)` loads the folder.
- "xlm-mean": BERT with mean pooling, saved as the equivalent XLMForSequenceClassification so
  `pipeline` loads it too (see xlm_layout.py for why this is exact and where it refuses).
- "lora-adapter": LoRA adapters + head only; the base model is read from its folder (checked by
  fingerprint). `tunesmith export --merge` writes plain weights in one of the layouts above.
- "native" (images): transformers' own *ForImageClassification with the trained linear in its
  classifier slot, plus the model's image processor, so `pipeline("image-classification")` loads it.
- "native" (audio): wav2vec2 / HuBERT as Wav2Vec2ForSequenceClassification / HubertForSequenceClassification
  (identity projector, our linear as classifier: exactly our mean pooling), plus the feature
  extractor, so `pipeline("audio-classification")` loads it. Whisper runs use "tunesmith".
- "native" (speech recognition): transformers' own WhisperForConditionalGeneration / *ForCTC with
  its generation config, tokenizer and feature extractor, so `pipeline("automatic-speech-recognition")`
  loads it (LoRA merged on save); written and read by speech_backbone.py.
- "tunesmith": the pooling has no transformers-native head (or, for images, the model is our own
  module, e.g. the catalogue EfficientNet-Lite0, named in config.json as `tunesmith_builtin`).
  Weights keep our names and config.json carries no model_type, so transformers refuses the folder loudly instead of silently loading a
  different model; `tunesmith.load(OUT)` is the way in, and the model card says so.
The head, label map and preprocessing always travel in the folder (DESIGN rule 6).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from ..errors import RunFolderError
from .xlm_layout import EXTRA_FILE, can_use_xlm_layout, from_xlm, to_xlm

FORMAT_VERSION = 1
META_FILE = "tunesmith.json"
ENCODER_CONFIG = "encoder_config.json"
ADAPTER_FILE = "adapter.safetensors"


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _atomic_save_tensors(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str]) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp), metadata=metadata)
    os.replace(tmp, path)


def save_model(folder: Path, model, task, tokenizer, meta: dict[str, Any]) -> str:
    """Write weights, configs, the preprocessor (`tokenizer`: a tokenizer or an image processor) and
    tunesmith.json into `folder`. Returns the layout."""
    folder.mkdir(parents=True, exist_ok=True)
    backbone = model.backbone
    if backbone.modality == "speech":  # recognisers: transformers' own checkpoint + processor (speech_backbone.py)
        from .speech_backbone import save_speech_run

        return save_speech_run(folder, model, task, meta, META_FILE, FORMAT_VERSION)
    encoder = backbone.encoder
    config = encoder.config.to_dict() if hasattr(encoder, "config") else {}
    config.pop("_name_or_path", None)
    labels = task.labels
    config.update({
        "id2label": {str(i): label for i, label in enumerate(labels)},
        "label2id": {label: i for i, label in enumerate(labels)},
        "num_labels": len(labels),
        "problem_type": "single_label_classification",
    })
    head = model.head.classifier
    label_config = {k: config[k] for k in ("id2label", "label2id", "num_labels", "problem_type")}
    if meta.get("lora") is not None:
        # Adapters + head only (a few MB); the base model is read from its own folder at load time.
        layout = "lora-adapter"
        _atomic_save_tensors({k: v for k, v in model.state_dict().items() if _is_adapter_or_head(k)},
                             folder / ADAPTER_FILE, {"format": "pt", "tunesmith_layout": layout})
        _atomic_write_text(folder / "config.json", json.dumps({
            "architectures": ["TunesmithLoraAdapter"],
            "tunesmith_note": "LoRA adapters + task head over the base model named in tunesmith.json; load with "
                              "tunesmith.load(folder), or write plain weights with `tunesmith export FOLDER --merge`.",
            "id2label": config["id2label"], "label2id": config["label2id"],
        }, indent=2))
        tensors = None
    elif backbone.modality == "image" and not backbone.native_classification_head:
        # a model of our own (the catalogue EfficientNet-Lite0): our names, config.json names the module
        layout = "tunesmith"
        tensors = dict(model.state_dict())
        _atomic_write_text(folder / "config.json", json.dumps({
            "architectures": ["TunesmithImageClassifier"], "tunesmith_builtin": meta["builtin"],
            "tunesmith_note": "load with tunesmith.load(folder); see README.md.",
            "id2label": config["id2label"], "label2id": config["label2id"]}, indent=2))
    elif backbone.modality == "image":
        # transformers' own *ForImageClassification with our linear back in its classifier slot
        layout = "native"
        tensors = dict(encoder.state_dict())
        tensors.update({f"{backbone.classifier_path}.weight": head.weight,
                        f"{backbone.classifier_path}.bias": head.bias})
        config["architectures"] = [type(encoder).__name__]
        _atomic_write_text(folder / "config.json", json.dumps(config, indent=2))
        meta = {**meta, "classifier_path": backbone.classifier_path}
    elif backbone.modality == "audio":
        layout, tensors = _audio_layout(folder, backbone, model, config)
    elif backbone.native_classification_head:
        layout = "native"
        prefix = encoder.base_model_prefix
        tensors = {f"{prefix}.{k}": v for k, v in encoder.state_dict().items()}
        tensors.update({"classifier.weight": head.weight, "classifier.bias": head.bias})
        arch = type(encoder).__name__.replace("Model", "ForSequenceClassification")
        config["architectures"] = [arch]
        _atomic_write_text(folder / "config.json", json.dumps(config, indent=2))
    elif can_use_xlm_layout(backbone, tokenizer):
        layout = "xlm-mean"
        xlm_config, tensors, extra = to_xlm(encoder, head, task.dropout, label_config)
        _atomic_write_text(folder / "config.json", json.dumps(xlm_config, indent=2))
        _atomic_save_tensors(extra, folder / EXTRA_FILE, {"format": "pt"})
        tokenizer = _without_pad_token(tokenizer)
    else:
        layout = "tunesmith"
        tensors = dict(model.state_dict())
        config["architectures"] = [type(encoder).__name__]
        _atomic_write_text(folder / ENCODER_CONFIG, json.dumps(config, indent=2))
        _atomic_write_text(folder / "config.json", json.dumps({
            "architectures": ["TunesmithTextClassifier"],
            "tunesmith_note": f"pooling '{backbone.pooling}' has no transformers-native head; "
                              "load with tunesmith.load(folder). See README.md.",
            "id2label": config["id2label"], "label2id": config["label2id"],
        }, indent=2))
    if tensors is not None:
        tensors = {k: v for k, v in tensors.items() if not k.endswith("position_ids")}
        _atomic_save_tensors(tensors, folder / "model.safetensors", {"format": "pt", "tunesmith_layout": layout})
    tokenizer.save_pretrained(folder)
    full_meta = {"format_version": FORMAT_VERSION, "layout": layout, "task": task.name, "labels": labels,
                 "pooling": backbone.pooling, "dropout": task.dropout, **meta}
    _atomic_write_text(folder / META_FILE, json.dumps(full_meta, indent=2))
    return layout


def _audio_layout(folder: Path, backbone, model, config: dict) -> tuple[str, dict[str, torch.Tensor]]:
    """wav2vec2 / HuBERT: transformers' *ForSequenceClassification computes exactly our mean-pooled
    model when its projector is the identity and its classifier is our linear (pooling a linear map
    of the frames = that map of the pooled frames), so `pipeline("audio-classification")` loads the
    folder. Whisper (and other encoders): no transformers class pools over the audio frames only, so
    the tunesmith layout, which transformers refuses loudly rather than loading a different model."""
    from .audio_backbone import NATIVE_SEQUENCE_CLASSIFIERS

    encoder, head = backbone.encoder, model.head.classifier
    if backbone.native_classification_head:
        d = backbone.feature_dim
        tensors = {f"{encoder.base_model_prefix}.{k}": v for k, v in encoder.state_dict().items()}
        tensors.update({"projector.weight": torch.eye(d), "projector.bias": torch.zeros(d),
                        "classifier.weight": head.weight, "classifier.bias": head.bias})
        config.update(architectures=[NATIVE_SEQUENCE_CLASSIFIERS[encoder.config.model_type]],
                      classifier_proj_size=d, use_weighted_layer_sum=False)
        _atomic_write_text(folder / "config.json", json.dumps(config, indent=2))
        return "native", tensors
    config["architectures"] = [type(encoder).__name__]
    _atomic_write_text(folder / ENCODER_CONFIG, json.dumps(config, indent=2))
    _atomic_write_text(folder / "config.json", json.dumps({
        "architectures": ["TunesmithAudioClassifier"],
        "tunesmith_note": f"{backbone.kind} encoder, mean over the encoder frames that hold audio (not the "
                          "padded window), then a linear head: no transformers class computes this; load with "
                          "tunesmith.load(folder). See README.md.",
        "id2label": config["id2label"], "label2id": config["label2id"]}, indent=2))
    return "tunesmith", dict(model.state_dict())


def _audio_state(folder: Path, layout: str, backbone, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Saved audio tensors -> our state dict (the inverse of _audio_layout)."""
    if layout != "native":
        return tensors
    d = backbone.feature_dim
    if not (torch.equal(tensors["projector.weight"], torch.eye(d)) and not tensors["projector.bias"].any()):
        raise RunFolderError(f"{folder}/model.safetensors: the projector is not the identity tunesmith saves; this "
                             "folder was changed after training (train it again, or load it with transformers)")
    prefix = backbone.encoder.base_model_prefix + "."
    state = {f"backbone.encoder.{k[len(prefix):]}": v for k, v in tensors.items() if k.startswith(prefix)}
    state["head.classifier.weight"] = tensors["classifier.weight"]
    state["head.classifier.bias"] = tensors["classifier.bias"]
    return state


def _without_pad_token(tokenizer):
    """A copy whose pad token is unset, so batched `pipeline` calls fail instead of mis-scoring."""
    import copy

    tok = copy.deepcopy(tokenizer)
    tok.pad_token = None
    return tok


def _is_adapter_or_head(name: str) -> bool:
    return "lora_" in name or name.startswith("head.")


def _load_lora_run(folder: Path, meta: dict[str, Any], trust: bool, modality: str):
    from ..strategies.feature_cache import model_fingerprint
    from ..strategies.lora import inject_lora
    from .catalogue import resolve_model

    base = resolve_model(meta["catalogue_name"] or meta["base_model_path"])
    if model_fingerprint(base) != meta["base_model_fingerprint"]:
        raise RunFolderError(
            f"{folder} holds LoRA adapters for the base model at {meta['base_model_path']}, but the weights "
            f"found at {base} differ from the ones it was trained on; restore that model folder"
        )
    if modality == "image":
        from .vision_backbone import load_vision_backbone

        backbone = load_vision_backbone(base, trust)
    elif modality == "audio":
        from .audio_backbone import load_audio_backbone, load_feature_extractor
        from .whisper_window import set_whisper_window

        backbone = load_audio_backbone(base, trust)
        # the run's window (model.window_seconds): its own feature extractor already pads to it
        set_whisper_window(backbone.encoder, load_feature_extractor(folder, trust), meta.get("window_seconds"))
    else:
        from .text_backbone import load_text_backbone

        backbone = load_text_backbone(base, meta["pooling"], trust)
    inject_lora(backbone.encoder, meta["lora_options"])
    return backbone, load_file(str(folder / ADAPTER_FILE))


def read_meta(folder: Path) -> dict[str, Any]:
    path = Path(folder) / META_FILE
    if not path.is_file():
        raise RunFolderError(
            f"{folder} is not a tunesmith model folder (no {META_FILE}); give the --out folder of a finished "
            "`tunesmith train` run"
        )
    return json.loads(path.read_text(encoding="utf-8"))


def load_model(folder: Path, device: str | torch.device = "cpu"):
    """-> (model in eval mode, task, tokenizer, meta). Builds the architecture from config and loads
    the saved weights only: no network, no pickle, no remote code unless the run asked for it."""
    from transformers import AutoConfig, AutoModel

    from ..tasks import TASKS
    from ..tasks.base import TaskModel
    from .text_backbone import TextBackbone, load_tokenizer
    from .vision_backbone import load_image_processor, load_vision_backbone

    folder = Path(folder)
    meta = read_meta(folder)
    trust = bool(meta.get("trust_remote_code", False))
    layout = meta["layout"]
    modality = TASKS.get(meta["task"]).modality
    if modality == "speech":
        from .speech_backbone import load_speech_run

        return load_speech_run(folder, meta, device)
    if layout == "lora-adapter":
        backbone, tensors = _load_lora_run(folder, meta, trust, modality)
    elif modality == "image":
        config = None
        if layout == "native":
            cfg_dict = json.loads((folder / "config.json").read_text(encoding="utf-8"))
            config = AutoConfig.for_model(cfg_dict.pop("model_type"), **cfg_dict)
        backbone = load_vision_backbone(folder, trust, weights=False, config=config)
        tensors = load_file(str(folder / "model.safetensors"))
    elif modality == "audio":
        from .audio_backbone import load_audio_backbone

        cfg_dict = json.loads((folder / ("config.json" if layout == "native" else ENCODER_CONFIG))
                              .read_text(encoding="utf-8"))
        config = AutoConfig.for_model(cfg_dict.pop("model_type"), **cfg_dict)
        backbone = load_audio_backbone(folder, trust, weights=False, config=config)
        tensors = load_file(str(folder / "model.safetensors"))
    else:
        cfg_file = folder / ("config.json" if layout in ("native", "xlm-mean") else ENCODER_CONFIG)
        cfg_dict = json.loads(cfg_file.read_text(encoding="utf-8"))
        if layout == "xlm-mean":
            cfg_dict = cfg_dict["tunesmith_source"]["bert_config"]
        config = AutoConfig.for_model(cfg_dict.pop("model_type"), **cfg_dict)
        backbone = TextBackbone(AutoModel.from_config(config, trust_remote_code=trust), meta["pooling"])
        tensors = load_file(str(folder / "model.safetensors"))
    encoder = backbone.encoder
    if modality == "audio":
        from .audio_backbone import load_feature_extractor

        preprocessor, kwargs = load_feature_extractor(folder, trust), {}
    else:
        preprocessor = (load_image_processor(folder, trust) if modality == "image" else load_tokenizer(folder, trust))
        kwargs = ({"image_mean": list(preprocessor.image_mean), "image_std": list(preprocessor.image_std)}
                  if modality == "image" else {"pad_token_id": meta.get("pad_token_id", 0)})
    task = TASKS.get(meta["task"])(meta["labels"], dropout=meta.get("dropout", 0.1), **kwargs)
    model = TaskModel(backbone, task.build_head(backbone))
    if layout == "lora-adapter":
        state = tensors
        expected = {k for k in model.state_dict() if _is_adapter_or_head(k)}
        if set(state) != expected:
            raise RunFolderError(f"{folder}/{ADAPTER_FILE} does not match the adapters of its base model "
                                 f"(missing {sorted(expected - set(state))[:5]})")
    elif modality == "audio":
        state = _audio_state(folder, layout, backbone, tensors)
    elif modality == "image" and layout == "native":
        path = meta["classifier_path"]
        state = {f"backbone.encoder.{k}": v for k, v in tensors.items() if not k.startswith(path + ".")}
        state["head.classifier.weight"] = tensors[f"{path}.weight"]
        state["head.classifier.bias"] = tensors[f"{path}.bias"]
    elif layout == "native":
        prefix = encoder.base_model_prefix + "."
        state = {f"backbone.encoder.{k[len(prefix):]}": v for k, v in tensors.items() if k.startswith(prefix)}
        state["head.classifier.weight"] = tensors["classifier.weight"]
        state["head.classifier.bias"] = tensors["classifier.bias"]
    elif layout == "xlm-mean":
        state = from_xlm(tensors, load_file(str(folder / EXTRA_FILE)), encoder.config.num_hidden_layers)
    else:
        state = tensors
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith("position_ids")
               and not (layout == "lora-adapter" and not _is_adapter_or_head(k))]
    if missing or unexpected:
        raise RunFolderError(f"{folder}/model.safetensors does not match its config: missing {missing[:5]}, "
                             f"unexpected {unexpected[:5]}")
    model.to(device).eval()
    return model, task, preprocessor, meta
