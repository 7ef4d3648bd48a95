"""Image classification end to end on a tiny random ResNet: train, reload, pipeline parity, CLI."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from conftest import make_image_folder

import tunesmith


def _config(model, train, val, out, strategy="full", **train_cfg):
    t = {"epochs": 4, "batch_size": 8, "lr": 3e-3, "precision": "fp32", "seed": 0, **train_cfg}
    if strategy == "head-only":  # its head is solved: no epochs or learning rate
        t = {k: v for k, v in t.items() if k not in ("epochs", "lr")}
    return {
        "task": "image-classification",
        "out": str(out),
        "model": {"name": str(model)},
        "data": {"train": str(train), "validation": str(val)},
        "strategy": {"name": strategy},
        "train": t,
    }


@pytest.mark.parametrize("strategy", ["full", "head-only"])
def test_learns_colours_and_reloads_identically(strategy, tiny_resnet, image_folders, tmp_path):
    train, val = image_folders
    res = tunesmith.finetune(
        _config(
            tiny_resnet,
            train,
            val,
            tmp_path / "run",
            strategy,
        ),
        quiet=True,
    )
    assert res.metrics["accuracy"] >= 0.9, res.history
    files = sorted(p.name for p in res.out.iterdir())
    for name in (
        "model.safetensors",
        "config.json",
        "preprocessor_config.json",
        "metrics.json",
        "report.html",
        "README.md",
    ):
        assert name in files
    # reload: the saved folder scores the validation folder exactly as the run did
    again = tunesmith.evaluate(res.out, val)
    assert again["accuracy"] == res.metrics["accuracy"]
    assert again["confusion_matrix"] == res.metrics["confusion_matrix"]


def test_pipeline_loads_the_folder_and_agrees_with_predict(tiny_resnet, image_folders, tmp_path):
    from transformers import pipeline

    train, val = image_folders
    res = tunesmith.finetune(_config(tiny_resnet, train, val, tmp_path / "run", epochs=2), quiet=True)
    images = sorted(str(p) for p in val.rglob("*.png"))[::3]
    ours = tunesmith.load(res.out).predict(images)
    pipe = pipeline("image-classification", model=str(res.out), top_k=None)
    for mine, theirs in zip(ours, pipe(images)):
        assert theirs[0]["label"] == mine["label"]  # real label names, not LABEL_0
        for t in theirs:
            assert abs(t["score"] - mine["scores"][t["label"]]) <= 1e-5


def test_augmentation_changes_training_batches_only(tiny_resnet, image_folders, tmp_path):
    from tunesmith.data.images import image_examples
    from tunesmith.models.vision_backbone import load_image_processor
    from tunesmith.tasks.image_classification import ImageClassificationTask

    train, _ = image_folders
    proc = load_image_processor(tiny_resnet)
    ex = image_examples(str(train)).subset(range(4))
    task = ImageClassificationTask(["blue", "green", "red"], proc)
    clean = task.collate(task.encode(ex))["pixel_values"]
    # what the processor alone gives (and pipeline feeds the model)
    from tunesmith.data.images import load_image

    ref = proc(images=[load_image(i) for i in ex.items], return_tensors="pt")["pixel_values"]
    assert torch.allclose(clean, ref, atol=1e-6)
    torch.manual_seed(0)
    aug_rows = task.encode(ex, augment=True)
    augmented = task.collate(aug_rows)["pixel_values"]
    assert augmented.shape == clean.shape and not torch.allclose(augmented, clean, atol=1e-2)
    off = ImageClassificationTask(["blue", "green", "red"], proc, augment={"enabled": False})
    assert torch.allclose(off.collate(aug_rows)["pixel_values"], ref, atol=1e-5)  # uint8 storage is exact


def test_cli_train_and_predict_json(tiny_resnet, image_folders, tmp_path):
    train, val = image_folders
    out = tmp_path / "cli-run"
    env_cmd = [sys.executable, "-m", "tunesmith"]
    r = subprocess.run(
        env_cmd
        + [
            "train",
            "--task",
            "image-classification",
            "--data",
            str(train),
            "--validation-data",
            str(val),
            "--model",
            str(tiny_resnet),
            "--out",
            str(out),
            "--quiet",
            "--set",
            "train.epochs=1",
            "--set",
            "train.precision=fp32",
        ],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    img = sorted(val.rglob("*.png"))[0]
    r = subprocess.run(env_cmd + ["predict", str(out), str(img), "--json"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    row = json.loads(r.stdout.splitlines()[0])
    assert row["input"] == str(img) and row["label"] in {"red", "green", "blue"}
    assert abs(sum(row["scores"].values()) - 1) < 1e-5
    r = subprocess.run(env_cmd + ["predict", str(out), str(tmp_path / "nope.png")], capture_output=True, text=True)
    assert r.returncode != 0 and "nope.png" in r.stderr and "Traceback" not in r.stderr


def test_image_options_refused_for_text_and_bad_model_folder(tiny_bert, tmp_path):
    from tunesmith.errors import ConfigError, ModelError

    with pytest.raises(ConfigError, match="augment"):
        tunesmith.finetune(
            {"out": str(tmp_path / "x"), "augment": {"flip": False}, "data": {"train": "x.csv"}}, quiet=True
        )
    folder = make_image_folder(tmp_path / "imgs", 3)
    with pytest.raises(ModelError, match="preprocessor_config.json"):
        tunesmith.finetune(
            {
                "task": "image-classification",
                "out": str(tmp_path / "y"),
                "model": {"name": str(tiny_bert)},
                "data": {"train": str(folder), "validation_split": 0.34},
            },
            quiet=True,
        )


def test_report_shows_the_misclassified_images(image_folders):
    import numpy as np

    from tunesmith.data.images import image_examples
    from tunesmith.evaluation.classification_report import misclassified_grid
    from tunesmith.tasks.base import EvalOutput

    _, val = image_folders
    ex = image_examples(str(val))
    labels = ["blue", "green", "red"]
    truth = [labels.index(y) for y in ex.labels]
    preds = [(t + 1) % 3 if i % 2 == 0 else t for i, t in enumerate(truth)]  # every other image wrong
    probs = np.full((len(ex), 3), 0.1)
    probs[np.arange(len(ex)), preds] = 0.8
    html = misclassified_grid(ex, EvalOutput({}, preds, np.log(probs)), labels)
    wrong = sum(p != t for p, t in zip(preds, truth))
    assert f"{wrong} of {len(ex)} validation images misclassified" in html and "<img" in html
    right = misclassified_grid(ex, EvalOutput({}, truth, np.log(probs)), labels)
    assert "No validation image was misclassified" in right


def test_truncated_image_stops_the_run_or_is_skipped_and_listed(tiny_resnet, tmp_path):
    from tunesmith.cli import main

    train = make_image_folder(tmp_path / "train", 6, seed=3)
    bad = train / "red" / "0.png"
    bad.write_bytes(bad.read_bytes()[:60])  # cut mid-stream
    out = tmp_path / "run"
    args = [
        "train",
        "--task",
        "image-classification",
        "--data",
        str(train),
        "--model",
        str(tiny_resnet),
        "--out",
        str(out),
        "--quiet",
        "--set",
        "train.epochs=1",
        "--set",
        "data.validation_split=0.34",
    ]
    assert main(args) != 0
    assert not (out / "metrics.json").exists()  # nothing that looks finished
    assert main(args + ["--skip-bad-images"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert [s["input"] for s in metrics["skipped_inputs"]] == [str(bad)]
    report = (out / "report.html").read_text()
    assert "Skipped inputs (1)" in report and "0.png" in report


def test_lora_on_a_cnn_saves_adapters_and_merges_to_a_plain_folder(tiny_resnet, image_folders, tmp_path):
    from tunesmith.export.merge import export_merged

    train, val = image_folders
    res = tunesmith.finetune(_config(tiny_resnet, train, val, tmp_path / "run", "lora", epochs=2), quiet=True)
    assert (res.out / "adapter.safetensors").is_file() and not (res.out / "model.safetensors").exists()
    assert tunesmith.evaluate(res.out, val)["confusion_matrix"] == res.metrics["confusion_matrix"]
    r = export_merged(res.out, tmp_path / "merged")
    assert r["layout"] == "native" and max(r["max_abs_logit_diff"].values()) <= 1e-4
    assert "transformers.pipeline (merged folder, no peft)" in r["max_abs_logit_diff"]


def test_head_only_second_run_reads_cached_image_features(tiny_resnet, image_folders, tmp_path):
    train, val = image_folders
    first = tunesmith.finetune(_config(tiny_resnet, train, val, tmp_path / "a", "head-only", epochs=3), quiet=True)
    second = tunesmith.finetune(_config(tiny_resnet, train, val, tmp_path / "b", "head-only", epochs=3), quiet=True)
    assert first.timings["feature_cache_hit"] == 0.0 and second.timings["feature_cache_hit"] == 1.0
    assert second.metrics == first.metrics
    # other preprocessing (a different image size) is another cache entry, never a stale hit
    import json as _json
    import shutil

    other = tmp_path / "resnet-40px"
    shutil.copytree(tiny_resnet, other)
    cfg = _json.loads((other / "preprocessor_config.json").read_text())
    cfg["size"] = {"shortest_edge": 40}
    (other / "preprocessor_config.json").write_text(_json.dumps(cfg))
    third = tunesmith.finetune(_config(other, train, val, tmp_path / "c", "head-only", epochs=3), quiet=True)
    assert third.timings["feature_cache_hit"] == 0.0
