"""Checkpoint files into ``{dotted key: numpy array}``: PyTorch, TorchScript, safetensors, shards.

No torch is needed for ``torch.save`` files (zip and legacy formats), TorchScript
archives and safetensors (:mod:`ftp_jax.convert._torch_pickle`,
:mod:`ftp_jax.convert._safetensors`); folders written by ``save_pretrained`` and
sharded checkpoints (``*.index.json``) are read whole (:mod:`ftp_jax.convert._sharded`).
Only tensors and containers are unpickled. Torch, when installed, reads only the
valid PyTorch forms the pure-python reader lacks, with ``weights_only=True``.
"""

from __future__ import annotations

import os
import tarfile
import zipfile
from collections.abc import Mapping
from typing import Any

import jax.numpy as jnp
import numpy as np

from ftp_jax.convert import _sharded
from ftp_jax.convert._safetensors import check_safetensors, is_safetensors, read_safetensors
from ftp_jax.convert._torch_pickle import (
    Opaque,
    UnsupportedCheckpoint,
    _NeedsTorch,
    module_state_dict,
    not_a_checkpoint,
    read_torch_file,
    scan_torch_file,
)

__all__ = ["check_checkpoint", "read_checkpoint", "read_state_dict", "state_dict_of"]

_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "module", "net", "network")


def _as_numpy(value: Any) -> np.ndarray | None:
    """A numpy array from a numpy/JAX array or a torch tensor; ``None`` for anything else."""
    if isinstance(value, np.ndarray):
        return value
    if hasattr(value, "detach") and hasattr(value, "numpy"):  # a torch.Tensor
        tensor = value.detach().cpu()
        if str(tensor.dtype) == "torch.bfloat16":
            tensor = tensor.float()
        return tensor.numpy()
    if isinstance(value, jnp.ndarray):
        return np.asarray(value)
    return None


def _flatten(obj: Any, prefix: str, out: dict[str, np.ndarray]) -> None:
    array = _as_numpy(obj)
    if array is not None:
        out[prefix[:-1]] = array
    elif isinstance(obj, Mapping):
        for key, value in obj.items():
            _flatten(value, f"{prefix}{key}.", out)
    elif isinstance(obj, Opaque):
        out.update({prefix + k: v for k, v in module_state_dict(obj).items()})
    elif hasattr(obj, "state_dict") and callable(obj.state_dict):  # a torch module
        _flatten(obj.state_dict(), prefix, out)


def state_dict_of(obj: Any) -> dict[str, np.ndarray]:
    """The tensors of a checkpoint object, by dotted key, after unwrapping its container.

    Checkpoints that hold the model's state under ``state_dict``, ``model``,
    ``model_state_dict``, ``module``, ``net`` or ``network`` (MoCo's
    ``{'state_dict': ..., 'optimizer': ...}``) are unwrapped first; pickled
    modules and TorchScript modules give their ``state_dict()`` keys.
    """
    while isinstance(obj, Mapping):
        inner = next(
            (
                obj[k]
                for k in _WRAPPER_KEYS
                if k in obj
                and (isinstance(obj[k], (Mapping, Opaque)) or hasattr(obj[k], "state_dict"))
            ),
            None,
        )
        if inner is None:
            break
        obj = inner
    out: dict[str, np.ndarray] = {}
    _flatten(obj, "", out)
    return out


def _torch_reason(error: Exception) -> str:
    """Why torch could not read a file, without torch's advice to load it unsafely."""
    message = str(error)
    marker = "WeightsUnpickler error:"
    if marker in message:
        return message.split(marker, 1)[1].strip().splitlines()[0].rstrip(".")
    first = message.strip().splitlines()[0] if message.strip() else type(error).__name__
    first = first.split("  (Could this error message be improved?")[0].strip()
    if "weights_only" in first:
        return "it holds objects other than tensors and containers"
    return f"{type(error).__name__}: {first}".rstrip(".")


def _read_with_torch(path: str) -> dict[str, np.ndarray]:
    """``torch.load(weights_only=True)`` (``torch.jit.load`` for TorchScript): never unsafe.

    Raises:
      UnsupportedCheckpoint: torch cannot read it either; the message says why, in
        its own words (never torch's advice to turn safe loading off).
    """
    import torch  # noqa: PLC0415 - optional

    names = []
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    try:
        if any(n.endswith("/constants.pkl") for n in names):  # TorchScript
            obj = torch.jit.load(path, map_location="cpu").state_dict()
        else:
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - torch raises many kinds
        raise UnsupportedCheckpoint(
            f"{path}: cannot be read as weights (torch.load with weights_only=True: "
            f"{_torch_reason(error)}). Only tensors and containers are read."
        ) from None
    return state_dict_of(obj)


class _AnyKeys(dict):
    """A shard that was checked, not read: holds every key (as ``None``) for the index's check."""

    def __contains__(self, key):
        return True

    def __getitem__(self, key):
        return None


def check_checkpoint(path: str | os.PathLike) -> str:
    """Checks, in milliseconds, that ``path`` is a weights file or folder that can be read.

    For a check of every input before a long run: the file exists, can be read,
    and is a PyTorch file (zip or pickle; its pickle is read, with the same
    refusals as :func:`read_state_dict`), a TorchScript archive, a safetensors
    file (its header is read) or a shard index. Its tensors are not read.

    Returns:
      The file it would read (the checkpoint of a folder, or ``path``).

    Raises:
      FileNotFoundError: no such file, or a folder without a checkpoint.
      PermissionError: the file cannot be read.
      NotACheckpoint: the file is not a checkpoint (text, random bytes, another zip).
      UnsafeCheckpoint: its pickle asks for code or objects (refused, named).
      UnsupportedCheckpoint: it is corrupted.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        path = _sharded.checkpoint_in_folder(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no weights file at {path!r}")
    try:
        with open(path, "rb") as file:
            start = file.read(16)
    except OSError as error:
        raise PermissionError(
            f"cannot read the weights file {path!r}: {error.strerror or error}"
        ) from None
    if _sharded.is_index(path):  # the index, and every shard it names
        _sharded.read_index(path, lambda shard: (_AnyKeys(check_checkpoint(shard)), "checked"))
        return path
    if path.endswith(".safetensors") or is_safetensors(path):
        try:
            check_safetensors(path)
        except ValueError as error:
            raise UnsupportedCheckpoint(str(error)) from None
        return path
    if tarfile.is_tarfile(path) and not zipfile.is_zipfile(path):
        return path  # PyTorch's pre-1.0 format: torch reads it
    if zipfile.is_zipfile(path) or start[:1] == b"\x80":
        try:
            scan_torch_file(path)
        except _NeedsTorch:
            pass  # a valid PyTorch file the pure-python reader lacks a part of
        return path
    raise not_a_checkpoint(path, start)


def read_checkpoint(path: str, engine: str) -> tuple[dict[str, np.ndarray], str, str]:
    """``(tensors, format, the file read)`` of a file, a shard index or a checkpoint folder."""
    if engine not in ("auto", "python", "torch"):
        raise ValueError(f"`engine` must be 'auto', 'python' or 'torch', got {engine!r}.")
    if os.path.isdir(path):
        path = _sharded.checkpoint_in_folder(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no checkpoint file at {path!r}")
    if _sharded.is_index(path):
        return (*_sharded.read_index(path, lambda shard: _read_file(shard, engine)), path)
    return (*_read_file(path, engine), path)


def _read_file(path: str, engine: str) -> tuple[dict[str, np.ndarray], str]:
    """``(tensors, format)`` of one checkpoint file."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no checkpoint file at {path!r}")
    if path.endswith(".safetensors") or is_safetensors(path):
        return read_safetensors(path), "safetensors"
    if engine == "torch":
        check_checkpoint(path)  # our message for a file that is no checkpoint
        return _read_with_torch(path), "torch.load"
    try:
        obj, file_format = read_torch_file(path)
    except _NeedsTorch as error:
        # A valid PyTorch file in a form the pure-python reader lacks; never a refused
        # or non-checkpoint file, which torch would not read safely either.
        if engine == "python":
            raise
        try:
            import torch  # noqa: F401, PLC0415 - optional
        except ImportError:
            raise UnsupportedCheckpoint(
                f"{error}. The pure-python reader reads torch.save files (zip and legacy "
                "formats), TorchScript archives and safetensors; torch (`pip install torch`) "
                "reads this form with torch.load(weights_only=True)."
            ) from None
        return _read_with_torch(path), "torch.load"
    return state_dict_of(obj), file_format


def read_state_dict(path: str | os.PathLike, *, engine: str = "auto") -> dict[str, np.ndarray]:
    """Reads a checkpoint file into ``{dotted key: numpy array}``, without torch if possible.

    Args:
      path: a safetensors file, a ``torch.save`` file (``.pt``/``.pth``/``.bin``/
        ``.tar``, zip or legacy format, possibly wrapping the state dict in
        ``{'state_dict': ...}`` or ``{'model': ...}``), a TorchScript archive
        (OpenAI CLIP's ``RN50.pt``, ``ViT-B-16.pt``), a shard index
        (``model.safetensors.index.json``, ``pytorch_model.bin.index.json``: every
        shard it names is read), or a ``save_pretrained`` folder holding
        ``model.safetensors``, ``model.safetensors.index.json``,
        ``pytorch_model.bin`` or ``pytorch_model.bin.index.json`` (first found).
      engine: for PyTorch files, ``"auto"`` (the pure-python reader; torch, when
        installed, for the valid PyTorch forms it lacks, such as sparse tensors;
        never for a refused file), ``"python"`` (never torch) or ``"torch"``
        (``torch.load(weights_only=True)`` / ``torch.jit.load``).
        Safetensors files are always read with numpy.

    Returns:
      The checkpoint's tensors by key, keys as in the file (prefixes such as
      ``module.base_encoder.`` or ``visual.`` kept), arrays in PyTorch layout.

    Raises:
      FileNotFoundError: if there is no file at ``path``, or no checkpoint in the folder.
      CheckpointError: a shard index naming a missing shard file, or a bad index.
      UnsafeCheckpoint: the file asks for anything but tensors and containers
        (code, other objects): refused, naming what it asked for; nothing runs.
      NotACheckpoint: the file is not a checkpoint (text, random bytes, a bare pickle).
      UnsupportedCheckpoint: it is corrupted, or no reader can read it.
    """
    return read_checkpoint(os.fspath(path), engine)[0]
