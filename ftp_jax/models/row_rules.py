"""Row axes of the paper-scale models: the reference's rows, in Flax layout.

The reference FTP keeps axis 0 of each PyTorch tensor as its rows (one L1 norm
per output channel; one norm over the whole vector for 1-D tensors). The models
of :mod:`ftp_jax.models` hold one leaf per PyTorch tensor; where a leaf is a
Flax layer's kernel its output axis is last, which
:data:`ftp_jax.flax_row_axes` already keeps. CLIP's raw parameters are stored in
PyTorch's layout and need their own rule:

=====================================  =====================  ==========  ===============
leaf                                   Flax shape             kept axes   PyTorch rows
=====================================  =====================  ==========  ===============
convolution ``kernel``                 ``(kh, kw, in, out)``  ``(3,)``    output channels
linear ``kernel`` (``q_proj``,         ``(in, out)``          ``(1,)``    output units
``c_proj``, ``attn/in_proj`` (q, k, v
fused), ``attn/out_proj``, ``c_fc``)
``bias``, BatchNorm/LayerNorm          ``(n,)``               ``()``      one norm
``scale``, ``class_embedding``
``positional_embedding`` (CLIP         ``(tokens, width)``    ``(0,)``    positions
attention pool and ViT)
``proj`` (CLIP ViT, ``x @ proj``)      ``(width, out)``       ``(0,)``    input units
=====================================  =====================  ==========  ===============

``proj`` is a raw ``(width, output_dim)`` parameter that PyTorch multiplies as
``x @ proj``; the reference keeps its axis 0, which is the *input* axis, so its
rows here are the input axis too (not the output axis a Linear kernel would
have). Batch-norm running statistics are ``nnx.BatchStat``, not parameters:
FTP never sees them.

Use :data:`clip_row_axes` for the CLIP models; the torchvision ResNet-50 needs
only the default :data:`ftp_jax.flax_row_axes`. :data:`clip_row_axes` is a
function of ``(path, leaf)`` (a :class:`~ftp_jax._paths.LeafRule`), so it also
works inside :func:`ftp_jax.path_rules` and on wrapped models (any path prefix).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ftp_jax._paths import LeafRule
from ftp_jax._row_axes import flax_row_axes

__all__ = ["clip_row_axes"]

# Raw parameters stored in PyTorch layout: (name, ndim) -> kept axes (PyTorch's axis 0).
_TORCH_LAYOUT_PARAMS = {("positional_embedding", 2): (0,), ("proj", 2): (0,)}


def _clip_rule(path: str, leaf: Any) -> tuple[int, ...]:
    """Kept axes of a leaf of a CLIP model (see the module's table)."""
    name = path.rsplit("/", 1)[-1]
    kept = _TORCH_LAYOUT_PARAMS.get((name, np.ndim(leaf)))
    if kept is not None:
        return kept
    return flax_row_axes(path, leaf)


clip_row_axes = LeafRule(_clip_rule, "models.clip_row_axes")
clip_row_axes.__doc__ = """Row axes for the CLIP models (``CLIPResNet``, ``VisionTransformer``).

``positional_embedding`` ``(tokens, width)`` and ``proj`` ``(width, out)`` keep
axis 0 (they are stored in PyTorch's layout, whose axis 0 the reference keeps);
every other leaf follows :data:`ftp_jax.flax_row_axes`. Pass it as
``ftp(..., row_axes=ftp_jax.models.clip_row_axes)``.
"""
