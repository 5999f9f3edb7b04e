"""Pure projection math shared by FTP, TPGM, the peer methods, tests and benchmarks.

Per-row norms of a displacement from the anchor, and the radial projection
(Gouk et al., ICLR 2021; Tian et al., CVPR 2023; Tian et al., NeurIPS 2023)

.. math::

  P(\\theta; \\gamma) = w_0 + \\operatorname{clip}\\Big(\\frac{\\gamma}{R(\\theta - w_0)},
  0, 1\\Big) (\\theta - w_0)

which rescales each row of the displacement onto the ball of radius
:math:`\\gamma` when it lies outside (a radial rescale, not the Euclidean
projection onto an L1 ball).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["NORMS", "reduced_axes", "row_norms", "row_sums", "projection_ratio"]

NORMS = ("mars", "l2")


def reduced_axes(ndim: int, kept_axes: tuple[int, ...]) -> tuple[int, ...]:
    """The axes summed over: every axis not kept as a row."""
    return tuple(axis for axis in range(ndim) if axis not in kept_axes)


def row_norms(x: jax.Array, kept_axes: tuple[int, ...], norm: str = "mars") -> jax.Array:
    """Per-row norm of ``x``, with the reduced axes kept as size 1.

    .. math::

      R_{\\text{mars}}(x)_r = \\sum_{j \\in \\text{row } r} |x_j|, \\qquad
      R_{\\text{l2}}(x) = \\lVert x \\rVert_2

    The MARS norm (Gouk et al., ICLR 2021) is the per-row L1 norm (the maximum
    absolute row sum when bounded over rows); ``kept_axes=()`` gives one L1 norm
    over the whole tensor, as the reference does for 1-D leaves. The L2 norm is
    always over the whole tensor (TPGM's ``l2`` option), whatever ``kept_axes``.

    Args:
      x: the displacement ``theta - w0``.
      kept_axes: sorted non-negative axes kept as rows.
      norm: ``"mars"`` or ``"l2"``.

    Returns:
      An array of ``x.ndim`` dimensions: the kept axes at full size, the others 1.
      No epsilon is added; callers add the reference's where it puts one.
    """
    if norm == "mars":
        return row_sums(jnp.abs(x), kept_axes)
    if norm == "l2":
        return jnp.sqrt(jnp.sum(jnp.square(x), keepdims=True))
    raise ValueError(f"unknown norm {norm!r}; expected one of {NORMS}.")


def row_sums(x: jax.Array, kept_axes: tuple[int, ...]) -> jax.Array:
    """Sum of ``x`` over every axis not in ``kept_axes``, keeping dimensions."""
    return jnp.sum(x, axis=reduced_axes(x.ndim, kept_axes), keepdims=True)


def projection_ratio(radius: jax.Array, inverse_norm: jax.Array) -> jax.Array:
    """``clip(radius / norm, 0, 1)``, the per-row scale of the projection.

    Computed as ``radius * (1 / norm)``, the reference's order of operations.
    """
    return jnp.clip(radius * inverse_norm, 0.0, 1.0)
