"""Prepared TFDS datasets opened offline: one split for random access, or whole as arrays.

- ``open_split(name, split, data_dir)``: a random-access ``SplitSource`` read
  through ``tfds`` (``builder.as_data_source``, which is ``tfds.data_source``)
  from ``array_record`` files, without TensorFlow. Data prepared as
  ``tfrecord`` is read through ``tfds.load`` instead (TensorFlow required) and
  held in memory. Nothing is ever downloaded.
- ``check_prepared(name, split, data_dir)``: the same checks, reading no record.
- ``load_arrays(name, split, data_dir)``: a whole split as numpy arrays.
- ``percent_split(split, percent)``: the reference's percent-of-train splits.

Batches of a split are :mod:`ftp_jax.data._batches`'s.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import importlib.util
import os
import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import tensorflow_datasets as tfds
from etils import epath
from tensorflow_datasets.core import file_adapters

from ftp_jax.data._builders import OWN_BUILDER_NAMES, is_prepared, offline

__all__ = [
    "PERCENTS",
    "SplitSource",
    "check_labels",
    "check_prepared",
    "load_arrays",
    "open_split",
    "percent_split",
    "stack_examples",
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

    Example:
      >>> from ftp_jax.data import percent_split
      >>> percent_split("train", 10), percent_split("train", 100)
      ('train[:10%]', 'train')
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

    Example (``data_dir``: any directory; preparing it needs no download):
      >>> from ftp_jax.data import open_split, prepare_datasets
      >>> prepare_datasets(data_dir, ("uci_digits",))
      >>> source = open_split("uci_digits", "train[:10%]", data_dir)
      >>> len(source), source[0]["image"].shape
      (126, (28, 28, 1))
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
    images, labels = stack_examples(examples, image_key, label_key, source._where())
    if num_classes is None:
        num_classes = source.num_classes(label_key)
    check_labels(labels, np.arange(len(labels)), num_classes, source._where())
    return images, labels


def stack_examples(
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


def check_labels(
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
