"""Transcribed audio (speech recognition): clips + what is said in them.

Clips are read and checked by `data/audio.py`, the audio modality's reader, with the transcript
column (data.text_column) instead of class labels; what `predict` takes is the audio modality's.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..data.audio import AudioExamples
from . import MODALITIES
from .audio import AudioModality


@MODALITIES.register("speech")
class SpeechModality:
    name = "speech"
    example_input = "clip.wav"
    request_kind = "file"
    media_types = ("audio/*",)
    streams = False

    def from_request(self, values: list, limits) -> list:
        from . import request_files

        return request_files(values, limits, "audio")

    def read(self, path: str, data_cfg, role: str, require_labels: bool = True, reporter=None) -> AudioExamples:
        """require_labels here means "require transcripts" (data.text_column)."""
        return AudioModality().read(
            path,
            data_cfg,
            role,
            require_labels=False,
            reporter=reporter,
            text_column=data_cfg.text_column if require_labels else None,
        )

    def examples_from_inputs(self, inputs: Sequence[Any], pairs=None) -> AudioExamples:
        return AudioModality().examples_from_inputs(inputs, pairs)

    def predict_inputs(self, examples: AudioExamples) -> tuple[list, list | None]:
        return list(examples.items), None

    def probe_inputs(self, examples: AudioExamples | None, n: int) -> list:
        return AudioModality().probe_inputs(examples, n)

    def pipeline_inputs(self, inputs: list, preprocessor) -> list:
        return AudioModality().pipeline_inputs(inputs, preprocessor)
