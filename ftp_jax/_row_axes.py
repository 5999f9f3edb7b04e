"""Which axes of a parameter are *rows*: one norm and one projection ratio per row.

The reference code (PyTorch) keeps the output channel, axis 0, and sums over the
rest; 1-D tensors (biases, norm scales) get one norm over the whole vector. Flax
stores kernels with the output channel *last*, so the kept axes depend on the
layer, not on ``ndim``. A row-axes value is the tuple of kept axes; ``()`` means
one norm over the whole tensor.

Default for Flax models (:func:`flax_row_axes`), matching what the reference
computes on the same layer in PyTorch layout:

=================================================  ===============  ===========
leaf (path ends with / shape)                      Flax layout      kept axes
=================================================  ===============  ===========
any 0-D or 1-D leaf (bias, LayerNorm/BatchNorm     ``(n,)``         ``()``
scale, class token)
``bias`` of any rank (attention q/k/v bias)        ``(heads, d)``   ``()``
``embedding`` (``nnx.Embed``)                      ``(vocab, f)``   ``(0,)``
``query|key|value/kernel``, 3-D (attention in)     ``(in, h, d)``   ``(1, 2)``
any other ``kernel`` or N-D leaf (Dense, Conv,     ``(..., out)``   ``(N-1,)``
attention ``out`` ``(h, d, out)``)
=================================================  ===============  ===========

Parameters that are not Flax layers (a positional embedding ``(1, L, D)``, a
CLIP projection matrix) follow the last row, "keep the last axis"; override them
with :func:`ftp_jax.path_rules`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ftp_jax._paths import LeafRule

__all__ = ["flax_row_axes", "torch_row_axes", "normalize_row_axes"]

_ATTENTION_INPUTS = ("query", "key", "value", "qkv")


def _flax_rule(path: str, leaf: Any) -> tuple[int, ...]:
    """Kept axes of a Flax-layout leaf (see the module's table)."""
    ndim = np.ndim(leaf)
    names = path.split("/")
    if ndim <= 1 or names[-1] == "bias":
        return ()
    if names[-1] == "embedding":
        return (0,)
    if ndim == 3 and names[-1] == "kernel" and len(names) > 1:
        if names[-2] in _ATTENTION_INPUTS:
            return (1, 2)
    return (ndim - 1,)


def _torch_rule(path: str, leaf: Any) -> tuple[int, ...]:
    """Kept axes of a PyTorch-layout leaf: axis 0, or the whole tensor if 0-D/1-D."""
    del path
    return () if np.ndim(leaf) <= 1 else (0,)


flax_row_axes = LeafRule(_flax_rule, "flax_row_axes")
flax_row_axes.__doc__ = """Row axes for Flax-layout params (the default of ``ftp``).

Call it on a params tree to get the tree of kept axes, or on ``(path, leaf)``.
Rules: 0-D/1-D leaves and biases -> ``()`` (one L1 norm over the whole tensor, as
the reference does for 1-D tensors); ``embedding`` -> ``(0,)``; 3-D
``query|key|value/kernel`` -> ``(1, 2)``; anything else -> the last axis.
"""

torch_row_axes = LeafRule(_torch_rule, "torch_row_axes")
torch_row_axes.__doc__ = """Row axes for PyTorch-layout arrays: axis 0; ``()`` for 0-D/1-D.

This is exactly what the reference code computes (``dim=range(1, ndim)``).
"""


def normalize_row_axes(value: Any, shape: tuple[int, ...], path: str) -> tuple[int, ...]:
    """Checks a row-axes value and returns it as sorted, non-negative axes.

    Raises:
      ValueError: naming the leaf path, if ``value`` is not a tuple of distinct
        integer axes within ``[-ndim, ndim)``.
    """
    ndim = len(shape)
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        value = (int(value),)
    if not isinstance(value, (tuple, list)) or not all(
        isinstance(a, (int, np.integer)) and not isinstance(a, bool) for a in value
    ):
        raise ValueError(
            f"`row_axes` for {path!r} must be a tuple of ints (the axes kept as rows, "
            f"() for one norm over the whole tensor), got {value!r}."
        )
    normalized = []
    for axis in value:
        if not -ndim <= axis < ndim:
            raise ValueError(
                f"`row_axes` for {path!r} has axis {axis}, out of range for a leaf of "
                f"shape {shape} (ndim {ndim}); valid axes are {-ndim}..{ndim - 1}."
                " For PyTorch-layout arrays use row_axes=ftp_jax.torch_row_axes."
            )
        normalized.append(int(axis) % ndim)
    if len(set(normalized)) != len(normalized):
        raise ValueError(f"`row_axes` for {path!r} repeats an axis: {value!r}.")
    return tuple(sorted(normalized))
