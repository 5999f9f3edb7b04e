"""Tests for ftp_jax.data: offline TFDS builders, corruptions and the loader.

Every dataset is prepared into a temporary directory, with the network blocked
(any socket connection fails the test): nothing is downloaded and nothing is
read from outside the temporary directories.
"""

import io
import json
import os
import re
import shutil
import sys

import jax
import jax.numpy as jnp
import numpy as np
import PIL.Image
import pytest
import tensorflow_datasets as tfds
from absl.testing import parameterized

from ftp_jax import data
from ftp_jax.data import _builders, _corruptions, _digits, _splits, prepare

SPLIT_SIZES = {
    "mnist5k": {"train": 3500, "validation": 500, "test": 1000},
    "uci_digits": {"train": 1258, "validation": 180, "test": 359},
}
# TFDS rounds percent slices to the nearest example: 1% of 1258 is 12.58 -> 13.
PERCENT_SIZES = {
    "mnist5k": {1: 35, 5: 175, 10: 350, 20: 700, 50: 1750, 100: 3500},
    "uci_digits": {1: 13, 5: 63, 10: 126, 20: 252, 50: 629, 100: 1258},
}
# Built twice to check that preparation is deterministic: both domains, a
# corruption that draws random numbers per example and one that draws none.
REBUILT = ("mnist5k", "uci_digits", "uci_digits_corrupted/rotate", "mnist5k_corrupted/low_contrast")


# No test here may open a network connection (the data is built offline).
pytestmark = pytest.mark.usefixtures("no_network")


@pytest.fixture(scope="module")
def prepared_dir(tmp_path_factory, no_network):
    data_dir = tmp_path_factory.mktemp("tfds")
    data.prepare_datasets(data_dir)
    return os.fspath(data_dir)


@pytest.fixture(autouse=True)
def _attach_dirs(request, prepared_dir, tmp_path):
    request.cls.data_dir = prepared_dir
    request.cls.tmp_dir = os.fspath(tmp_path)


class ToyDigits(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """A dataset TFDS does not know by name: read back from its files alone."""

    VERSION = tfds.core.Version("2.0.0")
    BUILDER_CONFIGS = [tfds.core.BuilderConfig(name="plain")]

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self,
            features=tfds.features.FeaturesDict(
                {
                    "picture": tfds.features.Image(shape=(4, 4, 1)),
                    "digit": tfds.features.ClassLabel(num_classes=10),
                }
            ),
        )

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples(30), "test": self._generate_examples(7)}

    def _generate_examples(self, count):
        for index in range(count):
            buffer = io.BytesIO()
            PIL.Image.fromarray(np.full((4, 4), 8 * index, np.uint8)).save(buffer, format="PNG")
            yield index, {"picture": buffer.getvalue(), "digit": index % 10}


def _toy_dir(tmp_dir, file_format="array_record"):
    with _builders.offline():  # TFDS < 4.9.10 would ask GCS for the toy's metadata
        ToyDigits(data_dir=tmp_dir, config="plain", file_format=file_format).download_and_prepare()
    return tmp_dir


def _edit_json(path, edit):
    with open(path) as file:
        content = json.load(file)
    edit(content)
    with open(path, "w") as file:
        json.dump(content, file)


def _all(name, split, data_dir):
    """Every field of every example of a split, as arrays."""
    source = data.open_split(name, split, data_dir)
    examples = [source[index] for index in range(len(source))]
    return {key: np.stack([example[key] for example in examples]) for key in examples[0]}


def _labels_of(batch_iterator):
    return [batch["label"].tolist() for batch in batch_iterator]


class DigitsTest(parameterized.TestCase):
    def test_domain_arrays_format(self):
        for domain in _digits.DOMAINS:
            images, labels = _digits.domain_arrays(domain)
            self.assertEqual(images.shape[1:], (28, 28, 1))
            self.assertEqual(images.dtype, np.uint8)
            self.assertEqual(labels.dtype, np.int64)
            self.assertEqual(set(np.unique(labels)), set(range(10)))
            # White ink on black: the border is background.
            self.assertLess(images[:, 0, :, :].mean(), 5)
        self.assertLen(_digits.domain_arrays("mnist5k")[1], 5000)
        self.assertLen(_digits.domain_arrays("uci_digits")[1], 1797)

    def test_resize_matches_jax_image_resize(self):
        images = np.random.default_rng(0).random((3, 8, 8))
        for size in [(20, 20), (28, 28), (11, 20)]:  # upsampling: no antialiasing
            expected = jax.image.resize(jnp.asarray(images), (3, *size), "linear")
            np.testing.assert_allclose(
                _digits.resize_bilinear(images, size), np.asarray(expected), atol=1e-6
            )

    def test_uci_digit_is_the_resized_source_in_a_20x20_box(self):
        from sklearn.datasets import load_digits

        source = load_digits().images[:4] / 16.0
        box = _digits.resize_bilinear(source, (20, 20))
        images, _ = _digits.domain_arrays("uci_digits")
        np.testing.assert_array_equal(
            images[:4, 4:24, 4:24, 0], np.rint(box * 255).astype(np.uint8)
        )
        self.assertEqual(images[:4, :4].max(), 0)
        self.assertEqual(images[:4, 24:].max(), 0)

    @parameterized.parameters(5000, 1797, 10)
    def test_splits_partition_the_examples(self, num_examples):
        splits = _digits.split_indices(num_examples)
        joined = np.concatenate(list(splits.values()))
        np.testing.assert_array_equal(np.sort(joined), np.arange(num_examples))
        self.assertEqual(len(splits["test"]), round(0.2 * num_examples))
        self.assertEqual(len(splits["validation"]), round(0.1 * num_examples))

    def test_unknown_domain(self):
        with self.assertRaisesRegex(ValueError, r"unknown domain 'emnist'"):
            _digits.domain_arrays("emnist")


class CorruptionTest(parameterized.TestCase):
    def _digit(self, index=0):
        return _digits.domain_split("mnist5k", "test")[1][index]

    @parameterized.parameters(*_corruptions.CORRUPTIONS)
    def test_deterministic_per_index_and_changes_the_image(self, corruption):
        image = self._digit()
        once = _corruptions.corrupt(image, corruption, 7)
        self.assertEqual(once.dtype, np.uint8)
        self.assertEqual(once.shape, image.shape)
        np.testing.assert_array_equal(once, _corruptions.corrupt(image, corruption, 7))
        self.assertGreater(np.abs(once.astype(int) - image).mean(), 5)

    @parameterized.parameters("gaussian_noise", "impulse_noise", "rotate", "translate")
    def test_random_corruptions_differ_across_indices(self, corruption):
        image = self._digit()
        corrupted = {_corruptions.corrupt(image, corruption, index).tobytes() for index in range(8)}
        self.assertGreater(len(corrupted), 2)

    def test_gaussian_noise_scale(self):
        gray = np.full((28, 28, 1), 128, np.uint8)
        noisy = np.stack([_corruptions.corrupt(gray, "gaussian_noise", i) for i in range(50)])
        # Mid-gray plus N(0, 0.35^2), clipped to [0, 1]: compare with a large sample of that.
        clipped = np.clip(128 / 255 + np.random.default_rng(1).normal(0, 0.35, 10**6), 0, 1)
        self.assertAlmostEqual((noisy / 255).std(), clipped.std(), delta=0.005)
        self.assertAlmostEqual((noisy / 255).mean(), clipped.mean(), delta=0.005)

    def test_impulse_noise_sets_a_fifth_of_the_pixels_to_black_or_white(self):
        gray = np.full((28, 28, 1), 128, np.uint8)
        noisy = np.stack([_corruptions.corrupt(gray, "impulse_noise", i) for i in range(50)])
        hit = noisy != 128
        self.assertBetween(hit.mean(), 0.19, 0.21)
        self.assertContainsSubset(set(np.unique(noisy[hit]).tolist()), {0, 255})

    def test_blur_of_a_point_is_a_gaussian_of_the_stated_width(self):
        point = np.zeros((28, 28, 1), np.uint8)
        point[14, 14] = 255
        blurred = _corruptions._gaussian_blur(point[..., 0] / 255.0, None)
        self.assertAlmostEqual(blurred.sum(), 1.0, places=6)
        offsets = np.arange(28) - 14
        variance = (blurred.sum(1) * offsets**2).sum()
        self.assertAlmostEqual(np.sqrt(variance), _corruptions.BLUR_STDDEV, delta=0.05)

    def test_low_contrast_keeps_the_mean_and_shrinks_the_spread(self):
        image = self._digit().astype(np.float64) / 255
        low = _corruptions._low_contrast(image[..., 0], None)
        self.assertAlmostEqual(low.mean(), image.mean(), places=9)
        self.assertAlmostEqual(low.std(), 0.3 * image.std(), places=9)

    def test_rotation_keeps_a_centred_disk(self):
        y, x = np.mgrid[:28, :28]
        disk = ((y - 13.5) ** 2 + (x - 13.5) ** 2 < 36).astype(np.float64)
        bar = np.zeros((28, 28))
        bar[4:24, 13:15] = 1.0  # a vertical bar: rotation moves it
        rng = np.random.default_rng(0)
        rotated_disk = _corruptions._rotate(disk, rng)
        self.assertLess(np.abs(rotated_disk - disk).mean(), 0.03)  # only the rim is resampled
        self.assertAlmostEqual(rotated_disk.sum(), disk.sum(), delta=1.0)
        rotated_bar = _corruptions._rotate(bar, rng)
        self.assertLess((rotated_bar * bar).sum(), 0.5 * bar.sum())

    def test_translation_shifts_by_one_or_two_pixels(self):
        image = np.zeros((28, 28))
        image[10:18, 12:16] = 1.0
        for index in range(20):
            shifted = _corruptions._translate(image, np.random.default_rng(index))
            self.assertEqual(shifted.sum(), image.sum())  # the block stays inside
            rows, cols = np.nonzero(shifted)
            self.assertIn(abs(rows.min() - 10), (1, 2))
            self.assertIn(abs(cols.min() - 12), (1, 2))

    def test_errors(self):
        with self.assertRaisesRegex(ValueError, r"unknown corruption 'fog'; expected one of"):
            _corruptions.corrupt(self._digit(), "fog", 0)
        with self.assertRaisesRegex(ValueError, r"must be uint8 of shape \(h, w, 1\); got float"):
            _corruptions.corrupt(self._digit().astype(np.float32), "rotate", 0)


class BuilderTest(parameterized.TestCase):
    @parameterized.parameters(*data.DATASETS)
    def test_format_and_split_sizes(self, name):
        base = name.partition("/")[0].removesuffix("_corrupted")
        expected = SPLIT_SIZES[base] if "/" not in name else {"test": SPLIT_SIZES[base]["test"]}
        builder = tfds.builder(name, data_dir=self.data_dir)
        self.assertEqual(builder.info.file_format.value, "array_record")
        self.assertEqual(
            {split: info.num_examples for split, info in builder.info.splits.items()}, expected
        )
        source = data.open_split(name, "test", self.data_dir)
        example = source[0]
        self.assertEqual(example["image"].shape, (28, 28, 1))
        self.assertEqual(example["image"].dtype, np.uint8)
        self.assertEqual(source.num_classes(), 10)

    @parameterized.parameters("mnist5k", "uci_digits")
    def test_splits_hold_the_source_examples(self, domain):
        images, labels = _digits.domain_arrays(domain)
        seen = []
        for split in SPLIT_SIZES[domain]:
            fields = _all(domain, split, self.data_dir)
            np.testing.assert_array_equal(fields["image"], images[fields["index"]])
            np.testing.assert_array_equal(fields["label"], labels[fields["index"]])
            self.assertTrue(((fields["label"] >= 0) & (fields["label"] < 10)).all())
            seen.append(fields["index"])
        np.testing.assert_array_equal(np.sort(np.concatenate(seen)), np.arange(len(labels)))

    @parameterized.parameters(*data.CORRUPTED_DATASETS)
    def test_corrupted_split_is_the_clean_test_split_corrupted(self, name):
        base, corruption = name.split("/")
        clean = _all(base.removesuffix("_corrupted"), "test", self.data_dir)
        corrupted = _all(name, "test", self.data_dir)
        # Same examples in the same order, so corrupted[i] pairs with clean[i].
        np.testing.assert_array_equal(corrupted["index"], clean["index"])
        np.testing.assert_array_equal(corrupted["label"], clean["label"])
        expected = [
            _corruptions.corrupt(image, corruption, index)
            for image, index in zip(clean["image"], clean["index"], strict=True)
        ]
        np.testing.assert_array_equal(corrupted["image"], np.stack(expected))
        changed = (corrupted["image"] != clean["image"]).any(axis=(1, 2, 3))
        self.assertGreater(changed.mean(), 0.95)

    def test_building_twice_gives_identical_arrays(self):
        _digits.domain_arrays.cache_clear()  # read the source packages again
        data.prepare_datasets(self.tmp_dir, REBUILT)
        for name in REBUILT:
            for split in tfds.builder(name, data_dir=self.data_dir).info.splits:
                first, second = _all(name, split, self.data_dir), _all(name, split, self.tmp_dir)
                for key in first:
                    self.assertEqual(first[key].tobytes(), second[key].tobytes(), (name, key))

    def test_prepare_is_idempotent(self):
        data.prepare_datasets(self.tmp_dir, ("uci_digits_corrupted/translate",))
        info = os.path.join(self.tmp_dir, "uci_digits_corrupted/translate/1.0.0/dataset_info.json")
        before = os.stat(info).st_mtime_ns
        prepare.main(["--data_dir", self.tmp_dir, "--datasets", "uci_digits_corrupted/translate"])
        self.assertEqual(os.stat(info).st_mtime_ns, before)
        self.assertEqual(sorted(os.listdir(self.tmp_dir)), ["uci_digits_corrupted"])

    def test_prepare_without_importlib_resources_is_a_clear_error(self):
        with pytest.MonkeyPatch.context() as patch:
            patch.setitem(sys.modules, "importlib_resources", None)
            with self.assertRaisesRegex(ImportError, r"`pip install importlib_resources`"):
                data.prepare_datasets(self.tmp_dir, ("uci_digits",))

    def test_prepare_rejects_unknown_names(self):
        with self.assertRaisesRegex(ValueError, r"`name` 'mnist' is not one of this project's"):
            data.prepare_datasets(self.tmp_dir, ("mnist",))

    def test_domain_shift_is_real(self):
        # Nearest centroid fitted on mnist5k train: much worse on the other domain.
        accuracy = prepare.nearest_centroid_report(self.data_dir)
        self.assertGreater(accuracy["mnist5k"], 0.75)
        self.assertLess(accuracy["uci_digits"], accuracy["mnist5k"] - 0.25)
        self.assertLess(accuracy["mnist5k_corrupted/rotate"], accuracy["mnist5k"] - 0.1)


class OpenSplitTest(parameterized.TestCase):
    @parameterized.product(domain=("mnist5k", "uci_digits"), percent=data.PERCENTS)
    def test_percent_split_sizes(self, domain, percent):
        split = data.percent_split("train", percent)
        self.assertLen(
            data.open_split(domain, split, self.data_dir), PERCENT_SIZES[domain][percent]
        )

    def test_percent_splits_are_nested(self):
        small = _all("uci_digits", data.percent_split("train", 5), self.data_dir)["index"]
        large = _all("uci_digits", data.percent_split("train", 20), self.data_dir)["index"]
        np.testing.assert_array_equal(large[: len(small)], small)

    def test_percent_split_strings(self):
        self.assertEqual(data.percent_split("train", 10), "train[:10%]")
        self.assertEqual(data.percent_split("train", 100), "train")
        self.assertEqual(data.percent_split("validation", np.int64(1)), "validation[:1%]")

    @parameterized.parameters(3, 0, 150, -10)
    def test_percent_split_rejects_other_percents(self, percent):
        with self.assertRaisesRegex(
            ValueError, rf"must be one of \(1, 5, 10, 20, 50, 100\); got {percent}"
        ):
            data.percent_split("train", percent)

    @parameterized.parameters("10", 10.0, True, None)
    def test_percent_split_rejects_non_ints(self, percent):
        with self.assertRaisesRegex(ValueError, r"`percent` must be an int"):
            data.percent_split("train", percent)

    @parameterized.parameters("train[:10%]", "", "train test", None)
    def test_percent_split_rejects_sliced_or_bad_splits(self, split):
        with self.assertRaisesRegex(ValueError, r"`split` must be a plain split name"):
            data.percent_split(split, 10)

    def test_unregistered_dataset_is_read_from_its_files(self):
        toy_dir = _toy_dir(self.tmp_dir)
        self.assertNotIn("toy_digits", tfds.list_builders(with_community_datasets=False))
        source = data.open_split("toy_digits/plain", "test[2:5]", toy_dir)
        self.assertLen(source, 3)
        self.assertEqual(source.num_classes("digit"), 10)
        pictures, digits = data.load_arrays(
            "toy_digits/plain", "train", toy_dir, image_key="picture", label_key="digit"
        )
        self.assertEqual(pictures.shape, (30, 4, 4, 1))
        # Each toy picture is filled with 8 * its key, and its digit is key % 10.
        np.testing.assert_array_equal(pictures[:, 0, 0, 0] // 8 % 10, digits)

    def test_missing_own_dataset(self):
        with self.assertRaisesRegex(
            FileNotFoundError,
            rf"dataset 'uci_digits' \(version 1.0.0\) is not prepared in "
            rf"'{re.escape(self.tmp_dir)}'.*python -m ftp_jax.data.prepare --data_dir "
            rf"{re.escape(self.tmp_dir)}",
        ):
            data.open_split("uci_digits", "train", self.tmp_dir)

    def test_missing_tfds_dataset(self):
        with self.assertRaisesRegex(
            FileNotFoundError,
            r"dataset 'mnist' \(version [0-9.]+\) is not prepared in .* Nothing is downloaded"
            r".*`tfds build mnist --data_dir DIR --file_format array_record`, then copy DIR/mnist",
        ):
            data.open_split("mnist", "train", self.tmp_dir)

    def test_unknown_dataset(self):
        with self.assertRaisesRegex(
            FileNotFoundError,
            r"dataset 'no_such_digits' is not prepared in .*, and TFDS has no builder of that name",
        ):
            data.open_split("no_such_digits", "train", self.tmp_dir)

    def test_missing_version_lists_what_is_there(self):
        with self.assertRaisesRegex(
            FileNotFoundError,
            r"'toy_digits/plain:9.9.9'.*found there: \['toy_digits/plain/2.0.0'\]",
        ):
            data.open_split("toy_digits/plain:9.9.9", "train", _toy_dir(self.tmp_dir))

    @parameterized.parameters("test[:0]", "train[5:5]", "validation[:0%]")
    def test_empty_split(self, split):
        with self.assertRaisesRegex(
            ValueError, rf"split '{re.escape(split)}' of dataset 'uci_digits' .* is empty"
        ):
            data.open_split("uci_digits", split, self.data_dir)

    def test_unknown_split(self):
        with self.assertRaisesRegex(
            ValueError, r"`split` 'valid' is not a split of dataset 'mnist5k'.*'validation': 500"
        ):
            data.open_split("mnist5k", "valid", self.data_dir)

    def _copy(self, name):
        copy_dir = os.path.join(self.tmp_dir, "copy")
        shutil.copytree(os.path.join(self.data_dir, name), os.path.join(copy_dir, name))
        return copy_dir

    def test_overwritten_record_is_a_clear_error(self):
        copy_dir = self._copy("uci_digits")
        shard = os.path.join(
            copy_dir, "uci_digits/1.0.0/uci_digits-test.array_record-00000-of-00001"
        )
        with open(shard, "r+b") as file:
            file.seek(os.path.getsize(shard) // 3)
            file.write(bytes(range(256)) * 4)
        with self.assertRaisesRegex(
            OSError,
            r"could not read records? .* of split 'test' of dataset 'uci_digits' .*: the prepared "
            r"files are corrupted or unreadable \(RuntimeError: .*Riegeli.*\)\. Delete .*uci_digits"
            r"/1\.0\.0' and prepare the dataset again: `python -m ftp_jax.data.prepare",
        ):
            data.load_arrays("uci_digits", "test", copy_dir)
        # The other splits' files are intact.
        self.assertLen(data.load_arrays("uci_digits", "validation", copy_dir)[1], 180)

    def test_truncated_file_fails_on_open(self):
        copy_dir = self._copy("uci_digits")
        shard = os.path.join(
            copy_dir, "uci_digits/1.0.0/uci_digits-train.array_record-00000-of-00001"
        )
        with open(shard, "r+b") as file:
            file.truncate(os.path.getsize(shard) // 2)
        with self.assertRaisesRegex(OSError, r"could not read records 0\.\.1257 of split 'train'"):
            data.open_split("uci_digits", "train", copy_dir)

    def test_label_outside_num_classes(self):
        toy_dir = _toy_dir(self.tmp_dir)
        features = os.path.join(toy_dir, "toy_digits/plain/2.0.0/features.json")
        _edit_json(
            features,
            lambda content: content["featuresDict"]["features"]["digit"]["classLabel"].update(
                numClasses="3"
            ),
        )
        source = data.open_split("toy_digits/plain", "train", toy_dir)
        digits = [example["digit"] for example in source]  # in the stored (hashed) order
        first_bad = next(index for index, digit in enumerate(digits) if digit >= 3)
        with self.assertRaisesRegex(
            ValueError,
            rf"label {digits[first_bad]} of example {first_bad} of split 'train' of dataset "
            r"'toy_digits/plain' in .* is outside \[0, num_classes=3\) \(21 such labels in this "
            r"read\); the data and the dataset's features disagree",
        ):
            data.load_arrays(
                "toy_digits/plain", "train", toy_dir, image_key="picture", label_key="digit"
            )
        iterator = data.batches(
            source, batch_size=1, shuffle=False, seed=0, epoch=0, drop_remainder=False,
            image_key="picture", label_key="digit",
        )  # fmt: skip
        for index in range(first_bad):
            self.assertEqual(next(iterator)["label"].tolist(), [digits[index]])
        with self.assertRaisesRegex(
            ValueError, rf"label {digits[first_bad]} of example {first_bad} .* outside \[0, num"
        ):
            next(iterator)

    def test_explicit_num_classes_is_checked(self):
        with self.assertRaisesRegex(ValueError, r"outside \[0, num_classes=5\)"):
            data.load_arrays("uci_digits", "validation", self.data_dir, num_classes=5)

    def test_tfrecord_without_tensorflow_is_a_clear_error(self):
        if _splits._tensorflow_available():
            self.skipTest("TensorFlow is installed: tfrecord data is read through tfds.load.")
        toy_dir = _toy_dir(self.tmp_dir)
        info = os.path.join(toy_dir, "toy_digits/plain/2.0.0/dataset_info.json")
        _edit_json(info, lambda content: content.update(fileFormat="tfrecord"))
        with self.assertRaisesRegex(
            ImportError,
            r"dataset 'toy_digits/plain' in .* is prepared as tfrecord, which needs TensorFlow to "
            r"read: `pip install tensorflow`, or prepare it as array_record instead",
        ):
            data.open_split("toy_digits/plain", "train", toy_dir)

    def test_tfrecord_is_read_through_tfds_load(self):
        toy_dir = _toy_dir(self.tmp_dir)
        info = os.path.join(toy_dir, "toy_digits/plain/2.0.0/dataset_info.json")
        _edit_json(info, lambda content: content.update(fileFormat="tfrecord"))
        calls = []
        examples = [{"picture": np.zeros((4, 4, 1), np.uint8), "digit": 1}] * 30

        def fake_load(name, **kwargs):
            calls.append((name, kwargs))
            return examples

        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(_splits, "_tensorflow_available", lambda: True)
            patch.setattr(tfds, "load", fake_load)
            patch.setattr(tfds, "as_numpy", lambda dataset: dataset)
            source = data.open_split("toy_digits/plain", "train", toy_dir)
        self.assertEqual(list(source.records), examples)
        self.assertEqual(calls[0][0], "toy_digits/plain")
        self.assertEqual(calls[0][1]["split"], "train")
        self.assertIs(calls[0][1]["download"], False)
        self.assertIs(calls[0][1]["try_gcs"], False)

    def test_tfrecord_with_tensorflow_matches_array_record(self):
        if not _splits._tensorflow_available():
            self.skipTest("TensorFlow is not installed.")
        array_record = data.load_arrays(
            "toy_digits/plain",
            "train",
            _toy_dir(self.tmp_dir),
            image_key="picture",
            label_key="digit",
        )
        tfrecord_dir = _toy_dir(os.path.join(self.tmp_dir, "tfrecord"), file_format="tfrecord")
        tfrecord = data.load_arrays(
            "toy_digits/plain", "train", tfrecord_dir, image_key="picture", label_key="digit"
        )
        np.testing.assert_array_equal(tfrecord[0], array_record[0])
        np.testing.assert_array_equal(tfrecord[1], array_record[1])

    def test_source_indexing(self):
        source = data.open_split("uci_digits", "validation", self.data_dir)
        self.assertEqual(source[-1]["index"], source[len(source) - 1]["index"])
        with self.assertRaisesRegex(IndexError, r"index 180 out of range for split 'validation'"):
            source[180]
        self.assertLen(list(source), 180)


class BatchesTest(parameterized.TestCase):
    # Labels 0..n-1 and no num_classes: each batch's labels are its example indices.
    IMAGES = np.arange(10 * 2 * 2, dtype=np.uint8).reshape(10, 2, 2)
    INDICES = (IMAGES, np.arange(10))

    def _batches(self, **kwargs):
        settings = dict(batch_size=4, shuffle=True, seed=3, epoch=0, drop_remainder=False)
        return list(data.batches(self.INDICES, **{**settings, **kwargs}))

    def test_format(self):
        batch = self._batches(shuffle=False)[0]
        self.assertEqual(set(batch), {"image", "label"})
        self.assertEqual(batch["image"].dtype, np.float32)
        self.assertEqual(batch["image"].shape, (4, 2, 2, 1))  # a channel axis is added
        self.assertEqual(batch["label"].dtype, np.int32)
        np.testing.assert_allclose(batch["image"][..., 0], self.IMAGES[:4] / 255.0, rtol=1e-7)

    def test_every_example_once_per_epoch(self):
        labels = _labels_of(self._batches())
        self.assertEqual([len(batch) for batch in labels], [4, 4, 2])
        self.assertEqual(sorted(sum(labels, [])), list(range(10)))
        self.assertNotEqual(sum(labels, []), list(range(10)))  # shuffled

    def test_unshuffled_order(self):
        self.assertEqual(
            _labels_of(self._batches(shuffle=False)), [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
        )

    def test_drop_remainder(self):
        labels = _labels_of(self._batches(drop_remainder=True))
        self.assertEqual([len(batch) for batch in labels], [4, 4])
        self.assertEqual(data.num_batches(10, 4, drop_remainder=True), 2)
        self.assertEqual(data.num_batches(10, 4, drop_remainder=False), 3)

    def test_deterministic_in_seed_and_epoch(self):
        first = _labels_of(self._batches(seed=3, epoch=1))
        self.assertEqual(_labels_of(self._batches(seed=3, epoch=1)), first)
        self.assertNotEqual(_labels_of(self._batches(seed=3, epoch=2)), first)
        self.assertNotEqual(_labels_of(self._batches(seed=4, epoch=1)), first)
        # Not grain's "seed + epoch": (3, 2) and (4, 1) are different orders.
        self.assertNotEqual(
            _labels_of(self._batches(seed=3, epoch=2)), _labels_of(self._batches(seed=4, epoch=1))
        )

    @parameterized.parameters(0, 1, 2, 3)
    def test_resume_from_a_batch(self, start_batch):
        full = _labels_of(self._batches(epoch=5))
        self.assertEqual(
            _labels_of(self._batches(epoch=5, start_batch=start_batch)), full[start_batch:]
        )

    def test_split_source_and_arrays_give_the_same_batches(self):
        source = data.open_split("uci_digits", "train[:10%]", self.data_dir)
        arrays = data.load_arrays("uci_digits", "train[:10%]", self.data_dir)
        settings = dict(batch_size=32, shuffle=True, seed=0, epoch=2, drop_remainder=True)
        from_source = list(data.batches(source, **settings, start_batch=1))
        from_arrays = list(data.batches(arrays, **settings, start_batch=1))
        self.assertLen(from_source, 126 // 32 - 1)
        for left, right in zip(from_source, from_arrays, strict=True):
            np.testing.assert_array_equal(left["image"], right["image"])
            np.testing.assert_array_equal(left["label"], right["label"])
        self.assertBetween(float(from_source[0]["image"].max()), 0.5, 1.0)

    def test_label_check(self):
        labels = np.array([0, 1, 2, 3, 4, 5, 6, 7, 8, 12])
        iterator = data.batches(
            (self.IMAGES, labels), batch_size=5, shuffle=False, seed=0, epoch=0,
            drop_remainder=False, num_classes=10,
        )  # fmt: skip
        next(iterator)
        with self.assertRaisesRegex(
            ValueError, r"label 12 of example 9 of `source` is outside \[0, num_classes=10\)"
        ):
            next(iterator)

    @parameterized.named_parameters(
        ("batch_size", dict(batch_size=0), r"`batch_size` must be an int >= 1; got 0"),
        ("seed", dict(seed=-1), r"`seed` must be an int >= 0; got -1"),
        ("epoch", dict(epoch=1.0), r"`epoch` must be an int >= 0; got 1.0"),
        ("start_batch", dict(start_batch=4), r"`start_batch` 4 exceeds the 3 batches"),
        (
            "no_batch",
            dict(batch_size=11, drop_remainder=True),
            r"no batch: `batch_size` 11 exceeds",
        ),
    )
    def test_bad_arguments(self, kwargs, message):
        with self.assertRaisesRegex(ValueError, message):
            self._batches(**kwargs)

    def test_bad_sources(self):
        settings = dict(batch_size=2, shuffle=False, seed=0, epoch=0, drop_remainder=False)
        with self.assertRaisesRegex(ValueError, r"`source` is empty"):
            data.batches((self.IMAGES[:0], np.arange(0)), **settings)
        with self.assertRaisesRegex(ValueError, r"`source` arrays disagree"):
            data.batches((self.IMAGES, np.arange(9)), **settings)
        with self.assertRaisesRegex(ValueError, r"images must be uint8 .* got float32"):
            data.batches((self.IMAGES.astype(np.float32), np.arange(10)), **settings)
        source = data.open_split("uci_digits", "validation", self.data_dir)
        with self.assertRaisesRegex(ValueError, r"have keys \['image', 'index', 'label'\]"):
            next(data.batches(source, **settings, label_key="digit"))

    def test_bad_workers(self):
        for workers in (-1, 1.5, True):
            with self.assertRaisesRegex(ValueError, r"`workers` must be an int >= 0"):
                self._batches(workers=workers)


class WorkersTest(parameterized.TestCase):
    """Batches made by grain's worker threads equal those made in the calling thread."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        rng = np.random.default_rng(0)
        # Examples of different sizes: the transform makes them one size.
        cls.source = [
            {"image": rng.integers(0, 256, (12 + i % 5, 10 + i % 3, 3), np.uint8), "label": i % 7}
            for i in range(37)
        ]

    def _batches(self, workers, **kwargs):
        settings = dict(
            batch_size=6, shuffle=True, seed=5, epoch=2, drop_remainder=False,
            transform=data.train_transform(8), workers=workers,
        )  # fmt: skip
        return list(data.batches(self.source, **{**settings, **kwargs}))

    def _assert_equal(self, left, right):
        self.assertEqual(len(left), len(right))
        for a, b in zip(left, right, strict=True):
            self.assertEqual(a["image"].dtype, b["image"].dtype)
            np.testing.assert_array_equal(a["image"], b["image"])
            np.testing.assert_array_equal(a["label"], b["label"])

    @parameterized.parameters(1, 2, 4)
    def test_workers_give_the_batches_of_the_calling_thread(self, workers):
        in_thread = self._batches(0)
        self.assertLen(in_thread, 7)  # 37 examples, 6 a batch, the last of 1
        self._assert_equal(self._batches(workers), in_thread)

    @parameterized.parameters(0, 3, 6, 7)
    def test_resume_with_workers_is_bit_identical(self, start_batch):
        self._assert_equal(
            self._batches(3, start_batch=start_batch), self._batches(0)[start_batch:]
        )

    @parameterized.parameters("float32", "uint8")
    def test_host_shards_with_workers_concatenate_to_the_global_batch(self, output):
        settings = dict(drop_remainder=True, transform=data.train_transform(8, output=output))
        whole = self._batches(0, **settings)
        parts = [self._batches(2, shard=(index, 3), **settings) for index in range(3)]
        for k, batch in enumerate(whole):
            self.assertEqual(batch["image"].dtype, np.dtype(output))
            for key in ("image", "label"):
                np.testing.assert_array_equal(
                    np.concatenate([part[k][key] for part in parts]), batch[key]
                )

    def test_uint8_output_is_the_float32_output_before_normalization(self):
        uint8 = self._batches(2, transform=data.train_transform(8, output="uint8"))
        float32 = self._batches(2)
        mean, std = (np.asarray(v, np.float32) for v in (data.IMAGENET_MEAN, data.IMAGENET_STD))
        for a, b in zip(uint8, float32, strict=True):
            self.assertEqual(a["image"].dtype, np.uint8)
            np.testing.assert_array_equal((a["image"] / np.float32(255) - mean) / std, b["image"])

    def test_an_error_in_a_worker_reaches_the_consumer(self):
        labels = np.array([0, 1, 2, 3, 4, 5, 6, 7, 8, 12])
        iterator = data.batches(
            (BatchesTest.IMAGES, labels), batch_size=5, shuffle=False, seed=0, epoch=0,
            drop_remainder=False, num_classes=10, workers=2,
        )  # fmt: skip
        next(iterator)
        with self.assertRaisesRegex(ValueError, r"label 12 of example 9 of `source`"):
            next(iterator)

    def test_default_is_the_available_cores(self):
        self.assertEqual(data.available_cores(), len(os.sched_getaffinity(0)))
        self._assert_equal(self._batches(None), self._batches(0))


class SyntheticPhotosTest(parameterized.TestCase):
    def test_prepare_and_read(self):
        from unittest import mock

        from ftp_jax.data import _photos

        with mock.patch.object(_photos, "SPLIT_SIZES", {"train": 3, "test": 2}):  # a fast build
            data.prepare_datasets(self.tmp_dir, names=data.BENCHMARK_DATASETS)
        train = data.open_split("synthetic_photos", "train", self.tmp_dir)
        test = data.open_split("synthetic_photos", "test", self.tmp_dir)
        self.assertEqual((len(train), len(test)), (3, 2))
        self.assertEqual(sorted(int(train[i]["index"]) for i in range(3)), [0, 1, 2])
        self.assertEqual(sorted(int(test[i]["index"]) for i in range(2)), [3, 4])
        example = next(train[i] for i in range(3) if train[i]["index"] == 1)
        self.assertEqual(example["label"], 1)
        decoded = np.asarray(PIL.Image.open(io.BytesIO(_photos.jpeg(1))))
        self.assertEqual(decoded.shape, _photos.photo(1).shape)
        np.testing.assert_array_equal(example["image"], decoded)  # the stored JPEG, decoded


if __name__ == "__main__":
    pytest.main([__file__])
