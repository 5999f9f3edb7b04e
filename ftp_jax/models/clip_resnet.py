"""CLIP's modified ResNet-50 visual tower, in Flax NNX, with a new classification head.

The changes CLIP made to ResNet-50: a stem of three 3x3 convolutions with an
average pool instead of one 7x7 convolution and a max pool; anti-aliased
strided bottlenecks (the stride is a 2x2 average pool before the last 1x1
convolution and before the shortcut's convolution); and attention pooling
(:class:`AttentionPool2d`: one query, the mean of the feature map plus a learned
positional embedding, attending over all positions, then an output projection
``c_proj`` to the joint embedding) instead of global average pooling.

Parameter names and shapes follow OpenAI CLIP's ``ModifiedResNet`` (the
``visual.`` part of a CLIP checkpoint), one leaf per PyTorch tensor, so that FTP
keeps one radius per tensor as the reference does. The positional embedding is
stored as in PyTorch, ``(positions, embed_dim)``; its rows are positions (see
:data:`ftp_jax.models.clip_row_axes`).

References:
  Radford, Kim, Hallacy, et al. *Learning Transferable Visual Models From
  Natural Language Supervision*. ICML 2021 (arXiv:2103.00020).
  He, Zhang, Ren, Sun. *Deep Residual Learning for Image Recognition*. CVPR 2016
  (arXiv:1512.03385).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from ftp_jax.models.resnet import batch_norm, build_stages, conv, run_stages

__all__ = ["AttentionPool2d", "CLIPBottleneck", "CLIPResNet", "clip_resnet50"]


def _avg_pool(x: jax.Array, size: int) -> jax.Array:
    """PyTorch's ``AvgPool2d(size)``: kernel = stride = ``size``, no padding."""
    if size == 1:
        return x
    return nnx.avg_pool(x, (size, size), strides=(size, size))


class CLIPBottleneck(nnx.Module):
    """CLIP's bottleneck: every convolution has stride 1; an average pool does the stride."""

    expansion = 4

    def __init__(self, in_features: int, planes: int, stride: int = 1, *, rngs: nnx.Rngs):
        out_features = planes * self.expansion
        self.stride = stride
        self.conv1 = conv(in_features, planes, 1, rngs=rngs)
        self.bn1 = batch_norm(planes, rngs=rngs)
        self.conv2 = conv(planes, planes, 3, padding=1, rngs=rngs)
        self.bn2 = batch_norm(planes, rngs=rngs)
        self.conv3 = conv(planes, out_features, 1, rngs=rngs)
        self.bn3 = batch_norm(out_features, rngs=rngs)
        if stride > 1 or in_features != out_features:
            # PyTorch: Sequential("-1": AvgPool2d(stride), "0": conv, "1": bn).
            self.downsample = nnx.List(
                [conv(in_features, out_features, 1, rngs=rngs), batch_norm(out_features, rngs=rngs)]
            )
        else:
            self.downsample = None

    def __call__(self, x: jax.Array) -> jax.Array:
        out = nnx.relu(self.bn1(self.conv1(x)))
        out = nnx.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(_avg_pool(out, self.stride)))
        shortcut = x
        if self.downsample is not None:
            shortcut = self.downsample[1](self.downsample[0](_avg_pool(x, self.stride)))
        return nnx.relu(out + shortcut)


class AttentionPool2d(nnx.Module):
    """Attention pooling: the mean token attends over all positions (CLIP's ``attnpool``).

    .. math::

      t = [\\bar x; x_1; \\dots; x_{HW}] + P, \\quad
      y = W_c\\, \\mathrm{MHA}(q = W_q t_0,\\; k = W_k t,\\; v = W_v t) + b_c

    with ``positional_embedding`` ``P`` of shape ``(spacial_dim**2 + 1, embed_dim)``
    (as in PyTorch) and ``q_proj``, ``k_proj``, ``v_proj``, ``c_proj`` linear layers.
    """

    def __init__(
        self,
        spacial_dim: int,
        embed_dim: int,
        num_heads: int,
        output_dim: int | None = None,
        *,
        rngs: nnx.Rngs,
    ):
        if embed_dim % num_heads:
            raise ValueError(
                f"`num_heads`={num_heads} must divide the embedding width {embed_dim}."
            )
        self.num_heads = num_heads
        self.spacial_dim = spacial_dim
        self.positional_embedding = nnx.Param(
            jax.random.normal(rngs.params(), (spacial_dim**2 + 1, embed_dim)) / embed_dim**0.5
        )
        std = nnx.initializers.normal(embed_dim**-0.5)
        self.k_proj = nnx.Linear(embed_dim, embed_dim, kernel_init=std, rngs=rngs)
        self.q_proj = nnx.Linear(embed_dim, embed_dim, kernel_init=std, rngs=rngs)
        self.v_proj = nnx.Linear(embed_dim, embed_dim, kernel_init=std, rngs=rngs)
        self.c_proj = nnx.Linear(embed_dim, output_dim or embed_dim, kernel_init=std, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        n, h, w, c = x.shape
        positions = self.positional_embedding[...]
        if h * w + 1 != positions.shape[0]:
            raise ValueError(
                f"AttentionPool2d: the feature map is {h}x{w} but the positional embedding "
                f"has {positions.shape[0]} positions (a {self.spacial_dim}x{self.spacial_dim} "
                f"map + 1); the image size must be {32 * self.spacial_dim} (32 x spacial_dim)."
            )
        tokens = x.reshape(n, h * w, c)
        tokens = jnp.concatenate([jnp.mean(tokens, axis=1, keepdims=True), tokens], axis=1)
        tokens = tokens + positions.astype(tokens.dtype)[None, :, :]  # float32 model: no-op
        heads, head_dim = self.num_heads, c // self.num_heads
        query = self.q_proj(tokens[:, :1]).reshape(n, 1, heads, head_dim)
        key = self.k_proj(tokens).reshape(n, h * w + 1, heads, head_dim)
        value = self.v_proj(tokens).reshape(n, h * w + 1, heads, head_dim)
        logits = jnp.einsum("nqhd,nkhd->nhqk", query * head_dim**-0.5, key)
        # The softmax in float32 (a no-op cast in a float32 model).
        weights = jax.nn.softmax(logits.astype(jnp.float32), axis=-1).astype(value.dtype)
        pooled = jnp.einsum("nhqk,nkhd->nqhd", weights, value).reshape(n, c)
        return self.c_proj(pooled)


class CLIPResNet(nnx.Module):
    """CLIP's ``ModifiedResNet`` visual tower and a new classification ``head``.

    stem (``conv1`` 3x3 stride 2, ``conv2``, ``conv3``, each with batch norm and
    ReLU; 2x2 average pool) -> ``layer1`` .. ``layer4`` (:class:`CLIPBottleneck`) ->
    ``attnpool`` (:class:`AttentionPool2d`, to ``output_dim``) -> ``head``.
    ``CLIPResNet()`` is CLIP RN50: ``layers=(3, 4, 6, 3)``, ``width=64``,
    ``heads=32``, ``output_dim=1024``, ``image_size=224``. The positional
    embedding fixes the image size: ``image_size`` must be a multiple of 32.

    Input: images ``(N, image_size, image_size, 3)`` float32 normalized with CLIP's
    mean and std. Output: logits ``(N, num_classes)``; :meth:`features` gives the
    ``output_dim`` image embedding that CLIP's ``encode_image`` returns.

    Build it with :func:`ftp_jax.models.clip_resnet50` and load OpenAI's
    ``RN50.pt`` with :func:`ftp_jax.convert.load_pretrained` (the documentation's
    "Paper-scale recipes, models and weights" page has the example).
    """

    def __init__(
        self,
        num_classes: int = 1000,
        *,
        layers: Sequence[int] = (3, 4, 6, 3),
        width: int = 64,
        heads: int = 32,
        output_dim: int = 1024,
        image_size: int = 224,
        rngs: nnx.Rngs,
    ):
        if len(layers) != 4:
            raise ValueError(f"`layers` must give 4 stage depths, got {tuple(layers)!r}.")
        if image_size % 32:
            raise ValueError(f"`image_size` must be a multiple of 32, got {image_size}.")
        self.conv1 = conv(3, width // 2, 3, stride=2, padding=1, rngs=rngs)
        self.bn1 = batch_norm(width // 2, rngs=rngs)
        self.conv2 = conv(width // 2, width // 2, 3, padding=1, rngs=rngs)
        self.bn2 = batch_norm(width // 2, rngs=rngs)
        self.conv3 = conv(width // 2, width, 3, padding=1, rngs=rngs)
        self.bn3 = batch_norm(width, rngs=rngs)
        build_stages(self, CLIPBottleneck, width, layers, width, rngs=rngs)
        self.attnpool = AttentionPool2d(image_size // 32, width * 32, heads, output_dim, rngs=rngs)
        self.num_features = output_dim
        self.head = nnx.Linear(output_dim, num_classes, rngs=rngs)

    def features(self, images: jax.Array) -> jax.Array:
        """The image embedding ``(N, output_dim)`` (CLIP's ``encode_image``)."""
        x = images.astype(jnp.float32)
        x = nnx.relu(self.bn1(self.conv1(x)))
        x = nnx.relu(self.bn2(self.conv2(x)))
        x = nnx.relu(self.bn3(self.conv3(x)))
        return self.attnpool(run_stages(self, _avg_pool(x, 2)))

    def __call__(self, images: jax.Array) -> jax.Array:
        return self.head(self.features(images))


def clip_resnet50(num_classes: int = 1000, *, image_size: int = 224, rngs: nnx.Rngs) -> CLIPResNet:
    """CLIP RN50's visual tower (1024-d embedding, 32 attention-pool heads) and a new head."""
    return CLIPResNet(
        num_classes,
        layers=(3, 4, 6, 3),
        width=64,
        heads=32,
        output_dim=1024,
        image_size=image_size,
        rngs=rngs,
    )
