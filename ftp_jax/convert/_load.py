"""A PyTorch checkpoint mapped onto a Flax NNX model: prefix, names, shapes, head, report.

The checkpoint is read by :mod:`ftp_jax.convert._read`, and each leaf of the model
is matched to its PyTorch key and layout by :mod:`ftp_jax.convert._names`.
The checkpoint's keys carry a prefix (``visual.`` in CLIP, ``module.base_encoder.``
in MoCo v3, none in torchvision), found automatically: the prefix under which
the most parameters of the model are found (MoCo's momentum encoder, EMA or
teacher copies lose ties). The new classification head (``new_head``, by
default ``head/.*``) is left as initialized; every tensor of the checkpoint that
the model does not use (its classifier, CLIP's text tower, ``num_batches_tracked``)
is listed in the :class:`LoadReport`. A backbone parameter with no tensor in the
checkpoint, or a tensor of another shape, is an error naming both, and the model
is left unchanged.

Two departures from the name map, both reported: a HuggingFace ``transformers``
CLIP vision tower (``vision_model.encoder.layers.N.self_attn.q_proj.weight``, ...)
is renamed to OpenAI CLIP's names first (:mod:`ftp_jax.convert._hf_clip`), and a
positional embedding of another grid than the model's (weights trained at
another image size) is resampled bicubically (:mod:`ftp_jax.convert._resize`).
"""

from __future__ import annotations

import dataclasses
import os
import re
import warnings
from collections.abc import Mapping
from typing import Any

import jax.numpy as jnp
import numpy as np
from flax import nnx

from ftp_jax.convert import _hf_clip
from ftp_jax.convert._errors import CheckpointError, examples
from ftp_jax.convert._names import Entry, from_torch_layout, leaf_entries, torch_shape
from ftp_jax.convert._read import read_checkpoint, state_dict_of
from ftp_jax.convert._resize import METHODS, grid_side, resample_positions
from ftp_jax.models.kinds import MODEL_KINDS
from ftp_jax.models.vit import VisionTransformer

__all__ = ["KINDS", "LoadReport", "load_pretrained", "load_state_dict"]

#: Checkpoint kinds and the model class each loads into (from ``models.MODEL_KINDS``, which
#: also says which files each reads).
KINDS: dict[str, type] = {name: kind.model_class for name, kind in MODEL_KINDS.items()}

_DISFAVORED_PREFIXES = ("momentum", "ema", "teacher", "target")


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
        lines.append(f"Unused checkpoint tensors ({len(self.unused)}): {examples(self.unused)}.")
        lines.extend(self.notes)
        return "\n".join(lines)


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
            f"the model expects keys like {examples(sorted(wanted), 4)}, the checkpoint has "
            f"{examples(keys, 4)}. Is it a checkpoint of this architecture (`kind`)?"
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
            f"its keys look like {examples(list(arrays), 4)}."
        )
    renamed, origins = _hf_clip.to_openai_names(arrays)
    return "hf", renamed, origins


def _missing_message(
    missing: list[Entry], prefix: str, naming: str, original_keys: list[str]
) -> str:
    first = missing[0]
    names = [
        (_hf_clip.hf_key(e.key, prefix) if naming == "hf" else None) or prefix + e.key
        for e in missing
    ]
    present = [k for k in original_keys if k.startswith(prefix)]
    message = (
        f"the checkpoint has no tensor {names[0]!r} for the backbone parameter "
        f"{first.path!r}; {len(missing)} missing in all: {examples(names, 6)}. Checkpoint keys "
        f"under {prefix!r} look like {examples(present, 4)}. "
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


def _resample_hint(entry: Entry, found: tuple[int, ...], needed: tuple[int, ...]) -> str:
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
    entries = leaf_entries(model)
    if new_head is not None:
        head_re = re.compile(new_head)
        fresh = [e for e in entries if head_re.fullmatch(e.path)]
        if not fresh:
            raise CheckpointError(
                f"`new_head` pattern {new_head!r} matched no parameter; parameter paths look "
                f"like {examples([e.path for e in entries], 4)}. Pass new_head=None to load "
                "every parameter."
            )
    else:
        fresh = []
    fresh_paths = {e.path for e in fresh}
    wanted = [e for e in entries if e.path not in fresh_paths]
    original = state_dict_of(state_dict)
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
        converted = from_torch_layout(array, entry.layout)
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
                f"layout), but {entry.path!r} needs {torch_shape(current.shape, entry.layout)} "
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

    Example (the documentation's "Paper-scale recipes, models and weights" page
    runs it): ``model = ftp_jax.models.clip_resnet50(num_classes=345,
    rngs=nnx.Rngs(0))``, then ``print(load_pretrained(model, "RN50.pt",
    kind="clip_resnet50"))``, then build the optimizer (``ftp(...,
    row_axes=ftp_jax.models.clip_row_axes)``).
    """
    _check_kind(model, kind)
    _check_options(naming, pos_embed_resize)
    arrays, file_format, read_path = read_checkpoint(os.fspath(path), engine)
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
