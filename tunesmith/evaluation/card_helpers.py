"""Markdown cells for model cards: user data escaped, numbers formatted one way everywhere."""

from __future__ import annotations

from typing import Any


def cell(value: Any) -> str:
    # Labels are user data; a stray pipe or newline would break the Markdown table.
    return str(value).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def with_ci(metrics: dict[str, Any] | None, key: str, digits: int = 4) -> str:
    """metrics[key] with its 95% interval where the evaluation has one: "0.8700 [0.8421, 0.8933]"."""
    import math

    m = metrics or {}
    ci = (m.get("intervals") or {}).get(key)
    value = fmt(m.get(key), digits)
    if not ci or any(v is None or not math.isfinite(v) for v in ci):
        return value
    return f"{value} [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]"


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
