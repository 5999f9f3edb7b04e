"""Streaming inputs: TFDS sources with per-example transforms, through ``fit``."""

from __future__ import annotations

import shutil
import tempfile

import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized
from flax import nnx

from ftp_jax import data
from ftp_jax.train import MethodConfig, TrainConfig, fit
from ftp_jax.train.inputs import EvalSet, SourceEvalSet, SourceTrainData


@pytest.fixture(scope="module")
def data_dir():
    path = tempfile.mkdtemp(prefix="ftp_jax_inputs_")
    data.prepare_datasets(path, names=("uci_digits",))
    yield path
    shutil.rmtree(path, ignore_errors=True)


class TransformTest(parameterized.TestCase):
    def setUp(self):
        super().setUp()
        rng = np.random.default_rng(0)
        self.gray = rng.integers(0, 256, (40, 30, 1), dtype=np.uint8)
        self.color = rng.integers(0, 256, (30, 50, 3), dtype=np.uint8)

    def test_train_transform_is_a_function_of_the_rng(self):
        transform = data.train_transform(16)
        a = transform(self.color, np.random.default_rng([1, 2, 3]))
        b = transform(self.color, np.random.default_rng([1, 2, 3]))
        c = transform(self.color, np.random.default_rng([1, 2, 4]))
        self.assertEqual(a.shape, (16, 16, 3))
        self.assertEqual(a.dtype, np.float32)
        np.testing.assert_array_equal(a, b)
        self.assertGreater(float(np.abs(a - c).max()), 0.0)

    def test_eval_transform_center_crop_and_normalize(self):
        constant = np.full((20, 40, 3), 255, np.uint8)
        out = data.eval_transform(8, resize=10)(constant, np.random.default_rng(0))
        self.assertEqual(out.shape, (8, 8, 3))
        expected = (1.0 - np.asarray(data.IMAGENET_MEAN)) / np.asarray(data.IMAGENET_STD)
        np.testing.assert_allclose(out, np.broadcast_to(expected, out.shape), rtol=1e-5)
        gray = data.eval_transform(8)(self.gray, np.random.default_rng(0))
        self.assertEqual(gray.shape, (8, 8, 3))  # grayscale is replicated to RGB


def test_source_train_data(data_dir):
    source = data.open_split("uci_digits", "train", data_dir)
    train = SourceTrainData(source, 32, data.train_transform(16))
    self_batches = list(train.batches(seed=3, epoch=1, start=0))
    assert train.steps_per_epoch == len(source) // 32 == len(self_batches)
    assert self_batches[0]["image"].shape == (32, 16, 16, 3)
    again = list(train.batches(seed=3, epoch=1, start=5))
    for a, b in zip(self_batches[5:], again, strict=True):
        np.testing.assert_array_equal(a["image"], b["image"])
        np.testing.assert_array_equal(a["label"], b["label"])
    other_epoch = next(iter(train.batches(seed=3, epoch=2, start=0)))
    assert not np.array_equal(other_epoch["label"], self_batches[0]["label"])


def test_source_eval_set_matches_arrays(data_dir):
    source = data.open_split("uci_digits", "validation", data_dir)
    streamed = SourceEvalSet("val", source)
    images, labels = data.load_arrays("uci_digits", "validation", data_dir)
    in_memory = EvalSet("val", images.astype(np.float32) / 255.0, labels.astype(np.int32))
    assert len(streamed) == len(in_memory) == 180
    for a, b in zip(streamed.batches(64, start=1), in_memory.batches(64, start=1), strict=True):
        np.testing.assert_allclose(a["image"], b["image"])
        np.testing.assert_array_equal(a["label"], b["label"])


def test_read_gives_the_rows_of_the_batches(data_dir):
    source = data.open_split("uci_digits", "validation", data_dir)
    streamed = SourceEvalSet("val", source, data.eval_transform(12))
    batch = list(streamed.batches(64))[1]  # rows 64..127
    rows = np.array([64, 70, 127])
    read = streamed.read(rows)
    np.testing.assert_array_equal(read["image"], batch["image"][rows - 64])
    np.testing.assert_array_equal(read["label"], batch["label"][rows - 64])
    images, labels = data.load_arrays("uci_digits", "validation", data_dir)
    in_memory = EvalSet("val", images, labels)
    np.testing.assert_array_equal(in_memory.read(rows)["label"], read["label"])
    with pytest.raises(ValueError, match=r"must lie in \[0, 180\)"):
        streamed.read(np.array([180]))


class _Tiny(nnx.Module):
    def __init__(self, rngs):
        self.conv = nnx.Conv(3, 4, (3, 3), strides=(2, 2), rngs=rngs)
        self.head = nnx.Linear(4, 10, rngs=rngs)

    def __call__(self, x):
        return self.head(jnp.mean(nnx.relu(self.conv(x)), axis=(1, 2)))


def test_fit_streams_from_tfds(data_dir):
    workdir = tempfile.mkdtemp()
    try:
        train = SourceTrainData(
            data.open_split("uci_digits", "train[:25%]", data_dir), 32, data.train_transform(16)
        )
        val = SourceEvalSet(
            "val", data.open_split("uci_digits", "validation", data_dir), data.eval_transform(16)
        )
        config = TrainConfig(
            epochs=1,
            batch_size=32,
            eval_batch_size=64,
            progress=False,
            method=MethodConfig(name="ftp", learning_rate=0.05),
        )
        result = fit(_Tiny(nnx.Rngs(0)), config, train, val, [val], workdir)
        assert result.steps == train.steps_per_epoch
        assert result.tests["val"]["count"] == 180
        assert 0.0 <= result.tests["val"]["accuracy"] <= 1.0
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def test_host_shards_concatenate_to_the_global_batch(data_dir):
    source = data.open_split("uci_digits", "validation", data_dir)
    kwargs = dict(batch_size=32, shuffle=True, seed=1, epoch=0, drop_remainder=True)
    full = list(data.batches(source, **kwargs))
    parts = [list(data.batches(source, shard=(i, 4), **kwargs)) for i in range(4)]
    for index, batch in enumerate(full):
        assert parts[0][index]["label"].shape == (8,)
        np.testing.assert_array_equal(
            np.concatenate([p[index]["label"] for p in parts]), batch["label"]
        )
    with pytest.raises(ValueError, match="divisible by count"):
        next(data.batches(source, shard=(0, 5), **kwargs))
