"""The default robust fine-tuning experiment (digits, offline)."""

from ftp_jax.experiment.config import ExperimentConfig, MethodRun, default_config, quick
from ftp_jax.experiment.run import run_experiment

__all__ = ["ExperimentConfig", "MethodRun", "default_config", "quick", "run_experiment"]
