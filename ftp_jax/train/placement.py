"""Where a run's arrays go: one device, or a mesh (data-parallel, optionally sharded params).

Batches split over the mesh's ``"data"`` axis, the training state replicated or
sharded ZeRO-style, several hosts each placing their own rows of a global batch.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from ftp_jax._layout import Buckets, LeafScalars
from ftp_jax.train.steps import TrainState

__all__ = ["Placement", "is_primary_host"]

PyTree = Any


class Placement:
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

    def _place(self, x: Any) -> Any:
        """One state array (sharded as :meth:`sharding_of` says); a method's per-leaf
        scalars (ftp_jax._layout.LeafScalars) replicated; a bucket of stacked leaves
        (ftp_jax._layout.Buckets) split as one of its leaves, the stacking axis whole."""
        if isinstance(x, LeafScalars):
            return jax.tree_util.tree_map(lambda v: _put(v, self._replicated), x)
        if isinstance(x, Buckets):

            def stacked(v):
                spec = self.sharding_of(np.broadcast_to(False, np.shape(v)[1:])).spec
                sharding = jax.sharding.NamedSharding(
                    self.mesh, jax.sharding.PartitionSpec(None, *spec)
                )
                return _put(v, sharding)

            return jax.tree_util.tree_map(stacked, x)
        return _put(x, self.sharding_of(x))

    def replicate(self, tree: PyTree) -> PyTree:
        """Places a state tree: replicated, or sharded like the params (``shard_params``).

        On one device every array is committed to it, so that a state mixing
        restored and fresh arrays compiles the step once, not twice.
        """
        if self.mesh is None:
            return jax.device_put(tree, jax.devices()[0])
        placed = jax.tree_util.tree_map(
            self._place, tree, is_leaf=lambda x: isinstance(x, (LeafScalars, Buckets))
        )
        if isinstance(placed, TrainState):  # the RNG key's data: one key, never split
            placed = placed._replace(rng=_put(tree.rng, self._replicated))
        return placed

    def batch(self, batch: dict[str, np.ndarray], *, host_rows: bool = False) -> dict:
        """Splits a batch over the "data" axis (the copies start now, asynchronously).

        Without a mesh, the batch goes to the one device the state is committed to.
        On several hosts, ``host_rows=True`` means ``batch`` holds only this host's
        rows of the global batch (a training source sharded by host, see
        :class:`SourceTrainData`); otherwise every host holds the whole global
        batch (evaluation, held-out data) and places the rows of its own devices.
        """
        if self.mesh is None:
            return jax.device_put(batch, jax.devices()[0])
        if jax.process_count() == 1:
            return jax.device_put(batch, self._split)
        if host_rows:
            return {key: _from_host_rows(value, self._split) for key, value in batch.items()}
        return {key: _global_array(value, self._split) for key, value in batch.items()}

    @property
    def devices(self) -> int:
        """Devices along the "data" axis (1 without a mesh)."""
        return 1 if self.mesh is None else self.mesh.shape["data"]

    def heldout_batches(self, batches: list[tuple[dict[str, np.ndarray], bool]]) -> dict:
        """Held-out batches ``(batch, host_rows)`` stacked on a new leading axis and placed:
        each batch split over the devices if its size allows, else replicated."""
        stacked = {key: np.stack([b[key] for b, _ in batches]) for key in ("image", "label")}
        if self.mesh is None:
            return stacked
        host_rows = batches[0][1]
        if host_rows and jax.process_count() > 1:
            split = jax.sharding.NamedSharding(self.mesh, jax.sharding.PartitionSpec(None, "data"))
            return {key: _from_host_rows(value, split, axis=1) for key, value in stacked.items()}
        if stacked["label"].shape[1] % self.devices:
            sharding = self._replicated
        else:
            sharding = jax.sharding.NamedSharding(
                self.mesh, jax.sharding.PartitionSpec(None, "data")
            )
        return {key: _global_array(value, sharding) for key, value in stacked.items()}


def _put(x: Any, sharding: jax.sharding.NamedSharding) -> jax.Array:
    """``x`` (the same value on every host) placed with ``sharding``.

    On several hosts an array held by this host alone is rebuilt from its host copy:
    ``jax.device_put`` of such an array onto a multi-host sharding (jax 0.10) gives an
    array that computes but whose shards orbax cannot save (a checkpoint before the
    first step that replaces it, e.g. on preemption, failed).
    """
    if jax.process_count() == 1 or (isinstance(x, jax.Array) and not x.is_fully_addressable):
        return jax.device_put(x, sharding)
    if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
        data = _put(jax.random.key_data(x), sharding)
        return jax.random.wrap_key_data(data, impl=jax.random.key_impl(x))
    return _global_array(np.asarray(x), sharding)


def _from_host_rows(value: np.ndarray, sharding, axis: int = 0) -> jax.Array:
    """The global batch of which every host holds ``len(value)`` rows (its own, in host order).

    The global shape is stated, not inferred: a host holding another number of rows
    (e.g. the whole global batch) is an error, not a batch ``process_count`` times larger.
    """
    shape = list(np.shape(value))
    shape[axis] *= jax.process_count()
    return jax.make_array_from_process_local_data(sharding, value, tuple(shape))


def _global_array(value: np.ndarray, sharding) -> jax.Array:
    """A host array held whole by every host, placed with ``sharding`` (one host or several)."""
    return jax.make_array_from_callback(value.shape, sharding, lambda index: value[index])


def is_primary_host() -> bool:
    """Whether this process writes the run's files (process 0; the only one on one host)."""
    return jax.process_index() == 0
