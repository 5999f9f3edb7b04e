"""What ``fit`` reads: training batches and named evaluation sets, in memory or streamed.

Training data follows :class:`TrainData` (deterministic given ``(seed, epoch)``,
resumable from any batch of an epoch); evaluation data follows
:class:`EvalData` (a name, a length and batches in a fixed order). In-memory
arrays (:class:`ArrayTrainData`, :class:`EvalSet`) suit small datasets; TFDS
sources with per-example transforms (:class:`SourceTrainData`,
:class:`SourceEvalSet`, built on :func:`ftp_jax.data.batches`) stream large ones,
decoded by worker threads ahead of the step.

A data object's optional ``normalization`` attribute, ``(mean, std)`` or
``None``, says that its images are ``uint8`` and what the jitted steps apply
on the device (a transform with ``output="uint8"``); ``fit`` reads it from the
training data.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import numpy as np

__all__ = [
    "TrainData",
    "EvalData",
    "ArrayTrainData",
    "EvalSet",
    "SourceTrainData",
    "SourceEvalSet",
]

Batch = dict[str, np.ndarray]
Transform = Callable[[np.ndarray, np.random.Generator], np.ndarray]


class TrainData(Protocol):
    """Training batches, deterministic given (seed, epoch), resumable mid-epoch."""

    steps_per_epoch: int

    def batches(self, seed: int, epoch: int, start: int) -> Iterator[Batch]:
        """Batches ``start, start + 1, ...`` of ``epoch`` in the order set by ``seed``."""
        ...


class EvalData(Protocol):
    """A named evaluation set: its examples in a fixed order, the last batch maybe smaller.

    An optional attribute ``class_subset`` (sorted label indices, or ``None``)
    restricts the predictions to those classes (ImageNet-A/-R; see
    :func:`ftp_jax.train.make_eval_step`). An optional method
    ``read(indices) -> Batch`` (the examples at those positions) lets each host
    of a multi-host run read only its rows of every batch; without it every
    host reads whole batches.
    """

    name: str

    def __len__(self) -> int: ...

    def batches(self, batch_size: int, start: int = 0) -> Iterator[Batch]:
        """Batches ``start, start + 1, ...`` of the set, in a fixed order."""
        ...


def checked_class_subset(classes: Any) -> np.ndarray:
    """``classes`` as a sorted, duplicate-free, non-empty int32 array of label indices."""
    array = np.asarray(classes)
    if array.ndim != 1 or array.size == 0 or not np.issubdtype(array.dtype, np.integer):
        raise ValueError(
            f"a class subset must be a non-empty 1-D list of integer label indices, got "
            f"{array.dtype} of shape {array.shape}."
        )
    if np.any(array < 0) or len(np.unique(array)) != len(array):
        raise ValueError("a class subset's label indices must be distinct and >= 0.")
    return np.sort(array).astype(np.int32)


class ArrayTrainData:
    """In-memory training data: a fresh permutation per (seed, epoch); drops the remainder."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, batch_size: int):
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} training images but {len(labels)} labels.")
        if len(labels) < batch_size:
            raise ValueError(
                f"the training split has {len(labels)} examples, fewer than one batch of "
                f"{batch_size}; lower the batch size or use more data."
            )
        self.images, self.labels, self.batch_size = images, labels, batch_size
        self.steps_per_epoch = len(labels) // batch_size

    def batches(self, seed: int, epoch: int, start: int) -> Iterator[Batch]:
        order = np.random.default_rng([seed, epoch]).permutation(len(self.labels))
        for index in range(start, self.steps_per_epoch):
            rows = order[index * self.batch_size : (index + 1) * self.batch_size]
            yield {"image": self.images[rows], "label": self.labels[rows]}


@dataclasses.dataclass(frozen=True)
class EvalSet:
    """A named evaluation set held in memory: images (N, H, W, C) and labels (N,).

    ``class_subset``: label indices the predictions are restricted to (``None``: all).
    """

    name: str
    images: np.ndarray
    labels: np.ndarray
    class_subset: np.ndarray | None = None

    def __post_init__(self):
        if len(self.images) != len(self.labels):
            raise ValueError(
                f"eval set {self.name!r}: {len(self.images)} images but {len(self.labels)} labels."
            )
        if len(self.labels) == 0:
            raise ValueError(f"eval set {self.name!r} is empty.")
        if self.class_subset is not None:
            object.__setattr__(self, "class_subset", checked_class_subset(self.class_subset))

    def __len__(self) -> int:
        return len(self.labels)

    def batches(self, batch_size: int, start: int = 0) -> Iterator[Batch]:
        for first in range(start * batch_size, len(self.labels), batch_size):
            rows = slice(first, first + batch_size)
            yield {"image": self.images[rows], "label": self.labels[rows]}

    def read(self, indices: np.ndarray) -> Batch:
        """The examples at ``indices``."""
        return {"image": self.images[indices], "label": self.labels[indices]}


class SourceTrainData:
    """Training batches streamed from a TFDS split, with a per-example transform.

    Args:
      source: e.g. ``ftp_jax.data.open_split("domainnet/real", "train", data_dir)``.
      batch_size: examples per batch (the remainder of an epoch is dropped).
      transform: e.g. ``ftp_jax.data.train_transform(224)``; its randomness is a
        pure function of ``(seed, epoch, example index)``.
      shard: ``(process_index, process_count)``: yield only this host's rows of
        every global batch (multi-host); default: ``jax.process_index()`` of
        ``jax.process_count()``, i.e. everything on a single host.
      workers: threads decoding and transforming batches ahead of the step
        (:func:`ftp_jax.data.batches`); default: the cores this process may use;
        0: in the training loop's thread. The batches do not depend on it.

    Attributes:
      normalization: the transform's ``normalization``: ``(mean, std)`` the steps
        apply on the device to its ``uint8`` images, or ``None``.
    """

    def __init__(
        self,
        source: Any,
        batch_size: int,
        transform: Transform | None = None,
        shard: tuple[int, int] | None = None,
        workers: int | None = None,
    ):
        if len(source) < batch_size:
            raise ValueError(
                f"the training split has {len(source)} examples, fewer than one batch of "
                f"{batch_size}."
            )
        self.source, self.batch_size, self.transform = source, batch_size, transform
        self.workers = workers
        self.normalization = getattr(transform, "normalization", None)
        self.steps_per_epoch = len(source) // batch_size
        if shard is None:
            import jax

            shard = (jax.process_index(), jax.process_count())
        index, count = shard
        if not (0 <= index < count) or batch_size % count:
            raise ValueError(
                f"`shard` {shard} must be (process_index, process_count) with batch_size "
                f"{batch_size} divisible by the {count} processes; each host reads "
                f"batch_size / {count} rows of every global batch."
            )
        self.shard = shard

    def batches(self, seed: int, epoch: int, start: int) -> Iterator[Batch]:
        from ftp_jax import data

        return data.batches(
            self.source,
            batch_size=self.batch_size,
            shuffle=True,
            seed=seed,
            epoch=epoch,
            drop_remainder=True,
            start_batch=start,
            transform=self.transform,
            shard=self.shard if self.shard[1] > 1 else None,
            workers=self.workers,
        )


class SourceEvalSet:
    """A named evaluation set streamed from a TFDS split, with a per-example transform.

    ``class_subset``: label indices the predictions are restricted to (``None``: all),
    e.g. ``ftp_jax.data.class_subset_indices("imagenet_a")``. ``workers``: as
    for :class:`SourceTrainData`. ``normalization``: the transform's, as there.
    """

    def __init__(
        self,
        name: str,
        source: Any,
        transform: Transform | None = None,
        class_subset: Any = None,
        workers: int | None = None,
    ):
        if len(source) == 0:
            raise ValueError(f"eval set {name!r} is empty.")
        self.name, self.source, self.transform = name, source, transform
        self.workers = workers
        self.normalization = getattr(transform, "normalization", None)
        self.class_subset = None if class_subset is None else checked_class_subset(class_subset)

    def __len__(self) -> int:
        return len(self.source)

    def batches(self, batch_size: int, start: int = 0) -> Iterator[Batch]:
        from ftp_jax import data

        return data.batches(
            self.source,
            batch_size=batch_size,
            shuffle=False,
            seed=0,
            epoch=0,
            drop_remainder=False,
            start_batch=start,
            transform=self.transform,
            workers=self.workers,
        )

    def read(self, indices: np.ndarray) -> Batch:
        """The examples at ``indices``, as :meth:`batches` gives them."""
        from ftp_jax import data

        return data.read_examples(self.source, indices, transform=self.transform)
