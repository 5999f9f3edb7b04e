"""Mixed precision: a model that computes in ``bfloat16`` with its params kept in ``float32``.

Flax's layers take a computation ``dtype`` (activations, convolutions and
matrix products) apart from their ``param_dtype`` (the stored params, float32
here). :func:`with_compute_dtype` sets that ``dtype`` on every layer of a built
model (the models of :mod:`ftp_jax.models` carry a ``dtype`` of their own for
their hand-written parts), so one pre-trained model serves both precisions.
What stays float32 whatever the computation dtype:

- the params, their gradients and the optimizer state (FTP's anchor, radii
  and previous displacement, TPGM's radii, momenta): the params are float32
  and the gradient of a cast is cast back;
- batch norm's statistics, running averages and normalization
  (:func:`float32_statistics`, used by :func:`ftp_jax.models.resnet.batch_norm`);
  layer norm's statistics (Flax computes them in at least float32);
- attention softmaxes (the ViT's and CLIP's attention pooling);
- the logits the loss sees (:func:`ftp_jax.train.steps.cross_entropy` casts
  them to float32).
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
from flax import nnx

__all__ = ["COMPUTE_DTYPES", "compute_dtype", "float32_statistics", "with_compute_dtype"]

#: The computation dtypes a run may choose (``TrainConfig.compute_dtype``).
COMPUTE_DTYPES = ("float32", "bfloat16", "float16")


def compute_dtype(name: str) -> jnp.dtype:
    """The dtype named ``name``, one of :data:`COMPUTE_DTYPES`.

    Raises:
      ValueError: ``name`` is not one of them.
    """
    if name not in COMPUTE_DTYPES:
        raise ValueError(
            f"unknown compute_dtype {name!r}; expected one of {COMPUTE_DTYPES} (bfloat16 "
            "computes activations in bfloat16 and keeps params and optimizer state float32)."
        )
    return jnp.dtype(name)


def with_compute_dtype(model: nnx.Module, dtype: str | Any) -> nnx.Module:
    """``model`` computing in ``dtype``; its params and batch statistics keep their dtype.

    Every sub-module with a ``dtype`` attribute (Flax's ``Conv``, ``Linear``,
    ``BatchNorm``, ``LayerNorm``, and this package's attention modules and
    models) gets ``dtype``. ``"float32"`` returns ``model`` itself, unchanged:
    float32 runs stay bit-identical to runs before this option existed.

    Args:
      model: an NNX model (not modified).
      dtype: ``"float32"``, ``"bfloat16"`` or ``"float16"`` (or the dtype).

    Returns:
      ``model`` for float32; else a new model sharing ``model``'s arrays.

    Raises:
      ValueError: an unknown ``dtype``, naming the known ones.

    Example:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> from ftp_jax.models import SmallCNN, with_compute_dtype
      >>> model = with_compute_dtype(SmallCNN(rngs=nnx.Rngs(0)), "bfloat16")
      >>> model(jnp.zeros((2, 28, 28, 1))).dtype, model.conv1.kernel.dtype
      (dtype(bfloat16), dtype('float32'))
    """
    dtype = compute_dtype(dtype if isinstance(dtype, str) else jnp.dtype(dtype).name)
    if dtype == jnp.float32:
        return model
    graphdef, state = nnx.split(model)
    copy = nnx.merge(graphdef, state)
    for _, module in nnx.iter_modules(copy):
        if hasattr(module, "dtype"):
            module.dtype = dtype
    return copy


def float32_statistics(args: tuple, /, *, dtype: Any = None, inexact: bool = True) -> tuple:
    """A normalization layer's ``promote_dtype`` that leaves every input as it is.

    ``nnx.BatchNorm`` casts its input, running statistics, scale and bias to its
    ``dtype`` before normalizing: with ``dtype=bfloat16``, the running mean and
    variance of ``model.eval()`` would be rounded to bfloat16. With this function
    nothing is cast: the batch statistics are computed in float32 (Flax's
    ``_compute_stats`` promotes to at least float32), the normalization runs in
    float32 (a bfloat16 input meets float32 statistics), and only its output is
    cast to ``dtype``. In float32 it changes nothing (every input is float32).
    """
    del dtype, inexact
    return args
