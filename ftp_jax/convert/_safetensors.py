"""Reads and writes safetensors files with numpy (no torch, no extra dependency).

The format (https://github.com/huggingface/safetensors): an 8-byte
little-endian header length ``n``, ``n`` bytes of JSON mapping each tensor's
name to ``{"dtype", "shape", "data_offsets": [begin, end]}`` (and an optional
``"__metadata__"`` of strings), then the little-endian, C-ordered tensor bytes.
``bfloat16`` and ``float8`` tensors are read with ``ml_dtypes`` (installed with
JAX).
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Mapping

import ml_dtypes
import numpy as np

__all__ = ["read_safetensors", "write_safetensors", "is_safetensors"]

_DTYPES = {
    "F64": np.dtype(np.float64),
    "F32": np.dtype(np.float32),
    "F16": np.dtype(np.float16),
    "BF16": np.dtype(ml_dtypes.bfloat16),
    "F8_E4M3": np.dtype(ml_dtypes.float8_e4m3fn),
    "F8_E5M2": np.dtype(ml_dtypes.float8_e5m2),
    "I64": np.dtype(np.int64),
    "I32": np.dtype(np.int32),
    "I16": np.dtype(np.int16),
    "I8": np.dtype(np.int8),
    "U64": np.dtype(np.uint64),
    "U32": np.dtype(np.uint32),
    "U16": np.dtype(np.uint16),
    "U8": np.dtype(np.uint8),
    "BOOL": np.dtype(np.bool_),
}
_NAMES = {dtype: name for name, dtype in _DTYPES.items()}
_MAX_HEADER = 100_000_000


def _header(file, path: str) -> tuple[dict, int]:
    raw = file.read(8)
    if len(raw) != 8:
        raise ValueError(f"{path}: too short for a safetensors file")
    (length,) = struct.unpack("<Q", raw)
    if length > _MAX_HEADER:
        raise ValueError(f"{path}: not a safetensors file (header length {length})")
    try:
        header = json.loads(file.read(length))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path}: not a safetensors file ({error})") from None
    if not isinstance(header, dict):
        raise ValueError(f"{path}: not a safetensors file (the header is not a JSON object)")
    return header, 8 + length


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


def read_safetensors(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Reads every tensor of a safetensors file as a numpy array (native byte order).

    Raises:
      ValueError: if the file is not a valid safetensors file (bad header, an
        unknown dtype, offsets that do not match the shape or leave the file).
    """
    path = os.fspath(path)
    size = os.path.getsize(path)
    tensors: dict[str, np.ndarray] = {}
    with open(path, "rb") as file:
        header, start = _header(file, path)
        for name, info in header.items():
            if name == "__metadata__":
                continue
            dtype = _DTYPES.get(info.get("dtype"))
            if dtype is None:
                raise ValueError(f"{path}: tensor {name!r} has unknown dtype {info.get('dtype')!r}")
            shape = tuple(int(n) for n in info["shape"])
            begin, end = (int(o) for o in info["data_offsets"])
            expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
            if end - begin != expected or begin < 0 or start + end > size:
                raise ValueError(
                    f"{path}: tensor {name!r} of shape {shape} and dtype {info['dtype']} has "
                    f"data offsets {[begin, end]}, which do not fit its size or the file"
                )
            file.seek(start + begin)
            raw = file.read(end - begin)
            stored = dtype.newbyteorder("<")
            tensors[name] = np.frombuffer(raw, stored).astype(dtype).reshape(shape)
    return tensors


def write_safetensors(
    path: str | os.PathLike,
    tensors: Mapping[str, np.ndarray],
    metadata: Mapping[str, str] | None = None,
) -> None:
    """Writes numpy arrays as a safetensors file (readable by ``safetensors`` and torch).

    Args:
      path: the file to write.
      tensors: name -> array; any dtype of the format (float64/32/16, bfloat16,
        float8, signed and unsigned integers, bool).
      metadata: optional string -> string metadata.
    """
    header: dict[str, object] = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    blobs = []
    offset = 0
    for name, array in tensors.items():
        array = np.asarray(array)
        dtype_name = _NAMES.get(array.dtype.newbyteorder("="))
        if dtype_name is None:
            raise ValueError(f"tensor {name!r}: dtype {array.dtype} has no safetensors name")
        blob = np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<")).tobytes()
        header[name] = {
            "dtype": dtype_name,
            "shape": list(array.shape),
            "data_offsets": [offset, offset + len(blob)],
        }
        blobs.append(blob)
        offset += len(blob)
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)
    with open(path, "wb") as file:
        file.write(struct.pack("<Q", len(encoded)))
        file.write(encoded)
        for blob in blobs:
            file.write(blob)
