"""Tasks: one file each, registered by name. A task owns its head, collate, loss, metrics and decode."""
from ..registry import Registry

TASKS: Registry = Registry("task")

from . import text_classification  # noqa: E402,F401  (registers itself)

__all__ = ["TASKS"]
