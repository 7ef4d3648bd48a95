"""Every user mistake: a clear error naming the file/row and the fix, exit code 2, no traceback,
and no run folder that looks complete."""

import json
import subprocess
import sys

import pytest
from conftest import sentiment_rows, write_csv

from tunesmith.cli import main


def _train(capsys, model, data, out, *extra):
    code = main(
        [
            "train",
            "--model",
            str(model),
            "--data",
            str(data),
            "--out",
            str(out),
            "--epochs",
            "1",
            "--quiet",
            "--set",
            "train.precision=fp32",
            "--set",
            "model.max_length=32",
            *extra,
        ]
    )
    err = capsys.readouterr().err
    return code, err


def _assert_refused(code, err, out, *needles):
    assert code == 2, err
    assert "Traceback" not in err
    for n in needles:
        assert n in err, f"{n!r} not in: {err}"
    assert not (out / "metrics.json").exists()
    assert not (out / "model.safetensors").exists()


@pytest.fixture
def good_csv(tmp_path):
    return write_csv(tmp_path / "good.csv", sentiment_rows(40))


def test_missing_file(capsys, tiny_bert_mean, tmp_path):
    code, err = _train(capsys, tiny_bert_mean, tmp_path / "nope.csv", tmp_path / "o")
    _assert_refused(code, err, tmp_path / "o", "not found", "nope.csv")


def test_unknown_format_and_unreadable_parquet(capsys, tiny_bert_mean, tmp_path):
    f = tmp_path / "data.xlsx"
    f.write_bytes(b"PK\x03\x04junk")
    code, err = _train(capsys, tiny_bert_mean, f, tmp_path / "o")
    _assert_refused(code, err, tmp_path / "o", "data.xlsx", "unknown data format", ".csv")
    g = tmp_path / "data.parquet"
    g.write_bytes(b"this is not parquet")
    code, err = _train(capsys, tiny_bert_mean, g, tmp_path / "o")
    _assert_refused(code, err, tmp_path / "o", "data.parquet", "Parquet")


def test_missing_column_lists_columns_found(capsys, tiny_bert_mean, good_csv, tmp_path):
    code, err = _train(capsys, tiny_bert_mean, good_csv, tmp_path / "o", "--text-column", "review")
    _assert_refused(code, err, tmp_path / "o", "good.csv", "'review'", "Columns found", "'text'", "'label'")


def test_empty_text_names_rows(capsys, tiny_bert_mean, tmp_path):
    rows = sentiment_rows(40)
    rows[6]["text"] = "   "
    f = write_csv(tmp_path / "t.csv", rows)
    code, err = _train(capsys, tiny_bert_mean, f, tmp_path / "o")
    _assert_refused(code, err, tmp_path / "o", "t.csv", "empty text", "row 7")


def test_non_utf8_names_line(capsys, tiny_bert_mean, tmp_path):
    f = tmp_path / "latin.csv"
    f.write_bytes("text,label\ngood movie,positive\ncaf\xe9 was bad,negative\n".encode("latin-1"))
    code, err = _train(capsys, tiny_bert_mean, f, tmp_path / "o")
    _assert_refused(code, err, tmp_path / "o", "latin.csv", "line 3", "UTF-8", "iconv")


def test_nan_labels_name_rows_jsonl(capsys, tiny_bert_mean, tmp_path):
    rows = sentiment_rows(40)
    f = tmp_path / "d.jsonl"
    lines = [json.dumps(r) for r in rows]
    lines[3] = json.dumps({"text": rows[3]["text"], "label": None})
    lines[9] = json.dumps({"text": rows[9]["text"], "label": float("nan")}).replace("NaN", "NaN")
    f.write_text("\n".join(lines) + "\n")
    code, err = _train(capsys, tiny_bert_mean, f, tmp_path / "o")
    _assert_refused(code, err, tmp_path / "o", "d.jsonl", "missing label", "rows 4, 10")


def test_one_class_only(capsys, tiny_bert_mean, tmp_path):
    rows = [r for r in sentiment_rows(40) if r["label"] == "positive"]
    f = write_csv(tmp_path / "one.csv", rows)
    code, err = _train(capsys, tiny_bert_mean, f, tmp_path / "o")
    _assert_refused(code, err, tmp_path / "o", "one.csv", "'positive'", "at least two classes")


def test_validation_label_never_seen_in_training(capsys, tiny_bert_mean, good_csv, tmp_path):
    val = sentiment_rows(10, seed=3)
    val[2]["label"] = "postive"
    v = write_csv(tmp_path / "val.csv", val)
    code, err = _train(capsys, tiny_bert_mean, good_csv, tmp_path / "o", "--validation-data", str(v))
    _assert_refused(code, err, tmp_path / "o", "val.csv", "'postive'", "never appear", "row 3")


def test_empty_file_and_header_only(capsys, tiny_bert_mean, tmp_path):
    e = tmp_path / "empty.csv"
    e.write_text("")
    code, err = _train(capsys, tiny_bert_mean, e, tmp_path / "o")
    _assert_refused(code, err, tmp_path / "o", "empty.csv", "empty")
    h = tmp_path / "header.csv"
    h.write_text("text,label\n")
    code, err = _train(capsys, tiny_bert_mean, h, tmp_path / "o")
    _assert_refused(code, err, tmp_path / "o", "header.csv", "no data rows")


def test_model_folder_without_weights_and_pickle_only(capsys, tiny_bert_mean, good_csv, tmp_path):
    import shutil

    m = tmp_path / "noweights"
    shutil.copytree(tiny_bert_mean, m)
    (m / "model.safetensors").unlink()
    code, err = _train(capsys, m, good_csv, tmp_path / "o")
    _assert_refused(code, err, tmp_path / "o", "noweights", "no weights")
    (m / "pytorch_model.bin").write_bytes(b"\x80\x02pickle")
    code, err = _train(capsys, m, good_csv, tmp_path / "o")
    _assert_refused(code, err, tmp_path / "o", "pickle", "safetensors")


def test_hub_name_fails_fast_listing_catalogue(capsys, good_csv, tmp_path):
    code, err = _train(capsys, "bert-base-uncased", good_csv, tmp_path / "o")
    _assert_refused(code, err, tmp_path / "o", "bert-base-uncased", "offline", "minilm", "local")


def test_output_folder_with_finished_run_needs_overwrite(capsys, tiny_bert_mean, good_csv, tmp_path):
    out = tmp_path / "o"
    code, err = _train(capsys, tiny_bert_mean, good_csv, out)
    assert code == 0, err
    before = (out / "metrics.json").read_text()
    code, err = _train(capsys, tiny_bert_mean, good_csv, out, "--lr", "1e-4")
    assert code == 2 and "finished run" in err and "--overwrite" in err
    assert (out / "metrics.json").read_text() == before  # nothing lost
    code, err = _train(capsys, tiny_bert_mean, good_csv, out, "--lr", "1e-4", "--overwrite")
    assert code == 0, err
    assert "1e-4" in (out / "run_config.yaml").read_text() or "0.0001" in (out / "run_config.yaml").read_text()


def test_unrelated_folder_is_never_touched(capsys, tiny_bert_mean, good_csv, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.tex").write_text("precious")
    code, err = _train(capsys, tiny_bert_mean, good_csv, out, "--overwrite")
    assert code == 2 and "not empty" in err
    assert (out / "thesis.tex").read_text() == "precious"


def test_duplicates_and_imbalance_are_warnings_with_counts(capsys, tiny_bert_mean, tmp_path):
    rows = sentiment_rows(120, classes=2)
    rows = [r for r in rows if r["label"] == "negative"] + [r for r in rows if r["label"] == "positive"][:5]
    train = write_csv(tmp_path / "imb.csv", rows)
    val = write_csv(tmp_path / "val.csv", rows[:4] + sentiment_rows(6, seed=8))
    code, err = _train(capsys, tiny_bert_mean, train, tmp_path / "o", "--validation-data", str(val))
    assert code == 0, err
    assert "4 of 10 validation examples also appear in the training data" in err
    assert "class imbalance" in err and "negative: 60" in err and "positive: 5" in err


def test_cli_exit_code_and_no_traceback_in_a_real_process(tiny_bert_mean, tmp_path):
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "tunesmith",
            "train",
            "--model",
            str(tiny_bert_mean),
            "--data",
            str(tmp_path / "missing.csv"),
            "--out",
            str(tmp_path / "o"),
        ],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2
    assert "Traceback" not in r.stderr and "missing.csv" in r.stderr
