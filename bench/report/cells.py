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


def fmt_ratio(ratio: Any, low: Any = None, high: Any = None) -> str:
    """The one notation of a ratio in a report: '1.27x [1.11, 1.48]' (95% interval), or '1.27x' without one."""
    if ratio is None:
        return "n/a"
    if low is None or high is None:
        return f"{ratio:.2f}x"
    return f"{ratio:.2f}x [{low:.2f}, {high:.2f}]"


def fmt_pp(diff: Any, low: Any = None, high: Any = None) -> str:
    """A difference of two fractions in percentage points: '+4.4 pp [+1.2, +7.5]' (95% interval), or '+4.4 pp'."""
    if diff is None:
        return "n/a"
    if low is None or high is None:
        return f"{100 * diff:+.1f} pp"
    return f"{100 * diff:+.1f} pp [{100 * low:+.1f}, {100 * high:+.1f}]"


def fmt_pct_ci(value: Any, low: Any = None, high: Any = None) -> str:
    """A fraction as a percentage with its 95% interval: '78.4% [75.7, 80.9]'."""
    if value is None:
        return "n/a"
    if low is None or high is None:
        return fmt_pct(value)
    return f"{100 * value:.1f}% [{100 * low:.1f}, {100 * high:.1f}]"
