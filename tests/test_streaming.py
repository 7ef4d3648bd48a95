"""data.streaming: tables read in batches, tokenised once into a memory-mapped cache, trained from it."""

import json

import pandas as pd
import pytest
import torch
from conftest import base_config, sentiment_rows, write_csv
from safetensors.torch import load_file

import tunesmith
from tunesmith.api import read_data
from tunesmith.config import config_from_dict
from tunesmith.data import streaming
from tunesmith.data.batching import row_lengths
from tunesmith.errors import ConfigError, DataError


def _write(path, rows):
    df = pd.DataFrame(rows)[["text", "label"]]
    if path.suffix == ".csv":
        write_csv(path, rows)
    elif path.suffix == ".parquet":
        df.to_parquet(path, row_group_size=37)  # several row groups: batches cross them
    else:
        path.write_text("".join(json.dumps(r) + "\n" for r in df.to_dict("records")), encoding="utf-8")
    return path


def _streamed(cfg: dict, batch_rows: int = 25) -> dict:
    return {**cfg, "data": {**cfg["data"], "streaming": True, "streaming_batch_rows": batch_rows}}


@pytest.fixture(scope="module")
def in_memory_run(tiny_bert_mean, tmp_path_factory):
    d = tmp_path_factory.mktemp("stream")
    data = _write(d / "train.csv", sentiment_rows(120, seed=1))
    return tunesmith.finetune(base_config(tiny_bert_mean, data, d / "in-memory", epochs=2), quiet=True)


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".jsonl"])
def test_streamed_run_matches_the_in_memory_run(in_memory_run, tiny_bert_mean, tmp_path, suffix):
    data = _write(tmp_path / f"train{suffix}", sentiment_rows(120, seed=1))
    res = tunesmith.finetune(_streamed(base_config(tiny_bert_mean, data, tmp_path / "run", epochs=2)), quiet=True)
    assert res.metrics["accuracy"] == in_memory_run.metrics["accuracy"]
    assert res.metrics["macro_f1"] == in_memory_run.metrics["macro_f1"]
    assert res.metrics["loss"] == pytest.approx(in_memory_run.metrics["loss"], abs=1e-5)
    assert [h["train_loss"] for h in res.history] == pytest.approx(
        [h["train_loss"] for h in in_memory_run.history], abs=1e-5
    )
    ours, theirs = load_file(res.out / "model.safetensors"), load_file(in_memory_run.out / "model.safetensors")
    assert ours.keys() == theirs.keys()
    for k in ours:
        torch.testing.assert_close(ours[k], theirs[k], atol=1e-5, rtol=1e-4)
    m = json.loads((res.out / "metrics.json").read_text())
    assert m["validation"]["n"] == in_memory_run.metrics["n"]
    assert "streamed" in (res.out / "report.html").read_text()  # example tables name rows, not texts


def test_mapped_rows_equal_the_in_memory_rows(tiny_bert_mean, tmp_path):
    from transformers import AutoTokenizer

    from tunesmith.modalities.text import TextModality, encode_texts

    rows = sentiment_rows(60, seed=3)
    for i in range(0, 60, 7):
        rows[i]["pair"] = rows[i]["text"]
    data = tmp_path / "pairs.parquet"
    pd.DataFrame([{**r, "pair": r["text"][::-1]} for r in rows]).to_parquet(data)
    tok = AutoTokenizer.from_pretrained(tiny_bert_mean)
    d = config_from_dict({"data": {"train": str(data), "text_pair_column": "pair"}}).data
    plain = TextModality().read(str(data), d, "training data")
    streamed = TextModality().read(str(data), d.model_copy(update={"streaming": True, "streaming_batch_rows": 8}), "")
    assert streamed.labels == plain.labels and len(streamed) == len(plain) == 60
    a, b = encode_texts(tok, plain, 12), encode_texts(tok, streamed, 12)
    assert isinstance(b, streaming.MappedRows)
    assert list(b) == a and "token_type_ids" in b[0]
    assert row_lengths(b) == row_lengths(a)
    idx = [5, 0, 59, 17]
    sub = encode_texts(tok, streamed.subset(idx), 12)
    assert list(sub) == [a[i] for i in idx] and list(b[2:5]) == a[2:5]
    assert list(sub + b[:2]) == [a[i] for i in idx] + a[:2]


def test_the_cache_is_reused_without_tokenising(tiny_bert_mean, tmp_path, monkeypatch):
    data = _write(tmp_path / "train.parquet", sentiment_rows(80, seed=4))
    cfg = _streamed(base_config(tiny_bert_mean, data, tmp_path / "first", epochs=1))
    first = tunesmith.finetune(cfg, quiet=True)
    folders = list(streaming.cache_root().iterdir())
    assert len(folders) == 1 and (folders[0] / "tokens.bin").is_file() and (folders[0] / "offsets.npy").is_file()
    stamp = folders[0].stat().st_mtime_ns

    def no_tokenising(*a, **k):
        raise AssertionError("tokenised again")

    monkeypatch.setattr(streaming, "_write_tokens", no_tokenising)
    second = tunesmith.finetune({**cfg, "out": str(tmp_path / "second")}, quiet=True)
    assert second.metrics["accuracy"] == first.metrics["accuracy"]
    assert list(streaming.cache_root().iterdir()) == folders and folders[0].stat().st_mtime_ns == stamp


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".jsonl"])
def test_a_bad_row_in_a_later_batch_names_file_and_row(tmp_path, suffix):
    rows = sentiment_rows(90, seed=5)
    rows[66]["text"] = "  "
    data = _write(tmp_path / f"train{suffix}", rows)
    cfg = config_from_dict({"data": {"train": str(data), "streaming": True, "streaming_batch_rows": 20}})
    with pytest.raises(DataError, match=rf"{data.name}: empty text in column 'text' at row 67 .*fill in their text"):
        read_data(cfg)
    rows[66]["text"], rows[81]["label"] = "fixed", None
    _write(data, rows)
    with pytest.raises(DataError, match=rf"{data.name}: missing label .* at row 82\. .*fill them in or drop"):
        read_data(cfg)


def test_missing_column_lists_the_columns_found(tmp_path):
    data = _write(tmp_path / "train.parquet", sentiment_rows(30, seed=6))
    cfg = config_from_dict({"data": {"train": str(data), "streaming": True, "text_column": "review"}})
    with pytest.raises(DataError, match=r"no text column 'review'\. Columns found: 'text', 'label'"):
        read_data(cfg)


def test_streamed_split_is_the_in_memory_split_and_warns_of_leaks(tmp_path):
    rows = sentiment_rows(100, seed=7)
    rows += rows[:10]  # duplicates: some land on both sides of the split
    data = _write(tmp_path / "train.csv", rows)
    plain = read_data(config_from_dict({"data": {"train": str(data)}}))
    streamed = read_data(config_from_dict({"data": {"train": str(data), "streaming": True}}))
    for split in ("train", "validation"):
        assert streamed.splits[split].labels == plain.splits[split].labels
    assert streamed.preflight.warnings == plain.preflight.warnings
    assert any("also appear in the training data" in w for w in plain.preflight.warnings)


def test_a_modality_without_streaming_refuses(tmp_path):
    cfg = config_from_dict(
        {"task": "image-classification", "data": {"train": str(tmp_path / "images"), "streaming": True}}
    )
    with pytest.raises(ConfigError, match=r"data.streaming: the image inputs of task image-classification are not"):
        read_data(cfg)


def test_a_json_array_is_refused_with_the_fix(tmp_path):
    data = tmp_path / "train.json"
    data.write_text(json.dumps(sentiment_rows(10)), encoding="utf-8")
    with pytest.raises(DataError, match=r"one object per line \(\.jsonl\)"):
        read_data(config_from_dict({"data": {"train": str(data), "streaming": True}}))


def test_a_streamed_head_only_run_matches_the_in_memory_one(tiny_bert_mean, tmp_path):
    """Head-only: the frozen backbone's features are computed from the mapped rows, as from in-memory ones."""
    data = _write(tmp_path / "train.parquet", sentiment_rows(80, seed=8))
    cfg = base_config(tiny_bert_mean, data, tmp_path / "plain")
    cfg["strategy"] = {"name": "head-only"}  # a solved head: no epochs, no learning rate
    del cfg["train"]["epochs"], cfg["train"]["lr"]
    plain = tunesmith.finetune(cfg, quiet=True)
    streamed = tunesmith.finetune(_streamed({**cfg, "out": str(tmp_path / "streamed")}), quiet=True)
    assert streamed.metrics["accuracy"] == plain.metrics["accuracy"]
    assert streamed.metrics["loss"] == pytest.approx(plain.metrics["loss"], abs=1e-5)
