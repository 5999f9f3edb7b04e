"""The one table of model kinds: architecture, builders, FTP's rows, and weight files.

Used by the models (``ROW_AXES``), the converters (``convert.KINDS``: the class a
checkpoint kind loads into) and the recipes (``RecipeConfig.model`` and the model
they build); adding a kind is one row here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from flax import nnx

from ftp_jax._row_axes import flax_row_axes
from ftp_jax.models.clip_resnet import CLIPResNet, clip_resnet50
from ftp_jax.models.resnet import ResNet, resnet50
from ftp_jax.models.row_rules import clip_row_axes
from ftp_jax.models.vit import VisionTransformer, clip_vit_b16

__all__ = ["MODEL_KINDS", "ModelKind", "build_model"]


class ModelKind(NamedTuple):
    """One model kind."""

    model_class: type  # the Flax NNX class its checkpoints load into
    build: Callable[..., nnx.Module]  # (num_classes, *, image_size, rngs) -> the full model
    row_axes: Any  # FTP's/TPGM's row rule (the reference's rows)
    takes_image_size: bool  # whether the architecture depends on the input size
    weights: str  # the checkpoint files it reads


MODEL_KINDS: dict[str, ModelKind] = {
    "torchvision_resnet50": ModelKind(
        ResNet,
        lambda num_classes, *, image_size, rngs: resnet50(num_classes, rngs=rngs),
        flax_row_axes,
        False,
        "torchvision / timm ResNet-50, MoCo v3 r-50 (.pth.tar)",
    ),
    "clip_resnet50": ModelKind(
        CLIPResNet,
        clip_resnet50,
        clip_row_axes,
        True,
        "OpenAI CLIP RN50.pt (TorchScript), open_clip RN50, transformers CLIP",
    ),
    "clip_vit_b16": ModelKind(
        VisionTransformer,
        clip_vit_b16,
        clip_row_axes,
        True,
        "OpenAI CLIP ViT-B-16.pt, open_clip ViT-B-16, transformers CLIP",
    ),
}


def build_model(
    kind: str, num_classes: int, *, image_size: int = 224, rngs: nnx.Rngs, **overrides: Any
) -> nnx.Module:
    """The model of ``kind`` with a fresh head; ``overrides`` (e.g. ``width``, ``layers``)
    build a smaller model of the same structure, for smoke tests.

    Raises:
      ValueError: an unknown ``kind``, naming the known ones.
    """
    if kind not in MODEL_KINDS:
        raise ValueError(f"unknown model kind {kind!r}; expected one of {sorted(MODEL_KINDS)}.")
    entry = MODEL_KINDS[kind]
    if not overrides:
        return entry.build(num_classes, image_size=image_size, rngs=rngs)
    size = {"image_size": image_size} if entry.takes_image_size else {}
    return entry.model_class(num_classes, rngs=rngs, **size, **overrides)
