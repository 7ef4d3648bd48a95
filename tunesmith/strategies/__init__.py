"""Strategies decide which weights train and at what learning rate."""
from ..registry import Registry

STRATEGIES: Registry = Registry("strategy")

from . import bitfit, full, gradual, head_only, lora, partial  # noqa: E402,F401  (register themselves)

__all__ = ["STRATEGIES"]
