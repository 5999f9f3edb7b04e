"""Evaluation and held-out batches: padded, host-sharded, and what each epoch logs.

Every evaluation batch has one shape (padded, with a mask) so the eval step
compiles once; on several hosts each host reads only its rows of every global
batch. Held-out batches (for the methods that ask for them, e.g. TPGM) cycle over
their set in a fixed order and are stacked for the optimizer.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import ftp_jax
from ftp_jax.train.inputs import EvalData

__all__ = ["evaluate", "heldout_batches", "next_heldout", "distances", "radii"]

PyTree = Any


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


def heldout_batches(evalset: EvalData, batch_size: int, start: int, placement=None):
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
        elif hasattr(evalset, "read"):
            # The batches of ``evalset.batches(size)``, read one at a time: the caller takes
            # a few per step, and a batch pipeline opened per step (workers reading ahead)
            # would make batches only to drop them.
            for index in range(position, count):
                yield evalset.read(np.arange(index * size, (index + 1) * size)), False
        else:
            for batch in evalset.batches(size, start=position):
                if len(batch["label"]) < size:
                    break
                yield {"image": batch["image"], "label": batch["label"]}, False
        position = 0


def next_heldout(heldout, iters, batch_size, progress, placement):
    """The next ``iters`` held-out batches (cycling over the set), stacked and placed."""
    source = heldout_batches(heldout, batch_size, progress.heldout_consumed, placement)
    batches = [next(source) for _ in range(iters)]
    progress.heldout_consumed += iters
    return placement.heldout_batches(batches)


def _per_leaf(tree: PyTree) -> dict[str, float]:
    flat = jax.tree_util.tree_flatten_with_path(jax.device_get(tree))[0]
    return {ftp_jax.leaf_path(path): float(value) for path, value in flat}


@jax.jit
def _leaf_distances(params: PyTree, anchor: PyTree) -> PyTree:
    # One jitted computation, not one per leaf and op: on several hosts every
    # eager op is a compiled multi-host computation of its own.
    return jax.tree_util.tree_map(lambda p, a: jnp.sqrt(jnp.sum(jnp.square(p - a))), params, anchor)


def distances(params: PyTree, anchor: PyTree) -> dict[str, float]:
    """L2 distance of every leaf from its pre-trained value."""
    return _per_leaf(_leaf_distances(params, anchor))


def radii(opt_state: Any) -> dict[str, float]:
    """The learned radii of whatever method carries them (none: an empty dict)."""
    radii = ftp_jax.radii(opt_state)
    if radii is None:
        return {}
    return _per_leaf(jax.tree_util.tree_map(lambda r: r, radii, is_leaf=lambda x: x is None))
