"""Per-leaf plans: which leaves are constrained, their rows, and their anchors.

Shared by every method that projects toward an anchor (FTP, TPGM, the peers).
A plan is resolved from ``mask`` and ``row_axes`` (see :mod:`ftp_jax._paths`) at
trace time; it is static Python data, never part of a jitted state.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ftp_jax._paths import leaf_path, per_leaf_values, tree_difference
from ftp_jax._row_axes import flax_row_axes, normalize_row_axes

PyTree = Any
MaskOrFn = PyTree | Callable[[PyTree], PyTree] | None

__all__ = ["LeafPlan", "leaf_plans", "check_anchor", "masked_like", "flat_up_to"]


class LeafPlan(NamedTuple):
    """Static configuration of one params leaf."""

    path: str  # the leaf's path, e.g. 'backbone/conv1/kernel'
    constrained: bool  # projected toward the anchor (True) or left to the optimizer
    kept_axes: tuple[int, ...]  # sorted axes kept as rows; () = one norm


def _check_mask_value(value: Any, path: str) -> bool:
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    raise ValueError(
        f"`mask` for {path!r} must be a Python bool (True = constrained), got "
        f"{value!r}. Build masks from static values, e.g. "
        "ftp_jax.path_rules([(r'head/.*', False), (r'.*', True)], name='mask')."
    )


def _all_true(params: PyTree) -> PyTree:
    return jax.tree_util.tree_map(lambda _: True, params)


def leaf_plans(
    params: PyTree, mask: MaskOrFn, row_axes: MaskOrFn, *, method: str = "FTP"
) -> list[LeafPlan]:
    """Resolves ``mask`` and ``row_axes`` for every leaf of ``params`` and checks them.

    Raises:
      ValueError: a ``mask`` or ``row_axes`` tree that does not fit the params, a
        mask value that is not a bool, or row axes out of range (naming the path).
      TypeError: a constrained leaf that is not floating point.
    """
    flat = jax.tree_util.tree_flatten_with_path(params)[0]
    masks = per_leaf_values(mask, params, name="mask", default=_all_true)
    axes = per_leaf_values(row_axes, params, name="row_axes", default=flax_row_axes)
    plans = []
    for (key_path, leaf), leaf_mask, leaf_axes in zip(flat, masks, axes, strict=True):
        path = leaf_path(key_path)
        constrained = _check_mask_value(leaf_mask, path)
        kept = normalize_row_axes(leaf_axes, tuple(np.shape(leaf)), path) if constrained else ()
        if constrained and not jnp.issubdtype(jnp.result_type(leaf), jnp.floating):
            raise TypeError(
                f"{method} constrains floating-point parameters, but {path!r} has dtype "
                f"{jnp.result_type(leaf)}. Exclude it with `mask` (False at that path)."
            )
        plans.append(LeafPlan(path, constrained, kept))
    return plans


def check_anchor(anchor: PyTree, params: PyTree) -> None:
    """Raises a ValueError naming the leaf if ``anchor`` does not match ``params``."""
    if jax.tree_util.tree_structure(anchor) != jax.tree_util.tree_structure(params):
        raise ValueError(
            "`anchor` does not have the structure of the params passed to init. "
            + tree_difference(params, anchor, "anchor")
        )
    flat_params = jax.tree_util.tree_flatten_with_path(params)[0]
    for (key_path, p), a in zip(flat_params, jax.tree_util.tree_leaves(anchor), strict=True):
        if np.shape(p) != np.shape(a) or jnp.result_type(p) != jnp.result_type(a):
            raise ValueError(
                f"`anchor` at {leaf_path(key_path)!r} has shape {np.shape(a)} and dtype "
                f"{jnp.result_type(a)}, but the param has shape {np.shape(p)} and dtype "
                f"{jnp.result_type(p)}."
            )


def masked_like(
    params: PyTree, plans: list[LeafPlan], make: Callable[[Any, LeafPlan], Any]
) -> PyTree:
    """A tree like ``params``: ``make(leaf, plan)`` at constrained leaves, MaskedNode elsewhere."""
    treedef = jax.tree_util.tree_structure(params)
    leaves = treedef.flatten_up_to(params)
    return treedef.unflatten(
        [
            make(leaf, plan) if plan.constrained else optax.MaskedNode()
            for leaf, plan in zip(leaves, plans, strict=True)
        ]
    )


def flat_up_to(params: PyTree, tree: PyTree, what: str) -> list[Any]:
    """``tree``'s subtrees at the params' leaf positions (MaskedNode where excluded)."""
    try:
        return jax.tree_util.tree_structure(params).flatten_up_to(tree)
    except (ValueError, TypeError) as error:
        raise ValueError(
            f"The {what} does not have the structure of the params; was it initialized "
            f"with other params? ({error})"
        ) from None


def radius_dtype(leaf: Any) -> jnp.dtype:
    """Radii and their moments: the leaf's dtype, at least float32."""
    return jnp.promote_types(jnp.result_type(leaf), jnp.float32)
