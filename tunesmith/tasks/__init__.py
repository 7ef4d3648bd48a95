"""Tasks: one file each, registered by name. A task owns its head, collate, loss, metrics and decode."""
from ..registry import Registry

TASKS: Registry = Registry("task")

from . import image_classification, text_classification  # noqa: E402,F401  (register themselves)
from . import audio_classification  # noqa: E402,F401
from . import speech_recognition  # noqa: E402,F401

__all__ = ["TASKS"]
