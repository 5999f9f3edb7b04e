"""Models for the experiments (Flax NNX).

The paper-scale models (each with a new classification ``head``; weights from
PyTorch checkpoints with :mod:`ftp_jax.convert`):

- :class:`ResNet` / :func:`resnet50`: torchvision's ResNet-50 (MoCo v3's layout);
- :class:`CLIPResNet` / :func:`clip_resnet50`: CLIP's modified ResNet-50;
- :class:`VisionTransformer` / :func:`clip_vit_b16`: CLIP's ViT-B/16;
- :data:`clip_row_axes`: FTP's row axes for the CLIP models (the reference's rows);
- :func:`with_compute_dtype`: any of them computing in bfloat16, params in float32.
"""

from ftp_jax._extras import require_extra

require_extra("train", "ftp_jax.models")

from ftp_jax.models.clip_resnet import AttentionPool2d, CLIPResNet, clip_resnet50
from ftp_jax.models.kinds import MODEL_KINDS, ModelKind, build_model  # noqa: I001 (after the models)
from ftp_jax.models.precision import COMPUTE_DTYPES, compute_dtype, with_compute_dtype
from ftp_jax.models.resnet import ResNet, resnet50
from ftp_jax.models.row_rules import clip_row_axes
from ftp_jax.models.small_cnn import SmallCNN, replace_head
from ftp_jax.models.vit import VisionTransformer, clip_vit_b16

#: The row axes of each model kind (see :data:`MODEL_KINDS`).
ROW_AXES = {name: kind.row_axes for name, kind in MODEL_KINDS.items()}

__all__ = [
    "MODEL_KINDS",
    "ModelKind",
    "ROW_AXES",
    "COMPUTE_DTYPES",
    "compute_dtype",
    "with_compute_dtype",
    "build_model",
    "AttentionPool2d",
    "CLIPResNet",
    "ResNet",
    "SmallCNN",
    "VisionTransformer",
    "clip_resnet50",
    "clip_row_axes",
    "clip_vit_b16",
    "replace_head",
    "resnet50",
]
