"""Pre-trained PyTorch weights into the Flax NNX models: names, layouts, report.

The mapping is read off the Flax model itself: every ``nnx.Param`` or
``nnx.BatchStat`` leaf at path ``a/b/<leaf>`` of a known layer maps to the
PyTorch tensor ``a.b.<name>`` of the same layer, in PyTorch's layout:

==================  =============================  ==============================
Flax layer / leaf   PyTorch tensor                 layout change
==================  =============================  ==============================
``Conv/kernel``     ``weight`` (out, in, kh, kw)   -> (kh, kw, in, out)
``Linear/kernel``   ``weight`` (out, in)           -> (in, out)
``*/bias``          ``bias``                       none
``BatchNorm``       ``weight``, ``bias``,          ``scale``, ``bias``; ``mean``,
                    ``running_mean/var``           ``var`` as ``nnx.BatchStat``
``LayerNorm``       ``weight``, ``bias``           ``scale``, ``bias``
``Embed``           ``weight``                     none
attention           ``in_proj_weight`` (3d, d)     ``in_proj/kernel`` (d, 3d)
``in_proj``         ``in_proj_bias``               ``in_proj/bias``
raw ``nnx.Param``   same name                      none (PyTorch layout kept)
==================  =============================  ==============================

The checkpoint's keys carry a prefix (``visual.`` in CLIP, ``module.base_encoder.``
in MoCo v3, none in torchvision), found automatically: the prefix under which
the most parameters of the model are found (MoCo's momentum encoder, EMA or
teacher copies lose ties). The new classification head (``new_head``, by
default ``head/.*``) is left as initialized; every tensor of the checkpoint that
the model does not use (its classifier, CLIP's text tower, ``num_batches_tracked``)
is listed in the :class:`LoadReport`. A backbone parameter with no tensor in the
checkpoint, or a tensor of another shape, is an error naming both, and the model
is left unchanged.

Two departures from the table, both reported: a HuggingFace ``transformers``
CLIP vision tower (``vision_model.encoder.layers.N.self_attn.q_proj.weight``, ...)
is renamed to OpenAI CLIP's names first (:mod:`ftp_jax.convert._hf_clip`), and a
positional embedding of another grid than the model's (weights trained at
another image size) is resampled bicubically (:mod:`ftp_jax.convert._resize`).
Folders written by ``save_pretrained`` and sharded checkpoints (``*.index.json``)
are read whole (:mod:`ftp_jax.convert._sharded`).
"""

from __future__ import annotations

import dataclasses
import os
import re
import tarfile
import warnings
import zipfile
from collections.abc import Mapping
from typing import Any

import jax.numpy as jnp
import numpy as np
from flax import nnx

from ftp_jax.convert import _hf_clip, _sharded
from ftp_jax.convert._errors import CheckpointError
from ftp_jax.convert._resize import METHODS, grid_side, resample_positions
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
from ftp_jax.models.clip_resnet import AttentionPool2d
from ftp_jax.models.kinds import MODEL_KINDS
from ftp_jax.models.vit import MultiHeadSelfAttention, VisionTransformer

__all__ = [
    "KINDS",
    "CheckpointError",
    "LoadReport",
    "check_checkpoint",
    "load_pretrained",
    "load_state_dict",
    "read_state_dict",
    "to_torch_state_dict",
    "torch_key_map",
]

#: Checkpoint kinds and the model class each loads into (from ``models.MODEL_KINDS``, which
#: also says which files each reads).
KINDS: dict[str, type] = {name: kind.model_class for name, kind in MODEL_KINDS.items()}

_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "module", "net", "network")
_DISFAVORED_PREFIXES = ("momentum", "ema", "teacher", "target")

# Flax layer -> {Flax leaf name: (PyTorch name, layout)}.
_LAYERS: dict[type, dict[str, tuple[str, str]]] = {
    nnx.Conv: {"kernel": ("weight", "conv"), "bias": ("bias", "same")},
    nnx.Linear: {"kernel": ("weight", "linear"), "bias": ("bias", "same")},
    nnx.BatchNorm: {
        "scale": ("weight", "same"),
        "bias": ("bias", "same"),
        "mean": ("running_mean", "same"),
        "var": ("running_var", "same"),
    },
    nnx.LayerNorm: {"scale": ("weight", "same"), "bias": ("bias", "same")},
    nnx.GroupNorm: {"scale": ("weight", "same"), "bias": ("bias", "same")},
    nnx.Embed: {"embedding": ("weight", "same")},
}


@dataclasses.dataclass(frozen=True)
class LoadReport:
    """What :func:`load_pretrained` did.

    Attributes:
      source: the file read (or ``"<state dict>"``).
      format: ``"torch-zip"``, ``"torchscript"``, ``"torch-legacy"``,
        ``"safetensors"``, ``"torch.load"`` (read by torch) or ``"state dict"``.
      prefix: the key prefix of the model's tensors in the checkpoint.
      loaded: Flax paths set from the checkpoint (``nnx.Param`` and ``nnx.BatchStat``).
      fresh: Flax paths left as initialized (the new head).
      unused: checkpoint keys the model did not use (its classifier, CLIP's text
        tower, ``num_batches_tracked``, ...).
      cast: ``{checkpoint dtype: count}`` of tensors cast to the model's dtype
        (OpenAI's CLIP files hold float16).
      naming: the checkpoint's key names: ``"openai"`` (those of the PyTorch
        modules the models mirror: OpenAI CLIP, torchvision) or ``"hf"``
        (``transformers``' CLIP, renamed on loading).
      resized: ``{Flax path: (checkpoint grid side, model grid side)}`` of the
        positional embeddings resampled to the model's grid.
      notes: sentences on what else the loading did or could not follow
        (resampling, a ``config.json`` the model cannot follow).
    """

    source: str
    format: str
    prefix: str
    loaded: tuple[str, ...]
    fresh: tuple[str, ...]
    unused: tuple[str, ...]
    cast: dict[str, int]
    naming: str = "openai"
    resized: dict[str, tuple[int, int]] = dataclasses.field(default_factory=dict)
    notes: tuple[str, ...] = ()

    def __str__(self) -> str:
        names = ", HF CLIP names" if self.naming == "hf" else ""
        lines = [
            f"Loaded {len(self.loaded)} tensors from {self.source} ({self.format}{names}, "
            f"prefix {self.prefix!r})."
        ]
        if self.cast:
            casts = ", ".join(f"{n} {dtype}" for dtype, n in sorted(self.cast.items()))
            lines.append(f"Cast to the model's dtype: {casts}.")
        lines.append(f"Left as initialized ({len(self.fresh)}): {', '.join(self.fresh) or 'none'}.")
        lines.append(f"Unused checkpoint tensors ({len(self.unused)}): {_examples(self.unused)}.")
        lines.extend(self.notes)
        return "\n".join(lines)


@dataclasses.dataclass(frozen=True)
class _Entry:
    path: str  # Flax path, 'layer1/0/conv1/kernel'
    key: str  # PyTorch key without prefix, 'layer1.0.conv1.weight'
    layout: str  # 'conv', 'linear' or 'same'
    variable: nnx.Variable
    positions: str | None = None  # 'vit' or 'attnpool' for a resamplable positional embedding


def _examples(items, limit: int = 8) -> str:
    items = list(items)
    shown = ", ".join(repr(i) for i in items[:limit])
    more = f", ... ({len(items)} in all)" if len(items) > limit else ""
    return (shown + more) or "none"


def _entries(model: nnx.Module) -> list[_Entry]:
    """One entry per Param/BatchStat leaf of the model: its PyTorch key and layout."""
    nodes = dict(nnx.iter_graph(model))
    entries = []
    for path, node in nodes.items():
        if not isinstance(node, (nnx.Param, nnx.BatchStat)):
            continue
        parent_path, leaf = path[:-1], str(path[-1])
        parent = nodes[parent_path]
        flax_path = "/".join(str(k) for k in path)
        names = next((v for t, v in _LAYERS.items() if isinstance(parent, t)), None)
        if names is not None:
            if leaf not in names:
                raise NotImplementedError(f"no PyTorch name for {flax_path!r}")
            torch_name, layout = names[leaf]
            grandparent = nodes.get(parent_path[:-1]) if parent_path else None
            if isinstance(grandparent, MultiHeadSelfAttention) and parent_path[-1] == "in_proj":
                parent_path = parent_path[:-1]  # nn.MultiheadAttention.in_proj_{weight,bias}
                torch_name = f"in_proj_{torch_name}"
        elif type(parent).__module__.startswith("flax.") and not isinstance(parent, nnx.List):
            raise NotImplementedError(
                f"{flax_path!r}: {type(parent).__name__} has no PyTorch mapping; the converter "
                f"knows {', '.join(t.__name__ for t in _LAYERS)} and raw nnx.Param attributes."
            )
        else:  # a raw parameter of a model's own module: PyTorch name and layout
            torch_name, layout = leaf, "same"
        key = ".".join([*(str(k) for k in parent_path), torch_name])
        positions = None
        if leaf == "positional_embedding" and isinstance(parent, VisionTransformer):
            positions = "vit"
        elif leaf == "positional_embedding" and isinstance(parent, AttentionPool2d):
            positions = "attnpool"
        entries.append(_Entry(flax_path, key, layout, node, positions))
    return sorted(entries, key=lambda e: e.path)


def torch_key_map(model: nnx.Module) -> dict[str, str]:
    """``{Flax path: PyTorch key}`` for every parameter and batch statistic of ``model``.

    Keys have no checkpoint prefix (``layer1.0.conv1.weight``, not
    ``module.base_encoder.layer1.0.conv1.weight``).
    """
    return {e.path: e.key for e in _entries(model)}


def _from_torch_layout(array: np.ndarray, layout: str) -> np.ndarray:
    """PyTorch (out, in, *spatial) -> Flax (*spatial, in, out); (out, in) -> (in, out)."""
    if layout in ("conv", "linear") and array.ndim >= 2:
        return np.transpose(array, (*range(2, array.ndim), 1, 0))
    return array


def _to_torch_layout(array: np.ndarray, layout: str) -> np.ndarray:
    """The inverse of :func:`_from_torch_layout`."""
    if layout in ("conv", "linear") and array.ndim >= 2:
        n = array.ndim
        return np.transpose(array, (n - 1, n - 2, *range(n - 2)))
    return array


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


def _state_dict_of(obj: Any) -> dict[str, np.ndarray]:
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
    return _state_dict_of(obj)


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


def _read(path: str, engine: str) -> tuple[dict[str, np.ndarray], str, str]:
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
    return _state_dict_of(obj), file_format


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
    return _read(os.fspath(path), engine)[0]


def _find_prefix(keys: list[str], wanted: set[str]) -> str:
    counts: dict[str, int] = {}
    for key in keys:
        parts = key.split(".")
        for i in range(len(parts)):
            if ".".join(parts[i:]) in wanted:
                prefix = "".join(p + "." for p in parts[:i])
                counts[prefix] = counts.get(prefix, 0) + 1
    if not counts:
        raise CheckpointError(
            "no tensor of the checkpoint has the name of a parameter of the model: "
            f"the model expects keys like {_examples(sorted(wanted), 4)}, the checkpoint has "
            f"{_examples(keys, 4)}. Is it a checkpoint of this architecture (`kind`)?"
        )

    def rank(prefix: str) -> tuple[int, int, int]:
        disfavored = any(word in prefix.lower() for word in _DISFAVORED_PREFIXES)
        return (-counts[prefix], int(disfavored), len(prefix))

    ranked = sorted(counts, key=rank)
    if len(ranked) > 1 and rank(ranked[0]) == rank(ranked[1]):
        tied = [p for p in ranked if rank(p) == rank(ranked[0])]
        raise CheckpointError(
            f"the model's tensors are in the checkpoint under several prefixes {tied}; "
            "pass prefix=... to choose one."
        )
    return ranked[0]


def _check_kind(model: nnx.Module, kind: str | None) -> None:
    if kind is None:
        return
    if kind not in KINDS:
        raise ValueError(f"unknown `kind` {kind!r}; expected one of {sorted(KINDS)}.")
    if not isinstance(model, KINDS[kind]):
        raise ValueError(
            f"`kind`={kind!r} loads into a {KINDS[kind].__name__}, but the model is a "
            f"{type(model).__name__}."
        )


def _check_options(naming: str, pos_embed_resize: str | None) -> None:
    if naming not in ("auto", "openai", "hf"):
        raise ValueError(f"`naming` must be 'auto', 'openai' or 'hf', got {naming!r}.")
    if pos_embed_resize is not None and pos_embed_resize not in METHODS:
        raise ValueError(
            f"`pos_embed_resize` must be one of {sorted(METHODS)} or None, got "
            f"{pos_embed_resize!r}."
        )


def _apply_naming(
    model: nnx.Module, arrays: dict[str, np.ndarray], naming: str
) -> tuple[str, dict[str, np.ndarray], dict[str, tuple[str, ...]]]:
    """``(naming used, tensors under OpenAI names, {new key: HF keys it came from})``."""
    if naming == "openai":
        return "openai", arrays, {}
    towers = _hf_clip.tower_prefixes(arrays)
    if naming == "auto" and not (towers and isinstance(model, VisionTransformer)):
        return "openai", arrays, {}
    if not towers:
        raise CheckpointError(
            "naming='hf', but the checkpoint holds no transformers CLIP vision tower (keys "
            "ending in 'embeddings.patch_embedding.weight' and 'embeddings.class_embedding'); "
            f"its keys look like {_examples(list(arrays), 4)}."
        )
    renamed, origins = _hf_clip.to_openai_names(arrays)
    return "hf", renamed, origins


def _missing_message(
    missing: list[_Entry], prefix: str, naming: str, original_keys: list[str]
) -> str:
    first = missing[0]
    names = [
        (_hf_clip.hf_key(e.key, prefix) if naming == "hf" else None) or prefix + e.key
        for e in missing
    ]
    present = [k for k in original_keys if k.startswith(prefix)]
    message = (
        f"the checkpoint has no tensor {names[0]!r} for the backbone parameter "
        f"{first.path!r}; {len(missing)} missing in all: {_examples(names, 6)}. Checkpoint keys "
        f"under {prefix!r} look like {_examples(present, 4)}. "
        "Pass prefix=... if the backbone is under another prefix, or widen new_head to "
        "leave more parameters as initialized."
    )
    if naming == "openai" and _hf_clip.tower_prefixes(original_keys):
        message += (
            " The checkpoint holds a transformers CLIP vision tower: pass naming='hf' (or "
            "'auto', for a VisionTransformer) to rename it."
        )
    if naming == "hf" and any(e.key == "proj" for e in missing):
        message += (
            " A transformers CLIPVisionModel has no projection to the joint embedding "
            "(CLIPVisionModelWithProjection and CLIPModel have `visual_projection`): load one "
            "of those, or pass new_head=r'head/.*|proj' to leave `proj` as initialized."
        )
    return message


def _resample_hint(entry: _Entry, found: tuple[int, ...], needed: tuple[int, ...]) -> str:
    """How to load a positional embedding of another grid, when resampling would do it."""
    if entry.positions is None or len(found) != 2 or found[1:] != needed[1:]:
        return ""
    source, target = grid_side(found[0]), grid_side(needed[0])
    if source is None or target is None:
        return ""
    option = (
        "resize_attnpool=True"
        if entry.positions == "attnpool"
        else "pos_embed_resize='bicubic_antialias'"
    )
    return (
        f" To resample its {source}x{source} grid of positions to the model's "
        f"{target}x{target} (bicubic), pass {option}."
    )


def load_state_dict(
    model: nnx.Module,
    state_dict: Mapping[str, Any],
    *,
    kind: str | None = None,
    prefix: str | None = None,
    new_head: str | None = r"head/.*",
    naming: str = "auto",
    pos_embed_resize: str | None = "bicubic_antialias",
    resize_attnpool: bool = False,
    source: str = "<state dict>",
    file_format: str = "state dict",
) -> LoadReport:
    """Sets ``model``'s parameters and batch statistics from a PyTorch state dict, in place.

    Args:
      model: a Flax NNX model (:class:`~ftp_jax.models.ResNet`,
        :class:`~ftp_jax.models.CLIPResNet`, :class:`~ftp_jax.models.VisionTransformer`,
        or any model built from ``nnx.Conv``, ``nnx.Linear``, ``nnx.BatchNorm``,
        ``nnx.LayerNorm``, ``nnx.Embed`` and raw ``nnx.Param``).
      state_dict: ``{key: array}`` in PyTorch layout (numpy arrays, torch tensors
        or JAX arrays; other values are ignored), or a checkpoint dict wrapping one.
      kind: optional check that the model is of the class the checkpoint kind
        loads into (see :data:`KINDS`).
      prefix: the checkpoint's key prefix (``"visual."``, ``"module.base_encoder."``,
        ``"vision_model."`` for HF CLIP); ``None`` finds it.
      new_head: a regular expression over Flax paths (full match) of the
        parameters left as initialized; ``None`` loads every parameter.
      naming: the checkpoint's key names. ``"openai"``: those of the PyTorch
        modules the models mirror (OpenAI CLIP, torchvision). ``"hf"``: a
        ``transformers`` CLIP vision tower (``CLIPModel``, ``CLIPVisionModel``,
        ``CLIPVisionModelWithProjection``: ``vision_model.encoder.layers.N.
        self_attn.q_proj.weight``, ``visual_projection.weight``, ...), renamed to
        OpenAI's (q, k, v fused into ``in_proj``, the projection transposed).
        ``"auto"``: ``"hf"`` for a :class:`~ftp_jax.models.VisionTransformer` and a
        checkpoint holding such a tower, ``"openai"`` otherwise.
      pos_embed_resize: how a ViT positional embedding of another grid than the
        model's (a checkpoint trained at another image size) is resampled, its
        class-token position kept: ``"bicubic_antialias"`` (timm's
        ``resample_abs_pos_embed`` and OpenCLIP's ``resize_pos_embed``: torch's
        bicubic ``interpolate`` with ``antialias=True``, as ``jax.image.resize``),
        ``"bicubic"`` (``antialias=False``, as HF CLIP's ``interpolate_pos_encoding``),
        or ``None`` (a grid change is an error).
      resize_attnpool: also resample a :class:`~ftp_jax.models.CLIPResNet`'s
        attention-pool positional embedding (with ``pos_embed_resize``) when its
        grid differs (image size not 32 x the checkpoint's grid); off by default,
        as OpenCLIP resamples only the ViT's.
      source, file_format: how the report names the origin.

    Returns:
      A :class:`LoadReport`.

    Raises:
      CheckpointError: naming the Flax path and the checkpoint key, if a
        parameter outside ``new_head`` has no tensor in the checkpoint or a tensor
        of another shape (a positional embedding that is not a class-token
        position and a square grid of the model's width included), if
        ``new_head`` matches no parameter, or if the prefix is ambiguous. The
        model is unchanged then.
    """
    _check_kind(model, kind)
    _check_options(naming, pos_embed_resize)
    entries = _entries(model)
    if new_head is not None:
        head_re = re.compile(new_head)
        fresh = [e for e in entries if head_re.fullmatch(e.path)]
        if not fresh:
            raise CheckpointError(
                f"`new_head` pattern {new_head!r} matched no parameter; parameter paths look "
                f"like {_examples([e.path for e in entries], 4)}. Pass new_head=None to load "
                "every parameter."
            )
    else:
        fresh = []
    fresh_paths = {e.path for e in fresh}
    wanted = [e for e in entries if e.path not in fresh_paths]
    original = _state_dict_of(state_dict)
    naming, arrays, origins = _apply_naming(model, original, naming)
    if prefix is None:
        prefix = _find_prefix(list(arrays), {e.key for e in wanted})
    missing = [e for e in wanted if prefix + e.key not in arrays]
    if missing:
        raise CheckpointError(_missing_message(missing, prefix, naming, list(original)))

    def describe(key: str) -> str:
        sources = origins.get(key, (key,))
        return repr(key) if sources == (key,) else f"{key!r} (from {', '.join(sources)})"

    values = []
    cast: dict[str, int] = {}
    resized: dict[str, tuple[int, int]] = {}
    for entry in wanted:
        key = prefix + entry.key
        array = arrays[key]
        converted = _from_torch_layout(array, entry.layout)
        current = entry.variable.get_value()
        resample = (
            pos_embed_resize is not None
            and (entry.positions == "vit" or (entry.positions == "attnpool" and resize_attnpool))
            and converted.ndim == 2
            and converted.shape[1] == current.shape[1]  # another width is a shape error
        )
        if converted.shape != current.shape and resample:
            converted = resample_positions(
                converted, current.shape, pos_embed_resize, name=describe(key)
            )
            resized[entry.path] = (grid_side(array.shape[0]), grid_side(current.shape[0]))
        if converted.shape != current.shape:
            raise CheckpointError(
                f"checkpoint tensor {describe(key)} has shape {array.shape} (PyTorch "
                f"layout), but {entry.path!r} needs {_torch_shape(current.shape, entry.layout)} "
                f"(Flax shape {tuple(current.shape)}). Build the model with the checkpoint's "
                "configuration (widths, depths, number of classes, image size)."
                + _resample_hint(entry, tuple(array.shape), tuple(current.shape))
            )
        if array.dtype != current.dtype:
            cast[str(array.dtype)] = cast.get(str(array.dtype), 0) + 1
        values.append(jnp.asarray(converted, dtype=current.dtype))
    for entry, value in zip(wanted, values, strict=True):
        entry.variable.set_value(value)
    used = {source for e in wanted for source in origins.get(prefix + e.key, (prefix + e.key,))}
    notes = tuple(
        f"Resampled {path} from a {a}x{a} to a {b}x{b} grid of positions ({pos_embed_resize})."
        for path, (a, b) in resized.items()
    )
    return LoadReport(
        source=source,
        format=file_format,
        prefix=prefix,
        loaded=tuple(e.path for e in wanted),
        fresh=tuple(e.path for e in fresh),
        # The informative keys first (classifiers, other towers), the counters last.
        unused=tuple(
            sorted(
                (k for k in original if k not in used),
                key=lambda k: (k.endswith("num_batches_tracked"), k),
            )
        ),
        cast=cast,
        naming=naming,
        resized=resized,
        notes=notes,
    )


def _torch_shape(shape: tuple[int, ...], layout: str) -> tuple[int, ...]:
    return tuple(_to_torch_layout(np.empty(shape, np.bool_), layout).shape)


def load_pretrained(
    model: nnx.Module,
    path: str | os.PathLike,
    *,
    kind: str | None = None,
    prefix: str | None = None,
    new_head: str | None = r"head/.*",
    engine: str = "auto",
    naming: str = "auto",
    pos_embed_resize: str | None = "bicubic_antialias",
    resize_attnpool: bool = False,
) -> LoadReport:
    """Loads pre-trained PyTorch weights from a file or folder into ``model``, in place.

    Reads the checkpoint with :func:`read_state_dict` (no torch needed for
    ``torch.save`` files, TorchScript archives and safetensors, sharded or not),
    then maps it with :func:`load_state_dict`. Build the optimizer *after*
    loading: FTP's anchor is the params at ``init``.

    Args:
      model: the Flax model, e.g. ``ftp_jax.models.clip_resnet50(num_classes=345,
        rngs=nnx.Rngs(0))``.
      path: the checkpoint: OpenAI CLIP's ``RN50.pt`` / ``ViT-B-16.pt``
        (TorchScript, ``visual.*``), open_clip's state dicts or safetensors,
        MoCo v3's ``r-50-1000ep.pth.tar`` (``{'state_dict': {'module.base_encoder.*'}}``),
        torchvision's ``resnet50-*.pth``, a ``transformers`` CLIP model's
        ``save_pretrained`` folder or its ``model.safetensors`` /
        ``model.safetensors.index.json``.
      kind: ``"torchvision_resnet50"``, ``"clip_resnet50"`` or ``"clip_vit_b16"``
        to check the model's class; ``None`` skips the check.
      prefix: the key prefix of the backbone; ``None`` finds it.
      new_head: Flax paths (regular expression, full match) left as initialized.
      engine: ``"auto"``, ``"python"`` or ``"torch"`` (see :func:`read_state_dict`).
      naming, pos_embed_resize, resize_attnpool: see :func:`load_state_dict`.

    Returns:
      A :class:`LoadReport`; ``print(report)`` summarizes it. For a
      ``transformers`` checkpoint whose ``config.json`` (beside it) asks for
      what the model does not compute (an activation other than QuickGELU,
      another LayerNorm epsilon) the report's ``notes`` say so, and a
      ``UserWarning`` is issued.

    Raises:
      CheckpointError: a backbone parameter missing from the checkpoint or of
        another shape (naming both), an ambiguous prefix, a missing shard.
      UnsupportedCheckpoint: a file no reader can read.

    Example::

      model = ftp_jax.models.clip_resnet50(num_classes=345, rngs=nnx.Rngs(0))
      print(ftp_jax.convert.load_pretrained(model, "RN50.pt", kind="clip_resnet50"))
      tx = ftp_jax.ftp(optax.sgd(1e-2, momentum=0.9),
                       mask=ftp_jax.path_rules([(r"head/.*", False), (r".*", True)]),
                       row_axes=ftp_jax.models.clip_row_axes)
    """
    _check_kind(model, kind)
    _check_options(naming, pos_embed_resize)
    arrays, file_format, read_path = _read(os.fspath(path), engine)
    report = load_state_dict(
        model,
        arrays,
        kind=kind,
        prefix=prefix,
        new_head=new_head,
        naming=naming,
        pos_embed_resize=pos_embed_resize,
        resize_attnpool=resize_attnpool,
        source=repr(read_path),
        file_format=file_format,
    )
    if report.naming == "hf":
        notes = _hf_clip.config_notes(os.path.dirname(os.path.abspath(read_path)))
        for note in notes:
            warnings.warn(note, stacklevel=2)
        report = dataclasses.replace(report, notes=report.notes + notes)
    return report


def to_torch_state_dict(
    model: nnx.Module, *, prefix: str = "", batch_norm_counters: bool = True
) -> dict[str, np.ndarray]:
    """The model's parameters and batch statistics as a PyTorch state dict of numpy arrays.

    The inverse of :func:`load_state_dict`: PyTorch keys and layouts, so that
    ``torch.nn.Module.load_state_dict({k: torch.from_numpy(v) ...})`` accepts it
    (write it with :func:`write_safetensors` to hand a fine-tuned model back).

    Args:
      model: the Flax model.
      prefix: prepended to every key (``"visual."`` for a CLIP tower).
      batch_norm_counters: add each BatchNorm's ``num_batches_tracked`` (0, int64),
        which PyTorch's strict loading expects.
    """
    out: dict[str, np.ndarray] = {}
    for entry in _entries(model):
        array = np.asarray(entry.variable.get_value())
        out[prefix + entry.key] = np.ascontiguousarray(_to_torch_layout(array, entry.layout))
        if batch_norm_counters and entry.key.endswith(".running_var"):
            counter = entry.key[: -len("running_var")] + "num_batches_tracked"
            out[prefix + counter] = np.zeros((), np.int64)
    return out
