"""Runs a paper-scale recipe: build the model, load weights, stream TFDS data, ``fit``."""

from __future__ import annotations

import contextlib
import dataclasses
import json
from pathlib import Path
from typing import Any

import jax
import numpy as np
from flax import nnx

from ftp_jax import data
from ftp_jax._diskspace import writing
from ftp_jax.recipes.config import RecipeConfig, validate
from ftp_jax.train import fit
from ftp_jax.train.inputs import SourceEvalSet, SourceTrainData
from ftp_jax.train.placement import is_primary_host
from ftp_jax.train.workdir_lock import workdir_lock

__all__ = ["build_model", "check_inputs", "run_recipe"]

# Keys that do not change what a work directory's checkpoints hold: a rerun may change them.
_NOT_IDENTIFYING = (
    "finetune.progress",
    "finetune.checkpoint_every",
    "finetune.keep_checkpoints",
    "finetune.eval_batch_size",
    "shard_params",
    "id_test",
    "ood",
    "class_subsets",
)
_RECORD = "recipe.json"  # the recipe a work directory was started with


def build_model(config: RecipeConfig, *, rngs: nnx.Rngs, **overrides: Any) -> nnx.Module:
    """The recipe's model with a fresh ``head`` of ``num_classes`` (random weights).

    ``overrides`` (e.g. ``width``, ``layers``) build a smaller model of the same
    structure, for smoke tests. The kinds: :data:`ftp_jax.models.MODEL_KINDS`.
    """
    from ftp_jax import models

    return models.build_model(
        config.model, config.num_classes, image_size=config.image_size, rngs=rngs, **overrides
    )


def row_axes_of(config: RecipeConfig):
    """FTP's row rule for the recipe's model (the reference's rows)."""
    from ftp_jax import models

    return models.MODEL_KINDS[config.model].row_axes


def _split(name_split: tuple[str, str], percent: int = 100) -> tuple[str, str]:
    name, split = name_split
    if percent != 100:
        if "[" in split:
            raise ValueError(f"train_percent with a sliced split {split!r} is ambiguous.")
        split = data.percent_split(split, percent)
    return name, split


def _identity(config: RecipeConfig) -> dict[str, Any]:
    from ftp_jax.train.config import config_items

    return {
        key: value
        for key, value in config_items(config)
        if not any(key == k or key.startswith(k + ".") for k in _NOT_IDENTIFYING)
    }


def _datasets(config: RecipeConfig) -> list[tuple[str, str]]:
    return [
        _split(config.train, config.train_percent),
        config.validation,
        config.id_test,
        *config.ood,
    ]


def check_inputs(
    config: RecipeConfig,
    *,
    data_dir: str | Path,
    workdir: str | Path,
    weights: str | Path | None,
) -> None:
    """Checks every input of a recipe in seconds, before the model is built.

    The datasets are prepared in ``data_dir`` (each split exists); the weights
    file exists, is readable and looks like a checkpoint; the work directory
    holds no checkpoints of another recipe (its ``recipe.json`` is compared with
    ``config``). Touches no JAX device, so it can run before
    ``jax.distributed.initialize()``.

    Raises:
      FileNotFoundError: ``data_dir``, a dataset or split, or the weights file is missing.
      ValueError: an unknown split.
      ftp_jax.convert.UnsupportedCheckpoint: the weights file is not a checkpoint.
      CheckpointMismatchError: the work directory holds another recipe's run; the
        message lists the settings that differ.
    """
    if not Path(data_dir).is_dir():
        raise FileNotFoundError(
            f"data_dir {str(data_dir)!r} does not exist; prepare the datasets there first "
            f"(`tfds build NAME --data_dir {data_dir} --file_format array_record` on a "
            "machine with internet)."
        )
    for name, split in _datasets(config):
        data.check_prepared(name, split, data_dir)
    if weights is not None:
        from ftp_jax.convert import check_checkpoint

        check_checkpoint(weights)
    record = Path(workdir, _RECORD)
    checkpoints = Path(workdir, "checkpoints")
    if record.exists() and checkpoints.is_dir() and any(checkpoints.iterdir()):
        from ftp_jax.train.checkpoint import CheckpointMismatchError, differences

        stored, current = json.loads(record.read_text()), _identity(config)
        # Keys only one side has (a config field added or removed since) are not compared.
        common = stored.keys() & current.keys()
        changed = differences({k: stored[k] for k in common}, {k: current[k] for k in common})
        if changed:
            raise CheckpointMismatchError(
                f"the work directory {str(workdir)!r} holds a run of another recipe: "
                f"{'; '.join(changed)}."
            )


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

    Raises:
      WorkdirBusyError: another process runs in ``workdir`` (the primary host holds
        its lock while this runs).
    """
    # On several hosts the work directory is shared: the primary host holds the lock.
    with workdir_lock(workdir) if is_primary_host() else contextlib.nullcontext():
        return _run_recipe(config, data_dir, workdir, weights, model, progress, mesh)


def _run_recipe(config, data_dir, workdir, weights, model, progress, mesh) -> dict[str, Any]:
    if model is None and weights is None:
        raise ValueError("the recipe needs pre-trained weights: pass --weights PATH.")
    if model is None:  # the config's derived settings, on the recipe's model (abstract)
        validate(config)
    # Every input first: a missing dataset or weights file, or another run's work
    # directory, fails in seconds, not after the model is built and the weights read.
    check_inputs(config, data_dir=data_dir, workdir=workdir, weights=weights)
    if config.normalization == "clip":
        mean, std = data.CLIP_MEAN, data.CLIP_STD
    else:
        mean, std = data.IMAGENET_MEAN, data.IMAGENET_STD
    # uint8 crops to the device (a quarter of float32's bytes), normalized in the jitted steps.
    train_tf = data.train_transform(config.image_size, mean=mean, std=std, output="uint8")
    eval_tf = data.eval_transform(config.image_size, mean=mean, std=std, output="uint8")

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
    if model is None:
        from ftp_jax.convert import load_pretrained

        model = build_model(config, rngs=nnx.Rngs(config.finetune.seed))
        load_pretrained(model, weights, kind=config.model)
    if is_primary_host():  # what check_inputs compares a rerun with
        Path(workdir).mkdir(parents=True, exist_ok=True)
        with writing(workdir, "the recipe record"):
            Path(workdir, _RECORD).write_text(json.dumps(_identity(config), indent=1, default=str))
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
        with writing(workdir, "the result"):
            Path(workdir, "recipe_result.json").write_text(json.dumps(summary, indent=1))
    return summary
