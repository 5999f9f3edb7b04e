"""The default robust fine-tuning experiment (digits, offline)."""

from ftp_jax._extras import require_extra

require_extra("experiments", "ftp_jax.experiment")

from ftp_jax.experiment.config import ExperimentConfig, MethodRun, default_config, quick
from ftp_jax.experiment.run import run_experiment

__all__ = ["ExperimentConfig", "MethodRun", "default_config", "quick", "run_experiment"]
