"""ONNX export (`tunesmith export RUN --onnx`), from the task registry: every task's tiny example is
trained, exported and run on onnxruntime through the same load / predict / evaluate / serve paths as
the run folder, or refused with an error that says why. Nothing here asks which task it holds."""

from __future__ import annotations

import json

import numpy as np
import pytest

import tunesmith
from tunesmith.api import evaluate, finetune
from tunesmith.errors import ExportError, RunFolderError
from tunesmith.export.onnx import PARITY_TOLERANCE, export_onnx
from tunesmith.formats import read_meta
from tunesmith.tasks import TASKS

pytest.importorskip("onnxruntime")


def _train(task_name, ex, out):
    cfg = json.loads(json.dumps(ex.config))
    cfg.update(task=task_name, out=str(out), strategy={"name": "full"})
    cfg.setdefault("model", {})["name"] = str(ex.model)
    cfg.setdefault("data", {}).update(train=str(ex.train), validation=str(ex.validation))
    cfg["train"] = {"epochs": 1, "batch_size": 16, "lr": 2e-3, "precision": "fp32", "seed": 0, "threads": 1}
    finetune(cfg, quiet=True)
    return out


def _inputs(run):
    """A few real inputs from the run's validation data, as `predict` takes them."""
    from tunesmith.api import saved_data_config

    p = tunesmith.load(run)
    dcfg = saved_data_config(run)
    examples = p.modality.read(dcfg.validation, dcfg, "validation data", require_labels=False)
    inputs, pairs = p.modality.predict_inputs(examples)
    return inputs[:5], (pairs[:5] if pairs else None)


@pytest.mark.parametrize("task_name", TASKS.names())
def test_every_task_exports_to_onnx_that_predicts_as_the_run_or_says_why_not(task_name, task_examples, tmp_path):
    ex = task_examples(task_name)
    run = _train(task_name, ex, tmp_path / "run")
    out = tmp_path / "onnx"
    try:
        export_onnx(run, out, say=lambda *_: None)
    except ExportError as e:
        assert "onnx" in str(e).lower() and len(str(e)) > 40  # says what cannot be exported, and why
        assert not out.exists() and not list(tmp_path.glob(".onnx.tmp*"))  # nothing half-written
        return
    parity = json.loads((out / "parity.json").read_text())
    assert parity["fp32"]["max_abs_logit_diff"] <= PARITY_TOLERANCE and parity["fp32"]["agreement"] == 1.0
    assert parity["rows"] > 0 and "validation" in parity["source"]
    assert read_meta(out)["layout"] == "onnx" and not list(out.glob("*.safetensors"))
    inputs, pairs = _inputs(run)
    ours, theirs = tunesmith.load(run), tunesmith.load(out)
    a, b = ours.predict(inputs, pairs), theirs.predict(inputs, pairs)
    assert [x["input"] for x in a] == [x["input"] for x in b]
    task = ours.task
    if task.output == "labels":
        assert [x["label"] for x in a] == [x["label"] for x in b]
        diff = np.abs(np.asarray(ours.logits(inputs, pairs)) - np.asarray(theirs.logits(inputs, pairs))).max()
        assert diff <= PARITY_TOLERANCE
    else:
        assert a == b
    m_run = evaluate(run, ex.validation, compare_base=False)
    m_onnx = evaluate(out, ex.validation, compare_base=False)
    metric = task.default_metric
    assert m_onnx[metric] == pytest.approx(m_run[metric], abs=1e-6)
    # the README says how to use the folder and what the check found
    readme = (out / "README.md").read_text()
    assert f"tunesmith predict {out}" in readme and "max abs logit difference" in readme
    # an export is not exported again, and --out is never overwritten without --overwrite
    with pytest.raises(ExportError, match="ONNX export already"):
        export_onnx(out, tmp_path / "again", say=lambda *_: None)
    with pytest.raises(RunFolderError, match="not empty"):
        export_onnx(run, out, say=lambda *_: None)


def test_int8_export_reports_the_metric_change_and_serves_like_predict(tiny_bert_mean, sentiment_csv, tmp_path, capsys):
    from conftest import base_config
    from fastapi.testclient import TestClient

    from tunesmith.cli import main
    from tunesmith.serve.app import Limits, create_app

    run = tmp_path / "run"
    finetune(base_config(tiny_bert_mean, sentiment_csv, run, epochs=1), quiet=True)
    out = tmp_path / "int8"
    assert main(["export", str(run), "--onnx", "--quantize", "int8", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "parity (fp32" in printed and "parity (int8" in printed and "change vs PyTorch: accuracy" in printed
    parity = json.loads((out / "parity.json").read_text())
    assert set(parity["int8"]["metric_change"]) >= {"accuracy", "macro_f1", "loss"}
    change = parity["int8"]["onnx"]["accuracy"] - parity["int8"]["pytorch"]["accuracy"]
    assert parity["int8"]["metric_change"]["accuracy"] == pytest.approx(change)
    assert list(out.glob("*.onnx")) == [out / "model.int8.onnx"]  # the fp32 graph is not left beside it
    texts = ["loved it", "dull and slow", "what a film"]
    client = TestClient(create_app(tunesmith.load(out), Limits()))
    r = client.post("/v1/predict", json={"inputs": texts})
    assert r.status_code == 200 and r.json()["predictions"] == tunesmith.load(out).predict(texts)
    assert client.get("/v1/info").json()["task"] == "text-classification"
    # --quantize belongs to --onnx; a merge of a run without adapters says so
    assert main(["export", str(run), "--merge", "--quantize", "int8", "--out", str(tmp_path / "m")]) == 2


def test_int8_convolutions_are_calibrated_and_kept_only_where_they_measure_no_worse(
    tiny_resnet, image_folders, tmp_path, capsys
):
    """A graph with convolutions gets them int8 only when, on the run's validation rows, the task's metric is no
    worse (within 1 point) and the graphs run faster; either way parity.json and the README say which and why."""
    import onnx

    from tunesmith.export import onnx as exporter

    train, val = image_folders
    run = tmp_path / "run"
    cfg = {
        "task": "image-classification",
        "model": {"name": str(tiny_resnet)},
        "data": {"train": str(train), "validation": str(val)},
        "strategy": {"name": "full"},
        "train": {"epochs": 2, "batch_size": 8, "lr": 1e-3, "precision": "fp32", "seed": 0, "threads": 1},
        "out": str(run),
    }
    finetune(cfg, quiet=True)
    out = export_onnx(run, tmp_path / "int8", quantize="int8", say=print)["out"]
    convs = json.loads((out / "parity.json").read_text())["int8"]["int8_convolutions"]
    assert "training rows" in convs["calibration"]
    assert set(convs["with"]) == set(convs["without"]) >= {"agreement", "seconds", "onnx"}
    assert convs["why"] in capsys.readouterr().out and convs["why"] in (out / "README.md").read_text()
    assert list(out.glob("*.onnx")) == [out / "model.int8.onnx"]  # the graphs not kept are not left beside it
    ops = {n.op_type for n in onnx.load(str(out / "model.int8.onnx")).graph.node}
    assert ("QuantizeLinear" in ops) == convs["kept"]
    assert len(tunesmith.load(out).predict([str(next(val.rglob("*.png")))])) == 1

    class Task:
        default_metric, lower_is_better = "accuracy", frozenset({"loss"})

    def figures(acc, seconds):
        return {"onnx": {"accuracy": acc}, "seconds": seconds}

    assert exporter._conv_verdict(Task, figures(0.90, 2.0), figures(0.895, 1.0))[0]
    assert not exporter._conv_verdict(Task, figures(0.90, 2.0), figures(0.85, 1.0))[0]  # 5 points worse
    assert not exporter._conv_verdict(Task, figures(0.90, 2.0), figures(0.90, 1.98))[0]  # no faster beyond noise
    assert not exporter._conv_verdict(Task, {"onnx": {}, "seconds": 2.0}, figures(0.9, 1.0))[0]  # nothing to judge
