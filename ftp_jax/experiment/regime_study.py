"""FTP's regime study: where its claim holds (``k`` x batch size x schedule), and why it pins.

FTP learns each constrained leaf's radius by following ``h_t``, the derivative
of the loss with respect to the previous radius (:func:`ftp_jax.radius_gradients`):
a positive ``h_t`` shrinks the radius, and FTP's gradient annealing factor ``k``
scales the positive ones (``k=0`` ignores them: the radius can only grow). When
``h_t`` is positive on average, a radius runs down to its floor and the leaf is
held at its pre-trained value. This study fine-tunes the default experiment's
pre-trained model on 100% of ``photo`` with vanilla SGD and FTP (SGD) at every
``k`` of a grid, in *cells* of batch size and schedule length (and one cell
without momentum, at the same effective step size), on several seeds, with
``h_t`` logged per leaf; the report tabulates ID and OOD accuracy against
vanilla's in the same cell, the learned radii, and the share of steps where
``h_t`` was positive, and plots the radius trajectories.

Command (from the repository root, after the README's install)::

    .venv/bin/python -m ftp_jax.experiment.regime_study \\
        --config experiments/configs/ftp_regime.py --workdir runs/ftp_regime

Writes ``<workdir>/results/{results.md,results.json,*.png}``; the committed run
is ``experiments/results/ftp_regime/``. Runs in parallel worker processes like
the default experiment (:mod:`ftp_jax.experiment.workers`), resumes like it,
and reuses its pre-training recipe (its own cached copy in ``<workdir>/pretrain``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from ftp_jax.experiment.config import ExperimentConfig, MethodRun, Regime
from ftp_jax.train.config import MethodConfig

__all__ = ["Cell", "RegimeStudyConfig", "main", "run_study", "validate_study", "write_study_report"]

# The leaves whose radii and h_t the report shows (the new head is not constrained).
KERNELS = ("conv1/kernel", "conv2/kernel", "dense/kernel")


@dataclasses.dataclass(frozen=True)
class Cell:
    """One training regime of the study: batch size, epochs and the SGD base's settings.

    ``ks``: the values of FTP's ``k`` run in this cell (``()``: the study's grid).
    ``seeds``: this cell's seeds (``()``: the study's).
    """

    batch_size: int
    epochs: int
    learning_rate: float = 1e-2
    momentum: float = 0.9
    nesterov: bool = True
    ks: tuple[float, ...] = ()
    seeds: tuple[int, ...] = ()

    @property
    def key(self) -> str:
        key = f"b{self.batch_size}_e{self.epochs}"
        if self.momentum == 0:
            key += f"_nomomentum_lr{self.learning_rate:g}"
        return key

    @property
    def name(self) -> str:
        name = f"batch {self.batch_size}, {self.epochs} epochs"
        if self.momentum == 0:
            name += f", no momentum, lr {self.learning_rate:g}"
        return name


@dataclasses.dataclass(frozen=True)
class RegimeStudyConfig:
    """The study: the default experiment's data and pre-training, FTP's ``k`` x cells.

    Attributes:
      experiment: where the data, model, pre-training, ID and OOD sets come from
        (its rows, regimes and seeds are not used).
      ks: FTP's gradient annealing factors.
      cells: the training regimes (batch size, epochs, base optimizer settings).
      seeds: fine-tuning seeds (head initialization and data order).
      percent: the share of the ID train split.
      vanilla_weight_decay, ftp_weight_decay: the reference's per-method decay.
      workers: runs in parallel (``0``: one per available core).
    """

    experiment: ExperimentConfig
    ks: tuple[float, ...] = (0.0, 0.1, 0.5, 1.0)
    cells: tuple[Cell, ...] = ()
    seeds: tuple[int, ...] = (0, 1)
    percent: int = 100
    vanilla_weight_decay: float = 5e-4
    ftp_weight_decay: float = 0.0
    workers: int = 0

    def __post_init__(self):
        if not self.cells:
            raise ValueError("the study needs at least one cell (batch size, epochs).")
        keys = [cell.key for cell in self.cells]
        if len(set(keys)) != len(keys):
            raise ValueError(f"the cells must differ; got {keys}.")
        for cell in self.cells:
            unknown = [k for k in cell.ks if k not in self.ks]
            if unknown:
                raise ValueError(f"cell {cell.name!r}: ks {unknown} are not in the grid {self.ks}.")

    def cell_ks(self, cell: Cell) -> tuple[float, ...]:
        return cell.ks or self.ks

    def cell_seeds(self, cell: Cell) -> tuple[int, ...]:
        return cell.seeds or self.seeds


def _label(cell: Cell, k: float | None) -> str:
    method = "vanilla" if k is None else f"FTP k={k:g}"
    return f"{cell.key} {method}"


def _cell_experiment(study: RegimeStudyConfig, cell: Cell) -> ExperimentConfig:
    """The cell as an experiment of one regime whose rows are vanilla and FTP at each ``k``."""
    from ftp_jax.train.methods import FTPOptions

    base = dict(
        optimizer="sgd",
        learning_rate=cell.learning_rate,
        momentum=cell.momentum,
        nesterov=cell.nesterov and cell.momentum > 0,
    )
    rows = [
        MethodRun(
            _label(cell, None),
            MethodConfig(name="vanilla", weight_decay=study.vanilla_weight_decay, **base),
        )
    ]
    for k in study.cell_ks(cell):
        method = MethodConfig(
            name="ftp", options=FTPOptions(k=k), weight_decay=study.ftp_weight_decay, **base
        )
        rows.append(MethodRun(_label(cell, k), method))
    experiment = study.experiment
    finetune = dataclasses.replace(
        experiment.finetune,
        epochs=cell.epochs,
        batch_size=cell.batch_size,
        checkpoint_epochs=10,
        log_radius_gradients=True,
    )
    return dataclasses.replace(
        experiment,
        regimes=(Regime(study.percent),),
        finetune=finetune,
        methods=tuple(rows),
        seeds=study.cell_seeds(cell),
        tune_seeds=study.cell_seeds(cell)[:1],
        wise_ft_alphas=(),
        speed_reference=rows[0].label,
    )


class StudyJob(NamedTuple):
    cell: int  # index into the study's cells
    label: str
    seed: int


@dataclasses.dataclass(frozen=True)
class _StudyRunner:
    """Runs study jobs in a worker process (picklable; called there once)."""

    study: RegimeStudyConfig
    workdir: str
    data_dir: str

    def __call__(self):
        from ftp_jax import cli
        from ftp_jax.experiment import run as experiment_run

        study, workdir, data_dir = self.study, Path(self.workdir), Path(self.data_dir)
        if study.experiment.compilation_cache:
            experiment_run._enable_compilation_cache(workdir / "jax_cache")
        cli.quiet(progress=False)
        stages: dict[int, Any] = {}

        def run(job: StudyJob) -> dict[str, Any]:
            config = _cell_experiment(study, study.cells[job.cell])
            if job.cell not in stages:
                stages[job.cell] = experiment_run._load_stage(
                    config, config.regimes[0], workdir, data_dir, progress=False
                )
            row = next(r for r in config.methods if r.label == job.label)
            return stages[job.cell].run(row, None, job.seed)

        return run


def _jobs(study: RegimeStudyConfig) -> list[StudyJob]:
    jobs = []
    for index, cell in enumerate(study.cells):
        labels = [_label(cell, None)] + [_label(cell, k) for k in study.cell_ks(cell)]
        jobs += [
            StudyJob(index, label, seed) for label in labels for seed in study.cell_seeds(cell)
        ]
    # Longest first (epochs x examples): the pool stays busy to the end.
    return sorted(jobs, key=lambda job: -study.cells[job.cell].epochs)


def _locked(function):
    from ftp_jax.train.workdir_lock import holds_workdir_lock

    return holds_workdir_lock(function)


def validate_study(study: RegimeStudyConfig) -> None:
    """Checks every run the study derives (each cell's experiment, every ``k``), before any work.

    Each cell becomes an :class:`~ftp_jax.experiment.config.ExperimentConfig` whose rows
    are that cell's runs; :func:`ftp_jax.experiment.config.validate` checks them as it
    checks the default experiment's (the methods' own transforms included).

    Raises:
      ValueError: naming the cell and what is wrong in it.
    """
    from ftp_jax.experiment.config import validate

    for cell in study.cells:
        try:
            validate(_cell_experiment(study, cell))
        except ValueError as error:
            raise ValueError(f"cell {cell.name!r}: {error}") from None


@_locked  # one run at a time in a work directory (exit 4 for a second)
def run_study(
    study: RegimeStudyConfig, workdir: str | Path, *, progress: bool = True
) -> dict[str, Any]:
    """Runs (or resumes) every cell, k and seed in ``workdir``; writes and returns the results."""
    from ftp_jax.experiment import run as experiment_run
    from ftp_jax.experiment.workers import Interrupted, default_workers, interrupted_exit, run_jobs

    validate_study(study)  # every run's settings, before any work
    started = time.perf_counter()
    workdir = Path(workdir)
    experiment = study.experiment
    prepared = experiment_run.prepare_and_pretrain(experiment, workdir, progress=progress)
    jobs = _jobs(study)
    workers = study.workers or default_workers()

    def on_start(job: StudyJob, index: int, total: int) -> None:
        if progress:
            print(f"[{index}/{total}] {study.cells[job.cell].name}: {job.label} seed {job.seed}")

    def on_finish(job: StudyJob, run: dict[str, Any], index: int, total: int) -> None:
        if progress:
            tests = run["tests"]
            names = list(tests)
            ood = np.mean([tests[n]["accuracy"] for n in names[1:]])
            print(
                f"[done {index}/{total}] {job.label} seed {job.seed}: ID "
                f"{tests[names[0]]['accuracy']:.3f}  OOD avg {ood:.3f}",
                flush=True,
            )

    runner = _StudyRunner(study, str(workdir), str(prepared.data_dir))
    try:
        done = run_jobs(
            jobs, runner, workers=workers, started=on_start, finished=on_finish, total=len(jobs)
        )
    except Interrupted as error:
        raise interrupted_exit(error) from None
    runs = []
    for job in sorted(done, key=lambda j: (j.cell, j.label, j.seed)):
        cell = study.cells[job.cell]
        k = None if job.label.endswith(" vanilla") else float(job.label.rsplit("=", 1)[1])
        runs.append({"cell": cell.key, "k": k, **done[job]})
    results = {
        "config": dataclasses.asdict(study),
        "cells": [{"key": c.key, "name": c.name, **dataclasses.asdict(c)} for c in study.cells],
        "id_test": prepared.tests[0].name,
        "ood_sets": [s.name for s in prepared.tests[1:]],
        "pretrained": {"tests": prepared.pretrained.tests},
        "runs": runs,
        "seconds": time.perf_counter() - started,
        "workers": workers,
    }
    results_dir = workdir / "results"
    previous = results_dir / "results.json"
    if previous.exists():  # a rerun that found every run finished keeps the first time
        old = json.loads(previous.read_text())
        if old.get("runs") == json.loads(json.dumps(runs)):
            results["seconds"] = old["seconds"]
    write_study_report(results, results_dir)
    return results


# ----------------------------------------------------------------------------------------
# The report


def _accuracy(run: dict[str, Any], name: str) -> float:
    return run["tests"][name]["accuracy"]


def _ood(results: dict[str, Any], run: dict[str, Any]) -> float:
    return float(np.mean([_accuracy(run, n) for n in results["ood_sets"]]))


def _mean_std(values: list[float]) -> tuple[float, float]:
    array = np.asarray(values, np.float64)
    return float(array.mean()), float(array.std(ddof=1)) if len(array) > 1 else 0.0


def _runs(results, cell: str, k: float | None) -> list[dict[str, Any]]:
    return [r for r in results["runs"] if r["cell"] == cell and r["k"] == k]


def _positive_share(run: dict[str, Any], leaf: str) -> float | None:
    """The share of the run's steps with h_t > 0 at ``leaf`` (steps-weighted over epochs)."""
    shares = [r["radius_gradient_positive"].get(leaf) for r in run["history"]]
    shares = [s for s in shares if s is not None]
    return float(np.mean(shares)) if shares else None


def _mean_h(run: dict[str, Any], leaf: str) -> float | None:
    values = [r["radius_gradient"].get(leaf) for r in run["history"] if "radius_gradient" in r]
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def summarize_study(results: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per (cell, method): ID/OOD mean and std over seeds, the difference from the
    cell's vanilla, the last epoch's radii and distances, pinned leaves, h_t statistics."""
    rows = []
    for cell in results["cells"]:
        key = cell["key"]
        vanilla = _runs(results, key, None)
        ks = sorted({r["k"] for r in results["runs"] if r["cell"] == key and r["k"] is not None})
        for k in [None, *ks]:
            runs = _runs(results, key, k)
            if not runs:
                continue
            row = {"cell": key, "cell_name": cell["name"], "k": k, "seeds": len(runs)}
            for name, values in (
                ("ID", [_accuracy(r, results["id_test"]) for r in runs]),
                ("OOD", [_ood(results, r) for r in runs]),
            ):
                row[name] = _mean_std(values)
            if k is not None and vanilla:
                row["dID"] = (
                    row["ID"][0] - _mean_std([_accuracy(r, results["id_test"]) for r in vanilla])[0]
                )
                row["dOOD"] = row["OOD"][0] - _mean_std([_ood(results, r) for r in vanilla])[0]
            last = [r["history"][-1] for r in runs]
            row["radius"] = {
                leaf: float(np.mean([h["radius"].get(leaf, np.nan) for h in last]))
                for leaf in KERNELS
            }
            row["distance"] = {
                leaf: float(np.mean([h["distance"][leaf] for h in last])) for leaf in KERNELS
            }
            row["pinned"] = sorted({leaf for r in runs for leaf in r.get("pinned", {})})
            if k is not None:
                row["positive_share"] = {
                    leaf: float(np.mean([_positive_share(r, leaf) for r in runs]))
                    for leaf in KERNELS
                }
                row["mean_h"] = {
                    leaf: float(np.mean([_mean_h(r, leaf) for r in runs])) for leaf in KERNELS
                }
            rows.append(row)
    return rows


def _pm(stats: tuple[float, float]) -> str:
    return f"{100 * stats[0]:.1f} ± {100 * stats[1]:.1f}"


def _per_kernel(values: dict[str, float], template: str) -> str:
    """``values`` of the ``KERNELS`` formatted by ``template`` ("{:.2g}"), joined by " / "."""
    return " / ".join(template.format(values[leaf]) for leaf in KERNELS)


def _answer(results: dict[str, Any], rows: list[dict[str, Any]]) -> list[str]:
    """The measured answer to "why is FTP's radius gradient positive here?", from the rows."""
    k1 = {row["cell"]: row for row in rows if row["k"] == 1.0}
    cells = {c["key"]: c for c in results["cells"]}
    lines = []
    if not k1:
        return lines
    by_batch = sorted(
        (c for c in cells.values() if c["momentum"] > 0 and c["key"] in k1 and c["epochs"] == 16),
        key=lambda c: c["batch_size"],
    )
    if len(by_batch) >= 2:
        lines.append(
            "- **Batch size (gradient noise).** Share of steps with h_t > 0 at k=1, 16 epochs, "
            "per kernel (conv1 / conv2 / dense): "
            + "; ".join(
                f"batch {c['batch_size']}: "
                + _per_kernel(
                    {x: 100 * v for x, v in k1[c["key"]]["positive_share"].items()}, "{:.0f}%"
                )
                for c in by_batch
            )
            + "."
        )
    no_momentum = [c for c in cells.values() if c["momentum"] == 0 and c["key"] in k1]
    with_momentum = [
        c
        for c in by_batch
        if no_momentum
        and c["batch_size"] == no_momentum[0]["batch_size"]
        and c["epochs"] == no_momentum[0]["epochs"]
    ]
    if no_momentum and with_momentum:
        a, b = k1[with_momentum[0]["key"]], k1[no_momentum[0]["key"]]
        lines.append(
            f"- **Momentum.** At batch {no_momentum[0]['batch_size']}, {no_momentum[0]['epochs']} "
            "epochs, k=1, the share of steps with h_t > 0 (conv1 / conv2 / dense) is "
            + _per_kernel({x: 100 * v for x, v in a["positive_share"].items()}, "{:.0f}%")
            + " with Nesterov momentum 0.9 at lr 0.01 and "
            + _per_kernel({x: 100 * v for x, v in b["positive_share"].items()}, "{:.0f}%")
            + f" without momentum at lr {no_momentum[0]['learning_rate']:g} (the same effective "
            "step); the end radii are "
            + _per_kernel(a["radius"], "{:.3g}")
            + " and "
            + _per_kernel(b["radius"], "{:.3g}")
            + "."
        )
    by_epochs = sorted(
        (
            c
            for c in cells.values()
            if c["momentum"] > 0 and c["key"] in k1 and c["batch_size"] == 64
        ),
        key=lambda c: c["epochs"],
    )
    if len(by_epochs) >= 2:
        lines.append(
            "- **Schedule length.** At batch 64, k=1, the mean h_t per kernel (conv1 / conv2 / "
            "dense) over the run: "
            + "; ".join(
                f"{c['epochs']} epochs: " + _per_kernel(k1[c["key"]]["mean_h"], "{:+.2g}")
                for c in by_epochs
            )
            + "."
        )
    return lines


def _markdown(results: dict[str, Any], rows: list[dict[str, Any]], findings: str) -> str:
    pre = results["pretrained"]["tests"]
    pre_ood = np.mean([pre[n]["accuracy"] for n in results["ood_sets"]])
    seeds = results["config"]["seeds"]
    lines = [
        "# FTP regime study: where its claim holds",
        "",
        "Vanilla SGD and FTP (SGD) fine-tuning the default experiment's pre-trained model on "
        f"{results['config']['percent']}% of `photo` (new head, best epoch on `photo` "
        f"validation), Nesterov momentum 0.9 unless the cell says otherwise, weight decay "
        f"{results['config']['vanilla_weight_decay']:g} for vanilla and "
        f"{results['config']['ftp_weight_decay']:g} for FTP, a cosine schedule stepped per "
        f"epoch. Accuracy in %, mean ± std over seeds {seeds}; Δ = difference from vanilla in "
        "the same cell. Radii: FTP's learned radius per kernel at the last epoch (MARS norm "
        "per output channel); 1e-08 is its floor. h_t > 0: the share of steps where FTP's "
        "radius gradient was positive (it shrinks the radius; k scales it). Pinned: leaves "
        "whose radius sat at the floor for at least half the epochs.",
        "",
        "Pre-trained, not fine-tuned (its own head): ID "
        f"{100 * pre[results['id_test']]['accuracy']:.1f}, OOD avg {100 * pre_ood:.1f}.",
    ]
    if findings:
        lines += ["", findings.strip()]
    lines += [
        "",
        "## ID and OOD per cell",
        "",
        "| cell | method | ID | OOD avg | Δ ID | Δ OOD | radius conv1 / conv2 / dense | "
        "h_t > 0 conv1 / conv2 / dense | pinned |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        method = "vanilla" if row["k"] is None else f"FTP k={row['k']:g}"
        delta_id = f"{100 * row['dID']:+.1f}" if "dID" in row else ""
        delta_ood = f"{100 * row['dOOD']:+.1f}" if "dOOD" in row else ""
        if row["k"] is None:
            radius = "(distance " + " / ".join(f"{row['distance'][x]:.2g}" for x in KERNELS) + ")"
            share = ""
        else:
            radius = " / ".join(f"{row['radius'][x]:.2g}" for x in KERNELS)
            share = " / ".join(f"{100 * row['positive_share'][x]:.0f}%" for x in KERNELS)
        pinned = ", ".join(row["pinned"])
        lines.append(
            f"| {row['cell_name']} | {method} | {_pm(row['ID'])} | {_pm(row['OOD'])} | "
            f"{delta_id} | {delta_ood} | {radius} | {share} | {pinned} |"
        )
    answer = _answer(results, rows)
    if answer:
        lines += ["", "## What drives the radius gradient (measured)", "", *answer]
    lines += ["", f"Total time: {results['seconds']:.0f} s on {results['workers']} workers.", ""]
    return "\n".join(lines)


def _plots(results: dict[str, Any], rows: list[dict[str, Any]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = results["cells"]
    # 1. ID and OOD against k, one panel per cell, vanilla as dashed lines.
    figure, axes = plt.subplots(1, len(cells), figsize=(3.2 * len(cells), 3.2), squeeze=False)
    for axis, cell in zip(axes[0], cells, strict=True):
        cell_rows = [r for r in rows if r["cell"] == cell["key"]]
        ftp_rows = [r for r in cell_rows if r["k"] is not None]
        vanilla = next((r for r in cell_rows if r["k"] is None), None)
        ks = [r["k"] for r in ftp_rows]
        positions = range(len(ks))
        for name, color in (("ID", "C0"), ("OOD", "C1")):
            means = [100 * r[name][0] for r in ftp_rows]
            stds = [100 * r[name][1] for r in ftp_rows]
            axis.errorbar(positions, means, yerr=stds, color=color, marker="o", label=f"FTP {name}")
            if vanilla is not None:
                axis.axhline(100 * vanilla[name][0], color=color, ls="--", label=f"vanilla {name}")
        axis.set_xticks(list(positions), [f"{k:g}" for k in ks])
        axis.set_xlabel("k")
        axis.set_title(cell["name"], fontsize=8)
    axes[0][0].set_ylabel("accuracy (%)")
    axes[0][0].legend(fontsize=6)
    figure.tight_layout()
    figure.savefig(out / "id_ood_vs_k.png", dpi=110)
    plt.close(figure)
    # 2. Radius trajectories per kernel, one row of panels per cell, a line per k (seed mean).
    all_ks = sorted({r["k"] for r in results["runs"]} - {None})
    figure, axes = plt.subplots(
        len(cells), len(KERNELS), figsize=(3.2 * len(KERNELS), 2.4 * len(cells)), squeeze=False
    )
    for i, cell in enumerate(cells):
        for j, leaf in enumerate(KERNELS):
            axis = axes[i][j]
            ks = sorted({r["k"] for r in results["runs"] if r["cell"] == cell["key"]} - {None})
            for k in ks:
                runs = _runs(results, cell["key"], k)
                steps = [h["step"] for h in runs[0]["history"]]
                values = np.mean([[h["radius"][leaf] for h in r["history"]] for r in runs], 0)
                color = f"C{all_ks.index(k)}"  # one colour per k in every panel
                axis.plot(
                    steps, np.maximum(values, 1e-9), marker=".", color=color, label=f"k={k:g}"
                )
            axis.set_yscale("log")
            if j == 0:
                axis.legend(fontsize=6)
            axis.set_title(f"{cell['name']}: {leaf}", fontsize=7)
            if i == len(cells) - 1:
                axis.set_xlabel("step")
    axes[0][0].set_ylabel("radius")
    figure.tight_layout()
    figure.savefig(out / "radii.png", dpi=100)
    plt.close(figure)
    # 3. Share of steps with h_t > 0 per epoch, k=1, per kernel, a line per cell.
    figure, axes = plt.subplots(1, len(KERNELS), figsize=(3.4 * len(KERNELS), 3.0), squeeze=False)
    for j, leaf in enumerate(KERNELS):
        axis = axes[0][j]
        for cell in cells:
            runs = _runs(results, cell["key"], 1.0)
            if not runs:
                continue
            epochs = len(runs[0]["history"])
            shares = np.mean(
                [[h["radius_gradient_positive"][leaf] for h in r["history"]] for r in runs], 0
            )
            axis.plot(np.arange(1, epochs + 1) / epochs, 100 * shares, label=cell["name"])
        axis.axhline(50, color="grey", lw=0.5)
        axis.set_title(f"k=1: {leaf}", fontsize=8)
        axis.set_xlabel("share of the schedule")
    axes[0][0].set_ylabel("steps with h_t > 0 (%)")
    axes[0][0].legend(fontsize=6)
    figure.tight_layout()
    figure.savefig(out / "radius_gradient_sign.png", dpi=110)
    plt.close(figure)


def write_study_report(results: dict[str, Any], out: Path, findings: str | None = None) -> None:
    """Writes ``results.json``, ``results.md`` and the plots to ``out``.

    ``findings``: text placed under the introduction (default: ``findings.md`` next to
    the results, if it exists: the written interpretation, kept with the data).
    """
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=1))
    rows = summarize_study(results)
    if findings is None:
        path = out / "findings.md"
        findings = path.read_text() if path.exists() else ""
    (out / "results.md").write_text(_markdown(results, rows, findings))
    _plots(results, rows, out)


def _load_study_config(path: str) -> RegimeStudyConfig:
    import importlib.util

    spec = importlib.util.spec_from_file_location("ftp_regime_config", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"--config {path}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config()
    if not isinstance(config, RegimeStudyConfig):
        raise SystemExit(f"--config {path}: get_config() must return a RegimeStudyConfig")
    return config


def default_study_config() -> RegimeStudyConfig:
    """The committed study: k in {0, 0.1, 0.5, 1} x batch {16, 64, 256} x {4, 16, 50} epochs.

    Not a full grid (it must run on 2 CPU cores in well under an hour): every k
    at batch 64 for 16 epochs; k in {0, 1} (and vanilla) at batch 64 for 4 and 50
    epochs and for 16 epochs at batch 16 and 256; batch 64 for 16 epochs without
    momentum at lr 0.1 (the same effective step as momentum 0.9 at lr 0.01) for
    vanilla and k=1. Two seeds each, one for the 50-epoch cell.
    """
    from ftp_jax.experiment.config import renditions_config

    ends = (0.0, 1.0)
    cells = (
        Cell(64, 16),
        Cell(64, 4, ks=ends),
        Cell(64, 50, ks=ends, seeds=(0,)),
        Cell(16, 16, ks=ends),
        Cell(256, 16, ks=ends),
        Cell(64, 16, learning_rate=0.1, momentum=0.0, nesterov=False, ks=(1.0,)),
    )
    return RegimeStudyConfig(experiment=renditions_config(), cells=cells)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ftp_jax.experiment.regime_study", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--config", help="a file whose get_config() returns a RegimeStudyConfig")
    parser.add_argument("--workdir", default="runs/ftp_regime")
    parser.add_argument("--workers", type=int, default=0, help="0: one per available core")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument(
        "--report-only", action="store_true", help="rewrite the report from results.json"
    )
    args = parser.parse_args(argv)
    study = _load_study_config(args.config) if args.config else default_study_config()
    if args.workers:
        study = dataclasses.replace(study, workers=args.workers)
    out = Path(args.workdir) / "results"
    if args.report_only:
        write_study_report(json.loads((out / "results.json").read_text()), out)
    else:
        run_study(study, args.workdir, progress=not args.no_progress)
    print((out / "results.md").read_text())
    return 0


if __name__ == "__main__":
    # The worker processes unpickle this module's classes by its import name, not __main__.
    from ftp_jax.experiment.regime_study import main as _main

    sys.exit(_main())
