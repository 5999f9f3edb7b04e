"""How a method's per-leaf state is held in arrays: the ``layout`` option.

A ResNet-50 has 161 parameter leaves; FTP keeps, per constrained leaf, an anchor,
a previous displacement, previous inverse norms, a radius and the radius Adam's
two moments. Kept as one array each, the jitted update takes in and gives back
thousands of arrays and XLA compiles thousands of small kernels; on a GPU the
update's time follows that count, not the bytes (issue 24,
``benchmarks/RESULTS_LAYOUT.md``). Two layouts:

- ``"leaves"``: the parameter-sized buffers (anchor, displacement, inverse norms)
  stay one array per leaf, in trees like the params; the per-leaf scalars
  (radius and its moments) are one vector per dtype (:class:`LeafScalars`).
- ``"buckets"``: the leaves are grouped into *buckets* of the same shape, dtype,
  row axes and sharding; the parameter-sized buffers are stacked per bucket
  (:class:`Buckets`) and the method's math runs once per bucket (vectorized over
  the bucket's leading axis), not once per leaf. The params, gradients and the
  base optimizer's state stay on the params' tree: each step stacks them per
  bucket and unstacks the update (copies that a CPU pays for).
- ``"auto"`` (the default): ``"leaves"`` on the CPU, ``"buckets"`` elsewhere
  (:func:`default_layout`), decided at ``init`` from the default backend.

Both layouts compute the same numbers: in ``"leaves"`` every operation is the
per-leaf code's; in ``"buckets"`` the reductions run over a stacked array, which
may add in another order (a few ulp). The state records its layout in its
structure (static data of :class:`LeafScalars` and :class:`Buckets`), so
``update`` follows the state it is given, and read-outs such as
:func:`ftp_jax.radii` give a tree like the params without needing them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ftp_jax._projection import at_least_float32

__all__ = [
    "LAYOUTS",
    "Buckets",
    "LeafScalars",
    "StateLayout",
    "check_layout",
    "default_layout",
    "make_layout",
    "resolve_layout",
]

PyTree = Any
LAYOUTS = ("leaves", "buckets", "auto")


def check_layout(layout: Any, method: str) -> str:
    """``layout`` if it is one of :data:`LAYOUTS`, else a ValueError naming the method."""
    if not isinstance(layout, str) or layout not in LAYOUTS:
        raise ValueError(
            f"{method}: `layout` must be one of {LAYOUTS}, got {layout!r}. 'leaves' keeps "
            "one array per leaf (fastest on the CPU), 'buckets' stacks same-shape leaves "
            "(fewest arrays and kernels, for GPUs and TPUs), 'auto' picks by backend."
        )
    return layout


def default_layout(backend: str | None = None) -> str:
    """The layout ``"auto"`` resolves to: ``"leaves"`` on the CPU, ``"buckets"`` elsewhere.

    Measured on the CPU (``benchmarks/state_layout.py``), stacking costs more time
    than the fewer arrays save; on the H200 the update's time follows the number of
    arrays (issue 24), which buckets cut by 5-10x.
    """
    backend = jax.default_backend() if backend is None else backend
    return "leaves" if backend == "cpu" else "buckets"


def resolve_layout(layout: str) -> str:
    """``"auto"`` as :func:`default_layout`; the others as they are."""
    return default_layout() if layout == "auto" else layout


# --- the static layout -------------------------------------------------------------


@dataclasses.dataclass(frozen=True, eq=False)
class StateLayout:
    """Where each constrained leaf's state lives: static data, in the state's structure.

    ``buckets`` lists the flat indices (in the params' flattening order) of the
    leaves of each bucket; in the ``"leaves"`` kind every constrained leaf is a
    bucket of its own. The per-leaf scalars of a dtype ``groups[g]`` form one
    vector, in bucket order: ``slots[i] = (g, position)`` for leaf ``i`` (``None``
    for excluded leaves). ``shardings[b]`` is the bucket's leaves' sharding when it
    was known at ``init`` (concrete arrays), else ``None``.

    Params with no leaves (``optax.tree_utils.tree_map_params`` initializes the
    state with a placeholder that has none) get plain empty arrays in place of
    :class:`LeafScalars` and :class:`Buckets` (:func:`empty_field`), so that
    ``tree_map_params`` treats those fields as not params-shaped.
    """

    kind: str
    treedef: Any
    constrained: tuple[bool, ...]
    buckets: tuple[tuple[int, ...], ...]
    bucket_groups: tuple[int, ...]  # the scalar group (dtype) of each bucket
    groups: tuple[str, ...]  # dtype names of the scalar vectors
    slots: tuple[tuple[int, int] | None, ...]
    shardings: tuple[Any, ...]

    def _key(self):
        return (
            self.kind,
            self.treedef,
            self.constrained,
            self.buckets,
            self.groups,
            self.slots,
            self.shardings,
        )

    def __eq__(self, other: Any) -> bool:
        if not isinstance(other, StateLayout):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return (
            f"StateLayout({self.kind!r}, {sum(self.constrained)} constrained leaves, "
            f"{len(self.buckets)} buckets, scalar dtypes {self.groups})"
        )

    @property
    def empty(self) -> bool:
        """No params leaves at all (e.g. ``tree_map_params``'s placeholder)."""
        return not self.slots

    def group_sizes(self) -> tuple[int, ...]:
        sizes = [0] * len(self.groups)
        for bucket, group in zip(self.buckets, self.bucket_groups, strict=True):
            sizes[group] += len(bucket)
        return tuple(sizes)

    def bucket_offsets(self) -> tuple[int, ...]:
        """The position of each bucket's first scalar in its group's vector."""
        offsets, filled = [], [0] * len(self.groups)
        for bucket, group in zip(self.buckets, self.bucket_groups, strict=True):
            offsets.append(filled[group])
            filled[group] += len(bucket)
        return tuple(offsets)

    @property
    def stacked(self) -> bool:
        return self.kind == "buckets"


def _sharding_key(leaf: Any) -> Any:
    """A concrete array's named sharding (mesh and spec); ``None`` when unknown or trivial."""
    sharding = getattr(leaf, "sharding", None) if isinstance(leaf, jax.Array) else None
    if isinstance(sharding, jax.sharding.NamedSharding):
        return sharding
    return None


def make_layout(params: PyTree, plans: Sequence[Any], kind: str) -> StateLayout:
    """The layout of a state for ``params`` with the per-leaf ``plans``.

    Args:
      params: the params (arrays or shape-dtype structs).
      plans: one :class:`ftp_jax._skeleton.LeafPlan` per leaf (``constrained``,
        ``kept_axes``).
      kind: ``"leaves"`` or ``"buckets"`` (resolve ``"auto"`` first).
    """
    # NNX Variables as leaves: nnx.Optimizer initializes with Variables, updates with values.
    treedef = jax.tree_util.tree_structure(params, is_leaf=_is_variable)
    leaves = [_value(x) for x in treedef.flatten_up_to(params)]
    buckets: dict[Any, list[int]] = {}
    for index, (leaf, plan) in enumerate(zip(leaves, plans, strict=True)):
        if not plan.constrained:
            continue
        if kind == "buckets":
            key = (
                tuple(np.shape(leaf)),
                str(jnp.result_type(leaf)),
                plan.kept_axes,
                _sharding_key(leaf),
            )
        else:
            key = index
        buckets.setdefault(key, []).append(index)
    groups: list[str] = []
    bucket_groups, shardings = [], []
    for members in buckets.values():
        dtype = str(at_least_float32(jnp.result_type(leaves[members[0]])))
        if dtype not in groups:
            groups.append(dtype)
        bucket_groups.append(groups.index(dtype))
        shardings.append(_sharding_key(leaves[members[0]]) if kind == "buckets" else None)
    slots: list[tuple[int, int] | None] = [None] * len(leaves)
    filled = [0] * len(groups)
    for members, group in zip(buckets.values(), bucket_groups, strict=True):
        for index in members:
            slots[index] = (group, filled[group])
            filled[group] += 1
    return StateLayout(
        kind=kind,
        treedef=treedef,
        constrained=tuple(bool(p.constrained) for p in plans),
        buckets=tuple(tuple(m) for m in buckets.values()),
        bucket_groups=tuple(bucket_groups),
        groups=tuple(groups),
        slots=tuple(slots),
        shardings=tuple(shardings),
    )


def empty_field() -> jax.Array:
    """The state field of params with no leaves: an empty array, which
    ``optax.tree_utils.tree_map_params``'s placeholder state holds where the real
    state holds a :class:`LeafScalars` or :class:`Buckets` (not params-shaped)."""
    return jnp.zeros((0,), jnp.float32)


def _is_variable(x: Any) -> bool:
    return hasattr(x, "get_value")


def _value(x: Any) -> Any:
    # nnx.Optimizer wraps each state array in a Variable that has `get_value`.
    return x.get_value() if hasattr(x, "get_value") else x


# --- per-leaf scalars as vectors ----------------------------------------------------


@jax.tree_util.register_pytree_with_keys_class
class LeafScalars:
    """One scalar per constrained leaf, held as one vector per dtype.

    A pytree whose children are the vectors (keyed by dtype name, e.g.
    ``'float32'``) and whose static data is the :class:`StateLayout`; element-wise
    tree functions (``jax.tree.map``, ``optax.adam``'s moments) work on it as on
    any tree. :meth:`tree` gives the values as a tree like the params (``None``
    at excluded leaves); :meth:`leaf` one leaf's value.
    """

    def __init__(self, vectors: Sequence[Any], layout: StateLayout):
        self.vectors = tuple(vectors)
        self.layout = layout

    def tree_flatten_with_keys(self):
        keys = self.layout.groups
        return (
            tuple((jax.tree_util.DictKey(k), v) for k, v in zip(keys, self.vectors, strict=True)),
            self.layout,
        )

    def tree_flatten(self):
        return self.vectors, self.layout

    @classmethod
    def tree_unflatten(cls, layout, vectors):
        return cls(vectors, layout)

    def __repr__(self) -> str:
        return f"LeafScalars({self.vectors!r}, {self.layout!r})"

    @classmethod
    def full(cls, layout: StateLayout, value: float = 0.0) -> LeafScalars | jax.Array:
        """Every leaf's scalar set to ``value`` (:func:`empty_field` for empty params)."""
        if layout.empty:
            return empty_field()
        return cls(
            [
                jnp.full((size,), value, jnp.dtype(dtype))
                for dtype, size in zip(layout.groups, layout.group_sizes(), strict=True)
            ],
            layout,
        )

    @classmethod
    def from_leaves(cls, layout: StateLayout, values: Sequence[Any]) -> LeafScalars:
        """From one scalar per params leaf (``values[i]`` unread at excluded leaves)."""
        columns: list[list[Any]] = [[None] * n for n in layout.group_sizes()]
        for index, slot in enumerate(layout.slots):
            if slot is not None:
                group, position = slot
                columns[group][position] = jnp.reshape(values[index], ()).astype(
                    layout.groups[group]
                )
        return cls([jnp.stack(c) if c else jnp.zeros((0,)) for c in columns], layout)

    def leaf(self, index: int) -> Any:
        """The scalar of the params leaf at flat ``index`` (a static slice of a vector)."""
        group, position = self.layout.slots[index]
        return _value(self.vectors[group])[position]

    def tree(self, missing: Any = None) -> PyTree:
        """The scalars as a tree like the params, ``missing`` at excluded leaves.

        Vectors stacked on leading axes (a trajectory over steps) give each leaf's
        values stacked the same way: a leaf is an element of the vectors' last axis."""
        layout = self.layout
        values = [_value(v) for v in self.vectors]
        leaves = [
            missing if slot is None else values[slot[0]][..., slot[1]] for slot in layout.slots
        ]
        return layout.treedef.unflatten(leaves)

    def like(self, params: PyTree, missing: Any = None) -> PyTree:
        """The scalars as a tree of the structure of ``params`` (e.g. NNX variables as
        the update sees them), ``missing`` at excluded leaves; differentiable."""
        treedef = jax.tree_util.tree_structure(params)
        leaves = [
            missing if slot is None else self.vectors[slot[0]][slot[1]]
            for slot in self.layout.slots
        ]
        return treedef.unflatten(leaves)


# --- parameter-sized buffers stacked per bucket -------------------------------------


@jax.tree_util.register_pytree_with_keys_class
class Buckets:
    """Parameter-sized buffers stacked per bucket: ``arrays[b][j]`` is the buffer of
    the ``j``-th leaf of bucket ``b`` (:class:`StateLayout`). :meth:`tree` unstacks
    them into a tree like the params (``optax.MaskedNode`` at excluded leaves)."""

    def __init__(self, arrays: Sequence[Any], layout: StateLayout):
        self.arrays = tuple(arrays)
        self.layout = layout

    def tree_flatten_with_keys(self):
        keys = [f"bucket{b}" for b in range(len(self.arrays))]
        return (
            tuple((jax.tree_util.DictKey(k), a) for k, a in zip(keys, self.arrays, strict=True)),
            self.layout,
        )

    def tree_flatten(self):
        return self.arrays, self.layout

    @classmethod
    def tree_unflatten(cls, layout, arrays):
        return cls(arrays, layout)

    def __repr__(self) -> str:
        return f"Buckets({len(self.arrays)} arrays, {self.layout!r})"

    def tree(self) -> PyTree:
        """The buffers as a tree like the params, ``optax.MaskedNode`` at excluded leaves."""
        layout = self.layout
        leaves: list[Any] = [optax.MaskedNode()] * len(layout.slots)
        for members, stacked in zip(layout.buckets, self.arrays, strict=True):
            stacked = _value(stacked)
            for j, index in enumerate(members):
                leaves[index] = stacked[j]
        return layout.treedef.unflatten(leaves)


# --- moving between the params' leaves and the buckets -------------------------------


def stack(layout: StateLayout, bucket: int, flat: Sequence[Any]) -> Any:
    """The leaves of ``bucket`` taken from ``flat`` (the params' flat leaves), stacked
    on a new leading axis (``"buckets"``), or the one leaf as it is (``"leaves"``).

    A bucket whose sharding is known is constrained to it (leading axis replicated),
    so that stacking moves no data between devices."""
    members = layout.buckets[bucket]
    if not layout.stacked:
        return flat[members[0]]
    stacked = jnp.stack([flat[i] for i in members])
    return constrain(layout, bucket, stacked)


def constrain(layout: StateLayout, bucket: int, stacked: Any, like: Any = None) -> Any:
    """``stacked`` with the bucket's sharding (a new replicated leading axis), if known.

    ``like``: the stacked leaves' shape, when ``stacked`` is smaller along some axes
    (row norms): those axes are not split."""
    sharding = layout.shardings[bucket] if layout.shardings else None
    if sharding is None or not layout.stacked:
        return stacked
    entries = list(sharding.spec) + [None] * (jnp.ndim(stacked) - 1 - len(sharding.spec))
    if like is not None:
        entries = [
            e if jnp.shape(stacked)[a + 1] == like[a + 1] else None for a, e in enumerate(entries)
        ]
    spec = jax.sharding.PartitionSpec(None, *entries)
    target = jax.sharding.NamedSharding(sharding.mesh, spec)
    axis_types = getattr(sharding.mesh, "axis_types", ())
    if all(t == jax.sharding.AxisType.Auto for t in axis_types):
        return jax.lax.with_sharding_constraint(stacked, target)
    return jax.sharding.reshard(stacked, target)  # a mesh with Explicit axes


def unstack(layout: StateLayout, bucket: int, value: Any) -> list[tuple[int, Any]]:
    """``(flat index, leaf value)`` for each leaf of ``bucket`` (inverse of :func:`stack`)."""
    members = layout.buckets[bucket]
    if not layout.stacked:
        return [(members[0], value)]
    return [(index, value[j]) for j, index in enumerate(members)]


def bucket_buffers(layout: StateLayout, tree: PyTree, what: str, treedef: Any) -> list[Any]:
    """One buffer per bucket from a state field: the stacked arrays of a
    :class:`Buckets`, or the constrained leaves of a tree like the params (whose
    structure is ``treedef``)."""
    if isinstance(tree, Buckets):
        if len(tree.arrays) != len(layout.buckets):
            raise ValueError(
                f"The {what} has {len(tree.arrays)} buckets, its layout {len(layout.buckets)}."
            )
        return list(tree.arrays)
    flat = treedef.flatten_up_to(tree)
    return [flat[members[0]] for members in layout.buckets]


def buffers_field(layout: StateLayout, buffers: Sequence[Any], treedef: Any) -> PyTree:
    """A state field from one buffer per bucket: :class:`Buckets` when stacked, else
    a tree of structure ``treedef`` with ``optax.MaskedNode`` at excluded leaves."""
    if layout.stacked:
        return Buckets(buffers, layout)
    leaves: list[Any] = [optax.MaskedNode()] * len(layout.slots)
    for members, buffer in zip(layout.buckets, buffers, strict=True):
        leaves[members[0]] = buffer
    return treedef.unflatten(leaves)


def bucket_scalars(layout: StateLayout, scalars: LeafScalars, bucket: int) -> Any:
    """The scalars of ``bucket``'s leaves: a vector of its size (a static slice)."""
    offset = layout.bucket_offsets()[bucket]
    size = len(layout.buckets[bucket])
    return scalars.vectors[layout.bucket_groups[bucket]][offset : offset + size]


def scalars_from_buckets(layout: StateLayout, per_bucket: Sequence[Any]) -> LeafScalars:
    """A :class:`LeafScalars` from one vector per bucket (its leaves' scalars, in order)."""
    columns: list[list[Any]] = [[] for _ in layout.groups]
    for group, values in zip(layout.bucket_groups, per_bucket, strict=True):
        columns[group].append(jnp.reshape(values, (-1,)).astype(layout.groups[group]))
    return LeafScalars([jnp.concatenate(c) if len(c) > 1 else c[0] for c in columns], layout)
