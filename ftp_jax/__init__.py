"""ftp_jax: robust fine-tuning in JAX.

FTP (Fast Trainable Projection, NeurIPS 2023) as a chainable Optax transform that
wraps a base optimizer, and the projection machinery it shares with TPGM.
"""

from ftp_jax._ftp import FTPState, ftp, ftp_adamw, ftp_radii, ftp_sgd
from ftp_jax._paths import leaf_path, leaf_paths, path_rules
from ftp_jax._projection import projection_ratio, row_norms
from ftp_jax._row_axes import flax_row_axes, torch_row_axes

__all__ = [
    "FTPState",
    "flax_row_axes",
    "ftp",
    "ftp_adamw",
    "ftp_radii",
    "ftp_sgd",
    "leaf_path",
    "leaf_paths",
    "path_rules",
    "projection_ratio",
    "row_norms",
    "torch_row_axes",
]

__version__ = "0.1.0"
