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
