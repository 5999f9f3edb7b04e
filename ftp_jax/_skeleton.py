"""The one per-leaf skeleton every method is written on.

A method of this library is three things: a NamedTuple state, a pure function of
one params leaf (the math, with its equation in the docstring), and a factory.
Everything between them lives here, once:

- :func:`leaf_plans`: resolves ``mask`` and ``row_axes`` into one static
  :class:`LeafPlan` per params leaf (its path, whether it is constrained, its
  rows), checked with errors that name the leaf. Plans are Python data, resolved
  once per trace; they never enter a jitted state.
- :func:`constrained_tree` / :func:`anchor_tree`: state trees with the params'
  structure holding a value at each constrained leaf and ``optax.MaskedNode``
  elsewhere (excluded leaves keep nothing).
- :func:`map_leaves`: maps a per-leaf function over parallel trees, as
  ``jax.tree.map`` does, with the plans; it checks that the mask did not change
  since ``init`` and returns one tree per output of the function.
- The argument checks that every factory shares (base optimizer, norm,
  non-negative numbers, params passed to ``update``).
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ftp_jax._paths import leaf_path, per_leaf_values, tree_difference
from ftp_jax._projection import NORMS, compute_dtype
from ftp_jax._row_axes import flax_row_axes, normalize_row_axes

PyTree = Any
MaskOrFn = PyTree | Callable[[PyTree], PyTree] | None

__all__ = [
    "LeafPlan",
    "MaskOrFn",
    "anchor_tree",
    "check_anchor",
    "check_base_optimizer",
    "check_nonnegative",
    "check_norm",
    "constrained_tree",
    "flat_anchor",
    "leaf_plans",
    "map_leaves",
    "radius_dtype",
    "require_params",
]


class LeafPlan(NamedTuple):
    """Static configuration of one params leaf."""

    path: str  # the leaf's path, e.g. 'backbone/conv1/kernel'
    constrained: bool  # projected toward the anchor (True) or left to the optimizer
    kept_axes: tuple[int, ...]  # sorted axes kept as rows; () = one norm


# --- plans -------------------------------------------------------------------------


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
    params: PyTree, mask: MaskOrFn, row_axes: MaskOrFn = None, *, method: str = "FTP"
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


# --- state trees -------------------------------------------------------------------


def constrained_tree(
    params: PyTree, plans: Sequence[LeafPlan], make: Callable[[Any, LeafPlan], Any]
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


def anchor_tree(
    params: PyTree, anchor: PyTree | None, plans: Sequence[LeafPlan], dtype: Any = None
) -> PyTree:
    """The anchor to keep in a state: a copy of ``anchor`` (default: ``params``) at the
    constrained leaves (in ``dtype`` if given), ``optax.MaskedNode`` at the others.

    A copy, so that donating params to a jitted step never frees the anchor.

    Raises:
      ValueError: an explicit ``anchor`` that does not fit ``params`` (naming the leaf).
    """
    if anchor is not None:
        check_anchor(anchor, params)
    source = params if anchor is None else anchor
    return constrained_tree(source, plans, lambda a, _: jnp.array(a, dtype=dtype, copy=True))


def flat_anchor(params: PyTree, anchor: PyTree, plans: Sequence[LeafPlan]) -> list[Any]:
    """``anchor``'s values at the params' leaf positions, checked where constrained.

    For the pure functions that take an anchor argument (``wise_ft``,
    ``l2sp_penalty``, ``project_fixed_radius``). Excluded leaves are not read: the
    anchor may hold anything there (``None``, or a pre-trained head of another shape).

    Raises:
      ValueError: ``anchor`` lacks a params leaf, or a constrained leaf's anchor
        has another shape or dtype (naming the leaf).
    """
    try:
        flat = jax.tree_util.tree_structure(params).flatten_up_to(anchor)
    except (ValueError, TypeError, KeyError):
        raise ValueError(
            "`anchor` does not have the structure of the params. "
            + tree_difference(params, anchor, "anchor")
        ) from None
    flat_params = jax.tree_util.tree_structure(params).flatten_up_to(params)
    for plan, p, a in zip(plans, flat_params, flat, strict=True):
        if not plan.constrained:
            continue
        if a is None or np.shape(p) != np.shape(a) or jnp.result_type(p) != jnp.result_type(a):
            described = (
                "None" if a is None else f"shape {np.shape(a)} and dtype {jnp.result_type(a)}"
            )
            raise ValueError(
                f"`anchor` at {plan.path!r} has {described}, but the param has shape "
                f"{np.shape(p)} and dtype {jnp.result_type(p)}."
            )
    return flat


def radius_dtype(leaf: Any) -> jnp.dtype:
    """Radii, their moments and norms: the leaf's dtype, at least float32."""
    return compute_dtype(jnp.result_type(leaf))


# --- the map -----------------------------------------------------------------------


def _flat(params: PyTree, tree: PyTree, what: str) -> list[Any]:
    try:
        return jax.tree_util.tree_structure(params).flatten_up_to(tree)
    except (ValueError, TypeError) as error:
        raise ValueError(
            f"The {what} does not have the structure of the params; was it initialized "
            f"with other params? ({error})"
        ) from None


def map_leaves(
    leaf_fn: Callable[..., tuple],
    plans: Sequence[LeafPlan],
    params: PyTree,
    trees: Sequence[PyTree] = (),
    state: Sequence[PyTree] = (),
    *,
    excluded_fn: Callable[..., tuple],
    method: str,
) -> tuple[PyTree, ...]:
    """Maps a per-leaf function over parallel trees, constrained and excluded leaves apart.

    For every params leaf ``p`` with plan ``plan``, the leaves of ``trees`` (full
    trees like the params: gradients, updates) and of ``state`` (state trees, with
    ``MaskedNode`` at excluded leaves) at its position are passed on:
    ``leaf_fn(plan, p, *tree_leaves, *state_leaves)`` at constrained leaves,
    ``excluded_fn(plan, p, *tree_leaves, *state_leaves)`` at excluded ones. Both
    return tuples of the same length; column ``i`` of the results becomes the
    ``i``-th returned tree, with the params' structure.

    Raises:
      ValueError: a tree that does not have the params' structure, or a ``mask``
        that changed since the state was initialized (naming the leaf).
    """
    treedef = jax.tree_util.tree_structure(params)
    columns = [treedef.flatten_up_to(params)]
    columns += [_flat(params, tree, "gradient tree") for tree in trees]
    columns += [_flat(params, tree, f"{method} state") for tree in state]
    results = []
    for plan, *leaves in zip(plans, *columns, strict=True):
        if state and plan.constrained == isinstance(leaves[1 + len(trees)], optax.MaskedNode):
            raise ValueError(
                f"`mask` at {plan.path!r} is {plan.constrained} now but was "
                f"{not plan.constrained} when the {method} state was initialized; the "
                "mask must not change between init and update."
            )
        results.append((leaf_fn if plan.constrained else excluded_fn)(plan, *leaves))
    return tuple(treedef.unflatten(list(column)) for column in zip(*results, strict=True))


# --- argument checks ---------------------------------------------------------------


def check_base_optimizer(
    base_optimizer: Any, method: str, argument: str = "base_optimizer"
) -> optax.GradientTransformationExtraArgs:
    """``base_optimizer`` with extra-args support; a TypeError if it is not a transform."""
    if not isinstance(base_optimizer, optax.GradientTransformation):
        raise TypeError(
            f"{method}: `{argument}` must be an optax GradientTransformation such as "
            f"optax.adamw(1e-4), got {type(base_optimizer).__name__}."
        )
    return optax.with_extra_args_support(base_optimizer)


def check_norm(norm: Any) -> str:
    """``norm`` if it is one of :data:`NORMS`, else a ValueError."""
    if norm not in NORMS:
        raise ValueError(f"unknown `norm` {norm!r}; expected one of {NORMS}.")
    return norm


def require_params(params: Any, method: str) -> None:
    """A ValueError if ``update`` was called without the params."""
    if params is None:
        raise ValueError(
            f"{method} needs the current params: call `tx.update(grads, state, params)`."
        )


def check_nonnegative(
    name: str, value: Any, method: str, *, upper: float | None = None, hint: str = ""
) -> Any:
    """``value`` if it is a finite real number in ``[0, upper]`` (a traced value passes).

    Raises:
      ValueError: naming the method, the argument and the value.
    """
    if isinstance(value, jax.core.Tracer):
        return value
    ok = not isinstance(value, bool) and (
        isinstance(value, numbers.Real) or (hasattr(value, "dtype") and np.ndim(value) == 0)
    )
    if ok:
        try:
            number = float(value)
        except (TypeError, ValueError):
            number = float("nan")
        ok = bool(np.isfinite(number)) and number >= 0.0 and (upper is None or number <= upper)
    if not ok:
        interval = ">= 0" if upper is None else f"in [0, {upper:g}]"
        raise ValueError(
            f"{method}: `{name}` must be a finite number {interval}, got {value!r}.{hint}"
        )
    return value
