"""Run folders written by tunesmith before the run-format package (format version 1, commit
9483085; tests/data/legacy_runs/make_legacy_runs.py made them) still load, and predict exactly what
they predicted then: one folder per layout and task."""

import json
import shutil
from pathlib import Path

import pytest

import tunesmith

LEGACY = Path(__file__).parent / "data" / "legacy_runs"
EXPECTED = json.loads((LEGACY / "expected.json").read_text(encoding="utf-8"))


@pytest.fixture
def legacy(tmp_path):
    """A copy of the fixtures (a LoRA run names its base model by absolute path: point it at the copy)."""
    root = tmp_path / "legacy"
    shutil.copytree(LEGACY, root)
    meta_file = root / "text-lora-adapter" / "tunesmith.json"
    meta = json.loads(meta_file.read_text())
    meta["base_model_path"] = str(root / "base-tiny-bert-mean")
    meta_file.write_text(json.dumps(meta))
    return root


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_a_folder_written_by_earlier_code_predicts_as_it_did(name, legacy):
    case = EXPECTED[name]
    folder = legacy / name
    assert json.loads((folder / "tunesmith.json").read_text())["format_version"] == 1
    inputs = [str(legacy / x) if x.startswith("inputs/") else x for x in case["inputs"]]
    got = tunesmith.load(folder).predict(inputs)
    assert len(got) == len(case["predictions"])
    for g, want in zip(got, case["predictions"]):
        if "scores" in want:
            assert g["label"] == want["label"]
            assert g["scores"].keys() == want["scores"].keys()
            for label, p in want["scores"].items():
                assert g["scores"][label] == pytest.approx(p, abs=1e-6), (name, label)
        else:
            assert g["text"] == want["text"]
    if "evaluate" in case:  # a tiny recogniser may write nothing: its loss on labelled clips checks the weights
        m = tunesmith.evaluate(folder, legacy / "inputs" / "speech-val" / "val.csv", compare_base=False)
        for k, v in case["evaluate"].items():
            assert m[k] == pytest.approx(v, abs=1e-5), (name, k)
