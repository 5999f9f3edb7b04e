"""The Flax training loop: pure jitted steps, methods, checkpoints, and ``fit``."""

from ftp_jax._extras import require_extra

require_extra("train", "ftp_jax.train")

from ftp_jax.train.checkpoint import Checkpointer, CheckpointMismatchError
from ftp_jax.train.config import MethodConfig, TrainConfig
from ftp_jax.train.loop import EvalSet, FitResult, fit
from ftp_jax.train.methods import (
    FTPOptions,
    L2SPOptions,
    LPFTOptions,
    MarsPGMOptions,
    Method,
    NoOptions,
    SPDOptions,
    TPGMOptions,
    build_method,
)
from ftp_jax.train.overrides import apply_overrides
from ftp_jax.train.steps import (
    TrainState,
    initial_train_state,
    make_eval_step,
    make_train_step,
    normalize_images,
)

__all__ = [
    "CheckpointMismatchError",
    "Checkpointer",
    "EvalSet",
    "FTPOptions",
    "FitResult",
    "L2SPOptions",
    "LPFTOptions",
    "MarsPGMOptions",
    "Method",
    "MethodConfig",
    "NoOptions",
    "SPDOptions",
    "TPGMOptions",
    "TrainConfig",
    "TrainState",
    "apply_overrides",
    "build_method",
    "fit",
    "initial_train_state",
    "make_eval_step",
    "make_train_step",
    "normalize_images",
]
