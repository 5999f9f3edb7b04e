"""Runs a paper-scale recipe: build the model, load weights, stream TFDS data, ``fit``."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import jax
import numpy as np
from flax import nnx

from ftp_jax import data
from ftp_jax.recipes.config import RecipeConfig
from ftp_jax.train import fit
from ftp_jax.train.inputs import SourceEvalSet, SourceTrainData
from ftp_jax.train.placement import is_primary_host

__all__ = ["build_model", "run_recipe"]


def build_model(config: RecipeConfig, *, rngs: nnx.Rngs, **overrides: Any) -> nnx.Module:
    """The recipe's model with a fresh ``head`` of ``num_classes`` (random weights).

    ``overrides`` (e.g. ``width``, ``layers``) build a smaller model of the same
    structure, for smoke tests.
    """
    from ftp_jax import models

    if config.model == "torchvision_resnet50":
        if overrides:
            return models.ResNet(config.num_classes, rngs=rngs, **overrides)
        return models.resnet50(config.num_classes, rngs=rngs)
    if config.model == "clip_resnet50":
        if overrides:
            return models.CLIPResNet(
                config.num_classes, image_size=config.image_size, rngs=rngs, **overrides
            )
        return models.clip_resnet50(config.num_classes, image_size=config.image_size, rngs=rngs)
    if overrides:
        return models.VisionTransformer(
            config.num_classes, image_size=config.image_size, rngs=rngs, **overrides
        )
    return models.clip_vit_b16(config.num_classes, image_size=config.image_size, rngs=rngs)


def row_axes_of(config: RecipeConfig):
    """FTP's row rule for the recipe's model (the reference's rows)."""
    from ftp_jax import flax_row_axes, models

    return flax_row_axes if config.model == "torchvision_resnet50" else models.clip_row_axes


def _split(name_split: tuple[str, str], percent: int = 100) -> tuple[str, str]:
    name, split = name_split
    if percent != 100:
        if "[" in split:
            raise ValueError(f"train_percent with a sliced split {split!r} is ambiguous.")
        split = data.percent_split(split, percent)
    return name, split


def run_recipe(
    config: RecipeConfig,
    *,
    data_dir: str | Path,
    workdir: str | Path,
    weights: str | Path | None,
    model: nnx.Module | None = None,
    progress: bool = True,
    mesh: jax.sharding.Mesh | None = None,
) -> dict[str, Any]:
    """Fine-tunes the recipe's model on all devices and returns the ID/OOD numbers.

    Args:
      config: the recipe.
      data_dir: where the TFDS datasets are prepared (never downloaded).
      workdir: metrics, checkpoints and ``recipe_result.json``; resumes.
      weights: the pre-trained weights file (required unless ``model`` is given).
      model: a ready model (tests: a tiny one with random weights).
      progress: progress bars.
      mesh: the devices to train on, with a ``"data"`` axis (default: all devices,
        on every host).
    """
    if model is None:
        if weights is None:
            raise ValueError("the recipe needs pre-trained weights: pass --weights PATH.")
        from ftp_jax.convert import load_pretrained

        model = build_model(config, rngs=nnx.Rngs(config.finetune.seed))
        load_pretrained(model, weights, kind=config.model)
    if config.normalization == "clip":
        mean, std = data.CLIP_MEAN, data.CLIP_STD
    else:
        mean, std = data.IMAGENET_MEAN, data.IMAGENET_STD
    train_tf = data.train_transform(config.image_size, mean=mean, std=std)
    eval_tf = data.eval_transform(config.image_size, mean=mean, std=std)

    def evalset(name_split):
        name, split = name_split
        return SourceEvalSet(
            f"{name}:{split}",
            data.open_split(name, split, data_dir),
            eval_tf,
            class_subset=config.class_subset_of(name),
        )

    train = SourceTrainData(
        data.open_split(*_split(config.train, config.train_percent), data_dir),
        config.finetune.batch_size,
        train_tf,
    )
    validation = evalset(config.validation)
    id_test = evalset(config.id_test)
    ood = [evalset(x) for x in config.ood]
    if mesh is None:
        mesh = jax.make_mesh((jax.device_count(),), ("data",))
    finetune = dataclasses.replace(config.finetune, progress=progress)
    result = fit(
        model,
        finetune,
        train,
        validation,
        [id_test, *ood],
        workdir,
        mesh=mesh,
        shard_params=config.shard_params,
        row_axes=row_axes_of(config),
    )
    summary = {
        "id": result.tests[id_test.name]["accuracy"],
        "ood": {s.name: result.tests[s.name]["accuracy"] for s in ood},
        "ood_average": float(np.mean([result.tests[s.name]["accuracy"] for s in ood])),
        "best_epoch": result.best_epoch,
        "validation": result.validation,
        "devices": mesh.size,
    }
    if is_primary_host():
        Path(workdir, "recipe_result.json").write_text(json.dumps(summary, indent=1))
    return summary
