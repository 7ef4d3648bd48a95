"""WER/CER scoring, the guard set (forgetting check) and the speech CLI: train, evaluate, predict."""

from __future__ import annotations

import json

import pytest
from speech_helpers import SENTENCES, write_speech_table

from tunesmith.cli import main
from tunesmith.evaluation.speech_metrics import guard_check, speech_metrics, text_normaliser, worst_utterances


def test_wer_is_corpus_level_after_the_normaliser():
    english = text_normaliser("english")
    assert speech_metrics(["Hello, World!"], ["hello world"], english)["wer"] == 0.0
    # corpus-level: (1 + 2) errors / 6 reference words, not the mean of per-utterance rates (0.625)
    m = speech_metrics(["a b c d", "e f"], ["a b c x", ""], text_normaliser("basic"))
    assert m["wer"] == pytest.approx(0.5) and m["words"] == 6 and m["n"] == 2
    assert [u["word_errors"] for u in m["per_utterance"]] == [1, 2]
    assert m["cer"] == pytest.approx((1 + 3) / (7 + 3))  # characters, spaces included
    # a reference that normalises to nothing: every hypothesis word is an insertion
    empty = speech_metrics(["...", "yes"], ["big dog", "yes"], text_normaliser("basic"))
    assert empty["wer"] == pytest.approx(2 / 1) and empty["per_utterance"][0]["word_errors"] == 2
    worst = worst_utterances(["c1", "c2"], ["a b c d", "e f"], ["a b c x", ""], m["per_utterance"])
    assert [w["input"] for w in worst] == ["c2", "c1"] and worst[0]["hypothesis"] == ""


def test_guard_warns_only_when_wer_rises_beyond_the_threshold():
    summary, warning = guard_check("general.csv", {"wer": 0.10}, {"wer": 0.20}, 0.05)
    assert summary["forgetting"] and summary["wer_increase"] == pytest.approx(0.10)
    assert "general.csv" in warning and "forgetting" in warning and "guard_max_wer_increase" in warning
    summary, warning = guard_check("general.csv", {"wer": 0.10}, {"wer": 0.14}, 0.05)
    assert not summary["forgetting"] and warning is None


@pytest.fixture(scope="module")
def cli_run(tiny_asr_whisper, speech_tables, tmp_path_factory):
    """A speech run trained through the CLI, with a guard set that must appear everywhere."""
    train, val = speech_tables
    guard = write_speech_table(train.parent / "guard", SENTENCES[4:], "guard.csv", seed=90)
    out = tmp_path_factory.mktemp("runs") / "asr"
    rc = main(
        [
            "train",
            "--task",
            "speech-recognition",
            "--model",
            str(tiny_asr_whisper),
            "--data",
            str(train),
            "--validation-data",
            str(val),
            "--audio-column",
            "audio",
            "--text-column",
            "transcript",
            "--guard-data",
            str(guard),
            "--out",
            str(out),
            "--epochs",
            "1",
            "--batch-size",
            "8",
            "--lr",
            "3e-3",
            "--precision",
            "fp32",
            "--quiet",
            "--set",
            "speech.max_new_tokens=6",
            "--set",
            "train.guard_max_wer_increase=0.0",
        ]
    )
    assert rc == 0
    return out, val, guard


def test_guard_set_scores_before_and_after_in_metrics_report_and_card(cli_run):
    out, _, guard = cli_run
    m = json.loads((out / "metrics.json").read_text())
    g = m["guard"]
    assert g["source"] == str(guard) and g["max_wer_increase"] == 0.0
    assert g["wer_before"] == m["before_finetuning"]["guard"]["wer"] and g["wer_after"] == g["after"]["wer"]
    assert g["forgetting"] == (g["wer_increase"] > 0.0)
    assert any("guard set" in w for w in m["warnings"]) == g["forgetting"]
    assert m["worst_utterances"]["guard"] is not None and "validation" in m["worst_utterances"]
    assert "Guard set" in (out / "report.html").read_text()
    assert "Guard set" in (out / "README.md").read_text()


def test_cli_evaluate_and_predict_json(cli_run, capsys):
    out, val, _ = cli_run
    capsys.readouterr()
    assert main(["evaluate", str(out), "--data", str(val), "--json"]) == 0
    m = json.loads(capsys.readouterr().out)
    assert {"wer", "cer", "n", "worst_utterances", "base_model"} <= set(m) and m["n"] == 4
    assert main(["evaluate", str(out), "--data", str(val), "--no-base"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("WER ") and "before fine-tuning" not in text
    wavs = sorted(str(p) for p in val.parent.glob("val-*.wav"))[:2]
    assert main(["predict", str(out), *wavs, "--json"]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [x["input"] for x in lines] == wavs and all(set(x) == {"input", "text"} for x in lines)
    assert main(["predict", str(out), "--file", str(val), "--json"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 4


def test_cli_bad_speech_inputs_exit_2_naming_the_fix(cli_run, tiny_asr_whisper, speech_tables, tmp_path, capsys):
    out, _, _ = cli_run
    assert main(["predict", str(out), str(tmp_path / "missing.wav")]) == 2
    assert "missing.wav" in capsys.readouterr().err
    train, _ = speech_tables
    common = [
        "train",
        "--task",
        "speech-recognition",
        "--model",
        str(tiny_asr_whisper),
        "--data",
        str(train),
        "--audio-column",
        "audio",
        "--out",
        str(tmp_path / "x"),
        "--quiet",
    ]
    assert main([*common, "--text-column", "transcript", "--strategy", "head-only"]) == 2
    assert "head-only" in capsys.readouterr().err
    assert main([*common, "--text-column", "words"]) == 2  # no such transcript column
    err = capsys.readouterr().err
    assert "words" in err and "--text-column" in err
    assert not (tmp_path / "x" / "metrics.json").exists()


def test_best_model_lowest_wer_ties_broken_by_loss():
    from tunesmith.tasks import TASKS

    best = {"wer": 1.0, "loss": 8.4, "accuracy": 0.5}
    _improved = TASKS.get("speech-recognition").improved
    assert _improved({"wer": 0.9, "loss": 9.0}, best, "wer")  # lower WER wins whatever the loss
    assert not _improved({"wer": 1.1, "loss": 0.1}, best, "wer")
    assert _improved({"wer": 1.0, "loss": 0.1}, best, "wer")  # a tie: the lower loss wins
    assert not _improved({"wer": 1.0, "loss": 9.0}, best, "wer")
    classifier = TASKS.get("text-classification")
    assert not classifier.improved({"accuracy": 0.5, "loss": 0.1}, best, "accuracy")  # a tie keeps the earlier one
    assert _improved({"wer": 1.0, "loss": 1.0}, None, "wer")
