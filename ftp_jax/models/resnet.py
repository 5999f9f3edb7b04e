"""ResNet-50 in torchvision's layout (the layout of MoCo v3's ResNet-50), in Flax NNX.

Every parameter of the PyTorch model is one leaf here, under the same name
(``layer1/0/downsample/0/kernel`` for ``layer1.0.downsample.0.weight``), so FTP
keeps one radius per tensor exactly as the reference code does, and
:mod:`ftp_jax.convert` maps a checkpoint onto the model by name.

References:
  He, Zhang, Ren, Sun. *Deep Residual Learning for Image Recognition*. CVPR 2016
  (arXiv:1512.03385); torchvision's "ResNet v1.5" variant, with the stride of a
  bottleneck on its 3x3 convolution.
  Chen, Xie, He. *An Empirical Study of Training Self-Supervised Vision
  Transformers* (MoCo v3). ICCV 2021 (arXiv:2104.02057).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from ftp_jax.models.precision import float32_statistics

__all__ = ["Bottleneck", "ResNet", "resnet50", "batch_norm", "conv"]

_KAIMING_FAN_OUT = nnx.initializers.variance_scaling(2.0, "fan_out", "normal")


def conv(
    in_features: int,
    out_features: int,
    kernel_size: int,
    *,
    stride: int = 1,
    padding: int = 0,
    rngs: nnx.Rngs,
) -> nnx.Conv:
    """A bias-free ``nnx.Conv`` with PyTorch's explicit symmetric padding."""
    return nnx.Conv(
        in_features,
        out_features,
        (kernel_size, kernel_size),
        strides=(stride, stride),
        padding=((padding, padding), (padding, padding)),
        use_bias=False,
        kernel_init=_KAIMING_FAN_OUT,
        rngs=rngs,
    )


def batch_norm(num_features: int, *, rngs: nnx.Rngs) -> nnx.BatchNorm:
    """``nnx.BatchNorm`` with PyTorch's defaults (``momentum=0.1`` there is 0.9 here).

    Its running statistics (``mean``, ``var``) are ``nnx.BatchStat``, not trained;
    ``model.eval()`` makes it use them. PyTorch updates ``running_var`` with the
    unbiased batch variance and Flax with the biased one: the two differ by a
    factor ``n / (n - 1)`` in training mode only.

    Mixed precision: with a ``bfloat16`` ``dtype`` (:func:`ftp_jax.models.with_compute_dtype`)
    the statistics, running averages and normalization stay float32, only the output
    is bfloat16 (:func:`ftp_jax.models.precision.float32_statistics`).
    """
    return nnx.BatchNorm(
        num_features,
        momentum=0.9,
        epsilon=1e-5,
        use_fast_variance=False,
        promote_dtype=float32_statistics,
        rngs=rngs,
    )


class Bottleneck(nnx.Module):
    """1x1 -> 3x3 (stride) -> 1x1 convolutions, each with batch norm, plus a shortcut."""

    expansion = 4

    def __init__(self, in_features: int, planes: int, stride: int = 1, *, rngs: nnx.Rngs):
        out_features = planes * self.expansion
        self.conv1 = conv(in_features, planes, 1, rngs=rngs)
        self.bn1 = batch_norm(planes, rngs=rngs)
        self.conv2 = conv(planes, planes, 3, stride=stride, padding=1, rngs=rngs)
        self.bn2 = batch_norm(planes, rngs=rngs)
        self.conv3 = conv(planes, out_features, 1, rngs=rngs)
        self.bn3 = batch_norm(out_features, rngs=rngs)
        if stride != 1 or in_features != out_features:
            self.downsample = nnx.List(
                [
                    conv(in_features, out_features, 1, stride=stride, rngs=rngs),
                    batch_norm(out_features, rngs=rngs),
                ]
            )
        else:
            self.downsample = None

    def __call__(self, x: jax.Array) -> jax.Array:
        out = nnx.relu(self.bn1(self.conv1(x)))
        out = nnx.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        shortcut = x
        if self.downsample is not None:
            shortcut = self.downsample[1](self.downsample[0](x))
        return nnx.relu(out + shortcut)


class ResNet(nnx.Module):
    """torchvision's ResNet with bottleneck blocks and a new classification ``head``.

    ``conv1`` (7x7, stride 2) -> ``bn1`` -> ReLU -> 3x3 max pool (stride 2) ->
    ``layer1`` .. ``layer4`` (``layers[i]`` bottlenecks of ``width * 2**i`` planes,
    stride 2 from ``layer2`` on) -> global average pool -> ``head``.
    ``ResNet()`` is ResNet-50 (``layers=(3, 4, 6, 3)``, ``width=64``, 2048 features);
    tests build tiny versions with the same structure (``layers=(1, 1, 1, 1)``,
    ``width=8``). The checkpoint's classifier (torchvision's ``fc``, MoCo's
    projection MLP) has no counterpart: ``head`` is new.

    Input: images ``(N, H, W, 3)`` float32, normalized as the checkpoint expects
    (ImageNet mean and std for torchvision and MoCo v3). Output: logits
    ``(N, num_classes)``; :meth:`features` gives the pooled features.
    Batch norm uses batch statistics after ``model.train()`` and the running
    statistics after ``model.eval()``.

    Build it with :func:`ftp_jax.models.resnet50` and load torchvision's
    ``resnet50-*.pth`` or MoCo v3's ``r-50-1000ep.pth.tar`` with
    :func:`ftp_jax.convert.load_pretrained`, as the documentation's "Paper-scale
    recipes, models and weights" page shows for CLIP ResNet-50.
    """

    def __init__(
        self,
        num_classes: int = 1000,
        *,
        layers: Sequence[int] = (3, 4, 6, 3),
        width: int = 64,
        rngs: nnx.Rngs,
    ):
        if len(layers) != 4:
            raise ValueError(f"`layers` must give 4 stage depths, got {tuple(layers)!r}.")
        self.conv1 = conv(3, width, 7, stride=2, padding=3, rngs=rngs)
        self.bn1 = batch_norm(width, rngs=rngs)
        in_features = build_stages(self, Bottleneck, width, layers, width, rngs=rngs)
        self.num_features = in_features
        self.head = nnx.Linear(in_features, num_classes, rngs=rngs)

    def features(self, images: jax.Array) -> jax.Array:
        """Globally pooled features ``(N, 8 * 4 * width)`` (2048 for ResNet-50)."""
        x = nnx.relu(self.bn1(self.conv1(images.astype(jnp.float32))))
        x = nnx.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
        return jnp.mean(run_stages(self, x), axis=(1, 2))

    def __call__(self, images: jax.Array) -> jax.Array:
        return self.head(self.features(images))


def build_stages(
    model: nnx.Module,
    block: type[nnx.Module],
    in_features: int,
    layers: Sequence[int],
    width: int,
    *,
    rngs: nnx.Rngs,
) -> int:
    """Sets ``model.layer1`` .. ``layer4``, torchvision's ResNet stages; returns their channels.

    Stage ``i`` has ``layers[i]`` blocks of ``width * 2**i`` planes (``block(in,
    planes, stride, rngs=)``, ``block.expansion`` times as many output
    channels); the first block of stages 2-4 has stride 2. The names are
    torchvision's (and CLIP's), which the converters rely on.
    """
    for stage, depth in enumerate(layers):
        planes = width * 2**stage
        blocks = []
        for index in range(depth):
            stride = 2 if stage > 0 and index == 0 else 1
            blocks.append(block(in_features, planes, stride, rngs=rngs))
            in_features = planes * block.expansion
        setattr(model, f"layer{stage + 1}", nnx.List(blocks))
    return in_features


def run_stages(model: nnx.Module, x: jax.Array) -> jax.Array:
    """``x`` through ``model.layer1`` .. ``layer4`` (see :func:`build_stages`)."""
    for stage in (model.layer1, model.layer2, model.layer3, model.layer4):
        for block in stage:
            x = block(x)
    return x


def resnet50(num_classes: int = 1000, *, rngs: nnx.Rngs) -> ResNet:
    """ResNet-50 (``layers=(3, 4, 6, 3)``, ``width=64``): torchvision and MoCo v3 weights."""
    return ResNet(num_classes, layers=(3, 4, 6, 3), width=64, rngs=rngs)
