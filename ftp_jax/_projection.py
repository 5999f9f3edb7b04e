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

__all__ = [
    "NORMS",
    "at_least_float32",
    "hard_clip_unit",
    "projection_ratio",
    "radial_projection",
    "reduced_axes",
    "row_norms",
    "row_norms_shape",
    "row_sums",
]

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


def row_norms_shape(
    shape: tuple[int, ...], kept_axes: tuple[int, ...], norm: str = "mars"
) -> tuple[int, ...]:
    """The shape of :func:`row_norms` of an array of ``shape``, without computing it.

    The kept axes at full size and the others 1 for ``"mars"``; every axis 1 for
    ``"l2"`` (one norm over the whole tensor, whatever ``kept_axes``). States that
    keep norms (FTP's inverse norms) are sized by it at ``init``, so that ``update``
    returns the same shapes.
    """
    if norm == "mars":
        return tuple(size if axis in kept_axes else 1 for axis, size in enumerate(shape))
    if norm == "l2":
        return (1,) * len(shape)
    raise ValueError(f"unknown norm {norm!r}; expected one of {NORMS}.")


def row_sums(x: jax.Array, kept_axes: tuple[int, ...]) -> jax.Array:
    """Sum of ``x`` over every axis not in ``kept_axes``, keeping dimensions."""
    return jnp.sum(x, axis=reduced_axes(x.ndim, kept_axes), keepdims=True)


def hard_clip_unit(ratio: jax.Array) -> jax.Array:
    r"""``clip(ratio, 0, 1)`` whose derivative is 0 at and beyond both ends.

    .. math::

      \operatorname{clip}(r, 0, 1), \qquad
      \frac{d}{dr} = \begin{cases} 1 & 0 < r < 1 \\ 0 & \text{otherwise} \end{cases}

    The derivative of the reference's ``torch.nn.Hardtanh(0, 1)`` (TPGM's ratio).
    ``jax.grad(jnp.clip)`` passes half the gradient (0.5) at exactly 0 or 1: in
    float32, a radius clipped to the largest row norm gives that row the ratio
    ``max / (max + 1e-8) == 1.0`` exactly, and the radius gradient would then
    differ from the reference's at every later step. The values are those of
    ``jnp.clip`` (NaN stays NaN).
    """
    inside = (ratio > 0) & (ratio < 1)
    return jnp.where(inside, ratio, jax.lax.stop_gradient(jnp.clip(ratio, 0.0, 1.0)))


def projection_ratio(radius: jax.Array, inverse_norm: jax.Array) -> jax.Array:
    """``clip(radius / norm, 0, 1)``, the per-row scale of the projection.

    Computed as ``radius * (1 / norm)``, the reference's order of operations; its
    derivative is zero at both ends, as :func:`hard_clip_unit`.
    """
    return hard_clip_unit(radius * inverse_norm)


def radial_projection(
    displacement: jax.Array,
    radius: jax.Array,
    kept_axes: tuple[int, ...],
    norm: str = "mars",
    *,
    norm_eps: float = 0.0,
    inverse_norm: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array]:
    r"""The radial projection of a displacement onto the ball of ``radius``, row by row.

    .. math::

      P(c; \gamma) = \operatorname{clip}\Big(\frac{\gamma}{R(c) + \epsilon}, 0, 1\Big)\, c

    with :math:`c = \theta - w_0` and :math:`R` = :func:`row_norms`: rows outside
    the ball are rescaled onto its sphere, rows inside kept. The projected params
    are ``anchor + P(c)``. The one projection of FTP, TPGM and MARS-PGM; they
    differ only in :math:`\epsilon` (the reference's constant): FTP adds ``1e-8``
    to the norm itself (and passes its ``inverse_norm``, computed once per step,
    so the ratio is ``radius * (1 / n)`` in the reference's order), TPGM adds
    ``1e-8`` in the ratio's denominator (``radius / (n + 1e-8)``), MARS-PGM adds
    none (a zero row then has ratio ``radius``, harmlessly: its displacement is 0).
    The clip's derivative is zero at both ends (:func:`hard_clip_unit`, the
    reference's ``Hardtanh``). Computed in at least float32 (:func:`at_least_float32`).

    Args:
      displacement: :math:`c`.
      radius: :math:`\gamma`, a scalar.
      kept_axes: the axes kept as rows (``()``: one norm).
      norm: ``"mars"`` or ``"l2"``.
      norm_eps: :math:`\epsilon`, added to the norm in the ratio's denominator.
      inverse_norm: ``1 / (R(c) + eps)`` when already computed (FTP); then
        ``norm`` and ``norm_eps`` are not used.

    Returns:
      ``(projected displacement, ratio)``, both in the compute dtype; ``ratio``
      has the rows' shape (reduced axes of size 1) and is 1 exactly where a row is
      inside the ball.
    """
    dtype = at_least_float32(displacement.dtype)
    wide = displacement.astype(dtype)
    radius = jnp.asarray(radius).astype(dtype)
    if inverse_norm is not None:
        ratio = projection_ratio(radius, inverse_norm)
    else:
        norms = row_norms(wide, kept_axes, norm) + norm_eps
        ratio = hard_clip_unit(radius / (norms if norm_eps else jnp.where(norms > 0, norms, 1)))
    return ratio * wide, ratio


def at_least_float32(dtype: jnp.dtype) -> jnp.dtype:
    """The dtype of norms, inverse norms and radii for params of ``dtype``: at least float32.

    (Not the models' computation dtype, :func:`ftp_jax.models.compute_dtype`: this one
    widens the projection's arithmetic; that one names the dtype a model computes in.)

    ``1e-8`` (the norms' epsilon) underflows to 0 in float16, so that a row that
    did not move would get an infinite inverse norm and NaN radius gradients;
    float32 and float64 params compute in their own dtype (bit-identical results).
    """
    return jnp.promote_types(dtype, jnp.float32)
