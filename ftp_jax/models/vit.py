"""CLIP's ViT-B/16 visual tower, in Flax NNX, with a new classification head.

A Vision Transformer as CLIP builds it: a bias-free convolutional patch
embedding ``conv1``, a learned ``class_embedding`` prepended to the patch
tokens, a learned ``positional_embedding``, a LayerNorm before the transformer
(``ln_pre``), pre-norm residual blocks (multi-head self-attention and an MLP with
``QuickGELU``), ``ln_post`` on the class token and a projection ``proj`` to the
joint embedding.

Parameter names and layouts follow OpenAI CLIP's ``VisionTransformer`` (the
``visual.`` part of a CLIP checkpoint), one leaf per PyTorch tensor: the
attention keeps PyTorch's fused input projection (``attn/in_proj``, one
``(width, 3 * width)`` kernel for the queries, keys and values, as
``in_proj_weight`` is one tensor), so FTP keeps one radius per tensor as the
reference does. ``class_embedding`` ``(width,)``, ``positional_embedding``
``(tokens, width)`` and ``proj`` ``(width, output_dim)`` (used as ``x @ proj``)
are stored as in PyTorch; their rows are given by
:data:`ftp_jax.models.clip_row_axes`.

References:
  Dosovitskiy, Beyer, Kolesnikov, et al. *An Image is Worth 16x16 Words:
  Transformers for Image Recognition at Scale*. ICLR 2021 (arXiv:2010.11929).
  Radford, Kim, Hallacy, et al. *Learning Transferable Visual Models From
  Natural Language Supervision*. ICML 2021 (arXiv:2103.00020).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

__all__ = [
    "MultiHeadSelfAttention",
    "ResidualAttentionBlock",
    "Transformer",
    "VisionTransformer",
    "clip_vit_b16",
    "quick_gelu",
]


def quick_gelu(x: jax.Array) -> jax.Array:
    """CLIP's GELU approximation, ``x * sigmoid(1.702 x)``."""
    return x * jax.nn.sigmoid(1.702 * x)


def _layer_norm(width: int, *, rngs: nnx.Rngs) -> nnx.LayerNorm:
    return nnx.LayerNorm(width, epsilon=1e-5, rngs=rngs)  # PyTorch's epsilon


class MultiHeadSelfAttention(nnx.Module):
    """PyTorch's ``nn.MultiheadAttention`` (self-attention, no mask) in its parameter layout.

    ``in_proj`` maps ``width`` to the concatenated queries, keys and values
    (``3 * width``: PyTorch's ``in_proj_weight`` transposed); ``out_proj`` maps the
    concatenated heads back to ``width``.
    """

    def __init__(self, width: int, num_heads: int, *, rngs: nnx.Rngs):
        if width % num_heads:
            raise ValueError(f"`heads`={num_heads} must divide the width {width}.")
        self.num_heads = num_heads
        self.in_proj = nnx.Linear(width, 3 * width, rngs=rngs)
        self.out_proj = nnx.Linear(width, width, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        n, length, width = x.shape
        heads, head_dim = self.num_heads, width // self.num_heads
        qkv = self.in_proj(x).reshape(n, length, 3, heads, head_dim)
        query, key, value = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
        logits = jnp.einsum("nqhd,nkhd->nhqk", query * head_dim**-0.5, key)
        # The softmax in float32 (a no-op cast in a float32 model), its weights back in
        # the computation dtype for the product with the values.
        weights = jax.nn.softmax(logits.astype(jnp.float32), axis=-1).astype(value.dtype)
        out = jnp.einsum("nhqk,nkhd->nqhd", weights, value).reshape(n, length, width)
        return self.out_proj(out)


class MLP(nnx.Module):
    """``c_fc`` (to ``4 * width``) -> QuickGELU -> ``c_proj``."""

    def __init__(self, width: int, *, rngs: nnx.Rngs):
        self.c_fc = nnx.Linear(width, 4 * width, rngs=rngs)
        self.c_proj = nnx.Linear(4 * width, width, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.c_proj(quick_gelu(self.c_fc(x)))


class ResidualAttentionBlock(nnx.Module):
    """Pre-norm block: ``x + attn(ln_1(x))``, then ``x + mlp(ln_2(x))``."""

    def __init__(self, width: int, num_heads: int, *, rngs: nnx.Rngs):
        self.attn = MultiHeadSelfAttention(width, num_heads, rngs=rngs)
        self.ln_1 = _layer_norm(width, rngs=rngs)
        self.mlp = MLP(width, rngs=rngs)
        self.ln_2 = _layer_norm(width, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class Transformer(nnx.Module):
    """``layers`` residual attention blocks, as ``resblocks/0``, ``resblocks/1``, ..."""

    def __init__(self, width: int, layers: int, num_heads: int, *, rngs: nnx.Rngs):
        self.resblocks = nnx.List(
            [ResidualAttentionBlock(width, num_heads, rngs=rngs) for _ in range(layers)]
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        for block in self.resblocks:
            x = block(x)
        return x


class VisionTransformer(nnx.Module):
    """CLIP's ``VisionTransformer`` visual tower and a new classification ``head``.

    ``VisionTransformer()`` is CLIP ViT-B/16: ``image_size=224``, ``patch_size=16``,
    ``width=768``, ``layers=12``, ``heads=12``, ``output_dim=512``. Tests build
    tiny versions with the same structure (2 layers, width 32, patch 8).

    Input: images ``(N, image_size, image_size, 3)`` float32 normalized with
    CLIP's mean and std. Output: logits ``(N, num_classes)``; :meth:`features`
    gives the ``output_dim`` image embedding (``ln_post`` of the class token,
    times ``proj``), what CLIP's ``encode_image`` returns. Mixed precision
    (:func:`ftp_jax.models.with_compute_dtype`): the attention softmaxes and the
    layer norms' statistics stay float32.

    Build it with :func:`ftp_jax.models.clip_vit_b16` and load OpenAI's
    ``ViT-B-16.pt`` (or a ``transformers`` CLIP checkpoint) with
    :func:`ftp_jax.convert.load_pretrained`, as the documentation's "Paper-scale
    recipes, models and weights" page shows for CLIP ResNet-50.
    """

    def __init__(
        self,
        num_classes: int = 1000,
        *,
        image_size: int = 224,
        patch_size: int = 16,
        width: int = 768,
        layers: int = 12,
        heads: int = 12,
        output_dim: int = 512,
        rngs: nnx.Rngs,
    ):
        if image_size % patch_size:
            raise ValueError(
                f"`image_size`={image_size} must be a multiple of `patch_size`={patch_size}."
            )
        self.image_size = image_size
        self.patch_size = patch_size
        self.conv1 = nnx.Conv(
            3,
            width,
            (patch_size, patch_size),
            strides=(patch_size, patch_size),
            padding="VALID",
            use_bias=False,
            rngs=rngs,
        )
        scale = width**-0.5
        tokens = (image_size // patch_size) ** 2 + 1
        self.class_embedding = nnx.Param(scale * jax.random.normal(rngs.params(), (width,)))
        self.positional_embedding = nnx.Param(
            scale * jax.random.normal(rngs.params(), (tokens, width))
        )
        self.ln_pre = _layer_norm(width, rngs=rngs)
        self.transformer = Transformer(width, layers, heads, rngs=rngs)
        self.ln_post = _layer_norm(width, rngs=rngs)
        self.proj = nnx.Param(scale * jax.random.normal(rngs.params(), (width, output_dim)))
        self.num_features = output_dim
        self.head = nnx.Linear(output_dim, num_classes, rngs=rngs)

    def features(self, images: jax.Array) -> jax.Array:
        """The image embedding ``(N, output_dim)`` (CLIP's ``encode_image``)."""
        n, height, width_px, _ = images.shape
        if (height, width_px) != (self.image_size, self.image_size):
            raise ValueError(
                f"VisionTransformer: images are {height}x{width_px}, but the positional "
                f"embedding was built for {self.image_size}x{self.image_size}."
            )
        x = self.conv1(images.astype(jnp.float32))  # (N, grid, grid, width)
        x = x.reshape(n, -1, x.shape[-1])  # (N, grid**2, width), row-major as in PyTorch
        # The float32 embeddings and projection are cast to the computation dtype
        # (that of the patch embedding's output; no-op casts in a float32 model).
        class_token = jnp.broadcast_to(
            self.class_embedding[...].astype(x.dtype)[None, None, :], (n, 1, x.shape[-1])
        )
        x = jnp.concatenate([class_token, x], axis=1)
        x = x + self.positional_embedding[...].astype(x.dtype)[None, :, :]
        x = self.transformer(self.ln_pre(x))
        pooled = self.ln_post(x[:, 0, :])
        return pooled @ self.proj[...].astype(pooled.dtype)

    def __call__(self, images: jax.Array) -> jax.Array:
        return self.head(self.features(images))


def clip_vit_b16(
    num_classes: int = 1000, *, image_size: int = 224, rngs: nnx.Rngs
) -> VisionTransformer:
    """CLIP ViT-B/16's visual tower (width 768, 12 layers and heads, 512-d) and a new head."""
    return VisionTransformer(
        num_classes,
        image_size=image_size,
        patch_size=16,
        width=768,
        layers=12,
        heads=12,
        output_dim=512,
        rngs=rngs,
    )
