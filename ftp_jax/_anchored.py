"""Checks and helpers shared by the transforms that keep an anchor (the peer methods).

FTP (:mod:`ftp_jax._ftp`) spells these out inline; the peer methods (L2-SP,
MARS-PGM, SPD, LP-FT, WiSE-FT) share them here so that their arguments fail
with the same messages as :func:`ftp_jax.ftp`'s.
"""

from __future__ import annotations

import numbers
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ftp_jax._paths import tree_difference
from ftp_jax._plan import LeafPlan, check_anchor, masked_like

__all__ = [
    "check_base_optimizer",
    "require_params",
    "anchor_state",
    "check_mask_unchanged",
    "check_nonnegative",
    "flat_anchor",
]

PyTree = Any


def check_base_optimizer(
    base_optimizer: Any, method: str, argument: str = "base_optimizer"
) -> optax.GradientTransformationExtraArgs:
    """``base_optimizer`` with extra-args support; a TypeError if it is not a transform."""
    if not isinstance(base_optimizer, optax.GradientTransformation):
        raise TypeError(
            f"{method}: `{argument}` must be an optax GradientTransformation such as "
            f"optax.sgd(1e-2), got {type(base_optimizer).__name__}."
        )
    return optax.with_extra_args_support(base_optimizer)


def require_params(params: Any, method: str) -> None:
    """A ValueError if ``update`` was called without the params."""
    if params is None:
        raise ValueError(
            f"{method} needs the current params: call `tx.update(grads, state, params)`."
        )


def anchor_state(params: PyTree, anchor: PyTree | None, plans: list[LeafPlan]) -> PyTree:
    """The anchor to keep in a state: a copy of ``anchor`` (default: ``params``) at the
    constrained leaves, ``optax.MaskedNode`` at the others.

    A copy, so that donating params to a jitted step never frees the anchor.

    Raises:
      ValueError: an explicit ``anchor`` that does not fit ``params`` (naming the leaf).
    """
    if anchor is not None:
        check_anchor(anchor, params)
    source = params if anchor is None else anchor
    return masked_like(source, plans, lambda a, _: jnp.array(a, copy=True))


def check_mask_unchanged(plan: LeafPlan, stored: Any, method: str) -> None:
    """A ValueError if ``mask`` changed between ``init`` and ``update`` at this leaf."""
    if plan.constrained == isinstance(stored, optax.MaskedNode):
        raise ValueError(
            f"`mask` at {plan.path!r} is {plan.constrained} now but was "
            f"{not plan.constrained} when the {method} state was initialized; the "
            "mask must not change between init and update."
        )


def check_nonnegative(name: str, value: Any, method: str) -> Any:
    """``value`` if it is a real number >= 0 (a traced value passes), else a ValueError."""
    if isinstance(value, jax.core.Tracer):
        return value
    ok = not isinstance(value, bool) and (
        isinstance(value, numbers.Real) or (hasattr(value, "dtype") and np.ndim(value) == 0)
    )
    if ok:
        number = float(value)
        ok = bool(np.isfinite(number)) and number >= 0.0
    if not ok:
        raise ValueError(f"{method}: `{name}` must be a finite number >= 0, got {value!r}.")
    return value


def flat_anchor(params: PyTree, anchor: PyTree, plans: list[LeafPlan]) -> list[Any]:
    """``anchor``'s values at the params' leaf positions, checked where constrained.

    Excluded leaves are not read: the anchor may hold anything there (``None``, or
    a pre-trained head of another shape).

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
