"""The robust fine-tuning experiments, offline: digit renditions (the default) and digits."""

from ftp_jax._extras import require_extra

require_extra("experiments", "ftp_jax.experiment")

from ftp_jax.experiment.config import (
    ExperimentConfig,
    MethodRun,
    Regime,
    default_config,
    digits_config,
    quick,
    renditions_config,
)
from ftp_jax.experiment.run import run_experiment

__all__ = [
    "ExperimentConfig",
    "MethodRun",
    "Regime",
    "default_config",
    "digits_config",
    "quick",
    "renditions_config",
    "run_experiment",
]
