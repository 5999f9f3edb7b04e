"""TPGM, Trainable Projected Gradient Method: projection radii learned on held-out data."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax

from ftp_jax._plan import (
    LeafPlan,
    MaskOrFn,
    check_anchor,
    flat_up_to,
    leaf_plans,
    masked_like,
    radius_dtype,
)
from ftp_jax._projection import NORMS, row_norms

__all__ = [
    "TPGMState",
    "TPGM",
    "tpgm",
    "tpgm_radii",
    "project_to_anchor",
    "projection_action",
    "run_projection_update",
]

PyTree = Any
LossFn = Callable[[PyTree, PyTree], jax.Array]

MIN_RADIUS = 1e-8  # lower clip of the radius
NORM_EPS = 1e-8  # added to the norm in the projection ratio (not in the norm itself)


class TPGMState(NamedTuple):
    """State of :func:`tpgm`. MaskedNode at the leaves that ``mask`` excludes."""

    anchor: PyTree  # like params: the pre-trained values w0.
    radius: PyTree  # one float [] per constrained leaf: gamma.
    radius_adam: optax.OptState  # optax.adam state over `radius`.
    initialized: chex.Array  # bool []: radii set to min(R(t)) / 2 yet.


def _projected_leaf(param, anchor, radius, kept_axes, norm, stop_gradient):
    """``w0 + clip(gamma / (R(t) + 1e-8), 0, 1) * t`` for one leaf, ``t = theta - w0``."""
    displacement = param - anchor
    if stop_gradient:
        displacement = jax.lax.stop_gradient(displacement)
    norms = row_norms(displacement, kept_axes, norm)
    ratio = jnp.clip(radius.astype(param.dtype) / (norms + NORM_EPS), 0.0, 1.0)
    return anchor + displacement * ratio


def _project(params, anchor, radius, plans, norm, stop_gradient=True):
    flat_params = jax.tree_util.tree_structure(params).flatten_up_to(params)
    flat_anchor = flat_up_to(params, anchor, "anchor")
    flat_radius = flat_up_to(params, radius, "radius tree")
    leaves = []
    for plan, p, a, r in zip(plans, flat_params, flat_anchor, flat_radius, strict=True):
        if not plan.constrained:
            leaves.append(p)
            continue
        if r is None or isinstance(r, optax.MaskedNode):
            raise ValueError(f"no radius for the constrained leaf {plan.path!r}.")
        leaves.append(_projected_leaf(p, a, r, plan.kept_axes, norm, stop_gradient))
    return jax.tree_util.tree_structure(params).unflatten(leaves)


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
    respect to ``radius`` is the only gradient that flows.

    Args:
      params: the fine-tuned params :math:`\theta`.
      anchor: the pre-trained params :math:`w_0` (same structure).
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
    if norm not in NORMS:
        raise ValueError(f"unknown `norm` {norm!r}; expected one of {NORMS}.")
    plans = leaf_plans(params, mask, row_axes, method="TPGM")
    return _project(params, anchor, radius, plans, norm, stop_gradient)


def _prepared_radius(params, state: TPGMState, plans: list[LeafPlan], norm: str):
    """Initializes the radii on first use (``min(R(t)) / 2``), then clips them to
    ``[1e-8, max R(t)]``; no gradient flows through either."""
    flat_params = jax.tree_util.tree_structure(params).flatten_up_to(params)
    flat_anchor = flat_up_to(params, state.anchor, "TPGM state")
    flat_radius = flat_up_to(params, state.radius, "TPGM state")
    leaves = []
    for plan, p, a, r in zip(plans, flat_params, flat_anchor, flat_radius, strict=True):
        if plan.constrained == isinstance(r, optax.MaskedNode):
            raise ValueError(
                f"`mask` at {plan.path!r} is {plan.constrained} now but was "
                f"{not plan.constrained} when the TPGM state was initialized."
            )
        if not plan.constrained:
            leaves.append(r)
            continue
        norms = jax.lax.stop_gradient(row_norms(p - a, plan.kept_axes, norm)).astype(r.dtype)
        r = jnp.where(state.initialized, r, jnp.min(norms) / 2)
        leaves.append(jnp.clip(r, MIN_RADIUS, jnp.max(norms)))
    return jax.tree_util.tree_structure(params).unflatten(leaves)


class TPGM(NamedTuple):
    """The pure functions of a TPGM projection (see :func:`tpgm`).

    Attributes:
      init: ``params -> TPGMState``; the anchor is ``params`` unless given.
      apply: ``(params, state) -> (projected params, state)``: initialize the radii
        if needed, clip them, project. The "apply-only" step of the schedule.
      update_step: ``(params, state, heldout_batch[, train_batches]) -> (state,
        loss)``: one Adam step on the radii with ``d heldout_loss / d radius``.
      update: ``(params, state, heldout_batches[, train_batches]) -> (projected
        params, state, losses)``: ``max_iters`` update steps over the leading axis
        of ``heldout_batches`` (a ``lax.scan``), then ``apply``.
      max_iters: the number of Adam steps of one projection update.
    """

    init: Callable[..., TPGMState]
    apply: Callable[..., tuple[PyTree, TPGMState]]
    update_step: Callable[..., tuple[TPGMState, jax.Array]]
    update: Callable[..., tuple[PyTree, TPGMState, jax.Array]]
    max_iters: int


def tpgm(
    heldout_loss: LossFn,
    *,
    mask: MaskOrFn = None,
    row_axes: MaskOrFn = None,
    norm: str = "mars",
    proj_lr: float = 1e-2,
    max_iters: int = 1,
    anchor: PyTree | None = None,
    unroll_steps: int = 0,
    train_loss: LossFn | None = None,
    inner_learning_rate: float | None = None,
) -> TPGM:
    r"""TPGM: one projection radius per leaf, learned by bi-level optimization.

    The inner level is the ordinary fine-tuning (the training loop's optimizer).
    The outer level trains the radii :math:`\gamma` on held-out data by
    differentiating the held-out loss through the projection with ``jax.grad``:

    .. math::

      \gamma \leftarrow \mathrm{Adam}\Big(\gamma,\;
        \nabla_\gamma\, L_{\text{held-out}}\big(P(\theta; \gamma)\big)\Big),
      \qquad \theta \leftarrow P(\theta; \gamma)

    with :math:`P` from :func:`project_to_anchor`. Before each use the radii are
    clipped to :math:`[10^{-8}, \max R(\theta - w_0)]`; on first use they are set
    to :math:`\min R(\theta - w_0) / 2`.

    .. note::
      This is the reference (PotatoTian/TPGM ``utils/tpgm.py``): the outer
      gradient is truncated at the projection (the fine-tuned weights are
      constants), 1-D leaves have one L1 norm over the whole vector, the ``1e-8``
      sits in the ratio's denominator, not in the norm. ``unroll_steps > 0`` is an
      option beyond the reference (off by default): the held-out loss is taken
      after ``unroll_steps`` inner SGD steps, each followed by the projection,

      .. math::

        \theta_0 = \theta,\quad \theta_{k} = P\big(\theta_{k-1} - \eta
        \nabla L_{\text{train}}(\theta_{k-1}; b_k); \gamma\big),\quad
        \nabla_\gamma L_{\text{held-out}}(\theta_K)

      a ``jax.grad`` (the inner steps) inside the function that the outer
      ``jax.grad`` differentiates. Memory: reverse mode keeps every inner step's
      params and activations, about ``K x`` (params + one training step's
      activations) on top of a truncated update, plus a second-order pass.

    Args:
      heldout_loss: ``(params, batch) -> scalar``: the loss on a held-out batch,
        with the model in eval mode (batch-norm running statistics, no dropout).
      mask, row_axes, norm: which leaves, which rows, ``"mars"``/``"l2"``; as in
        :func:`ftp_jax.ftp`. Batch-norm statistics are not params and are never
        projected.
      proj_lr: the radius Adam's learning rate (betas 0.9/0.999, eps 1e-8, as
        ``torch.optim.Adam``).
      max_iters: Adam steps per projection update (reference: 1 with
        ``proj_freq=1``; 200 post-hoc).
      anchor: the pre-trained params; default the params passed to ``init``.
      unroll_steps: ``K`` inner steps of the unrolled hypergradient (0: the
        reference's truncated one).
      train_loss: ``(params, batch) -> scalar`` for the inner steps (required when
        ``unroll_steps > 0``).
      inner_learning_rate: :math:`\eta` of the inner SGD steps (required when
        ``unroll_steps > 0``).

    Returns:
      A :class:`TPGM` of pure, jittable functions.

    Example:
      >>> import jax, jax.numpy as jnp, ftp_jax
      >>> def loss(params, batch):
      ...     return jnp.mean((batch["x"] @ params["w"] - batch["y"]) ** 2)
      >>> pre = {"w": jnp.ones((3, 1))}
      >>> projection = ftp_jax.tpgm(loss, proj_lr=1e-2, max_iters=2)
      >>> state = projection.init(pre)
      >>> tuned = {"w": jnp.full((3, 1), 2.0)}
      >>> heldout = {"x": jnp.ones((2, 4, 3)), "y": jnp.ones((2, 4, 1))}
      >>> tuned, state, losses = jax.jit(projection.update)(tuned, state, heldout)
      >>> losses.shape
      (2,)

    References:
      Tian, Dai, Liu, Kira, "Trainable Projected Gradient Method for Robust
      Fine-tuning", CVPR 2023, arXiv:2303.10720.
    """
    if norm not in NORMS:
        raise ValueError(f"unknown `norm` {norm!r}; expected one of {NORMS}.")
    if not callable(heldout_loss):
        raise TypeError("`heldout_loss` must be a function (params, batch) -> scalar loss.")
    if isinstance(max_iters, bool) or not isinstance(max_iters, int) or max_iters < 1:
        raise ValueError(f"`max_iters` must be a positive int, got {max_iters!r}.")
    if not isinstance(unroll_steps, int) or unroll_steps < 0:
        raise ValueError(f"`unroll_steps` must be a non-negative int, got {unroll_steps!r}.")
    if unroll_steps and (train_loss is None or inner_learning_rate is None):
        raise ValueError(
            "`unroll_steps > 0` differentiates through inner training steps: pass "
            "`train_loss=(params, batch) -> loss` and `inner_learning_rate`."
        )
    radius_optimizer = optax.adam(proj_lr, b1=0.9, b2=0.999, eps=1e-8)

    def plans_of(params):
        return leaf_plans(params, mask, row_axes, method="TPGM")

    def init(params: PyTree) -> TPGMState:
        plans = plans_of(params)
        if anchor is not None:
            check_anchor(anchor, params)
        anchor_tree = params if anchor is None else anchor
        radius = masked_like(params, plans, lambda p, _: jnp.zeros((), radius_dtype(p)))
        return TPGMState(
            anchor=masked_like(anchor_tree, plans, lambda a, _: jnp.array(a, copy=True)),
            radius=radius,
            radius_adam=radius_optimizer.init(radius),
            initialized=jnp.zeros((), bool),
        )

    def apply(params: PyTree, state: TPGMState) -> tuple[PyTree, TPGMState]:
        plans = plans_of(params)
        radius = _prepared_radius(params, state, plans, norm)
        projected = _project(params, state.anchor, radius, plans, norm)
        return projected, state._replace(radius=radius, initialized=jnp.ones((), bool))

    def outer_loss(radius, params, anchor_tree, plans, heldout_batch, train_batches):
        if not unroll_steps:
            return heldout_loss(_project(params, anchor_tree, radius, plans, norm), heldout_batch)
        theta = params
        for k in range(unroll_steps):
            batch = jax.tree_util.tree_map(lambda x, k=k: x[k], train_batches)
            gradient = jax.grad(train_loss)(theta, batch)
            stepped = jax.tree_util.tree_map(
                lambda p, g: p - inner_learning_rate * g, theta, gradient
            )
            theta = _project(stepped, anchor_tree, radius, plans, norm, stop_gradient=False)
        return heldout_loss(theta, heldout_batch)

    def update_step(params, state, heldout_batch, train_batches=None):
        if unroll_steps and train_batches is None:
            raise ValueError(
                f"unrolled TPGM needs `train_batches` with a leading axis of {unroll_steps}."
            )
        plans = plans_of(params)
        radius = _prepared_radius(params, state, plans, norm)
        loss, grads = jax.value_and_grad(outer_loss)(
            radius, params, state.anchor, plans, heldout_batch, train_batches
        )
        updates, radius_adam = radius_optimizer.update(grads, state.radius_adam, radius)
        new_state = TPGMState(
            anchor=state.anchor,
            radius=optax.apply_updates(radius, updates),
            radius_adam=radius_adam,
            initialized=jnp.ones((), bool),
        )
        return new_state, loss

    def update(params, state, heldout_batches, train_batches=None):
        leading = {np.shape(x)[0] for x in jax.tree_util.tree_leaves(heldout_batches)}
        if leading != {max_iters}:
            raise ValueError(
                f"`heldout_batches` must stack max_iters={max_iters} batches on a leading "
                f"axis; its leaves have leading sizes {sorted(leading)}."
            )

        def body(state, batches):
            heldout_batch, train = batches
            return update_step(params, state, heldout_batch, train)

        state, losses = jax.lax.scan(body, state, (heldout_batches, train_batches))
        projected, state = apply(params, state)
        return projected, state, losses

    return TPGM(init=init, apply=apply, update_step=update_step, update=update, max_iters=max_iters)


def tpgm_radii(state: TPGMState) -> PyTree:
    """The radii as a tree like the params, ``None`` at excluded leaves."""
    return jax.tree_util.tree_map(
        lambda r: None if isinstance(r, optax.MaskedNode) else r,
        state.radius,
        is_leaf=lambda x: isinstance(x, optax.MaskedNode),
    )


def projection_action(iteration: int, proj_freq: int) -> str:
    """What TPGM does after the base optimizer's step at ``iteration`` of the epoch.

    The reference's DomainNet schedule: ``"update"`` (projection update, then
    apply) when ``iteration % proj_freq == 0``, ``"apply"`` otherwise, and
    ``"none"`` when ``proj_freq == 0`` (TPGM disabled).
    """
    if proj_freq < 0:
        raise ValueError(f"`proj_freq` must be >= 0 (0 disables TPGM), got {proj_freq}.")
    if proj_freq == 0:
        return "none"
    return "update" if iteration % proj_freq == 0 else "apply"


def _structure_signature(batch: PyTree):
    leaves, treedef = jax.tree_util.tree_flatten(batch)
    return treedef, [(np.shape(x), _dtype_of(x)) for x in leaves]


def _dtype_of(x: Any) -> np.dtype:
    return x.dtype if hasattr(x, "dtype") else np.result_type(x)


def run_projection_update(
    projection: TPGM,
    params: PyTree,
    state: TPGMState,
    heldout: Iterable[PyTree],
    *,
    update_step: Callable[..., tuple[TPGMState, jax.Array]] | None = None,
    apply: Callable[..., tuple[PyTree, TPGMState]] | None = None,
    iterator: Any = None,
) -> tuple[PyTree, TPGMState, list[float], Any]:
    """One projection update from a held-out iterable: ``max_iters`` steps, then apply.

    Pulls one batch per Adam step (the reference's ``tpgm_iters``), restarting
    ``heldout`` when it runs out, and runs ``update_step`` (pass a jitted one to
    avoid retracing: ``jax.jit(projection.update_step)``) on each.

    Args:
      projection: from :func:`tpgm`.
      params, state: the fine-tuned params and the TPGM state.
      heldout: a re-iterable of batches (e.g. a loader over the held-out split).
      update_step, apply: jitted versions of ``projection.update_step`` /
        ``projection.apply``; default the plain functions.
      iterator: an iterator over ``heldout`` to continue from (returned by the
        previous call), so that consecutive updates see consecutive batches.

    Returns:
      ``(projected params, state, losses, iterator)``.

    Raises:
      ValueError: if ``heldout`` yields no batch, or a batch whose structure,
        shapes or dtypes differ from the first one.
    """
    update_step = update_step or projection.update_step
    apply = apply or projection.apply
    iterator = iter(heldout) if iterator is None else iterator
    expected = None
    losses = []
    for index in range(projection.max_iters):
        try:
            batch = next(iterator)
        except StopIteration:
            iterator = iter(heldout)
            if iterator is heldout:
                raise ValueError(
                    "the held-out iterator yielded no batch (it is empty or exhausted) and "
                    "cannot be restarted: pass a re-iterable (a list or a loader over the "
                    f"held-out split); TPGM needs {projection.max_iters} batches per update."
                ) from None
            try:
                batch = next(iterator)
            except StopIteration:
                raise ValueError(
                    "the held-out data yielded no batch: TPGM's projection update needs "
                    "held-out batches (e.g. the validation split); check the split is "
                    "not empty."
                ) from None
        signature = _structure_signature(batch)
        if expected is None:
            expected = signature
        elif signature != expected:
            raise ValueError(
                f"held-out batch #{index} has structure {signature[0]} with leaves "
                f"{signature[1]}, but the first batch had {expected[0]} with {expected[1]}."
                " Every held-out batch must have the same structure (drop the last "
                "partial batch)."
            )
        if index == 0:
            try:
                state, loss = update_step(params, state, batch)
            except (TypeError, KeyError, ValueError, IndexError) as error:
                raise ValueError(
                    f"the held-out batch (structure {signature[0]}, leaves {signature[1]}) "
                    f"does not fit `heldout_loss`: {type(error).__name__}: {error}"
                ) from error
        else:
            state, loss = update_step(params, state, batch)
        losses.append(float(loss))
    params, state = apply(params, state)
    return params, state, losses, iterator
