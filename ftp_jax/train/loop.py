"""``fit``: fine-tune a model with any method, select the best epoch, resume exactly.

The loop is host-side Python around jitted pure steps (``steps.py``): epochs of
training batches (with held-out batches for the methods that ask for them, see
:class:`ftp_jax.train.methods.Method`), evaluation on the ID validation
split after every epoch, best-epoch selection on it (as the reference does), and
the test/OOD numbers of the selected epoch at the end. Metrics go to
``<workdir>/metrics.jsonl``; checkpoints to ``<workdir>/checkpoints``; the final
numbers to ``<workdir>/result.json``. A run started again in the same work
directory resumes from its last checkpoint and ends bit-identical to an
uninterrupted run; a finished run returns its stored result. A run records what
data it was given (:func:`data_identity`) and refuses a work directory whose run
had other data, as it refuses one of another config. SIGTERM and Ctrl-C save a
checkpoint and stop the run wherever they land (a step, evaluation, the final
numbers); on several hosts all of them save and stop at one step they agree on
(:mod:`ftp_jax.train.preemption`). A run holds its work directory's lock
(:mod:`ftp_jax.train.workdir_lock`): a second run there stops at once.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import functools
import hashlib
import json
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ftp_jax._diskspace import writing
from ftp_jax.models.precision import with_compute_dtype
from ftp_jax.train.checkpoint import Checkpointer, CheckpointMismatchError, differences, fingerprint
from ftp_jax.train.config import TrainConfig
from ftp_jax.train.evaluation import distances, evaluate, heldout_batches, next_heldout, radii
from ftp_jax.train.inputs import (
    ArrayTrainData,
    EvalData,
    EvalSet,
    SourceEvalSet,
    SourceTrainData,
    TrainData,
)
from ftp_jax.train.methods import build_method
from ftp_jax.train.placement import Placement, is_primary_host
from ftp_jax.train.preemption import Interrupt
from ftp_jax.train.run_log import (
    EventLog,
    pinned_leaves,
    pinned_message,
    radius_gradient_record,
    radius_gradient_sums,
)
from ftp_jax.train.steps import (
    TrainState,
    initial_train_state,
    make_eval_step,
    make_heldout_loss,
    make_train_step,
    split_model,
)
from ftp_jax.train.workdir_lock import workdir_lock

__all__ = [
    "ArrayTrainData",
    "EvalData",
    "EvalSet",
    "FitResult",
    "SourceEvalSet",
    "SourceTrainData",
    "TrainData",
    "data_identity",
    "evaluate",
    "fit",
    "restore_best",
]

PyTree = Any


@dataclasses.dataclass
class FitResult:
    """The outcome of :func:`fit`."""

    best_epoch: int  # 1-based epoch selected on the validation split
    validation: dict[str, float]  # loss and accuracy of the selected epoch
    tests: dict[str, dict[str, float]]  # per test/OOD set, of the selected epoch
    history: list[dict[str, Any]]  # one record per epoch
    skipped_steps: int  # steps skipped for a non-finite loss or gradient
    steps: int  # optimizer steps taken
    # Leaves whose learned radius sat at its floor most of the run (leaf -> first step
    # there): held at their pre-trained values (ftp_jax.train.run_log.pinned_leaves).
    pinned: dict[str, int] = dataclasses.field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@jax.jit
def _copy_tree(tree: PyTree) -> PyTree:
    """New buffers holding ``tree``'s values (one compiled copy for the whole tree)."""
    return jax.tree_util.tree_map(jnp.copy, tree)


class _Metrics:
    """Appends JSON lines to ``metrics.jsonl``; on resume drops lines past the checkpoint
    (and a result line: a resumed run writes its result again).

    Only the primary host writes (all hosts share the work directory).
    """

    def __init__(self, path: Path, resume_step: int | None):
        self.path = path
        self.enabled = is_primary_host()
        if not self.enabled:
            return
        with writing(path.parent, "the metrics"):
            if resume_step is None:
                path.write_text("")
            elif path.exists():
                lines = [line for line in path.read_text().splitlines() if line]
                kept = [
                    line
                    for line, record in zip(lines, map(json.loads, lines), strict=True)
                    if record["step"] <= resume_step and record.get("event") != "result"
                ]
                path.write_text("".join(line + "\n" for line in kept))

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with writing(self.path.parent, "the metrics"), self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")


def fit(
    model: nnx.Module,
    config: TrainConfig,
    train: TrainData,
    validation: EvalData,
    tests: Sequence[EvalData],
    workdir: str | Path,
    *,
    heldout: EvalData | None = None,
    stop_after_steps: int | None = None,
    after_step: Callable[[TrainState], Any] | None = None,
    mesh: jax.sharding.Mesh | None = None,
    shard_params: bool = False,
    row_axes: Any = None,
) -> FitResult:
    """Fine-tunes ``model`` with ``config.method`` and returns the selected epoch's numbers.

    Args:
      model: the NNX model, pre-trained weights loaded and a fresh head attached.
        Its params at entry are the anchor (FTP, TPGM) and the distance reference.
      config: the run's configuration; ``config.compute_dtype`` (e.g. ``"bfloat16"``)
        is applied to a copy of ``model`` (:func:`ftp_jax.models.with_compute_dtype`).
      train: training batches (e.g. :class:`ArrayTrainData`). Batch k + 1 is put on
        the device while step k runs. If ``train.normalization`` is ``(mean, std)``
        (a transform with ``output="uint8"``), the steps normalize ``uint8`` images
        with it on the device; evaluation sets must have the same or none.
      validation: the ID validation split: best-epoch selection.
      tests: ID test and OOD sets, evaluated with the selected epoch's params.
      workdir: where metrics, checkpoints and the result go; a run started again
        in the same directory resumes.
      heldout: TPGM's held-out data (default: ``validation``, as the reference).
      stop_after_steps: stop (after checkpointing) once this many steps are done,
        as if interrupted; for tests of resumption.
      after_step: called with the state after every step, e.g.
        ``jax.block_until_ready`` to time steps one by one. The loop itself does not
        wait for the device between steps (JAX dispatches asynchronously); such a
        hook makes it wait.
      mesh: data-parallel training over this mesh's ``"data"`` axis: every batch is
        split over it, the state is replicated (``jax.sharding``; the jitted steps
        are the same functions, partitioned by XLA). ``None``: one device.
        Build one over all devices with
        ``jax.make_mesh((jax.device_count(),), ("data",))``. On several hosts
        (after ``jax.distributed.initialize()``), each host's ``train`` yields its
        own rows of every global batch (see :class:`SourceTrainData`'s ``shard``).
      shard_params: with a mesh, also shard the params and every optimizer-state
        buffer of the same shape (FTP's anchor and previous displacement, Adam's
        moments) over the ``"data"`` axis, ZeRO-3 style: each array's largest
        axis that divides by the device count is split, others replicated.
      row_axes: FTP/TPGM/MARS-PGM rows (default :data:`ftp_jax.flax_row_axes`;
        :data:`ftp_jax.models.clip_row_axes` for the CLIP models).

    Returns:
      A :class:`FitResult`; also written to ``<workdir>/result.json``.

    Raises:
      CheckpointMismatchError: the work directory holds another run's checkpoint or
        result (other settings, model or data).
      WorkdirBusyError: another process runs in ``workdir`` now.
      OutOfSpaceError: the disk is full (rerunning after freeing space resumes).
      KeyboardInterrupt, SystemExit(143): Ctrl-C or SIGTERM, after a checkpoint.
    """
    _check_normalization(train, (validation, heldout or validation, *tests))
    workdir = Path(workdir)
    # On several hosts the work directory is shared: the primary host holds the lock.
    lock = workdir_lock(workdir) if is_primary_host() else contextlib.nullcontext()
    with lock:
        run = _Run(model, config, train, validation, heldout or validation, workdir)
        run.setup(mesh, shard_params, row_axes, tests)
        if run.finished is not None:
            return run.finished
        run.start()
        try:
            with Interrupt(run.step) as interrupt:
                while run.progress.epoch < config.epochs:
                    if not run.train_epoch(interrupt, stop_after_steps, after_step):
                        if interrupt.requested:
                            interrupt.stop()
                        return None  # type: ignore[return-value]
                    run.end_epoch(interrupt)
                # A signal from here to the block's end stops the run too (Interrupt).
                return run.result(tests, interrupt)
        finally:
            if sys.exc_info()[0] is None:
                run.close()
            else:  # the error that stopped the run is the one to report (e.g. a full disk)
                with contextlib.suppress(Exception):
                    run.close()


@dataclasses.dataclass
class Progress:
    """Where a run is; saved with every checkpoint (as a dict), restored on resume."""

    epoch: int = 0  # the epoch in progress (0-based)
    batch: int = 0  # batches of it done
    heldout_consumed: int = 0  # held-out batches used so far (they cycle in a fixed order)
    best_accuracy: float = -1.0  # validation accuracy of the best epoch so far
    best_epoch: int = 0  # 1-based; 0 before the first epoch ends
    epoch_sums: dict[str, float] = dataclasses.field(default_factory=lambda: _zero_sums())
    history: list[dict[str, Any]] = dataclasses.field(default_factory=list)  # epoch records
    warned_pinned: bool = False  # the pinned-leaves warning was given


def _zero_sums() -> dict[str, float]:
    return {"loss": 0.0, "correct": 0, "count": 0}


class _Run:
    """One call of :func:`fit`: its jitted steps, state, checkpoints and progress."""

    def __init__(self, model, config, train, validation, heldout, workdir: Path):
        self.config, self.train, self.validation, self.heldout = config, train, validation, heldout
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        model = with_compute_dtype(model, config.compute_dtype)  # float32: as it is
        self.graphdef, self.params, self.model_state = split_model(model)
        # (mean, std) the steps apply to uint8 images on the device (None: float32 batches).
        self.normalization = getattr(train, "normalization", None)
        # A copy: the jitted step donates the state's buffers, the anchor must survive it.
        self.anchor = _copy_tree(self.params)
        self.progress = Progress()
        self.finished: FitResult | None = None

    def setup(self, mesh, shard_params: bool, row_axes: Any, tests: Sequence[EvalData]) -> None:
        """Builds the method and the initial state; a finished run's stored result if any.

        Raises:
          CheckpointMismatchError: the stored result is of the same run on other data.
        """
        config = self.config
        self.placement = Placement(mesh, config.batch_size, config.eval_batch_size, shard_params)
        heldout_loss = make_heldout_loss(self.graphdef, normalization=self.normalization)
        steps_per_epoch = self.train.steps_per_epoch
        self.method = build_method(
            config, self.params, steps_per_epoch, heldout_loss, row_axes=row_axes
        )

        @jax.jit
        def initial_state(params, model_state):
            # One compiled computation: eagerly, every leaf's init ops compile on their own.
            return initial_train_state(
                _copy_tree(params), _copy_tree(model_state), self.method.tx, config.seed
            )

        self.state = initial_state(self.params, self.model_state)
        self.extra = {
            "best_params": _copy_tree(self.params),
            "best_model_state": _copy_tree(self.model_state),
        }
        self.settings = _run_settings(config)
        self.run_id = fingerprint((self.state, self.extra), config=self.settings)
        self.data = data_identity(self.train, self.validation, self.heldout, tests)
        result_path = self.workdir / "result.json"
        if result_path.exists():
            stored = json.loads(result_path.read_text())
            if stored.get("fingerprint") == self.run_id:
                stored.pop("fingerprint")
                _check_data(stored.pop("data", None), self.data, result_path)
                self.finished = FitResult(**stored)

    def start(self) -> None:
        """Places the state, resumes from the last checkpoint, compiles nothing yet."""
        config, placement = self.config, self.placement
        self.checkpointer = Checkpointer(
            self.workdir / "checkpoints", max_to_keep=config.keep_checkpoints
        )
        self.state = placement.replicate(self.state)
        self.extra = placement.replicate(self.extra)
        latest = self.checkpointer.latest_step()
        if latest is not None:
            self.state, self.extra, meta = self.checkpointer.restore(
                latest, self.state, self.extra, self.run_id, self.settings
            )
            _check_data(meta.get("data"), self.data, self.checkpointer.directory / str(latest))
            self.progress = Progress(**meta["progress"])
        self.metrics = _Metrics(self.workdir / "metrics.jsonl", latest)
        self.events = EventLog(self.workdir, latest, config.tensorboard and is_primary_host())
        normalization = self.normalization
        self.train_step = jax.jit(
            make_train_step(
                self.graphdef,
                self.method.tx,
                normalization=normalization,
                radius_gradients=config.log_radius_gradients,
            ),
            donate_argnums=0,
        )
        self.eval_step = jax.jit(make_eval_step(self.graphdef, normalization=normalization))
        # A training source sharded by host yields this host's rows of each batch.
        shard = getattr(self.train, "shard", None)
        self.host_rows = shard is not None and shard[1] > 1
        # The host counts steps (the step increments once per call, skipped or not): no
        # int(state.step) or device_get on the critical path, so the host reads and places
        # the next batches while the device runs the step (JAX dispatches asynchronously).
        self.step = int(self.state.step)
        total = config.epochs * self.train.steps_per_epoch
        self.bar = _progress_bar(
            config.progress and is_primary_host(), total, self.step, config.method.name
        )

    def save(self) -> None:
        meta = {
            "fingerprint": self.run_id,
            "settings": self.settings,  # lets a mismatch name the settings that differ
            "data": self.data,
            "description": dataclasses.asdict(self.config.method),
            "progress": dataclasses.asdict(self.progress),
        }
        self.checkpointer.save(int(self.state.step), self.state, self.extra, meta)

    def train_epoch(self, interrupt, stop_after_steps: int | None, after_step=None) -> bool:
        """The rest of the current epoch; False if the run stops (after a checkpoint)."""
        config, progress, method = self.config, self.progress, self.method
        epoch = progress.epoch
        key = jax.random.fold_in(jax.random.wrap_key_data(self.state.rng), epoch)
        seed = int(jax.random.randint(key, (), 0, np.iinfo(np.int32).max))
        pending = []  # this epoch's step metrics, still on the device
        started = time.perf_counter()
        batches = self.train.batches(seed, epoch, progress.batch)
        place = functools.partial(self.placement.batch, host_rows=self.host_rows)
        for placed in _placed_ahead(batches, place):
            if placed["label"].shape[0] != config.batch_size:
                raise ValueError(
                    f"the global training batch has {placed['label'].shape[0]} rows, not "
                    f"batch_size={config.batch_size}: on {jax.process_count()} hosts each "
                    "must yield only its own rows (SourceTrainData's `shard`)."
                )
            heldout = None
            if method.heldout_every and progress.batch % method.heldout_every == 0:
                heldout = next_heldout(
                    self.heldout, method.heldout_iters, config.batch_size, progress, self.placement
                )
            self.state, step_metrics = self.train_step(self.state, placed, heldout)
            if after_step is not None:
                after_step(self.state)
            pending.append(step_metrics)
            progress.batch += 1
            self.step += 1
            epoch_done = progress.batch == self.train.steps_per_epoch  # its end saves anyway
            every = config.checkpoint_every
            checkpoint = bool(every) and self.step % every == 0 and not epoch_done
            # Every step, on every host (on several hosts: JAX's preemption sync point).
            stop = interrupt.reached(self.step)
            stop = stop or bool(stop_after_steps and self.step >= stop_after_steps)
            if self.bar is not None:
                self.bar.update(1)
                if progress.batch % _BAR_REFRESH_STEPS == 0 or epoch_done:
                    _add_metrics(progress.epoch_sums, pending)  # one host sync per refresh
                    _show(self.bar, progress, epoch, time.perf_counter() - started)
            if checkpoint or stop:
                _add_metrics(progress.epoch_sums, pending)
                self.save()
            if stop:
                return False
        _add_metrics(progress.epoch_sums, pending)
        return True

    def end_epoch(self, interrupt: Interrupt) -> None:
        """Validation, best-epoch selection, the epoch's record and a checkpoint.

        A signal during the validation stops it: the trained epoch is saved
        unevaluated (a rerun evaluates it) and the run stops; one during the
        checkpoint stops the run after it.
        """
        progress, state = self.progress, self.state
        try:
            record = _end_of_epoch(
                state,
                self.eval_step,
                _Stoppable(self.validation, interrupt),
                self.config,
                self.anchor,
                progress,
                self.placement,
            )
        except _Stopped:
            self.save()  # progress.batch == steps_per_epoch: a rerun starts with the evaluation
            interrupt.stop()
        self.metrics.write(record)
        if record["val_accuracy"] > progress.best_accuracy:
            progress.best_accuracy = record["val_accuracy"]
            progress.best_epoch = progress.epoch + 1
            self.extra = {
                "best_params": _copy_tree(state.params),
                "best_model_state": _copy_tree(state.model_state),
            }
        progress.epoch, progress.batch, progress.epoch_sums = progress.epoch + 1, 0, _zero_sums()
        progress.history.append(record)
        self.events.epoch(record)
        pinned = pinned_leaves(progress.history)
        if pinned and not progress.warned_pinned and is_primary_host():
            progress.warned_pinned = True
            warnings.warn(
                pinned_message(pinned, self.config.method.name, progress.epoch), stacklevel=3
            )
        every = self.config.checkpoint_epochs
        if progress.epoch % every == 0 or progress.epoch == self.config.epochs:
            self.save()
        elif interrupt.requested:
            self.save()
        if interrupt.requested:
            interrupt.stop()

    def close(self) -> None:
        """Closes the progress bar, event files and checkpointer, each even if another fails."""
        with contextlib.ExitStack() as stack:
            stack.callback(self.checkpointer.close)
            if hasattr(self, "events"):
                stack.callback(self.events.close)
            if self.bar is not None:
                stack.callback(self.bar.close)

    def result(self, tests: Sequence[EvalData], interrupt: Interrupt) -> FitResult:
        """The selected epoch (after the method's post-hoc step, if any) on every set.

        A signal stops it (the run's last checkpoint has every epoch: a rerun
        computes this from it).
        """
        config, placement, state = self.config, self.placement, self.state
        params, model_state = self.extra["best_params"], self.extra["best_model_state"]
        if interrupt.requested:
            interrupt.stop()
        if self.method.post_hoc_iters:
            params = _post_hoc(
                self.method, params, model_state, self.anchor, self.heldout, config, placement
            )

        def scores(evalset):
            checked = _Stoppable(evalset, interrupt)
            return evaluate(
                self.eval_step, params, model_state, checked, config.eval_batch_size, placement
            )

        try:
            validation = scores(self.validation)
            tested = {s.name: scores(s) for s in tests}
        except _Stopped:
            interrupt.stop()
        result = FitResult(
            best_epoch=self.progress.best_epoch,
            validation=validation,
            tests=tested,
            history=self.progress.history,
            skipped_steps=int(state.skipped_steps),
            steps=int(state.step),
            pinned=pinned_leaves(self.progress.history),
        )
        self.metrics.write({"event": "result", "step": int(state.step), **result.to_json()})
        if is_primary_host():
            path = self.workdir / "result.json"
            stored = {"fingerprint": self.run_id, "data": self.data, **result.to_json()}
            with writing(self.workdir, "the result"):
                path.write_text(json.dumps(stored, indent=1))
        return result


class _Stopped(Exception):
    """An evaluation stopped by a signal (:class:`_Stoppable`)."""


class _Stoppable:
    """``evalset``, whose batches (and reads) raise :class:`_Stopped` once a signal asks the
    run to stop. On several hosts ``interrupt.requested`` changes only at a training
    step (the sync point), so every host evaluates on, in step."""

    def __init__(self, evalset: EvalData, interrupt: Interrupt):
        self._evalset, self._interrupt = evalset, interrupt

    def _check(self) -> None:
        if self._interrupt.requested:
            raise _Stopped

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._evalset, name)
        if name != "read":
            return value

        def read(indices):
            self._check()
            return value(indices)

        return read

    def __len__(self) -> int:
        return len(self._evalset)

    def batches(self, batch_size: int, start: int = 0) -> Iterator[dict[str, np.ndarray]]:
        for batch in self._evalset.batches(batch_size, start):
            self._check()
            yield batch


def data_identity(
    train: TrainData, validation: EvalData, heldout: EvalData, tests: Sequence[EvalData]
) -> dict[str, Any]:
    """What identifies a run's data, cheaply: each set's name, size and a digest.

    In-memory arrays: their count, shape and dtype, a hash of every label and of
    a few evenly spaced images. TFDS sources: the dataset, version, split and
    count (no example is read). ``heldout`` counts only when it is not
    ``validation``. A wrapper with an ``inner`` data object (e.g. a timing
    wrapper) is identified by it.
    """
    identity = {"train": _identity_of(train), "validation": _identity_of(validation)}
    if heldout is not validation:
        identity["heldout"] = _identity_of(heldout)
    identity["tests"] = {
        str(getattr(evalset, "name", index)): _identity_of(evalset)
        for index, evalset in enumerate(tests)
    }
    return identity


_SAMPLED_EXAMPLES = 8  # images hashed per set (every label is)


def _identity_of(data: Any) -> dict[str, Any]:
    while getattr(data, "inner", None) is not None and not hasattr(data, "images"):
        data = data.inner
    out: dict[str, Any] = {}
    name = getattr(data, "name", None)
    if isinstance(name, str):
        out["name"] = name
    images, labels = getattr(data, "images", None), getattr(data, "labels", None)
    if images is not None and labels is not None:
        images, labels = np.asarray(images), np.asarray(labels)
        count = len(labels)
        rows = np.unique(np.linspace(0, count - 1, _SAMPLED_EXAMPLES).astype(np.int64))
        out.update(
            count=count,
            images=f"{images.shape} {images.dtype} {_digest(images[rows])}",
            labels=f"{labels.dtype} {_digest(labels)}",
        )
    source = getattr(data, "source", None)
    if source is not None:
        info = getattr(source, "info", None)
        out.update(
            dataset=str(getattr(source, "name", getattr(info, "name", type(source).__name__))),
            version=str(getattr(info, "version", "")),
            split=str(getattr(source, "split", "")),
            count=len(source),
        )
    subset = getattr(data, "class_subset", None)
    if subset is not None:
        out["class_subset"] = _digest(np.asarray(subset))
    if "count" not in out:
        with contextlib.suppress(TypeError):
            out["count"] = len(data)
    return out


def _digest(array: np.ndarray) -> str:
    array = np.ascontiguousarray(array)
    return hashlib.sha256(array.tobytes()).hexdigest()[:16]


def _check_data(stored: dict[str, Any] | None, current: dict[str, Any], where: Path) -> None:
    """Refuses a stored run of other data (a record without data, from before data was
    recorded, is taken as it is)."""
    if stored is None or stored == json.loads(json.dumps(current)):
        return
    changed = differences({"data": stored}, {"data": current}, missing="absent")
    raise CheckpointMismatchError(
        f"{where} belongs to a run on other data: {'; '.join(changed) or 'its data differs'}. "
        "Give this run another work directory, or move this one aside to start over."
    )


def _placed_ahead(
    batches: Iterable[dict[str, np.ndarray]], place: Callable[[dict], dict], depth: int = 2
) -> Iterator[dict[str, jax.Array]]:
    """``place(batch)`` of every batch, placing batch k + 1 while step k runs (double buffering).

    ``place`` starts an asynchronous host-to-device copy; a queue of ``depth``
    placed batches means that when step k is dispatched, batch k + 1 is already
    on its way to the device, and batch k + 2 is read (by the input pipeline's
    workers) while step k runs. The batches and their order are unchanged.
    """
    queue: collections.deque = collections.deque()
    for batch in batches:
        queue.append(place(batch))
        if len(queue) == depth:
            yield queue.popleft()
    while queue:
        yield queue.popleft()


def _check_normalization(train: TrainData, evalsets: Sequence[EvalData]) -> None:
    """Raises when an evaluation set's ``uint8`` images need another normalization than the
    training data's: the steps apply one, the training data's."""
    expected = getattr(train, "normalization", None)
    for evalset in evalsets:
        found = getattr(evalset, "normalization", None)
        if found is not None and found != expected:
            raise ValueError(
                f"eval set {getattr(evalset, 'name', '?')!r} has normalization {found} but the "
                f"training data has {expected}; the steps normalize uint8 images with the "
                "training data's (mean, std): build every transform with the same mean, std "
                "and output."
            )


def _run_settings(config: TrainConfig) -> dict[str, Any]:
    """The settings that identify a run: those that differ from their defaults.

    Only non-default values enter the fingerprint, so that a field added to the
    config later (with a default that keeps the old behaviour) does not make
    existing work directories unreadable. Fields that do not change the
    numbers (progress bars, checkpoint cadence, eval batch size) are left out.
    """
    ignored = (
        "progress",
        "checkpoint_every",
        "checkpoint_epochs",
        "keep_checkpoints",
        "eval_batch_size",
        "log_radius_gradients",
        "tensorboard",
    )
    settings = _non_default(config, skip=(*ignored, "method"))
    method = config.method
    settings["method"] = {
        "name": method.name,
        **_non_default(method, skip=("options",)),
        **_non_default(method.options),  # flat, as before the options had their own class
    }
    return settings


def _non_default(config: Any, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """A dataclass's fields whose values differ from their defaults, but those in ``skip``."""
    return {
        field.name: getattr(config, field.name)
        for field in dataclasses.fields(config)
        if field.name not in skip and getattr(config, field.name) != field.default
    }


def _post_hoc(method, params, model_state, anchor, heldout, config, placement):
    """The method's post-hoc step (TPGM's) on the selected params, one held-out batch at a
    time, the radii carried from batch to batch. Two compiles (the first call starts
    the state); the params, anchor and batch statistics are arguments, not constants
    baked into the program."""

    def step(params, batches, state, anchor, model_state):
        return method.post_hoc(params, batches, anchor=anchor, state=state, model_state=model_state)

    post_hoc = jax.jit(step)
    source = heldout_batches(heldout, config.batch_size, 0, placement)
    projected, state = params, None
    for _ in range(method.post_hoc_iters):
        batches = placement.heldout_batches([next(source)])
        projected, state, _ = post_hoc(params, batches, state, anchor, model_state)
    return projected


def _end_of_epoch(
    state, eval_step, validation, config, anchor, progress, placement
) -> dict[str, Any]:
    sums = progress.epoch_sums
    val = evaluate(
        eval_step, state.params, state.model_state, validation, config.eval_batch_size, placement
    )
    return {
        "event": "epoch",
        "epoch": progress.epoch + 1,
        "step": int(state.step),
        "train_loss": sums["loss"] / max(progress.batch, 1),
        "train_accuracy": sums["correct"] / max(sums["count"], 1),
        "val_loss": val["loss"],
        "val_accuracy": val["accuracy"],
        "skipped_steps": int(state.skipped_steps),
        "radius": radii(state.opt_state),
        "distance": distances(state.params, anchor),
        **radius_gradient_record(sums),
    }


_BAR_REFRESH_STEPS = 10  # the progress bar's loss and accuracy: fetched every 10 steps


def _add_metrics(sums: dict[str, Any], pending: list[dict[str, jax.Array]]) -> None:
    """Adds the pending steps' metrics (one device fetch), in step order, then clears them."""
    for metrics in jax.device_get(pending):
        sums["loss"] += float(metrics["loss"])
        sums["correct"] += int(metrics["correct"])
        sums["count"] += int(metrics["count"])
        radius_gradient_sums(sums, metrics)
    pending.clear()


def _show(bar, progress: Progress, epoch: int, elapsed: float):
    sums = progress.epoch_sums
    bar.set_postfix(
        epoch=epoch + 1,
        loss=f"{sums['loss'] / max(progress.batch, 1):.3f}",
        acc=f"{sums['correct'] / max(sums['count'], 1):.3f}",
        ex_per_s=f"{sums['count'] / max(elapsed, 1e-9):.0f}",
        refresh=False,
    )


def _progress_bar(enabled: bool, total: int, initial: int, name: str):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=name, unit="step", leave=False)


def restore_best(model: nnx.Module, workdir: str | Path) -> nnx.Module:
    """Loads the selected epoch's params (and batch statistics) of a finished run into ``model``.

    Raises:
      FileNotFoundError: if ``workdir`` holds no finished run.
    """
    workdir = Path(workdir)
    if not (workdir / "result.json").exists():
        raise FileNotFoundError(f"no finished run in {workdir} (no result.json).")
    checkpointer = Checkpointer(workdir / "checkpoints")
    step = checkpointer.latest_step()
    if step is None:
        raise FileNotFoundError(f"no checkpoint in {workdir / 'checkpoints'}.")
    import orbax.checkpoint as ocp

    restored = checkpointer._manager.restore(
        step, args=ocp.args.Composite(extra=ocp.args.StandardRestore())
    )
    checkpointer.close()
    graphdef, params, model_state = split_model(model)
    best = restored.extra
    params = jax.tree_util.tree_map(lambda _, x: jnp.asarray(x), params, best["best_params"])
    model_state = jax.tree_util.tree_map(
        lambda _, x: jnp.asarray(x), model_state, best["best_model_state"]
    )
    nnx.update(model, params, model_state)
    return model
