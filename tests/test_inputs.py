"""Streaming inputs: TFDS sources with per-example transforms, through ``fit``."""

from __future__ import annotations

import shutil
import tempfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized
from flax import nnx

from ftp_jax import data
from ftp_jax.train import MethodConfig, TrainConfig, fit
from ftp_jax.train.inputs import EvalSet, SourceEvalSet, SourceTrainData
from ftp_jax.train.steps import normalize_images


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


@pytest.mark.parametrize("make", [data.train_transform, data.eval_transform])
def test_uint8_batches_normalized_on_the_device_equal_the_host_path(data_dir, make):
    # Tolerance: float32 rounding. The host and the step compute (u / 255 - mean) / std in
    # float32 in the same order; XLA may rewrite a division by a constant as a
    # multiplication by its reciprocal (XLA on the CPU does: 3/4 of the values differ, by
    # at most 2 ulps, 4.8e-7, at 224 px). The values lie in [-2.2, 2.7], whose ulp is at
    # most 2.4e-7: atol 1e-6 is 4 ulps at the largest.
    source = data.open_split("uci_digits", "train[:10%]", data_dir)
    mean, std = data.CLIP_MEAN, data.CLIP_STD
    host = SourceTrainData(source, 32, make(16, mean=mean, std=std), workers=2)
    device = SourceTrainData(source, 32, make(16, mean=mean, std=std, output="uint8"), workers=2)
    assert host.normalization is None
    assert device.normalization == (tuple(mean), tuple(std))
    normalize = jax.jit(lambda images: normalize_images(images, device.normalization))
    for a, b in zip(host.batches(1, 0, 0), device.batches(1, 0, 0), strict=True):
        assert a["image"].dtype == np.float32 and b["image"].dtype == np.uint8
        np.testing.assert_array_equal(a["label"], b["label"])
        on_device = np.asarray(normalize(b["image"]))
        assert on_device.dtype == np.float32
        np.testing.assert_allclose(on_device, a["image"], rtol=0, atol=1e-6)
    float32 = np.zeros((2, 4, 4, 3), np.float32)
    assert normalize_images(float32, device.normalization) is float32  # float32: unchanged


def test_fit_normalizes_uint8_batches_on_the_device(data_dir):
    # The same run with uint8 batches normalized in the steps and with float32 batches
    # normalized on the host: the same numbers up to float32 rounding of the inputs.
    results = []
    for output in ("float32", "uint8"):
        workdir = tempfile.mkdtemp()
        try:
            train = SourceTrainData(
                data.open_split("uci_digits", "train[:10%]", data_dir),
                32,
                data.train_transform(16, output=output),
            )
            val = SourceEvalSet(
                "val",
                data.open_split("uci_digits", "validation", data_dir),
                data.eval_transform(16, output=output),
            )
            config = TrainConfig(
                epochs=1, batch_size=32, eval_batch_size=64, progress=False,
                method=MethodConfig(name="ftp", learning_rate=0.05),
            )  # fmt: skip
            results.append(fit(_Tiny(nnx.Rngs(0)), config, train, val, [], workdir))
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
    host, device = results
    assert host.validation["count"] == device.validation["count"] == 180
    np.testing.assert_allclose(device.validation["loss"], host.validation["loss"], rtol=1e-4)


def test_eval_set_with_another_normalization_is_an_error(data_dir):
    source = data.open_split("uci_digits", "validation", data_dir)
    train = SourceTrainData(source, 32, data.train_transform(16, output="uint8"))
    val = SourceEvalSet("val", source, data.eval_transform(16, output="uint8", mean=data.CLIP_MEAN))
    with pytest.raises(ValueError, match=r"eval set 'val' has normalization .* training data"):
        fit(_Tiny(nnx.Rngs(0)), TrainConfig(), train, val, [], tempfile.mkdtemp())
    with pytest.raises(ValueError, match=r"`output` must be one of"):
        data.train_transform(16, output="float16")


def test_heldout_batches_are_the_set_batches_read_one_at_a_time(data_dir):
    # TPGM takes a held-out batch per step: read exactly those rows (no pipeline of workers
    # opened per step to read ahead), the same batches as the set's, cycled.
    from ftp_jax.train.evaluation import heldout_batches

    source = data.open_split("uci_digits", "validation", data_dir)  # 180 examples
    streamed = SourceEvalSet("val", source, data.eval_transform(12), workers=2)
    full = [batch for batch in streamed.batches(64) if len(batch["label"]) == 64]
    stream = heldout_batches(streamed, 64, 1, None)
    for expected in (full[1], full[0], full[1]):
        batch, host_rows = next(stream)
        assert not host_rows
        np.testing.assert_array_equal(batch["image"], expected["image"])
        np.testing.assert_array_equal(batch["label"], expected["label"])


def test_normalize_images():
    images = np.array([[[[0, 51, 255]]]], np.uint8)  # (1, 1, 1, 3)
    np.testing.assert_allclose(normalize_images(images, None), images / 255.0, rtol=1e-7)
    normalized = jax.jit(normalize_images, static_argnums=1)(images, ((0.2, 0.2, 0.5), (0.5,) * 3))
    np.testing.assert_allclose(normalized, [[[[-0.4, 0.0, 1.0]]]], atol=1e-6)
    assert normalized.dtype == jnp.float32
    halves = jnp.ones((1, 2, 2, 3), jnp.bfloat16)
    assert normalize_images(halves, ((0.5,) * 3, (0.5,) * 3)) is halves  # not uint8: unchanged
