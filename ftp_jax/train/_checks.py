"""Checks shared by the config dataclasses: each error names the key, the value and the rule."""

from __future__ import annotations

import math
import numbers
import re
from typing import Any


def check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}; expected one of {choices}.")


def check_nonnegative(name: str, value: Any) -> None:
    valid = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if not valid or not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}.")


def check_int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an integer, got {value!r}.")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}.")


def check_radius(name: str, radius: Any) -> None:
    """A number >= 0, or a non-empty tuple of (regex, number >= 0) rules."""
    if isinstance(radius, numbers.Real) and not isinstance(radius, bool):
        check_nonnegative(name, radius)
        return
    usage = (
        f"{name} must be a number >= 0 or rules ((regex, radius), ...), e.g. "
        "((r'dense/.*', 1.0), (r'.*', 0.5))"
    )
    if not isinstance(radius, (tuple, list)) or not radius:
        raise ValueError(f"{usage}; got {radius!r}.")
    for rule in radius:
        if not (isinstance(rule, (tuple, list)) and len(rule) == 2):
            raise ValueError(f"{usage}; the rule {rule!r} is not a (regex, radius) pair.")
        pattern, value = rule
        try:
            re.compile(pattern)
        except (re.error, TypeError) as error:
            raise ValueError(f"{usage}; the pattern {pattern!r} is invalid: {error}.") from None
        check_nonnegative(f"{name} for {pattern!r}", value)
