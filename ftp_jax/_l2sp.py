"""L2-SP: an L2 penalty toward the pre-trained weights, coupled or decoupled."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from ftp_jax._skeleton import (
    LeafPlan,
    MaskOrFn,
    anchor_tree,
    base_update,
    check_base_optimizer,
    check_nonnegative,
    check_update_trees,
    given_anchor,
    is_params_placeholder,
    leaf_plans,
    map_leaves,
    require_params,
)

__all__ = ["L2SPState", "L2SPDecoupledState", "l2sp", "l2sp_decoupled", "l2sp_penalty"]

PyTree = Any


class L2SPState(NamedTuple):
    """State of :func:`l2sp`: only the anchor."""

    anchor: PyTree  # like params: w0 at constrained leaves, optax.MaskedNode at excluded ones.


class L2SPDecoupledState(NamedTuple):
    """State of :func:`l2sp_decoupled`."""

    count: jax.Array  # int32 []: steps taken; the learning-rate schedule's argument.
    anchor: PyTree  # like params: w0 at constrained leaves, optax.MaskedNode at excluded ones.
    base_state: optax.OptState  # state of the wrapped base optimizer.


def l2sp_leaf_penalty(plan: LeafPlan, param, anchor, *, alpha, beta):
    r"""The L2-SP penalty of one leaf.

    .. math::

      \Omega = \frac{\alpha}{2} \lVert w - w^0 \rVert_2^2 \text{ on a constrained leaf},
      \qquad \frac{\beta}{2} \lVert w \rVert_2^2 \text{ on an excluded one}
    """
    if plan.constrained:
        return 0.5 * alpha * jnp.sum(jnp.square(param - anchor))
    return 0.5 * beta * jnp.sum(jnp.square(param))


def l2sp_leaf_gradient(plan: LeafPlan, param, anchor, *, alpha, beta):
    r"""The L2-SP penalty's gradient at one leaf.

    .. math::

      \nabla \Omega = \alpha (w - w^0) \text{ on a constrained leaf}, \qquad
      \beta\, w \text{ on an excluded one (no pre-trained value)}
    """
    if plan.constrained:
        return alpha * (param - anchor)
    return beta * param


def l2sp_penalty(
    params: PyTree,
    anchor: PyTree,
    alpha: float,
    beta: float = 0.0,
    *,
    mask: MaskOrFn = None,
) -> jax.Array:
    r"""The L2-SP penalty of ``params``: its gradient is what :func:`l2sp` adds.

    .. math::

      \Omega(w) = \frac{\alpha}{2} \lVert w_S - w_S^0 \rVert_2^2
        + \frac{\beta}{2} \lVert w_{\bar S} \rVert_2^2

    with :math:`S` the leaves that ``mask`` constrains (the pre-trained ones) and
    :math:`\bar S` the others (a new head).

    Args:
      params: the params :math:`w`.
      anchor: the pre-trained params :math:`w^0` (same structure; the values at
        excluded leaves are not read and may be anything, ``None`` included).
      alpha: :math:`\alpha`, the strength of the pull toward the anchor.
      beta: :math:`\beta`, the plain L2 (weight decay) strength on excluded leaves.
      mask: as in :func:`ftp_jax.ftp`; default: every leaf.

    Returns:
      The penalty, a float scalar.

    Raises:
      ValueError: negative ``alpha``/``beta``; a ``mask`` or ``anchor`` that does not
        fit ``params``.
    """
    check_nonnegative("alpha", alpha, "L2-SP")
    check_nonnegative("beta", beta, "L2-SP")
    plans = leaf_plans(params, mask, None, method="L2-SP")

    def leaf_penalty(plan, param, anchor):
        return (l2sp_leaf_penalty(plan, param, anchor, alpha=alpha, beta=beta),)

    (penalties,) = map_leaves(
        leaf_penalty,
        plans,
        params,
        state={"anchor": given_anchor(params, anchor, plans)},
        excluded_fn=leaf_penalty,
        method="L2-SP",
    )
    # Summed in the params' order, from a float32 zero.
    return sum(jax.tree_util.tree_leaves(penalties), jnp.zeros((), jnp.float32))


def l2sp(
    alpha: float,
    beta: float = 0.0,
    *,
    mask: MaskOrFn = None,
    anchor: PyTree | None = None,
) -> optax.GradientTransformationExtraArgs:
    r"""L2-SP, coupled: adds the gradient of the L2-SP penalty to the gradient.

    Put it in front of the base optimizer, as ``optax.add_decayed_weights``:
    ``optax.chain(ftp_jax.l2sp(alpha, beta, mask=mask), optax.sgd(lr, momentum))``
    is SGD on the loss plus :func:`l2sp_penalty` (the paper's setting). Placed
    between a preconditioner and the learning rate,
    ``optax.chain(optax.scale_by_adam(), ftp_jax.l2sp(alpha), optax.scale_by_learning_rate(lr))``,
    it is the decoupled form, equal to :func:`l2sp_decoupled` around Adam.

    Symbols: :math:`g` = the incoming updates (gradient), :math:`w` = ``params``,
    :math:`w^0` = ``anchor``.

    .. math::

      g \leftarrow g + \alpha (w - w^0) \text{ on constrained leaves}, \qquad
      g \leftarrow g + \beta w \text{ on excluded leaves}

    Args:
      alpha: :math:`\alpha \ge 0`, the pull toward the anchor. The paper selects
        :math:`\alpha` and :math:`\beta` on validation data.
      beta: :math:`\beta \ge 0`, plain L2 on the excluded leaves (the new head,
        which has no pre-trained value). L2-SP replaces the usual weight decay: do
        not add another one.
      mask: which leaves have a pre-trained value and are pulled toward it (True)
        or get the plain L2 (False): a tree of bools or a function of the params, as
        in :func:`ftp_jax.ftp`. Default: every leaf.
      anchor: the pre-trained params. Default: the params passed to ``init``.

    Returns:
      An ``optax.GradientTransformationExtraArgs`` whose ``update`` requires
      ``params``; its state is an :class:`L2SPState`.

    Raises:
      ValueError: negative ``alpha``/``beta``; at ``init``/``update``, a ``mask``
        or ``anchor`` that does not fit the params (naming the leaf), a mask that
        changed since ``init``, or ``update`` without ``params``.
      TypeError: a constrained leaf that is not floating point.

    Example:
      >>> import jax.numpy as jnp, optax, ftp_jax
      >>> params = {"w": jnp.array([1.0, 2.0])}
      >>> tx = optax.chain(ftp_jax.l2sp(alpha=0.5), optax.sgd(0.1))
      >>> state = tx.init(params)  # params are the anchor
      >>> moved = {"w": jnp.array([3.0, 2.0])}
      >>> updates, _ = tx.update({"w": jnp.zeros(2)}, state, moved)
      >>> updates["w"]  # -0.1 * 0.5 * (moved - anchor)
      Array([-0.1, -0. ], dtype=float32)

    References:
      Li, Grandvalet, Davoine, "Explicit Inductive Bias for Transfer Learning with
      Convolutional Networks", ICML 2018, arXiv:1802.01483.
    """
    check_nonnegative("alpha", alpha, "L2-SP")
    check_nonnegative("beta", beta, "L2-SP")

    def init_fn(params):
        if is_params_placeholder(params):  # optax.tree_utils.tree_map_params
            return L2SPState(anchor=params)
        plans = leaf_plans(params, mask, None, method="L2-SP")
        return L2SPState(anchor=anchor_tree(params, anchor, plans))

    def update_fn(updates, state, params=None, **extra_args):
        del extra_args
        require_params(params, "l2sp")
        check_update_trees("l2sp", params, updates, state.anchor)

        def leaf_update(plan, param, gradient, anchor):  # g + grad Omega
            penalty = l2sp_leaf_gradient(plan, param, anchor, alpha=alpha, beta=beta)
            return ((gradient + penalty).astype(gradient.dtype),)

        (new_updates,) = map_leaves(
            leaf_update,
            leaf_plans(params, mask, None, method="L2-SP"),
            params,
            {"gradient": updates},
            {"anchor": state.anchor},
            excluded_fn=leaf_update,
            method="L2-SP",
        )
        return new_updates, state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def l2sp_decoupled(
    base_optimizer: optax.GradientTransformation,
    learning_rate: optax.ScalarOrSchedule,
    alpha: float,
    beta: float = 0.0,
    *,
    mask: MaskOrFn = None,
    anchor: PyTree | None = None,
) -> optax.GradientTransformationExtraArgs:
    r"""L2-SP, decoupled: decay toward the anchor after the base optimizer's step.

    As AdamW decouples weight decay from Adam (Loshchilov and Hutter, 2019), the
    pull toward the anchor is applied to the params directly, scaled by the
    learning rate and not by the optimizer's preconditioner. Symbols: :math:`u_t`
    = the base optimizer's update, :math:`\eta_t` = ``learning_rate`` at step
    :math:`t` (counted from 0), :math:`w_{t-1}` = ``params``.

    .. math::

      u_t \leftarrow u_t - \eta_t \alpha (w_{t-1} - w^0) \text{ on constrained leaves},
      \qquad u_t \leftarrow u_t - \eta_t \beta\, w_{t-1} \text{ on excluded leaves}

    ``l2sp_decoupled(optax.adam(lr), lr, alpha)`` equals
    ``optax.chain(optax.scale_by_adam(), ftp_jax.l2sp(alpha), optax.scale_by_learning_rate(lr))``
    (tested). Give ``learning_rate`` the same value or schedule as the base
    optimizer's; the wrapper counts its own steps for the schedule, as Optax does.

    Args:
      base_optimizer: the optimizer to wrap, e.g. ``optax.adam(1e-3)``; without
        weight decay of its own (L2-SP replaces it).
      learning_rate: :math:`\eta`, a float or an Optax schedule of the step.
      alpha: :math:`\alpha \ge 0`, the decay rate toward the anchor.
      beta: :math:`\beta \ge 0`, the decay rate toward 0 of the excluded leaves.
      mask: as in :func:`l2sp`.
      anchor: as in :func:`l2sp`.

    Returns:
      An ``optax.GradientTransformationExtraArgs`` whose ``update`` requires
      ``params``; its state is an :class:`L2SPDecoupledState`. Extra keyword
      arguments are passed on to the base optimizer.

    Raises:
      TypeError: ``base_optimizer`` is not a GradientTransformation.
      ValueError: as :func:`l2sp`.

    References:
      Li, Grandvalet, Davoine, "Explicit Inductive Bias for Transfer Learning with
      Convolutional Networks", ICML 2018, arXiv:1802.01483. Decoupling as in
      Loshchilov, Hutter, "Decoupled Weight Decay Regularization", ICLR 2019,
      arXiv:1711.05101.
    """
    check_nonnegative("alpha", alpha, "L2-SP")
    check_nonnegative("beta", beta, "L2-SP")
    base_optimizer = check_base_optimizer(base_optimizer, "l2sp_decoupled")

    def init_fn(params):
        if is_params_placeholder(params):  # optax.tree_utils.tree_map_params
            return L2SPDecoupledState(
                count=jnp.zeros([], jnp.int32),
                anchor=params,
                base_state=base_optimizer.init(params),
            )
        plans = leaf_plans(params, mask, None, method="L2-SP")
        return L2SPDecoupledState(
            count=jnp.zeros([], jnp.int32),
            anchor=anchor_tree(params, anchor, plans),
            base_state=base_optimizer.init(params),
        )

    def update_fn(updates, state, params=None, **extra_args):
        require_params(params, "l2sp_decoupled")
        check_update_trees("l2sp_decoupled", params, updates, state.anchor)
        base_updates, base_state = base_update(
            base_optimizer, updates, state.base_state, params, "l2sp_decoupled", **extra_args
        )
        rate = learning_rate(state.count) if callable(learning_rate) else learning_rate

        def leaf_update(plan, param, base_update, anchor):  # u_t - eta_t grad Omega
            decay = rate * l2sp_leaf_gradient(plan, param, anchor, alpha=alpha, beta=beta)
            return ((base_update - decay).astype(base_update.dtype),)

        (new_updates,) = map_leaves(
            leaf_update,
            leaf_plans(params, mask, None, method="L2-SP"),
            params,
            {"base_update": base_updates},
            {"anchor": state.anchor},
            excluded_fn=leaf_update,
            method="L2-SP",
        )
        return new_updates, state._replace(
            count=optax.safe_int32_increment(state.count), base_state=base_state
        )

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)
