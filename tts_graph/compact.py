"""Numbers short enough for an 80-column table: 1136 → ``1136``, 68_500 → ``68.5k``,
6.85e11 → ``685G``; dollars and seconds to two significant digits."""

from __future__ import annotations

_SUFFIXES = ("", "k", "M", "G", "T", "P", "E")


def count(x: float) -> str:
    """A count or a magnitude with an SI suffix, at most 5 characters for x < 1e21."""
    if x < 0:
        return "-" + count(-x)
    if x < 10_000:
        return f"{x:.0f}" if float(x).is_integer() or x >= 100 else f"{x:.3g}"
    i = 0
    while x >= 999.5 and i < len(_SUFFIXES) - 1:
        x /= 1000
        i += 1
    text = f"{x:.3g}" if x < 100 else f"{x:.0f}"
    return text + _SUFFIXES[i]


def usd(x: float) -> str:
    """Dollars: ``0``, ``0.0012``, ``1.5``, ``12``; tiny amounts keep two digits."""
    if x == 0:
        return "0"
    if x >= 100:
        return count(x)
    return f"{x:.2g}"


def seconds(x: float) -> str:
    return f"{x:.1f}" if x < 100 else count(x)
