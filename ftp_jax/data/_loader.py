"""Offline loading of any prepared TFDS dataset, and deterministic, resumable batches.

- ``open_split(name, split, data_dir)``: a random-access ``SplitSource`` read
  through ``tfds`` (``builder.as_data_source``, which is ``tfds.data_source``)
  from ``array_record`` files, without TensorFlow. Data prepared as
  ``tfrecord`` is read through ``tfds.load`` instead (TensorFlow required) and
  held in memory. Nothing is ever downloaded.
- ``load_arrays(name, split, data_dir)``: a whole split as numpy arrays.
- ``batches(source, ...)``: ``{"image": float32 NHWC in [0, 1], "label": int32}``
  batches planned by ``grain`` (shuffle, batch, slice), a pure function of
  ``(seed, epoch)``, and able to start at any batch of the epoch (resume);
  read, decoded and transformed by ``workers`` threads of grain's prefetch
  (``MapDataset.to_iter_dataset(grain.ReadOptions(...))``) ahead of the consumer.
- ``percent_split(split, percent)``: the reference's percent-of-train splits.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import functools
import importlib.util
import os
import re
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import grain
import numpy as np
import tensorflow_datasets as tfds
from etils import epath
from tensorflow_datasets.core import file_adapters

from ftp_jax.data._builders import OWN_BUILDER_NAMES, is_prepared, offline

__all__ = [
    "PERCENTS",
    "SplitSource",
    "available_cores",
    "batches",
    "load_arrays",
    "num_batches",
    "open_split",
    "percent_split",
    "read_examples",
]

PERCENTS = (1, 5, 10, 20, 50, 100)
_SPLIT_NAME = re.compile(r"[A-Za-z0-9_]+")
# What a read of a damaged file raises: array_record/Riegeli raise RuntimeError
# (hash mismatch, truncated file, missing shard), Pillow and protobuf raise
# OSError or ValueError subclasses on undecodable bytes.
_READ_ERRORS = (RuntimeError, OSError, ValueError)


@dataclasses.dataclass(frozen=True, eq=False)
class SplitSource(collections.abc.Sequence):
    """One split of a prepared TFDS dataset: ``len(source)``, ``source[i]`` -> example dict.

    A read of a damaged file raises ``OSError`` naming the dataset, the split,
    the record and the directory to prepare again.

    Attributes:
      name: the dataset name as given, config included (``"uci_digits_corrupted/rotate"``).
      split: the split as given, slicing included (``"train[:10%]"``).
      data_dir: the TFDS data directory.
      info: the dataset's ``tfds.core.DatasetInfo``.
      records: the underlying random-access records: ``tfds``'s
        ``ArrayRecordDataSource``, or a list of examples for ``tfrecord`` data.
    """

    name: str
    split: str
    data_dir: str
    info: tfds.core.DatasetInfo
    records: Sequence[dict[str, Any]]

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict[str, Any]:
        if isinstance(index, slice):
            raise TypeError("SplitSource does not take slices; slice the split: 'train[:100]'.")
        index = self._checked_index(index)
        try:
            return self.records[index]
        except _READ_ERRORS as error:
            raise self._read_error(f"record {index}", error) from error

    def __getitems__(self, indices: Sequence[int]) -> list[dict[str, Any]]:
        indices = [self._checked_index(index) for index in indices]
        try:
            if hasattr(self.records, "__getitems__"):
                return list(self.records.__getitems__(indices))
            return [self.records[index] for index in indices]
        except _READ_ERRORS as error:
            where = f"records {indices[0]}..{indices[-1]}" if indices else "no record"
            raise self._read_error(where, error) from error

    def num_classes(self, label_key: str = "label") -> int | None:
        """``num_classes`` of the ``label_key`` feature (a ``ClassLabel``), else ``None``."""
        feature = self.info.features[label_key] if label_key in self.info.features else None
        return getattr(feature, "num_classes", None)

    def _checked_index(self, index: int) -> int:
        length = len(self.records)
        if not -length <= index < length:
            raise IndexError(f"index {index} out of range for {self._where()} ({length} examples).")
        return int(index) % length

    def _where(self) -> str:
        return f"split {self.split!r} of dataset {self.name!r} in {self.data_dir!r}"

    def _read_error(self, where: str, error: BaseException) -> OSError:
        return OSError(
            f"could not read {where} of {self._where()}: the prepared files are corrupted "
            f"or unreadable ({type(error).__name__}: {error}). Delete "
            f"{os.fspath(self.info.data_dir)!r} and prepare the dataset again: "
            f"{_prepare_hint(self.name, self.data_dir)}"
        )


def percent_split(split: str, percent: int) -> str:
    """The first ``percent`` % of ``split``, in TFDS slicing syntax: ``"train[:10%]"``.

    The reference fine-tunes on 1, 5, 10, 20, 50 or 100 percent of the training
    set. The records of a TFDS split are stored in a fixed pseudo-random order
    (a hash of each example's key), so the first ``percent`` % is a fixed random
    subset, and the smaller subsets are nested in the larger ones. TFDS rounds
    ``percent`` % of the split size to the nearest example.

    Args:
      split: a plain split name such as ``"train"`` (no slicing).
      percent: one of ``PERCENTS``: 1, 5, 10, 20, 50, 100.

    Returns:
      ``split`` itself for 100, else ``f"{split}[:{percent}%]"``.

    Raises:
      ValueError: for a split that is not a plain name, or another percent.

    Example::

      percent_split("train", 10)  # 'train[:10%]'
    """
    if not isinstance(split, str) or not _SPLIT_NAME.fullmatch(split):
        raise ValueError(
            f"`split` must be a plain split name such as 'train' (letters, digits, '_'); "
            f"got {split!r}."
        )
    if isinstance(percent, bool) or not isinstance(percent, int | np.integer):
        raise ValueError(f"`percent` must be an int, one of {PERCENTS}; got {percent!r}.")
    if percent not in PERCENTS:
        raise ValueError(f"`percent` must be one of {PERCENTS}; got {percent}.")
    return split if percent == 100 else f"{split}[:{int(percent)}%]"


def open_split(name: str, split: str, data_dir: str | os.PathLike) -> SplitSource:
    """Opens one split of a prepared TFDS dataset for random access; never downloads.

    Works for any TFDS dataset prepared in ``data_dir``, registered or not (an
    unregistered one is read from its files). ``array_record`` (or another
    random-access format) is read through ``tfds`` without TensorFlow;
    ``tfrecord`` is read through ``tfds.load`` into memory when TensorFlow is
    installed.

    Args:
      name: ``"dataset"``, ``"dataset/config"`` or ``"dataset/config:version"``.
      split: a split name with optional TFDS slicing: ``"test"``, ``"train[:10%]"``.
      data_dir: the TFDS data directory the dataset was prepared in.

    Returns:
      A ``SplitSource``: ``len()``, ``[i]`` -> example dict, ``.info``.

    Raises:
      FileNotFoundError: the dataset is not prepared in ``data_dir`` (the
        message says how to prepare it).
      ValueError: an unknown split or config, or an empty split.
      ImportError: the dataset is prepared only as ``tfrecord`` and TensorFlow is
        not installed.
      OSError: the prepared files are corrupted or unreadable.

    Example::

      prepare_datasets("/tmp/tfds")
      source = open_split("uci_digits", "train[:10%]", "/tmp/tfds")
      source[0]["image"].shape  # (28, 28, 1)
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"`name` must be a dataset name such as 'mnist5k'; got {name!r}.")
    if not isinstance(split, str) or not split:
        raise ValueError(f"`split` must be a split such as 'train[:10%]'; got {split!r}.")
    data_dir = os.fspath(data_dir)
    with offline():
        return _open_split(name, split, data_dir)


def check_prepared(name: str, split: str, data_dir: str | os.PathLike) -> None:
    """Raises what :func:`open_split` would for a missing dataset or split, reading no record.

    For a check of every input before a long run starts.

    Raises:
      FileNotFoundError: the dataset is not prepared in ``data_dir`` (the message
        says how to prepare it).
      ValueError: an unknown split or config, or an empty split.
    """
    data_dir = os.fspath(data_dir)
    with offline():
        builder = _prepared_builder(name, data_dir)
        if _num_examples(builder, name, split, data_dir) == 0:
            raise ValueError(
                f"split {split!r} of dataset {name!r} in {data_dir!r} is empty (0 examples; the "
                f"dataset's splits: {_split_sizes(builder)})."
            )


def _open_split(name: str, split: str, data_dir: str) -> SplitSource:
    builder = _prepared_builder(name, data_dir)
    num_examples = _num_examples(builder, name, split, data_dir)
    if num_examples == 0:
        raise ValueError(
            f"split {split!r} of dataset {name!r} in {data_dir!r} is empty (0 examples; the "
            f"dataset's splits: {_split_sizes(builder)})."
        )
    formats = builder.info.available_file_formats() or {builder.info.file_format}
    if formats & file_adapters.FileFormat.with_random_access():
        records = builder.as_data_source(split=split)
    elif file_adapters.FileFormat.TFRECORD in formats:
        records = _load_with_tensorflow(name, split, data_dir)
    else:
        raise ValueError(
            f"dataset {name!r} in {data_dir!r} is stored as {sorted(f.value for f in formats)}, "
            f"which this loader does not read; prepare it as array_record: "
            f"{_prepare_hint(name, data_dir)}"
        )
    source = SplitSource(
        name=name, split=split, data_dir=data_dir, info=builder.info, records=records
    )
    # Fail early on the usual damage (a truncated copy, a missing shard): read the first and
    # the last record. Damage elsewhere fails on the read of the records it hits.
    source.__getitems__([0, len(source) - 1])
    return source


def load_arrays(
    name: str,
    split: str,
    data_dir: str | os.PathLike,
    *,
    image_key: str = "image",
    label_key: str = "label",
    num_classes: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """A whole split as ``(images, labels)``: ``uint8 (n, h, w, c)`` and ``int64 (n,)``.

    Labels are checked against ``num_classes``, by default the ``num_classes``
    of the dataset's ``label_key`` feature (not checked when it has none).

    Raises:
      ValueError: a label outside ``[0, num_classes)``, or a missing key; and
        everything ``open_split`` raises.
    """
    source = open_split(name, split, data_dir)
    examples = source.__getitems__(range(len(source)))
    images, labels = _stack(examples, image_key, label_key, source._where())
    if num_classes is None:
        num_classes = source.num_classes(label_key)
    _check_labels(labels, np.arange(len(labels)), num_classes, source._where())
    return images, labels


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

    Example::

      images, labels = load_arrays("mnist5k", "train", data_dir)
      for batch in batches((images, labels), batch_size=128, shuffle=True, seed=0,
                           epoch=3, drop_remainder=True, start_batch=10):
          ...
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
        return _stack(examples, image_key, label_key, where)

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
    _check_labels(labels, indices, num_classes, where)
    if images.ndim == 3:  # (b, h, w): grayscale without a channel axis
        images = images[..., None]
    if not transformed and images.dtype != np.float32:  # uint8 scaled to [0, 1]
        _check_uint8(images.dtype)
        images = images.astype(np.float32) / np.float32(255.0)
    return {"image": images, "label": labels.astype(np.int32)}


def _stack(
    examples: Sequence[dict[str, Any]], image_key: str, label_key: str, where: str
) -> tuple[np.ndarray, np.ndarray]:
    if examples and (image_key not in examples[0] or label_key not in examples[0]):
        raise ValueError(
            f"examples of {where} have keys {sorted(examples[0])}; `image_key` {image_key!r} "
            f"and `label_key` {label_key!r} must be among them."
        )
    images = np.stack([np.asarray(example[image_key]) for example in examples])
    labels = np.asarray([example[label_key] for example in examples], dtype=np.int64)
    return images, labels


def _check_labels(
    labels: np.ndarray, indices: np.ndarray, num_classes: int | None, where: str
) -> None:
    """Raises when a label lies outside ``[0, num_classes)``; nothing to check without it."""
    if num_classes is None:
        return
    bad = np.flatnonzero((labels < 0) | (labels >= num_classes))
    if bad.size:
        raise ValueError(
            f"label {int(labels[bad[0]])} of example {int(np.asarray(indices)[bad[0]])} of "
            f"{where} is outside [0, num_classes={num_classes}) ({bad.size} such "
            f"labels in this read); the data and the dataset's features disagree: prepare the "
            f"dataset again or pass the right `num_classes`."
        )


def _check_uint8(dtype: np.dtype) -> None:
    if dtype != np.uint8:
        raise ValueError(f"images must be uint8 (0..255) to scale to [0, 1]; got {dtype}.")


def _check_int(argument: str, value: Any, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ValueError(f"`{argument}` must be an int >= {minimum}; got {value!r}.")


def _prepare_hint(name: str, data_dir: str) -> str:
    base = name.partition("/")[0].partition(":")[0]
    if base in OWN_BUILDER_NAMES:
        return f"`python -m ftp_jax.data.prepare --data_dir {data_dir}` (no download needed)."
    return (
        f"on a machine with internet, `tfds build {name} --data_dir DIR "
        f"--file_format array_record`, then copy DIR/{base} into {data_dir}."
    )


def _prepared_builder(name: str, data_dir: str) -> tfds.core.DatasetBuilder:
    """The builder of ``name`` in ``data_dir``; ``FileNotFoundError`` when not prepared."""
    try:
        builder = tfds.builder(name, data_dir=data_dir, try_gcs=False)
    except tfds.core.registered.DatasetNotFoundError as error:
        raise FileNotFoundError(
            f"dataset {name!r} is not prepared in {data_dir!r}{_found(name, data_dir)}, and TFDS "
            f"has no builder of that name ({str(error).splitlines()[0]}). Nothing is downloaded "
            f"at run time. Prepare it: {_prepare_hint(name, data_dir)}"
        ) from error
    if not is_prepared(builder):
        raise FileNotFoundError(
            f"dataset {name!r} (version {builder.version}) is not prepared in {data_dir!r}"
            f"{_found(name, data_dir)}. Nothing is downloaded at run time. Prepare it: "
            f"{_prepare_hint(name, data_dir)}"
        )
    return builder


def _found(name: str, data_dir: str) -> str:
    """``"; found there: [...]"``: the prepared variants of the dataset in ``data_dir``, if any."""
    base = epath.Path(data_dir) / name.partition("/")[0].partition(":")[0]
    if not base.exists():
        return ""
    found = sorted(
        os.fspath(path.parent.relative_to(data_dir))
        for pattern in ("*/dataset_info.json", "*/*/dataset_info.json")  # version, config/version
        for path in base.glob(pattern)
    )
    return f"; found there: {found}" if found else ""


def _num_examples(builder: tfds.core.DatasetBuilder, name: str, split: str, data_dir: str) -> int:
    try:
        return builder.info.splits[split].num_examples
    except (ValueError, KeyError, AssertionError) as error:
        raise ValueError(
            f"`split` {split!r} is not a split of dataset {name!r} in {data_dir!r}: {error} "
            f"The dataset's splits: {_split_sizes(builder)}; slice them as 'train[:10%]' or "
            f"'test[100:200]'."
        ) from error


def _split_sizes(builder: tfds.core.DatasetBuilder) -> dict[str, int]:
    return {name: info.num_examples for name, info in builder.info.splits.items()}


def _tensorflow_available() -> bool:
    return importlib.util.find_spec("tensorflow") is not None


def _load_with_tensorflow(name: str, split: str, data_dir: str) -> list[dict[str, Any]]:
    """A ``tfrecord`` split read through ``tfds.load``, as a list of numpy examples."""
    if not _tensorflow_available():
        raise ImportError(
            f"dataset {name!r} in {data_dir!r} is prepared as tfrecord, which needs TensorFlow "
            f"to read: `pip install tensorflow`, or prepare it as array_record instead: "
            f"{_prepare_hint(name, data_dir)}"
        )
    dataset = tfds.load(
        name, split=split, data_dir=data_dir, download=False, try_gcs=False, shuffle_files=False
    )
    return list(tfds.as_numpy(dataset))
