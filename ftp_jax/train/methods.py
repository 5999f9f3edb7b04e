"""The method registry: each method's name, and a builder of its Optax transform.

This module is the one place that lists the fine-tuning methods. Each entry
builds an Optax transform from the run's config (and, for TPGM, says that the
loop must pass held-out batches every ``proj_freq`` steps, and what to run after
training); the training loop knows no method by name. Adding a method: write its
transform in ``ftp_jax/_<method>.py``, and one builder here.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

import jax.numpy as jnp
import optax

import ftp_jax

if TYPE_CHECKING:
    from ftp_jax.train.config import TrainConfig

__all__ = ["METHODS", "Method", "build_method", "learning_rate_schedule"]

PyTree = Any


class Method(NamedTuple):
    """What the loop needs to run one method; no method name in it.

    ``tx`` is the optimizer (FTP, TPGM, ... wrap the base optimizer). With
    ``heldout_every > 0`` the loop passes ``heldout_batches`` (``heldout_iters``
    held-out batches stacked on a leading axis) and ``model_state`` to
    ``tx.update`` after every ``heldout_every``-th step of an epoch (TPGM's
    projection update). With ``post_hoc_iters > 0`` the loop runs
    ``post_hoc(params, batches, state, model_state=...)`` on the selected epoch's
    params, one held-out batch at a time, ``post_hoc_iters`` times, passing the
    returned state back (:func:`ftp_jax.tpgm_post_hoc`).
    """

    tx: optax.GradientTransformation
    heldout_every: int = 0
    heldout_iters: int = 0
    post_hoc_iters: int = 0
    post_hoc: Callable[..., Any] | None = None


class _Context(NamedTuple):
    """What every builder may use."""

    config: TrainConfig
    params: PyTree
    steps_per_epoch: int
    schedule: optax.Schedule
    base: optax.GradientTransformation  # the base optimizer on the run's schedule
    mask: Any  # path rules: False at the new head (L2-SP, SPD, LP-FT)
    projection_mask: Any  # `mask`, or None when the projection methods take the head too
    row_axes: Any
    heldout_loss: Callable[..., Any] | None


def learning_rate_schedule(config: TrainConfig, steps_per_epoch: int) -> optax.Schedule:
    """The base learning rate per step: constant, cosine, or cosine stepped per epoch."""
    peak = config.method.learning_rate
    total = config.epochs * steps_per_epoch
    warmup = config.warmup_epochs * steps_per_epoch
    if config.lr_schedule == "constant":
        main = optax.constant_schedule(peak)
    elif config.lr_schedule == "cosine":
        main = optax.cosine_decay_schedule(peak, max(total - warmup, 1))
    else:  # cosine_per_epoch: torch's CosineAnnealingLR(T_max=epochs), stepped per epoch

        def main(step):
            epoch = step // steps_per_epoch
            return peak * 0.5 * (1 + jnp.cos(math.pi * epoch / config.epochs))

    if not warmup:
        return main
    ramp = optax.linear_schedule(0.0, peak, warmup)
    return optax.join_schedules([ramp, main], [warmup])


def _base_optimizer(config: TrainConfig, schedule: optax.Schedule):
    method = config.method
    if method.optimizer == "adamw":
        return optax.adamw(schedule, weight_decay=method.weight_decay)
    return optax.chain(
        optax.add_decayed_weights(method.weight_decay),
        optax.sgd(schedule, momentum=method.momentum or None),
    )


def _vanilla(c: _Context) -> Method:
    return Method(c.base)


def _linear_probe(c: _Context) -> Method:
    labels = ftp_jax.path_rules(
        [(c.config.method.head_pattern, "head"), (r".*", "frozen")], name="method.head_pattern"
    )
    return Method(optax.multi_transform({"head": c.base, "frozen": optax.set_to_zero()}, labels))


def _ftp(c: _Context) -> Method:
    method = c.config.method
    return Method(
        ftp_jax.ftp(
            c.base, k=method.ftp_k, mask=c.projection_mask, row_axes=c.row_axes, norm=method.norm
        )
    )


def _tpgm(c: _Context) -> Method:
    method = c.config.method
    if c.heldout_loss is None:
        raise ValueError("method 'tpgm' needs held-out data: pass `heldout_loss`.")
    settings = dict(
        mask=c.projection_mask,
        row_axes=c.row_axes,
        norm=method.norm,
        radius_learning_rate=method.radius_learning_rate,
    )
    tx = c.base
    if method.proj_freq:
        tx = ftp_jax.tpgm(c.base, c.heldout_loss, max_iters=method.max_iters, **settings)
    post_hoc = None
    if method.post_hoc_iters:
        post_hoc = functools.partial(ftp_jax.tpgm_post_hoc, c.heldout_loss, **settings)
    return Method(
        tx,
        heldout_every=method.proj_freq,
        heldout_iters=method.max_iters if method.proj_freq else 0,
        post_hoc_iters=method.post_hoc_iters,
        post_hoc=post_hoc,
    )


def _l2sp(c: _Context) -> Method:
    method = c.config.method
    alpha, beta = method.l2sp_alpha, method.l2sp_beta
    if method.l2sp_decoupled:
        return Method(ftp_jax.l2sp_decoupled(c.base, c.schedule, alpha, beta, mask=c.mask))
    return Method(optax.chain(ftp_jax.l2sp(alpha, beta, mask=c.mask), c.base))


def _mars_pgm(c: _Context) -> Method:
    method = c.config.method
    radius = method.pgm_radius
    if not isinstance(radius, (int, float)):
        rules = [(pattern, value) for pattern, value in radius]
        radius = ftp_jax.path_rules([(method.head_pattern, None), *rules], name="method.pgm_radius")
        radius(c.params)  # fails loudly now if a rule matches nothing or misses a leaf
    return Method(
        ftp_jax.mars_pgm(
            c.base, radius, mask=c.projection_mask, row_axes=c.row_axes, norm=method.norm
        )
    )


def _spd(c: _Context) -> Method:
    return Method(ftp_jax.spd(c.base, c.config.method.spd_strength, mask=c.mask))


def _lp_ft(c: _Context) -> Method:
    switch_step = c.config.method.lp_epochs * c.steps_per_epoch
    shifted = lambda count: c.schedule(count + switch_step)  # noqa: E731
    return Method(
        ftp_jax.lp_ft(
            c.base,
            switch_step,
            mask=c.mask,
            backbone_optimizer=_base_optimizer(c.config, shifted),
        )
    )


# The registry: method name -> builder. The only list of methods.
REGISTRY: dict[str, Callable[[_Context], Method]] = {
    "vanilla": _vanilla,
    "linear_probe": _linear_probe,
    "ftp": _ftp,
    "tpgm": _tpgm,
    "l2sp": _l2sp,
    "mars_pgm": _mars_pgm,
    "spd": _spd,
    "lp_ft": _lp_ft,
}
METHODS = tuple(REGISTRY)


def build_method(
    config: TrainConfig,
    params: PyTree,
    steps_per_epoch: int,
    heldout_loss: Callable[..., Any] | None = None,
    row_axes: Any = None,
) -> Method:
    """Builds the optimizer of ``config.method`` for ``params`` (see :class:`Method`).

    Every method but ``vanilla`` excludes the leaves ``method.head_pattern``
    matches (the new head): FTP, TPGM and MARS-PGM leave them to the base
    optimizer, L2-SP gives them plain L2 (``l2sp_beta``), SPD decays them toward 0
    (its reference's choice for leaves without a pre-trained value), the linear
    probe trains them alone and LP-FT trains them from the first step. LP-FT's
    backbone optimizer continues the run's learning-rate schedule at the switch.

    Args:
      heldout_loss: ``(params, batch, *, model_state) -> loss`` in eval mode; TPGM's.

    Raises:
      ValueError: if ``method.head_pattern`` matches no parameter (the new head
        must exist, or it would be constrained toward its random initialization),
        or TPGM is asked for without a ``heldout_loss``.
    """
    method = config.method
    schedule = learning_rate_schedule(config, steps_per_epoch)
    mask = ftp_jax.path_rules(
        [(method.head_pattern, False), (r".*", True)], name="method.head_pattern"
    )
    mask(params)  # fails loudly now if the head pattern matches nothing
    context = _Context(
        config=config,
        params=params,
        steps_per_epoch=steps_per_epoch,
        schedule=schedule,
        base=_base_optimizer(config, schedule),
        mask=mask,
        projection_mask=mask if method.exclude_head else None,
        row_axes=row_axes,
        heldout_loss=heldout_loss,
    )
    return REGISTRY[method.name](context)
