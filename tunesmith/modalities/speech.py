"""Speech inputs (speech recognition): clips + transcripts -> model features and label token ids.

Clips are read and checked by `data/audio.py` (the audio modality's reader, with the transcript
column); what differs from audio classification is the model (a recogniser, not a pooled encoder),
the processor (Whisper's tokenizer, or a character tokenizer built from the transcripts) and that
rows carry label sequences. The task builds those; this class only routes.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from ..data.audio import AudioExamples


class SpeechInputs:
    modality = "speech"

    def read(self, path: str, data_cfg, role: str, require_labels: bool = True, reporter=None) -> AudioExamples:
        """require_labels here means "require transcripts" (data.text_column)."""
        from .audio import AudioInputs

        return AudioInputs().read(path, data_cfg, role, require_labels=False, reporter=reporter,
                                  text_column=data_cfg.text_column if require_labels else None)

    def load(self, model_dir: Path, model_cfg, speech_options: dict[str, Any] | None = None):
        """The recogniser and its processor, at model.window_seconds if set (Whisper)."""
        from ..errors import ConfigError
        from ..models.speech_backbone import load_speech_backbone, load_speech_processor
        from ..models.whisper_window import set_whisper_window

        backbone = load_speech_backbone(model_dir, model_cfg.trust_remote_code, speech_options)
        processor = load_speech_processor(model_dir, backbone.kind, model_cfg.trust_remote_code)
        window = model_cfg.window_seconds
        if window is not None and backbone.kind != "seq2seq":
            raise ConfigError("model.window_seconds applies to Whisper-style models (a fixed input window); "
                              f"{model_dir} is a CTC encoder, which already reads each clip at its own length")
        if window is not None:
            set_whisper_window(backbone.encoder, processor.feature_extractor, window)
        return backbone, processor

    def encode(self, task, processor, ex: AudioExamples, max_length: int | None = None, augment: bool = False,
               reporter=None) -> list[dict]:
        return task.encode(ex, reporter)

    def examples_from_inputs(self, inputs: Sequence[Any], pairs=None) -> AudioExamples:
        """What `predict` was given (paths or encoded bytes) -> examples without transcripts; the
        audio modality's own check, shared (one copy)."""
        from .audio import AudioInputs

        return AudioInputs().examples_from_inputs(inputs, pairs)
