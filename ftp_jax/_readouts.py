"""Read-outs of optimizer states: the radii of whatever method carries them."""

from __future__ import annotations

from typing import Any

import jax
import optax

__all__ = ["radii"]

PyTree = Any


def _is_radius_state(x: Any) -> bool:
    """A method's state that learns radii: a NamedTuple with a ``radius`` tree (FTP, TPGM)."""
    return isinstance(x, tuple) and "radius" in getattr(x, "_fields", ())


def _is_radius_leaf(x: Any) -> bool:
    # nnx.Optimizer wraps each state array in a Variable that has `get_value`.
    return isinstance(x, optax.MaskedNode) or hasattr(x, "get_value")


def _radius_value(x: Any) -> Any:
    if hasattr(x, "get_value"):
        x = x.get_value()
    return None if isinstance(x, optax.MaskedNode) else x


def radii(opt_state: Any) -> PyTree | None:
    """The learned radii in an optimizer state, as a tree like the params.

    Finds the one state in ``opt_state`` (an ``optax.chain`` state, a wrapper's,
    ``nnx.Optimizer.opt_state``) that carries a ``radius`` tree, whatever the
    method (:class:`ftp_jax.FTPState`, :class:`ftp_jax.TPGMState`), so that a
    training loop can log radii without naming the method.

    Returns:
      The radii (float scalars), ``None`` at excluded leaves; ``None`` if no
      state carries radii (e.g. plain AdamW).

    Raises:
      ValueError: if several states carry radii.
    """
    found = [
        x
        for x in jax.tree_util.tree_leaves(opt_state, is_leaf=_is_radius_state)
        if _is_radius_state(x)
    ]
    if not found:
        return None
    if len(found) > 1:
        raise ValueError(
            f"{len(found)} states in the optimizer state carry radii "
            f"({', '.join(type(x).__name__ for x in found)}); read one of them directly."
        )
    return jax.tree_util.tree_map(_radius_value, found[0].radius, is_leaf=_is_radius_leaf)
