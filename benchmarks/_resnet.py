"""A compact ResNet-50 in Flax NNX for the train-step benchmark.

torchvision's ResNet-50 (v1.5: the stride of a bottleneck on its 3x3
convolution), 25,557,032 params at 1000 classes, with the paths of
:func:`benchmarks._shapes.resnet50_shapes` (``stem/conv/kernel``,
``stages/0/0/reduce/conv/kernel``, ..., ``head/kernel``). Random initialization:
the benchmark times steps and needs no pre-trained weights.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

__all__ = ["ResNet50"]


class ConvNorm(nnx.Module):
    """A bias-free convolution followed by batch norm."""

    def __init__(self, cin, cout, kernel, stride=1, *, rngs: nnx.Rngs):
        pad = kernel // 2
        self.conv = nnx.Conv(
            cin,
            cout,
            (kernel, kernel),
            strides=(stride, stride),
            padding=((pad, pad), (pad, pad)),
            use_bias=False,
            rngs=rngs,
        )
        self.norm = nnx.BatchNorm(cout, momentum=0.9, epsilon=1e-5, rngs=rngs)

    def __call__(self, x):
        return self.norm(self.conv(x))


class Bottleneck(nnx.Module):
    """1x1 reduce, 3x3 (strided), 1x1 expand (x4), with a projection shortcut if needed."""

    def __init__(self, cin, width, stride, *, rngs: nnx.Rngs):
        self.reduce = ConvNorm(cin, width, 1, rngs=rngs)
        self.spatial = ConvNorm(width, width, 3, stride, rngs=rngs)
        self.expand = ConvNorm(width, 4 * width, 1, rngs=rngs)
        self.shortcut = (
            ConvNorm(cin, 4 * width, 1, stride, rngs=rngs)
            if stride != 1 or cin != 4 * width
            else None
        )

    def __call__(self, x):
        y = nnx.relu(self.reduce(x))
        y = nnx.relu(self.spatial(y))
        y = self.expand(y)
        return nnx.relu(y + (x if self.shortcut is None else self.shortcut(x)))


class ResNet50(nnx.Module):
    """ResNet-50; input (N, H, W, 3) images, output (N, num_classes) logits.

    ``blocks`` and ``widths`` make smaller networks of the same design (smoke runs).
    """

    def __init__(
        self,
        num_classes: int = 1000,
        *,
        rngs: nnx.Rngs,
        blocks: tuple[int, ...] = (3, 4, 6, 3),
        widths: tuple[int, ...] = (64, 128, 256, 512),
    ):
        self.stem = ConvNorm(3, widths[0], 7, 2, rngs=rngs)
        stages = []
        cin = widths[0]
        for index, (count, width) in enumerate(zip(blocks, widths, strict=True)):
            stage = []
            for block in range(count):
                stride = 2 if block == 0 and index > 0 else 1
                stage.append(Bottleneck(cin, width, stride, rngs=rngs))
                cin = 4 * width
            stages.append(nnx.List(stage))
        self.stages = nnx.List(stages)
        self.head = nnx.Linear(cin, num_classes, rngs=rngs)

    def __call__(self, images: jax.Array) -> jax.Array:
        x = nnx.relu(self.stem(images.astype(jnp.float32)))
        x = nnx.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
        for stage in self.stages:
            for block in stage:
                x = block(x)
        return self.head(jnp.mean(x, axis=(1, 2)))
