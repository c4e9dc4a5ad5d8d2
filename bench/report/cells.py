"""Numbers -> table cells: percentages, milliseconds, counts (k/M/G), plain numbers and text, 'n/a' for none."""

from __future__ import annotations

from typing import Any


def fmt_pct(value: Any) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def fmt_ms(value: Any) -> str:
    return "n/a" if value is None else (f"{value:.3f}" if value < 1 else f"{value:.2f}")


def fmt_count(value: Any) -> str:
    """12_345_678 -> '12.35M' (params, MACs, FLOPs)."""
    if value is None:
        return "n/a"
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.2f}{unit}"
    return str(int(value))


def fmt_num(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 100 else f"{value:,.0f}"
    return str(value)


def fmt_text(value: Any) -> str:
    return "n/a" if value is None else str(value)
