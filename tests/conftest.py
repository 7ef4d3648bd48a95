"""Shared fixtures: a tiny random BERT built here (2 layers, 32 dims) and small learnable data.

Nothing is downloaded; every test runs offline in seconds on 2 CPU cores.
"""
from __future__ import annotations

import csv
import json
import os
import random
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

POS = ["good", "great", "love", "fine", "happy", "superb"]
NEG = ["bad", "awful", "hate", "poor", "sad", "boring"]
FILL = ["the", "movie", "was", "plot", "it", "really", "a", "very", "story", "actors", "and", "so", "this"]
VOCAB = ["[PAD]", "[unused0]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + POS + NEG + FILL + ["neutral", "meh"]


def make_tiny_bert(folder: Path, pooling: str | None = None, seed: int = 0) -> Path:
    """A 2-layer random BERT with a real WordPiece tokenizer, saved as a HF folder (safetensors)."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(VOCAB) + "\n", encoding="utf-8")
    tok = BertTokenizerFast(vocab={w: i for i, w in enumerate(VOCAB)}, do_lower_case=True)
    tok.save_pretrained(folder)
    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=len(VOCAB), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=128, max_position_embeddings=64)
    BertModel(cfg).save_pretrained(folder)
    if pooling:
        (folder / "1_Pooling").mkdir(exist_ok=True)
        (folder / "1_Pooling" / "config.json").write_text(json.dumps({
            "word_embedding_dimension": 32, "pooling_mode_cls_token": pooling == "cls",
            "pooling_mode_mean_tokens": pooling == "mean"}), encoding="utf-8")
    return folder


def sentiment_rows(n: int, seed: int = 0, classes: int = 2) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        k = i % classes
        words = rng.sample(FILL, rng.randint(2, 8))
        if k == 0:
            words.insert(rng.randrange(len(words) + 1), rng.choice(POS))
            label = "positive"
        elif k == 1:
            words.insert(rng.randrange(len(words) + 1), rng.choice(NEG))
            label = "negative"
        else:
            words.insert(rng.randrange(len(words) + 1), rng.choice(["neutral", "meh"]))
            label = "neutral"
        rows.append({"text": " ".join(words), "label": label})
    return rows


def write_csv(path: Path, rows: list[dict], fields=("text", "label")) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(fields), extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    return path


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> Path:
    return make_tiny_bert(tmp_path_factory.mktemp("models") / "tiny-bert")


@pytest.fixture(scope="session")
def tiny_bert_mean(tmp_path_factory) -> Path:
    return make_tiny_bert(tmp_path_factory.mktemp("models") / "tiny-bert-mean", pooling="mean")


@pytest.fixture(scope="session")
def sentiment_csv(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("data")
    return write_csv(d / "train.csv", sentiment_rows(160, seed=1))


@pytest.fixture(scope="session")
def sentiment_test_csv(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("data")
    return write_csv(d / "test.csv", sentiment_rows(60, seed=2))


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TUNESMITH_CACHE", str(tmp_path / "cache"))


def base_config(model: Path, data: Path, out: Path, **train) -> dict:
    """A fast config for tiny models: fp32 for exact comparisons, small batches."""
    t = {"epochs": 3, "batch_size": 16, "lr": 2e-3, "precision": "fp32", "seed": 0}
    t.update(train)
    return {"out": str(out), "model": {"name": str(model), "max_length": 32},
            "data": {"train": str(data)}, "train": t}


COLOURS = {"red": (200, 40, 40), "green": (40, 180, 60), "blue": (50, 60, 200)}


def make_tiny_resnet(folder: Path, seed: int = 0) -> Path:
    """A 2-stage random ResNet (basic blocks, 8/16 channels) with a ConvNeXt-style image processor
    (resize to 36, centre crop 32, mean = std = 0.5), saved as a HF folder (safetensors)."""
    import torch
    from transformers import ConvNextImageProcessorPil, ResNetConfig, ResNetForImageClassification

    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    cfg = ResNetConfig(num_channels=3, embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], layer_type="basic",
                       num_labels=5)  # an ImageNet-style checkpoint: its own 5-class classifier is dropped
    ResNetForImageClassification(cfg).save_pretrained(folder)
    ConvNextImageProcessorPil(size={"shortest_edge": 32}, image_mean=[0.5] * 3, image_std=[0.5] * 3).save_pretrained(folder)
    return folder


def make_image_folder(root: Path, per_class: int, seed: int = 0, size=(40, 48)) -> Path:
    """root/<colour>/<i>.png: noisy images whose dominant colour is the class (learnable in a few steps)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    for name, rgb in COLOURS.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            a = np.clip(np.array(rgb)[None, None, :] + rng.normal(0, 40, (*size, 3)), 0, 255).astype("uint8")
            Image.fromarray(a).save(root / name / f"{i}.png")
    return root


@pytest.fixture(scope="session")
def tiny_resnet(tmp_path_factory) -> Path:
    return make_tiny_resnet(tmp_path_factory.mktemp("models") / "tiny-resnet")


@pytest.fixture(scope="session")
def image_folders(tmp_path_factory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("images")
    return make_image_folder(d / "train", 16, seed=1), make_image_folder(d / "val", 6, seed=2)


# -- audio (audio-classification) ------------------------------------------------------------
TONES = {"low": 300.0, "high": 2400.0, "noise": None}  # class -> tone frequency (None: white noise)


def make_tiny_whisper(folder: Path, seed: int = 0, window: int = 1) -> Path:
    """A 2-layer random WhisperForConditionalGeneration (32 dims, 16 mel bins) whose feature extractor
    has a `window` s window (1 s: chunk_length=1 -> 100 mel frames, max_source_positions=50), safetensors.
    init_std 0.1, not 0.02: at 0.02 the random conv front end is so weak that the sinusoidal positions
    swamp every frame, pooled features then carry a clip's length rather than its sound, and a frozen
    encoder (head-only, LoRA) could not learn tones apart."""
    import torch
    from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration

    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    cfg = WhisperConfig(vocab_size=64, num_mel_bins=16, d_model=32, encoder_layers=2, decoder_layers=1,
                        encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64,
                        max_source_positions=50 * window, max_target_positions=32, pad_token_id=1, bos_token_id=2,
                        eos_token_id=3, decoder_start_token_id=2, init_std=0.1)
    WhisperForConditionalGeneration(cfg).save_pretrained(folder, safe_serialization=True)
    WhisperFeatureExtractor(feature_size=16, sampling_rate=16000, hop_length=160, chunk_length=window,
                            n_fft=400).save_pretrained(folder)
    return folder


def make_tiny_wav2vec2(folder: Path, seed: int = 0, feat_extract_norm: str = "group") -> Path:
    """A 2-layer random Wav2Vec2Model (32 dims, 3 conv layers, 80x downsampling) with its feature
    extractor (16 kHz, normalised; attention masks only for the layer-norm variant), safetensors."""
    import torch
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    layer = feat_extract_norm == "layer"
    cfg = Wav2Vec2Config(vocab_size=16, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=64, conv_dim=(16, 16, 16), conv_stride=(5, 4, 4), conv_kernel=(10, 4, 4),
                         num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2, layerdrop=0.0,
                         feat_extract_norm=feat_extract_norm, do_stable_layer_norm=layer,
                         mask_time_length=4, classifier_proj_size=16)
    Wav2Vec2Model(cfg).save_pretrained(folder, safe_serialization=True)
    Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, padding_value=0.0, do_normalize=True,
                             return_attention_mask=layer).save_pretrained(folder)
    return folder


def tone_clip(kind: str, seconds: float, rate: int, rng, channels: int = 1):
    """A clip of class `kind`: a tone with a little noise, or noise alone; random level."""
    import numpy as np

    t = np.arange(int(seconds * rate)) / rate
    f = TONES[kind]
    x = (np.sin(2 * np.pi * f * t + rng.uniform(0, 6.3)) if f else rng.normal(0, 0.5, t.shape))
    x = x * rng.uniform(0.2, 0.8) + rng.normal(0, 0.02, t.shape)
    x = np.clip(x, -1, 1).astype("float32")
    return np.stack([x, x * 0.9], axis=1) if channels == 2 else x


def make_audio_folder(root: Path, per_class: int, seed: int = 0) -> Path:
    """root/<class>/<i>.<wav|flac|ogg>: 0.3-0.9 s clips at mixed rates (8-44.1 kHz), some stereo."""
    import numpy as np
    import soundfile as sf

    rng = np.random.default_rng(seed)
    formats = [("wav", "PCM_16"), ("flac", "PCM_16"), ("ogg", "VORBIS")]
    rates = [16000, 8000, 22050, 44100]
    for kind in TONES:
        (root / kind).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            ext, subtype = formats[i % len(formats)]
            rate = rates[i % len(rates)]
            x = tone_clip(kind, rng.uniform(0.3, 0.9), rate, rng, channels=2 if i % 5 == 4 else 1)
            sf.write(root / kind / f"{i}.{ext}", x, rate, subtype=subtype)
    return root


@pytest.fixture(scope="session")
def tiny_whisper(tmp_path_factory) -> Path:
    return make_tiny_whisper(tmp_path_factory.mktemp("models") / "tiny-whisper")


@pytest.fixture(scope="session")
def tiny_wav2vec2(tmp_path_factory) -> Path:
    return make_tiny_wav2vec2(tmp_path_factory.mktemp("models") / "tiny-wav2vec2")


@pytest.fixture(scope="session")
def audio_folders(tmp_path_factory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("audio")
    return make_audio_folder(d / "train", 12, seed=1), make_audio_folder(d / "val", 5, seed=2)


# -- speech recognition (helpers in speech_helpers.py) ----------------------------------------
@pytest.fixture(scope="session")
def tiny_asr_whisper(tmp_path_factory) -> Path:
    """A tiny random Whisper with a real Whisper tokenizer and generation config (English-only)."""
    from speech_helpers import make_asr_whisper

    return make_asr_whisper(tmp_path_factory.mktemp("models") / "tiny-asr-whisper")


@pytest.fixture(scope="session")
def speech_tables(tmp_path_factory) -> tuple[Path, Path]:
    """(train.csv, val.csv): synthetic clips (column audio) with transcripts (column transcript)."""
    from speech_helpers import SENTENCES, write_speech_table

    d = tmp_path_factory.mktemp("speech")
    return write_speech_table(d, SENTENCES * 2, "train.csv"), write_speech_table(d, SENTENCES[:4], "val.csv", seed=50)
