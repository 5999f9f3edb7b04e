"""Checkpoints with orbax-checkpoint: save every N steps, resume exactly, refuse mismatches."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import threading
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from ftp_jax._diskspace import OutOfSpaceError, free_bytes, is_out_of_space

__all__ = ["Checkpointer", "CheckpointMismatchError", "differences", "fingerprint"]

PyTree = Any


class CheckpointMismatchError(ValueError):
    """A checkpoint that belongs to another run (model, method) or cannot be read."""


def fingerprint(tree: PyTree, **settings: Any) -> str:
    """A short hash of a tree's paths, shapes and dtypes and of ``settings``."""
    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    description = [
        (jax.tree_util.keystr(path), tuple(np.shape(x)), str(jnp.result_type(x)))
        for path, x in flat
    ]
    payload = json.dumps([description, settings], sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _flat(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict):
        out = {}
        for key, value in tree.items():
            out.update(_flat(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: tree}


def _json(value: Any) -> Any:
    """``value`` as it reads back from JSON (tuples as lists), for comparisons."""
    return json.loads(json.dumps(value, default=str))


def differences(
    stored: dict[str, Any], current: dict[str, Any], *, missing: str = "default"
) -> list[str]:
    """``"key: <stored> in the work directory, <current> now"`` for every setting that differs.

    Nested dicts are compared by dotted key; a key absent on one side shows as
    ``missing`` (the run settings hold only non-default values).
    """
    stored, current = _flat(_json(stored)), _flat(_json(current))
    lines = []
    for key in sorted(set(stored) | set(current)):
        before, after = stored.get(key, missing), current.get(key, missing)
        if before != after:
            show = lambda v: v if v is missing else repr(v)  # noqa: E731
            lines.append(f"{key}: {show(before)} in the work directory, {show(after)} now")
    return lines


def _is_key(x: Any) -> bool:
    return hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jax.dtypes.prng_key)


def _to_savable(tree: PyTree) -> PyTree:
    """Typed PRNG keys (NNX RNG state) as their raw uint32 data."""
    return jax.tree_util.tree_map(lambda x: jax.random.key_data(x) if _is_key(x) else x, tree)


def _abstract(tree: PyTree) -> PyTree:
    return jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, _to_savable(tree))


def _from_saved(tree: PyTree, like: PyTree) -> PyTree:
    return jax.tree_util.tree_map(
        lambda x, ref: (
            jax.random.wrap_key_data(x, impl=jax.random.key_impl(ref)) if _is_key(ref) else x
        ),
        tree,
        like,
    )


def _disk_size(directory: Path) -> int:
    """Bytes of the files under ``directory`` (0 if it went away meanwhile)."""
    total = 0
    for path in directory.rglob("*"):
        with contextlib.suppress(OSError):
            if path.is_file():
                total += path.stat().st_size
    return total


def _leaves(*trees: PyTree) -> list[Any]:
    return [x for x in jax.tree_util.tree_leaves(_to_savable(trees)) if hasattr(x, "dtype")]


class _DropThreadErrors(logging.Filter):
    """Drops orbax's log of an error in one of its writer threads (with that thread's
    traceback): the same error is raised again in the caller's thread."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (
            record.levelno >= logging.ERROR and "raised an exception" in record.getMessage()
        )


class _DropOutOfSpaceNoise(logging.Filter):
    """After a failed save, drops what orbax's other writers log as they fail too (asyncio's
    "exception was never retrieved", at garbage collection): the run has said it once."""

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        if record.exc_info and record.exc_info[1] is not None:
            text += str(record.exc_info[1])
        return not is_out_of_space(Exception(text))


def _quiet_after_out_of_space() -> None:
    for name in ("absl", "asyncio"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropOutOfSpaceNoise) for f in logger.filters):
            logger.addFilter(_DropOutOfSpaceNoise())


@contextlib.contextmanager
def _thread_errors_unlogged():
    """Orbax's writer threads' error logs dropped; after an error, until those threads end
    (the first error reaches the caller while the others still fail and log)."""
    logger, drop = logging.getLogger("absl"), _DropThreadErrors()
    logger.addFilter(drop)
    try:
        yield
    except BaseException:
        deadline = time.monotonic() + 60
        for thread in threading.enumerate():
            if (
                type(thread).__name__ == "_SignalingThread"
                and thread is not threading.current_thread()
            ):
                thread.join(timeout=max(0.0, deadline - time.monotonic()))
        raise
    finally:
        logger.removeFilter(drop)


class Checkpointer:
    """Saves and restores a run's state, extra trees and JSON metadata.

    Checkpoints are written by orbax to a temporary directory and renamed when
    complete, so a run killed while saving leaves no checkpoint that looks
    complete; orbax ignores (and removes) the unfinished one.

    Every checkpoint records a ``fingerprint`` of the run (model structure and
    method); restoring into a run with another fingerprint raises
    :class:`CheckpointMismatchError` instead of loading.
    """

    def __init__(self, directory: str | Path, *, max_to_keep: int = 2):
        self.directory = Path(directory).absolute()
        self._manager = ocp.CheckpointManager(
            self.directory,
            # Synchronous: `save` waits for the disk anyway, and orbax's asynchronous
            # path compiles an on-device copy per array shape first (seconds per run).
            options=ocp.CheckpointManagerOptions(
                max_to_keep=max_to_keep, create=True, enable_async_checkpointing=False
            ),
        )

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def save(self, step: int, state: PyTree, extra: PyTree, meta: dict[str, Any]) -> None:
        """Saves (and waits until it is on disk, so that a kill cannot lose it).

        A checkpoint already at ``step`` (saved mid-epoch, now the epoch's end) is
        replaced; the previous step's checkpoint is kept meanwhile.

        Raises:
          ftp_jax._diskspace.OutOfSpaceError: the disk is full (the message names the
            directory and the space); the unfinished checkpoint is never read, and the
            run resumes from the previous one once space is freed.
        """
        self._check_space(step)
        try:
            with _thread_errors_unlogged():
                if step in self._manager.all_steps():
                    self._manager.delete(step)
                self._manager.save(
                    step,
                    args=ocp.args.Composite(
                        state=ocp.args.StandardSave(_to_savable(state)),
                        extra=ocp.args.StandardSave(_to_savable(extra)),
                        meta=ocp.args.JsonSave(meta),
                    ),
                    force=True,
                )
                self._manager.wait_until_finished()
        except Exception as error:
            if not is_out_of_space(error):
                raise
            _quiet_after_out_of_space()
            self._failed = True  # close() must not wait on orbax's failed writers
            needed, at_least = self._size(state, extra)
            raise OutOfSpaceError(
                self.directory, "a checkpoint", needed=needed, at_least=at_least
            ) from error

    def _check_space(self, step: int) -> None:
        """Raises :class:`OutOfSpaceError` before writing when the disk has less room than
        the last checkpoint took (the same model's, as large give or take compression):
        a clean stop, where orbax's writers would fail one after the other."""
        latest = self._manager.latest_step()
        if latest is None or latest == step:
            return
        needed = _disk_size(self.directory / str(latest))
        free = free_bytes(self.directory)
        if free is not None and free < needed:
            raise OutOfSpaceError(self.directory, "a checkpoint", needed=needed, free=free)

    def _size(self, state: PyTree, extra: PyTree) -> tuple[int, bool]:
        """About the bytes a checkpoint takes, and whether that is only a lower bound: the
        last finished checkpoint's size on disk, else the arrays' bytes."""
        arrays = sum(int(np.size(x)) * np.dtype(x.dtype).itemsize for x in _leaves(state, extra))
        latest = self._manager.latest_step()
        if latest is None:
            return arrays, True
        return max(arrays, _disk_size(self.directory / str(latest))), False

    def meta(self, step: int) -> dict[str, Any]:
        """The JSON metadata of checkpoint ``step`` (fingerprint, settings, progress).

        Raises:
          CheckpointMismatchError: it cannot be read (the checkpoint is corrupted).
        """
        where = self.directory / str(step)
        try:
            meta = self._manager.restore(
                step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())
            ).meta
        except Exception as error:  # noqa: BLE001 - any failure means: do not load
            raise CheckpointMismatchError(
                f"cannot read the checkpoint metadata in {where}: {type(error).__name__}: "
                f"{error}. The checkpoint is corrupted; move {where} away to resume from an "
                "earlier one, or start over."
            ) from error
        return meta if isinstance(meta, dict) else {}

    def restore(
        self,
        step: int,
        like_state: PyTree,
        like_extra: PyTree,
        expected_fingerprint: str,
        settings: dict[str, Any] | None = None,
    ) -> tuple[PyTree, PyTree, dict[str, Any]]:
        """Restores checkpoint ``step`` against the structure of ``like_*``.

        Args:
          settings: this run's settings, as recorded in the checkpoints; when the
            fingerprint differs, the error lists the settings that differ.

        Raises:
          CheckpointMismatchError: the checkpoint was written by another run (its
            fingerprint differs: the message lists the settings that differ, or says
            that the model differs), or cannot be read (corrupted, other structure).
        """
        where = self.directory / str(step)
        meta = self.meta(step)
        found = meta.get("fingerprint")
        if found != expected_fingerprint:
            stored = meta.get("settings")
            if settings is not None and stored is not None:
                changed = differences(stored, settings)
                reason = (
                    f", with other settings: {'; '.join(changed)}"
                    if changed
                    else ", with the same settings but another model or another layout of "
                    "the optimizer state (the paths, shapes or dtypes of its parameters or "
                    "state differ; a checkpoint written before FTP and TPGM held their per-leaf "
                    "radii as one vector per dtype, ftp_jax issue 24, has the old layout: "
                    "resume it with the ftp_jax version that wrote it, or start over)"
                )
            else:
                reason = (
                    ": another model or other settings (the checkpoint predates the record of "
                    "a run's settings, so which ones differ cannot be said)"
                )
            raise CheckpointMismatchError(
                f"the checkpoint in {where} belongs to another run{reason}."
            )
        try:
            restored = self._manager.restore(
                step,
                args=ocp.args.Composite(
                    state=ocp.args.StandardRestore(_abstract(like_state)),
                    extra=ocp.args.StandardRestore(_abstract(like_extra)),
                ),
            )
        except Exception as error:  # noqa: BLE001
            raise CheckpointMismatchError(
                f"cannot restore the checkpoint in {where}: {type(error).__name__}: {error}. "
                "It is corrupted or its structure differs from this run's; move it away to "
                "resume from an earlier one, or start over."
            ) from error
        state = _from_saved(restored.state, like_state)
        extra = _from_saved(restored.extra, like_extra)
        return state, extra, meta

    def close(self) -> None:
        if getattr(self, "_failed", False):  # after a full disk: nothing left to finish
            return
        self._manager.close()
