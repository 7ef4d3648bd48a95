"""Markdown cells for model cards: user data escaped, numbers formatted one way everywhere."""

from __future__ import annotations

from typing import Any


def cell(value: Any) -> str:
    # Labels are user data; a stray pipe or newline would break the Markdown table.
    return str(value).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def fmt(value: Any, digits: int = 4) -> str:
    """A number as reports and cards show it: floats to `digits` places, ints with thousands
    separators, a dash for a missing (or NaN) value."""
    import math

    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)
