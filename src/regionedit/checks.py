"""Checks of numeric arguments at the library edge: NaN, ±inf, wrong type or out of range → one-line
:class:`RegionEditError` naming the argument (the CLI turns it into exit code 2)."""

from __future__ import annotations

import math
import numbers

from regionedit.errors import RegionEditError

MAX_SEED = 2**63 - 1


def _text(value: float) -> str:
    return str(value) if isinstance(value, int) else f"{value:g}"


def _range(low: float | None, high: float | None, low_open: bool = False) -> str:
    if low is not None and high is not None:
        return f" in {'(' if low_open else '['}{_text(low)}, {_text(high)}]"
    if low is not None:
        return f" {'>' if low_open else '≥'} {_text(low)}"
    return f" ≤ {_text(high)}" if high is not None else ""


def number(name: str, value, low: float | None = None, high: float | None = None, low_open: bool = False) -> float:
    """``value`` as a float, refusing non-numbers, NaN, ±inf and values outside [low, high]."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or (
            low is not None and (value < low or (low_open and value == low))) or (high is not None and value > high):
        raise RegionEditError(f"{name} must be a finite number{_range(low, high, low_open)}, got {value!r}")
    return float(value)


def integer(name: str, value, low: int | None = None, high: int | None = None) -> int:
    """``value`` as an int, refusing non-integers (a float with no fraction is fine) and values outside [low, high]."""
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or (
            low is not None and value < low) or (high is not None and value > high):
        raise RegionEditError(f"{name} must be an integer{_range(low, high)}, got {value!r}")
    return int(value)


def seed(value, name: str = "seed") -> int:
    """A seed for ``torch.Generator.manual_seed``: an integer in [0, 2^63)."""
    return integer(name, value, 0, MAX_SEED)


def optional_number(name: str, value, low: float | None = None, high: float | None = None) -> float | None:
    return None if value is None else number(name, value, low, high)


def optional_integer(name: str, value, low: int | None = None, high: int | None = None) -> int | None:
    return None if value is None else integer(name, value, low, high)
