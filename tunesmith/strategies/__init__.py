"""Strategies decide which weights train and at what learning rate; `auto` picks one of them."""

from ..registry import Registry

STRATEGIES: Registry = Registry("strategy")

from . import auto, bitfit, full, gradual, head_only, lora, partial  # noqa: E402,F401  (register themselves)

# auto accepts every other strategy's options: they apply if it picks that strategy
auto.AutoStrategy.options = tuple(
    sorted({"auto_budget", "auto_refit"} | {o for n, cls in STRATEGIES.items() if n != "auto" for o in cls.options})
)

__all__ = ["STRATEGIES"]
