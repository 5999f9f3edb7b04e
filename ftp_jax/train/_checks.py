"""Checks of the run configs' own settings: each error names the key, the value and the rule.

A method's options are not checked here but by its transform's own checks
(:func:`ftp_jax.train.methods.check_options`): one rule in one place.
"""

from __future__ import annotations

import numbers
from typing import Any


def check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}; expected one of {choices}.")


def check_int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an integer, got {value!r}.")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}.")
