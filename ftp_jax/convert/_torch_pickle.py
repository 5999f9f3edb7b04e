"""Reads PyTorch checkpoint files into numpy arrays, without importing torch.

A file written by ``torch.save`` (PyTorch >= 1.6) is a zip archive holding a
pickle, ``<archive>/data.pkl``, and one raw little-endian buffer per tensor
storage, ``<archive>/data/<key>``. The pickle rebuilds each tensor with
``torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)``, where
``storage`` is a *persistent id* ``('storage', torch.FloatStorage, key,
location, numel)``. A TorchScript archive (``torch.jit.save``; OpenAI's CLIP
``RN50.pt`` and ``ViT-B-16.pt`` are ones) has the same layout, its modules
pickled as ``__torch__.*`` objects whose state is a dict of attributes. The
legacy format (``_use_new_zipfile_serialization=False``, PyTorch < 1.6) is a
stream: magic number, protocol, system info, the pickle, the list of storage
keys, then each storage's element count and bytes.

:class:`_RestrictedUnpickler` rebuilds all of them with numpy: it resolves only
the handful of globals that tensors need (tensor and parameter rebuilders,
storage types, ``OrderedDict``) and turns every other global into an inert
placeholder that records its arguments and state. It imports nothing and calls
no function named by the file, so reading an untrusted checkpoint cannot run
code (unlike ``torch.load(weights_only=False)``).
"""

from __future__ import annotations

import collections
import os
import pickle
import struct
import zipfile
from typing import Any

import ml_dtypes
import numpy as np

__all__ = ["UnsupportedCheckpoint", "Opaque", "read_torch_file", "module_state_dict"]

_STORAGE_DTYPES = {
    "FloatStorage": np.dtype(np.float32),
    "DoubleStorage": np.dtype(np.float64),
    "HalfStorage": np.dtype(np.float16),
    "BFloat16Storage": np.dtype(ml_dtypes.bfloat16),
    "LongStorage": np.dtype(np.int64),
    "IntStorage": np.dtype(np.int32),
    "ShortStorage": np.dtype(np.int16),
    "CharStorage": np.dtype(np.int8),
    "ByteStorage": np.dtype(np.uint8),
    "BoolStorage": np.dtype(np.bool_),
    "ComplexFloatStorage": np.dtype(np.complex64),
    "ComplexDoubleStorage": np.dtype(np.complex128),
    "UntypedStorage": np.dtype(np.uint8),
}

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001


class UnsupportedCheckpoint(ValueError):
    """The pure-python reader cannot read this file (torch may)."""


class _StorageType:
    """A storage class named in the pickle (``torch.FloatStorage``): just its dtype."""

    def __init__(self, name: str):
        self.name = name
        self.dtype = _STORAGE_DTYPES[name]


class _Storage:
    """A storage read lazily: its key, dtype and element count."""

    def __init__(self, key: str, dtype: np.dtype, numel: int):
        self.key = key
        self.dtype = dtype
        self.numel = numel
        self.data: np.ndarray | None = None  # 1-D, filled by the reader


class _LazyTensor:
    """A tensor whose storage bytes are read after the pickle (legacy format)."""

    def __init__(self, storage: _Storage, offset: int, size: tuple, stride: tuple):
        self.storage = storage
        self.offset = int(offset)
        self.size = tuple(int(s) for s in size)
        self.stride = tuple(int(s) for s in stride)

    def materialize(self) -> np.ndarray:
        data = self.storage.data
        if data is None:
            raise UnsupportedCheckpoint(f"storage {self.storage.key!r} was never read")
        if any(s == 0 for s in self.size):
            return np.zeros(self.size, data.dtype)
        last = self.offset + sum((n - 1) * s for n, s in zip(self.size, self.stride, strict=True))
        if self.offset < 0 or last >= data.size or min(self.stride, default=0) < 0:
            raise UnsupportedCheckpoint(
                f"a tensor of size {self.size}, stride {self.stride} at offset {self.offset} "
                f"reaches past its storage {self.storage.key!r} of {data.size} elements: "
                "the file is corrupted"
            )
        view = np.lib.stride_tricks.as_strided(
            data[self.offset :],
            shape=self.size,
            strides=tuple(s * data.itemsize for s in self.stride),
            writeable=False,
        )
        return np.array(view)  # a contiguous, writable copy


class Opaque:
    """An object of a class the reader does not rebuild (anything but tensors and containers).

    ``module`` and ``name`` say what it was; ``args`` are the arguments the pickle
    passed to it; ``state`` its ``__setstate__`` state; ``items``/``entries`` what
    was appended or set on it. TorchScript modules (``__torch__.*``) and pickled
    ``nn.Module`` objects arrive as these; :func:`module_state_dict` reads their
    tensors.
    """

    module = ""
    name = ""

    def __new__(cls, *args: Any, **kwargs: Any):
        obj = object.__new__(cls)
        obj.args = args
        obj.kwargs = kwargs
        obj.state = None
        obj.items = []
        obj.entries = {}
        return obj

    def __init__(self, *args: Any, **kwargs: Any):
        pass

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def append(self, item: Any) -> None:
        self.items.append(item)

    def extend(self, items: Any) -> None:
        self.items.extend(items)

    def __setitem__(self, key: Any, value: Any) -> None:
        self.entries[key] = value

    def __repr__(self) -> str:
        return f"<{self.module}.{self.name}>"


def _opaque_class(module: str, name: str) -> type:
    return type(name, (Opaque,), {"module": module, "name": name})


def _rebuild_tensor(storage, storage_offset, size, stride, *unused):
    return _LazyTensor(storage, storage_offset, size, stride)


def _rebuild_parameter(data, *unused):
    return data


def _rebuild_from_type_v2(function, new_type, args, state):
    del new_type, state
    return function(*args)


_REBUILDERS = {
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch._tensor", "_rebuild_from_type_v2"): _rebuild_from_type_v2,
    ("torch", "Size"): tuple,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "slice"): slice,
    ("builtins", "complex"): complex,
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Rebuilds tensors as lazy numpy views; every other global becomes an :class:`Opaque`."""

    def __init__(self, file, storage_for):
        super().__init__(file, encoding="utf-8")
        self._storage_for = storage_for
        self._opaque: dict[tuple[str, str], type] = {}

    def find_class(self, module: str, name: str):
        rebuilder = _REBUILDERS.get((module, name))
        if rebuilder is not None:
            return rebuilder
        if module in ("torch", "torch.storage") and name in _STORAGE_DTYPES:
            return _StorageType(name)
        key = (module, name)
        if key not in self._opaque:
            self._opaque[key] = _opaque_class(module, name)
        return self._opaque[key]

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and pid and pid[0] == "storage"):
            raise UnsupportedCheckpoint(f"unknown persistent id {pid!r}")
        storage_type, key = pid[1], str(pid[2])
        numel = int(pid[4])
        if not isinstance(storage_type, _StorageType):
            raise UnsupportedCheckpoint(f"unknown storage type {storage_type!r}")
        storage = self._storage_for(key, storage_type.dtype, numel)
        if len(pid) > 5 and pid[5] is not None:  # legacy view: (view_key, offset, size)
            raise UnsupportedCheckpoint("legacy storage views are not supported")
        return storage


def _materialize(obj: Any, memo: dict[int, Any]) -> Any:
    """Replaces every :class:`_LazyTensor` in a container tree by its array."""
    if id(obj) in memo:
        return memo[id(obj)]
    if isinstance(obj, _LazyTensor):
        result = obj.materialize()
    elif isinstance(obj, dict):
        result = type(obj)() if isinstance(obj, collections.OrderedDict) else {}
        memo[id(obj)] = result
        for key, value in obj.items():
            result[key] = _materialize(value, memo)
        return result
    elif isinstance(obj, list):
        result = []
        memo[id(obj)] = result
        result.extend(_materialize(v, memo) for v in obj)
        return result
    elif isinstance(obj, tuple):
        result = tuple(_materialize(v, memo) for v in obj)
    elif isinstance(obj, Opaque):
        memo[id(obj)] = obj
        obj.args = _materialize(obj.args, memo)
        obj.state = _materialize(obj.state, memo)
        obj.items = _materialize(obj.items, memo)
        obj.entries = _materialize(obj.entries, memo)
        return obj
    else:
        result = obj
    memo[id(obj)] = result
    return result


def _read_zip(path: str) -> tuple[Any, str]:
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        pickles = [n for n in names if n.endswith("data.pkl") and n.count("/") == 1]
        if len(pickles) != 1:
            raise UnsupportedCheckpoint(
                f"{path}: a zip file without one '<archive>/data.pkl' is not a PyTorch checkpoint"
            )
        root = pickles[0][: -len("data.pkl")]
        byteorder = "little"
        if root + "byteorder" in names:
            byteorder = archive.read(root + "byteorder").decode().strip()
        if byteorder not in ("little", "big"):
            raise UnsupportedCheckpoint(f"{path}: unknown byte order {byteorder!r}")
        storages: dict[str, _Storage] = {}

        def storage_for(key: str, dtype: np.dtype, numel: int) -> _Storage:
            if key not in storages:
                storage = _Storage(key, dtype, numel)
                name = f"{root}data/{key}"
                if name not in names:
                    raise UnsupportedCheckpoint(f"{path}: missing tensor data {name!r}")
                raw = archive.read(name)
                stored = dtype.newbyteorder("<" if byteorder == "little" else ">")
                if len(raw) < numel * dtype.itemsize:
                    raise UnsupportedCheckpoint(
                        f"{path}: tensor data {name!r} holds {len(raw)} bytes, "
                        f"{numel * dtype.itemsize} expected: the file is truncated or corrupted"
                    )
                storage.data = np.frombuffer(raw, stored, count=numel).astype(dtype, copy=False)
                storages[key] = storage
            return storages[key]

        with archive.open(pickles[0]) as file:
            obj = _RestrictedUnpickler(file, storage_for).load()
        torchscript = root + "constants.pkl" in names or any(
            n.startswith(root + "code/") for n in names
        )
    return _materialize(obj, {}), "torchscript" if torchscript else "torch-zip"


def _read_legacy(path: str) -> tuple[Any, str]:
    with open(path, "rb") as file:
        header = _RestrictedUnpickler(file, None)
        try:
            magic = header.load()
        except Exception as error:  # noqa: BLE001 - any failure means "not this format"
            raise UnsupportedCheckpoint(f"{path}: not a PyTorch checkpoint ({error})") from None
        if magic != _LEGACY_MAGIC:
            raise UnsupportedCheckpoint(f"{path}: not a PyTorch checkpoint (no magic number)")
        protocol = _RestrictedUnpickler(file, None).load()
        if protocol != _LEGACY_PROTOCOL:
            raise UnsupportedCheckpoint(f"{path}: unknown legacy protocol {protocol!r}")
        system = _RestrictedUnpickler(file, None).load()
        little = not isinstance(system, dict) or system.get("little_endian", True)
        storages: dict[str, _Storage] = {}

        def storage_for(key: str, dtype: np.dtype, numel: int) -> _Storage:
            if key not in storages:
                storages[key] = _Storage(key, dtype, numel)
            return storages[key]

        obj = _RestrictedUnpickler(file, storage_for).load()
        keys = _RestrictedUnpickler(file, None).load()
        for key in keys:
            storage = storages.get(str(key))
            size = file.read(8)
            if len(size) != 8:
                raise UnsupportedCheckpoint(f"{path}: truncated before storage {key!r}")
            (numel,) = struct.unpack("<q" if little else ">q", size)
            if storage is None:
                raise UnsupportedCheckpoint(f"{path}: storage {key!r} is not used by any tensor")
            raw = file.read(numel * storage.dtype.itemsize)
            if len(raw) != numel * storage.dtype.itemsize:
                raise UnsupportedCheckpoint(f"{path}: truncated storage {key!r}")
            stored = storage.dtype.newbyteorder("<" if little else ">")
            storage.data = np.frombuffer(raw, stored).astype(storage.dtype, copy=False)
    return _materialize(obj, {}), "torch-legacy"


def read_torch_file(path: str | os.PathLike) -> tuple[Any, str]:
    """Unpickles a ``torch.save`` / ``torch.jit.save`` file with tensors as numpy arrays.

    Args:
      path: a ``.pt``/``.pth``/``.bin``/``.tar`` file written by PyTorch (zip or
        legacy format) or a TorchScript archive.

    Returns:
      ``(object, format)``: the unpickled object (dicts, lists, numpy arrays,
      :class:`Opaque` placeholders for other classes) and ``"torch-zip"``,
      ``"torchscript"`` or ``"torch-legacy"``.

    Raises:
      UnsupportedCheckpoint: if the file is none of these formats (e.g. the
        pre-1.0 tar format) or is corrupted.
    """
    path = os.fspath(path)
    try:
        if zipfile.is_zipfile(path):
            return _read_zip(path)
        with open(path, "rb") as file:
            start = file.read(2)
        if start[:1] != b"\x80":  # every pickle of protocol >= 2 starts with PROTO
            raise UnsupportedCheckpoint(f"{path}: neither a zip nor a pickle file")
        return _read_legacy(path)
    except UnsupportedCheckpoint:
        raise
    except (EOFError, pickle.UnpicklingError, zipfile.BadZipFile, struct.error) as error:
        raise UnsupportedCheckpoint(
            f"{path}: truncated or corrupted ({type(error).__name__}: {error})"
        ) from None


def module_state_dict(obj: Opaque, prefix: str = "") -> dict[str, np.ndarray]:
    """The tensors of a pickled ``nn.Module`` or TorchScript module, by dotted name.

    A pickled ``nn.Module`` keeps its tensors in ``_parameters`` and ``_buffers``
    and its children in ``_modules``; a TorchScript module keeps all of them as
    attributes. Both give the keys that ``state_dict()`` would.
    """
    out: dict[str, np.ndarray] = {}
    state = obj.state if isinstance(obj.state, dict) else {}
    if "_modules" in state:  # a pickled torch.nn.Module
        for group in ("_parameters", "_buffers"):
            for name, value in (state.get(group) or {}).items():
                if isinstance(value, np.ndarray):
                    out[prefix + name] = value
        for name, child in (state.get("_modules") or {}).items():
            if isinstance(child, Opaque):
                out.update(module_state_dict(child, f"{prefix}{name}."))
        return out
    for name, value in state.items():  # a TorchScript module: attributes
        if isinstance(value, np.ndarray):
            out[prefix + str(name)] = value
        elif isinstance(value, Opaque):
            out.update(module_state_dict(value, f"{prefix}{name}."))
    return out
