"""Audio classification (sound events, spoken commands, speaker traits): clip -> pooled encoder
features -> dropout -> linear. Features were computed once per clip (modalities/audio.py); collate
only rebuilds Whisper's fixed window or pads waveforms, so each epoch never touches a file."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ..modalities.audio import collate_clips, encode_clips, window_card_line, window_hint
from . import TASKS
from .base import TaskExample
from .classification import ClassificationTask


@TASKS.register("audio-classification")
class AudioClassificationTask(ClassificationTask):
    name = "audio-classification"
    modality = "audio"
    pipeline_task = "audio-classification"
    config_sections = frozenset({"model.window_seconds", "eval"})

    @classmethod
    def _options(cls, cfg, extractor, train, reporter) -> dict[str, Any]:
        if reporter is not None:
            window_hint(extractor, cfg.model.window_seconds, train.seconds, reporter)
        return {}

    def _encode_inputs(self, examples, augment: bool, reporter) -> list[dict]:
        return encode_clips(self.preprocessor, examples, reporter)

    def _collate_inputs(self, rows: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        return collate_clips(rows)

    def limitations(self, out: Path, cfg) -> list[str]:
        return window_card_line(out, cfg.model.window_seconds)

    @classmethod
    def tiny_example(cls, root: Path) -> TaskExample:
        from ..testing import make_audio_folder, make_tiny_whisper

        return TaskExample(
            make_tiny_whisper(root / "tiny-whisper"),
            make_audio_folder(root / "train", 12, seed=1),
            make_audio_folder(root / "val", 5, seed=2),
        )
