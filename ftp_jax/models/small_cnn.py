"""A small convolutional network for the default (digits) experiment."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

__all__ = ["SmallCNN", "replace_head"]


class SmallCNN(nnx.Module):
    """conv(32)-pool-conv(64)-pool-dense(128) backbone and a linear ``head``.

    Input: images (N, 28, 28, C) in [0, 1]. Parameter paths: ``conv1/kernel``,
    ``conv2/kernel``, ``dense/kernel`` (+ biases) and ``head/kernel``,
    ``head/bias``: the head is what fine-tuning replaces and FTP/TPGM exclude.
    """

    def __init__(self, num_classes: int = 10, channels: int = 1, *, rngs: nnx.Rngs):
        self.conv1 = nnx.Conv(channels, 32, (3, 3), rngs=rngs)
        self.conv2 = nnx.Conv(32, 64, (3, 3), rngs=rngs)
        self.dense = nnx.Linear(7 * 7 * 64, 128, rngs=rngs)
        self.head = nnx.Linear(128, num_classes, rngs=rngs)

    def features(self, images: jax.Array) -> jax.Array:
        x = nnx.relu(self.conv1(images))
        x = nnx.max_pool(x, (2, 2), strides=(2, 2))
        x = nnx.relu(self.conv2(x))
        x = nnx.max_pool(x, (2, 2), strides=(2, 2))
        return nnx.relu(self.dense(x.reshape(x.shape[0], -1)))

    def __call__(self, images: jax.Array) -> jax.Array:
        return self.head(self.features(images.astype(jnp.float32)))


def replace_head(model: SmallCNN, num_classes: int, *, rngs: nnx.Rngs) -> SmallCNN:
    """The model with a freshly initialized ``head`` (the backbone is kept, in place)."""
    model.head = nnx.Linear(model.head.in_features, num_classes, rngs=rngs)
    return model
