"""Models for the experiments (Flax NNX)."""

from ftp_jax.models.small_cnn import SmallCNN, replace_head

__all__ = ["SmallCNN", "replace_head"]
