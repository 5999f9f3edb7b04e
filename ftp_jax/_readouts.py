"""Read-outs of optimizer states: the radii of whatever method carries them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import optax

from ftp_jax._layout import LeafScalars

__all__ = ["radii", "radius_gradients", "radius_state"]

PyTree = Any


def _is_radius_state(x: Any) -> bool:
    """A method's state that learns radii: a NamedTuple with a ``radius`` tree (FTP, TPGM)."""
    return isinstance(x, tuple) and "radius" in getattr(x, "_fields", ())


def _states(opt_state: Any, matches: Callable[[Any], bool]) -> list[Any]:
    """Every state inside ``opt_state`` (itself included) for which ``matches`` holds:
    in an ``optax.chain`` state, a wrapper's, ``nnx.Optimizer.opt_state``."""
    return [x for x in jax.tree_util.tree_leaves(opt_state, is_leaf=matches) if matches(x)]


def radius_state(opt_state: Any, state_type: type | None = None) -> Any:
    """The one state in ``opt_state`` that learns radii (of ``state_type``, if given).

    The one search of the read-outs: :func:`radii`, :func:`ftp_jax.ftp_radii` and
    :func:`ftp_jax.tpgm_radii` read the state it finds.

    Args:
      opt_state: an optimizer state: a method's own state, or one containing it (an
        ``optax.chain`` state, ``nnx.Optimizer.opt_state``).
      state_type: the state's class (``FTPState``, ``TPGMState``); ``None``: any
        state with a ``radius`` field.

    Returns:
      The state; ``None`` if none is there and ``state_type`` is ``None``.

    Raises:
      ValueError: several states carry radii, or none of ``state_type`` is there.
    """
    found = _states(
        opt_state,
        lambda x: _is_radius_state(x) and (state_type is None or isinstance(x, state_type)),
    )
    if len(found) > 1:
        raise ValueError(
            f"{len(found)} states in the optimizer state carry radii "
            f"({', '.join(type(x).__name__ for x in found)}); read one of them directly."
        )
    if not found and state_type is not None:
        raise ValueError(
            f"Expected exactly one {state_type.__name__} in the optimizer state, found 0."
            " Pass the state returned by the method's init, or a chain containing it."
        )
    return found[0] if found else None


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
    state = radius_state(opt_state)
    if state is None:
        return None
    radius = state.radius
    if isinstance(radius, LeafScalars):  # one vector per dtype (ftp_jax._layout)
        return radius.tree()
    return jax.tree_util.tree_map(_radius_value, radius, is_leaf=_is_radius_leaf)


def _is_ftp_state(x: Any) -> bool:
    fields = getattr(x, "_fields", ())
    return isinstance(x, tuple) and "prev_displacement" in fields and "prev_inverse_norm" in fields


def _as_tree(x: Any) -> PyTree:
    return x.tree() if hasattr(x, "tree") and callable(x.tree) else x


def radius_gradients(opt_state: Any, grads: PyTree) -> PyTree | None:
    """FTP's radius gradient at this step, per constrained leaf: what its radius Adam follows.

    With ``opt_state`` the state *before* the update that ``grads`` feeds (the
    gradient ``g_t`` at ``theta_{t-1}``), this is the reference's

    .. math::

       h_t = \\sum g_t \\odot c_{t-1} / \\lVert c_{t-1} \\rVert,

    the derivative of the loss with respect to the previous radius
    ``gamma_{t-1}``, before FTP's gradient annealing (``k`` scales the positive
    ones). A positive ``h_t`` shrinks the radius; a leaf whose ``h_t`` is positive
    on average has its radius driven to the floor and stays at its pre-trained
    value. Tian et al., *Fast Trainable Projection for Robust Fine-Tuning*,
    NeurIPS 2023 (arXiv:2310.19182), Algorithm 1. 0 at the first step (no
    previous displacement yet).

    Returns:
      A tree like the params (float32 scalars, ``None`` at excluded leaves), or
      ``None`` when no state in ``opt_state`` is FTP's.
    """
    found = _states(opt_state, _is_ftp_state)
    if len(found) != 1:
        return None
    state = found[0]
    displacement = _as_tree(state.prev_displacement)
    inverse_norm = _as_tree(state.prev_inverse_norm)

    def leaf(g, c, inv):
        if isinstance(c, optax.MaskedNode) or c is None:
            return None
        c, inv = _radius_value(c), _radius_value(inv)
        product = g.astype(jax.numpy.float32) * c.astype(jax.numpy.float32) * inv
        return jax.numpy.sum(product, dtype=jax.numpy.float32)

    return jax.tree_util.tree_map(
        leaf,
        grads,
        displacement,
        inverse_norm,
        is_leaf=lambda x: x is None or isinstance(x, optax.MaskedNode),
    )
