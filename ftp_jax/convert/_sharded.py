"""Checkpoint folders and sharded checkpoints (HF's ``*.index.json``), read as one state dict.

``transformers``' ``save_pretrained`` writes ``model.safetensors``, or, above
``max_shard_size``, shards ``model-00001-of-0000N.safetensors`` ... and an index
``model.safetensors.index.json``: ``{"metadata": {...}, "weight_map": {key:
shard file name}}``, the names relative to the index's folder (as
``transformers.modeling_utils.load_sharded_checkpoint`` resolves them).
Older PyTorch-format saves use ``pytorch_model.bin`` and
``pytorch_model.bin.index.json`` the same way.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable

import numpy as np

from ftp_jax.convert._errors import CheckpointError

__all__ = ["FOLDER_FILES", "checkpoint_in_folder", "is_index", "read_index"]

#: The files looked for in a checkpoint folder, in this order (transformers' own).
FOLDER_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)


def checkpoint_in_folder(folder: str) -> str:
    """The checkpoint file of a ``save_pretrained`` folder (one of :data:`FOLDER_FILES`).

    Raises:
      FileNotFoundError: naming the files looked for and what the folder holds.
    """
    for name in FOLDER_FILES:
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            return path
    held = sorted(os.listdir(folder))
    shown = ", ".join(held[:8]) + (f", ... ({len(held)} in all)" if len(held) > 8 else "")
    raise FileNotFoundError(
        f"no checkpoint in the folder {folder!r}: looked for {', '.join(FOLDER_FILES)}; it "
        f"holds {shown or 'nothing'}. Pass the checkpoint file itself."
    )


def is_index(path: str) -> bool:
    """Whether ``path`` names a shard index (``*.index.json``)."""
    return path.endswith(".index.json")


def read_index(
    path: str, read_shard: Callable[[str], tuple[dict[str, np.ndarray], str]]
) -> tuple[dict[str, np.ndarray], str]:
    """Reads every shard an index names and returns ``(tensors, format)``.

    Args:
      path: the ``*.index.json`` file.
      read_shard: reads one shard file into ``(tensors, format)``.

    Returns:
      The tensors of the index's ``weight_map``, each from the shard the index
      names, in the index's key order; the format is the shards' with the
      count, e.g. ``"safetensors, 3 shards"``.

    Raises:
      CheckpointError: an index that is not JSON or has no ``weight_map``, a
        shard file that is missing (naming it and the index), a key the index
        puts in a shard that does not hold it.
    """
    try:
        with open(path) as file:
            index = json.load(file)
    except ValueError as error:
        raise CheckpointError(f"the shard index {path!r} is not valid JSON ({error}).") from None
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in weight_map.items()
    ):
        raise CheckpointError(
            f"the shard index {path!r} has no 'weight_map' of tensor name -> shard file; "
            "is it a transformers *.index.json?"
        )
    folder = os.path.dirname(os.path.abspath(path))
    by_shard: dict[str, list[str]] = {}
    for key, shard in weight_map.items():
        by_shard.setdefault(shard, []).append(key)
    missing = [s for s in by_shard if not os.path.isfile(os.path.join(folder, s))]
    if missing:
        raise CheckpointError(
            f"shard file {os.path.join(folder, missing[0])!r} named by the index {path!r} is "
            f"missing; it should hold {len(by_shard[missing[0]])} tensors such as "
            f"{by_shard[missing[0]][0]!r}. Missing: {len(missing)} of the index's "
            f"{len(by_shard)} shard files ({', '.join(missing[:4])}). Download every shard the "
            "index lists into the index's folder."
        )
    read: dict[str, np.ndarray] = {}
    formats = set()
    for shard, keys in by_shard.items():
        shard_path = os.path.join(folder, shard)
        tensors, shard_format = read_shard(shard_path)
        formats.add(shard_format)
        absent = [k for k in keys if k not in tensors]
        if absent:
            raise CheckpointError(
                f"the index {path!r} puts {len(absent)} tensors in {shard_path!r} that it does "
                f"not hold, e.g. {absent[0]!r}; the shard and the index are from different saves."
            )
        read.update((k, tensors[k]) for k in keys)
    tensors = {k: read[k] for k in weight_map}
    return tensors, f"{'/'.join(sorted(formats))}, {len(by_shard)} shards"
