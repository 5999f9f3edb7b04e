"""TPGM, Trainable Projected Gradient Method, as an Optax transform wrapping a base optimizer."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ftp_jax._layout import LeafScalars, make_layout
from ftp_jax._projection import radial_projection, row_norms
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
    given_anchor,
    is_params_placeholder,
    leaf_plans,
    map_leaves,
    require_params,
)

__all__ = [
    "TPGMState",
    "project_to_anchor",
    "tpgm",
    "tpgm_leaf_projection",
    "tpgm_post_hoc",
    "tpgm_radii",
]

PyTree = Any
LossFn = Callable[..., jax.Array]

MIN_RADIUS = 1e-8  # lower clip of the radius
NORM_EPS = 1e-8  # TPGM's epsilon: in the projection ratio's denominator, not in the norm
RADIUS_ADAM = dict(b1=0.9, b2=0.999, eps=1e-8)  # torch.optim.Adam's defaults
_UNROLLED_STEPS = 8  # radius steps up to this many run unrolled, more in a lax.scan


class TPGMState(NamedTuple):
    """State of :func:`tpgm`. MaskedNode at the leaves that ``mask`` excludes."""

    count: jax.Array  # int32 []: updates taken (training steps).
    anchor: PyTree  # like params: the pre-trained values w0.
    # LeafScalars (ftp_jax._layout): one float vector per radius dtype, an element per
    # constrained leaf: gamma (0 until first used). Read as a tree with tpgm_radii.
    radius: PyTree
    radius_adam: optax.OptState  # optax.adam state over `radius` (vectors too).
    initialized: jax.Array  # bool []: radii set to min(R(theta - w0)) / 2 yet.
    heldout_loss: jax.Array  # float32 []: mean held-out loss of the last radius update (0 before).
    base_state: optax.OptState  # state of the wrapped base optimizer.


def tpgm_leaf_projection(
    plan: LeafPlan, param, anchor, radius, *, norm: str, stop_gradient: bool = True
):
    r"""TPGM's projection of one constrained leaf.

    .. math::

      P(\theta; \gamma) = w_0 + \operatorname{clip}\Big(\frac{\gamma}{R(\theta - w_0)
      + 10^{-8}}, 0, 1\Big) (\theta - w_0)

    (:func:`ftp_jax._projection.radial_projection` with TPGM's epsilon, in the
    ratio's denominator). With ``stop_gradient`` the displacement is a constant:
    only :math:`\gamma` gets a gradient (the reference's truncated hypergradient).
    """
    displacement = param - anchor
    if stop_gradient:
        displacement = jax.lax.stop_gradient(displacement)
    projected, _ = radial_projection(displacement, radius, plan.kept_axes, norm, norm_eps=NORM_EPS)
    return (anchor.astype(projected.dtype) + projected).astype(param.dtype)


def _radius_tree(radius, params):
    """The radii as a tree like ``params`` (MaskedNode at excluded leaves): the state's
    vectors (LeafScalars) sliced, differentiably; a tree as it is."""
    if isinstance(radius, LeafScalars):
        return radius.like(params, missing=optax.MaskedNode())
    return radius


def _project(params, anchor, radius, plans, norm, stop_gradient=True):
    """Every constrained leaf projected; excluded leaves as they are."""
    (projected,) = map_leaves(
        lambda plan, param, anchor, radius: (
            tpgm_leaf_projection(
                plan, param, anchor, radius, norm=norm, stop_gradient=stop_gradient
            ),
        ),
        plans,
        params,
        state={"anchor": anchor, "radius": _radius_tree(radius, params)},
        excluded_fn=lambda plan, param, anchor, radius: (param,),
        method="TPGM",
    )
    return projected


def project_to_anchor(
    params: PyTree,
    anchor: PyTree,
    radius: PyTree,
    *,
    mask: MaskOrFn = None,
    row_axes: MaskOrFn = None,
    norm: str = "mars",
    stop_gradient: bool = True,
) -> PyTree:
    r"""Projects each constrained leaf into the ball of its radius around the anchor.

    .. math::

      P(\theta; \gamma) = w_0 + \operatorname{clip}\Big(\frac{\gamma}{R(\theta - w_0)
      + 10^{-8}}, 0, 1\Big) (\theta - w_0)

    row by row (``R`` = :func:`ftp_jax.row_norms` over ``row_axes``, MARS or L2).
    With ``stop_gradient=True`` (the reference, TPGM's truncated hypergradient),
    the displacement :math:`\theta - w_0` is a constant, so ``jax.grad`` with
    respect to ``radius`` is the only gradient that flows; the clip passes no
    gradient at either end (the reference's ``Hardtanh``).

    Args:
      params: the fine-tuned params :math:`\theta`.
      anchor: the pre-trained params :math:`w_0` (same structure; values at
        excluded leaves unread).
      radius: a tree like params with a scalar :math:`\gamma` at every constrained
        leaf and ``None`` (or ``optax.MaskedNode``) at excluded ones.
      mask, row_axes, norm: as in :func:`ftp_jax.ftp`.
      stop_gradient: treat the displacement as a constant (default). ``False``
        lets gradients flow to ``params`` as well (the unrolled hypergradient).

    Returns:
      The projected params; excluded leaves are returned unchanged.

    References:
      Tian, Dai, Liu, Kira, "Trainable Projected Gradient Method for Robust
      Fine-tuning", CVPR 2023, arXiv:2303.10720.
    """
    check_norm(norm)
    plans = leaf_plans(params, mask, row_axes, method="TPGM")
    anchor = given_anchor(params, anchor, plans)
    radius = _given_radius(params, radius, plans)
    return _project(params, anchor, radius, plans, norm, stop_gradient)


def _given_radius(params: PyTree, radius: PyTree, plans) -> PyTree:
    """``radius`` as a state tree (an array at every constrained leaf, MaskedNode at the
    others), checked: a radius at every constrained leaf."""
    treedef = jax.tree_util.tree_structure(params)
    try:
        flat = treedef.flatten_up_to(radius)
    except (ValueError, TypeError):
        raise ValueError(
            "`radius` must have the params' structure (a scalar at every constrained leaf, "
            "None at excluded ones)."
        ) from None
    leaves = []
    for plan, value in zip(plans, flat, strict=True):
        if plan.constrained and (value is None or isinstance(value, optax.MaskedNode)):
            raise ValueError(f"no radius for the constrained leaf {plan.path!r}.")
        leaves.append(jnp.asarray(value) if plan.constrained else optax.MaskedNode())
    return treedef.unflatten(leaves)


def _prepared_radius(params, anchor, radius, initialized, plans, norm):
    """Initializes the radii on first use (``min(R(t)) / 2``), then clips them to
    ``[1e-8, max R(t)]``; no gradient flows through either."""

    def prepare(plan, param, anchor, radius):
        displacement = (param - anchor).astype(radius.dtype)  # the radius dtype: >= float32
        norms = jax.lax.stop_gradient(row_norms(displacement, plan.kept_axes, norm))
        radius = jnp.where(initialized, radius, jnp.min(norms) / 2)
        return (jnp.clip(radius, MIN_RADIUS, jnp.max(norms)),)

    (prepared,) = map_leaves(
        prepare,
        plans,
        params,
        state={"anchor": anchor, "radius": _radius_tree(radius, params)},
        excluded_fn=lambda plan, param, anchor, radius: (radius,),
        method="TPGM",
    )
    if isinstance(radius, LeafScalars):  # back to the state's vectors
        flat = jax.tree_util.tree_structure(params).flatten_up_to(prepared)
        return LeafScalars.from_leaves(radius.layout, flat)
    return prepared


class _Radii(NamedTuple):
    """The part of the TPGM state that a radius update changes."""

    radius: PyTree
    radius_adam: optax.OptState
    initialized: jax.Array


def _check_stacked(batches: PyTree, iters: int, name: str) -> None:
    leading = {np.shape(x)[0] if np.ndim(x) else None for x in jax.tree_util.tree_leaves(batches)}
    if leading != {iters}:
        raise ValueError(
            f"`{name}` must stack {iters} batches on a leading axis (one per radius-Adam "
            f"step: max_iters={iters}); its leaves have leading sizes {sorted(leading, key=str)}."
        )


def _fit_radii(
    params,
    anchor,
    radii: _Radii,
    heldout_batches,
    train_batches,
    loss_kwargs,
    *,
    plans,
    norm,
    heldout_loss,
    radius_optimizer,
    unroll_steps,
    train_loss,
    inner_learning_rate,
):
    """The radius-Adam steps of one projection update, one per stacked batch.

    Each step: clip the radii (initialized on first use), take
    ``d heldout_loss(P(theta; gamma)) / d gamma`` by ``jax.grad``, one Adam step.
    Returns the new radii and, per step, the loss and the radii after the Adam step
    (before the next clip: the reference's trajectory).
    """

    def outer_loss(radius, batch, train):
        if not unroll_steps:
            projected = _project(params, anchor, radius, plans, norm)
            return heldout_loss(projected, batch, **loss_kwargs)
        theta = params
        for k in range(unroll_steps):
            inner_batch = jax.tree_util.tree_map(lambda x, k=k: x[k], train)
            gradient = jax.grad(train_loss)(theta, inner_batch)
            stepped = jax.tree_util.tree_map(
                lambda p, g: p - inner_learning_rate * g, theta, gradient
            )
            theta = _project(stepped, anchor, radius, plans, norm, stop_gradient=False)
        return heldout_loss(theta, batch, **loss_kwargs)

    def radius_step(radii: _Radii, batches):
        batch, train = batches
        radius = _prepared_radius(params, anchor, radii.radius, radii.initialized, plans, norm)
        loss, grads = jax.value_and_grad(outer_loss)(radius, batch, train)
        updates, adam_state = radius_optimizer.update(grads, radii.radius_adam, radius)
        radius = optax.apply_updates(radius, updates)
        new_radii = _Radii(radius=radius, radius_adam=adam_state, initialized=jnp.ones((), bool))
        return new_radii, (loss, radius)

    steps = {np.shape(x)[0] for x in jax.tree_util.tree_leaves(heldout_batches)}.pop()
    if steps > _UNROLLED_STEPS:
        return jax.lax.scan(radius_step, radii, (heldout_batches, train_batches))
    # A few steps (TPGM's schedule takes one): a Python loop. XLA on the CPU runs a model's
    # forward and backward inside a while loop (lax.scan) about 8x slower than outside one.
    outputs = []
    for index in range(steps):
        batches = jax.tree_util.tree_map(lambda x, i=index: x[i], (heldout_batches, train_batches))
        radii, output = radius_step(radii, batches)
        outputs.append(output)
    return radii, jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *outputs)


def _initial_state(params, plans, anchor, radius_optimizer, base_state) -> TPGMState:
    """Radii 0 (set on first use), their Adam state, the anchor (a copy), the base state."""
    radius = LeafScalars.full(make_layout(params, plans, "leaves"))  # a vector per dtype
    return TPGMState(
        count=jnp.zeros([], jnp.int32),
        anchor=anchor_tree(params, anchor, plans),
        radius=radius,
        radius_adam=radius_optimizer.init(radius),
        initialized=jnp.zeros((), bool),
        heldout_loss=jnp.zeros((), jnp.float32),
        base_state=base_state,
    )


def _apply(params, anchor, radii: _Radii, plans, norm):
    """Clip (initialize) the radii, project: TPGM's apply. Returns (projected, radii)."""
    radius = _prepared_radius(params, anchor, radii.radius, radii.initialized, plans, norm)
    projected = _project(params, anchor, radius, plans, norm)
    return projected, radii._replace(radius=radius, initialized=jnp.ones((), bool))


def _check_radius_learning_rate(value: Any, method: str) -> None:
    """A schedule, or a finite number >= 0 (0: the radii stay at their initial values)."""
    if not callable(value):
        check_nonnegative("radius_learning_rate", value, method)


def tpgm(
    base_optimizer: optax.GradientTransformation,
    heldout_loss: LossFn,
    *,
    mask: MaskOrFn = None,
    row_axes: MaskOrFn = None,
    norm: str = "mars",
    radius_learning_rate: float = 1e-2,
    max_iters: int = 1,
    anchor: PyTree | None = None,
    unroll_steps: int = 0,
    train_loss: LossFn | None = None,
    inner_learning_rate: float | None = None,
) -> optax.GradientTransformationExtraArgs:
    r"""TPGM around a base optimizer: projection radii learned on held-out data.

    The inner level is the base optimizer's step. The outer level trains one
    radius :math:`\gamma` per constrained leaf on held-out data, by
    differentiating the held-out loss through the projection with ``jax.grad``,
    inside the jitted ``update``:

    .. math::

      \theta' &= \theta_{t-1} + u_t \\
      \gamma &\leftarrow \mathrm{Adam}\Big(\gamma,\;
        \nabla_\gamma\, L_{\text{held-out}}\big(P(\theta'; \gamma); b_i\big)\Big),
        \quad i = 1 \dots \texttt{max\_iters} \\
      \theta_t &= P(\theta'; \gamma)

    with :math:`P` from :func:`project_to_anchor` and :math:`u_t` the base
    optimizer's update. Before each use the radii are clipped to
    :math:`[10^{-8}, \max R(\theta' - w_0)]`; on first use they are set to
    :math:`\min R(\theta' - w_0) / 2`.

    ``update(grads, state, params, heldout_batches=...)`` runs the ``max_iters``
    radius-Adam steps (a ``lax.scan``, no host sync), one per held-out batch
    stacked on the leading axis, then projects; ``heldout_batch=...`` is one
    batch, for ``max_iters=1``. Without either, ``update`` only projects with the
    current radii (the reference's "apply" between projection updates). Every
    other extra keyword argument of ``update`` is passed on to the base optimizer
    and to ``heldout_loss`` (e.g. ``model_state=...``: batch statistics, or an
    RNG key); a ``heldout_loss`` that does not use one should accept ``**kwargs``.

    .. note::
      This is the reference (PotatoTian/TPGM ``utils/tpgm.py``): the outer
      gradient is truncated at the projection (the fine-tuned weights are
      constants), 1-D leaves have one L1 norm over the whole vector, the ``1e-8``
      sits in the ratio's denominator, not in the norm, and the clip of the ratio
      passes no gradient at either end (``Hardtanh``). ``unroll_steps > 0`` is an
      option beyond the reference (off by default): the held-out loss is taken
      after ``unroll_steps`` inner SGD steps, each followed by the projection,

      .. math::

        \theta_0 = \theta',\quad \theta_{k} = P\big(\theta_{k-1} - \eta
        \nabla L_{\text{train}}(\theta_{k-1}; b_k); \gamma\big),\quad
        \nabla_\gamma L_{\text{held-out}}(\theta_K)

      a ``jax.grad`` (the inner steps) inside the function that the outer
      ``jax.grad`` differentiates; ``update`` then also needs ``train_batches``
      (leading axes ``max_iters`` and ``unroll_steps``). Memory: reverse mode
      keeps every inner step's params and activations, about ``K x`` (params +
      one training step's activations) on top of a truncated update.

    Args:
      base_optimizer: the optimizer of the inner level, e.g.
        ``optax.sgd(1e-2, momentum=0.9)``; its state is nested in the state.
      heldout_loss: ``(params, batch, **extra) -> scalar``: the loss on a held-out
        batch, with the model in eval mode (batch-norm running statistics, no
        dropout).
      mask, row_axes, norm: which leaves, which rows, ``"mars"``/``"l2"``; as in
        :func:`ftp_jax.ftp`. Excluded leaves follow the base optimizer exactly.
      radius_learning_rate: the radius Adam's learning rate (the reference's
        ``proj_lr``; betas 0.9/0.999, eps 1e-8, as ``torch.optim.Adam``).
      max_iters: radius-Adam steps per projection update (reference: 1 with an
        update after every training step; 200 post-hoc, see :func:`tpgm_post_hoc`).
      anchor: the pre-trained params; default the params passed to ``init``.
      unroll_steps: ``K`` inner steps of the unrolled hypergradient (0: the
        reference's truncated one).
      train_loss: ``(params, batch) -> scalar`` for the inner steps (required when
        ``unroll_steps > 0``).
      inner_learning_rate: :math:`\eta` of the inner SGD steps (required when
        ``unroll_steps > 0``).

    Returns:
      An ``optax.GradientTransformationExtraArgs``; ``update`` requires ``params``.

    Raises:
      ValueError: an unknown ``norm``, a bad ``max_iters``/``unroll_steps``, and
        (at ``update``) held-out batches not stacked ``max_iters`` deep; at
        ``init``/``update``, a ``mask``, ``row_axes`` or ``anchor`` that does not
        fit the params.
      TypeError: ``base_optimizer`` is not a GradientTransformation, or
        ``heldout_loss`` is not callable.

    Example:
      >>> import jax, jax.numpy as jnp, optax, ftp_jax
      >>> def loss(params, batch):
      ...     return jnp.mean((batch["x"] @ params["w"] - batch["y"]) ** 2)
      >>> pre = {"w": jnp.ones((3, 1))}
      >>> tx = ftp_jax.tpgm(optax.sgd(0.1), loss, radius_learning_rate=1e-2, max_iters=2)
      >>> state = tx.init(pre)
      >>> batch = {"x": jnp.ones((4, 3)), "y": jnp.full((4, 1), 2.0)}
      >>> grads = jax.grad(loss)(pre, batch)
      >>> heldout = {"x": jnp.ones((2, 4, 3)), "y": jnp.ones((2, 4, 1))}  # max_iters=2
      >>> updates, state = jax.jit(tx.update)(grads, state, pre, heldout_batches=heldout)
      >>> params = optax.apply_updates(pre, updates)
      >>> ftp_jax.tpgm_radii(state)["w"].shape
      ()

    References:
      Tian, Dai, Liu, Kira, "Trainable Projected Gradient Method for Robust
      Fine-tuning", CVPR 2023, arXiv:2303.10720.
    """
    check_norm(norm)
    _check_radius_learning_rate(radius_learning_rate, "tpgm")
    base_optimizer = check_base_optimizer(base_optimizer, "tpgm")
    if not callable(heldout_loss):
        raise TypeError(
            "tpgm: `heldout_loss` must be a function (params, batch) -> scalar loss, got "
            f"{type(heldout_loss).__name__}."
        )
    if isinstance(max_iters, bool) or not isinstance(max_iters, int) or max_iters < 1:
        raise ValueError(f"tpgm: `max_iters` must be a positive int, got {max_iters!r}.")
    if isinstance(unroll_steps, bool) or not isinstance(unroll_steps, int) or unroll_steps < 0:
        raise ValueError(f"tpgm: `unroll_steps` must be a non-negative int, got {unroll_steps!r}.")
    if unroll_steps and (train_loss is None or inner_learning_rate is None):
        raise ValueError(
            "tpgm: `unroll_steps > 0` differentiates through inner training steps: pass "
            "`train_loss=(params, batch) -> loss` and `inner_learning_rate`."
        )
    radius_optimizer = optax.adam(radius_learning_rate, **RADIUS_ADAM)
    fit_radii = functools.partial(
        _fit_radii,
        norm=norm,
        heldout_loss=heldout_loss,
        radius_optimizer=radius_optimizer,
        unroll_steps=unroll_steps,
        train_loss=train_loss,
        inner_learning_rate=inner_learning_rate,
    )

    def init_fn(params: PyTree) -> TPGMState:
        if is_params_placeholder(params):  # optax.tree_utils.tree_map_params
            return TPGMState(
                count=jnp.zeros([], jnp.int32),
                anchor=params,
                radius=NOT_PARAMS,
                radius_adam=NOT_PARAMS,
                initialized=jnp.zeros((), bool),
                heldout_loss=jnp.zeros((), jnp.float32),
                base_state=base_optimizer.init(params),
            )
        plans = leaf_plans(params, mask, row_axes, method="TPGM")
        return _initial_state(params, plans, anchor, radius_optimizer, base_optimizer.init(params))

    def update_fn(
        updates,
        state: TPGMState,
        params=None,
        *,
        heldout_batch=None,
        heldout_batches=None,
        train_batches=None,
        **extra_args,
    ):
        require_params(params, "tpgm")
        check_update_trees("tpgm", params, updates, state.anchor)
        base_updates, base_state = base_update(
            base_optimizer, updates, state.base_state, params, "tpgm", **extra_args
        )
        plans = leaf_plans(params, mask, row_axes, method="TPGM")
        moved = optax.apply_updates(params, base_updates)
        radii = _Radii(
            radius=state.radius, radius_adam=state.radius_adam, initialized=state.initialized
        )
        heldout_loss_value = state.heldout_loss
        if heldout_batch is not None:
            if heldout_batches is not None:
                raise ValueError("tpgm: pass `heldout_batch` or `heldout_batches`, not both.")
            if max_iters != 1:
                raise ValueError(
                    f"tpgm: `heldout_batch` is one batch, for max_iters=1; with max_iters="
                    f"{max_iters}, pass `heldout_batches` stacking {max_iters} batches."
                )
            heldout_batches = jax.tree_util.tree_map(lambda x: x[None], heldout_batch)
            if train_batches is not None:
                train_batches = jax.tree_util.tree_map(lambda x: x[None], train_batches)
        if heldout_batches is not None:
            _check_stacked(heldout_batches, max_iters, "heldout_batches")
            if unroll_steps and train_batches is None:
                raise ValueError(
                    f"tpgm: unrolled TPGM needs `train_batches` with leading axes "
                    f"({max_iters}, {unroll_steps})."
                )
            radii, (losses, _) = fit_radii(
                moved, state.anchor, radii, heldout_batches, train_batches, extra_args, plans=plans
            )
            heldout_loss_value = jnp.mean(losses).astype(jnp.float32)
        projected, radii = _apply(moved, state.anchor, radii, plans, norm)
        # theta_t - theta_{t-1} at the constrained leaves; u_t itself at the others.
        (new_updates,) = map_leaves(
            lambda plan, param, base_update, projected: (
                (projected - param).astype(base_update.dtype),
            ),
            plans,
            params,
            {"base_update": base_updates, "projected": projected},
            excluded_fn=lambda plan, param, base_update, projected: (base_update,),
            method="TPGM",
        )
        return new_updates, state._replace(
            count=optax.safe_int32_increment(state.count),
            **radii._asdict(),
            heldout_loss=heldout_loss_value,
            base_state=base_state,
        )

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def tpgm_post_hoc(
    heldout_loss: LossFn,
    params: PyTree,
    heldout_batches: PyTree,
    *,
    anchor: PyTree,
    mask: MaskOrFn = None,
    row_axes: MaskOrFn = None,
    norm: str = "mars",
    radius_learning_rate: float = 1e-2,
    state: TPGMState | None = None,
    **loss_kwargs: Any,
) -> tuple[PyTree, TPGMState, dict[str, Any]]:
    r"""Post-hoc TPGM: learn the radii on held-out batches for fixed fine-tuned params.

    The reference's ImageNet/ViT recipe: after fine-tuning, ``N`` radius-Adam steps
    (200 in the paper), each on the next held-out batch, with the loss at
    :math:`P(\theta; \gamma)` for the fixed fine-tuned :math:`\theta`, then
    :math:`\theta \leftarrow P(\theta; \gamma)` once. One pure, jittable function
    (a ``lax.scan`` over the stacked batches). For more batches than fit in
    memory, call it on consecutive chunks, passing the returned ``state`` back
    (and the same ``params``): the radii continue, and the last call's projected
    params are the answer.

    Args:
      heldout_loss: ``(params, batch, **loss_kwargs) -> scalar`` (eval mode).
      params: the fine-tuned params :math:`\theta` (not updated between chunks).
      heldout_batches: batches stacked on a leading axis, one per Adam step.
      anchor: the pre-trained params :math:`w_0`.
      mask, row_axes, norm, radius_learning_rate: as in :func:`tpgm`.
      state: the state returned by the previous chunk; ``None`` to start.
      **loss_kwargs: extra inputs of ``heldout_loss`` (e.g. ``model_state``).

    Returns:
      ``(projected params, state, history)``; ``history["loss"]``: the held-out loss
      of every Adam step, ``history["radius"]``: the radii after every Adam step
      (a tree like the params, each leaf stacked over steps, ``MaskedNode`` at
      excluded leaves), before the clip of the next use, as the reference reports.
    """
    check_norm(norm)
    _check_radius_learning_rate(radius_learning_rate, "tpgm_post_hoc")
    plans = leaf_plans(params, mask, row_axes, method="TPGM")
    radius_optimizer = optax.adam(radius_learning_rate, **RADIUS_ADAM)
    if state is None:
        state = _initial_state(params, plans, anchor, radius_optimizer, optax.EmptyState())
    leading = {np.shape(x)[0] for x in jax.tree_util.tree_leaves(heldout_batches)}
    if len(leading) != 1:
        raise ValueError(
            "tpgm_post_hoc: `heldout_batches` must stack batches on one leading axis; its "
            f"leaves have leading sizes {sorted(leading)}."
        )
    radii, (losses, trajectory) = _fit_radii(
        params,
        state.anchor,
        _Radii(radius=state.radius, radius_adam=state.radius_adam, initialized=state.initialized),
        heldout_batches,
        None,
        loss_kwargs,
        plans=plans,
        norm=norm,
        heldout_loss=heldout_loss,
        radius_optimizer=radius_optimizer,
        unroll_steps=0,
        train_loss=None,
        inner_learning_rate=None,
    )
    projected, radii = _apply(params, state.anchor, radii, plans, norm)
    return (
        projected,
        state._replace(**radii._asdict(), heldout_loss=jnp.mean(losses).astype(jnp.float32)),
        {
            "loss": losses,
            "radius": trajectory.tree(missing=optax.MaskedNode())
            if isinstance(trajectory, LeafScalars)
            else trajectory,
        },
    )


def tpgm_radii(state: Any) -> PyTree:
    """The radii as a tree like the params, ``None`` at excluded leaves.

    Args:
      state: a :class:`TPGMState`, or an optimizer state containing exactly one.

    Raises:
      ValueError: ``state`` holds no :class:`TPGMState`, or several states with radii.
    """
    return radii(radius_state(state, TPGMState))
