"""A run's optimizer: the registered method of a :class:`~ftp_jax.train.TrainConfig`, built.

:func:`build_method` turns a run's config into its :class:`Method` (the Optax
transform and what the loop must pass it) through the method's builder in
:mod:`ftp_jax.train.registry`; :func:`check_method_for` does the same, traced,
to check a config against a model before a run; :func:`learning_rate_schedule`
is the run's schedule. The registry's names (the options dataclasses,
``REGISTRY``, ``Entry``, ``Method``, :func:`check_options`, ...) are importable
from here too.

The dependencies go one way: the registry knows no config,
:mod:`ftp_jax.train.config` takes its options dataclasses from the registry,
and this module reads the config.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

import ftp_jax
from ftp_jax._base_optimizers import torch_sgd
from ftp_jax.train import registry
from ftp_jax.train.config import TrainConfig
from ftp_jax.train.registry import (
    REGISTRY,
    Context,
    Entry,
    FTPOptions,
    L2SPOptions,
    LPFTOptions,
    MarsPGMOptions,
    Method,
    NoOptions,
    SPDOptions,
    TPGMOptions,
    check_base,
    check_options,
    options_type,
    probe_loss,
)

__all__ = [
    "METHODS",  # noqa: F822 - module __getattr__: read from the registry at each access
    "REGISTRY",
    "Context",
    "Entry",
    "FTPOptions",
    "L2SPOptions",
    "LPFTOptions",
    "MarsPGMOptions",
    "Method",
    "NoOptions",
    "SPDOptions",
    "TPGMOptions",
    "build_method",
    "check_base",
    "check_method_for",
    "check_options",
    "learning_rate_schedule",
    "options_type",
]

PyTree = Any


def __getattr__(name: str) -> Any:
    """``METHODS``: the registered names, as :data:`ftp_jax.train.registry.METHODS`."""
    if name == "METHODS":
        return registry.METHODS
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
    """The run's base optimizer, built as :func:`ftp_jax.ftp_adamw` and
    :func:`ftp_jax.ftp_sgd` build theirs."""
    method = config.method
    if method.optimizer == "adamw":
        return optax.adamw(schedule, weight_decay=method.weight_decay)
    return torch_sgd(
        schedule,
        momentum=method.momentum,
        nesterov=method.nesterov,
        weight_decay=method.weight_decay,
    )


def check_method_for(config: TrainConfig, params: PyTree, *, row_axes: Any = None) -> None:
    """Builds ``config.method`` for a model's ``params`` as a run does, and traces its init.

    What depends on the model is checked before any data or weights are read:
    ``method.head_pattern`` matches the new head, MARS-PGM's radius rules cover
    the backbone, LP-FT has a head and a backbone, the row rule fits every leaf,
    and every check the transforms make at ``init``. ``params`` may be abstract
    (``jax.ShapeDtypeStruct`` leaves: ``jax.eval_shape`` of the model's
    construction); the build is traced (``jax.eval_shape``), so no device is
    touched.

    Raises:
      ValueError: what :func:`build_method` or the transform's ``init`` refuses.
    """

    def init(params):
        method = _build(config, params, 1, probe_loss, row_axes, traced=True)
        return method.tx.init(params)

    try:
        jax.eval_shape(init, params)
    except TypeError as error:
        raise ValueError(str(error)) from None


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
    return _build(config, params, steps_per_epoch, heldout_loss, row_axes)


def _build(config, params, steps_per_epoch, heldout_loss, row_axes, traced=False) -> Method:
    method = config.method
    schedule = learning_rate_schedule(config, steps_per_epoch)
    mask = ftp_jax.path_rules(
        [(method.head_pattern, False), (r".*", True)], name="method.head_pattern"
    )
    mask(params)  # fails loudly now if the head pattern matches nothing
    context = Context(
        options=method.options,
        head_pattern=method.head_pattern,
        params=params,
        steps_per_epoch=steps_per_epoch,
        schedule=schedule,
        base=_base_optimizer(config, schedule),
        base_on=functools.partial(_base_optimizer, config),
        mask=mask,
        projection_mask=mask if method.exclude_head else None,
        row_axes=row_axes,
        heldout_loss=heldout_loss,
        traced=traced,
    )
    return REGISTRY[method.name].build(context)
