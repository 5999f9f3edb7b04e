"""Reads and writes safetensors files through the ``safetensors`` library's numpy API.

The format (https://github.com/huggingface/safetensors): an 8-byte
little-endian header length ``n``, ``n`` bytes of JSON mapping each tensor's
name to ``{"dtype", "shape", "data_offsets": [begin, end]}`` (and an optional
``"__metadata__"`` of strings), then the little-endian, C-ordered tensor bytes.
``safetensors.numpy`` reads and writes ``bfloat16`` (``ml_dtypes``, installed
with JAX) since 0.8; it has no ``float8``, which no vision checkpoint this
project reads uses. What is left here is the project's error messages and
``is_safetensors``, a format sniff for files without the ``.safetensors`` suffix.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Mapping

import numpy as np
import safetensors
import safetensors.numpy

__all__ = ["read_safetensors", "write_safetensors", "is_safetensors", "check_safetensors"]

_MAX_HEADER = 100_000_000


def is_safetensors(path: str | os.PathLike) -> bool:
    """Whether ``path`` starts like a safetensors file (a length and a JSON object)."""
    try:
        with open(path, "rb") as file:
            raw = file.read(9)
    except OSError:
        return False
    if len(raw) < 9:
        return False
    (length,) = struct.unpack("<Q", raw[:8])
    return 0 < length <= min(_MAX_HEADER, os.path.getsize(path) - 8) and raw[8:9] == b"{"


def check_safetensors(path: str | os.PathLike) -> None:
    """Reads the header of a safetensors file (not its tensors); ``ValueError`` if it is bad."""
    path = os.fspath(path)
    try:
        with safetensors.safe_open(path, framework="numpy") as file:
            file.keys()
    except (safetensors.SafetensorError, OSError) as error:
        raise ValueError(f"{path}: not a valid safetensors file ({error})") from None


def read_safetensors(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Reads every tensor of a safetensors file as a numpy array (native byte order).

    Raises:
      ValueError: if the file is not a valid safetensors file (bad header, an
        unknown dtype, offsets that do not match the shape or leave the file).
    """
    path = os.fspath(path)
    try:
        tensors = safetensors.numpy.load_file(path)
    except (safetensors.SafetensorError, OSError, AttributeError, KeyError) as error:
        # AttributeError/KeyError: a dtype numpy lacks (float8, complex32).
        raise ValueError(
            f"{path}: not a valid safetensors file, or one with a dtype numpy cannot hold "
            f"({type(error).__name__}: {error})"
        ) from None
    return {name: np.array(array) for name, array in tensors.items()}  # own the memory


def write_safetensors(
    path: str | os.PathLike,
    tensors: Mapping[str, np.ndarray],
    metadata: Mapping[str, str] | None = None,
) -> None:
    """Writes numpy arrays as a safetensors file (readable by ``safetensors`` and torch).

    Args:
      path: the file to write.
      tensors: name -> array; float64/32/16, bfloat16, signed and unsigned
        integers, bool.
      metadata: optional string -> string metadata.

    Raises:
      ValueError: an array of a dtype the format has no name for.
    """
    arrays = {str(name): np.asarray(array, order="C") for name, array in tensors.items()}
    meta = {str(k): str(v) for k, v in metadata.items()} if metadata else None
    try:
        safetensors.numpy.save_file(arrays, os.fspath(path), metadata=meta)
    except (safetensors.SafetensorError, ValueError, TypeError) as error:
        kinds = {name: str(array.dtype) for name, array in arrays.items()}
        raise ValueError(
            f"cannot write {os.fspath(path)!r} as safetensors ({error}); the tensors' dtypes: "
            f"{kinds}"
        ) from None
