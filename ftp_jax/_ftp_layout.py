"""FTP's state and step in the layouts of :mod:`ftp_jax._layout`.

The math is :func:`ftp_jax._ftp.ftp_leaf_update`'s, split in three so that the
per-leaf scalars (the radius and its Adam moments) are updated as vectors, once
per dtype, between two passes over the buckets:

1. per bucket (:func:`bucket_statistics`): the displacement :math:`c_t`, its
   inverse row norms, :math:`h_t` and :math:`\\max n_t`, one per leaf;
2. per dtype (:func:`radius_adam`): the radius Adam on the vectors of
   :math:`h_t`, :math:`\\max n_t`, :math:`\\gamma`, :math:`m`, :math:`v`;
3. per bucket (:func:`bucket_projection`): the projection with the new radii.

In the ``"leaves"`` layout a bucket is one leaf, unstacked, and every operation
is the per-leaf code's (the same reductions over the same axes); in
``"buckets"`` the leaves of a bucket are stacked on a leading axis, and each
reduction runs over every axis but that one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ftp_jax import _layout
from ftp_jax._layout import Buckets, LeafScalars, StateLayout
from ftp_jax._projection import at_least_float32, radial_projection, row_sums

__all__ = ["bucket_projection", "bucket_statistics", "init_fields", "radius_adam", "update"]

PyTree = Any

# The reference's constants (GT-RIPL/FTP util/FTP.py), as in ftp_jax._ftp.
MIN_RADIUS = 1e-8
FIRST_RADIUS = float(np.float32(1e-8))  # numpy: importing ftp_jax starts no JAX backend
NORM_EPS = 1e-8
RADIUS_ADAM_EPS = 1e-8


def _frame(kept_axes: tuple[int, ...], ndim: int, stacked: bool):
    """``(kept axes, item axes)`` of a buffer: the rows' axes and the axes of one leaf
    (all axes; with ``stacked``, all but the leading bucket axis, which is kept)."""
    if not stacked:
        return kept_axes, tuple(range(ndim))
    return (0, *(a + 1 for a in kept_axes)), tuple(range(1, ndim + 1))


def item_norms(x, kept_axes, item_axes, norm: str):
    """:func:`ftp_jax.row_norms` of each leaf in ``x`` (one leaf, or a stack of leaves)."""
    if norm == "mars":
        return row_sums(jnp.abs(x), kept_axes)
    return jnp.sqrt(jnp.sum(jnp.square(x), axis=item_axes, keepdims=True))


def bucket_statistics(
    moved,
    gradient,
    anchor,
    prev_displacement,
    prev_inverse_norm,
    *,
    kept_axes,
    item_axes,
    norm,
    dtype,
    param_dtype,
):
    r"""Step 1 for one bucket: ``(c_t, 1 / n_t, h_t, max n_t)``.

    ``moved`` is :math:`\theta_{t-1} + u_t` (only this sum and the gradient are
    stacked, not the params and the updates apart), :math:`c_t = \theta_{t-1} + u_t -
    w_0`, :math:`n_t = R(c_t) + 10^{-8}`,
    :math:`h_t = \sum g_t \odot c_{t-1} / n_{t-1}` (row sums first, then scaled, as
    the reference's ``_dot``); ``h_t`` and ``max n_t`` keep the item axes as size 1.
    """
    anchor = anchor.astype(param_dtype)  # a no-op unless `anchor_dtype` is set
    prev_displacement = prev_displacement.astype(dtype)  # a no-op by default
    radius_grad = jnp.sum(
        row_sums(gradient.astype(dtype) * prev_displacement, kept_axes) * prev_inverse_norm,
        axis=item_axes,
        keepdims=True,
    )
    # c_t made to depend on h_t (a NaN h_t makes c_t NaN; otherwise no number changes):
    # orders XLA's reads of c_{t-1} before its writes of c_t, so that c_t is written in
    # place into c_{t-1}'s donated buffer (see ftp_jax._ftp.ftp_leaf_update).
    ordered_anchor = jnp.where(jnp.isnan(radius_grad), jnp.nan, anchor)
    displacement = moved - ordered_anchor
    norms = item_norms(displacement.astype(dtype), kept_axes, item_axes, norm) + NORM_EPS
    inverse_norm = 1.0 / norms
    max_norm = jnp.max(norms, axis=item_axes, keepdims=True)
    return displacement, inverse_norm, radius_grad.astype(dtype), max_norm.astype(dtype)


def radius_adam(
    radius, mu, nu, radius_grad, max_norm, *, k, step, first_step, learning_rate, b1, b2
):
    """Step 2, element-wise (vectors of one dtype): FTP's radius Adam and clip.

    The same operations, in the same order, as :func:`ftp_jax._ftp.ftp_leaf_update`.
    """
    dtype = radius.dtype
    radius_grad = jnp.where(radius_grad > 0, k * radius_grad, radius_grad)
    new_mu = b1 * mu + (1 - b1) * radius_grad
    new_nu = b2 * nu + (1 - b2) * jnp.square(radius_grad)
    mu_hat = optax.tree_utils.tree_bias_correction(new_mu, b1, step.astype(dtype))
    nu_hat = optax.tree_utils.tree_bias_correction(new_nu, b2, step.astype(dtype))
    new_radius = radius - learning_rate * mu_hat / (jnp.sqrt(nu_hat) + RADIUS_ADAM_EPS)
    new_radius = jnp.clip(new_radius, MIN_RADIUS, max_norm)
    new_radius = jnp.where(first_step, jnp.asarray(FIRST_RADIUS, dtype), new_radius)
    new_mu = jnp.where(first_step, mu, new_mu)
    new_nu = jnp.where(first_step, nu, new_nu)
    return new_radius, new_mu, new_nu


def bucket_projection(
    anchor, displacement, inverse_norm, radius, *, kept_axes, stored_dtype, param_dtype
):
    r"""Step 3 for one bucket: :math:`\theta_t = w_0 + \mathrm{clip}(\gamma_t / n_t, 0, 1)
    c_t`; returns ``(theta_t, stored displacement)``. ``radius`` has the item axes as
    size 1. Each leaf's update is then ``(theta_t - theta_{t-1})`` in its update's dtype
    (per leaf, where XLA fuses it into the step that applies it)."""
    anchor = anchor.astype(param_dtype)
    projected_displacement, _ = radial_projection(
        displacement, radius, kept_axes, inverse_norm=inverse_norm
    )
    projected = anchor + projected_displacement
    return projected, displacement.astype(stored_dtype)


# --- init --------------------------------------------------------------------------


def init_fields(
    params: PyTree,
    plans: Sequence[Any],
    kind: str,
    anchor_tree: PyTree,
    *,
    norm: str,
    displacement_dtype: Any,
) -> dict[str, Any]:
    """FTP's state fields ``anchor`` .. ``prev_inverse_norm`` in layout ``kind``.

    ``anchor_tree`` is the anchor to keep (a copy, in its storage dtype, with
    ``optax.MaskedNode`` at excluded leaves: :func:`ftp_jax._skeleton.anchor_tree`).
    """
    layout = _layout.make_layout(params, plans, kind)
    if layout.empty:  # tree_map_params's placeholder: params-shaped fields stay params-shaped
        same = jax.tree_util.tree_map(lambda x: x, params)
        empty = _layout.empty_field()
        return dict(
            anchor=anchor_tree if kind == "leaves" else empty,
            radius=empty,
            radius_mu=empty,
            radius_nu=empty,
            prev_displacement=same if kind == "leaves" else empty,
            prev_inverse_norm=same if kind == "leaves" else empty,
        )
    treedef = jax.tree_util.tree_structure(params)
    flat = treedef.flatten_up_to(params)
    flat_anchor = treedef.flatten_up_to(anchor_tree)
    anchors, displacements, inverse_norms = [], [], []
    for bucket, members in enumerate(layout.buckets):
        plan = plans[members[0]]
        param = _layout.stack(layout, bucket, flat)
        ndim = jnp.ndim(flat[members[0]])
        kept, items = _frame(plan.kept_axes, ndim, layout.stacked)
        dtype = at_least_float32(jnp.result_type(param))
        anchors.append(
            flat_anchor[members[0]]
            if not layout.stacked
            else _layout.stack(layout, bucket, flat_anchor)
        )
        displacements.append(jnp.zeros_like(param, dtype=displacement_dtype))
        norms_shape = jax.eval_shape(
            lambda x, kept=kept, items=items: item_norms(x, kept, items, norm),
            jax.ShapeDtypeStruct(jnp.shape(param), dtype),
        ).shape
        inverse_norms.append(jnp.zeros(norms_shape, dtype))
    if layout.stacked:
        inverse_norms = [
            _layout.constrain(layout, b, x, like=jnp.shape(d))
            for b, (x, d) in enumerate(zip(inverse_norms, displacements, strict=True))
        ]
        displacements = [_layout.constrain(layout, b, x) for b, x in enumerate(displacements)]
    zeros = LeafScalars.full(layout)
    return dict(
        anchor=anchor_tree if not layout.stacked else Buckets(anchors, layout),
        radius=zeros,
        radius_mu=LeafScalars.full(layout),
        radius_nu=LeafScalars.full(layout),
        prev_displacement=_layout.buffers_field(layout, displacements, treedef),
        prev_inverse_norm=_layout.buffers_field(layout, inverse_norms, treedef),
    )


# --- update ------------------------------------------------------------------------


def state_layout(radius: Any, method: str = "FTP") -> StateLayout | None:
    """The layout recorded in a state's ``radius`` field (``None`` for empty params)."""
    if isinstance(radius, LeafScalars):
        return radius.layout
    if hasattr(radius, "shape") and jnp.shape(radius) == (0,):
        return None
    raise ValueError(
        f"The {method} state holds its radii as {type(radius).__name__}, not in this "
        "version's layout (one vector per dtype, ftp_jax._layout.LeafScalars): it was "
        "made by an older ftp_jax (e.g. restored from an old checkpoint). Initialize a new "
        "state with tx.init(params), or restore the checkpoint with the ftp_jax version "
        "that wrote it."
    )


def update(
    gradients: PyTree,
    base_updates: PyTree,
    params: PyTree,
    plans: Sequence[Any],
    state: Any,
    *,
    norm: str,
    k: Any,
    step: Any,
    first_step: Any,
    learning_rate: Any,
    b1: Any,
    b2: Any,
    method: str = "FTP",
    stacked_base: Sequence[Any] | None = None,
) -> tuple[PyTree, dict[str, Any]]:
    """One FTP step in the state's layout.

    Args:
      state: the FTP state (read by name: ``anchor``, ``radius``, ``radius_mu``,
        ``radius_nu``, ``prev_displacement``, ``prev_inverse_norm``).
      stacked_base: the base optimizer's updates of the buckets, stacked (it ran on
        them: ``bucket_base``); ``base_updates`` then serves the excluded leaves.

    Returns:
      ``(updates like the params, new fields)``: the fields that the step changes
      (all but ``anchor``) by name, as :func:`init_fields` names them; none for
      params without leaves.

    Raises:
      ValueError: params of another structure, or a ``mask`` that changed since
        ``init`` (naming the leaf).
    """
    anchor, radius = state.anchor, state.radius
    layout = state_layout(radius, method)
    if layout is None:  # no params leaves
        return base_updates, {}
    treedef = jax.tree_util.tree_structure(params)
    # Leaf counts, not tree structures: nnx.Optimizer initializes with Variables and
    # updates with their values.
    if treedef.num_leaves != layout.treedef.num_leaves:
        raise ValueError(
            f"The params have {treedef.num_leaves} leaves, but the {method} state was "
            f"initialized with params of {layout.treedef.num_leaves}; was it initialized "
            "with other params?"
        )
    for plan, constrained in zip(plans, layout.constrained, strict=True):
        if plan.constrained != constrained:
            raise ValueError(
                f"`mask` at {plan.path!r} is {plan.constrained} now but was {constrained} "
                f"when the {method} state was initialized; the mask must not change between "
                "init and update."
            )
    flat_params = treedef.flatten_up_to(params)
    flat_grads = treedef.flatten_up_to(gradients)
    flat_base = treedef.flatten_up_to(base_updates)
    anchors = _layout.bucket_buffers(layout, anchor, "anchor", treedef)
    displacements = _layout.bucket_buffers(layout, state.prev_displacement, "displacement", treedef)
    inverse_norms = _layout.bucket_buffers(layout, state.prev_inverse_norm, "inverse norm", treedef)

    flat_moved = [  # theta_{t-1} + u_t at the constrained leaves
        p + u if constrained else None
        for p, u, constrained in zip(flat_params, flat_base, layout.constrained, strict=True)
    ]
    statistics, frames, param_dtypes = [], [], []
    for bucket, members in enumerate(layout.buckets):
        plan = plans[members[0]]
        if stacked_base is None:
            moved = _layout.stack(layout, bucket, flat_moved)
        else:  # the params stacked plus the base's stacked update: no per-leaf sums
            moved = _layout.stack(layout, bucket, flat_params) + stacked_base[bucket]
        gradient = _layout.stack(layout, bucket, flat_grads)
        param_dtype = jnp.result_type(flat_params[members[0]])
        ndim = jnp.ndim(flat_params[members[0]])
        kept, items = _frame(plan.kept_axes, ndim, layout.stacked)
        dtype = jnp.dtype(layout.groups[layout.bucket_groups[bucket]])
        statistics.append(
            bucket_statistics(
                moved,
                gradient,
                anchors[bucket],
                displacements[bucket],
                inverse_norms[bucket],
                kept_axes=kept,
                item_axes=items,
                norm=norm,
                dtype=dtype,
                param_dtype=param_dtype,
            )
        )
        frames.append((kept, items))
        param_dtypes.append(param_dtype)

    radius_grads = _layout.scalars_from_buckets(layout, [s[2] for s in statistics])
    max_norms = _layout.scalars_from_buckets(layout, [s[3] for s in statistics])
    new = [
        radius_adam(
            r,
            m,
            v,
            h,
            n,
            k=k,
            step=step,
            first_step=first_step,
            learning_rate=learning_rate,
            b1=b1,
            b2=b2,
        )
        for r, m, v, h, n in zip(
            radius.vectors,
            state.radius_mu.vectors,
            state.radius_nu.vectors,
            radius_grads.vectors,
            max_norms.vectors,
            strict=True,
        )
    ]
    new_radius = LeafScalars([x[0] for x in new], layout)
    new_mu = LeafScalars([x[1] for x in new], layout)
    new_nu = LeafScalars([x[2] for x in new], layout)

    flat_updates = list(flat_base)  # excluded leaves: the base optimizer's update
    new_displacements, new_inverse_norms = [], []
    for bucket, (stats, (kept, _), param_dtype) in enumerate(
        zip(statistics, frames, param_dtypes, strict=True)
    ):
        displacement, inverse_norm = stats[0], stats[1]
        bucket_radius = _layout.bucket_scalars(layout, new_radius, bucket)
        bucket_radius = jnp.reshape(bucket_radius, jnp.shape(stats[2]))
        projected, stored = bucket_projection(
            anchors[bucket],
            displacement,
            inverse_norm,
            bucket_radius,
            kept_axes=kept,
            stored_dtype=displacements[bucket].dtype,
            param_dtype=param_dtype,
        )
        for index, value in _layout.unstack(layout, bucket, projected):
            flat_updates[index] = (value - flat_params[index]).astype(flat_base[index].dtype)
        new_displacements.append(stored)
        new_inverse_norms.append(inverse_norm)
    return treedef.unflatten(flat_updates), dict(
        radius=new_radius,
        radius_mu=new_mu,
        radius_nu=new_nu,
        prev_displacement=_layout.buffers_field(layout, new_displacements, treedef),
        prev_inverse_norm=_layout.buffers_field(layout, new_inverse_norms, treedef),
    )


# --- the base optimizer on the buckets (option `bucket_base`) ---------------------------


def _bucket_layout(radius: Any, enabled: bool) -> StateLayout | None:
    """The state's layout when the base optimizer runs on its buckets, else ``None``."""
    if enabled and isinstance(radius, LeafScalars) and radius.layout.stacked:
        return radius.layout
    return None


def base_on_buckets(radius: Any, enabled: bool) -> bool:
    """Whether the base optimizer runs on the buckets (``bucket_base`` in ``"buckets"``)."""
    return _bucket_layout(radius, enabled) is not None


def base_view(radius: Any, tree: PyTree, params: PyTree, enabled: bool) -> PyTree:
    """What the base optimizer sees of ``tree`` (params, gradients): ``tree`` itself, or
    with ``enabled`` in the ``"buckets"`` layout ``(stacked buckets, excluded leaves)``:
    a list of one stacked array per bucket and a list of the excluded leaves."""
    layout = _bucket_layout(radius, enabled)
    if layout is None:
        return tree
    flat = jax.tree_util.tree_structure(params).flatten_up_to(tree)
    stacked = [_layout.stack(layout, b, flat) for b in range(len(layout.buckets))]
    excluded = [x for x, c in zip(flat, layout.constrained, strict=True) if not c]
    return stacked, excluded


def base_unview(radius: Any, view: PyTree, params: PyTree, enabled: bool) -> PyTree:
    """The inverse of :func:`base_view`: a tree like ``params``."""
    layout = _bucket_layout(radius, enabled)
    if layout is None:
        return view
    stacked, excluded = view
    flat: list[Any] = [None] * len(layout.constrained)
    for bucket, value in enumerate(stacked):
        for index, leaf in _layout.unstack(layout, bucket, value):
            flat[index] = leaf
    rest = iter(excluded)
    flat = [next(rest) if not c else x for x, c in zip(flat, layout.constrained, strict=True)]
    return jax.tree_util.tree_structure(params).unflatten(flat)
