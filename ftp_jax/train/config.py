"""Configuration of a fine-tuning run: plain, frozen dataclasses, each checked when built.

A method's options dataclass comes from the method registry
(:mod:`ftp_jax.train.registry`); the ``--set key=value`` overrides of any config
are :mod:`ftp_jax.train.overrides` (:func:`apply_overrides`, :func:`config_items`,
:func:`format_config` are importable from here too).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from ftp_jax._base_optimizers import BASE_OPTIMIZERS
from ftp_jax.models.precision import COMPUTE_DTYPES
from ftp_jax.train import registry
from ftp_jax.train._checks import check_choice, check_int
from ftp_jax.train.overrides import apply_overrides, config_items, format_config

__all__ = [
    "BASE_OPTIMIZERS",
    "METHODS",  # noqa: F822 - module __getattr__: read from the registry at each access
    "MethodConfig",
    "TrainConfig",
    "apply_overrides",
    "config_items",
    "format_config",
]

SCHEDULES = ("constant", "cosine", "cosine_per_epoch")


def __getattr__(name: str) -> Any:
    """``METHODS``: the registered method names, as :data:`ftp_jax.train.registry.METHODS`."""
    if name == "METHODS":
        return registry.METHODS
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@dataclasses.dataclass(frozen=True)
class MethodConfig:
    """A fine-tuning method around a base optimizer.

    Attributes:
      name: ``vanilla`` (base optimizer on everything), ``linear_probe`` (the head
        only), ``ftp`` (FTP around the base optimizer), ``tpgm`` (base optimizer +
        TPGM projection), ``l2sp`` (L2-SP penalty), ``mars_pgm`` (projection onto a
        fixed radius), ``spd`` (selective projection decay), ``lp_ft`` (linear
        probe, then full fine-tuning): the names of
        :data:`ftp_jax.train.registry.REGISTRY`.
      optimizer: ``sgd`` (momentum, weight decay added to the gradient, as torch)
        or ``adamw`` (decoupled weight decay).
      learning_rate, momentum, weight_decay: of the base optimizer.
      nesterov: Nesterov momentum for the ``sgd`` base (torch's ``SGD(nesterov=True)``,
        which the FTP reference's ``SGDP`` runs: ``optax.sgd(..., nesterov=True)``);
        needs ``momentum > 0``.
      head_pattern: regex over parameter paths of the new head: excluded from
        FTP/TPGM, the only leaves a linear probe trains. Must match something.
      exclude_head: FTP, TPGM and MARS-PGM leave the head to the base optimizer
        (True, the reference's DomainNet runs) or project it too (False, the
        reference's ImageNet ViT run, "nothing excluded").
      options: the method's own settings, an instance of its registered options
        dataclass (``FTPOptions(k=1.0, norm="mars")``, ``TPGMOptions(...)``, ...;
        see :mod:`ftp_jax.train.registry`); ``None`` = that dataclass's defaults.
        From the command line: ``--set method.options.k=0.5``. Changing ``name``
        of a config whose options are still the defaults takes the new method's
        defaults.
    """

    name: str = "vanilla"
    optimizer: str = "sgd"
    learning_rate: float = 1e-2
    momentum: float = 0.9
    weight_decay: float = 0.0
    nesterov: bool = False
    head_pattern: str = r"head/.*"
    exclude_head: bool = True
    options: Any = None

    def __post_init__(self):
        check_choice("method.optimizer", self.optimizer, BASE_OPTIMIZERS)
        registry.check_base(self)  # learning rate, momentum, weight decay, head pattern
        if self.nesterov and (self.optimizer != "sgd" or not self.momentum > 0):
            raise ValueError(
                f"method.nesterov=True needs the sgd base with momentum > 0, got optimizer="
                f"{self.optimizer!r}, momentum={self.momentum}; set method.optimizer=sgd and "
                "method.momentum=0.9, or method.nesterov=False."
            )
        expected = registry.options_type(self.name)
        options = self.options
        if options is None or (
            type(options) is not expected
            and dataclasses.is_dataclass(options)
            and options == type(options)()  # another method's defaults: the name changed
        ):
            options = expected()
        if type(options) is not expected:
            fields = [f.name for f in dataclasses.fields(expected)]
            raise ValueError(
                f"method.options of method {self.name!r} must be a {expected.__name__} "
                f"(fields {fields}), got {options!r}. Set the name first, then its options: "
                f"MethodConfig(name={self.name!r}, options={expected.__name__}(...))."
            )
        object.__setattr__(self, "options", options)
        if hasattr(options, "check_method"):
            options.check_method(self)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """A fine-tuning run.

    Attributes:
      epochs: passes over the training split.
      batch_size: training batch size (the last partial batch is dropped).
      eval_batch_size: evaluation batch size.
      lr_schedule: ``constant``, ``cosine`` (per step) or ``cosine_per_epoch``
        (constant within an epoch, as the reference).
      warmup_epochs: linear warm-up before the schedule.
      seed: seeds the data order (through the state's RNG) and the new head.
      checkpoint_every: save every this many steps (and at the end); 0 = only at
        the end of each epoch.
      checkpoint_epochs: save at the end of every this many epochs (and of the
        last one, and when stopped). A resumed run replays the epochs since its
        last checkpoint and ends bit-identical; with many short epochs a larger
        value saves the save time.
      keep_checkpoints: how many to keep.
      progress: show a progress bar.
      log_radius_gradients: FTP only: also log the mean of its radius gradient
        ``h_t`` per constrained leaf and epoch, and the share of steps where it
        was positive (:func:`ftp_jax.radius_gradients`; an extra element-wise pass
        per step).
      tensorboard: also write the metrics (train loss, validation accuracy,
        per-leaf radius and distance) as TensorBoard event files in
        ``<workdir>/tensorboard``.
      compute_dtype: the models' computation dtype, one of ``COMPUTE_DTYPES``:
        ``float32``, or ``bfloat16`` (mixed precision: activations, convolutions
        and matrix products in bfloat16; params, optimizer state, loss, batch-norm
        statistics and attention softmaxes in float32; see
        :func:`ftp_jax.models.with_compute_dtype`), or ``float16`` (the same, with
        no loss scaling: small gradients can underflow; prefer bfloat16). The
        recipes default to bfloat16.
    """

    epochs: int = 10
    batch_size: int = 32
    eval_batch_size: int = 512
    lr_schedule: str = "cosine_per_epoch"
    warmup_epochs: int = 0
    seed: int = 0
    checkpoint_every: int = 0
    checkpoint_epochs: int = 1
    keep_checkpoints: int = 2
    progress: bool = True
    compute_dtype: str = "float32"
    log_radius_gradients: bool = False
    tensorboard: bool = True
    method: MethodConfig = dataclasses.field(default_factory=MethodConfig)

    def __post_init__(self):
        check_choice("lr_schedule", self.lr_schedule, SCHEDULES)
        check_choice("compute_dtype", self.compute_dtype, COMPUTE_DTYPES)
        for name in (
            "epochs",
            "batch_size",
            "eval_batch_size",
            "keep_checkpoints",
            "checkpoint_epochs",
        ):
            check_int(name, getattr(self, name), 1)
        for name in ("warmup_epochs", "seed", "checkpoint_every"):
            check_int(name, getattr(self, name), 0)
        if self.warmup_epochs > self.epochs:
            raise ValueError(
                f"warmup_epochs={self.warmup_epochs} is longer than the run (epochs="
                f"{self.epochs}); set warmup_epochs <= epochs (0 = no warm-up)."
            )
        if not isinstance(self.progress, bool):
            raise ValueError(f"progress must be True or False, got {self.progress!r}.")
        if hasattr(self.method.options, "check_run"):
            self.method.options.check_run(self)
