"""Fine-tuning methods as (optimizer, projection) pairs built from a config."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax.numpy as jnp
import optax

import ftp_jax
from ftp_jax.train.config import TrainConfig

__all__ = ["Method", "build_method", "learning_rate_schedule"]

PyTree = Any


class Method(NamedTuple):
    """What the loop needs to run one method."""

    tx: optax.GradientTransformation  # the optimizer (FTP wraps the base one)
    projection: ftp_jax.TPGM | None  # TPGM during training (proj_freq >= 1)
    post_hoc: ftp_jax.TPGM | None  # TPGM's post-hoc update at the end
    proj_freq: int  # TPGM: update every proj_freq steps, apply-only between


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


def build_method(
    config: TrainConfig,
    params: PyTree,
    steps_per_epoch: int,
    heldout_loss: Callable[[PyTree, PyTree], Any] | None = None,
    row_axes: Any = None,
) -> Method:
    """Builds the optimizer (and TPGM projection) of ``config.method`` for ``params``.

    Every method but ``vanilla`` excludes the leaves ``method.head_pattern``
    matches (the new head): FTP, TPGM and MARS-PGM leave them to the base
    optimizer, L2-SP gives them plain L2 (``l2sp_beta``), SPD decays them toward 0
    (its reference's choice for leaves without a pre-trained value), the linear
    probe trains them alone and LP-FT trains them from the first step. LP-FT's
    backbone optimizer continues the run's learning-rate schedule at the switch.

    Raises:
      ValueError: if ``method.head_pattern`` matches no parameter (the new head
        must exist, or it would be constrained toward its random initialization),
        or TPGM is asked for without a ``heldout_loss``.
    """
    method = config.method
    schedule = learning_rate_schedule(config, steps_per_epoch)
    base = _base_optimizer(config, schedule)
    head_rules = [(method.head_pattern, False), (r".*", True)]
    mask = ftp_jax.path_rules(head_rules, name="method.head_pattern")
    mask(params)  # fails loudly now if the head pattern matches nothing
    projection_mask = mask if method.exclude_head else None
    projection = post_hoc = None
    if method.name == "vanilla":
        tx = base
    elif method.name == "linear_probe":
        labels = ftp_jax.path_rules(
            [(method.head_pattern, "head"), (r".*", "frozen")], name="method.head_pattern"
        )
        tx = optax.multi_transform({"head": base, "frozen": optax.set_to_zero()}, labels)
    elif method.name == "ftp":
        tx = ftp_jax.ftp(
            base, k=method.ftp_k, mask=projection_mask, row_axes=row_axes, norm=method.norm
        )
    elif method.name == "l2sp":
        alpha, beta = method.l2sp_alpha, method.l2sp_beta
        if method.l2sp_decoupled:
            tx = ftp_jax.l2sp_decoupled(base, schedule, alpha, beta, mask=mask)
        else:
            tx = optax.chain(ftp_jax.l2sp(alpha, beta, mask=mask), base)
    elif method.name == "mars_pgm":
        radius = method.pgm_radius
        if not isinstance(radius, (int, float)):
            rules = [(pattern, value) for pattern, value in radius]
            radius = ftp_jax.path_rules(
                [(method.head_pattern, None), *rules], name="method.pgm_radius"
            )
            radius(params)  # fails loudly now if a rule matches nothing or misses a leaf
        tx = ftp_jax.mars_pgm(
            base, radius, mask=projection_mask, row_axes=row_axes, norm=method.norm
        )
    elif method.name == "spd":
        tx = ftp_jax.spd(base, method.spd_strength, mask=mask)
    elif method.name == "lp_ft":
        switch_step = method.lp_epochs * steps_per_epoch
        shifted = lambda count: schedule(count + switch_step)  # noqa: E731
        tx = ftp_jax.lp_ft(
            base,
            switch_step,
            mask=mask,
            backbone_optimizer=_base_optimizer(config, shifted),
        )
    else:  # tpgm
        if heldout_loss is None:
            raise ValueError("method 'tpgm' needs held-out data: pass `heldout_loss`.")
        tx = base
        kwargs = dict(
            mask=projection_mask, row_axes=row_axes, norm=method.norm, proj_lr=method.proj_lr
        )
        if method.proj_freq:
            projection = ftp_jax.tpgm(heldout_loss, max_iters=method.max_iters, **kwargs)
        if method.post_hoc_iters:
            post_hoc = ftp_jax.tpgm(heldout_loss, max_iters=method.post_hoc_iters, **kwargs)
    return Method(tx=tx, projection=projection, post_hoc=post_hoc, proj_freq=method.proj_freq)
