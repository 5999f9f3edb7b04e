"""Parameter paths and per-leaf settings (which leaves are constrained, which axes are rows).

Every per-leaf setting of the library (``mask``, ``row_axes``) is either a pytree
with the params' structure, or a function of the params that returns one, as in
:func:`optax.masked`. This module turns either form into one value per params
leaf, checks it, and builds such trees from ``[(regex, value)]`` rules over
parameter paths (:func:`path_rules`).

A *path* is the leaf's keys joined by ``/``: ``backbone/conv1/kernel``. Flax NNX
states hold their arrays inside ``Variable`` objects, whose pytree key is a
trailing ``.value``; it is dropped, so the path of ``model.conv1.kernel`` is
``conv1/kernel`` whether the tree holds raw arrays or NNX variables.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np

PyTree = Any

__all__ = ["PathRules", "leaf_path", "leaf_paths", "path_rules", "per_leaf_values"]


def leaf_path(key_path: Sequence[Any]) -> str:
    """Returns the ``/``-joined path of a leaf from its JAX key path.

    A trailing attribute key ``value`` (how an NNX ``Variable`` exposes its
    array) is dropped, so raw-array trees and NNX states give the same paths.
    """
    keys = tuple(key_path)
    if keys and isinstance(keys[-1], jax.tree_util.GetAttrKey) and keys[-1].name == "value":
        keys = keys[:-1]
    return jax.tree_util.keystr(keys, simple=True, separator="/")


def leaf_paths(tree: PyTree) -> list[str]:
    """Returns the path of every leaf of ``tree``, in flattening order."""
    return [leaf_path(kp) for kp, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]


def _example_paths(paths: Sequence[str], limit: int = 6) -> str:
    shown = ", ".join(repr(p) for p in paths[:limit])
    more = f", ... ({len(paths)} in all)" if len(paths) > limit else ""
    return shown + more


def path_rules(
    rules: Sequence[tuple[str, Any]],
    *,
    name: str = "rules",
) -> PathRules:
    """Builds a per-leaf setting from ``[(regex, value)]`` rules over parameter paths.

    The returned function maps a params tree to a tree of the same structure whose
    leaf at path ``p`` is the ``value`` of the first rule whose pattern
    *fully* matches ``p`` (:func:`re.fullmatch`). Use it for ``mask`` (values are
    bools) or ``row_axes`` (values are tuples of axes)::

        mask = path_rules([(r"head/.*", False), (r".*", True)])
        row_axes = path_rules([(r".*pos_embedding", (1,)), (r".*", flax_row_axes)])

    A value may also be a function of ``(path, leaf)``, such as
    :func:`ftp_jax.flax_row_axes`: it is then called for each leaf the rule covers.

    Args:
      rules: ``(pattern, value)`` pairs; the first pattern that fully matches a
        leaf's path decides its value.
      name: what the rules are for, used in error messages (``"mask"``).

    Returns:
      A :class:`PathRules`: ``rules(params)`` is the tree of values (so it also
      serves as ``optax.masked``'s mask function). It is static data for JAX: it
      can be passed through ``optax.inject_hyperparams`` (as ``mask`` or
      ``row_axes`` of :func:`ftp_jax.ftp_adamw`, say) without ``static_args``.

    Raises:
      ValueError: when called, if a rule wins no leaf (it matches no path, or
        every path it matches is taken by an earlier rule), or a leaf matches no
        rule. The message lists the offending rules and paths. At construction,
        if a pattern is not a valid regular expression.
    """
    compiled = []
    for index, rule in enumerate(rules):
        if not (isinstance(rule, (tuple, list)) and len(rule) == 2):
            raise ValueError(f"`{name}` rule #{index} must be a (regex, value) pair, got {rule!r}.")
        pattern, value = rule
        try:
            compiled.append((re.compile(pattern), pattern, value))
        except (re.error, TypeError) as error:
            raise ValueError(
                f"`{name}` rule #{index} has an invalid pattern {pattern!r}: {error}."
            ) from error
    return PathRules(tuple(compiled), name)


def _is_step_count(x: Any) -> bool:
    """Whether ``x`` is an integer scalar: what ``optax.inject_hyperparams`` passes to a
    hyper-parameter it takes for a schedule (the step count), never a params tree."""
    if isinstance(x, (bool, np.bool_)):
        return False
    if isinstance(x, (int, np.integer)):
        return True
    dtype = getattr(x, "dtype", None)
    return dtype is not None and np.ndim(x) == 0 and np.issubdtype(dtype, np.integer)


class _StaticSetting:
    """A per-leaf setting object that is static data for JAX and optax.

    It is a pytree with no leaves (the object itself is the static auxiliary
    data), and calling it with a step count returns it unchanged. So
    ``optax.inject_hyperparams``, which takes every callable argument for a
    schedule, calls it with the step count and stores it in its state, gets the
    setting back as it was, and jit sees no array in it: no ``static_args``
    needed, one compilation.
    """

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        jax.tree_util.register_pytree_node(cls, lambda x: ((), x), lambda x, _: x)


class PathRules(_StaticSetting):
    """A per-leaf setting from ``[(regex, value)]`` rules: see :func:`path_rules`.

    ``rules(params)`` returns the tree of values (also usable as ``optax.masked``'s
    mask function); it is static data under jit and ``optax.inject_hyperparams``.
    """

    def __init__(self, compiled: tuple, name: str):
        self._compiled, self.name = compiled, name

    def __repr__(self) -> str:
        rules = ", ".join(f"({pattern!r}, {value!r})" for _, pattern, value in self._compiled)
        return f"ftp_jax.path_rules([{rules}], name={self.name!r})"

    def __call__(self, params: PyTree) -> PyTree:
        if _is_step_count(params):  # optax.inject_hyperparams took the rules for a schedule
            return self
        return self.resolve(params)

    def resolve(self, params: PyTree) -> PyTree:
        """The tree of values, one per leaf of ``params``; errors as :func:`path_rules`."""
        compiled, name = self._compiled, self.name
        flat, treedef = jax.tree_util.tree_flatten_with_path(params)
        paths = [leaf_path(kp) for kp, _ in flat]
        values = []
        winners = [0] * len(compiled)
        uncovered = []
        for path, (_, leaf) in zip(paths, flat, strict=True):
            for index, (regex, _, value) in enumerate(compiled):
                if regex.fullmatch(path):
                    winners[index] += 1
                    values.append(_rule_value(value, path, leaf))
                    break
            else:
                uncovered.append(path)
        problems = []
        for count, (regex, pattern, _) in zip(winners, compiled, strict=True):
            if count:
                continue
            if any(regex.fullmatch(p) for p in paths):
                problems.append(
                    f"rule {pattern!r} matches only parameters taken by an earlier "
                    "rule (first match wins); remove it or move it up"
                )
            else:
                problems.append(f"rule {pattern!r} matched no parameter")
        if uncovered:
            problems.append(
                f"no rule covers {_example_paths(uncovered)}; add a rule for them, "
                "e.g. a final ('.*', value)"
            )
        if problems:
            raise ValueError(
                f"`{name}`: "
                + "; ".join(problems)
                + f". Parameter paths look like {_example_paths(paths, 4)}."
            )
        return jax.tree_util.tree_unflatten(treedef, values)


def _rule_value(value: Any, path: str, leaf: Any) -> Any:
    """A rule's value for one leaf: constants as they are, functions of (path, leaf) called."""
    return value(path, leaf) if callable(value) else value


class LeafRule(_StaticSetting):
    """A per-leaf rule: a function of ``(path, leaf)`` returning the leaf's value.

    Called with a whole params tree, it returns the tree of values; static data
    under jit and ``optax.inject_hyperparams`` (see :class:`PathRules`).
    """

    def __init__(self, function: Callable[[str, Any], Any], name: str):
        self._function = function
        self.__name__ = name
        self.__doc__ = function.__doc__

    def __call__(self, path_or_params: Any, leaf: Any = None) -> Any:
        if leaf is None and _is_step_count(path_or_params):  # inject_hyperparams' step count
            return self
        if leaf is None and not isinstance(path_or_params, str):
            # Called on a whole params tree: return the tree of values.
            params = path_or_params
            flat, treedef = jax.tree_util.tree_flatten_with_path(params)
            values = [self._function(leaf_path(kp), x) for kp, x in flat]
            return jax.tree_util.tree_unflatten(treedef, values)
        return self._function(path_or_params, leaf)

    def __repr__(self) -> str:
        return f"ftp_jax.{self.__name__}"


def per_leaf_values(
    setting: Any,
    params: PyTree,
    *,
    name: str,
    default: Any,
) -> list[Any]:
    """Resolves a per-leaf setting to one value per leaf of ``params``.

    Args:
      setting: ``None`` (use ``default``), a tree with the params' structure whose
        leaf positions hold the values, or a function of the params returning one.
      params: the params tree (arrays, or NNX state).
      name: the argument's name, for error messages.
      default: used when ``setting`` is ``None``; a value or a function of the
        params.

    Returns:
      A list with one value per params leaf, in flattening order.

    Raises:
      ValueError: if the tree does not have the params' structure; the message
        names the missing and unexpected paths.
    """
    if setting is None:
        setting = default
    if isinstance(setting, PathRules):
        tree = setting.resolve(params)
    else:
        tree = setting(params) if callable(setting) else setting
    treedef = jax.tree_util.tree_structure(params)
    try:
        return treedef.flatten_up_to(tree)
    except (ValueError, TypeError, KeyError) as error:
        raise ValueError(
            f"`{name}` does not have the structure of the params tree. "
            + tree_difference(params, tree, name)
            + f" (details: {error})"
        ) from None


def tree_difference(params: PyTree, other: PyTree, name: str) -> str:
    """Describes how ``other``'s paths differ from the params' paths."""
    params_paths = leaf_paths(params)
    is_leaf = lambda x: isinstance(x, (bool, np.bool_, tuple)) and not _is_namedtuple(x)  # noqa: E731
    try:
        other_flat = jax.tree_util.tree_flatten_with_path(other, is_leaf=is_leaf)[0]
        other_paths = [leaf_path(kp) for kp, _ in other_flat]
    except Exception:  # noqa: BLE001 - best effort description
        other_paths = []
    missing = [p for p in params_paths if p not in set(other_paths)]
    unexpected = [p for p in other_paths if p not in set(params_paths)]
    parts = []
    if missing:
        parts.append(f"params leaves missing from `{name}`: {_example_paths(missing)}")
    if unexpected:
        parts.append(f"`{name}` paths not in params: {_example_paths(unexpected)}")
    if not parts:
        parts.append(
            f"the containers differ (params: {jax.tree_util.tree_structure(params)}; "
            f"`{name}`: {jax.tree_util.tree_structure(other, is_leaf=is_leaf)})"
        )
    return "; ".join(parts) + "."


def _is_namedtuple(x: Any) -> bool:
    return isinstance(x, tuple) and hasattr(x, "_fields")
