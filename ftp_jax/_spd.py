"""SPD, Selective Projection Decay: a decay toward the anchor, on selected layers only."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax.numpy as jnp
import optax

from ftp_jax._skeleton import (
    MaskOrFn,
    anchor_tree,
    base_update,
    check_base_optimizer,
    check_nonnegative,
    check_update_trees,
    is_params_placeholder,
    leaf_plans,
    map_leaves,
    radius_dtype,
    require_params,
)

__all__ = ["SPDState", "spd", "spd_leaf_update"]

PyTree = Any


class SPDState(NamedTuple):
    """State of :func:`spd`."""

    anchor: PyTree  # like params: w0 at constrained leaves; optax.MaskedNode at excluded
    # ones, whose anchor is the origin (0).
    base_state: optax.OptState  # state of the wrapped base optimizer.


def spd_leaf_update(gradient, base_update, param, anchor, strength):
    r"""SPD's update of one leaf (a pure function of arrays; ``anchor=None`` means 0).

    .. math::

      \tilde\theta &= \theta + u, \qquad
      c = -\textstyle\sum g \odot (\theta - w_0) \\
      r &= \operatorname{clip}\Big(\frac{\lVert \tilde\theta - w_0 \rVert_2
        - \lVert \theta - w_0 \rVert_2}{\lVert \tilde\theta - w_0 \rVert_2}, 0, 1\Big)
        \quad (r = 0 \text{ if } \lVert \tilde\theta - w_0 \rVert_2 = 0) \\
      u &\leftarrow u - [c < 0]\, \lambda r (\tilde\theta - w_0)

    Args:
      gradient: :math:`g`, the raw gradient of the leaf.
      base_update: :math:`u`, the base optimizer's update of the leaf.
      param: :math:`\theta`, the leaf before the step.
      anchor: :math:`w_0`, or ``None`` for the origin (a leaf without a pre-trained
        value).
      strength: :math:`\lambda`.

    Returns:
      ``(update, decayed)``: the new update and whether the decay applied (bool []).
    """
    dtype = radius_dtype(param)
    moved = param + base_update
    previous = param if anchor is None else param - anchor
    displacement = moved if anchor is None else moved - anchor
    condition = -jnp.sum(gradient.astype(dtype) * previous.astype(dtype))
    new_norm = jnp.sqrt(jnp.sum(jnp.square(displacement.astype(dtype))))
    old_norm = jnp.sqrt(jnp.sum(jnp.square(previous.astype(dtype))))
    positive = new_norm > 0
    ratio = jnp.clip((new_norm - old_norm) / jnp.where(positive, new_norm, 1.0), 0.0, 1.0)
    ratio = jnp.where(positive, ratio, 0.0)
    decayed = condition < 0
    scale = jnp.where(decayed, strength * ratio, 0.0).astype(param.dtype)
    return (base_update - scale * displacement).astype(base_update.dtype), decayed


def spd(
    base_optimizer: optax.GradientTransformation,
    strength: float = 1.0,
    *,
    mask: MaskOrFn = None,
    anchor: PyTree | None = None,
    decay_excluded: bool = True,
) -> optax.GradientTransformationExtraArgs:
    r"""Selective Projection Decay around a base optimizer.

    After the base optimizer's step, a leaf (a layer) whose gradient does not
    point along its progress away from the anchor is pulled back toward the
    anchor, in proportion to how much farther from it the step took it. Symbols:
    :math:`g` = the gradient passed to ``update``, :math:`\theta` = ``params``
    (before the step), :math:`u` = the base optimizer's update, :math:`w_0` =
    ``anchor``, :math:`\lambda` = ``strength``; norms are L2 over the whole leaf.

    .. math::

      \tilde\theta &= \theta + u, \qquad
      c = -\textstyle\sum g \odot (\theta - w_0) \\
      r &= \operatorname{clip}\Big(\frac{\lVert \tilde\theta - w_0 \rVert
        - \lVert \theta - w_0 \rVert}{\lVert \tilde\theta - w_0 \rVert}, 0, 1\Big) \\
      \theta_{\text{new}} &= \tilde\theta - \lambda r (\tilde\theta - w_0)
        \text{ if } c < 0, \text{ else } \tilde\theta

    With :math:`\lambda = 1` a selected step ends on the sphere of the previous
    distance, :math:`\lVert \theta_{\text{new}} - w_0 \rVert = \lVert \theta - w_0 \rVert`:
    the step may turn but not move away from the anchor.

    .. note::
      As the authors' code (GT-RIPL/Selective-Projection-Decay ``adamSPD.py``),
      the condition uses the raw gradient and the params before the step, the
      ratio the params after it; leaves with no pre-trained value (their
      ``pre`` is None there; here the excluded leaves) decay toward the origin,
      i.e. selective weight decay. One difference: where
      :math:`\lVert \tilde\theta - w_0 \rVert = 0` the reference divides by zero
      (NaN params); here :math:`r = 0` (nothing to decay). The reference builds
      SPD into Adam (``AdamSPD``); here it wraps any base optimizer.

    Args:
      base_optimizer: the optimizer to wrap, e.g. ``optax.adam(1e-3)`` (the
        paper's choice, without weight decay of its own) or SGD.
      strength: :math:`\lambda \ge 0`, the paper's weight-decay hyper-parameter
        (the reference passes it as ``weight_decay``). 0 is the base optimizer.
      mask: which leaves have a pre-trained value (True: decay toward it) and
        which do not (False, e.g. a new head: decay toward 0, or no decay with
        ``decay_excluded=False``); as in :func:`ftp_jax.ftp`. Default: every leaf.
      anchor: the pre-trained params. Default: the params passed to ``init``.
      decay_excluded: apply the selective decay toward 0 to the excluded leaves
        (the reference's behavior, default), or let them follow the base
        optimizer exactly (False).

    Returns:
      An ``optax.GradientTransformationExtraArgs``; ``update`` requires ``params``.
      Extra keyword arguments are passed on to the base optimizer.

    Raises:
      TypeError: ``base_optimizer`` is not a GradientTransformation; a constrained
        leaf that is not floating point.
      ValueError: a negative ``strength``; a ``mask`` or ``anchor`` that does not
        fit the params, a mask that changed since ``init``, ``update`` without
        ``params``.

    Example:
      >>> import jax.numpy as jnp, optax, ftp_jax
      >>> tx = ftp_jax.spd(optax.sgd(1.0), strength=1.0)
      >>> state = tx.init({"w": jnp.zeros(2)})  # anchor at 0
      >>> # theta = (1, 0); the gradient (-1, 0) points away from the anchor: c = 1 > 0.
      >>> tx.update({"w": jnp.array([-1.0, 0.0])}, state, {"w": jnp.array([1.0, 0.0])})[0]
      {'w': Array([ 1., -0.], dtype=float32)}
      >>> # The gradient (1, -2) disagrees (c = -1 < 0): the step to (0, 2) is
      >>> # pulled back to the previous distance 1, r = (2 - 1) / 2.
      >>> tx.update({"w": jnp.array([1.0, -2.0])}, state, {"w": jnp.array([1.0, 0.0])})[0]
      {'w': Array([-1.,  1.], dtype=float32)}

    References:
      Tian, Huang, Kira, "Rethinking Weight Decay for Robust Fine-Tuning of
      Foundation Models", NeurIPS 2024, arXiv:2411.01713.
    """
    check_nonnegative("strength", strength, "SPD")
    base_optimizer = check_base_optimizer(base_optimizer, "spd")

    def init_fn(params):
        if is_params_placeholder(params):  # optax.tree_utils.tree_map_params
            return SPDState(anchor=params, base_state=base_optimizer.init(params))
        plans = leaf_plans(params, mask, None, method="SPD")
        return SPDState(
            anchor=anchor_tree(params, anchor, plans), base_state=base_optimizer.init(params)
        )

    def update_fn(updates, state, params=None, **extra_args):
        require_params(params, "spd")
        check_update_trees("spd", params, updates, state.anchor)
        base_updates, base_state = base_update(
            base_optimizer, updates, state.base_state, params, "spd", **extra_args
        )

        def constrained(plan, param, gradient, base_update, anchor):
            update, _ = spd_leaf_update(gradient, base_update, param, anchor, strength)
            return (update,)

        def excluded(plan, param, gradient, base_update, anchor):
            # Decayed toward 0 (no pre-trained value), unless asked not to or not a float.
            if not decay_excluded or not jnp.issubdtype(jnp.result_type(param), jnp.floating):
                return (base_update,)
            update, _ = spd_leaf_update(gradient, base_update, param, None, strength)
            return (update,)

        (new_updates,) = map_leaves(
            constrained,
            leaf_plans(params, mask, None, method="SPD"),
            params,
            {"gradient": updates, "base_update": base_updates},
            {"anchor": state.anchor},
            excluded_fn=excluded,
            method="SPD",
        )
        return new_updates, state._replace(base_state=base_state)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)
