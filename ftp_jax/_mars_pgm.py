"""MARS-PGM: projection onto a ball of fixed, user-given radius around the anchor."""

from __future__ import annotations

import functools
import numbers
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ftp_jax._paths import per_leaf_values
from ftp_jax._projection import radial_projection
from ftp_jax._skeleton import (
    LeafPlan,
    MaskOrFn,
    anchor_tree,
    base_update,
    check_base_optimizer,
    check_nonnegative,
    check_norm,
    check_update_trees,
    given_anchor,
    is_params_placeholder,
    leaf_plans,
    map_leaves,
    require_params,
)

__all__ = ["MarsPGMState", "mars_pgm", "project_fixed_radius"]

PyTree = Any
RadiusOrFn = float | PyTree


class MarsPGMState(NamedTuple):
    """State of :func:`mars_pgm`: the anchor and the base optimizer's state (no radius:
    it is a constant of the transform)."""

    anchor: PyTree  # like params: w0 at constrained leaves, optax.MaskedNode at excluded ones.
    base_state: optax.OptState  # state of the wrapped base optimizer.


def _is_scalar(value: Any) -> bool:
    if isinstance(value, jax.core.Tracer):
        return value.ndim == 0
    if isinstance(value, bool):
        return False
    return isinstance(value, numbers.Real) or (hasattr(value, "dtype") and np.ndim(value) == 0)


def _leaf_radii(radius: RadiusOrFn, params: PyTree, plans: list[LeafPlan]) -> PyTree:
    """The radii as a state tree (``optax.MaskedNode`` where excluded), checked at the
    constrained leaves."""
    if _is_scalar(radius):
        values = [radius] * len(plans)
    else:
        values = per_leaf_values(radius, params, name="radius", default=None)
    radii = []
    for plan, value in zip(plans, values, strict=True):
        if not plan.constrained:
            radii.append(optax.MaskedNode())
            continue
        try:
            radii.append(check_nonnegative("radius", value, "MARS-PGM"))
        except ValueError:
            raise ValueError(
                f"MARS-PGM: `radius` at {plan.path!r} must be a finite number >= 0 (one "
                f"radius per constrained leaf), got {value!r}."
            ) from None
    return jax.tree_util.tree_structure(params).unflatten(radii)


def _project_leaf(plan: LeafPlan, param, anchor, radius, norm):
    """``w0 + clip(radius / R(param - w0), 0, 1) (param - w0)``, rows inside untouched.

    :func:`ftp_jax.radial_projection` with no epsilon. Returns ``(projected,
    outside)``: ``outside`` marks the rows (reduced axes of size 1) that left the
    ball (ratio below 1); the others are ``param`` bit for bit.
    """
    scaled, ratio = radial_projection(param - anchor, radius, plan.kept_axes, norm)
    outside = ratio < 1
    projected = jnp.where(outside, anchor.astype(scaled.dtype) + scaled, param)
    return projected.astype(param.dtype), outside


def mars_pgm_leaf_update(plan: LeafPlan, param, base_update, anchor, radius, *, norm: str):
    r"""MARS-PGM's step of one constrained leaf: the base step, projected.

    .. math::

      c_t = \theta_{t-1} + u_t - w_0, \qquad
      \theta_t = w_0 + \operatorname{clip}\big(\gamma / R(c_t), 0, 1\big)\, c_t

    Rows inside the ball keep the base update itself (not ``(p + u) - p``).
    """
    projected, outside = _project_leaf(plan, param + base_update, anchor, radius, norm)
    return (jnp.where(outside, projected - param, base_update).astype(base_update.dtype),)


def project_fixed_radius(
    params: PyTree,
    anchor: PyTree,
    radius: RadiusOrFn,
    *,
    mask: MaskOrFn = None,
    row_axes: MaskOrFn = None,
    norm: str = "mars",
) -> PyTree:
    r"""Projects every constrained leaf onto the ball of a fixed radius around its anchor.

    Row by row (``R`` = :func:`ftp_jax.row_norms` over ``row_axes``):

    .. math::

      P(\theta) = w_0 + \operatorname{clip}\big(\gamma / R(\theta - w_0), 0, 1\big)
        (\theta - w_0)

    a radial rescale (as in FTP and TPGM), not the Euclidean projection onto an
    L1 ball. Rows whose norm is at most :math:`\gamma` are returned unchanged,
    bit for bit; rows outside end with norm :math:`\gamma`.

    Args:
      params: :math:`\theta`.
      anchor: :math:`w_0`, the same structure (values at excluded leaves unread).
      radius: :math:`\gamma \ge 0`: one number for every constrained leaf, a tree
        with a number at each constrained leaf, or a function of the params
        returning one (e.g. :func:`ftp_jax.path_rules` with name ``"radius"``).
      mask, row_axes, norm: as in :func:`ftp_jax.ftp`.

    Returns:
      The projected params; excluded leaves unchanged.

    Raises:
      ValueError: a negative or missing radius at a constrained leaf, an unknown
        ``norm``, or a ``mask``/``row_axes``/``anchor`` that does not fit.
    """
    check_norm(norm)
    plans = leaf_plans(params, mask, row_axes, method="MARS-PGM")
    radii = _leaf_radii(radius, params, plans)
    (projected,) = map_leaves(
        lambda plan, param, anchor, radius: (_project_leaf(plan, param, anchor, radius, norm)[0],),
        plans,
        params,
        state={"anchor": given_anchor(params, anchor, plans), "radius": radii},
        excluded_fn=lambda plan, param, anchor, radius: (param,),
        method="MARS-PGM",
    )
    return projected


def mars_pgm(
    base_optimizer: optax.GradientTransformation,
    radius: RadiusOrFn,
    *,
    mask: MaskOrFn = None,
    row_axes: MaskOrFn = None,
    norm: str = "mars",
    anchor: PyTree | None = None,
) -> optax.GradientTransformationExtraArgs:
    r"""MARS-PGM: the base optimizer, then a projection onto a ball of fixed radius.

    After every step of ``base_optimizer``, each row of each constrained leaf is
    rescaled back onto the ball of radius :math:`\gamma` around its pre-trained
    value when it has left it: FTP's projection with a constant, user-given radius
    in place of FTP's learned one. Symbols: :math:`u_t` = the base optimizer's
    update, :math:`w_0` = ``anchor``, :math:`R` = :func:`ftp_jax.row_norms` with
    ``norm`` over the ``row_axes``.

    .. math::

      c_t &= \theta_{t-1} + u_t - w_0 \\
      \theta_t &= w_0 + \operatorname{clip}\big(\gamma / R(c_t), 0, 1\big)\, c_t

    With the MARS norm (per-row L1, the default) the constraint bounds the MARS
    norm (the maximum absolute row sum) of :math:`\theta - w_0`; ``norm="l2"``
    bounds the whole tensor's L2 (Frobenius) distance, the paper's L2-PGM. Rows
    inside the ball, and excluded leaves, follow the base optimizer exactly.

    .. note::
      The paper projects onto the MARS ball with this radial rescale of each row
      (as FTP and TPGM do), not the Euclidean projection onto an L1 ball, and
      tunes the radius per layer type on validation data; here ``radius`` is one
      number, or per leaf by a tree or :func:`ftp_jax.path_rules`. No epsilon is
      added to the norms (FTP adds 1e-8): rows exactly on the sphere are inside.

    Args:
      base_optimizer: the optimizer whose step is projected, e.g.
        ``optax.sgd(1e-2, momentum=0.9)``. Its state is nested in
        :class:`MarsPGMState`.
      radius: :math:`\gamma \ge 0`, in the units of the norm (per-row L1 for
        ``"mars"``): one number for every constrained leaf, a tree with a number at
        each constrained leaf, or a function of the params returning one, e.g.
        ``ftp_jax.path_rules([(r"dense/.*", 1.0), (r".*", 0.5)], name="radius")``.
        0 pins a leaf to its anchor.
      mask: which leaves are projected (True) or follow the base optimizer
        untouched (False, e.g. a new head); as in :func:`ftp_jax.ftp`.
      row_axes: per leaf, the axes kept as rows; as in :func:`ftp_jax.ftp`.
      norm: ``"mars"`` (per-row L1) or ``"l2"`` (whole-tensor L2).
      anchor: the pre-trained params. Default: the params passed to ``init``.

    Returns:
      An ``optax.GradientTransformationExtraArgs``; ``update`` requires ``params``.
      Extra keyword arguments are passed on to the base optimizer.

    Raises:
      TypeError: ``base_optimizer`` is not a GradientTransformation; a constrained
        leaf that is not floating point.
      ValueError: an unknown ``norm``; a negative radius (at construction for a
        number, else at ``init``, naming the leaf); a ``mask``, ``row_axes``,
        ``radius`` or ``anchor`` that does not fit the params.

    Example:
      >>> import jax.numpy as jnp, optax, ftp_jax
      >>> params = {"dense": {"kernel": jnp.zeros((2, 2))}}  # rows: last axis
      >>> tx = ftp_jax.mars_pgm(optax.sgd(1.0), radius=0.5)
      >>> state = tx.init(params)
      >>> grads = {"dense": {"kernel": -jnp.array([[0.1, 2.0], [0.2, 0.0]])}}
      >>> updates, state = tx.update(grads, state, params)
      >>> updates["dense"]["kernel"]  # column 0 (L1 0.3) kept, column 1 (L1 2) -> 0.5
      Array([[0.1, 0.5],
             [0.2, 0. ]], dtype=float32)

    References:
      Gouk, Hospedales, Pontil, "Distance-Based Regularisation of Deep Networks
      for Fine-Tuning", ICLR 2021, arXiv:2002.08253.
    """
    check_norm(norm)
    if _is_scalar(radius) or isinstance(radius, bool):
        check_nonnegative("radius", radius, "MARS-PGM")
    base_optimizer = check_base_optimizer(base_optimizer, "mars_pgm")

    def init_fn(params):
        if is_params_placeholder(params):  # optax.tree_utils.tree_map_params
            return MarsPGMState(anchor=params, base_state=base_optimizer.init(params))
        plans = leaf_plans(params, mask, row_axes, method="MARS-PGM")
        _leaf_radii(radius, params, plans)  # fails at init for a bad radius
        return MarsPGMState(
            anchor=anchor_tree(params, anchor, plans), base_state=base_optimizer.init(params)
        )

    def update_fn(updates, state, params=None, **extra_args):
        require_params(params, "mars_pgm")
        check_update_trees("mars_pgm", params, updates, state.anchor)
        base_updates, base_state = base_update(
            base_optimizer, updates, state.base_state, params, "mars_pgm", **extra_args
        )
        plans = leaf_plans(params, mask, row_axes, method="MARS-PGM")
        radii = _leaf_radii(radius, params, plans)
        (new_updates,) = map_leaves(
            functools.partial(mars_pgm_leaf_update, norm=norm),
            plans,
            params,
            {"base_update": base_updates},
            {"anchor": state.anchor, "radius": radii},
            excluded_fn=lambda plan, param, base_update, anchor, radius: (base_update,),
            method="MARS-PGM",
        )
        return new_updates, state._replace(base_state=base_state)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)
