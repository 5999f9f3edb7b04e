"""The reference trajectories (``tests/data``, copied from ``shared/golden``).

The arrays are in PyTorch layout (output channel on axis 0). ``layout="flax"``
returns the same problem as Flax would store it: nested dicts with ``kernel``
leaves whose output channel is last, so the library's default row rule applies.
"""

from __future__ import annotations

import functools
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

import ftp_jax

DATA = Path(__file__).parent / "data"
FTP_CONFIGS = ("adamp", "adamp_wd_k", "sgdp", "sgdp_nesterov_wd")
TPGM_CASES = tuple(
    (norm, exclusion) for norm in ("mars_norm", "l2_norm") for exclusion in ("all", "head_excluded")
)


# The long float32 TPGM runs: 40 radius-Adam iterations per case, radii reach their bounds.
TPGM_LONG = "tpgm_long_seed3"


@functools.cache
def load(precision: str, stem: str = "reference_seed0") -> dict[str, np.ndarray]:
    """All arrays of the reference file ``<stem>_<precision>.npz`` ("float64"/"float32")."""
    with np.load(DATA / f"{stem}_{precision}.npz") as data:
        return {key: data[key] for key in data.files}


_FLAX_LEAF = {"weight": "kernel", "bias": "bias", "scale": "scale"}


def to_flax(name: str, array: np.ndarray, *, leading: int = 0) -> np.ndarray:
    """A PyTorch-layout array in Flax layout (output channel last for kernels).

    ``leading`` axes (e.g. time) are left in place.
    """
    if not name.endswith(".weight"):
        return array
    rest = list(range(leading, array.ndim))
    # (out, in, *spatial) -> (*spatial, in, out)
    order = rest[2:] + [rest[1], rest[0]]
    return np.transpose(array, list(range(leading)) + order)


def _leaf_path(name: str, layout: str) -> str:
    """The path of reference leaf ``name`` ("fc.weight") in ``layout`` ("fc/kernel")."""
    if layout == "torch":
        return name
    module, leaf = name.split(".")
    return f"{module}/{_FLAX_LEAF[leaf]}"


def _tree(names, arrays, layout):
    if layout == "torch":
        return {name: jnp.asarray(a) for name, a in zip(names, arrays, strict=True)}
    tree: dict = {}
    for name, a in zip(names, arrays, strict=True):
        module, leaf = name.split(".")
        tree.setdefault(module, {})[_FLAX_LEAF[leaf]] = jnp.asarray(a)
    return tree


class FTPProblem:
    """The FTP problem of the reference file, in PyTorch or Flax layout."""

    def __init__(self, precision: str, layout: str):
        self.data = load(precision)
        self.layout = layout
        self.names = [str(n) for n in self.data["leaf_names"]]
        self.excluded = {str(n) for n in self.data["exclude"]}
        self.constrained = [n for n in self.names if n not in self.excluded]
        self.steps = self.data[f"problem/noise/{self.names[0]}"].shape[0]

    def tree(self, prefix: str, leading: int = 0):
        arrays = [self.data[f"{prefix}/{n}"] for n in self.names]
        if self.layout == "flax":
            arrays = [
                to_flax(n, a, leading=leading) for n, a in zip(self.names, arrays, strict=True)
            ]
        return _tree(self.names, arrays, self.layout)

    def path(self, name: str) -> str:
        """The leaf path of a reference leaf name in this layout."""
        return _leaf_path(name, self.layout)

    @property
    def mask(self):
        if self.layout == "torch":
            return {n: n not in self.excluded for n in self.names}
        return ftp_jax.path_rules([(r"head/.*", False), (r".*", True)], name="mask")

    @property
    def row_axes(self):
        return ftp_jax.torch_row_axes if self.layout == "torch" else None

    def config(self, config: str, key: str, default=None):
        full = f"ftp/{config}/config/{key}"
        return self.data[full].item() if full in self.data else default

    def optimizer(self, config: str, **options) -> optax.GradientTransformation:
        """The reference's AdamP / SGDP for ``config``, through the shortcuts (``options``:
        more of their arguments, e.g. ``layout``)."""
        kwargs = dict(k=self.config(config, "k"), mask=self.mask, row_axes=self.row_axes, **options)
        lr, wd = self.config(config, "lr"), self.config(config, "weight_decay")
        if self.config(config, "opt") == "adamp":
            return ftp_jax.ftp_adamw(lr, weight_decay=wd, **kwargs)
        return ftp_jax.ftp_sgd(
            lr,
            momentum=self.config(config, "momentum"),
            nesterov=bool(self.config(config, "nesterov", False)),
            weight_decay=wd,
            **kwargs,
        )

    def gradient_fn(self):
        """``g_t(theta) = a (theta - b_t) + 0.05 sin(theta) + noise_t``."""
        a, noise = self.tree("problem/a"), self.tree("problem/noise", leading=1)
        early, late = self.tree("problem/b_early"), self.tree("problem/b_late")
        half = self.steps // 2

        def gradient(theta, t):
            def leaf(theta_, a_, early_, late_, noise_):
                b = jnp.where(t < half, early_, late_)
                return a_ * (theta_ - b) + 0.05 * jnp.sin(theta_) + noise_[t]

            return jax.tree_util.tree_map(leaf, theta, a, early, late, noise)

        return gradient

    def reference_params(self, config: str):
        return self.tree(f"ftp/{config}/params", leading=1)

    def reference_radii(self, config: str) -> np.ndarray:
        return self.data[f"ftp/{config}/gamma"]


def run_trajectory(tx, theta0, gradient, steps: int, *, jit: bool = True):
    """Runs ``steps`` updates; returns (params after each step, radii after each step)."""

    def step(carry, t):
        theta, state = carry
        updates, state = tx.update(gradient(theta, t), state, theta)
        theta = optax.apply_updates(theta, updates)
        return (theta, state), (theta, ftp_jax.ftp_radii(state))

    carry = (theta0, tx.init(theta0))
    if jit:
        _, (thetas, radii) = jax.jit(lambda c: jax.lax.scan(step, c, jnp.arange(steps)))(carry)
        return thetas, radii
    outputs = []
    for t in range(steps):
        carry, out = step(carry, jnp.asarray(t))
        outputs.append(out)
    return jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *outputs)


class TPGMProblem:
    """A TPGM case of the reference file: a 2-layer MLP, pre-trained and fine-tuned."""

    NAMES = ("fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias")

    def __init__(
        self, precision: str, norm: str, exclusion: str, layout: str, stem: str = "reference_seed0"
    ):
        self.data = load(precision, stem)
        self.prefix = f"tpgm/{norm}/{exclusion}"
        self.norm = "mars" if norm == "mars_norm" else "l2"
        self.exclusion = exclusion
        self.layout = layout
        self.radius_names = [str(n) for n in self.data[f"{self.prefix}/radius_names"]]

    def tree(self, kind: str):
        arrays = [self.data[f"{self.prefix}/{kind}/{n}"] for n in self.NAMES]
        if self.layout == "flax":
            arrays = [to_flax(n, a) for n, a in zip(self.NAMES, arrays, strict=True)]
        return _tree(self.NAMES, arrays, self.layout)

    def path(self, name: str) -> str:
        """The leaf path of a reference leaf name in this layout."""
        return _leaf_path(name, self.layout)

    @property
    def mask(self):
        if self.exclusion == "all":
            return None
        if self.layout == "torch":
            return {n: n in self.radius_names for n in self.NAMES}
        return ftp_jax.path_rules([(r"fc2/.*", False), (r".*", True)], name="mask")

    @property
    def row_axes(self):
        return ftp_jax.torch_row_axes if self.layout == "torch" else None

    @property
    def proj_lr(self) -> float:
        return float(self.data[f"{self.prefix}/config/proj_lr"])

    def batches(self):
        return {
            "x": jnp.asarray(self.data[f"{self.prefix}/x"]),
            "y": jnp.asarray(self.data[f"{self.prefix}/y"]),
        }

    def loss(self, params, batch):
        """Mean cross-entropy of ``relu(x W1^T + b1) W2^T + b2``."""
        if self.layout == "torch":
            w1, b1 = params["fc1.weight"].T, params["fc1.bias"]
            w2, b2 = params["fc2.weight"].T, params["fc2.bias"]
        else:
            w1, b1 = params["fc1"]["kernel"], params["fc1"]["bias"]
            w2, b2 = params["fc2"]["kernel"], params["fc2"]["bias"]
        # Full-precision matmuls, as the reference computed them (PyTorch on the CPU): on
        # GPUs JAX's default float32 matmul precision is TF32, ~1e-3 relative.
        dot = functools.partial(jnp.matmul, precision=jax.lax.Precision.HIGHEST)
        logits = dot(jax.nn.relu(dot(batch["x"], w1) + b1[None]), w2) + b2[None]
        return optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"]).mean()

    def reference_radii(self) -> np.ndarray:
        return self.data[f"{self.prefix}/radii"]
