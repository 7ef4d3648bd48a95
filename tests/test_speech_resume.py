"""A SIGKILLed speech-recognition run at a shortened window (model.window_seconds=1 on a 2 s Whisper)
continues with --resume and ends exactly where an uninterrupted run ends (test_resume.py does every
task at its model's own window)."""

from __future__ import annotations

import json

from speech_helpers import SENTENCES, make_asr_whisper, write_speech_table
from test_resume import assert_same_run, env, run_killed, train_args, tunesmith_cli

from tunesmith.tasks.base import TaskExample


def test_speech_resume_at_a_shorter_window_matches_uninterrupted(tmp_path):
    ex = TaskExample(
        make_asr_whisper(tmp_path / "w2s", window=2),
        write_speech_table(tmp_path / "d", SENTENCES * 2, "train.csv"),
        write_speech_table(tmp_path / "d", SENTENCES[:3], "val.csv", seed=7),
        {
            "data": {"text_column": "transcript", "audio_column": "audio"},
            "speech": {"max_new_tokens": 6},
            "model": {"window_seconds": 1},
        },
    )
    environ = env(tmp_path)
    ref, out = tmp_path / "ref", tmp_path / "killed"
    assert tunesmith_cli(train_args("speech-recognition", ex, ref, "full"), environ).returncode == 0
    run_killed(train_args("speech-recognition", ex, out, "full"), out, environ)
    done = tunesmith_cli(train_args("speech-recognition", ex, out, "full", "--resume"), environ)
    assert done.returncode == 0, done.stderr
    assert_same_run(ref, out)
    assert json.loads((out / "config.json").read_text())["max_source_positions"] == 50
