"""ftp_jax: robust fine-tuning in JAX.

FTP (Fast Trainable Projection, NeurIPS 2023) and TPGM (Trainable Projected
Gradient Method, CVPR 2023) as chainable Optax transforms that wrap a base
optimizer, the peer methods under the same API, and the projection machinery
they share. ``import ftp_jax`` needs only jax, optax and numpy; the
training loop, data, models, converters and experiments are subpackages with
their own extras (``pip install "ftp_jax[train]"``).
"""

from ftp_jax._ftp import FTPState, ftp, ftp_adamw, ftp_radii, ftp_sgd
from ftp_jax._l2sp import L2SPDecoupledState, L2SPState, l2sp, l2sp_decoupled, l2sp_penalty
from ftp_jax._lpft import LPFTState, lp_ft
from ftp_jax._mars_pgm import MarsPGMState, mars_pgm, project_fixed_radius
from ftp_jax._paths import leaf_path, leaf_paths, path_rules
from ftp_jax._projection import hard_clip_unit, projection_ratio, radial_projection, row_norms
from ftp_jax._readouts import radii, radius_gradients
from ftp_jax._row_axes import flax_row_axes, torch_row_axes
from ftp_jax._spd import SPDState, spd, spd_leaf_update
from ftp_jax._tpgm import TPGMState, project_to_anchor, tpgm, tpgm_post_hoc, tpgm_radii
from ftp_jax._wise import wise_ft

__all__ = [
    "FTPState",
    "L2SPDecoupledState",
    "L2SPState",
    "LPFTState",
    "MarsPGMState",
    "SPDState",
    "TPGMState",
    "flax_row_axes",
    "ftp",
    "ftp_adamw",
    "ftp_radii",
    "ftp_sgd",
    "l2sp",
    "l2sp_decoupled",
    "l2sp_penalty",
    "lp_ft",
    "mars_pgm",
    "project_fixed_radius",
    "spd",
    "spd_leaf_update",
    "leaf_path",
    "leaf_paths",
    "path_rules",
    "project_to_anchor",
    "hard_clip_unit",
    "projection_ratio",
    "radial_projection",
    "radii",
    "radius_gradients",
    "row_norms",
    "torch_row_axes",
    "tpgm",
    "tpgm_post_hoc",
    "tpgm_radii",
    "wise_ft",
]

__version__ = "0.1.0"

_SUBPACKAGES = ("convert", "data", "experiment", "models", "recipes", "train")


def __getattr__(name: str):
    # `import ftp_jax` stays light; `ftp_jax.models` etc. are imported on first use.
    if name in _SUBPACKAGES:
        import importlib

        return importlib.import_module(f"ftp_jax.{name}")
    raise AttributeError(f"module 'ftp_jax' has no attribute {name!r}")
