"""Read-outs of optimizer states: the radii of whatever method carries them."""

from __future__ import annotations

from typing import Any

import jax
import optax

from ftp_jax._layout import LeafScalars

__all__ = ["radii", "radius_gradients"]

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
    radius = found[0].radius
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
    found = [
        x for x in jax.tree_util.tree_leaves(opt_state, is_leaf=_is_ftp_state) if _is_ftp_state(x)
    ]
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
