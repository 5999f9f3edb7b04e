"""Pre-trained weights from PyTorch checkpoints into the Flax NNX models.

- :func:`load_pretrained` ``(model, path, *, kind, prefix, new_head, engine, naming,
  pos_embed_resize, resize_attnpool) -> LoadReport``: reads a checkpoint file or
  folder and sets the model's parameters and batch statistics.
- :func:`load_state_dict`: the same from an in-memory state dict.
- :func:`read_state_dict`: a file into ``{key: numpy array}``, without torch for
  ``torch.save`` files (zip and legacy), TorchScript archives and safetensors;
  sharded checkpoints (``*.index.json``) and ``save_pretrained`` folders read whole.
  Only tensors and containers are unpickled: a file that asks for anything else
  (code, other objects) is refused with :class:`UnsafeCheckpoint`, naming it.
- :func:`check_checkpoint`: that a weights file exists, is readable and looks
  like a checkpoint, without reading its tensors.

Besides OpenAI CLIP's and torchvision's key names, a ViT loads from a
HuggingFace ``transformers`` CLIP checkpoint (``CLIPModel``, ``CLIPVisionModel``,
``CLIPVisionModelWithProjection``; ``naming="auto"`` detects it), and a ViT
positional embedding trained at another image size is resampled bicubically to
the model's grid (``pos_embed_resize``; the report's ``resized`` says so).
- :func:`to_torch_state_dict`, :func:`write_safetensors`: back to PyTorch.
- :func:`torch_key_map`: ``{Flax path: PyTorch key}`` of a model.
"""

from ftp_jax._extras import require_extra

require_extra("train", "ftp_jax.convert")

from ftp_jax.convert._errors import CheckpointError
from ftp_jax.convert._load import KINDS, LoadReport, load_pretrained, load_state_dict
from ftp_jax.convert._names import to_torch_state_dict, torch_key_map
from ftp_jax.convert._read import check_checkpoint, read_state_dict
from ftp_jax.convert._safetensors import read_safetensors, write_safetensors
from ftp_jax.convert._torch_pickle import (
    NotACheckpoint,
    UnsafeCheckpoint,
    UnsupportedCheckpoint,
    read_torch_file,
)

__all__ = [
    "KINDS",
    "CheckpointError",
    "LoadReport",
    "NotACheckpoint",
    "UnsafeCheckpoint",
    "UnsupportedCheckpoint",
    "check_checkpoint",
    "load_pretrained",
    "load_state_dict",
    "read_safetensors",
    "read_state_dict",
    "read_torch_file",
    "to_torch_state_dict",
    "torch_key_map",
    "write_safetensors",
]
