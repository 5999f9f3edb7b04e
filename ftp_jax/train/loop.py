"""``fit``: fine-tune a model with any method, select the best epoch, resume exactly.

The loop is host-side Python around jitted pure steps (``steps.py``): epochs of
training batches, TPGM's projection schedule, evaluation on the ID validation
split after every epoch, best-epoch selection on it (as the reference does), and
the test/OOD numbers of the selected epoch at the end. Metrics go to
``<workdir>/metrics.jsonl``; checkpoints to ``<workdir>/checkpoints``; the final
numbers to ``<workdir>/result.json``. A run started again in the same work
directory resumes from its last checkpoint and ends bit-identical to an
uninterrupted run; a finished run returns its stored result.
"""

from __future__ import annotations

import dataclasses
import json
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import ftp_jax
from ftp_jax.train.checkpoint import Checkpointer, fingerprint
from ftp_jax.train.config import TrainConfig
from ftp_jax.train.inputs import (
    ArrayTrainData,
    EvalData,
    EvalSet,
    SourceEvalSet,
    SourceTrainData,
    TrainData,
)
from ftp_jax.train.methods import build_method
from ftp_jax.train.steps import (
    TrainState,
    cross_entropy,
    make_eval_step,
    make_train_step,
    split_model,
)

__all__ = [
    "ArrayTrainData",
    "EvalData",
    "EvalSet",
    "FitResult",
    "SourceEvalSet",
    "SourceTrainData",
    "TrainData",
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

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _padded(batch: dict[str, np.ndarray], size: int, real: int) -> dict[str, np.ndarray]:
    """``batch`` padded with zeros to ``size`` rows; ``mask`` marks its first ``real`` rows."""
    images, labels = batch["image"], batch["label"]
    mask = np.zeros(size, bool)
    mask[:real] = True
    if len(labels) < size:
        pad = size - len(labels)
        images = np.concatenate([images, np.zeros((pad, *images.shape[1:]), images.dtype)])
        labels = np.concatenate([labels, np.zeros((pad,), labels.dtype)])
    return {"image": images, "label": labels, "mask": mask}


def _reads_host_rows(evalset: EvalData, placement) -> bool:
    """Whether this host reads only its rows of every batch of ``evalset`` (several hosts)."""
    return (
        placement is not None
        and placement.mesh is not None
        and jax.process_count() > 1
        and hasattr(evalset, "read")
    )


def _host_rows(first: int, size: int, length: int) -> np.ndarray:
    """This host's rows of the global batch of ``size`` rows starting at row ``first``."""
    local = size // jax.process_count()
    start = first + jax.process_index() * local
    return np.arange(start, min(start + local, length))


def _padded_batches(evalset: EvalData, batch_size: int, placement=None):
    """The set's batches padded to one shape (one compile), with a mask: ``(batch, host_rows)``.

    On several hosts, a set that can ``read`` given rows yields only this host's
    rows of every global batch (each host decodes its share of the set); else
    every host yields whole batches.
    """
    if not _reads_host_rows(evalset, placement):
        for batch in evalset.batches(batch_size):
            yield _padded(batch, batch_size, len(batch["label"])), False
        return
    local = batch_size // jax.process_count()
    for first in range(0, len(evalset), batch_size):
        rows = _host_rows(first, batch_size, len(evalset))
        # A host with no rows in the last batch reads row 0, masked, for the shapes.
        batch = evalset.read(rows if len(rows) else np.zeros(1, np.int64))
        yield _padded(batch, local, len(rows)), True


def evaluate(
    eval_step, params, model_state, evalset: EvalData, batch_size: int, placement=None
) -> dict:
    """Loss and accuracy of the model on ``evalset`` (padded batches, one compile).

    If the set has a ``class_subset``, predictions are restricted to those
    classes and every label must be one of them (checked on the host).
    """
    classes = getattr(evalset, "class_subset", None)
    totals = {"loss_sum": 0.0, "correct": 0, "count": 0}
    for batch, host_rows in _padded_batches(evalset, batch_size, placement):
        if classes is not None:
            labels = batch["label"][batch["mask"]]
            outside = labels[~np.isin(labels, classes)]
            if len(outside):
                raise ValueError(
                    f"eval set {evalset.name!r} has label {int(outside[0])} outside its class "
                    f"subset of {len(classes)} classes; the subset must contain every label "
                    "of the set (is it the right subset for this dataset?)."
                )
        if placement is not None:
            batch = placement.batch(batch, host_rows=host_rows)
        sums = jax.device_get(eval_step(params, model_state, batch, classes))
        for key in totals:
            totals[key] += sums[key].item()
    return {
        "loss": totals["loss_sum"] / totals["count"],
        "accuracy": totals["correct"] / totals["count"],
        "count": totals["count"],
    }


def _heldout_batches(evalset: EvalData, batch_size: int, start: int, placement=None):
    """Full held-out batches in a fixed order, cycled forever, from batch ``start``.

    Batches have ``min(batch_size, len(evalset))`` examples; a last partial one
    is dropped. Yields ``(batch, host_rows)``: on several hosts, when the batch
    splits over the devices and the set can ``read`` given rows, only this
    host's rows of each batch.
    """
    size = min(batch_size, len(evalset))
    count = len(evalset) // size
    position = start % count
    host_rows = _reads_host_rows(evalset, placement) and size % placement.devices == 0
    while True:
        if host_rows:
            for index in range(position, count):
                yield evalset.read(_host_rows(index * size, size, len(evalset))), True
        else:
            for batch in evalset.batches(size, start=position):
                if len(batch["label"]) < size:
                    break
                yield {"image": batch["image"], "label": batch["label"]}, False
        position = 0


def _per_leaf(tree: PyTree) -> dict[str, float]:
    flat = jax.tree_util.tree_flatten_with_path(jax.device_get(tree))[0]
    return {ftp_jax.leaf_path(path): float(value) for path, value in flat}


@jax.jit
def _copy_tree(tree: PyTree) -> PyTree:
    """New buffers holding ``tree``'s values (one compiled copy for the whole tree)."""
    return jax.tree_util.tree_map(jnp.copy, tree)


@jax.jit
def _leaf_distances(params: PyTree, anchor: PyTree) -> PyTree:
    # One jitted computation, not one per leaf and op: on several hosts every
    # eager op is a compiled multi-host computation of its own.
    return jax.tree_util.tree_map(lambda p, a: jnp.sqrt(jnp.sum(jnp.square(p - a))), params, anchor)


def _distances(params: PyTree, anchor: PyTree) -> dict[str, float]:
    """L2 distance of every leaf from its pre-trained value."""
    return _per_leaf(_leaf_distances(params, anchor))


def _radii(method_name: str, state: TrainState) -> dict[str, float]:
    if method_name == "ftp":
        return _per_leaf(ftp_jax.ftp_radii(state.opt_state))
    if method_name == "tpgm" and not isinstance(state.projection, optax.EmptyState):
        if bool(state.projection.initialized):
            return _per_leaf(ftp_jax.tpgm_radii(state.projection))
    return {}


class _Placement:
    """Where arrays go: one device, or batches split over a mesh's "data" axis."""

    def __init__(
        self,
        mesh: jax.sharding.Mesh | None,
        batch_size: int,
        eval_batch_size: int,
        shard_params: bool = False,
    ):
        self.mesh, self.shard_params = mesh, shard_params
        if mesh is None:
            return
        # The steps rely on XLA's sharding propagation (GSPMD): use Auto axes even
        # if the mesh was made with Explicit ones (jax.make_mesh's default).
        self.mesh = mesh = jax.sharding.Mesh(
            mesh.devices,
            mesh.axis_names,
            axis_types=(jax.sharding.AxisType.Auto,) * len(mesh.axis_names),
        )
        if "data" not in mesh.axis_names:
            raise ValueError(f"`mesh` needs a 'data' axis, it has {mesh.axis_names}.")
        devices = mesh.shape["data"]
        for name, size in (("batch_size", batch_size), ("eval_batch_size", eval_batch_size)):
            if size % devices:
                raise ValueError(
                    f"{name}={size} does not split over the {devices} devices of the mesh's "
                    f"'data' axis; use a multiple of {devices}."
                )
        P = jax.sharding.PartitionSpec
        self._replicated = jax.sharding.NamedSharding(mesh, P())
        self._split = jax.sharding.NamedSharding(mesh, P("data"))

    def sharding_of(self, x: Any) -> jax.sharding.NamedSharding:
        """Replicated; or, with ``shard_params``, split along the largest axis that divides."""
        if not self.shard_params or np.ndim(x) == 0:
            return self._replicated
        devices = self.mesh.shape["data"]
        shape = np.shape(x)
        candidates = [a for a in range(len(shape)) if shape[a] % devices == 0]
        if not candidates:
            return self._replicated
        axis = max(candidates, key=lambda a: shape[a])
        spec = [None] * len(shape)
        spec[axis] = "data"
        return jax.sharding.NamedSharding(self.mesh, jax.sharding.PartitionSpec(*spec))

    def replicate(self, tree: PyTree) -> PyTree:
        """Places a state tree: replicated, or sharded like the params (``shard_params``).

        On one device every array is committed to it, so that a state mixing
        restored and fresh arrays compiles the step once, not twice.
        """
        if self.mesh is None:
            return jax.device_put(tree, jax.devices()[0])
        placed = jax.tree_util.tree_map(lambda x: jax.device_put(x, self.sharding_of(x)), tree)
        if isinstance(placed, TrainState):  # the RNG key's data: one key, never split
            placed = placed._replace(rng=jax.device_put(tree.rng, self._replicated))
        return placed

    def batch(self, batch: dict[str, np.ndarray], *, host_rows: bool = False) -> dict:
        """Splits a batch over the "data" axis.

        On several hosts, ``host_rows=True`` means ``batch`` holds only this host's
        rows of the global batch (a training source sharded by host, see
        :class:`SourceTrainData`); otherwise every host holds the whole global
        batch (evaluation, held-out data) and places the rows of its own devices.
        """
        if self.mesh is None:
            return batch
        if jax.process_count() == 1:
            return jax.device_put(batch, self._split)
        if host_rows:
            return {
                key: jax.make_array_from_process_local_data(self._split, value)
                for key, value in batch.items()
            }
        return {key: _global_array(value, self._split) for key, value in batch.items()}

    @property
    def devices(self) -> int:
        """Devices along the "data" axis (1 without a mesh)."""
        return 1 if self.mesh is None else self.mesh.shape["data"]

    def heldout_batch(self, batch: dict[str, np.ndarray], *, host_rows: bool = False) -> dict:
        """A held-out (TPGM) batch: split over the devices if its size allows, else replicated."""
        if self.mesh is None:
            return batch
        if host_rows:
            return self.batch(batch, host_rows=True)
        if len(batch["label"]) % self.devices:
            return {key: _global_array(value, self._replicated) for key, value in batch.items()}
        return self.batch(batch)


def _global_array(value: np.ndarray, sharding) -> jax.Array:
    """A host array held whole by every host, placed with ``sharding`` (one host or several)."""
    return jax.make_array_from_callback(value.shape, sharding, lambda index: value[index])


def is_primary_host() -> bool:
    """Whether this process writes the run's files (process 0; the only one on one host)."""
    return jax.process_index() == 0


class _Metrics:
    """Appends JSON lines to ``metrics.jsonl``; on resume drops lines past the checkpoint.

    Only the primary host writes (all hosts share the work directory).
    """

    def __init__(self, path: Path, resume_step: int | None):
        self.path = path
        self.enabled = is_primary_host()
        if not self.enabled:
            return
        if resume_step is None:
            path.write_text("")
        elif path.exists():
            kept = [
                line
                for line in path.read_text().splitlines()
                if line and json.loads(line)["step"] <= resume_step
            ]
            path.write_text("".join(line + "\n" for line in kept))

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")


class _Interrupt:
    """Turns SIGTERM and Ctrl-C (SIGINT) into a checkpoint at the next step boundary.

    Then the run stops: exit 143 after SIGTERM, ``KeyboardInterrupt`` after Ctrl-C.
    A second Ctrl-C stops at once (the last checkpoint is kept).
    """

    def __init__(self):
        self.requested = False
        self.signum = None
        self._previous = {}

    def __enter__(self):
        for signum in (signal.SIGTERM, signal.SIGINT):
            try:
                self._previous[signum] = signal.signal(signum, self._handle)
            except ValueError:  # not the main thread: leave signals alone
                pass
        return self

    def _handle(self, signum, frame):
        del frame
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested, self.signum = True, signum
        if signum == signal.SIGINT:
            print(
                "\nCtrl-C: saving a checkpoint after this step (Ctrl-C again to stop at once)",
                file=sys.stderr,
                flush=True,
            )

    def stop(self):
        """Leaves the run after its checkpoint: exit 143 (SIGTERM) or ``KeyboardInterrupt``."""
        if self.signum == signal.SIGINT:
            raise KeyboardInterrupt
        raise SystemExit(143)

    def __exit__(self, *exc):
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)


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
    mesh: jax.sharding.Mesh | None = None,
    shard_params: bool = False,
    row_axes: Any = None,
) -> FitResult:
    """Fine-tunes ``model`` with ``config.method`` and returns the selected epoch's numbers.

    Args:
      model: the NNX model, pre-trained weights loaded and a fresh head attached.
        Its params at entry are the anchor (FTP, TPGM) and the distance reference.
      config: the run's configuration.
      train: training batches (e.g. :class:`ArrayTrainData`).
      validation: the ID validation split: best-epoch selection.
      tests: ID test and OOD sets, evaluated with the selected epoch's params.
      workdir: where metrics, checkpoints and the result go; a run started again
        in the same directory resumes.
      heldout: TPGM's held-out data (default: ``validation``, as the reference).
      stop_after_steps: stop (after checkpointing) once this many steps are done,
        as if interrupted; for tests of resumption.
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
      CheckpointMismatchError: the work directory holds another run's checkpoint.
    """
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    placement = _Placement(mesh, config.batch_size, config.eval_batch_size, shard_params)
    graphdef, params, model_state = split_model(model)
    # Copies: the jitted step donates the state's buffers, these must survive it.
    anchor = _copy_tree(params)
    heldout = heldout or validation
    steps_per_epoch = train.steps_per_epoch
    total_steps = config.epochs * steps_per_epoch

    def heldout_loss(params, batch):
        model = nnx.merge(graphdef, params, batch["model_state"])
        model.eval()
        return cross_entropy(model(batch["image"]), batch["label"])

    method = build_method(config, params, steps_per_epoch, heldout_loss, row_axes=row_axes)
    tpgm = method.projection or method.post_hoc

    @jax.jit
    def initial_state(params, model_state):
        # One compiled computation: eagerly, every leaf's init ops compile on their own.
        return TrainState(
            step=jnp.zeros([], jnp.int32),
            params=_copy_tree(params),
            model_state=_copy_tree(model_state),
            opt_state=method.tx.init(params),
            projection=tpgm.init(params) if tpgm else optax.EmptyState(),
            rng=jax.random.key_data(jax.random.PRNGKey(config.seed)),
            skipped_steps=jnp.zeros([], jnp.int32),
        )

    state = initial_state(params, model_state)
    extra = {"best_params": _copy_tree(params), "best_model_state": _copy_tree(model_state)}
    settings = _run_settings(config)
    run_id = fingerprint((state, extra), config=settings)
    result_path = workdir / "result.json"
    if result_path.exists():
        stored = json.loads(result_path.read_text())
        if stored.get("fingerprint") == run_id:
            stored.pop("fingerprint")
            return FitResult(**stored)

    checkpointer = Checkpointer(workdir / "checkpoints", max_to_keep=config.keep_checkpoints)
    progress = {
        "epoch": 0,  # the epoch in progress (0-based)
        "batch": 0,  # batches of it done
        "heldout_consumed": 0,
        "best_accuracy": -1.0,
        "best_epoch": 0,
        "epoch_sums": {"loss": 0.0, "correct": 0, "count": 0},
        "history": [],
    }
    state, extra = placement.replicate(state), placement.replicate(extra)
    latest = checkpointer.latest_step()
    if latest is not None:
        state, extra, meta = checkpointer.restore(latest, state, extra, run_id, settings)
        progress = meta["progress"]
    metrics = _Metrics(workdir / "metrics.jsonl", latest)

    def save() -> None:
        meta = {
            "fingerprint": run_id,
            "settings": settings,  # lets a mismatch name the settings that differ
            "description": dataclasses.asdict(config.method),
            "progress": progress,
        }
        checkpointer.save(int(state.step), state, extra, meta)

    train_step = jax.jit(make_train_step(graphdef, method.tx), donate_argnums=0)
    eval_step = jax.jit(make_eval_step(graphdef))
    if method.projection is not None:
        update_step = jax.jit(method.projection.update_step)
        apply_projection = jax.jit(method.projection.apply)
    # A training source sharded by host yields this host's rows of each batch.
    shard = getattr(train, "shard", None)
    host_rows = shard is not None and shard[1] > 1
    step = int(state.step)
    bar = _progress_bar(
        config.progress and is_primary_host(), total_steps, step, config.method.name
    )
    stopped = False
    with _Interrupt() as interrupt:
        while progress["epoch"] < config.epochs and not stopped:
            epoch = progress["epoch"]
            seed = int(
                jax.random.randint(
                    jax.random.fold_in(jax.random.wrap_key_data(state.rng), epoch),
                    (),
                    0,
                    np.iinfo(np.int32).max,
                )
            )
            sums = progress["epoch_sums"]
            started = time.perf_counter()
            for batch in train.batches(seed, epoch, progress["batch"]):
                iteration = progress["batch"]
                state, step_metrics = train_step(state, placement.batch(batch, host_rows=host_rows))
                if method.projection is not None:
                    action = ftp_jax.projection_action(iteration, method.proj_freq)
                    state = _project(
                        state,
                        action,
                        method.projection,
                        update_step,
                        apply_projection,
                        heldout,
                        config,
                        progress,
                        placement,
                    )
                step_metrics = jax.device_get(step_metrics)
                sums["loss"] += float(step_metrics["loss"])
                sums["correct"] += int(step_metrics["correct"])
                sums["count"] += int(step_metrics["count"])
                progress["batch"] += 1
                step = int(state.step)
                if bar is not None:
                    elapsed = max(time.perf_counter() - started, 1e-9)
                    bar.update(1)
                    bar.set_postfix(
                        epoch=epoch + 1,
                        loss=f"{sums['loss'] / progress['batch']:.3f}",
                        acc=f"{sums['correct'] / max(sums['count'], 1):.3f}",
                        ex_per_s=f"{sums['count'] / elapsed:.0f}",
                        refresh=False,
                    )
                epoch_done = progress["batch"] == steps_per_epoch  # its end saves anyway
                if config.checkpoint_every and step % config.checkpoint_every == 0:
                    if not epoch_done:
                        save()
                if interrupt.requested or (stop_after_steps and step >= stop_after_steps):
                    save()
                    stopped = True
                    break
            if stopped:
                break
            record = _end_of_epoch(
                state, eval_step, validation, config, anchor, progress, placement
            )
            metrics.write(record)
            if record["val_accuracy"] > progress["best_accuracy"]:
                progress["best_accuracy"] = record["val_accuracy"]
                progress["best_epoch"] = epoch + 1
                extra = {
                    "best_params": _copy_tree(state.params),
                    "best_model_state": _copy_tree(state.model_state),
                }
            progress.update(
                epoch=epoch + 1, batch=0, epoch_sums={"loss": 0.0, "correct": 0, "count": 0}
            )
            progress["history"].append(record)
            save()
    if bar is not None:
        bar.close()
    checkpointer.close()
    if stopped:
        if interrupt.requested:
            interrupt.stop()
        return None  # type: ignore[return-value]

    best_params, best_model_state = extra["best_params"], extra["best_model_state"]
    if method.post_hoc is not None:
        projection_state = state.projection
        best_params, projection_state, _, _ = ftp_jax.run_projection_update(
            method.post_hoc,
            best_params,
            projection_state,
            _with_state(
                _heldout_batches(heldout, config.batch_size, 0, placement),
                best_model_state,
                placement,
            ),
            update_step=jax.jit(method.post_hoc.update_step),
            apply=jax.jit(method.post_hoc.apply),
        )
    result = FitResult(
        best_epoch=progress["best_epoch"],
        validation=evaluate(
            eval_step,
            best_params,
            best_model_state,
            validation,
            config.eval_batch_size,
            placement,
        ),
        tests={
            s.name: evaluate(
                eval_step, best_params, best_model_state, s, config.eval_batch_size, placement
            )
            for s in tests
        },
        history=progress["history"],
        skipped_steps=int(state.skipped_steps),
        steps=int(state.step),
    )
    metrics.write({"event": "result", "step": int(state.step), **result.to_json()})
    if is_primary_host():
        result_path.write_text(json.dumps({"fingerprint": run_id, **result.to_json()}, indent=1))
    return result


def _run_settings(config: TrainConfig) -> dict[str, Any]:
    """The settings that identify a run: those that differ from their defaults.

    Only non-default values enter the fingerprint, so that a field added to the
    config later (with a default that keeps the old behaviour) does not make
    existing work directories unreadable. Fields that do not change the
    numbers (progress bars, checkpoint cadence, eval batch size) are left out.
    """
    ignored = ("progress", "checkpoint_every", "keep_checkpoints", "eval_batch_size")
    settings = _non_default(config, skip=(*ignored, "method"))
    settings["method"] = {"name": config.method.name, **_non_default(config.method)}
    return settings


def _non_default(config: Any, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """A dataclass's fields whose values differ from their defaults, but those in ``skip``."""
    return {
        field.name: getattr(config, field.name)
        for field in dataclasses.fields(config)
        if field.name not in skip and getattr(config, field.name) != field.default
    }


def _with_state(batches, model_state, placement):
    """Held-out batches on the mesh, with the model's batch statistics for the eval forward."""
    for batch, host_rows in batches:
        yield {**placement.heldout_batch(batch, host_rows=host_rows), "model_state": model_state}


def _project(state, action, projection, update_step, apply, heldout, config, progress, placement):
    """TPGM after a training step: a projection update (then apply), or apply only."""
    if action == "update":
        source = _with_state(
            _heldout_batches(heldout, config.batch_size, progress["heldout_consumed"], placement),
            state.model_state,
            placement,
        )
        params, projection_state, _, _ = ftp_jax.run_projection_update(
            projection,
            state.params,
            state.projection,
            source,
            update_step=update_step,
            apply=apply,
        )
        progress["heldout_consumed"] += projection.max_iters
    else:
        params, projection_state = apply(state.params, state.projection)
    return state._replace(params=params, projection=projection_state)


def _end_of_epoch(
    state, eval_step, validation, config, anchor, progress, placement
) -> dict[str, Any]:
    sums = progress["epoch_sums"]
    val = evaluate(
        eval_step, state.params, state.model_state, validation, config.eval_batch_size, placement
    )
    return {
        "event": "epoch",
        "epoch": progress["epoch"] + 1,
        "step": int(state.step),
        "train_loss": sums["loss"] / max(progress["batch"], 1),
        "train_accuracy": sums["correct"] / max(sums["count"], 1),
        "val_loss": val["loss"],
        "val_accuracy": val["accuracy"],
        "skipped_steps": int(state.skipped_steps),
        "radius": _radii(config.method.name, state),
        "distance": _distances(state.params, anchor),
    }


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
