"""Slow: every example in examples/ runs end to end at a small size (DESIGN rule 8) on the real
shipped models and data, and prints the result table it promises. Run with `pytest -m slow`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def run(script: str, *args: str, cwd: Path) -> str:
    r = subprocess.run(
        [sys.executable, str(EXAMPLES / script), *args], capture_output=True, text=True, cwd=cwd, timeout=1200
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return r.stdout


def test_sentiment_example(tmp_path):
    out = run(
        "sentiment.py",
        "--train",
        "200",
        "--test",
        "100",
        "--epochs",
        "1",
        "--data",
        str(tmp_path / "data"),
        "--out",
        str(tmp_path / "runs"),
        cwd=tmp_path,
    )
    assert "before: head on the untouched model" in out and "after: full fine-tune" in out
    assert (tmp_path / "runs" / "sentiment-full" / "report.html").is_file()


def test_images_example(tmp_path):
    if not Path("/usr/share/datasets/fashion-mnist").is_dir():
        pytest.fail("Fashion-MNIST is not installed: apt-get install dataset-fashion-mnist (examples/images.sh does)")
    out = run(
        "images.py",
        "--train-per-class",
        "6",
        "--test-per-class",
        "3",
        "--epochs",
        "1",
        "--data",
        str(tmp_path / "data"),
        "--out",
        str(tmp_path / "runs"),
        cwd=tmp_path,
    )
    assert "before: head on the untouched model" in out and "after: partial fine-tune" in out
    assert "held-out test set: 30 Fashion-MNIST test images" in out


def test_dicom_example(tmp_path):
    out = run(
        "dicom.py",
        "--train-per-source",
        "4",
        "--test-per-source",
        "2",
        "--data",
        str(tmp_path / "data"),
        "--out",
        str(tmp_path / "runs" / "dicom"),
        cwd=tmp_path,
    )
    assert "test accuracy" in out and '"label"' in out


def test_accent_example(tmp_path):
    import shutil

    if shutil.which("espeak-ng") is None:
        pytest.fail("espeak-ng is not installed: apt-get install -y espeak-ng (examples/accent.sh does)")
    out = run(
        "accent.py",
        "--train",
        "6",
        "--val",
        "3",
        "--guard",
        "3",
        "--epochs",
        "1",
        "--data",
        str(tmp_path / "data"),
        "--out",
        str(tmp_path / "runs" / "accent"),
        cwd=tmp_path,
    )
    assert "held-out en-gb-scotland sentences: WER" in out and "guard set (en-us)" in out
