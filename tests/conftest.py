"""Shared fixtures: a tiny random BERT built here (2 layers, 32 dims) and small learnable data.

Nothing is downloaded; every test runs offline in seconds on 2 CPU cores.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

# The tiny models and synthetic data live in the package (tasks build their own examples from them).
from tunesmith.testing import (  # noqa: E402  (after the offline switch)
    COLOURS,
    FILL,
    NEG,
    POS,
    TONES,
    VOCAB,
    make_audio_folder,
    make_image_folder,
    make_tiny_bert,
    make_tiny_resnet,
    make_tiny_wav2vec2,
    make_tiny_whisper,
    sentiment_rows,
    tone_clip,
    write_csv,
)

# tests import these builders from here too
__all__ = [
    "COLOURS",
    "FILL",
    "NEG",
    "POS",
    "TONES",
    "VOCAB",
    "make_audio_folder",
    "make_image_folder",
    "make_tiny_bert",
    "make_tiny_resnet",
    "make_tiny_wav2vec2",
    "make_tiny_whisper",
    "sentiment_rows",
    "tone_clip",
    "write_csv",
    "base_config",
]


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
    return {"out": str(out), "model": {"name": str(model), "max_length": 32}, "data": {"train": str(data)}, "train": t}


@pytest.fixture(scope="session")
def tiny_resnet(tmp_path_factory) -> Path:
    return make_tiny_resnet(tmp_path_factory.mktemp("models") / "tiny-resnet")


@pytest.fixture(scope="session")
def image_folders(tmp_path_factory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("images")
    return make_image_folder(d / "train", 16, seed=1), make_image_folder(d / "val", 6, seed=2)


# -- audio (audio-classification) ------------------------------------------------------------


@pytest.fixture(scope="session")
def tiny_whisper(tmp_path_factory) -> Path:
    return make_tiny_whisper(tmp_path_factory.mktemp("models") / "tiny-whisper")


@pytest.fixture(scope="session")
def tiny_wav2vec2(tmp_path_factory) -> Path:
    return make_tiny_wav2vec2(tmp_path_factory.mktemp("models") / "tiny-wav2vec2")


@pytest.fixture(scope="session")
def audio_folders(tmp_path_factory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("audio")
    return make_audio_folder(d / "train", 12, seed=1), make_audio_folder(d / "val", 5, seed=2)


# -- speech recognition (helpers in speech_helpers.py) ----------------------------------------
@pytest.fixture(scope="session")
def tiny_asr_whisper(tmp_path_factory) -> Path:
    """A tiny random Whisper with a real Whisper tokenizer and generation config (English-only)."""
    from speech_helpers import make_asr_whisper

    return make_asr_whisper(tmp_path_factory.mktemp("models") / "tiny-asr-whisper")


@pytest.fixture(scope="session")
def speech_tables(tmp_path_factory) -> tuple[Path, Path]:
    """(train.csv, val.csv): synthetic clips (column audio) with transcripts (column transcript)."""
    from speech_helpers import SENTENCES, write_speech_table

    d = tmp_path_factory.mktemp("speech")
    return write_speech_table(d, SENTENCES * 2, "train.csv"), write_speech_table(d, SENTENCES[:4], "val.csv", seed=50)


# -- every registered task's own tiny example (Task.tiny_example) ----------------------------
@pytest.fixture(scope="session")
def task_examples(tmp_path_factory):
    """task name -> its TaskExample (tiny random model, training and validation data), built once."""
    from tunesmith.tasks import TASKS

    built: dict = {}

    def get(task_name: str):
        if task_name not in built:
            built[task_name] = TASKS.get(task_name).tiny_example(tmp_path_factory.mktemp(task_name))
        return built[task_name]

    return get


def _postgres_bin() -> Path | None:
    import glob
    import shutil as _sh

    found = _sh.which("pg_ctl")
    if found:
        return Path(found).resolve().parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    return Path(versions[-1]).parent if versions else None


@pytest.fixture(scope="session")
def postgres_url(tmp_path_factory):
    """A real PostgreSQL server (Debian's `postgresql`, which scripts/setup.sh installs when root) on
    127.0.0.1 and a free port, in a temp data folder; stopped at the end. It refuses to run as root,
    so as root it runs as the `postgres` user. In CI a missing server fails, never skips."""
    import os
    import pwd
    import socket
    import subprocess

    bindir = _postgres_bin()
    if bindir is None:
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL is not installed: scripts/setup.sh installs Debian's postgresql when root")
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql)")
    try:
        import psycopg  # noqa: F401  (SQLAlchemy 2's default PostgreSQL driver)
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail("psycopg is not installed: pip install -e '.[test]' installs it")
        pytest.skip("psycopg is not installed (pip install 'psycopg[binary]')")
    import shutil as _sh
    import tempfile

    # not under pytest's root-only temp folder: the server's user must be able to reach it
    root = Path(tempfile.mkdtemp(prefix="tunesmith-pg-"))
    data = root / "data"
    run_as: list[str] = []
    if os.geteuid() == 0:
        user = pwd.getpwnam("postgres")
        os.chown(root, user.pw_uid, user.pw_gid)
        run_as = ["runuser", "-u", "postgres", "--"]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    subprocess.run(
        [*run_as, str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "tunesmith"],
        check=True,
        capture_output=True,
    )
    opts = f"-h 127.0.0.1 -p {port} -k {root}"
    subprocess.run(
        [*run_as, str(bindir / "pg_ctl"), "-D", str(data), "-o", opts, "-l", str(root / "log"), "-w", "start"],
        check=True,
        capture_output=True,
    )
    try:
        subprocess.run(
            [*run_as, str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "tunesmith", "studies"],
            check=True,
            capture_output=True,
        )
        yield f"postgresql://tunesmith@127.0.0.1:{port}/studies"
    finally:
        subprocess.run(
            [*run_as, str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"], capture_output=True
        )
        _sh.rmtree(root, ignore_errors=True)
