"""HuggingFace ``transformers`` CLIP vision-tower keys renamed to OpenAI CLIP's.

``transformers``' ``CLIPVisionModel``, ``CLIPVisionModelWithProjection`` and
``CLIPModel`` (``models/clip/modeling_clip.py``) hold the same ViT as OpenAI
CLIP's ``VisionTransformer`` under other names, with the attention's query, key
and value projections as three ``nn.Linear`` instead of one fused
``in_proj_weight``, and the projection to the joint embedding as an
``nn.Linear`` without bias (``visual_projection.weight``, ``(out, in)``) instead
of a raw ``proj`` parameter ``(in, out)`` used as ``x @ proj``. The tower's keys
sit under ``vision_model.`` in ``CLIPModel`` and ``CLIPVisionModelWithProjection``
(and in 4.x ``CLIPVisionModel`` files), under no prefix in transformers 5's
``CLIPVisionModel``, and wrappers may add one more (``model.``);
``visual_projection.weight`` sits beside ``vision_model.``.

:func:`to_openai_names` rewrites such a state dict into OpenAI's names under the
tower's own prefix (``vision_model.conv1.weight``, ...), fusing q, k, v in
``nn.MultiheadAttention``'s order (``in_proj_weight = cat([q, k, v])``) and
transposing the projection, so that the OpenAI-named loader maps it. The
numerics match: HF's ``CLIPAttention`` scales by ``head_dim ** -0.5`` like
``nn.MultiheadAttention``, ``quick_gelu`` is ``x * sigmoid(1.702 x)``
(``activations.QuickGELUActivation``), the LayerNorms use ``layer_norm_eps =
1e-5`` by default; :func:`config_notes` flags a ``config.json`` that says
otherwise.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping

import numpy as np

from ftp_jax.convert._errors import CheckpointError

__all__ = ["config_notes", "hf_key", "to_openai_names", "tower_prefixes"]

_PATCH = "embeddings.patch_embedding.weight"
_CLASS = "embeddings.class_embedding"
_TOWER = "vision_model."
PROJECTION = "visual_projection.weight"

# (HF key under the tower's prefix, OpenAI key): {i} a layer, {p} weight/bias.
_PAIRS = (
    (_PATCH, "conv1.weight"),
    (_CLASS, "class_embedding"),
    ("embeddings.position_embedding.weight", "positional_embedding"),
    ("pre_layrnorm.{p}", "ln_pre.{p}"),  # sic: transformers' spelling
    ("post_layernorm.{p}", "ln_post.{p}"),
    ("encoder.layers.{i}.layer_norm1.{p}", "transformer.resblocks.{i}.ln_1.{p}"),
    ("encoder.layers.{i}.layer_norm2.{p}", "transformer.resblocks.{i}.ln_2.{p}"),
    ("encoder.layers.{i}.mlp.fc1.{p}", "transformer.resblocks.{i}.mlp.c_fc.{p}"),
    ("encoder.layers.{i}.mlp.fc2.{p}", "transformer.resblocks.{i}.mlp.c_proj.{p}"),
    ("encoder.layers.{i}.self_attn.out_proj.{p}", "transformer.resblocks.{i}.attn.out_proj.{p}"),
)
_QKV_HF = "encoder.layers.{i}.self_attn.{c}_proj.{p}"
_QKV_OPENAI = "transformer.resblocks.{i}.attn.in_proj_{p}"
_GROUPS = {"i": r"(?P<i>\d+)", "p": r"(?P<p>weight|bias)", "c": r"(?P<c>[qkv])"}


def _pattern(template: str) -> re.Pattern:
    """A template such as ``encoder.layers.{i}.mlp.fc1.{p}`` as a full-match regex."""
    parts = re.split(r"\{(\w)\}", template)
    return re.compile(
        "".join(_GROUPS[part] if n % 2 else re.escape(part) for n, part in enumerate(parts))
    )


_TO_OPENAI = [(_pattern(hf), openai) for hf, openai in _PAIRS]
_TO_HF = [(_pattern(openai), hf) for hf, openai in _PAIRS]
_QKV = _pattern(_QKV_HF)
_IN_PROJ = _pattern(_QKV_OPENAI)


def tower_prefixes(keys) -> list[str]:
    """The prefixes under which ``keys`` hold an HF CLIP vision tower.

    A tower is recognized by its patch embedding and class embedding
    (``<prefix>embeddings.patch_embedding.weight``, ``<prefix>embeddings.class_embedding``),
    which CLIP's text tower and other HF vision models (SigLIP: no class embedding) lack.
    """
    keys = set(keys)
    prefixes = {k[: -len(_PATCH)] for k in keys if k.endswith(_PATCH)}
    return sorted(p for p in prefixes if p + _CLASS in keys)


def _root(prefix: str) -> str:
    """Where ``visual_projection.weight`` sits for a tower under ``prefix``."""
    return prefix[: -len(_TOWER)] if prefix.endswith(_TOWER) else prefix


def hf_key(openai_key: str, prefix: str) -> str | None:
    """The HF key(s) that give the OpenAI-named ``openai_key`` of a tower under ``prefix``.

    For error messages: ``transformer.resblocks.3.attn.in_proj_weight`` ->
    ``vision_model.encoder.layers.3.self_attn.{q,k,v}_proj.weight``, ``proj`` ->
    ``visual_projection.weight``; ``None`` for a key HF CLIP does not have.
    """
    if openai_key == "proj":
        return _root(prefix) + PROJECTION
    match = _IN_PROJ.fullmatch(openai_key)
    if match:
        return prefix + _QKV_HF.format(c="{q,k,v}", **match.groupdict())
    for pattern, template in _TO_HF:
        match = pattern.fullmatch(openai_key)
        if match:
            return prefix + template.format(**match.groupdict())
    return None


def to_openai_names(
    arrays: Mapping[str, np.ndarray],
) -> tuple[dict[str, np.ndarray], dict[str, tuple[str, ...]]]:
    """Renames every HF CLIP vision tower of a state dict to OpenAI CLIP's names.

    Args:
      arrays: ``{key: array}`` in PyTorch layout, e.g. a ``CLIPModel``'s
        ``save_pretrained`` file (``vision_model.*``, ``visual_projection.weight``,
        ``text_model.*``, ``logit_scale``, ...).

    Returns:
      ``(renamed, origins)``: ``renamed`` has each tower's tensors under the
      tower's prefix with OpenAI's names (``<prefix>conv1.weight``,
      ``<prefix>transformer.resblocks.0.attn.in_proj_weight`` = ``cat([q, k, v])``,
      ``<prefix>proj`` = ``visual_projection.weight.T``) and every other key as it
      was (the text tower, ``position_ids``, a q/k/v triple with a member missing);
      ``origins`` maps each new key to the HF keys it was made from.

    Raises:
      CheckpointError: if a new name is already a key of the checkpoint, or if
        a layer's q, k, v projections do not have one shape.
    """
    renamed: dict[str, np.ndarray] = {}
    origins: dict[str, tuple[str, ...]] = {}

    def add(key: str, array: np.ndarray, sources: tuple[str, ...]) -> None:
        renamed[key] = array
        origins[key] = sources

    for prefix in tower_prefixes(arrays):
        triples: dict[tuple[str, str], dict[str, str]] = {}
        for key in arrays:
            if not key.startswith(prefix):
                continue
            rest = key[len(prefix) :]
            match = _QKV.fullmatch(rest)
            if match:
                triples.setdefault((match["i"], match["p"]), {})[match["c"]] = key
                continue
            for pattern, template in _TO_OPENAI:
                match = pattern.fullmatch(rest)
                if match:
                    add(prefix + template.format(**match.groupdict()), arrays[key], (key,))
                    break
        for (layer, leaf), parts in triples.items():
            if sorted(parts) != ["k", "q", "v"]:
                continue  # left as is; the loader then names the missing in_proj tensor
            sources = tuple(parts[c] for c in "qkv")
            shapes = {np.shape(arrays[k]) for k in sources}
            if len(shapes) != 1:
                raise CheckpointError(
                    f"the attention projections {list(sources)} have different shapes "
                    f"{sorted(shapes)}; a CLIP attention layer has equal q, k, v projections."
                )
            fused = np.concatenate([np.asarray(arrays[k]) for k in sources], axis=0)
            add(prefix + _QKV_OPENAI.format(i=layer, p=leaf), fused, sources)
        projection = _root(prefix) + PROJECTION
        if projection in arrays:
            add(prefix + "proj", np.asarray(arrays[projection]).T, (projection,))
    used = {source for sources in origins.values() for source in sources}
    kept = {k: v for k, v in arrays.items() if k not in used}
    clashes = sorted(set(kept) & set(renamed))
    if clashes:
        raise CheckpointError(
            f"the checkpoint has both HF CLIP names and OpenAI CLIP names for the same "
            f"tensors ({clashes[:4]}); pass naming='openai' or naming='hf' to choose."
        )
    return {**kept, **renamed}, origins


def config_notes(directory: str) -> tuple[str, ...]:
    """Warnings about a transformers ``config.json`` in ``directory`` that the model cannot follow.

    :class:`~ftp_jax.models.VisionTransformer` computes OpenAI CLIP's tower: the
    MLP activation is QuickGELU and the LayerNorm epsilon ``1e-5``. A converted
    checkpoint whose ``vision_config`` (``CLIPModel``) or own config
    (``model_type`` ``clip_vision_model``) says otherwise (LAION's CLIP models in
    HF format use ``hidden_act="gelu"``) loads, but its features differ from
    the original model's; the notes say so. Missing or unreadable configs give no notes.
    """
    path = os.path.join(directory, "config.json")
    try:
        with open(path) as file:
            config = json.load(file)
    except (OSError, ValueError):
        return ()
    if not isinstance(config, dict):
        return ()
    if config.get("model_type") == "clip":
        config = config.get("vision_config") or {}
    elif config.get("model_type") != "clip_vision_model":
        return ()
    notes = []
    activation = config.get("hidden_act", "quick_gelu")  # CLIPVisionConfig's default
    if activation != "quick_gelu":
        notes.append(
            f"{path} sets hidden_act={activation!r}, but VisionTransformer's MLP uses "
            "QuickGELU (OpenAI CLIP's): the loaded model's features differ from the "
            "checkpoint's own."
        )
    epsilon = config.get("layer_norm_eps", 1e-5)
    if not np.isclose(epsilon, 1e-5, rtol=1e-6, atol=0):
        notes.append(
            f"{path} sets layer_norm_eps={epsilon!r}, but VisionTransformer's LayerNorms "
            "use 1e-5: the loaded model's features differ slightly from the checkpoint's own."
        )
    return tuple(notes)
