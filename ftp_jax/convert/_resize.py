"""Resamples a learned positional embedding to another square grid (bicubic, numpy).

A CLIP positional embedding is ``(1 + g * g, width)``: the class token's (or
the attention pool's mean token's) position first, then a ``g x g`` grid of
patch positions in row-major order (OpenAI CLIP's ``VisionTransformer`` and
``AttentionPool2d``). It fixes the image size the model was trained at; to
fine-tune at another size the grid part is resampled and the first position
kept, as timm's ``resample_abs_pos_embed``, OpenCLIP's ``resize_pos_embed`` and
HF CLIP's ``interpolate_pos_encoding`` do, all with
``torch.nn.functional.interpolate(grid, size, mode="bicubic",
align_corners=False, antialias=...)`` on the ``(1, width, g, g)`` grid. The two
settings of ``antialias`` are two different filters, both reproduced here:

``"bicubic_antialias"`` (``antialias=True``: timm's and OpenCLIP's default)
  Keys' cubic kernel with ``a = -0.5`` (PIL's), widened by the scale factor
  when shrinking, its weights renormalized where taps leave the grid. The same
  filter as ``jax.image.resize(..., method="bicubic")``.
``"bicubic"`` (``antialias=False``: torch's default, HF CLIP's)
  Keys' cubic kernel with ``a = -0.75`` (OpenCV's), four taps, taps outside
  the grid clamped to the edge, no widening when shrinking.

Both are separable: ``out = W @ grid @ W.T`` per channel, with an ``(out, in)``
weight matrix computed in float64; the result is float32.
"""

from __future__ import annotations

import math

import numpy as np

from ftp_jax.convert._errors import CheckpointError

__all__ = ["METHODS", "bicubic_matrix", "grid_side", "resample_positions"]

#: The resampling filters, by ``pos_embed_resize`` name: whether torch antialiases.
METHODS = {"bicubic_antialias": True, "bicubic": False}


def _keys_cubic(x: np.ndarray, a: float) -> np.ndarray:
    """Keys' cubic convolution kernel (support ``[-2, 2]``), as torch and PIL write it."""
    x = np.abs(x)
    near = ((a + 2) * x - (a + 3)) * x * x + 1
    far = (((x - 5) * x + 8) * x - 4) * a
    return np.where(x < 1, near, np.where(x < 2, far, 0.0))


def bicubic_matrix(n_in: int, n_out: int, *, antialias: bool) -> np.ndarray:
    """The ``(n_out, n_in)`` float64 matrix of torch's 1-D bicubic resize, ``align_corners=False``.

    ``antialias=False`` mirrors ATen's ``upsample_bicubic2d`` (source coordinate
    ``(i + 0.5) * n_in / n_out - 0.5``, taps clamped to the edge, ``a = -0.75``);
    ``antialias=True`` mirrors ATen's ``_upsample_bicubic2d_aa`` and PIL (centre
    ``(i + 0.5) * n_in / n_out``, the kernel stretched by ``max(n_in / n_out, 1)``,
    ``a = -0.5``, each row normalized to sum 1).
    """
    scale = n_in / n_out
    rows = np.arange(n_out)
    if antialias:
        stretch = max(scale, 1.0)
        centers = (rows + 0.5) * scale
        taps = np.arange(n_in) + 0.5
        weights = _keys_cubic((taps[None, :] - centers[:, None]) / stretch, -0.5)
        return weights / weights.sum(axis=1, keepdims=True)
    source = (rows + 0.5) * scale - 0.5
    first = np.floor(source)
    fraction = source - first
    weights = np.zeros((n_out, n_in))
    for offset in (-1, 0, 1, 2):
        columns = np.clip(first + offset, 0, n_in - 1).astype(np.int64)
        np.add.at(weights, (rows, columns), _keys_cubic(fraction - offset, -0.75))
    return weights


def grid_side(tokens: int) -> int | None:
    """``g`` if ``tokens == 1 + g * g`` (one leading token and a square grid), else ``None``."""
    side = math.isqrt(max(tokens - 1, 0))
    return side if tokens >= 2 and side * side == tokens - 1 else None


def resample_positions(
    array: np.ndarray, shape: tuple[int, ...], method: str, *, name: str
) -> np.ndarray:
    """Resamples a ``(1 + g * g, width)`` positional embedding to ``shape`` ``(1 + h * h, width)``.

    The first row (the class token's position) is copied; the ``g x g`` grid is
    resized to ``h x h`` with the filter ``method`` (see :data:`METHODS`).

    Args:
      array: the checkpoint's embedding (PyTorch layout, any float dtype).
      shape: the model's embedding shape.
      method: ``"bicubic_antialias"`` or ``"bicubic"``.
      name: how errors name the tensor (its checkpoint key).

    Returns:
      A float32 array of ``shape``.

    Raises:
      CheckpointError: if either shape is not one leading token plus a square
        grid of the same width.
    """
    shape = tuple(shape)
    found = tuple(array.shape)
    source, target = (grid_side(s[0]) if len(s) == 2 else None for s in (found, shape))
    if source is None or target is None or found[1] != shape[1]:

        def layout(s: tuple[int, ...]) -> str:
            side = grid_side(s[0]) if len(s) == 2 else None
            if side is None:
                return f"{s}, not 1 + a square grid of positions"
            return f"{s} = 1 + {side}x{side} positions of width {s[1]}"

        raise CheckpointError(
            f"cannot resample the positional embedding {name}: the checkpoint has "
            f"{layout(found)}; the model expects {layout(shape)}. Only a class-token "
            "position followed by a square grid of the same width can be resampled; build "
            "the model with the checkpoint's image size, patch size and width."
        )
    if source == target:
        return np.asarray(array, np.float32)
    width = shape[1]
    grid = np.asarray(array[1:], np.float64).reshape(source, source, width)
    matrix = bicubic_matrix(source, target, antialias=METHODS[method])
    resized = np.einsum("oi,ijc,pj->opc", matrix, grid, matrix).reshape(target * target, width)
    first = np.asarray(array[:1], np.float64)
    return np.concatenate([first, resized]).astype(np.float32)
