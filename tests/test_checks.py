"""The config checks (``ftp_jax/train/_checks.py``): each names the key, the value and the rule.

A method's options are checked by its transform's own checks: tests/test_config_checks.py.
"""

from __future__ import annotations

import pytest

from ftp_jax.train import _checks


def test_choice():
    _checks.check_choice("method.norm", "l2", ("mars", "l2"))
    with pytest.raises(
        ValueError, match=r"unknown method.norm 'l1'; expected one of \('mars', 'l2'\)"
    ):
        _checks.check_choice("method.norm", "l1", ("mars", "l2"))


def test_int():
    _checks.check_int("n", 3, 1)
    with pytest.raises(ValueError, match=r"n must be an integer, got 2.5"):
        _checks.check_int("n", 2.5, 1)
    with pytest.raises(ValueError, match=r"n must be an integer, got True"):
        _checks.check_int("n", True, 0)
    with pytest.raises(ValueError, match=r"n must be >= 1, got 0"):
        _checks.check_int("n", 0, 1)
