"""Runs the default experiment: prepare data, pre-train (cached), fine-tune, WiSE-FT, report."""

from __future__ import annotations

import dataclasses
import json
import re
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

import ftp_jax
from ftp_jax import data
from ftp_jax.experiment.config import ExperimentConfig
from ftp_jax.experiment.report import write_report
from ftp_jax.models import SmallCNN, replace_head
from ftp_jax.train import fit
from ftp_jax.train.loop import ArrayTrainData, EvalSet, evaluate, restore_best
from ftp_jax.train.steps import make_eval_step, split_model

__all__ = ["run_experiment", "slug", "wise_ft_label", "wise_ft_sweep"]

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


def wise_ft_label(alpha: float, source: str) -> str:
    """The table row of WiSE-FT at ``alpha`` over the ``source`` row's models."""
    return f"WiSE-FT α={alpha:g}, {source}"


def _finetuning_model(seed: int, pretrain_dir: Path) -> SmallCNN:
    """The pre-trained model with the new head of ``seed`` (what every fine-tuning starts from)."""
    model = restore_best(SmallCNN(rngs=nnx.Rngs(PRETRAIN_SEED)), pretrain_dir)
    model = replace_head(model, 10, rngs=nnx.Rngs(seed + 1000))
    # The restored backbone arrays are committed to a device, the new head's are not:
    # ``fit``'s first jitted step would compile for that mix, then again for its own
    # (committed) outputs. Uncommitted copies of everything: one compile per run.
    state = nnx.state(model)
    nnx.update(model, jax.tree_util.tree_map(lambda x: jnp.asarray(np.asarray(x)), state))
    return model


def wise_ft_sweep(
    config: ExperimentConfig,
    workdir: Path,
    source_runs: list[dict[str, Any]],
    validation: EvalSet,
    tests: list[EvalSet],
    *,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """WiSE-FT rows: for each seed, the ``config.wise_ft_source`` row's fine-tuned model
    (its selected epoch) interpolated with the pre-trained weights at every alpha of
    ``config.wise_ft_alphas``, evaluated on the same sets as a fine-tuning run.

    The new head has no pre-trained value: it is excluded from the interpolation
    and keeps its fine-tuned weights. Evaluation only (no training, not cached):
    about a second per model.

    Returns:
      One run record per (alpha, seed), in the format of the fine-tuning runs, with
      ``wise_ft_alpha`` added.
    """
    if not config.wise_ft_alphas:
        return []
    source = config.wise_ft_source
    source_method = next(row.method for row in config.methods if row.label == source)
    mask = ftp_jax.path_rules(
        [(source_method.head_pattern, False), (r".*", True)], name="method.head_pattern"
    )
    pretrain_dir = workdir / "pretrain"
    _, anchor, _ = split_model(restore_best(SmallCNN(rngs=nnx.Rngs(PRETRAIN_SEED)), pretrain_dir))
    batch_size = config.finetune.eval_batch_size
    eval_step = None
    rows = {alpha: [] for alpha in config.wise_ft_alphas}
    for seed in config.seeds:
        source_run = next(r for r in source_runs if r["label"] == source and r["seed"] == seed)
        model = restore_best(
            _finetuning_model(seed, pretrain_dir),
            workdir / "finetune" / slug(source) / f"seed{seed}",
        )
        graphdef, finetuned, model_state = split_model(model)
        if eval_step is None:  # the same graph for every seed and alpha: one compile
            eval_step = jax.jit(make_eval_step(graphdef))
        for alpha in config.wise_ft_alphas:
            params = ftp_jax.wise_ft(anchor, finetuned, alpha, mask=mask)
            run = {
                "label": wise_ft_label(alpha, source),
                "seed": seed,
                "best_epoch": source_run["best_epoch"],
                "validation": evaluate(eval_step, params, model_state, validation, batch_size),
                "tests": {
                    s.name: evaluate(eval_step, params, model_state, s, batch_size) for s in tests
                },
                "history": [],
                "skipped_steps": source_run["skipped_steps"],
                "steps": source_run["steps"],
                "wise_ft_alpha": float(alpha),
            }
            rows[alpha].append(run)
            if progress:
                _print_run(run, tests[0].name, [s.name for s in tests[1:]])
    return [run for alpha in config.wise_ft_alphas for run in rows[alpha]]


def _print_run(run: dict[str, Any], id_test: str, ood_sets: list[str]) -> None:
    ood = np.mean([run["tests"][name]["accuracy"] for name in ood_sets])
    print(
        f"{run['label']:<22} seed {run['seed']}: ID {run['tests'][id_test]['accuracy']:.3f}"
        f"  OOD avg {ood:.3f}  (best epoch {run['best_epoch']})",
        flush=True,
    )


def _keep_first_time(results: dict[str, Any], previous_path: Path) -> None:
    """A rerun that found every run finished keeps the first complete run's total time.

    Its own time is appended to ``rerun_seconds`` instead.
    """
    if not previous_path.exists():
        return
    previous = json.loads(previous_path.read_text())
    same = json.loads(json.dumps(results["runs"])) == previous.get("runs")
    if same and "seconds" in previous:
        rerun = results["seconds"]
        results["seconds"] = previous["seconds"]
        results["rerun_seconds"] = [*previous.get("rerun_seconds", []), rerun]


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
            model = _finetuning_model(seed, pretrain_dir)
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
                _print_run(runs[-1], id_test.name, [s.name for s in ood_sets])

    # Stage 3: WiSE-FT, weight-space ensembles of one row's fine-tuned models (no training).
    runs += wise_ft_sweep(config, workdir, runs, id_val, [id_test, *ood_sets], progress=progress)
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
    _keep_first_time(results, results_dir / "results.json")
    write_report(results, results_dir)
    return json.loads((results_dir / "results.json").read_text())
