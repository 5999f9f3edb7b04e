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

:class:`_RestrictedUnpickler` rebuilds all of them with numpy. It resolves only
the globals that tensors and containers need (tensor and parameter rebuilders,
storage types, dtypes, ``torch.Size``, ``OrderedDict``: what
``torch.load(weights_only=True)`` allows) and TorchScript's module classes
(``__torch__.*``, defined by the archive's TorchScript code, not by Python),
which become inert :class:`Opaque` placeholders. Any other global (``os.system``,
``builtins.eval``, a pickled ``nn.Module`` class) is refused with
:class:`UnsafeCheckpoint`, naming it: the reader imports nothing and calls no
function the file names, so reading an untrusted checkpoint cannot run code.
"""

from __future__ import annotations

import _compat_pickle
import collections
import os
import pickle
import struct
import tarfile
import zipfile
from typing import Any

import ml_dtypes
import numpy as np

__all__ = [
    "NotACheckpoint",
    "Opaque",
    "UnsafeCheckpoint",
    "UnsupportedCheckpoint",
    "module_state_dict",
    "not_a_checkpoint",
    "read_torch_file",
    "scan_torch_file",
]

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
    """A weights file that cannot be read: not a checkpoint, corrupted, or refused."""


class NotACheckpoint(UnsupportedCheckpoint):
    """A file that is no checkpoint at all (text, random bytes, another archive)."""


class UnsafeCheckpoint(UnsupportedCheckpoint):
    """A pickle that asks for something other than tensors and containers (code, objects)."""


class _NeedsTorch(UnsupportedCheckpoint):
    """A valid PyTorch file in a form the pure-python reader lacks; ``torch.load`` may read it."""


def not_a_checkpoint(path: str, start: bytes) -> NotACheckpoint:
    """The error for a file that is no PyTorch file nor safetensors, showing how it starts."""
    text = start and all(32 <= b < 127 or b in b"\t\r\n" for b in start)
    kind = "it looks like text" if text else "its first bytes"
    return NotACheckpoint(
        f"{path} is not a checkpoint: neither a zip nor a pickle file (PyTorch's formats) nor "
        f"safetensors ({kind}: {start[:16]!r}). Pass the weights file itself (.pt, .pth, .bin, "
        ".safetensors) or its folder."
    )


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
    """A TorchScript object (``__torch__.*``): an inert record of what the pickle built.

    ``module`` and ``name`` say what it was; ``args`` are the arguments the pickle
    passed to it; ``state`` its ``__setstate__`` state; ``items``/``entries`` what
    was appended or set on it. :func:`module_state_dict` reads a module's tensors.
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


def _encode(text, encoding="latin1"):
    """``_codecs.encode``, as pickle protocol 2 writes bytes; only the byte encodings."""
    if encoding not in ("latin1", "latin-1", "utf-8", "utf8", "ascii") or not isinstance(text, str):
        raise UnsafeCheckpoint(f"the pickle asks for _codecs.encode with {encoding!r}; refused")
    return text.encode(encoding)


def _device(*args):
    """``torch.device(...)`` as its name (``"cuda:0"``): recorded by checkpoints, unused here."""
    return ":".join(str(a) for a in args)


def _same(value, *unused):
    return value


class _TypeName(str):
    """A torch type named in a pickle (``torch.Tensor``, ``Parameter``): a name, not callable."""


_REBUILDERS = {
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch._tensor", "_rebuild_from_type_v2"): _rebuild_from_type_v2,
    ("torch", "Size"): tuple,
    ("torch", "device"): _device,
    ("torch.serialization", "_get_layout"): str,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("collections", "Counter"): collections.Counter,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "slice"): slice,
    ("builtins", "complex"): complex,
    ("builtins", "bytearray"): bytearray,
    ("_codecs", "encode"): _encode,
    # TorchScript archives wrap typed lists and dicts in these.
    ("torch.jit._pickle", "build_intlist"): _same,
    ("torch.jit._pickle", "build_doublelist"): _same,
    ("torch.jit._pickle", "build_boollist"): _same,
    ("torch.jit._pickle", "build_tensorlist"): _same,
    ("torch.jit._pickle", "restore_type_tag"): _same,
}
_TYPE_NAMES = {
    ("torch", "Tensor"),
    ("torch.nn.parameter", "Parameter"),
    ("torch.nn.parameter", "Buffer"),
}
_TORCH_DTYPES = {
    "float32", "float", "float64", "double", "float16", "half", "bfloat16", "int64", "long",
    "int32", "int", "int16", "short", "int8", "uint8", "bool", "complex64", "complex128",
    "cfloat", "cdouble", "strided", "sparse_coo", "float8_e4m3fn", "float8_e5m2",
}  # fmt: skip


class _RestrictedUnpickler(pickle.Unpickler):
    """Rebuilds tensors as lazy numpy views; every other global becomes an :class:`Opaque`."""

    def __init__(self, file, storage_for):
        super().__init__(file, encoding="utf-8")
        self._storage_for = storage_for
        self._opaque: dict[tuple[str, str], type] = {}

    def find_class(self, module: str, name: str):
        # Python 2 names, as protocol 2 writes them (``__builtin__``), as pickle maps them.
        module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        rebuilder = _REBUILDERS.get((module, name))
        if rebuilder is not None:
            return rebuilder
        if module in ("torch", "torch.storage") and name in _STORAGE_DTYPES:
            return _StorageType(name)
        if (module, name) in _TYPE_NAMES or (module == "torch" and name in _TORCH_DTYPES):
            return _TypeName(f"{module}.{name}")
        if module == "__torch__" or module.startswith("__torch__."):
            # A TorchScript class: defined by the archive's TorchScript code, not a Python
            # import; it becomes an inert placeholder holding its attributes.
            key = (module, name)
            if key not in self._opaque:
                self._opaque[key] = _opaque_class(module, name)
            return self._opaque[key]
        if module.startswith("torch.") and name.startswith("_rebuild_"):
            raise _NeedsTorch(
                f"tensors rebuilt by {module}.{name} (sparse, quantized, nested or a tensor "
                "subclass) are not supported by the pure-python reader"
            )
        what = f"{module}.{name}"
        hint = ""
        if module.startswith("torch.nn.modules") or module.startswith("torch.nn."):
            hint = (
                " (a whole pickled nn.Module: save its state_dict() instead, "
                "torch.save(model.state_dict(), path))"
            )
        raise UnsafeCheckpoint(
            f"the file's pickle asks for {what}, which is neither a tensor nor a container"
            f"{hint}; it is refused: reading it would mean running code the file names. Only "
            "tensors, containers and TorchScript modules are read"
        )

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and pid and pid[0] == "storage"):
            raise _NeedsTorch(f"unknown persistent id {pid!r}")
        if self._storage_for is None:
            raise NotACheckpoint("a tensor storage where the file's header should be")
        storage_type, key = pid[1], str(pid[2])
        numel = int(pid[4])
        if not isinstance(storage_type, _StorageType):
            raise _NeedsTorch(f"unknown storage type {storage_type!r}")
        storage = self._storage_for(key, storage_type.dtype, numel)
        if len(pid) > 5 and pid[5] is not None:  # legacy view: (view_key, offset, size)
            raise _NeedsTorch("legacy storage views are not supported by the pure-python reader")
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


def _read_zip(path: str, read_data: bool = True) -> tuple[Any, str]:
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        pickles = [n for n in names if n.endswith("data.pkl") and n.count("/") == 1]
        if len(pickles) != 1:
            raise NotACheckpoint(
                f"{path} is not a checkpoint: a zip file without one '<archive>/data.pkl' is not "
                "a PyTorch file. Pass the weights file itself (.pt, .pth, .bin, .safetensors)."
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
                if not read_data:
                    storages[key] = storage
                    return storage
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
    file_format = "torchscript" if torchscript else "torch-zip"
    return (_materialize(obj, {}) if read_data else None), file_format


def _read_legacy(path: str, read_data: bool = True) -> tuple[Any, str]:
    with open(path, "rb") as file:
        header = _RestrictedUnpickler(file, None)
        try:
            magic = header.load()
        except UnsupportedCheckpoint:
            raise
        except Exception as error:  # noqa: BLE001 - any failure means "not this format"
            raise NotACheckpoint(
                f"{path} is not a checkpoint: a pickle that PyTorch did not write ({error})"
            ) from None
        if magic != _LEGACY_MAGIC:
            raise NotACheckpoint(
                f"{path} is not a checkpoint: a bare pickle (no PyTorch header), which is not "
                "read. Save the weights with torch.save(model.state_dict(), path) or as "
                "safetensors."
            )
        protocol = _RestrictedUnpickler(file, None).load()
        if protocol != _LEGACY_PROTOCOL:
            raise _NeedsTorch(f"{path}: unknown legacy protocol {protocol!r}")
        system = _RestrictedUnpickler(file, None).load()
        little = not isinstance(system, dict) or system.get("little_endian", True)
        storages: dict[str, _Storage] = {}

        def storage_for(key: str, dtype: np.dtype, numel: int) -> _Storage:
            if key not in storages:
                storages[key] = _Storage(key, dtype, numel)
            return storages[key]

        obj = _RestrictedUnpickler(file, storage_for).load()
        if not read_data:
            return None, "torch-legacy"
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


def scan_torch_file(path: str | os.PathLike) -> str:
    """Checks a PyTorch file as :func:`read_torch_file` would, without reading its tensors.

    Unpickles the object (milliseconds: a state dict's pickle is small; the
    tensors' bytes are skipped), so that a file that is no checkpoint, or that
    asks for code, is refused before a long run starts.

    Returns:
      The format, as :func:`read_torch_file` gives it.

    Raises:
      What :func:`read_torch_file` raises, but for missing tensor bytes.
    """
    return read_torch_file(path, read_data=False)[1]


def read_torch_file(path: str | os.PathLike, read_data: bool = True) -> tuple[Any, str]:
    """Unpickles a ``torch.save`` / ``torch.jit.save`` file with tensors as numpy arrays.

    Args:
      path: a ``.pt``/``.pth``/``.bin``/``.tar`` file written by PyTorch (zip or
        legacy format) or a TorchScript archive.

    Returns:
      ``(object, format)``: the unpickled object (dicts, lists, numpy arrays,
      :class:`Opaque` placeholders for other classes) and ``"torch-zip"``,
      ``"torchscript"`` or ``"torch-legacy"``.

    Raises:
      UnsafeCheckpoint: the pickle asks for anything but tensors, containers and
        TorchScript modules (``os.system``, a pickled class): nothing is called,
        and the message names what it asked for.
      NotACheckpoint: the file is no PyTorch file (text, random bytes, a bare
        pickle, another zip).
      UnsupportedCheckpoint: it is corrupted or truncated, or in a form this
        reader lacks (the pre-1.0 tar format, sparse tensors; ``torch.load`` may
        read those).
    """
    path = os.fspath(path)
    try:
        if zipfile.is_zipfile(path):
            return _read_zip(path, read_data)
        with open(path, "rb") as file:
            start = file.read(16)
        if start[:1] != b"\x80":  # every pickle of protocol >= 2 starts with PROTO
            if tarfile.is_tarfile(path):
                raise _NeedsTorch(f"{path}: PyTorch's pre-1.0 tar format")
            raise not_a_checkpoint(path, start)
        return _read_legacy(path, read_data)
    except UnsafeCheckpoint as error:
        raise UnsafeCheckpoint(f"{path}: {error}.") from None
    except UnsupportedCheckpoint:
        raise
    except (
        EOFError,
        pickle.UnpicklingError,
        zipfile.BadZipFile,
        struct.error,
        TypeError,
        ValueError,
        AttributeError,
        IndexError,
        KeyError,
        OverflowError,
    ) as error:
        raise UnsupportedCheckpoint(
            f"{path}: truncated or corrupted ({type(error).__name__}: {error})"
        ) from None


def module_state_dict(obj: Opaque, prefix: str = "") -> dict[str, np.ndarray]:
    """The tensors of a TorchScript module, by dotted name (the keys ``state_dict()`` gives).

    A TorchScript module keeps its parameters, buffers and submodules as attributes.
    """
    out: dict[str, np.ndarray] = {}
    state = obj.state if isinstance(obj.state, dict) else {}
    for name, value in state.items():
        if isinstance(value, np.ndarray):
            out[prefix + str(name)] = value
        elif isinstance(value, Opaque):
            out.update(module_state_dict(value, f"{prefix}{name}."))
    return out
