"""Runs an experiment: prepare data, pre-train (cached), fine-tune, tune, WiSE-FT, report."""

from __future__ import annotations

import dataclasses
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import tensorflow_datasets as tfds
from flax import nnx

import ftp_jax
from ftp_jax import data
from ftp_jax.experiment.config import ExperimentConfig, MethodRun, Regime, validate
from ftp_jax.experiment.report import write_report
from ftp_jax.experiment.workers import (
    Interrupted,
    Job,
    default_workers,
    interrupted_exit,
    run_jobs,
)
from ftp_jax.models import SmallCNN, replace_head, with_compute_dtype
from ftp_jax.train import fit
from ftp_jax.train.loop import ArrayTrainData, EvalSet, evaluate, restore_best
from ftp_jax.train.steps import make_eval_step, split_model
from ftp_jax.train.workdir_lock import holds_workdir_lock

__all__ = ["run_experiment", "slug", "wise_ft_label", "wise_ft_sweep", "wise_ft_tuned_label"]

PRETRAIN_SEED = 1234


def slug(label: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", label.lower()).strip("_")


def wise_ft_label(alpha: float, source: str) -> str:
    """The table row of WiSE-FT at ``alpha`` over the ``source`` row's models."""
    return f"WiSE-FT α={alpha:g}, {source}"


def wise_ft_tuned_label(source: str) -> str:
    """The table row of WiSE-FT over ``source`` with alpha chosen on validation."""
    return f"WiSE-FT, {source}"


def _arrays(name: str, split: str, data_dir: Path, limit: int = 0):
    """A split as float images in [0, 1] and int32 labels; its first ``limit`` examples."""
    if limit and "[" not in split:  # read only those (a sliced split is read whole)
        split = f"{split}[:{limit}]"
    images, labels = data.load_arrays(name, split, data_dir)
    if limit:
        images, labels = images[:limit], labels[:limit]
    return images.astype(np.float32) / 255.0, labels.astype(np.int32)


def _evalset(name: str, split: str, data_dir: Path, limit: int = 0) -> EvalSet:
    images, labels = _arrays(name, split, data_dir, limit)
    return EvalSet(name if split == "test" else f"{name}:{split}", images, labels)


def _concatenated(names: tuple[str, ...], split: str, data_dir: Path, limit: int = 0):
    """The ``split`` of every dataset in ``names``, concatenated (``limit`` split evenly)."""
    each = -(-limit // len(names)) if limit else 0
    parts = [_arrays(name, split, data_dir, each) for name in names]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


class _TimedTrainData:
    """Training batches that time the loop's work on each one: its steps/s, compile excluded.

    The loop asks for a batch, runs the step on it (TPGM's projection update
    included) and waits for it (``fit``'s ``after_step``), then asks for the next: the time between
    handing out a batch and the next request is that step's. The first step of
    each ``fit`` call (compilation) is left out; evaluation and checkpoints run
    between epochs, outside the batches, and are not counted.
    """

    def __init__(self, inner: ArrayTrainData):
        self.inner = inner
        self.steps_per_epoch = inner.steps_per_epoch
        self.durations: list[float] = []
        self._compiled = False

    def batches(self, seed: int, epoch: int, start: int) -> Iterator[dict[str, np.ndarray]]:
        for batch in self.inner.batches(seed, epoch, start):
            handed_out = time.perf_counter()
            yield batch
            if self._compiled:
                self.durations.append(time.perf_counter() - handed_out)
            self._compiled = True

    def speed(self) -> dict[str, float]:
        """Steps timed, their total seconds and the median step's (robust to other jobs)."""
        return {
            "steps": len(self.durations),
            "seconds": float(np.sum(self.durations)),
            "median_step_seconds": float(np.median(self.durations)),
        }


def _model(config: ExperimentConfig) -> SmallCNN:
    return SmallCNN(channels=config.channels, rngs=nnx.Rngs(PRETRAIN_SEED))


def _finetuning_model(
    config: ExperimentConfig, seed: int, pretrain_dir: Path, pretrained_head: bool = False
) -> SmallCNN:
    """The pre-trained model with the new head of ``seed`` (or its own head).

    What every fine-tuning starts from.
    """
    model = restore_best(_model(config), pretrain_dir)
    if not pretrained_head:
        model = replace_head(model, 10, rngs=nnx.Rngs(seed + 1000))
    # The restored backbone arrays are committed to a device, the new head's are not:
    # ``fit``'s first jitted step would compile for that mix, then again for its own
    # (committed) outputs. Uncommitted copies of everything: one compile per run.
    state = nnx.state(model)
    nnx.update(model, jax.tree_util.tree_map(lambda x: jnp.asarray(np.asarray(x)), state))
    return model


def _regime_dir(config: ExperimentConfig, regime: Regime) -> str:
    """``finetune`` (one regime: the digits experiment's layout) or ``finetune/p<percent>``."""
    return "finetune" if len(config.regimes) == 1 else f"finetune/p{regime.percent}"


def _setting_dir(row: MethodRun, value: float | None) -> str:
    return "" if value is None else f"{row.tune}_{value:g}"


def _run_dir(config, regime, row, value, seed) -> str:
    parts = [_regime_dir(config, regime), slug(row.label), _setting_dir(row, value), f"seed{seed}"]
    return "/".join(part for part in parts if part)


@dataclasses.dataclass
class _Stage:
    """What every fine-tuning run of one regime shares."""

    config: ExperimentConfig
    regime: Regime
    workdir: Path
    id_train: tuple[np.ndarray, np.ndarray]
    id_val: EvalSet
    tests: list[EvalSet]
    progress: bool

    def run(self, row: MethodRun, value: float | None, seed: int) -> dict[str, Any]:
        finetune = self.config.regime_finetune(self.regime)
        method = row.method if value is None else row.with_setting(value, finetune.epochs)
        run_config = dataclasses.replace(finetune, method=method, seed=seed, progress=self.progress)
        relative = _run_dir(self.config, self.regime, row, value, seed)
        run_dir = self.workdir / relative
        train = _TimedTrainData(ArrayTrainData(*self.id_train, run_config.batch_size))
        started = time.perf_counter()
        model = _finetuning_model(self.config, seed, self.workdir / "pretrain", row.pretrained_head)
        # Each step waits for the device, so that the time between batches is the step's
        # (the loop alone dispatches ahead without waiting).
        result = fit(
            model,
            run_config,
            train,
            self.id_val,
            self.tests,
            run_dir,
            after_step=jax.block_until_ready,
        )
        speed_path = run_dir / "speed.json"
        if train.durations:  # trained now (not a finished run read back): record the speed
            speed = {**train.speed(), "fit_seconds": time.perf_counter() - started}
            speed_path.write_text(json.dumps(speed))
        else:
            speed = json.loads(speed_path.read_text()) if speed_path.exists() else None
        return {
            "label": row.label,
            "regime": self.regime.percent,
            "seed": seed,
            "setting": {} if value is None else {row.tune: value},
            "workdir": relative,
            **result.to_json(),
            "speed": speed,
        }


def _load_stage(
    config: ExperimentConfig, regime: Regime, workdir: Path, data_dir: Path, progress: bool
) -> _Stage:
    """The data of one regime's runs: its share of the ID train split, validation, tests."""
    evals = config.eval_subset
    id_split = data.percent_split("train", regime.percent)
    id_train = _arrays(config.id_dataset, id_split, data_dir, config.train_subset)
    id_val = _evalset(config.id_dataset, "validation", data_dir, evals)
    tests = [_evalset(config.id_dataset, "test", data_dir, evals)]
    tests += [_evalset(name, split, data_dir, evals) for name, split in config.ood_datasets]
    return _Stage(config, regime, workdir, id_train, id_val, tests, progress)


@dataclasses.dataclass(frozen=True)
class _Runner:
    """Runs jobs in a worker process (picklable; called there once, returns the runner)."""

    config: ExperimentConfig
    workdir: str
    data_dir: str

    def __call__(self):
        config, workdir, data_dir = self.config, Path(self.workdir), Path(self.data_dir)
        if config.compilation_cache:
            _enable_compilation_cache(workdir / "jax_cache")
        from ftp_jax import cli

        cli.quiet(progress=False)
        regimes = {regime.percent: regime for regime in config.regimes}
        stages: dict[int, _Stage] = {}

        def run(job: Job) -> dict[str, Any]:
            if job.regime not in stages:
                stages[job.regime] = _load_stage(
                    config, regimes[job.regime], workdir, data_dir, progress=False
                )
            return stages[job.regime].run(_row(config, job), job.value, job.seed)

        return run


def _rows_of(config: ExperimentConfig, regime: Regime) -> list[MethodRun]:
    return [row for row in config.methods if row.runs_in(regime.percent)]


def _row(config: ExperimentConfig, job: Job) -> MethodRun:
    """The row a job runs (labels are unique within a regime)."""
    return next(r for r in config.methods if r.label == job.label and r.runs_in(job.regime))


def _job_cost(config: ExperimentConfig, job: Job) -> float:
    """About how long a job takes, relative to the others: examples seen (TPGM: twice)."""
    regime = next(r for r in config.regimes if r.percent == job.regime)
    row = _row(config, job)
    finetune = config.regime_finetune(regime)
    cost = finetune.epochs * regime.percent
    return cost * (2.0 if row.method.name == "tpgm" else 1.0)


def plan_jobs(config: ExperimentConfig) -> tuple[list[Job], int]:
    """The runs that can start at once (every untuned run and every tuning trial), largest
    first, and the number of runs in all (the tuned rows' other seeds included)."""
    first, total = [], 0
    for regime in config.regimes:
        for row in _rows_of(config, regime):
            if not row.tune:
                first += [Job(regime.percent, row.label, None, seed) for seed in config.seeds]
                total += len(config.seeds)
                continue
            trials = [
                Job(regime.percent, row.label, value, seed)
                for value in row.grid
                for seed in config.tune_seeds
            ]
            first += trials
            total += len(trials) + len(set(config.seeds) - set(config.tune_seeds))
    first.sort(key=lambda job: -_job_cost(config, job))  # stable: config order among equals
    return first, total


def _row_runs(
    config: ExperimentConfig, row: MethodRun, regime: Regime, done: dict[Job, dict[str, Any]]
) -> list[dict[str, Any]]:
    """``row``'s runs in ``regime``, those the table reports (``selected``) first, in seed
    order; a tuned row's other trials after them."""
    seeds = config.seeds
    if not row.tune:
        return [{**done[Job(regime.percent, row.label, None, s)], "selected": True} for s in seeds]
    trials = [
        done[Job(regime.percent, row.label, value, seed)]
        for value in row.grid
        for seed in config.tune_seeds
    ]
    chosen = _choose(trials, row.tune, row.grid)
    rest = [
        done[Job(regime.percent, row.label, chosen, s)]
        for s in seeds
        if s not in config.tune_seeds
    ]
    runs = [dict(run) for run in trials + rest]
    for run in runs:
        run["selected"] = run["setting"][row.tune] == chosen
    order = {seed: index for index, seed in enumerate(seeds)}
    selected = sorted((r for r in runs if r["selected"]), key=lambda r: order[r["seed"]])
    return selected + [r for r in runs if not r["selected"]]


def _resume_note(workdir: Path, relative: str) -> str:
    """`` (finished earlier)``, `` (resumes at step N)`` or nothing, for a run's progress line."""
    run_dir = workdir / relative
    if (run_dir / "result.json").exists():
        return " (finished earlier: read back)"
    checkpoints = run_dir / "checkpoints"
    steps = [int(p.name) for p in checkpoints.iterdir() if p.name.isdigit()] if (
        checkpoints.is_dir()
    ) else []
    return f" (resumes at step {max(steps)})" if steps else ""


def finetune_all(
    config: ExperimentConfig,
    workdir: Path,
    data_dir: Path,
    *,
    workers: int,
    progress: bool = True,
) -> dict[Job, dict[str, Any]]:
    """Every fine-tuning run of every regime, on ``workers`` processes (see ``workers.py``).

    Tuned rows try each grid value on ``tune_seeds``, keep the value with the best
    mean validation accuracy (the first on ties), and run it on the other seeds.
    ``config`` has passed :func:`~ftp_jax.experiment.config.validate` (as
    :func:`run_experiment` makes sure): two grid values never give the same run.
    """
    first, total = plan_jobs(config)
    regimes = {regime.percent: regime for regime in config.regimes}
    trials_left: dict[tuple[int, str], int] = {}
    for job in first:
        if job.value is not None:
            key = (job.regime, job.label)
            trials_left[key] = trials_left.get(key, 0) + 1
    finished_runs: dict[Job, dict[str, Any]] = {}

    def then(job: Job, run: dict[str, Any]) -> list[Job]:
        finished_runs[job] = run
        if job.value is None or job.seed not in config.tune_seeds:
            return []
        key = (job.regime, job.label)
        trials_left[key] -= 1
        if trials_left[key]:
            return []
        row = _row(config, job)
        trials = [
            finished_runs[Job(job.regime, job.label, value, seed)]
            for value in row.grid
            for seed in config.tune_seeds
        ]
        chosen = _choose(trials, row.tune, row.grid)
        return [
            Job(job.regime, job.label, chosen, seed)
            for seed in config.seeds
            if seed not in config.tune_seeds
        ]

    def relative(job: Job) -> str:
        return _run_dir(config, regimes[job.regime], _row(config, job), job.value, job.seed)

    def started(job: Job, index: int, count: int) -> None:
        if progress:
            note = _resume_note(workdir, relative(job))
            print(f"[{index}/{count}] {job.describe(_row(config, job).tune)}{note}", flush=True)

    def finished(job: Job, run: dict[str, Any], index: int, count: int) -> None:
        if progress:
            _print_run(run, run_index=f"[done {index}/{count}] ")

    runner = _Runner(config, str(workdir), str(data_dir))
    try:
        return run_jobs(
            first,
            runner,
            workers=workers,
            then=then,
            started=started,
            finished=finished,
            total=total,
        )
    except Interrupted as error:
        raise interrupted_exit(error) from None


def _choose(trials: list[dict[str, Any]], name: str, grid: tuple[float, ...]) -> float:
    """The grid value whose trials have the best mean validation accuracy (first on ties)."""
    scores = [
        np.mean([t["validation"]["accuracy"] for t in trials if t["setting"][name] == value])
        for value in grid
    ]
    return grid[int(np.argmax(scores))]


def wise_ft_sweep(
    config: ExperimentConfig,
    workdir: Path,
    regime: Regime,
    runs: list[dict[str, Any]],
    validation: EvalSet,
    tests: list[EvalSet],
    *,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """WiSE-FT of every ``config.wise_ft_sources`` row of ``regime``: for each seed, its
    fine-tuned model (the selected epoch) interpolated with the pre-trained weights at
    every alpha of ``config.wise_ft_alphas``, evaluated on the same sets as a run.

    A new head has no pre-trained value: it is excluded from the interpolation and
    keeps its fine-tuned weights. A row fine-tuned from the pre-trained head
    interpolates the head too (alpha = 0 is then the pre-trained model itself).
    Evaluation only (no training, not cached): about a second per model; alpha = 1
    is the source run itself, copied. With ``config.wise_ft_tune``, also one
    ``wise_ft_tuned_label(source)`` row per source: the alpha with the best mean
    validation accuracy on ``tune_seeds``, on every seed.

    Returns:
      One run record per (source, alpha, seed), in the format of the fine-tuning
      runs, with ``wise_ft_alpha`` and ``wise_ft_source`` added; then the tuned rows.
    """
    if not config.wise_ft_alphas:
        return []
    pretrain_dir = workdir / "pretrain"
    _, anchor, _ = split_model(restore_best(_model(config), pretrain_dir))
    batch_size = config.finetune.eval_batch_size
    eval_step = None
    out = []
    for source in config.wise_ft_sources:
        row = next(r for r in _rows_of(config, regime) if r.label == source)
        mask = None
        if not row.pretrained_head:
            mask = ftp_jax.path_rules(
                [(row.method.head_pattern, False), (r".*", True)], name="method.head_pattern"
            )
        curve = {alpha: [] for alpha in config.wise_ft_alphas}
        for seed in config.seeds:
            source_run = next(
                r
                for r in runs
                if r["label"] == source
                and r["seed"] == seed
                and r["regime"] == regime.percent
                and r.get("selected", True)
            )
            model = restore_best(
                _finetuning_model(config, seed, pretrain_dir, row.pretrained_head),
                workdir / source_run["workdir"],
            )
            model = with_compute_dtype(model, config.finetune.compute_dtype)
            graphdef, finetuned, model_state = split_model(model)
            if eval_step is None:  # the same graph for every seed and alpha: one compile
                eval_step = jax.jit(make_eval_step(graphdef))
            for alpha in config.wise_ft_alphas:
                run = {
                    key: source_run[key]
                    for key in ("regime", "seed", "best_epoch", "skipped_steps", "steps", "speed")
                }
                if alpha == 1.0:  # exactly the fine-tuned model
                    evaluated = {
                        "validation": source_run["validation"],
                        "tests": source_run["tests"],
                    }
                else:
                    params = ftp_jax.wise_ft(anchor, finetuned, alpha, mask=mask)
                    evaluated = {
                        "validation": evaluate(
                            eval_step, params, model_state, validation, batch_size
                        ),
                        "tests": {
                            s.name: evaluate(eval_step, params, model_state, s, batch_size)
                            for s in tests
                        },
                    }
                run.update(
                    label=wise_ft_label(alpha, source),
                    setting={"alpha": float(alpha)},
                    history=[],
                    wise_ft_alpha=float(alpha),
                    wise_ft_source=source,
                    **evaluated,
                )
                curve[alpha].append(run)
                if progress:
                    _print_run(run)
        out += [run for alpha in config.wise_ft_alphas for run in curve[alpha]]
    tuned = []
    for source in config.wise_ft_sources if config.wise_ft_tune else ():
        curve = [r for r in out if r["wise_ft_source"] == source]
        trials = [r for r in curve if r["seed"] in config.tune_seeds]
        chosen = _choose(trials, "alpha", config.wise_ft_alphas)
        for run in curve:
            if run["wise_ft_alpha"] == chosen:
                row = {**run, "label": wise_ft_tuned_label(source), "selected": True}
                del row["wise_ft_alpha"]
                tuned.append(row)
    return out + tuned


def _print_run(run: dict[str, Any], run_index: str = "") -> None:
    tests = run["tests"]
    names = list(tests)
    ood = np.mean([tests[name]["accuracy"] for name in names[1:]]) if len(names) > 1 else np.nan
    setting = "".join(f" {k}={v:g}" for k, v in run.get("setting", {}).items())
    print(
        f"{run_index}[{run['regime']}%] {run['label']}{setting} seed {run['seed']}: "
        f"ID {tests[names[0]]['accuracy']:.3f}  OOD avg {ood:.3f}  "
        f"(best epoch {run['best_epoch']})",
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
        if "timings" in previous:  # the stages' times of that first run, too
            results["timings"] = previous["timings"]


def _enable_compilation_cache(path: Path) -> None:
    """XLA's persistent compilation cache in ``path``: every compiled step is kept."""
    path.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def _datasets(config: ExperimentConfig) -> tuple[str, ...]:
    names = (*config.pretrain_datasets, config.id_dataset, *(n for n, _ in config.ood_datasets))
    return tuple(dict.fromkeys(names))


@dataclasses.dataclass
class Prepared:
    """What stage 1 leaves for the fine-tuning runs."""

    data_dir: Path
    tests: list[EvalSet]  # the ID test set, then the OOD sets
    pretrained: Any  # the pre-training run's FitResult
    pretrain_train_examples: int
    timings: dict[str, float]


def prepare_and_pretrain(config: ExperimentConfig, workdir: Path, *, progress: bool) -> Prepared:
    """Stage 1: the data prepared (offline) and the model pre-trained (cached in
    ``<workdir>/pretrain``: a finished run is reused)."""
    started = time.perf_counter()
    if config.compilation_cache:
        _enable_compilation_cache(workdir / "jax_cache")
    data_dir = Path(config.data_dir) if config.data_dir else workdir / "data"
    tfds.display_progress_bar(progress)
    data.prepare_datasets(data_dir, _datasets(config))
    limit = config.train_subset
    timings = {"data": time.perf_counter() - started}
    sources = config.pretrain_datasets
    source_train = _concatenated(sources, "train", data_dir, limit)
    evals = config.eval_subset
    source_val = EvalSet(
        f"{sources[0]}:validation" if len(sources) == 1 else "pretrain:validation",
        *_concatenated(sources, "validation", data_dir, evals),
    )
    pretrain_config = dataclasses.replace(config.pretrain, seed=PRETRAIN_SEED, progress=progress)
    id_test = _evalset(config.id_dataset, "test", data_dir, evals)
    ood_sets = [_evalset(name, split, data_dir, evals) for name, split in config.ood_datasets]
    tests = [id_test, *ood_sets]
    stage_started = time.perf_counter()
    pretrained = fit(
        _model(config),
        pretrain_config,
        ArrayTrainData(*source_train, pretrain_config.batch_size),
        source_val,
        tests,
        workdir / "pretrain",
    )
    timings["pretrain"] = time.perf_counter() - stage_started
    return Prepared(data_dir, tests, pretrained, int(len(source_train[1])), timings)


@holds_workdir_lock  # one run at a time in a work directory (exit 4 for a second)
def run_experiment(
    config: ExperimentConfig,
    workdir: str | Path,
    *,
    progress: bool = True,
    workers: int | None = None,
) -> dict[str, Any]:
    """Runs every stage in ``workdir`` (resuming what is there) and writes the report.

    Args:
      workers: fine-tuning runs in parallel (worker processes, one XLA thread each);
        ``None``: one per available core. Any count gives the same numbers.

    Returns the results dict also written to ``<workdir>/results/results.json``.
    """
    if workers is None:
        workers = default_workers()
    validate(config)  # every derived setting, before data preparation and pre-training
    started = time.perf_counter()
    workdir = Path(workdir)
    prepared = prepare_and_pretrain(config, workdir, progress=progress)
    data_dir, tests, pretrained = prepared.data_dir, prepared.tests, prepared.pretrained
    id_test, ood_sets = tests[0], tests[1:]
    limit, evals = config.train_subset, config.eval_subset
    timings = dict(prepared.timings)

    # Stage 2: every method (and grid value), seed and regime on the ID train split, the
    # independent runs in parallel worker processes.
    stage_started = time.perf_counter()
    done = finetune_all(config, workdir, data_dir, workers=workers, progress=progress)
    timings["finetune"] = time.perf_counter() - stage_started
    id_val = _evalset(config.id_dataset, "validation", data_dir, evals)
    runs, id_train_examples = [], {}
    stage_started = time.perf_counter()
    for regime in config.regimes:
        id_split = data.percent_split("train", regime.percent)
        id_train_examples[regime.percent] = len(
            _arrays(config.id_dataset, id_split, data_dir, limit)[1]
        )
        regime_runs = [
            run for row in _rows_of(config, regime) for run in _row_runs(config, row, regime, done)
        ]
        # Stage 3: WiSE-FT, weight-space ensembles of fine-tuned models (no training).
        regime_runs += wise_ft_sweep(
            config, workdir, regime, regime_runs, id_val, tests, progress=progress
        )
        runs += regime_runs
    timings["WiSE-FT"] = time.perf_counter() - stage_started
    results = {
        "config": dataclasses.asdict(config),
        "id_test": id_test.name,
        "ood_sets": [s.name for s in ood_sets],
        "id_train_examples": id_train_examples,
        "pretrain_train_examples": prepared.pretrain_train_examples,
        "pretrained": {"validation": pretrained.validation, "tests": pretrained.tests},
        "runs": runs,
        "timings": timings,
        "seconds": time.perf_counter() - started,
    }
    samples = {s.name: (s.images, s.labels) for s in tests}
    results_dir = workdir / "results"
    _keep_first_time(results, results_dir / "results.json")
    write_report(results, results_dir, samples=samples)
    return json.loads((results_dir / "results.json").read_text())
