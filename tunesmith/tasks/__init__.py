"""Tasks: one file each, registered by name. A task owns its head, collate, loss, metrics and decode."""

from ..registry import Registry

TASKS: Registry = Registry("task")

# each task module registers itself (a new task: one file, plus its import here)
from . import audio_classification, chat, image_classification, speech_recognition, text_classification  # noqa: E402,F401

__all__ = ["TASKS"]
