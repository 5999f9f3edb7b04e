"""LP-FT: linear probing, then full fine-tuning, as one Optax transform."""

from __future__ import annotations

import numbers
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from ftp_jax._skeleton import (
    MaskOrFn,
    base_update,
    check_base_optimizer,
    check_update_trees,
    is_params_placeholder,
    leaf_plans,
)

__all__ = ["LPFTState", "lp_ft"]

PyTree = Any


class LPFTState(NamedTuple):
    """State of :func:`lp_ft`."""

    count: jax.Array  # int32 []: steps taken; the backbone trains from count == switch_step.
    head_state: optax.OptState  # optax.masked state of the base optimizer over the head.
    backbone_state: optax.OptState  # optax.masked state of the backbone optimizer; held
    # unchanged (its initial value) until the switch.


def lp_ft(
    base_optimizer: optax.GradientTransformation,
    switch_step: int,
    *,
    mask: MaskOrFn,
    backbone_optimizer: optax.GradientTransformation | None = None,
) -> optax.GradientTransformationExtraArgs:
    r"""LP-FT: train the new head alone for ``switch_step`` steps, then everything.

    The two phases of Kumar et al. in one transform: during the linear probe
    (LP), the backbone (the leaves ``mask`` marks True, the pre-trained ones) gets
    zero updates and its optimizer does not run, so that its state (momentum,
    Adam moments, step count) is fresh at the switch, as a new optimizer started
    for the fine-tuning (FT) phase would be; the head (False) is trained by
    ``base_optimizer`` throughout, its state carried across the switch.
    Symbols: :math:`t` = the step (from 0), :math:`s` = ``switch_step``,
    :math:`B` = the backbone optimizer.

    .. math::

      u_t^{\text{head}} = \text{base}(g_t^{\text{head}}), \qquad
      u_t^{\text{backbone}} = \begin{cases} 0 & t < s \\
        B(g_t^{\text{backbone}}), \text{ its } (t - s + 1)\text{-th step} & t \ge s
      \end{cases}

    .. note::
      The paper trains the probe to convergence (logistic regression on frozen
      features) and then fine-tunes with a new optimizer and schedule. Here both
      phases run in one training loop. By default the backbone's optimizer is a
      fresh copy of ``base_optimizer`` whose step count starts at 0 at the switch,
      so a learning-rate schedule inside it restarts there; to continue the run's
      global schedule instead, pass ``backbone_optimizer`` built with the schedule
      shifted by ``switch_step`` (``lambda count: schedule(count + switch_step)``),
      as :func:`ftp_jax.train.build_method` does.

    Args:
      base_optimizer: the head's optimizer (and the backbone's, by default).
      switch_step: :math:`s \ge 0`, the number of linear-probe steps; the backbone
        first moves at step :math:`s` (0-based), i.e. on the :math:`(s+1)`-th call.
      mask: required: True at the pre-trained backbone leaves (held during LP),
        False at the new head (trained throughout), as :func:`ftp_jax.ftp`'s
        ``mask``: a tree of bools or a function of the params, e.g.
        ``ftp_jax.path_rules([(r"head/.*", False), (r".*", True)], name="mask")``.
      backbone_optimizer: the backbone's optimizer from the switch on. Default:
        ``base_optimizer`` (with a state of its own).

    Returns:
      An ``optax.GradientTransformationExtraArgs`` with an :class:`LPFTState`.

    Raises:
      TypeError: an optimizer that is not a GradientTransformation.
      ValueError: ``switch_step`` not an integer >= 0; no ``mask``; at ``init``, a
        mask that marks no head leaf or no backbone leaf, or that does not fit the
        params.

    Example:
      >>> import jax.numpy as jnp, optax, ftp_jax
      >>> params = {"backbone": jnp.ones(2), "head": jnp.ones(2)}
      >>> mask = {"backbone": True, "head": False}
      >>> tx = ftp_jax.lp_ft(optax.sgd(0.5), switch_step=1, mask=mask)
      >>> state = tx.init(params)
      >>> grads = {"backbone": jnp.ones(2), "head": jnp.ones(2)}
      >>> updates, state = tx.update(grads, state, params)  # step 0: probe
      >>> updates["backbone"], updates["head"]
      (Array([0., 0.], dtype=float32), Array([-0.5, -0.5], dtype=float32))
      >>> updates, state = tx.update(grads, state, params)  # step 1: fine-tune
      >>> updates["backbone"]
      Array([-0.5, -0.5], dtype=float32)

    References:
      Kumar, Raghunathan, Jones, Ma, Liang, "Fine-Tuning can Distort Pretrained
      Features and Underperform Out-of-Distribution", ICLR 2022, arXiv:2202.10054.
    """
    if (
        isinstance(switch_step, bool)
        or not isinstance(switch_step, numbers.Integral)
        or switch_step < 0
    ):
        raise ValueError(
            f"lp_ft: `switch_step` (linear-probe steps) must be an integer >= 0, got "
            f"{switch_step!r}."
        )
    if mask is None:
        raise ValueError(
            "lp_ft needs `mask`: True at the pre-trained backbone leaves (held during the "
            "linear probe), False at the new head, e.g. ftp_jax.path_rules("
            "[(r'head/.*', False), (r'.*', True)], name='mask')."
        )
    base_optimizer = check_base_optimizer(base_optimizer, "lp_ft")
    if backbone_optimizer is None:
        backbone_optimizer = base_optimizer
    backbone_optimizer = check_base_optimizer(backbone_optimizer, "lp_ft", "backbone_optimizer")

    def backbone_mask(tree):
        plans = leaf_plans(tree, mask, None, method="LP-FT")
        treedef = jax.tree_util.tree_structure(tree)
        return treedef.unflatten([plan.constrained for plan in plans])

    def head_mask(tree):
        return jax.tree_util.tree_map(lambda held: not held, backbone_mask(tree))

    head_tx = optax.masked(base_optimizer, head_mask)
    backbone_tx = optax.masked(backbone_optimizer, backbone_mask)

    def init_fn(params):
        if is_params_placeholder(params):  # optax.tree_utils.tree_map_params
            return LPFTState(  # optax.masked passes the placeholder on unmasked
                count=jnp.zeros([], jnp.int32),
                head_state=head_tx.init(params),
                backbone_state=backbone_tx.init(params),
            )
        held = jax.tree_util.tree_leaves(backbone_mask(params))
        if all(held) or not any(held):
            which = "every" if all(held) else "no"
            raise ValueError(
                f"lp_ft: `mask` marks {which} leaf as backbone (True); LP-FT needs both a "
                f"head (False, trained throughout) and a backbone (True, held until "
                f"switch_step). Leaves: {len(held)}."
            )
        return LPFTState(
            count=jnp.zeros([], jnp.int32),
            head_state=head_tx.init(params),
            backbone_state=backbone_tx.init(params),
        )

    def update_fn(updates, state, params=None, **extra_args):
        if params is not None:
            check_update_trees("lp_ft", params, updates)
        try:
            held = backbone_mask(updates)
        except ValueError as error:
            raise ValueError(f"lp_ft: the trees passed to `update` do not fit: {error}") from None
        # The head's leaves are transformed; the backbone's pass through as gradients.
        updates, head_state = base_update(
            head_tx, updates, state.head_state, params, "lp_ft", **extra_args
        )

        def fine_tune(_):
            return base_update(
                backbone_tx, updates, state.backbone_state, params, "lp_ft", **extra_args
            )

        def probe(_):
            zeroed = jax.tree_util.tree_map(
                lambda h, u: jnp.zeros_like(u) if h else u, held, updates
            )
            return zeroed, state.backbone_state

        updates, backbone_state = jax.lax.cond(state.count >= switch_step, fine_tune, probe, None)
        return updates, LPFTState(
            count=optax.safe_int32_increment(state.count),
            head_state=head_state,
            backbone_state=backbone_state,
        )

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)
