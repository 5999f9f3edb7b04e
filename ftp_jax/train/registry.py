"""The method registry: each method's name, its options dataclass and a builder of its transform.

This module is the one place that lists the fine-tuning methods. Each entry is
a small frozen dataclass of the method's own settings (``method.options`` in a
:class:`~ftp_jax.train.MethodConfig`: ``FTPOptions(k=1.0, norm="mars")``) and a
builder of its Optax transform from what the run provides (a :class:`Context`:
the options, the base optimizer, the masks; for TPGM the builder also says that
the loop must pass held-out batches every ``proj_freq`` steps, and what to run
after training); the training loop knows no method by name.
Adding a method: write its transform in ``ftp_jax/_<method>.py``, and here its
options dataclass and one builder, registered in ``REGISTRY``.

The registry knows nothing of the run's config: :mod:`ftp_jax.train.config`
reads it (a :class:`~ftp_jax.train.MethodConfig` takes its options dataclass
from here), and :mod:`ftp_jax.train.methods` builds a run's optimizer from a
config through it. Every name of this module is also importable from
:mod:`ftp_jax.train.methods`.

One rule in one place: an options dataclass does not repeat its transform's
argument checks. Constructing one runs :func:`check_options`, which builds the
method's transform (through its builder, as a run does) around
``optax.identity()`` and initializes it on a tiny tree: a value the transform
refuses is refused there, at config time, with the transform's own message.
The dataclasses check only what is theirs (settings of the run, not arguments
of the transform: TPGM's ``proj_freq``, LP-FT's ``lp_epochs``).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import numbers
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

import ftp_jax
from ftp_jax.train._checks import check_choice, check_int

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
    "check_base",
    "check_options",
    "options_type",
]

PyTree = Any


@dataclasses.dataclass(frozen=True)
class NoOptions:
    """A method without settings of its own (``vanilla``, ``linear_probe``)."""


@dataclasses.dataclass(frozen=True)
class FTPOptions:
    """FTP's settings (:func:`ftp_jax.ftp`, which checks them).

    Attributes:
      k: the gradient annealing factor, in [0, 1].
      norm: ``mars`` (per row, max-abs sum) or ``l2``.
    """

    k: float = 1.0
    norm: str = "mars"

    def __post_init__(self):
        check_options(self)


@dataclasses.dataclass(frozen=True)
class TPGMOptions:
    """TPGM's settings (:func:`ftp_jax.tpgm`, :func:`ftp_jax.tpgm_post_hoc`, which check
    ``norm``, ``max_iters`` and ``radius_learning_rate``).

    Attributes:
      norm: ``mars`` or ``l2``.
      proj_freq: a projection update every ``proj_freq`` steps (the projection
        alone on the others); 0 = post-hoc only.
      radius_learning_rate: the radius Adam's learning rate (the reference's
        ``proj_lr``).
      max_iters: radius-Adam steps per update, each on its own held-out batch.
      post_hoc_iters: radius-Adam steps of the post-hoc update at the end (0 = none).
    """

    norm: str = "mars"
    proj_freq: int = 1
    radius_learning_rate: float = 1e-2
    max_iters: int = 1
    post_hoc_iters: int = 0

    def __post_init__(self):
        # The loop's settings (not arguments of the transform): checked here.
        check_int("method.options.proj_freq", self.proj_freq, 0)
        check_int("method.options.post_hoc_iters", self.post_hoc_iters, 0)
        if self.proj_freq == 0 and self.post_hoc_iters == 0:
            raise ValueError(
                "method 'tpgm' with proj_freq=0 and post_hoc_iters=0 never projects; set "
                "method.options.proj_freq >= 1 (during training) or "
                "method.options.post_hoc_iters >= 1 (at the end)."
            )
        check_options(self)


@dataclasses.dataclass(frozen=True)
class L2SPOptions:
    """L2-SP's settings (:func:`ftp_jax.l2sp`, :func:`ftp_jax.l2sp_decoupled`, which check them).

    Attributes:
      alpha: the pull toward the pre-trained weights.
      beta: the plain L2 on the new head.
      decoupled: a decay after the base step, scaled by the learning rate
        (AdamW-style), instead of a gradient term before it.
    """

    alpha: float = 1.0
    beta: float = 0.01
    decoupled: bool = False

    def __post_init__(self):
        if not isinstance(self.decoupled, (bool, np.bool_)):
            raise ValueError(
                f"method.options.decoupled must be True or False, got {self.decoupled!r}."
            )
        check_options(self)

    def check_method(self, method) -> None:
        """L2-SP replaces weight decay: the base optimizer's must be 0."""
        if method.weight_decay:
            raise ValueError(
                f"method 'l2sp' replaces weight decay (options.beta is its L2 on the new head); "
                f"set method.weight_decay=0, got {method.weight_decay}."
            )


@dataclasses.dataclass(frozen=True)
class MarsPGMOptions:
    """MARS-PGM's settings (:func:`ftp_jax.mars_pgm`, which checks them).

    Attributes:
      radius: the fixed radius (in ``norm`` units): one number for every
        constrained leaf, or ``((regex, radius), ...)`` rules over parameter
        paths (first full match wins; the head is excluded anyway).
      norm: ``mars`` or ``l2``.
    """

    radius: float | tuple[tuple[str, float], ...] = 0.5
    norm: str = "mars"

    def __post_init__(self):
        check_options(self)


@dataclasses.dataclass(frozen=True)
class SPDOptions:
    """SPD's settings (:func:`ftp_jax.spd`, which checks them).

    Attributes:
      strength: SPD's lambda (the reference's ``weight_decay``).
    """

    strength: float = 1.0

    def __post_init__(self):
        check_options(self)


@dataclasses.dataclass(frozen=True)
class LPFTOptions:
    """LP-FT's settings (:func:`ftp_jax.lp_ft`).

    Attributes:
      lp_epochs: linear-probe epochs (head only) before full fine-tuning; at
        least 1 (0 is method ``vanilla``) and fewer than the run's epochs.
    """

    lp_epochs: int = 10

    def __post_init__(self):
        # Epochs are the run's unit (the transform counts steps): checked here.
        check_int("method.options.lp_epochs", self.lp_epochs, 0)
        if self.lp_epochs < 1:
            raise ValueError(
                f"method 'lp_ft' needs options.lp_epochs >= 1 (linear-probe epochs before full "
                f"fine-tuning), got {self.lp_epochs}; lp_epochs=0 is method 'vanilla'."
            )
        check_options(self)

    def check_run(self, config) -> None:
        """The probe must leave epochs for full fine-tuning."""
        if self.lp_epochs >= config.epochs:
            raise ValueError(
                f"method 'lp_ft' with options.lp_epochs={self.lp_epochs} and epochs="
                f"{config.epochs} never fine-tunes the backbone; set method.options.lp_epochs "
                "below epochs."
            )


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


class Context(NamedTuple):
    """What every builder may use: the run's side of a method (a builder's argument)."""

    options: Any  # the method's options dataclass
    head_pattern: str  # regex over parameter paths of the new head
    params: PyTree
    steps_per_epoch: int
    schedule: optax.Schedule
    base: optax.GradientTransformation  # the base optimizer on the run's schedule
    # The base optimizer on another schedule (LP-FT's backbone continues the run's).
    base_on: Callable[[optax.Schedule], optax.GradientTransformation]
    mask: Any  # path rules: False at the new head (L2-SP, SPD, LP-FT)
    projection_mask: Any  # `mask`, or None when the projection methods take the head too
    row_axes: Any
    heldout_loss: Callable[..., Any] | None
    probe: bool = False  # building for check_options (a tiny tree, no run)
    # Only traced, to check (check_options, methods.check_method_for): FTP's state layout is fixed
    # instead of chosen by backend, so that no JAX backend is started (a multi-host run
    # initializes JAX after its config is checked). The same checks run in every layout.
    traced: bool = False


def _finite(value: Any) -> bool:
    real = isinstance(value, numbers.Real) and not isinstance(value, bool)
    return real and math.isfinite(value)


def check_base(method: Any) -> None:
    """The base optimizer's settings of a :class:`~ftp_jax.train.MethodConfig` (what
    :func:`ftp_jax.train.methods.build_method` builds it from): ``learning_rate`` > 0,
    ``momentum`` in [0, 1), ``weight_decay`` >= 0, each finite, and ``head_pattern`` a regex.

    Raises:
      ValueError: naming the key, the value and the rule.
    """
    rules = (
        ("learning_rate", lambda v: v > 0, "a finite number > 0"),
        ("momentum", lambda v: 0 <= v < 1, "a finite number in [0, 1) (0 = plain SGD)"),
        ("weight_decay", lambda v: v >= 0, "a finite number >= 0"),
    )
    for name, rule, expected in rules:
        value = getattr(method, name)
        if not (_finite(value) and rule(value)):
            raise ValueError(f"method.{name} must be {expected}, got {value!r}.")
    if not isinstance(method.head_pattern, str):
        raise ValueError(
            f"method.head_pattern must be a regex (text), got {method.head_pattern!r}."
        )
    ftp_jax.path_rules([(method.head_pattern, False)], name="method.head_pattern")


def _vanilla(c: Context) -> Method:
    return Method(c.base)


def _linear_probe(c: Context) -> Method:
    labels = ftp_jax.path_rules(
        [(c.head_pattern, "head"), (r".*", "frozen")], name="method.head_pattern"
    )
    return Method(optax.multi_transform({"head": c.base, "frozen": optax.set_to_zero()}, labels))


def _ftp(c: Context) -> Method:
    options = c.options
    layout = {"layout": "leaves"} if c.traced else {}
    return Method(
        ftp_jax.ftp(
            c.base,
            k=options.k,
            mask=c.projection_mask,
            row_axes=c.row_axes,
            norm=options.norm,
            **layout,
        )
    )


def _tpgm(c: Context) -> Method:
    options = c.options
    if c.heldout_loss is None:
        raise ValueError("method 'tpgm' needs held-out data: pass `heldout_loss`.")
    settings = dict(
        mask=c.projection_mask,
        row_axes=c.row_axes,
        norm=options.norm,
        radius_learning_rate=options.radius_learning_rate,
    )
    # Built even for post-hoc only (proj_freq=0): tpgm() checks every option.
    projecting = ftp_jax.tpgm(c.base, c.heldout_loss, max_iters=options.max_iters, **settings)
    post_hoc = None
    if options.post_hoc_iters:
        post_hoc = functools.partial(ftp_jax.tpgm_post_hoc, c.heldout_loss, **settings)
    return Method(
        projecting if options.proj_freq else c.base,
        heldout_every=options.proj_freq,
        heldout_iters=options.max_iters if options.proj_freq else 0,
        post_hoc_iters=options.post_hoc_iters,
        post_hoc=post_hoc,
    )


def _l2sp(c: Context) -> Method:
    options = c.options
    alpha, beta = options.alpha, options.beta
    if options.decoupled:
        return Method(ftp_jax.l2sp_decoupled(c.base, c.schedule, alpha, beta, mask=c.mask))
    return Method(optax.chain(ftp_jax.l2sp(alpha, beta, mask=c.mask), c.base))


def _mars_pgm(c: Context) -> Method:
    options = c.options
    radius = options.radius
    name = "method.options.radius"
    if isinstance(radius, (str, bytes)) or not isinstance(radius, (numbers.Real, tuple, list)):
        raise ValueError(
            f"{name} must be a number >= 0 or rules ((regex, radius), ...), e.g. "
            f"((r'conv.*', 1.0), (r'.*', 0.5)); got {radius!r}."
        )
    if isinstance(radius, (tuple, list)):
        if not radius:
            raise ValueError(f"{name}: rules ((regex, radius), ...) must not be empty.")
        ftp_jax.path_rules(radius, name=name)  # each rule a (regex, value) pair, the regex valid
        rules = ftp_jax.path_rules([(c.head_pattern, None), *radius], name=name)
        for pattern, value in radius:  # each rule's radius through mars_pgm's own checks
            try:
                every_leaf = ftp_jax.path_rules([(r".*", value)], name=name)
                tx = ftp_jax.mars_pgm(c.base, every_leaf, row_axes=c.row_axes, norm=options.norm)
                jax.eval_shape(tx.init, c.params)  # its per-leaf check runs at init
            except ValueError as error:
                raise ValueError(f"{name}, the rule for {pattern!r}: {error}") from None
        if c.probe:  # the rules' paths are the model's: checked when the run builds it
            radius = 0.0
        else:
            radius = rules
            radius(c.params)  # fails loudly now if a rule matches nothing or misses a leaf
    return Method(
        ftp_jax.mars_pgm(
            c.base, radius, mask=c.projection_mask, row_axes=c.row_axes, norm=options.norm
        )
    )


def _spd(c: Context) -> Method:
    return Method(ftp_jax.spd(c.base, c.options.strength, mask=c.mask))


def _lp_ft(c: Context) -> Method:
    switch_step = c.options.lp_epochs * c.steps_per_epoch
    shifted = lambda count: c.schedule(count + switch_step)  # noqa: E731
    return Method(
        ftp_jax.lp_ft(c.base, switch_step, mask=c.mask, backbone_optimizer=c.base_on(shifted))
    )


class Entry(NamedTuple):
    """A registered method: its options dataclass and its builder."""

    options: type
    build: Callable[[Context], Method]


# The registry: method name -> (options, builder). The only list of methods.
REGISTRY: dict[str, Entry] = {
    "vanilla": Entry(NoOptions, _vanilla),
    "linear_probe": Entry(NoOptions, _linear_probe),
    "ftp": Entry(FTPOptions, _ftp),
    "tpgm": Entry(TPGMOptions, _tpgm),
    "l2sp": Entry(L2SPOptions, _l2sp),
    "mars_pgm": Entry(MarsPGMOptions, _mars_pgm),
    "spd": Entry(SPDOptions, _spd),
    "lp_ft": Entry(LPFTOptions, _lp_ft),
}


def __getattr__(name: str) -> Any:
    """``METHODS``: the registered names as a tuple, read from :data:`REGISTRY` at each
    access, so that a method registered after import is listed too."""
    if name == "METHODS":
        return tuple(REGISTRY)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def options_type(name: str) -> type:
    """The options dataclass of method ``name`` (a registered one, added ones included)."""
    check_choice("method.name", name, tuple(REGISTRY))
    return REGISTRY[name].options


# check_options' tiny tree: a backbone and a head leaf of each rank a row rule meets.
_PROBE_HEAD = r"head/.*"


def _probe_params() -> PyTree:
    leaf = lambda *shape: np.zeros(shape, np.float32)  # noqa: E731
    return {
        "backbone": {"kernel": leaf(3, 2), "bias": leaf(2)},
        "head": {"kernel": leaf(2, 2), "bias": leaf(2)},
    }


def probe_loss(params, batch, **kwargs):
    """A held-out loss for building a method only to check it (TPGM needs one)."""
    del batch, kwargs
    return sum(jnp.sum(leaf) for leaf in jax.tree_util.tree_leaves(params))


@functools.lru_cache(maxsize=512)
def _probe(key: str, options: Any) -> None:
    """``key``: ``repr(options)``, so that equal options of other types (``k=True`` and
    ``k=1``, which hash alike) are cached apart."""
    del key
    entry = next(e for e in REGISTRY.values() if type(options) is e.options)
    params = _probe_params()
    mask = ftp_jax.path_rules([(_PROBE_HEAD, False), (r".*", True)], name="mask")
    schedule = optax.constant_schedule(1e-2)
    context = Context(
        options=options,
        head_pattern=_PROBE_HEAD,
        params=params,
        steps_per_epoch=1,
        schedule=schedule,
        base=optax.identity(),
        base_on=lambda schedule: optax.identity(),
        mask=mask,
        projection_mask=mask,
        row_axes=None,
        heldout_loss=probe_loss,
        probe=True,
        traced=True,
    )
    # Traced, not run: no device is touched (a multi-host run initializes JAX after this).
    jax.eval_shape(entry.build(context).tx.init, params)


def check_options(options: Any) -> None:
    """Checks a method's options by its transform's own checks, in milliseconds.

    Builds the method's transform from ``options`` through its registered
    builder (as :func:`ftp_jax.train.methods.build_method` does for a run) around
    ``optax.identity()``, and initializes it on a tiny tree (abstractly,
    ``jax.eval_shape``: no device is touched, so a multi-host run may call
    ``jax.distributed.initialize()`` after its config is checked): whatever the transform refuses
    (``ftp(k=2)``, ``mars_pgm(radius=-1)``, ``tpgm(max_iters=0)``, ...) is refused
    here, with the transform's message. The options dataclasses call it from
    ``__post_init__``, so that a run config holds only options its transform
    accepts. A result is cached per (hashable) options value. Options whose
    type is not registered are not checked.

    Raises:
      ValueError: the transform's message (a TypeError of the transform is
        turned into a ValueError: a config value was refused).
    """
    if not any(type(options) is entry.options for entry in REGISTRY.values()):
        return
    try:
        hash(options)
    except TypeError:  # a list somewhere in it: no cache
        probe = _probe.__wrapped__
    else:
        probe = _probe
    try:
        probe(repr(options), options)
    except TypeError as error:
        raise ValueError(str(error)) from None
