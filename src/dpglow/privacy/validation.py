"""Argument checks shared by the mechanisms (diffprivlib's conventions: TypeError, ValueError)."""

from __future__ import annotations

import math
import numbers
from collections.abc import Collection


def check_real(name: str, value: object) -> float:
    """A real number as ``float``; ``bool`` is rejected although Python counts it as an int."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}")
    return float(value)


def check_epsilon(epsilon: object) -> float:
    """``epsilon > 0``; ``inf`` is allowed and means "no noise"."""
    eps = check_real("epsilon", epsilon)
    if math.isnan(eps) or eps <= 0:
        raise ValueError(f"epsilon must be > 0 (inf for no privacy), got {eps}")
    return eps


def check_delta(delta: object) -> float:
    """``0 <= delta < 1``."""
    value = check_real("delta", delta)
    if math.isnan(value) or not 0.0 <= value < 1.0:
        raise ValueError(f"delta must lie in [0, 1), got {value}")
    return value


def check_positive(name: str, value: object) -> float:
    """A finite ``value > 0`` (a clip bound or radius: an infinite one bounds nothing)."""
    number = check_real(name, value)
    if not math.isfinite(number) or number <= 0:
        raise ValueError(f"{name} must be finite and > 0, got {number}")
    return number


def check_positive_int(name: str, value: object) -> int:
    """An ``int >= 1`` (``bool`` rejected)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return int(value)


def check_choice(name: str, value: object, choices: Collection[str]) -> str:
    """One of ``choices``."""
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, got {type(value).__name__} {value!r}")
    if value not in choices:
        raise ValueError(f"{name} must be one of {sorted(choices)}, got {value!r}")
    return value


def check_probability(name: str, value: object) -> float:
    """A probability ``0 <= value <= 1``."""
    number = check_real(name, value)
    if math.isnan(number) or not 0.0 <= number <= 1.0:
        raise ValueError(f"{name} must lie in [0, 1], got {number}")
    return number
