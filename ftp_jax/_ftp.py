"""FTP, Fast Trainable Projection, as an Optax transform wrapping a base optimizer."""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ftp_jax import _ftp_layout
from ftp_jax._base_optimizers import torch_sgd
from ftp_jax._layout import check_layout, resolve_layout
from ftp_jax._projection import radial_projection, row_norms, row_sums
from ftp_jax._readouts import radii, radius_state
from ftp_jax._skeleton import (
    NOT_PARAMS,
    LeafPlan,
    MaskOrFn,
    anchor_tree,
    base_update,
    check_base_optimizer,
    check_nonnegative,
    check_norm,
    check_update_trees,
    is_params_placeholder,
    leaf_plans,
    require_params,
)

__all__ = ["FTPState", "ftp", "ftp_radii", "ftp_adamw", "ftp_sgd"]

PyTree = Any

# The reference's constants (GT-RIPL/FTP util/FTP.py).
MIN_RADIUS = 1e-8  # lower clip of the radius
# Radius at step 1: the reference creates it as `torch.tensor(1e-8)`, a float32, so
# it is float32(1e-8) = 9.99999994e-09 even when the params are float64.
FIRST_RADIUS = float(np.float32(1e-8))
NORM_EPS = 1e-8  # added to every row norm
RADIUS_ADAM_EPS = 1e-8  # epsilon of the radius hyper-optimizer (Adam)


class FTPState(NamedTuple):
    """State of :func:`ftp`.

    Trees with the params' structure hold :class:`optax.MaskedNode` at the leaves
    that ``mask`` excludes: excluded leaves keep no anchor and no radius. The
    per-leaf scalars are one vector per dtype (:class:`ftp_jax._layout.LeafScalars`;
    read them as a tree with :func:`ftp_radii`); with ``layout="buckets"`` the
    parameter-sized buffers are stacked per bucket of same-shape leaves
    (:class:`ftp_jax._layout.Buckets`; ``.tree()`` unstacks them).
    """

    count: jax.Array  # int32 [], FTP steps taken so far (the reference's t - 1).
    # Like params, or Buckets (dtype `anchor_dtype` if given): the pre-trained values w0.
    anchor: PyTree
    # LeafScalars: one float vector per radius dtype, an element per constrained leaf:
    radius: PyTree  # gamma_t, 0 before step 1.
    radius_mu: PyTree  # first moment of the radius Adam.
    radius_nu: PyTree  # second moment of the radius Adam.
    # Like params, or Buckets (dtype `displacement_dtype` if given): c_t = theta_{t-1} +
    # u_t - w0 of the last step.
    prev_displacement: PyTree
    # Like params, or Buckets; per leaf, the shape of R(c_t) (rows kept, other axes 1;
    # every axis 1 for norm="l2"): 1 / (R(c_t) + 1e-8), in the radius dtype (at least
    # float32: 1e-8 underflows in float16).
    prev_inverse_norm: PyTree
    base_state: optax.OptState  # state of the wrapped base optimizer.


def _buffer_dtype(dtype: Any, name: str) -> Any:
    """``None``, or ``dtype`` as a NumPy dtype after checking it is floating point."""
    if dtype is None:
        return None
    try:
        dtype = jnp.dtype(dtype)
    except TypeError:
        dtype = None
    if dtype is None or not jnp.issubdtype(dtype, jnp.floating):
        raise ValueError(
            f"`{name}` must be a floating-point dtype such as jnp.bfloat16 (or None for the "
            "params' dtype)."
        )
    return dtype


_WRAP_FORM = (
    "ftp wraps the base optimizer whose step it projects: write ftp(optax.sgd(1e-2, "
    "momentum=0.9), k=1.0), or the shortcuts ftp_sgd(1e-2, momentum=0.9) and "
    "ftp_adamw(1e-4). The chain form optax.chain(ftp(...), optax.adamw(...)) cannot "
    "work: FTP needs both the gradient (to learn the radius) and the base optimizer's "
    "step (to project theta + step), and a link of a chain sees only what the link "
    "before it passes on; ftp first in a chain would project the raw gradient as if it "
    "were the step, and AdamW would then rescale what came out, so the step actually "
    "applied to the params is never projected."
)


def ftp(
    base_optimizer: optax.GradientTransformation | None = None,
    *,
    k: float = 1.0,
    mask: MaskOrFn = None,
    row_axes: MaskOrFn = None,
    norm: str = "mars",
    anchor: PyTree | None = None,
    radius_learning_rate: float = 1e-2,
    radius_b1: float = 0.9,
    radius_b2: float = 0.999,
    anchor_dtype: Any = None,
    displacement_dtype: Any = None,
    layout: str = "auto",
    bucket_base: bool = False,
) -> optax.GradientTransformationExtraArgs:
    r"""Fast Trainable Projection around a base optimizer.

    After every step of ``base_optimizer``, each constrained leaf is projected
    back into a ball around its pre-trained value (the *anchor*), row by row; the
    leaf's radius is learned on the fly from the training gradient by a tiny Adam.

    Symbols: :math:`w_0` = ``anchor``, :math:`u_t` = the base optimizer's update,
    :math:`g_t` = the gradient passed to ``update``, :math:`\gamma` = radius,
    :math:`R` = :func:`ftp_jax.row_norms` with ``norm`` over the ``row_axes``,
    :math:`\kappa` = ``k``, :math:`\mu` = ``radius_learning_rate``.

    .. math::

      c_t &= \theta_{t-1} + u_t - w_0, \qquad n_t = R(c_t) + 10^{-8} \\
      h_t &= \textstyle\sum g_t \odot c_{t-1} / n_{t-1}, \qquad
        h_t \leftarrow \kappa h_t \text{ if } h_t > 0 \\
      \gamma_t &= \operatorname{clip}\big(\gamma_{t-1} - \mu\,
        \mathrm{Adam}_t(h_t), 10^{-8}, \max n_t\big), \qquad \gamma_1 = 10^{-8} \\
      \theta_t &= w_0 + \operatorname{clip}(\gamma_t / n_t, 0, 1)\, c_t

    :math:`h_t` is :math:`\partial L(\theta_{t-1}) / \partial \gamma_{t-1}`, the
    derivative of the loss with respect to the previous radius through the
    previous projection. Excluded leaves follow the base optimizer exactly.

    ``ftp`` wraps its base optimizer, ``ftp(optax.sgd(1e-2, momentum=0.9), k=1.0)``
    (or the shortcuts :func:`ftp_sgd` and :func:`ftp_adamw`); it is not a link of
    an ``optax.chain``. It needs both the gradient :math:`g_t` (for :math:`h_t`)
    and the base optimizer's step :math:`u_t` (to project
    :math:`\theta_{t-1} + u_t`), and a link of a chain sees only what the link
    before it passes on: in ``optax.chain(ftp(...), optax.adamw(...))`` FTP would
    project the raw gradient as if it were the step and AdamW would then rescale
    what came out, so the step applied to the params would never be projected.
    ``ftp()`` without a base optimizer raises a TypeError that says so.

    .. note::
      This reproduces the authors' reference code (GT-RIPL/FTP ``util/FTP.py``),
      quirks included: the radius is :math:`10^{-8}` at step 1 and its Adam
      moments stay 0 then; the radius Adam's bias correction uses the global step
      :math:`t`, so at step 2 the moments have had one update but are corrected
      with :math:`t = 2`; :math:`h_t` is used even where the previous projection
      was inactive; a 1-D leaf has one L1 norm over the whole vector.

    Args:
      base_optimizer: required, the optimizer whose step is projected, e.g.
        ``optax.adamw(1e-4)``. Its state is nested in :class:`FTPState`.
      k: gradient annealing factor in ``[0, 1]``: a positive :math:`h_t` (one that
        would shrink the radius) is multiplied by ``k``; smaller ``k`` tightens
        the constraint less.
      mask: which leaves are constrained (True) or follow the base optimizer
        untouched (False, e.g. a new classification head): a tree of bools with
        the params' structure or a function of the params (``optax.masked``'s
        convention). Default: every leaf. See :func:`ftp_jax.path_rules`.
      row_axes: per leaf, the tuple of axes kept as rows (``()`` = one norm over
        the whole tensor): a tree or a function of the params. Default:
        :func:`ftp_jax.flax_row_axes`; use :func:`ftp_jax.torch_row_axes` for
        PyTorch-layout arrays.
      norm: ``"mars"`` (per-row L1, the reference) or ``"l2"`` (whole-tensor L2).
      anchor: the pre-trained params to stay close to. Default: the params passed
        to ``init``, which must then be the pre-trained weights.
      radius_learning_rate: :math:`\mu`, the radius Adam's learning rate (the
        reference fixes it at 1e-2).
      radius_b1: the radius Adam's first-moment decay (reference: 0.9).
      radius_b2: the radius Adam's second-moment decay (reference: 0.999).
      anchor_dtype: memory option, off by default (``None``: the params' dtype).
        Store the anchor in this floating dtype, e.g. ``jnp.bfloat16`` (half the
        anchor's memory for float32 params). The ball is then centred on the
        *rounded* pre-trained weights, and a tight projection pulls the params onto
        them: over the reference's 80 steps the params depart from the exact
        trajectory by 0.3% of each leaf's scale and the radii by up to 3%.
      displacement_dtype: memory option, off by default (``None``: the params'
        dtype). Store the previous displacement :math:`c_{t-1}`, which only enters
        :math:`h_t`, in this floating dtype, e.g. ``jnp.bfloat16`` (half its
        memory): over the reference's 80 steps the params depart by 2e-5 of each
        leaf's scale and the radii by 2e-4 (the current :math:`c_t`, for the norms
        and the projection, keeps the params' dtype). The README's "Benchmarks"
        section reports both options' memory and departures.
      layout: how the state is held in arrays (the same numbers in every layout, up
        to a few ulp). ``"leaves"``: the parameter-sized buffers one array per leaf,
        the per-leaf scalars one vector per dtype. ``"buckets"``: leaves of the same
        shape, dtype, row axes and sharding stacked, and the step computed once per
        bucket: 5-10x fewer arrays and kernels in the jitted step (what a GPU's update
        time follows), but on the CPU the stacking copies cost more than they save.
        ``"auto"`` (default): ``"leaves"`` on the CPU, ``"buckets"`` on GPUs and TPUs,
        decided at ``init``. Figures: ``benchmarks/RESULTS_LAYOUT.md``.
      bucket_base: off by default. When the layout is ``"buckets"``, also run the base
        optimizer on the stacked buckets (its state then holds one array per bucket,
        not per leaf: the fewest arrays and kernels). Exact only for an element-wise
        base optimizer (``sgd``, momentum, ``adam``, ``adamw`` with a number as weight
        decay): one that reads a leaf's shape or path (``optax.masked`` by path,
        LAMB/LARS trust ratios, Adafactor) would see the stacked arrays instead.

    Returns:
      An ``optax.GradientTransformationExtraArgs``; ``update`` requires
      ``params``. Extra keyword arguments are passed on to the base optimizer.

    Raises:
      ValueError: for ``k`` outside ``[0, 1]``, an unknown ``norm``, a
        non-floating ``anchor_dtype`` or ``displacement_dtype``, and (at
        ``init``/``update``) a ``mask``, ``row_axes`` or ``anchor`` that does not
        fit the params, or (at ``update``) params or gradients whose structure or
        shapes differ from those ``init`` saw; messages name the leaf path.
      TypeError: no ``base_optimizer``, or one that is not a GradientTransformation.

    Example:
      >>> import jax.numpy as jnp, optax, ftp_jax
      >>> params = {"dense": {"kernel": jnp.ones((3, 2)), "bias": jnp.zeros(2)}}
      >>> tx = ftp_jax.ftp(optax.adamw(1e-3))
      >>> state = tx.init(params)  # params are the pre-trained anchor
      >>> grads = {"dense": {"kernel": jnp.ones((3, 2)), "bias": jnp.ones(2)}}
      >>> updates, state = tx.update(grads, state, params)
      >>> params = optax.apply_updates(params, updates)
      >>> ftp_jax.ftp_radii(state)["dense"]["kernel"].shape
      ()

    References:
      Tian, Liu, Smith, Kira, "Fast Trainable Projection for Robust Fine-Tuning",
      NeurIPS 2023, arXiv:2310.19182.
    """
    if base_optimizer is None:
        raise TypeError(f"ftp() needs a base optimizer. {_WRAP_FORM}")
    check_nonnegative(
        "k",
        k,
        "ftp",
        upper=1.0,
        hint=" k (gradient annealing factor) = 1 is the reference's default; smaller k "
        "relaxes the constraint.",
    )
    check_norm(norm)
    anchor_dtype = _buffer_dtype(anchor_dtype, "anchor_dtype")
    displacement_dtype = _buffer_dtype(displacement_dtype, "displacement_dtype")
    base_optimizer = check_base_optimizer(base_optimizer, "ftp")
    check_layout(layout, "ftp")

    def init_fn(params: PyTree) -> FTPState:
        if is_params_placeholder(params):  # optax.tree_utils.tree_map_params
            # Stacked buckets are not like the params; nor is a base state on them.
            stacked = resolve_layout(layout) == "buckets"
            like_params = NOT_PARAMS if stacked else params
            return FTPState(
                count=jnp.zeros([], jnp.int32),
                anchor=like_params,
                radius=NOT_PARAMS,
                radius_mu=NOT_PARAMS,
                radius_nu=NOT_PARAMS,
                prev_displacement=like_params,
                prev_inverse_norm=NOT_PARAMS,
                base_state=NOT_PARAMS if stacked and bucket_base else base_optimizer.init(params),
            )
        plans = leaf_plans(params, mask, row_axes, method="FTP")
        fields = _ftp_layout.init_fields(
            params,
            plans,
            resolve_layout(layout),
            anchor_tree(params, anchor, plans, dtype=anchor_dtype),
            norm=norm,
            displacement_dtype=displacement_dtype,
        )
        base_params = _ftp_layout.base_view(fields["radius"], params, params, bucket_base)
        return FTPState(
            count=jnp.zeros([], jnp.int32), **fields, base_state=base_optimizer.init(base_params)
        )

    def update_fn(updates, state, params=None, **extra_args):
        require_params(params, "ftp")
        check_update_trees("ftp", params, updates, state.anchor)
        view = functools.partial(
            _ftp_layout.base_view, state.radius, params=params, enabled=bucket_base
        )
        base_updates, base_state = base_update(
            base_optimizer, view(updates), state.base_state, view(params), "ftp", **extra_args
        )
        on_buckets = _ftp_layout.base_on_buckets(state.radius, bucket_base)
        stacked_base = base_updates[0] if on_buckets else None
        base_updates = _ftp_layout.base_unview(state.radius, base_updates, params, bucket_base)
        count = optax.safe_int32_increment(state.count)
        # ftp_leaf_update's math, in the state's layout (ftp_jax._ftp_layout): the new
        # radius, its Adam moments, c_t and 1 / n_t, by field name.
        new_updates, fields = _ftp_layout.update(
            updates,
            base_updates,
            params,
            leaf_plans(params, mask, row_axes, method="FTP"),
            state,
            norm=norm,
            k=k,
            step=count.astype(jnp.float32),
            first_step=count == 1,
            learning_rate=radius_learning_rate,
            b1=radius_b1,
            b2=radius_b2,
            stacked_base=stacked_base,
        )
        return new_updates, state._replace(count=count, **fields, base_state=base_state)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


class FTPLeafUpdate(NamedTuple):
    """One leaf's FTP step (:func:`ftp_leaf_update`): its update and its new state
    fields, named as in :class:`FTPState`."""

    update: jax.Array  # theta_t - theta_{t-1}, in the base update's dtype.
    anchor: jax.Array  # w0, as stored (its storage dtype).
    radius: jax.Array  # gamma_t.
    radius_mu: jax.Array  # the radius Adam's first moment.
    radius_nu: jax.Array  # the radius Adam's second moment.
    prev_displacement: jax.Array  # c_t, as stored (its storage dtype).
    prev_inverse_norm: jax.Array  # 1 / n_t.


def ftp_leaf_update(
    plan: LeafPlan,
    param,
    gradient,
    base_update,
    anchor,
    radius,
    radius_mu,
    radius_nu,
    prev_displacement,
    prev_inverse_norm,
    *,
    norm,
    k,
    step,
    first_step,
    learning_rate,
    b1,
    b2,
):
    r"""One FTP step of one constrained leaf: the math of :func:`ftp` (its equation).

    The per-leaf reference of :mod:`ftp_jax._ftp_layout`, which :func:`ftp` runs
    (the same operations, with the radius Adam on vectors); the tests compare them.

    .. math::

      c_t = \theta_{t-1} + u_t - w_0, \quad n_t = R(c_t) + 10^{-8}, \quad
      h_t = \textstyle\sum g_t \odot c_{t-1} / n_{t-1}, \\
      \gamma_t = \operatorname{clip}(\gamma_{t-1} - \mu\,\mathrm{Adam}_t(h_t),
      10^{-8}, \max n_t), \quad
      \theta_t = w_0 + \operatorname{clip}(\gamma_t / n_t, 0, 1)\, c_t

    The state fields are those of :class:`FTPState` at one leaf, passed in the
    state's order (the ``state`` of :func:`ftp_jax._skeleton.map_leaves`, by
    position or by name). Returns an :class:`FTPLeafUpdate`: the update and the
    new fields, by name.

    Norms, inverse norms, :math:`h_t` and the radius are computed in the radius
    dtype (:func:`ftp_jax._skeleton.radius_dtype`: the params' dtype, at least
    float32), so that float16 params neither underflow the norms' ``1e-8`` nor lose
    :math:`h_t`; for float32 and float64 params every cast below is a no-op.
    """
    dtype = radius.dtype  # radius_dtype(param)
    stored_anchor = anchor
    anchor = anchor.astype(param.dtype)  # a no-op unless `anchor_dtype` is set

    # h_t = d L(theta_{t-1}) / d gamma_{t-1}: row sums first, then scaled, as the
    # reference's `_dot(grad, c_prev, scale=1/n_prev)`.
    stored_dtype = prev_displacement.dtype
    prev_displacement = prev_displacement.astype(dtype)  # a no-op by default
    kept_axes = plan.kept_axes
    radius_grad = jnp.sum(
        row_sums(gradient.astype(dtype) * prev_displacement, kept_axes) * prev_inverse_norm
    )

    # c_t, made to depend on h_t: a NaN h_t (a non-finite gradient) makes c_t NaN, and
    # otherwise this changes no number. The dependency orders XLA's reads of c_{t-1}
    # (for h_t) before its writes of c_t, so that c_t is written in place into c_{t-1}'s
    # donated buffer instead of through two parameter-sized copies.
    ordered_anchor = jnp.where(jnp.isnan(radius_grad), jnp.nan, anchor)
    displacement = param + base_update - ordered_anchor  # c_t
    norms = row_norms(displacement.astype(dtype), kept_axes, norm) + NORM_EPS  # n_t
    inverse_norm = 1.0 / norms

    radius_grad = radius_grad.astype(dtype)
    radius_grad = jnp.where(radius_grad > 0, k * radius_grad, radius_grad)
    # The radius Adam (torch.optim.Adam's update, eps outside the root). The moments are
    # written in the reference's operation order (torch's `mul_(b2).addcmul_(g, g, 1 - b2)`):
    # optax's `tree_update_moment` adds the same terms in the other order, which XLA fuses
    # into different FMAs (1 ulp per step, 2e-5 of the params after 80 float32 steps).
    # The bias correction is optax's, with the global step: the reference steps its
    # hyper-optimizer once per FTP step.
    new_mu = b1 * radius_mu + (1 - b1) * radius_grad
    new_nu = b2 * radius_nu + (1 - b2) * jnp.square(radius_grad)
    mu_hat = optax.tree_utils.tree_bias_correction(new_mu, b1, step.astype(dtype))
    nu_hat = optax.tree_utils.tree_bias_correction(new_nu, b2, step.astype(dtype))
    new_radius = radius - learning_rate * mu_hat / (jnp.sqrt(nu_hat) + RADIUS_ADAM_EPS)
    new_radius = jnp.clip(new_radius, MIN_RADIUS, jnp.max(norms).astype(dtype))

    new_radius = jnp.where(first_step, jnp.asarray(FIRST_RADIUS, dtype), new_radius)
    new_mu = jnp.where(first_step, radius_mu, new_mu)
    new_nu = jnp.where(first_step, radius_nu, new_nu)

    projected_displacement, _ = radial_projection(
        displacement, new_radius, kept_axes, inverse_norm=inverse_norm
    )
    projected = anchor + projected_displacement  # theta_t (in `dtype`)
    update = (projected - param).astype(base_update.dtype)
    return FTPLeafUpdate(
        update=update,
        anchor=stored_anchor,
        radius=new_radius,
        radius_mu=new_mu,
        radius_nu=new_nu,
        prev_displacement=displacement.astype(stored_dtype),  # a no-op by default
        prev_inverse_norm=inverse_norm,
    )


def ftp_radii(state: Any) -> PyTree:
    """Returns the current radius of every leaf, as a tree with the params' structure.

    Args:
      state: an :class:`FTPState`, or any optimizer state containing exactly one
        (an ``optax.chain`` state, ``nnx.Optimizer.opt_state``).

    Returns:
      The radii (float scalars; 0 before the first step), with ``None`` at the
      leaves that ``mask`` excludes.

    Raises:
      ValueError: ``state`` holds no :class:`FTPState`, or several states with radii.
    """
    return radii(radius_state(state, FTPState))


def ftp_adamw(
    learning_rate: optax.ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    *,
    k: float = 1.0,
    mask: MaskOrFn = None,
    row_axes: MaskOrFn = None,
    norm: str = "mars",
    anchor: PyTree | None = None,
    anchor_dtype: Any = None,
    displacement_dtype: Any = None,
    layout: str = "auto",
) -> optax.GradientTransformationExtraArgs:
    """FTP around AdamW: the reference's ``AdamP``.

    ``ftp(optax.adamw(learning_rate, b1, b2, eps, weight_decay=weight_decay), ...)``.
    Decoupled weight decay, ``eps`` outside the square root, as ``torch.optim.AdamW``.

    .. note:: ``weight_decay`` defaults to 0, the reference's ``AdamP`` default
      (``optax.adamw`` defaults to 1e-4).

    See :func:`ftp` for the FTP arguments (``k``, ``mask``, ``row_axes``, ``norm``,
    ``anchor``), the memory options ``anchor_dtype`` and ``displacement_dtype``
    (off by default: ``None`` keeps the params' dtype; e.g. ``jnp.bfloat16``) and
    ``layout``.
    """
    return ftp(
        optax.adamw(learning_rate, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay),
        k=k,
        mask=mask,
        row_axes=row_axes,
        norm=norm,
        anchor=anchor,
        anchor_dtype=anchor_dtype,
        displacement_dtype=displacement_dtype,
        layout=layout,
    )


def ftp_sgd(
    learning_rate: optax.ScalarOrSchedule,
    momentum: float = 0.0,
    nesterov: bool = False,
    weight_decay: float = 0.0,
    *,
    k: float = 1.0,
    mask: MaskOrFn = None,
    row_axes: MaskOrFn = None,
    norm: str = "mars",
    anchor: PyTree | None = None,
    anchor_dtype: Any = None,
    displacement_dtype: Any = None,
    layout: str = "auto",
) -> optax.GradientTransformationExtraArgs:
    """FTP around SGD with momentum: the reference's ``SGDP``.

    ``ftp(optax.chain(optax.add_decayed_weights(weight_decay),
    optax.sgd(learning_rate, momentum, nesterov)), ...)``: the weight decay is
    added to the gradient before momentum, as ``torch.optim.SGD`` does.

    See :func:`ftp` for the FTP arguments (``k``, ``mask``, ``row_axes``, ``norm``,
    ``anchor``), the memory options ``anchor_dtype`` and ``displacement_dtype``
    (off by default: ``None`` keeps the params' dtype; e.g. ``jnp.bfloat16``) and
    ``layout``.
    """
    base = torch_sgd(learning_rate, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay)
    return ftp(
        base,
        k=k,
        mask=mask,
        row_axes=row_axes,
        norm=norm,
        anchor=anchor,
        anchor_dtype=anchor_dtype,
        displacement_dtype=displacement_dtype,
        layout=layout,
    )
