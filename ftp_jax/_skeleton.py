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
- :func:`is_params_placeholder` and :data:`NOT_PARAMS`: how an ``init`` answers
  ``optax.tree_utils.tree_map_params`` (the trees like the params, and the rest).
- The argument checks that every factory shares (base optimizer, norm,
  non-negative numbers, params passed to ``update`` and whether they fit the
  state's, :func:`check_update_trees` and :func:`base_update`).
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ftp_jax._paths import leaf_path, leaf_paths, per_leaf_values, tree_difference
from ftp_jax._projection import NORMS, at_least_float32
from ftp_jax._row_axes import flax_row_axes, normalize_row_axes

PyTree = Any
MaskOrFn = PyTree | Callable[[PyTree], PyTree] | None

__all__ = [
    "NOT_PARAMS",
    "LeafPlan",
    "MaskOrFn",
    "anchor_tree",
    "base_update",
    "check_anchor",
    "check_base_optimizer",
    "check_nonnegative",
    "check_norm",
    "check_update_trees",
    "constrained_tree",
    "given_anchor",
    "is_params_placeholder",
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


def given_anchor(params: PyTree, anchor: PyTree, plans: Sequence[LeafPlan]) -> PyTree:
    """``anchor`` as a state tree: its values at the constrained leaves, checked, and
    ``optax.MaskedNode`` at the others (no copy).

    For the pure functions that take an anchor argument (``wise_ft``,
    ``l2sp_penalty``, ``project_to_anchor``, ``project_fixed_radius``), which pass it
    to :func:`map_leaves` as a state tree. Excluded leaves are not read: the anchor
    may hold anything there (``None``, or a pre-trained head of another shape).

    Raises:
      ValueError: ``anchor`` lacks a params leaf, or a constrained leaf's anchor
        has another shape or dtype (naming the leaf).
    """
    treedef = jax.tree_util.tree_structure(params)
    try:
        flat = treedef.flatten_up_to(anchor)
    except (ValueError, TypeError, KeyError):
        raise ValueError(
            "`anchor` does not have the structure of the params. "
            + tree_difference(params, anchor, "anchor")
        ) from None
    for plan, p, a in zip(plans, treedef.flatten_up_to(params), flat, strict=True):
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
    return treedef.unflatten(
        [a if plan.constrained else optax.MaskedNode() for plan, a in zip(plans, flat, strict=True)]
    )


def radius_dtype(leaf: Any) -> jnp.dtype:
    """Radii, their moments and norms: the leaf's dtype, at least float32."""
    return at_least_float32(jnp.result_type(leaf))


# --- optax.tree_utils.tree_map_params ------------------------------------------------


class _NotParams:
    """Marks a state field that is not a tree like the params (per-leaf scalars, counts)."""

    def __repr__(self) -> str:
        return "NOT_PARAMS"


NOT_PARAMS = _NotParams()


def is_params_placeholder(params: Any) -> bool:
    """Whether ``init`` got ``optax.tree_utils.tree_map_params``'s stand-in for the params.

    ``tree_map_params`` calls ``init`` with one opaque object in place of the params
    and maps its function over the parts of the state where that object comes back
    (``optax.masked`` detects it the same way). A method's ``init`` then returns its
    state with the placeholder in the fields like the params (the anchor, FTP's
    displacement, the base optimizer's state) and :data:`NOT_PARAMS` in the others
    (per-leaf scalars such as radii, whose leaves are not the params' shapes), so that
    the function reaches exactly the trees like the params, and
    ``transform_non_params`` gets each other field whole.
    """
    placeholder = getattr(
        getattr(optax.tree_utils, "_state_utils", None), "_ParamsPlaceholder", None
    )
    return placeholder is not None and isinstance(params, placeholder)


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
    trees: Sequence[PyTree] | Mapping[str, PyTree] = (),
    state: Sequence[PyTree] | Mapping[str, PyTree] = (),
    *,
    excluded_fn: Callable[..., tuple],
    method: str,
) -> tuple[PyTree, ...]:
    """Maps a per-leaf function over parallel trees, constrained and excluded leaves apart.

    For every params leaf ``p`` with plan ``plan``, the leaves of ``trees`` (full
    trees like the params: gradients, updates) and of ``state`` (state trees, with
    ``MaskedNode`` at excluded leaves) at its position are passed on:
    ``leaf_fn(plan, p, ...)`` at constrained leaves, ``excluded_fn(plan, p, ...)``
    at excluded ones. ``trees`` and ``state`` are each a sequence, whose leaves
    follow ``p`` by position, or a mapping from names to trees, whose leaves are
    passed as keyword arguments of those names, so that a per-leaf function reads
    its buffers by name, as its equation does::

      map_leaves(leaf_update, plans, params, {"base_update": base_updates},
                 {"anchor": state.anchor}, ...)  # leaf_update(plan, p, *, base_update, anchor)

    Both functions return tuples of the same length; column ``i`` of the results
    becomes the ``i``-th returned tree, with the params' structure. When
    ``leaf_fn`` returns a NamedTuple, so does ``map_leaves``: the same type,
    holding a tree per field (``excluded_fn`` may return a plain tuple in the
    same order). Params without leaves give one empty tree, the params' own
    structure (there is no result to count the outputs by).

    Raises:
      ValueError: a tree that does not have the params' structure, or a ``mask``
        that changed since the state was initialized (naming the leaf).
    """
    treedef = jax.tree_util.tree_structure(params)
    tree_names, tree_columns = _columns(params, trees, "gradient tree")
    state_names, state_columns = _columns(params, state, f"{method} state")
    results = []
    for index, (plan, param) in enumerate(zip(plans, treedef.flatten_up_to(params), strict=True)):
        tree_leaves = [column[index] for column in tree_columns]
        state_leaves = [column[index] for column in state_columns]
        if state_leaves and plan.constrained == isinstance(state_leaves[0], optax.MaskedNode):
            raise ValueError(
                f"`mask` at {plan.path!r} is {plan.constrained} now but was "
                f"{not plan.constrained} when the {method} state was initialized; the "
                "mask must not change between init and update."
            )
        tree_args, tree_kwargs = _arguments(tree_names, tree_leaves)
        state_args, state_kwargs = _arguments(state_names, state_leaves)
        function = leaf_fn if plan.constrained else excluded_fn
        results.append(
            function(plan, param, *tree_args, *state_args, **tree_kwargs, **state_kwargs)
        )
    if not results:  # params without leaves: one empty tree (the outputs are unknown)
        return (treedef.unflatten([]),)
    columns = [treedef.unflatten(list(column)) for column in zip(*results, strict=True)]
    named_result = next((type(r) for r in results if hasattr(type(r), "_fields")), None)
    return named_result(*columns) if named_result is not None else tuple(columns)


def _columns(
    params: PyTree, trees: Sequence[PyTree] | Mapping[str, PyTree], what: str
) -> tuple[list[str] | None, list[list[Any]]]:
    """``(names or None, one flat list of leaves per tree)`` of map_leaves' ``trees``."""
    names = list(trees) if isinstance(trees, Mapping) else None
    values = [trees[name] for name in names] if names is not None else list(trees)
    return names, [_flat(params, tree, what) for tree in values]


def _arguments(names: list[str] | None, leaves: list[Any]) -> tuple[list[Any], dict[str, Any]]:
    """One leaf of each tree as ``(positional, keyword)`` arguments."""
    if names is None:
        return leaves, {}
    return [], dict(zip(names, leaves, strict=True))


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


def _is_masked(x: Any) -> bool:
    return isinstance(x, optax.MaskedNode)


def _init_difference(params: PyTree, state_tree: PyTree) -> str:
    """Describes how the paths of the params differ from those of a state tree
    (``MaskedNode`` at excluded leaves counts as a leaf)."""
    params_paths = leaf_paths(params)
    state_flat = jax.tree_util.tree_flatten_with_path(state_tree, is_leaf=_is_masked)[0]
    state_paths = [leaf_path(kp) for kp, _ in state_flat]
    missing = [p for p in state_paths if p not in set(params_paths)]
    unexpected = [p for p in params_paths if p not in set(state_paths)]
    parts = []
    if missing:
        parts.append(f"leaves at init but not now: {missing[:6]}")
    if unexpected:
        parts.append(f"leaves now but not at init: {unexpected[:6]}")
    if not parts:
        parts.append(
            f"the containers differ (now: {jax.tree_util.tree_structure(params)}; at init: "
            f"{jax.tree_util.tree_structure(state_tree, is_leaf=_is_masked)})"
        )
    return "; ".join(parts)


def check_update_trees(
    method: str, params: PyTree, updates: PyTree, anchor: PyTree | None = None
) -> None:
    """Checks, before any work, that ``update``'s trees fit each other and the state.

    ``updates`` (the gradients) must have the params' structure and shapes;
    ``anchor`` (the state's tree like the params, with ``MaskedNode`` at excluded
    leaves; ``None`` for a state without one) must have the structure of the params
    and, at every constrained leaf, their shapes: it was built from the params that
    ``init`` saw (an object with a ``tree()`` method, a stacked state layout, is
    read through it). Shapes only, at trace time: no cost in a jitted step.

    Raises:
      ValueError: naming the method, the leaf path and both shapes (or the paths
        that differ), in place of JAX's pytree or broadcasting errors.
    """
    treedef = jax.tree_util.tree_structure(params)
    flat_params = jax.tree_util.tree_flatten_with_path(params)[0]
    if anchor is not None and callable(getattr(anchor, "tree", None)):
        anchor = jax.eval_shape(anchor.tree)  # a stacked layout: its tree's shapes, no copies
    if anchor is not None:
        if jax.tree_util.tree_structure(anchor, is_leaf=_is_masked) != treedef:
            raise ValueError(
                f"{method}: the params passed to `update` do not have the structure of the "
                f"params passed to `init` ({_init_difference(params, anchor)}). Initialize "
                "the state with these params (`tx.init(params)`), or pass the params the "
                "state was initialized with."
            )
        for (key_path, p), a in zip(
            flat_params, jax.tree_util.tree_leaves(anchor, is_leaf=_is_masked), strict=True
        ):
            if not _is_masked(a) and np.shape(a) != np.shape(p):
                raise ValueError(
                    f"{method}: the param at {leaf_path(key_path)!r} has shape {np.shape(p)} "
                    f"in `update`, but shape {np.shape(a)} when the state was initialized. "
                    "Initialize the state with these params (`tx.init(params)`), or pass the "
                    "params the state was initialized with."
                )
    try:
        flat_updates = treedef.flatten_up_to(updates)
    except (ValueError, TypeError):
        raise ValueError(
            f"{method}: the updates (gradients) passed to `update` do not have the structure "
            f"of `params`: {tree_difference(params, updates, 'updates')}"
        ) from None
    for (key_path, p), u in zip(flat_params, flat_updates, strict=True):
        if np.shape(u) != np.shape(p):
            raise ValueError(
                f"{method}: the update (gradient) at {leaf_path(key_path)!r} has shape "
                f"{np.shape(u)}, but the param has shape {np.shape(p)}."
            )


def _base_state_mismatch(base_state: PyTree, params: PyTree) -> tuple[str, Any, Any] | None:
    """The first leaf at which a tree like the params inside ``base_state`` (an optax
    moment, trace, ...) has another shape than ``params``: ``(path, state shape, param
    shape)``, or None."""
    treedef = jax.tree_util.tree_structure(params)
    if treedef.num_leaves <= 1 and treedef.num_nodes <= 1:
        return None  # params that are one array: every state array would look like them

    def like_params(x: Any) -> bool:
        try:
            return jax.tree_util.tree_structure(x, is_leaf=_is_masked) == treedef
        except Exception:  # noqa: BLE001 - best effort, on the error path only
            return False

    flat_params = jax.tree_util.tree_flatten_with_path(params)[0]
    for tree in jax.tree_util.tree_leaves(base_state, is_leaf=like_params):
        if not like_params(tree):
            continue
        leaves = jax.tree_util.tree_leaves(tree, is_leaf=_is_masked)
        for (key_path, p), leaf in zip(flat_params, leaves, strict=True):
            if hasattr(leaf, "shape") and np.shape(leaf) != np.shape(p):
                return leaf_path(key_path), np.shape(leaf), np.shape(p)
    return None


def base_update(
    base_optimizer: optax.GradientTransformationExtraArgs,
    updates: PyTree,
    base_state: optax.OptState,
    params: PyTree,
    method: str,
    **extra_args: Any,
) -> tuple[PyTree, optax.OptState]:
    """``base_optimizer.update(updates, base_state, params, **extra_args)``.

    When it fails and the base state holds a tree like the params (Adam's moments, a
    momentum trace) of other shapes than ``params``, e.g. at a leaf that ``mask``
    excludes (which the method's own state does not keep), the error names the
    method, the leaf and both shapes.
    """
    try:
        return base_optimizer.update(updates, base_state, params, **extra_args)
    except (TypeError, ValueError) as error:
        mismatch = _base_state_mismatch(base_state, params)
        if mismatch is None:
            raise
        path, state_shape, param_shape = mismatch
        raise ValueError(
            f"{method}: the param at {path!r} has shape {param_shape} in `update`, but the "
            f"base optimizer's state was initialized for shape {state_shape}. Initialize "
            "the state with these params (`tx.init(params)`), or pass the params the state "
            "was initialized with."
        ) from error


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
