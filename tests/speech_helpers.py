"""Tiny speech-recognition models and synthetic speech for the fast tests (offline, deterministic).

Whisper: a 2+2-layer random WhisperForConditionalGeneration with a real (byte-level, merge-free)
WhisperTokenizer, a 1 s feature-extractor window and a generation config like the real ones, in
English-only or multilingual form. Speech: each word is a short chord of two tones, so a clip's
content is learnable by a tiny model in a few steps.
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

SPECIALS_EN = ["<|endoftext|>", "<|startoftranscript|>", "<|en|>", "<|translate|>", "<|transcribe|>",
               "<|startoflm|>", "<|startofprev|>", "<|nocaptions|>", "<|notimestamps|>"]
SPECIALS_MULTI = ["<|endoftext|>", "<|startoftranscript|>", "<|en|>", "<|de|>", "<|translate|>", "<|transcribe|>",
                  "<|startoflm|>", "<|startofprev|>", "<|nocaptions|>", "<|notimestamps|>"]
WORDS = {"yes": (300, 900), "no": (450, 1400), "up": (600, 1800), "down": (750, 2300), "go": (1000, 2900),
         "stop": (1200, 3400)}


def bytes_to_unicode() -> list[str]:
    """GPT-2's printable stand-ins for the 256 bytes (the byte-level BPE alphabet), byte order."""
    from transformers.convert_slow_tokenizer import bytes_to_unicode as table

    chars = table()
    return [chars[b] for b in range(256)]


def make_asr_whisper(folder: Path, multilingual: bool = False, seed: int = 0, window: int = 1) -> Path:
    """A tiny random Whisper hearing `window` seconds (50 encoder positions a second, like real ones)."""
    import torch
    from transformers import (GenerationConfig, WhisperConfig, WhisperFeatureExtractor,
                              WhisperForConditionalGeneration, WhisperProcessor, WhisperTokenizer)

    folder.mkdir(parents=True, exist_ok=True)
    chars = bytes_to_unicode()
    specials = SPECIALS_MULTI if multilingual else SPECIALS_EN
    tok = WhisperTokenizer(vocab={c: i for i, c in enumerate(chars)}, merges=[], unk_token=specials[0],
                           bos_token=specials[0], eos_token=specials[0], pad_token=specials[0],
                           extra_special_tokens=specials[1:], model_max_length=64)
    ids = {s: tok.convert_tokens_to_ids(s) for s in specials}
    assert ids["<|endoftext|>"] == 256 and len(tok) == 256 + len(specials)
    eot, sot = ids["<|endoftext|>"], ids["<|startoftranscript|>"]
    torch.manual_seed(seed)
    cfg = WhisperConfig(vocab_size=len(tok), num_mel_bins=16, d_model=32, encoder_layers=2, decoder_layers=2,
                        encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64,
                        max_source_positions=50 * window, max_target_positions=48, pad_token_id=eot, bos_token_id=eot,
                        eos_token_id=eot, decoder_start_token_id=sot, begin_suppress_tokens=None,
                        suppress_tokens=None)
    model = WhisperForConditionalGeneration(cfg)
    gen = dict(decoder_start_token_id=sot, bos_token_id=eot, eos_token_id=eot, pad_token_id=eot, max_length=48,
               no_timestamps_token_id=ids["<|notimestamps|>"], prev_sot_token_id=ids["<|startofprev|>"],
               is_multilingual=multilingual, return_timestamps=False,
               suppress_tokens=[ids[t] for t in specials[1:]],  # a random model must still write text
               begin_suppress_tokens=[eot])
    if multilingual:
        gen.update(lang_to_id={"<|en|>": ids["<|en|>"], "<|de|>": ids["<|de|>"]},
                   task_to_id={"translate": ids["<|translate|>"], "transcribe": ids["<|transcribe|>"]},
                   task="transcribe")
    model.generation_config = GenerationConfig(**gen)
    model.save_pretrained(folder, safe_serialization=True)
    fe = WhisperFeatureExtractor(feature_size=16, sampling_rate=16000, hop_length=160, chunk_length=window, n_fft=400)
    WhisperProcessor(feature_extractor=fe, tokenizer=tok).save_pretrained(folder)
    fe.save_pretrained(folder)
    return folder


def make_ctc_wav2vec2(folder: Path, seed: int = 0, norm: str = "layer") -> Path:
    """A 2-layer random Wav2Vec2Model (80x downsampling: 200 frames/s); norm "layer" (takes attention
    masks) or "group" (wav2vec2-base style: normalises over time, padding included; no masks)."""
    import torch
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    cfg = Wav2Vec2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                         conv_dim=(16, 16, 16), conv_stride=(5, 4, 4), conv_kernel=(10, 4, 4),
                         num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2, layerdrop=0.0,
                         feat_extract_norm=norm, do_stable_layer_norm=norm == "layer", mask_time_length=4,
                         hidden_dropout=0.0, attention_dropout=0.0, activation_dropout=0.0, feat_proj_dropout=0.0,
                         final_dropout=0.0)
    Wav2Vec2Model(cfg).save_pretrained(folder, safe_serialization=True)
    Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, padding_value=0.0, do_normalize=True,
                             return_attention_mask=norm == "layer").save_pretrained(folder)
    return folder


def say(text: str, rate: int = 16000, word_seconds: float = 0.22, gap: float = 0.04, seed: int = 0) -> np.ndarray:
    """Synthetic 'speech': each word a two-tone chord, separated by short pauses, a little noise."""
    rng = np.random.default_rng(seed)
    parts = []
    for w in text.split():
        f1, f2 = WORDS[w]
        t = np.arange(int(word_seconds * rate)) / rate
        env = np.minimum(1, np.minimum(t, t[::-1]) / 0.02)
        parts += [0.4 * env * (np.sin(2 * np.pi * f1 * t) + np.sin(2 * np.pi * f2 * t)) / 2,
                  np.zeros(int(gap * rate))]
    x = np.concatenate(parts) + rng.normal(0, 0.005, sum(len(p) for p in parts))
    return x.astype("float32")


SENTENCES = ["yes go", "no stop", "up down", "go up", "stop no", "down yes", "yes no go", "up go stop"]


def write_speech_table(folder: Path, sentences: list[str], name: str = "clips.csv", seed: int = 0,
                       rates=(16000, 22050, 8000)) -> Path:
    """folder/name: audio path + transcript per row; clips at mixed sample rates (resampled on read)."""
    import soundfile as sf

    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, s in enumerate(sentences):
        rate = rates[i % len(rates)]
        path = folder / f"{Path(name).stem}-{i}.wav"
        sf.write(path, say(s, rate, seed=seed + i), rate, subtype="PCM_16")
        rows.append({"audio": path.name, "transcript": s.capitalize() + "."})
    table = folder / name
    with open(table, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=["audio", "transcript"])
        w.writeheader()
        w.writerows(rows)
    return table


def speech_config(model: Path, train: Path, out: Path, val: Path | None = None, **train_opts) -> dict:
    t = {"epochs": 2, "batch_size": 4, "eval_batch_size": 8, "lr": 3e-3, "precision": "fp32", "seed": 0,
         "early_stopping_patience": None}
    t.update(train_opts)
    cfg = {"task": "speech-recognition", "out": str(out), "model": {"name": str(model)},
           "data": {"train": str(train), "text_column": "transcript", "audio_column": "audio"},
           "train": t, "speech": {"max_new_tokens": 12}}
    if val is not None:
        cfg["data"]["validation"] = str(val)
    return cfg
