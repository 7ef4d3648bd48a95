"""Writes the run folders under tests/data/legacy_runs/ with tunesmith as of commit 9483085 (format
version 1, before the run-format package), and what each predicts, so test_legacy_runs.py can check
that today's code loads them and predicts the same. Not run by the tests; kept to show how the
folders were made:

    git worktree add /tmp/old 9483085
    PYTHONPATH=/tmp/old:tests python tests/data/legacy_runs/make_legacy_runs.py tests/data/legacy_runs
"""
from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path

import conftest as C  # the old tree's test helpers (tiny models, synthetic data)
import speech_helpers as S

import tunesmith


def main(dest: Path) -> None:
    work = Path(tempfile.mkdtemp())
    dest.mkdir(parents=True, exist_ok=True)
    expected = {}

    def run(name, cfg, inputs):
        cfg = {**cfg, "out": str(work / name)}
        res = tunesmith.finetune(cfg, quiet=True)
        target = dest / name
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(res.out, target, ignore=shutil.ignore_patterns("checkpoints", "report.html"))
        preds = tunesmith.load(target).predict([str(dest / i) if not isinstance(i, str) or i.startswith("inputs/")
                                                 else i for i in inputs])
        expected[name] = {"inputs": inputs, "predictions": [{k: v for k, v in p.items() if k != "input"} for p in preds],
                          "layout": json.loads((target / "tunesmith.json").read_text())["layout"]}
        if cfg.get("task") == "speech-recognition":  # transcripts of a tiny model may be empty: the loss is not
            m = tunesmith.evaluate(target, dest / "inputs" / "speech-val" / "val.csv", compare_base=False)
            expected[name]["evaluate"] = {k: m[k] for k in ("loss", "wer", "cer")}

    texts = ["the movie was great", "awful plot and boring actors", "it was fine really"]
    text_data = C.write_csv(work / "train.csv", C.sentiment_rows(96, seed=1))
    base = {"data": {"train": str(text_data)}, "train": {"epochs": 2, "batch_size": 16, "lr": 2e-3,
                                                          "precision": "fp32", "seed": 0}}
    bert_mean = C.make_tiny_bert(dest / "base-tiny-bert-mean", pooling="mean")  # kept: the LoRA run's base
    bert = C.make_tiny_bert(work / "tiny-bert")
    run("text-xlm-mean", {**base, "model": {"name": str(bert_mean), "max_length": 32}}, texts)
    run("text-native", {**base, "model": {"name": str(bert), "max_length": 32, "pooling": "pooler"}}, texts)
    run("text-tunesmith", {**base, "model": {"name": str(bert), "max_length": 32, "pooling": "cls"}}, texts)
    run("text-lora-adapter", {**base, "model": {"name": str(bert_mean), "max_length": 32},
                              "strategy": {"name": "lora"}}, texts)

    inputs = dest / "inputs"
    inputs.mkdir(exist_ok=True)
    images = C.make_image_folder(work / "images", 8, seed=1)
    probe_images = []
    for colour in C.COLOURS:
        shutil.copy(images / colour / "0.png", inputs / f"{colour}.png")
        probe_images.append(f"inputs/{colour}.png")
    run("image-native", {"task": "image-classification", "data": {"train": str(images)},
                         "model": {"name": str(C.make_tiny_resnet(work / "resnet"))},
                         "train": {"epochs": 2, "batch_size": 8, "lr": 2e-3, "precision": "fp32", "seed": 0}},
        probe_images)

    clips = C.make_audio_folder(work / "audio", 8, seed=1)
    probe_clips = []
    for kind in C.TONES:
        src = sorted((clips / kind).glob("*.wav"))[0]
        shutil.copy(src, inputs / f"{kind}.wav")
        probe_clips.append(f"inputs/{kind}.wav")
    audio = {"task": "audio-classification", "data": {"train": str(clips)},
             "train": {"epochs": 2, "batch_size": 4, "lr": 1e-3, "precision": "fp32", "seed": 0}}
    run("audio-native", {**audio, "model": {"name": str(C.make_tiny_wav2vec2(work / "w2v"))}}, probe_clips)
    run("audio-tunesmith", {**audio, "model": {"name": str(C.make_tiny_whisper(work / "whisper"))}}, probe_clips)

    speech_train = S.write_speech_table(work / "speech", S.SENTENCES * 2, "train.csv")
    speech_val = S.write_speech_table(work / "speech", S.SENTENCES[:3], "val.csv", seed=50)
    probe_speech = []
    shutil.rmtree(inputs / "speech-val", ignore_errors=True)
    (inputs / "speech-val").mkdir()
    shutil.copy(speech_val, inputs / "speech-val" / "val.csv")
    for i in range(3):
        shutil.copy(work / "speech" / f"val-{i}.wav", inputs / "speech-val" / f"val-{i}.wav")
        probe_speech.append(f"inputs/speech-val/val-{i}.wav")
    speech = {"task": "speech-recognition", "data": {"train": str(speech_train), "validation": str(speech_val),
                                                     "text_column": "transcript", "audio_column": "audio"},
              "train": {"epochs": 12, "batch_size": 4, "lr": 3e-3, "precision": "fp32", "seed": 0,
                        "early_stopping_patience": None},
              "speech": {"max_new_tokens": 8}}
    run("speech-whisper-native", {**speech, "model": {"name": str(S.make_asr_whisper(work / "asr"))}}, probe_speech)
    run("speech-ctc-native", {**speech, "model": {"name": str(S.make_ctc_wav2vec2(work / "ctc"))}}, probe_speech)

    (dest / "expected.json").write_text(json.dumps(expected, indent=1), encoding="utf-8")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main(Path(sys.argv[1]).resolve())
