"""Deterministic, resumable batches of a split or of arrays, read ahead by worker threads.

- ``batches(source, ...)``: ``{"image": float32 NHWC in [0, 1], "label": int32}``
  batches planned by ``grain`` (shuffle, batch, slice), a pure function of
  ``(seed, epoch)``, and able to start at any batch of the epoch (resume);
  read, decoded and transformed by ``workers`` threads of grain's prefetch
  (``MapDataset.to_iter_dataset(grain.ReadOptions(...))``) ahead of the consumer.
- ``read_examples(source, indices, ...)``: the examples at ``indices`` as one
  batch, exactly as ``batches`` makes it.
- ``num_batches``, ``available_cores``.

The sources are :mod:`ftp_jax.data._splits`'s ``SplitSource`` (or any
random-access sequence of example dicts), or ``(images, labels)`` arrays.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import grain
import numpy as np

from ftp_jax.data._splits import SplitSource, check_labels, stack_examples

__all__ = ["available_cores", "batches", "num_batches", "read_examples"]

def num_batches(num_examples: int, batch_size: int, drop_remainder: bool) -> int:
    """How many batches an epoch of ``num_examples`` has."""
    if drop_remainder:
        return num_examples // batch_size
    return -(-num_examples // batch_size)


def batches(
    source: SplitSource | Sequence[dict[str, Any]] | tuple[np.ndarray, np.ndarray],
    *,
    batch_size: int,
    shuffle: bool,
    seed: int,
    epoch: int,
    drop_remainder: bool,
    start_batch: int = 0,
    image_key: str = "image",
    label_key: str = "label",
    num_classes: int | None = None,
    transform: Callable[[np.ndarray, np.random.Generator], np.ndarray] | None = None,
    shard: tuple[int, int] | None = None,
    workers: int | None = None,
) -> Iterator[dict[str, np.ndarray]]:
    """One epoch of batches ``{"image": float32 (b, h, w, c) in [0, 1], "label": int32 (b,)}``.

    The batches are a pure function of ``(seed, epoch)``: ``grain`` shuffles the
    example indices with a seed derived from both (a new order every epoch),
    cuts them into batches and starts at batch ``start_batch``, so a run
    resumed at step ``epoch * num_batches + start_batch`` sees exactly the
    batches it would have seen. Examples are read a batch at a time
    (``__getitems__``) and transformed one by one; with ``workers >= 1`` that
    happens in ``workers`` threads of grain's prefetch, each making whole
    batches, up to ``2 * workers`` batches ahead of the consumer, yielded in
    order. The batches do not depend on ``workers``: every augmentation is a
    pure function of ``(seed, epoch, example index)``.

    .. note:: Threads, not processes (grain's ``mp_prefetch``): Pillow releases
       the GIL while it decodes a JPEG and resizes, and numpy while it
       normalizes. Measured on DomainNet-sized JPEGs
       (``benchmarks/input_pipeline.py``): the same CPU time per image in
       threads and in processes (270-330 images per CPU second), no pickling
       of the source or of the batches, and no start-up, where ``mp_prefetch``
       took about 10 s to start its processes for every iterator on the
       2-core development machine (each epoch and each evaluation opens one).
       The GIL-held parts (TFDS's record parsing, the Python of the transform)
       may limit threads on many cores: measure with the benchmark.

    Args:
      source: a ``SplitSource`` (or any random-access sequence of example
        dicts), or ``(images, labels)`` arrays as from ``load_arrays`` (fastest
        for small data).
      batch_size: examples per batch.
      shuffle: shuffle the order (per epoch); else the source's order.
      seed: non-negative int; with ``epoch`` it fixes the order.
      epoch: non-negative int, the epoch number.
      drop_remainder: drop the last, smaller batch.
      start_batch: index of the first batch to yield, in ``[0, num_batches]``.
      image_key, label_key: the example keys of the image (``uint8``, ``(h, w)``
        or ``(h, w, c)``) and of the integer label.
      num_classes: labels must lie in ``[0, num_classes)``; by default the
        ``num_classes`` of a ``SplitSource``'s label feature (unchecked when
        unknown).
      transform: a per-example image transform ``(uint8 image, rng) -> float32
        or uint8 image`` (e.g. :func:`ftp_jax.data.train_transform`), applied
        before stacking, so examples may have different sizes; a uint8 output
        stays uint8 (normalized later, on the device). ``rng`` is seeded by
        ``(seed, epoch, example index)``: the augmentation of an example is a
        pure function of those, whatever the batch or resume point. Without it,
        images are scaled to ``[0, 1]``.
      shard: ``(index, count)``: read and return only part ``index`` of ``count``
        equal parts of every batch (multi-host data parallelism: each host reads
        its rows of the same global batches). ``batch_size`` must divide by
        ``count``.

    Returns:
      An iterator over the ``num_batches(len, batch_size, drop_remainder) - start_batch``
      remaining batches of the epoch.

    Raises:
      ValueError: bad arguments, an empty source, no batch at all, or (while
        iterating) a label outside ``[0, num_classes)`` or an image that is not
        ``uint8``.

    Example (arrays as from ``load_arrays("mnist5k", "train", data_dir)``):
      >>> import numpy as np
      >>> from ftp_jax.data import batches
      >>> images, labels = np.zeros((100, 28, 28), np.uint8), np.arange(100) % 10
      >>> epoch = batches((images, labels), batch_size=32, shuffle=True, seed=0,
      ...                 epoch=3, drop_remainder=True, start_batch=1, workers=0)
      >>> [batch["image"].shape for batch in epoch]  # batches 1 and 2 of 3
      [(32, 28, 28, 1), (32, 28, 28, 1)]
    """
    _check_int("batch_size", batch_size, minimum=1)
    _check_int("seed", seed, minimum=0)
    _check_int("epoch", epoch, minimum=0)
    _check_int("start_batch", start_batch, minimum=0)
    workers = _checked_workers(workers)
    where = source._where() if isinstance(source, SplitSource) else "`source`"
    read, length = _batch_reader(source, image_key, label_key, where)
    if num_classes is None:
        num_classes = _num_classes_of(source, label_key)
    if length == 0:
        raise ValueError(f"{where} is empty: no example to batch.")
    total = num_batches(length, batch_size, drop_remainder)
    if total == 0:
        raise ValueError(
            f"no batch: `batch_size` {batch_size} exceeds the {length} examples of {where} "
            "with drop_remainder=True."
        )
    if start_batch > total:
        raise ValueError(f"`start_batch` {start_batch} exceeds the {total} batches of the epoch.")

    plan = grain.MapDataset.range(length)
    if shuffle:
        plan = plan.shuffle(seed=_epoch_seed(seed, epoch))
    plan = plan.batch(batch_size, drop_remainder=drop_remainder)[start_batch:]
    if shard is not None:
        index, count = shard
        if not (0 <= index < count) or batch_size % count:
            raise ValueError(
                f"`shard` {shard} must be (index, count) with 0 <= index < count and "
                f"batch_size {batch_size} divisible by count."
            )
        plan = plan.map(lambda indices: np.array_split(indices, count)[index])
    if transform is not None:
        read = _transformed_reader(source, image_key, label_key, where, transform, seed, epoch)
    plan = plan.map(
        functools.partial(
            _make_batch,
            read=read,
            num_classes=num_classes,
            where=where,
            transformed=transform is not None,
        )
    )
    if workers == 0:
        return (plan[i] for i in range(len(plan)))
    return _closing(
        iter(
            plan.to_iter_dataset(
                grain.ReadOptions(num_threads=workers, prefetch_buffer_size=2 * workers)
            )
        )
    )


def _closing(iterator: Any) -> Iterator[dict[str, np.ndarray]]:
    """Yields from grain's iterator; stops its threads when done or abandoned."""
    try:
        yield from iterator
    finally:
        iterator.close()


def _checked_workers(workers: int | None) -> int:
    """``workers``, or the machine's cores for ``None``; a ``ValueError`` if not an int >= 0."""
    if workers is None:
        return available_cores()
    if isinstance(workers, bool) or not isinstance(workers, int | np.integer) or workers < 0:
        raise ValueError(
            f"`workers` must be an int >= 0 (0: read in the calling thread) or None (the "
            f"machine's {available_cores()} cores); got {workers!r}."
        )
    return int(workers)


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity), else ``os.cpu_count()``."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def read_examples(
    source: Any,
    indices: Sequence[int] | np.ndarray,
    *,
    image_key: str = "image",
    label_key: str = "label",
    num_classes: int | None = None,
    transform: Callable[[np.ndarray, np.random.Generator], np.ndarray] | None = None,
    seed: int = 0,
    epoch: int = 0,
) -> dict[str, np.ndarray]:
    """The examples at ``indices`` as one batch, exactly as :func:`batches` makes it.

    The same images, labels, checks and per-example transform randomness
    (``(seed, epoch, example index)``) as the batch of :func:`batches` holding
    these examples; for readers that pick their own rows (e.g. one host's rows
    of every evaluation batch).
    """
    indices = np.asarray(indices, dtype=np.int64)
    if indices.ndim != 1 or indices.size == 0:
        raise ValueError(f"`indices` must be a non-empty 1-D list, got shape {indices.shape}.")
    where = source._where() if isinstance(source, SplitSource) else "`source`"
    read, length = _batch_reader(source, image_key, label_key, where)
    if indices.min() < 0 or indices.max() >= length:
        raise ValueError(f"`indices` must lie in [0, {length}) for {where}.")
    if num_classes is None:
        num_classes = _num_classes_of(source, label_key)
    if transform is not None:
        read = _transformed_reader(source, image_key, label_key, where, transform, seed, epoch)
    return _make_batch(
        indices, read=read, num_classes=num_classes, where=where, transformed=transform is not None
    )


def _num_classes_of(source: Any, label_key: str) -> int | None:
    """``num_classes`` of a source's label feature, when it has a dataset info."""
    if isinstance(source, SplitSource):
        return source.num_classes(label_key)
    info = getattr(source, "dataset_info", None)  # tfds's own data sources
    if info is None or label_key not in info.features:
        return None
    return getattr(info.features[label_key], "num_classes", None)


def _epoch_seed(seed: int, epoch: int) -> int:
    """A 32-bit shuffle seed per ``(seed, epoch)``, uncorrelated across both."""
    return int(np.random.SeedSequence((seed, epoch)).generate_state(1, dtype=np.uint32)[0])


def _batch_reader(
    source: Any, image_key: str, label_key: str, where: str
) -> tuple[Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]], int]:
    """``(read(indices) -> (images, labels), length)`` of a source."""
    if isinstance(source, tuple):
        if len(source) != 2:
            raise ValueError(
                f"`source` as a tuple must be (images, labels); got {len(source)} items."
            )
        images, labels = (np.asarray(array) for array in source)
        if images.shape[:1] != labels.shape or labels.ndim != 1:
            raise ValueError(
                f"`source` arrays disagree: images {images.shape}, labels {labels.shape}; "
                "expected (n, h, w[, c]) and (n,)."
            )
        _check_uint8(images.dtype)
        return (lambda indices: (images[indices], labels[indices])), len(labels)

    def read(indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        indices = [int(index) for index in indices]
        if hasattr(source, "__getitems__"):
            examples = source.__getitems__(indices)
        else:
            examples = [source[index] for index in indices]
        return stack_examples(examples, image_key, label_key, where)

    return read, len(source)


def _transformed_reader(source, image_key, label_key, where, transform, seed, epoch):
    """Like ``_batch_reader``'s reader, with ``transform`` applied to each example."""
    if isinstance(source, tuple):
        images, labels = (np.asarray(array) for array in source)
        fetch = lambda indices: [  # noqa: E731
            {image_key: images[i], label_key: labels[i]} for i in indices
        ]
    elif hasattr(source, "__getitems__"):
        fetch = lambda indices: source.__getitems__([int(i) for i in indices])  # noqa: E731
    else:
        fetch = lambda indices: [source[int(i)] for i in indices]  # noqa: E731

    def read(indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        examples = fetch(indices)
        if examples and (image_key not in examples[0] or label_key not in examples[0]):
            raise ValueError(
                f"examples of {where} have keys {sorted(examples[0])}; `image_key` "
                f"{image_key!r} and `label_key` {label_key!r} must be among them."
            )
        images = []
        for index, example in zip(indices, examples, strict=True):
            image = np.asarray(example[image_key])
            _check_uint8(image.dtype)
            rng = np.random.default_rng([seed, epoch, int(index)])
            images.append(_transformed_image(transform(image, rng)))
        labels = np.asarray([example[label_key] for example in examples], dtype=np.int64)
        return np.stack(images), labels

    return read


def _transformed_image(image: Any) -> np.ndarray:
    """A transform's output: uint8 kept (normalized on the device), anything else float32."""
    image = np.asarray(image)
    return image if image.dtype == np.uint8 else image.astype(np.float32, copy=False)


def _make_batch(
    indices: np.ndarray,
    *,
    read: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]],
    num_classes: int | None,
    where: str,
    transformed: bool = False,
) -> dict[str, np.ndarray]:
    images, labels = read(indices)
    check_labels(labels, indices, num_classes, where)
    if images.ndim == 3:  # (b, h, w): grayscale without a channel axis
        images = images[..., None]
    if not transformed and images.dtype != np.float32:  # uint8 scaled to [0, 1]
        _check_uint8(images.dtype)
        images = images.astype(np.float32) / np.float32(255.0)
    return {"image": images, "label": labels.astype(np.int32)}



def _check_uint8(dtype: np.dtype) -> None:
    if dtype != np.uint8:
        raise ValueError(f"images must be uint8 (0..255) to scale to [0, 1]; got {dtype}.")


def _check_int(argument: str, value: Any, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ValueError(f"`{argument}` must be an int >= {minimum}; got {value!r}.")

