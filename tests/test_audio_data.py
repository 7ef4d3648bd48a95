"""Audio in: decoding, mono mixing, resampling, and every bad clip named with its fix (or skipped and listed)."""

import csv
import io
import json
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
from conftest import make_audio_folder, tone_clip

from tunesmith.data.audio import AudioExamples, audio_examples, load_audio
from tunesmith.errors import DataError


def _tone(freq: float, seconds: float, rate: int, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype("float32")


def _peak_hz(x: np.ndarray, rate: int) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / rate)[spec.argmax()])


@pytest.mark.parametrize(
    "ext,subtype,rate",
    [
        ("wav", "PCM_16", 44100),
        ("flac", "PCM_24", 22050),
        ("ogg", "VORBIS", 44100),
        ("wav", "FLOAT", 8000),
        ("opus", "OPUS", 48000),
        ("aiff", "PCM_16", 44100),
    ],
)
def test_formats_resampled_to_the_model_rate(tmp_path, ext, subtype, rate):
    path = tmp_path / f"a.{ext}"
    sf.write(path, _tone(1000, 0.5, rate), rate, subtype=subtype, format="OGG" if ext == "opus" else None)
    x = load_audio(str(path), str(path), 16000)
    assert x.dtype == np.float32 and x.ndim == 1
    assert abs(len(x) - 8000) <= 1  # 0.5 s at 16 kHz
    assert abs(_peak_hz(x, 16000) - 1000) < 10  # soxr keeps the tone where it was
    assert 0.45 < np.abs(x).max() < 0.55


def test_mp3_where_libsndfile_has_it(tmp_path):
    if "MP3" not in sf.available_formats():
        pytest.skip("this libsndfile has no MP3")
    path = tmp_path / "a.mp3"
    sf.write(path, _tone(440, 1.0, 44100), 44100)
    x = load_audio(str(path), "a.mp3", 16000)
    assert abs(len(x) / 16000 - 1.0) < 0.1 and abs(_peak_hz(x, 16000) - 440) < 10


def test_stereo_is_mixed_to_mono_and_bytes_decode_like_files(tmp_path):
    left, right = _tone(500, 0.25, 16000, 0.4), _tone(500, 0.25, 16000, 0.2)
    path = tmp_path / "st.wav"
    sf.write(path, np.stack([left, right], 1), 16000, subtype="FLOAT")
    x = load_audio(str(path), "st.wav", 16000)
    np.testing.assert_allclose(x, (left + right) / 2, atol=1e-6)
    np.testing.assert_array_equal(load_audio(path.read_bytes(), "bytes", 16000), x)


@pytest.mark.parametrize(
    "case,expect",
    [
        ("missing", "audio file not found"),
        ("garbage", "cannot decode audio"),
        ("text", "cannot decode audio"),
        ("empty_clip", "empty clip"),
        ("empty_bytes", "empty clip"),
        ("silent", "silent clip (all zeros)"),
        ("near_silent", "silent clip (peak -100 dBFS)"),
        ("cancelling", "channels cancel out"),
        ("low_rate", "unsupported sample rate 2000 Hz"),
        ("too_long", "clip too long: 2.0 s, the limit is 1.5 s"),
        ("nan", "NaN or infinite"),
        ("cut_off", "clip too short: 6 ms"),  # the first bytes of a real clip: once a 500 from the server
    ],
)
def test_each_bad_clip_is_named_with_its_fix(tmp_path, case, expect):
    p = tmp_path / f"{case}.wav"
    item: str | bytes = str(p)
    if case == "garbage":
        p.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    elif case == "text":
        p.write_text("not audio at all\n")
    elif case == "empty_clip":
        sf.write(p, np.zeros(0, dtype="float32"), 16000)
    elif case == "empty_bytes":
        item = b""
    elif case == "silent":
        sf.write(p, np.zeros(8000, dtype="float32"), 16000)
    elif case == "near_silent":
        sf.write(p, np.full(8000, 1e-5, dtype="float32"), 16000, subtype="FLOAT")
    elif case == "cancelling":
        x = _tone(300, 0.5, 16000)
        sf.write(p, np.stack([x, -x], 1), 16000, subtype="FLOAT")
    elif case == "low_rate":
        sf.write(p, _tone(300, 0.5, 2000), 2000)
    elif case == "too_long":
        sf.write(p, _tone(300, 2.0, 16000), 16000)
    elif case == "cut_off":
        whole = tmp_path / "whole.wav"
        sf.write(whole, _tone(300, 0.5, 16000), 16000)
        item = whole.read_bytes()[:244]  # 44-byte header + 100 samples
    elif case == "nan":
        x = _tone(300, 0.5, 16000)
        x[100] = np.nan
        sf.write(p, x, 16000, subtype="FLOAT")
    with pytest.raises(DataError) as e:
        load_audio(item, f"clip-{case}", 16000, max_seconds=1.5)
    msg = str(e.value)
    assert msg.startswith(f"clip-{case}: ") and expect in msg, msg
    assert "--skip-bad-audio" in msg


def test_folder_and_skip_bad_lists_every_skip(tmp_path):
    root = make_audio_folder(tmp_path / "data", 3, seed=0)
    ex = audio_examples(root)
    assert isinstance(ex, AudioExamples) and len(ex) == 9 and ex.labels.count("low") == 3 and ex.texts is None
    assert all(0.3 <= s <= 0.9 for s in ex.seconds)
    sf.write(root / "low" / "zz_silent.wav", np.zeros(4000, dtype="float32"), 16000)
    (root / "high" / "zz_broken.flac").write_bytes(b"fLaC broken")
    with pytest.raises(DataError, match="zz_broken.flac: cannot decode audio"):
        audio_examples(root)
    ex = audio_examples(root, skip_bad=True)
    assert len(ex) == 9
    assert sorted((n.split("/")[-1], r.split(" (")[0]) for n, r in ex.skipped) == [
        ("zz_broken.flac", "cannot decode audio"),
        ("zz_silent.wav", "silent clip"),
    ]
    sub = ex.subset([0, 1])  # a split keeps the source's skip list (the report shows it)
    assert len(sub) == 2 and sub.skipped == ex.skipped and len(sub.seconds) == 2


def test_folder_mistakes(tmp_path):
    root = make_audio_folder(tmp_path / "data", 2, seed=0)
    (root / "notes.txt").write_text("x")
    with pytest.raises(DataError, match="files outside the class sub-folders have no label: notes.txt"):
        audio_examples(root)
    (root / "notes.txt").unlink()
    (root / "low" / "cover.m4a").write_bytes(b"\x00")
    with pytest.raises(DataError, match=r"unsupported file type: .*cover\.m4a\. Supported audio types: .*\.flac"):
        audio_examples(root)
    (root / "low" / "cover.m4a").unlink()
    (root / "empty").mkdir()
    with pytest.raises(DataError, match="class folder with no audio clips"):
        audio_examples(root)
    (root / "empty").rmdir()
    for p in (root / "noise").iterdir():
        sf.write(p, np.zeros(800, dtype="float32"), 16000)
    with pytest.raises(DataError, match="every clip of class 'noise' was unusable and skipped"):
        audio_examples(root, skip_bad=True)
    with pytest.raises(DataError, match="a folder of clips has no transcripts"):
        audio_examples(root, text_column="text")
    with pytest.raises(DataError, match="training data path not found"):
        audio_examples(tmp_path / "nope", role="training data")


def _write_rows(path, rows, fields):
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)
    return path


def test_table_paths_bytes_transcripts_and_errors(tmp_path):
    rng = np.random.default_rng(0)
    (tmp_path / "clips").mkdir()
    for i in range(4):
        sf.write(tmp_path / "clips" / f"{i}.wav", tone_clip("low" if i % 2 else "high", 0.4, 16000, rng), 16000)
    rows = [{"path": f"clips/{i}.wav", "label": "low" if i % 2 else "high", "text": f"clip {i}"} for i in range(4)]
    table = _write_rows(tmp_path / "t.csv", rows, ["path", "label", "text"])
    ex = audio_examples(table, audio_column="path", text_column="text")
    assert ex.labels == ["high", "low", "high", "low"] and ex.texts == ["clip 0", "clip 1", "clip 2", "clip 3"]
    assert ex.names[1].startswith(f"{table} row 2 (")
    asr = audio_examples(table, audio_column="path", require_labels=False, text_column="text")
    assert asr.labels is None and asr.texts == ex.texts

    with pytest.raises(
        DataError, match="no audio column 'audio'. Columns found: 'path', 'label', 'text'. Set it with --audio-column"
    ):
        audio_examples(table)
    _write_rows(
        tmp_path / "bad.csv",
        rows[:2] + [{"path": "clips/missing.wav", "label": "low", "text": "x"}],
        ["path", "label", "text"],
    )
    with pytest.raises(DataError, match=r"bad.csv row 3: audio file not found: .*missing.wav"):
        audio_examples(tmp_path / "bad.csv", audio_column="path")
    ok = audio_examples(tmp_path / "bad.csv", audio_column="path", skip_bad=True)
    assert len(ok) == 2 and "audio file not found" in ok.skipped[0][1] and "row 3" in ok.skipped[0][0]
    _write_rows(tmp_path / "gap.csv", [rows[0], {**rows[1], "text": " "}], ["path", "label", "text"])
    with pytest.raises(DataError, match="empty transcript in column 'text' at row 2"):
        audio_examples(tmp_path / "gap.csv", audio_column="path", text_column="text")
    _write_rows(tmp_path / "nolabel.csv", [rows[0], {**rows[1], "label": ""}], ["path", "label", "text"])
    with pytest.raises(DataError, match="missing label .* at row 2"):
        audio_examples(tmp_path / "nolabel.csv", audio_column="path")

    # a Parquet table of encoded bytes (the HF datasets {"bytes", "path"} layout too)
    import pandas as pd

    blobs = [(tmp_path / "clips" / f"{i}.wav").read_bytes() for i in range(4)]
    labels = [r["label"] for r in rows]
    pd.DataFrame({"audio": blobs, "label": labels}).to_parquet(tmp_path / "t.parquet")
    pd.DataFrame({"audio": [{"bytes": b, "path": None} for b in blobs], "label": labels}).to_parquet(
        tmp_path / "hf.parquet"
    )
    for name in ("t.parquet", "hf.parquet"):
        pq = audio_examples(tmp_path / name)
        assert len(pq) == 4 and all(isinstance(it, bytes) for it in pq.items) and pq.labels == labels
        assert pq.dedup_keys() == ex.dedup_keys()  # same clips, same keys: leaks are found across layouts


def test_cli_names_the_bad_clip_and_exits_2(tmp_path, tiny_whisper):
    root = make_audio_folder(tmp_path / "data", 3, seed=0)
    sf.write(root / "low" / "zz_silent.wav", np.zeros(4000, dtype="float32"), 16000)
    cmd = [
        sys.executable,
        "-m",
        "tunesmith",
        "train",
        "--task",
        "audio-classification",
        "--data",
        str(root),
        "--model",
        str(tiny_whisper),
        "--out",
        str(tmp_path / "out"),
        "--strategy",
        "head-only",
        "--quiet",
    ]
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert "zz_silent.wav: silent clip" in r.stderr and "--skip-bad-audio" in r.stderr
    assert not (tmp_path / "out").exists()  # nothing half-written
    r = subprocess.run(
        cmd + ["--skip-bad-audio", "--set", "data.validation_split=0.34"], capture_output=True, text=True
    )
    assert r.returncode == 0, r.stderr
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert [s["input"].split("/")[-1] for s in metrics["skipped_inputs"]] == ["zz_silent.wav"]
    assert "zz_silent.wav" in (tmp_path / "out" / "report.html").read_text()
    # the model's own window: the tiny Whisper takes 1 s, so a 1.5 s clip cannot be classified whole
    sf.write(tmp_path / "long.wav", tone_clip("low", 1.5, 16000, np.random.default_rng(0)), 16000)
    r = subprocess.run(
        [sys.executable, "-m", "tunesmith", "predict", str(tmp_path / "out"), str(tmp_path / "long.wav")],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2 and "long.wav: clip too long: 1.5 s, longer than this model's 1 s window" in r.stderr


def test_predict_refuses_what_is_not_a_clip():
    from tunesmith.modalities.audio import AudioModality

    with pytest.raises(DataError, match="input 1: audio file not found: nope.wav"):
        AudioModality().examples_from_inputs(["nope.wav"])
    with pytest.raises(DataError, match="input 2: expected an audio file path or encoded audio bytes, got int"):
        AudioModality().examples_from_inputs([b"RIFF", 3])
    buf = io.BytesIO()
    sf.write(buf, _tone(300, 0.2, 16000), 16000, format="WAV")
    assert AudioModality().examples_from_inputs([buf.getvalue()]).names == ["input 1"]


def test_predict_names_a_silent_clip_without_the_training_flag(tmp_path, tiny_whisper):
    from types import SimpleNamespace

    from tunesmith.modalities.audio import AudioModality
    from tunesmith.testing import task_and_model

    sf.write(tmp_path / "quiet.wav", np.zeros(4000, dtype="float32"), 16000)
    task, _ = task_and_model("audio-classification", tiny_whisper, SimpleNamespace(labels=["a", "b"]))
    ex = AudioModality().examples_from_inputs([str(tmp_path / "quiet.wav")])
    with pytest.raises(DataError, match=r"quiet.wav: silent clip \(all zeros\)\. Remove or replace the clip\.$"):
        task.encode(ex)
