"""Runs the default experiment: prepare data, pre-train (cached), fine-tune, report."""

from __future__ import annotations

import dataclasses
import json
import re
import time
from pathlib import Path
from typing import Any

import numpy as np
from flax import nnx

from ftp_jax import data
from ftp_jax.experiment.config import ExperimentConfig
from ftp_jax.experiment.report import write_report
from ftp_jax.models import SmallCNN, replace_head
from ftp_jax.train import fit
from ftp_jax.train.loop import ArrayTrainData, EvalSet, restore_best

__all__ = ["run_experiment", "slug"]

PRETRAIN_SEED = 1234


def slug(label: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", label.lower()).strip("_")


def _arrays(name: str, split: str, data_dir: Path, limit: int = 0):
    images, labels = data.load_arrays(name, split, data_dir)
    if limit:
        images, labels = images[:limit], labels[:limit]
    return images.astype(np.float32) / 255.0, labels.astype(np.int32)


def _evalset(name: str, split: str, data_dir: Path, limit: int = 0) -> EvalSet:
    images, labels = _arrays(name, split, data_dir, limit)
    return EvalSet(name if split == "test" else f"{name}:{split}", images, labels)


def run_experiment(
    config: ExperimentConfig, workdir: str | Path, *, progress: bool = True
) -> dict[str, Any]:
    """Runs every stage in ``workdir`` (resuming what is there) and writes the report.

    Returns the results dict also written to ``<workdir>/results/results.json``.
    """
    started = time.perf_counter()
    workdir = Path(workdir)
    data_dir = Path(config.data_dir) if config.data_dir else workdir / "data"
    data.prepare_datasets(data_dir)
    limit = config.train_subset

    # Stage 1: pre-training on the source domain (cached: a finished run is reused).
    source_train = _arrays(config.pretrain_dataset, "train", data_dir, limit)
    source_val = _evalset(config.pretrain_dataset, "validation", data_dir)
    pretrain_config = dataclasses.replace(config.pretrain, seed=PRETRAIN_SEED, progress=progress)
    pretrain_dir = workdir / "pretrain"
    id_test = _evalset(config.id_dataset, "test", data_dir)
    ood_sets = [_evalset(name, split, data_dir) for name, split in config.ood_datasets]
    pretrained = fit(
        SmallCNN(rngs=nnx.Rngs(PRETRAIN_SEED)),
        pretrain_config,
        ArrayTrainData(*source_train, pretrain_config.batch_size),
        source_val,
        [id_test, *ood_sets],
        pretrain_dir,
    )

    # Stage 2: fine-tune every method with every seed on the small ID split.
    id_split = data.percent_split("train", config.id_percent)
    id_train = _arrays(config.id_dataset, id_split, data_dir, limit)
    id_val = _evalset(config.id_dataset, "validation", data_dir)
    runs = []
    for row in config.methods:
        for seed in config.seeds:
            model = restore_best(SmallCNN(rngs=nnx.Rngs(PRETRAIN_SEED)), pretrain_dir)
            replace_head(model, 10, rngs=nnx.Rngs(seed + 1000))
            run_config = dataclasses.replace(
                config.finetune, method=row.method, seed=seed, progress=progress
            )
            result = fit(
                model,
                run_config,
                ArrayTrainData(*id_train, run_config.batch_size),
                id_val,
                [id_test, *ood_sets],
                workdir / "finetune" / slug(row.label) / f"seed{seed}",
            )
            runs.append({"label": row.label, "seed": seed, **result.to_json()})
            if progress:
                ood = np.mean([result.tests[s.name]["accuracy"] for s in ood_sets])
                print(
                    f"{row.label:<22} seed {seed}: ID {result.tests[id_test.name]['accuracy']:.3f}"
                    f"  OOD avg {ood:.3f}  (best epoch {result.best_epoch})",
                    flush=True,
                )
    results = {
        "config": dataclasses.asdict(config),
        "id_test": id_test.name,
        "ood_sets": [s.name for s in ood_sets],
        "id_train_examples": int(len(id_train[1])),
        "pretrained": {"validation": pretrained.validation, "tests": pretrained.tests},
        "runs": runs,
        "seconds": time.perf_counter() - started,
    }
    results_dir = workdir / "results"
    write_report(results, results_dir)
    return json.loads((results_dir / "results.json").read_text())
