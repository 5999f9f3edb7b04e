"""Configuration of a fine-tuning run: plain, frozen dataclasses with checked overrides."""

from __future__ import annotations

import dataclasses
import math
import numbers
import re
from typing import Any

from ftp_jax.train.methods import METHODS

__all__ = ["MethodConfig", "TrainConfig", "apply_overrides", "METHODS", "BASE_OPTIMIZERS"]

BASE_OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("constant", "cosine", "cosine_per_epoch")


@dataclasses.dataclass(frozen=True)
class MethodConfig:
    """A fine-tuning method around a base optimizer.

    Attributes:
      name: ``vanilla`` (base optimizer on everything), ``linear_probe`` (the head
        only), ``ftp`` (FTP around the base optimizer), ``tpgm`` (base optimizer +
        TPGM projection), ``l2sp`` (L2-SP penalty), ``mars_pgm`` (projection onto a
        fixed radius), ``spd`` (selective projection decay), ``lp_ft`` (linear
        probe, then full fine-tuning).
      optimizer: ``sgd`` (momentum, weight decay added to the gradient, as torch)
        or ``adamw`` (decoupled weight decay).
      learning_rate, momentum, weight_decay: of the base optimizer.
      exclude_head: FTP, TPGM and MARS-PGM leave the head to the base optimizer
        (True, the reference's DomainNet runs) or project it too (False, the
        reference's ImageNet ViT run, "nothing excluded").
      head_pattern: regex over parameter paths of the new head: excluded from
        FTP/TPGM, the only leaves a linear probe trains. Must match something.
      ftp_k: FTP's gradient annealing factor.
      norm: ``mars`` or ``l2`` (FTP and TPGM).
      proj_freq: TPGM projection update every ``proj_freq`` steps (apply-only on
        the others); 0 = post-hoc only.
      radius_learning_rate, max_iters: TPGM's radius Adam learning rate (the
        reference's ``proj_lr``) and steps per update.
      post_hoc_iters: TPGM post-hoc update at the end (0 = none).
      l2sp_alpha: L2-SP's pull toward the pre-trained weights (alpha).
      l2sp_beta: L2-SP's plain L2 on the new head (beta).
      l2sp_decoupled: L2-SP as a decay after the base step, scaled by the learning
        rate (AdamW-style), instead of a gradient term before it.
      pgm_radius: MARS-PGM's fixed radius (in ``norm`` units): one number for every
        constrained leaf, or ``((regex, radius), ...)`` rules over parameter paths
        (first full match wins; the head is excluded anyway).
      spd_strength: SPD's lambda (the reference's ``weight_decay``).
      lp_epochs: LP-FT's linear-probe epochs (head only) before full fine-tuning;
        must be fewer than the run's epochs.
    """

    name: str = "vanilla"
    optimizer: str = "sgd"
    learning_rate: float = 1e-2
    momentum: float = 0.9
    weight_decay: float = 0.0
    head_pattern: str = r"head/.*"
    exclude_head: bool = True
    ftp_k: float = 1.0
    norm: str = "mars"
    proj_freq: int = 1
    radius_learning_rate: float = 1e-2
    max_iters: int = 1
    post_hoc_iters: int = 0
    l2sp_alpha: float = 1.0
    l2sp_beta: float = 0.01
    l2sp_decoupled: bool = False
    pgm_radius: float | tuple[tuple[str, float], ...] = 0.5
    spd_strength: float = 1.0
    lp_epochs: int = 10

    def __post_init__(self):
        _check_choice("method.name", self.name, METHODS)
        _check_choice("method.optimizer", self.optimizer, BASE_OPTIMIZERS)
        _check_choice("method.norm", self.norm, ("mars", "l2"))
        if not self.learning_rate > 0:
            raise ValueError(f"method.learning_rate must be > 0, got {self.learning_rate}.")
        if self.name == "tpgm" and self.proj_freq == 0 and self.post_hoc_iters == 0:
            raise ValueError(
                "method 'tpgm' with proj_freq=0 and post_hoc_iters=0 never projects; set "
                "proj_freq >= 1 (during training) or post_hoc_iters >= 1 (at the end)."
            )
        for name in ("l2sp_alpha", "l2sp_beta", "spd_strength"):
            _check_nonnegative(f"method.{name}", getattr(self, name))
        _check_radius(self.pgm_radius)
        if isinstance(self.lp_epochs, bool) or not isinstance(self.lp_epochs, numbers.Integral):
            raise ValueError(f"method.lp_epochs must be an integer, got {self.lp_epochs!r}.")
        if self.name == "lp_ft" and self.lp_epochs < 1:
            raise ValueError(
                f"method 'lp_ft' needs lp_epochs >= 1 (linear-probe epochs before full "
                f"fine-tuning), got {self.lp_epochs}; lp_epochs=0 is method 'vanilla'."
            )
        if self.name == "l2sp" and self.weight_decay:
            raise ValueError(
                f"method 'l2sp' replaces weight decay (l2sp_beta is its L2 on the new head); "
                f"set method.weight_decay=0, got {self.weight_decay}."
            )


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
      keep_checkpoints: how many to keep.
      progress: show a progress bar.
    """

    epochs: int = 10
    batch_size: int = 32
    eval_batch_size: int = 512
    lr_schedule: str = "cosine_per_epoch"
    warmup_epochs: int = 0
    seed: int = 0
    checkpoint_every: int = 0
    keep_checkpoints: int = 2
    progress: bool = True
    method: MethodConfig = dataclasses.field(default_factory=MethodConfig)

    def __post_init__(self):
        _check_choice("lr_schedule", self.lr_schedule, SCHEDULES)
        for name in ("epochs", "batch_size", "eval_batch_size"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}.")
        if self.method.name == "lp_ft" and self.method.lp_epochs >= self.epochs:
            raise ValueError(
                f"method 'lp_ft' with lp_epochs={self.method.lp_epochs} and epochs="
                f"{self.epochs} never fine-tunes the backbone; set method.lp_epochs below "
                "epochs."
            )


def _check_nonnegative(name: str, value: Any) -> None:
    valid = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if not valid or not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}.")


def _check_radius(radius: Any) -> None:
    """A number >= 0, or a non-empty tuple of (regex, number >= 0) rules."""
    if isinstance(radius, numbers.Real) and not isinstance(radius, bool):
        _check_nonnegative("method.pgm_radius", radius)
        return
    usage = (
        "method.pgm_radius must be a number >= 0 or rules ((regex, radius), ...), e.g. "
        "((r'dense/.*', 1.0), (r'.*', 0.5))"
    )
    if not isinstance(radius, (tuple, list)) or not radius:
        raise ValueError(f"{usage}; got {radius!r}.")
    for rule in radius:
        if not (isinstance(rule, (tuple, list)) and len(rule) == 2):
            raise ValueError(f"{usage}; the rule {rule!r} is not a (regex, radius) pair.")
        pattern, value = rule
        try:
            re.compile(pattern)
        except (re.error, TypeError) as error:
            raise ValueError(f"{usage}; the pattern {pattern!r} is invalid: {error}.") from None
        _check_nonnegative(f"method.pgm_radius for {pattern!r}", value)


def _check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}; expected one of {choices}.")


def apply_overrides(config: Any, overrides: list[str] | dict[str, Any]) -> Any:
    """Returns ``config`` with ``key=value`` overrides (``method.learning_rate=0.1``).

    Values are parsed as Python literals when possible (``3``, ``0.1``, ``True``,
    ``'adamw'``), else kept as strings.

    Raises:
      KeyError: for a key the config does not have, listing the valid keys.
    """
    import ast

    if isinstance(overrides, dict):
        items = list(overrides.items())
    else:
        items = []
        for item in overrides:
            if "=" not in item:
                raise ValueError(f"override {item!r} must look like key=value.")
            key, raw = item.split("=", 1)
            try:
                value = ast.literal_eval(raw)
            except (ValueError, SyntaxError):
                value = raw
            items.append((key.strip(), value))
    for key, value in items:
        config = _replace_path(config, key.split("."), value, key)
    return config


def _replace_path(config: Any, parts: list[str], value: Any, full_key: str) -> Any:
    names = [f.name for f in dataclasses.fields(config)]
    head = parts[0]
    if head not in names:
        raise KeyError(f"config has no key {full_key!r}: {type(config).__name__} has {names}.")
    if len(parts) == 1:
        current = getattr(config, head)
        if dataclasses.is_dataclass(current):
            raise KeyError(f"{full_key!r} is a group; set one of its keys, e.g. {full_key}.x=...")
        if isinstance(current, float) and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        return dataclasses.replace(config, **{head: value})
    child = getattr(config, head)
    if not dataclasses.is_dataclass(child):
        raise KeyError(f"config has no key {full_key!r}: {head!r} is not a group.")
    return dataclasses.replace(config, **{head: _replace_path(child, parts[1:], value, full_key)})
