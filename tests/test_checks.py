"""The config checks (``ftp_jax/train/_checks.py``): each names the key, the value and the rule."""

from __future__ import annotations

import math

import pytest

from ftp_jax.train import _checks


def test_choice():
    _checks.check_choice("method.norm", "l2", ("mars", "l2"))
    with pytest.raises(
        ValueError, match=r"unknown method.norm 'l1'; expected one of \('mars', 'l2'\)"
    ):
        _checks.check_choice("method.norm", "l1", ("mars", "l2"))


@pytest.mark.parametrize("value", [-1.0, math.nan, math.inf, True, "1"])
def test_nonnegative_refuses(value):
    with pytest.raises(ValueError, match=r"^k must be a finite number >= 0, got"):
        _checks.check_nonnegative("k", value)


def test_nonnegative_accepts():
    for value in (0, 0.0, 2, 1e-8):
        _checks.check_nonnegative("k", value)


def test_int():
    _checks.check_int("n", 3, 1)
    with pytest.raises(ValueError, match=r"n must be an integer, got 2.5"):
        _checks.check_int("n", 2.5, 1)
    with pytest.raises(ValueError, match=r"n must be an integer, got True"):
        _checks.check_int("n", True, 0)
    with pytest.raises(ValueError, match=r"n must be >= 1, got 0"):
        _checks.check_int("n", 0, 1)


def test_radius_number_or_rules():
    _checks.check_radius("r", 0.5)
    _checks.check_radius("r", (("dense/.*", 1.0), (".*", 0)))
    for bad, message in (
        (-1.0, r"r must be a finite number >= 0"),
        ((), r"r must be a number >= 0 or rules"),
        ((("(", 1.0),), r"the pattern '\(' is invalid"),
        ((("a", 1.0, 2),), r"is not a \(regex, radius\) pair"),
        ((("a", -1.0),), r"r for 'a' must be a finite number >= 0"),
    ):
        with pytest.raises(ValueError, match=message):
            _checks.check_radius("r", bad)
