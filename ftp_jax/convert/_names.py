"""The map between a Flax NNX model's leaves and PyTorch's keys and layouts, both ways.

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

:func:`torch_key_map` gives the keys, :func:`to_torch_state_dict` writes a model
back as a PyTorch state dict; :mod:`ftp_jax.convert._load` maps a checkpoint
onto a model with the same entries.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from flax import nnx

from ftp_jax.models.clip_resnet import AttentionPool2d
from ftp_jax.models.vit import MultiHeadSelfAttention, VisionTransformer

__all__ = ["to_torch_state_dict", "torch_key_map"]

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
class Entry:
    path: str  # Flax path, 'layer1/0/conv1/kernel'
    key: str  # PyTorch key without prefix, 'layer1.0.conv1.weight'
    layout: str  # 'conv', 'linear' or 'same'
    variable: nnx.Variable
    positions: str | None = None  # 'vit' or 'attnpool' for a resamplable positional embedding


def leaf_entries(model: nnx.Module) -> list[Entry]:
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
        entries.append(Entry(flax_path, key, layout, node, positions))
    return sorted(entries, key=lambda e: e.path)


def torch_key_map(model: nnx.Module) -> dict[str, str]:
    """``{Flax path: PyTorch key}`` for every parameter and batch statistic of ``model``.

    Keys have no checkpoint prefix (``layer1.0.conv1.weight``, not
    ``module.base_encoder.layer1.0.conv1.weight``).
    """
    return {e.path: e.key for e in leaf_entries(model)}


def from_torch_layout(array: np.ndarray, layout: str) -> np.ndarray:
    """PyTorch (out, in, *spatial) -> Flax (*spatial, in, out); (out, in) -> (in, out)."""
    if layout in ("conv", "linear") and array.ndim >= 2:
        return np.transpose(array, (*range(2, array.ndim), 1, 0))
    return array


def to_torch_layout(array: np.ndarray, layout: str) -> np.ndarray:
    """The inverse of :func:`from_torch_layout`."""
    if layout in ("conv", "linear") and array.ndim >= 2:
        n = array.ndim
        return np.transpose(array, (n - 1, n - 2, *range(n - 2)))
    return array


def torch_shape(shape: tuple[int, ...], layout: str) -> tuple[int, ...]:
    return tuple(to_torch_layout(np.empty(shape, np.bool_), layout).shape)


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
    for entry in leaf_entries(model):
        array = np.asarray(entry.variable.get_value())
        out[prefix + entry.key] = np.ascontiguousarray(to_torch_layout(array, entry.layout))
        if batch_norm_counters and entry.key.endswith(".running_var"):
            counter = entry.key[: -len("running_var")] + "num_batches_tracked"
            out[prefix + counter] = np.zeros((), np.int64)
    return out
