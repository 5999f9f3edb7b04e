"""Tests for ftp_jax.convert: checkpoint readers, the PyTorch -> Flax mapping, the report.

The tests without torch read the committed fixtures (``tests/data/tiny_*.pt``,
written by ``tests/torch_reference.write_fixtures``) and safetensors written with
numpy; the tests with torch (skipped without it) build the PyTorch reference
models of ``tests/torch_reference.py`` with random weights at tiny sizes, save
them as real checkpoints are saved (a torchvision state dict, MoCo v3's
``{'state_dict': {'module.base_encoder.*'}}``, CLIP's TorchScript archive,
safetensors) and compare the converted Flax models' features and logits.
"""

import contextlib
import importlib.util
import json
import os
import pickle
import shutil
import struct
import sys
import tempfile
import zipfile
from unittest import mock

import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
from absl.testing import parameterized

from ftp_jax import convert, models
from tests.test_models import (
    IMAGE_SIZE,
    KINDS,
    NUM_CLASSES,
    assert_row_norms_match,
    forward,
    images,
    tiny_model,
)

DATA = os.path.join(os.path.dirname(__file__), "data")
PREFIXES = {
    "torchvision_resnet50": "module.base_encoder.",
    "clip_resnet50": "visual.",
    "clip_vit_b16": "visual.",
}


def expected_fixture_tensors() -> dict[str, np.ndarray]:
    """``torch_reference.tiny_fixture_tensors()``, in numpy (no torch)."""
    base = np.arange(24, dtype=np.float32).reshape(4, 6) / 8 - 1
    shared = np.arange(10, dtype=np.float64)
    return {
        "conv.weight": np.arange(48, dtype=np.float32).reshape(4, 3, 2, 2) / 10,
        "fc.weight": base.T,
        "fc.bias": np.array([0.5, -1.5, 2.0, 3.25], np.float16),
        "bn.running_var": np.linspace(1, 2, 5).astype(ml_dtypes.bfloat16),
        "bn.num_batches_tracked": np.array(7, np.int64),
        "mask": np.array([True, False, True]),
        "slice": shared[3:7],
        "shared": shared,
    }


def expected_torchscript_tensors() -> dict[str, np.ndarray]:
    """``torch_reference.TinyScripted().state_dict()``, in numpy."""
    return {
        "scale": np.array([1.0, -2.0], np.float32),
        "fc.weight": np.arange(6, dtype=np.float32).reshape(3, 2) / 4,
        "fc.bias": np.array([0.25, 0.5, 0.75], np.float32),
        "bn.weight": np.ones(3, np.float32),
        "bn.bias": np.zeros(3, np.float32),
        "bn.running_mean": np.zeros(3, np.float32),
        "bn.running_var": np.array([1.0, 2.0, 4.0], np.float32),
        "bn.num_batches_tracked": np.array(0, np.int64),
    }


def assert_same_arrays(test, actual: dict, expected: dict) -> None:
    test.assertEqual(sorted(actual), sorted(expected))
    for key, value in expected.items():
        test.assertEqual(actual[key].dtype, value.dtype, msg=key)
        test.assertEqual(actual[key].shape, value.shape, msg=key)
        np.testing.assert_array_equal(actual[key], value, err_msg=key)


def params_of(model) -> dict[str, np.ndarray]:
    return {k: np.asarray(v) for k, v in convert.to_torch_state_dict(model).items()}


class ReaderTest(parameterized.TestCase):
    """The pure-python readers: no torch needed."""

    @parameterized.named_parameters(
        ("zip", "tiny_checkpoint.pt", "torch-zip"),
        ("legacy", "tiny_checkpoint_legacy.pt", "torch-legacy"),
    )
    def test_reads_committed_checkpoint(self, file, file_format):
        path = os.path.join(DATA, file)
        obj, found_format = convert.read_torch_file(path)
        self.assertEqual(found_format, file_format)
        self.assertEqual(obj["epoch"], 3)
        self.assertEqual(obj["arch"], "tiny")
        # {'state_dict': ...} is unwrapped; views, offsets, shared storages, dtypes kept.
        tensors = convert.read_state_dict(path, engine="python")
        assert_same_arrays(self, tensors, expected_fixture_tensors())

    def test_reads_committed_torchscript_archive(self):
        path = os.path.join(DATA, "tiny_torchscript.pt")
        self.assertEqual(convert.read_torch_file(path)[1], "torchscript")
        tensors = convert.read_state_dict(path, engine="python")
        assert_same_arrays(self, tensors, expected_torchscript_tensors())

    def test_corrupted_and_foreign_files(self):
        with tempfile.TemporaryDirectory() as directory:
            truncated = os.path.join(directory, "truncated.pt")
            with open(os.path.join(DATA, "tiny_checkpoint_legacy.pt"), "rb") as file:
                data = file.read()
            with open(truncated, "wb") as file:
                file.write(data[: len(data) - 40])
            with self.assertRaisesRegex(convert.UnsupportedCheckpoint, "truncated"):
                convert.read_state_dict(truncated, engine="python")
            text = os.path.join(directory, "notes.txt")
            with open(text, "w") as file:
                file.write("not a checkpoint")
            with self.assertRaisesRegex(convert.NotACheckpoint, "neither a zip nor"):
                convert.read_state_dict(text, engine="python")
            with self.assertRaises(FileNotFoundError):
                convert.read_state_dict(os.path.join(directory, "missing.pt"))

    def test_safetensors_round_trip(self):
        tensors = {
            "a": np.arange(6, dtype=np.float32).reshape(2, 3),
            "b": np.array([1.5, -2.0], ml_dtypes.bfloat16),
            "c": np.array(3, np.int64),
            "d": np.zeros((0, 4), np.float16),
            "e": np.array([True, False]),
        }
        with tempfile.TemporaryDirectory() as directory:
            path = os.path.join(directory, "model.safetensors")
            convert.write_safetensors(path, tensors, metadata={"format": "pt"})
            assert_same_arrays(self, convert.read_state_dict(path), tensors)
            with open(path, "r+b") as file:  # a header whose offsets leave the file
                file.truncate(os.path.getsize(path) - 4)
            with self.assertRaisesRegex(ValueError, "not a valid safetensors file"):
                convert.read_safetensors(path)
            with self.assertRaisesRegex(convert.UnsupportedCheckpoint, "not a valid safetensors"):
                convert.check_checkpoint(path)

    def test_safetensors_dtype_numpy_lacks(self):
        """A float8 tensor (valid file, no numpy dtype) is a ValueError naming the file."""
        header = json.dumps({"w": {"dtype": "F8_E4M3", "shape": [8], "data_offsets": [0, 8]}})
        header = header.encode() + b" " * (-len(header) % 8)
        with tempfile.TemporaryDirectory() as directory:
            path = os.path.join(directory, "fp8.safetensors")
            with open(path, "wb") as file:
                file.write(struct.pack("<Q", len(header)) + header + bytes(8))
            with self.assertRaisesRegex(ValueError, "fp8.safetensors.*dtype numpy cannot hold"):
                convert.read_safetensors(path)


def _without_torch():
    """``import torch`` fails inside: the readers behave as on a machine without torch."""
    return mock.patch.dict(sys.modules, {"torch": None})


def _has_torch() -> bool:
    return importlib.util.find_spec("torch") is not None


class _Exploit:
    """Pickles as a call of ``os.system`` (``posix.system``), as a malicious file would."""

    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def _evil_pickles(marker: str) -> dict[str, bytes]:
    """Pickles that would run code if unpickled: they touch ``marker``."""
    command = f"touch {marker}"
    # GLOBAL 'os system', as the example: written by hand (pickle writes posix.system).
    by_hand = (
        b"\x80\x02}q\x00X\x01\x00\x00\x00xq\x01cos\nsystem\nq\x02X"
        + len(command).to_bytes(4, "little")
        + command.encode()
        + b"q\x03\x85q\x04Rq\x05s."
    )
    return {
        "os.system": by_hand,
        "posix.system": pickle.dumps({"state_dict": {"x": _Exploit(command)}}, protocol=2),
        "builtins.eval": pickle.dumps(
            {"x": _Reduce(eval, (f"open({marker!r}, 'w').close()",))}, protocol=2
        ),
    }


class _Reduce:
    def __init__(self, function, args):
        self.function, self.args = function, args

    def __reduce__(self):
        return (self.function, self.args)


class SafeLoadingTest(parameterized.TestCase):
    """Weights files of unknown origin: tensors and containers only, nothing ever runs."""

    def setUp(self):
        super().setUp()
        self.directory = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.directory, ignore_errors=True)
        self.marker = os.path.join(self.directory, "code_ran")

    def write(self, name: str, payload: bytes, form: str) -> str:
        path = os.path.join(self.directory, f"{name}.{form}")
        if form == "zip":  # torch.save's layout: <archive>/data.pkl
            with zipfile.ZipFile(path, "w") as archive:
                archive.writestr("archive/data.pkl", payload)
                archive.writestr("archive/version", "3\n")
        else:  # a bare pickle
            with open(path, "wb") as file:
                file.write(payload)
        return path

    def check_refused(self, path: str, asked: str, engine: str, torch_present: bool):
        context = contextlib.nullcontext() if torch_present else _without_torch()
        with context, self.assertRaises(convert.UnsupportedCheckpoint) as caught:
            convert.read_state_dict(path, engine=engine)
        message = str(caught.exception)
        self.assertNotIn("weights_only=False", message)
        self.assertNotIn("install torch", message)
        self.assertFalse(os.path.exists(self.marker), "the file's code ran")
        return caught.exception, message

    @parameterized.product(
        asked=("os.system", "posix.system", "builtins.eval"),
        form=("zip", "pickle"),
        torch_present=(False, True),
    )
    def test_code_in_a_pickle_is_refused_naming_it(self, asked, form, torch_present):
        if torch_present and not _has_torch():
            self.skipTest("torch is not installed (CI installs it)")
        path = self.write(asked.replace(".", "_"), _evil_pickles(self.marker)[asked], form)
        error, message = self.check_refused(path, asked, "auto", torch_present)
        self.assertIsInstance(error, convert.UnsafeCheckpoint)
        self.assertIn(f"asks for {asked}", message)
        self.assertIn(path, message)
        # The check of inputs before a run refuses it too, in milliseconds.
        with self.assertRaisesRegex(convert.UnsafeCheckpoint, f"asks for {asked}"):
            convert.check_checkpoint(path)
        self.assertFalse(os.path.exists(self.marker), "the file's code ran")

    @parameterized.parameters("zip", "pickle")
    def test_torch_engine_refuses_without_unsafe_advice(self, form):
        if not _has_torch():
            self.skipTest("torch is not installed (CI installs it)")
        path = self.write("evil", _evil_pickles(self.marker)["posix.system"], form)
        self.check_refused(path, "posix.system", "torch", torch_present=True)

    @parameterized.product(
        content=(b"just some notes\n", bytes(range(7, 107))),
        torch_present=(False, True),
    )
    def test_a_file_that_is_not_a_checkpoint(self, content, torch_present):
        if torch_present and not _has_torch():
            self.skipTest("torch is not installed (CI installs it)")
        path = os.path.join(self.directory, "weights.pt")
        with open(path, "wb") as file:
            file.write(content)
        error, message = self.check_refused(path, "", "auto", torch_present)
        self.assertIsInstance(error, convert.NotACheckpoint)
        self.assertIn("is not a checkpoint", message)
        with self.assertRaises(convert.NotACheckpoint):
            convert.check_checkpoint(path)

    def test_a_bare_pickle_of_containers_is_refused(self):
        path = self.write("bare", pickle.dumps({"w": [1.0, 2.0]}, protocol=2), "pickle")
        with self.assertRaisesRegex(convert.NotACheckpoint, "bare pickle"):
            convert.read_state_dict(path)

    def test_a_pickled_module_is_refused_with_what_to_save_instead(self):
        payload = b"\x80\x02ctorch.nn.modules.linear\nLinear\nq\x00)\x81q\x01."
        path = self.write("module", payload, "zip")
        with self.assertRaisesRegex(
            convert.UnsafeCheckpoint, r"asks for torch.nn.modules.linear.Linear.*state_dict\(\)"
        ):
            convert.read_state_dict(path, engine="python")

    def test_check_checkpoint_accepts_the_fixtures_and_names_missing_files(self):
        for name in ("tiny_checkpoint.pt", "tiny_checkpoint_legacy.pt", "tiny_torchscript.pt"):
            path = os.path.join(DATA, name)
            self.assertEqual(convert.check_checkpoint(path), path)
        with self.assertRaisesRegex(FileNotFoundError, "no weights file"):
            convert.check_checkpoint(os.path.join(self.directory, "missing.pt"))
        with self.assertRaisesRegex(FileNotFoundError, "no checkpoint in the folder"):
            convert.check_checkpoint(self.directory)


class LoadTest(parameterized.TestCase):
    """The mapping, the report and the errors, on checkpoints written with numpy."""

    def write_checkpoint(self, directory, kind, extra=None, drop=()):
        """A safetensors checkpoint of a tiny model (seed 1), under the kind's prefix."""
        source = tiny_model(kind, seed=1)
        prefix = PREFIXES[kind]
        tensors = {
            prefix + k: v
            for k, v in convert.to_torch_state_dict(source).items()
            if not k.startswith("head.") and k not in drop
        }
        tensors.update(extra or {})
        path = os.path.join(directory, f"{kind}.safetensors")
        convert.write_safetensors(path, tensors)
        return source, path

    @parameterized.named_parameters(*KINDS)
    def test_round_trip_loads_backbone_and_leaves_head(self, kind):
        extra = {
            "torchvision_resnet50": {
                "module.base_encoder.fc.0.weight": np.ones((4, 2), np.float32)
            },
            "clip_resnet50": {"positional_embedding": np.ones((5, 4), np.float32)},
            "clip_vit_b16": {"text_projection": np.ones((4, 4), np.float16)},
        }[kind]
        with tempfile.TemporaryDirectory() as directory:
            source, path = self.write_checkpoint(directory, kind, extra)
            model = tiny_model(kind, seed=2)
            head_before = np.asarray(model.head.kernel[...])
            report = convert.load_pretrained(model, path, kind=kind)
        self.assertEqual(report.prefix, PREFIXES[kind])
        self.assertEqual(report.format, "safetensors")
        self.assertEqual(report.fresh, ("head/bias", "head/kernel"))
        self.assertEqual(report.unused[0], next(iter(extra)))
        self.assertIn("Left as initialized (2): head/bias, head/kernel.", str(report))
        np.testing.assert_array_equal(model.head.kernel[...], head_before)
        loaded, expected = params_of(model), params_of(source)
        for key in expected:
            if not key.startswith("head."):
                np.testing.assert_array_equal(loaded[key], expected[key], err_msg=key)
        model.eval()
        source.eval()
        source.head = model.head
        x = jnp.asarray(images())
        np.testing.assert_allclose(
            forward(model, x)[0], forward(source, x)[0], rtol=1e-6, atol=1e-6
        )

    def test_missing_backbone_key_names_it_and_changes_nothing(self):
        with tempfile.TemporaryDirectory() as directory:
            _, path = self.write_checkpoint(directory, "clip_vit_b16", drop=("ln_post.weight",))
            model = tiny_model("clip_vit_b16", seed=2)
            before = params_of(model)
            with self.assertRaisesRegex(
                convert.CheckpointError,
                r"no tensor 'visual\.ln_post\.weight' for the backbone parameter 'ln_post/scale'",
            ):
                convert.load_pretrained(model, path)
        for key, value in params_of(model).items():
            np.testing.assert_array_equal(value, before[key], err_msg=key)

    def test_shape_mismatch_names_both_shapes(self):
        model = tiny_model("clip_resnet50")
        state = convert.to_torch_state_dict(model, prefix="visual.")
        state["visual.attnpool.positional_embedding"] = np.zeros((50, 256), np.float32)
        with self.assertRaisesRegex(
            convert.CheckpointError,
            r"'visual\.attnpool\.positional_embedding' has shape \(50, 256\).*needs \(5, 256\)",
        ):
            convert.load_state_dict(model, state)

    def test_prefix_choice(self):
        model = tiny_model("torchvision_resnet50")
        state = convert.to_torch_state_dict(model)
        moco = {"module.base_encoder." + k: v for k, v in state.items()}
        moco.update({"module.momentum_encoder." + k: 0 * v for k, v in state.items()})
        report = convert.load_state_dict(model, {"state_dict": moco, "epoch": 100})
        self.assertEqual(report.prefix, "module.base_encoder.")  # the momentum copy loses ties
        report = convert.load_state_dict(model, moco, prefix="module.momentum_encoder.")
        self.assertEqual(float(np.abs(model.conv1.kernel[...]).max()), 0.0)
        twins = {"a." + k: v for k, v in state.items()}
        twins.update({"b." + k: v for k, v in state.items()})
        with self.assertRaisesRegex(convert.CheckpointError, r"several prefixes \['a\.', 'b\.'\]"):
            convert.load_state_dict(model, twins)
        with self.assertRaisesRegex(convert.CheckpointError, "no tensor of the checkpoint"):
            convert.load_state_dict(model, {"x.weight": np.zeros(3)})

    def test_new_head_and_kind_checks(self):
        model = tiny_model("clip_vit_b16")
        state = convert.to_torch_state_dict(model)
        with self.assertRaisesRegex(convert.CheckpointError, "`new_head` pattern 'fc/.*'"):
            convert.load_state_dict(model, state, new_head=r"fc/.*")
        with self.assertRaisesRegex(ValueError, "loads into a ResNet, but the model is a Vision"):
            convert.load_state_dict(model, state, kind="torchvision_resnet50")
        with self.assertRaisesRegex(ValueError, "unknown `kind`"):
            convert.load_state_dict(model, state, kind="vit_b16")
        report = convert.load_state_dict(model, state, new_head=None)  # the head too
        self.assertEqual(report.fresh, ())
        self.assertIn("head/kernel", report.loaded)

    def test_key_map(self):
        keys = convert.torch_key_map(tiny_model("clip_vit_b16"))
        self.assertEqual(
            keys["transformer/resblocks/0/attn/in_proj/kernel"],
            "transformer.resblocks.0.attn.in_proj_weight",
        )
        self.assertEqual(keys["conv1/kernel"], "conv1.weight")
        self.assertEqual(keys["ln_pre/scale"], "ln_pre.weight")
        keys = convert.torch_key_map(tiny_model("torchvision_resnet50"))
        self.assertEqual(keys["layer2/0/downsample/1/mean"], "layer2.0.downsample.1.running_mean")

    def test_float16_checkpoint_is_cast(self):
        model = tiny_model("clip_vit_b16")
        state = {k: v.astype(np.float16) for k, v in convert.to_torch_state_dict(model).items()}
        report = convert.load_state_dict(model, state)
        self.assertEqual(report.cast, {"float16": len(report.loaded)})
        self.assertEqual(model.proj[...].dtype, jnp.float32)


class TorchEquivalenceTest(parameterized.TestCase):
    """Against the PyTorch reference models (skipped without torch)."""

    def setUp(self):
        super().setUp()
        self.torch = pytest.importorskip("torch")
        from tests import torch_reference

        self.reference = torch_reference
        self.generator = self.torch.Generator().manual_seed(0)
        self.torch.manual_seed(0)
        self.directory = self.enter_context(tempfile.TemporaryDirectory())

    def reference_model(self, kind):
        """(the PyTorch model with a new head, the checkpoint object as published)."""
        ref = self.reference
        if kind == "torchvision_resnet50":
            model = ref.TorchResNet(layers=(1, 1, 1, 1), width=8, num_classes=NUM_CLASSES)
            ref.randomize_batch_norms(model, self.generator)
            return model, model, model.head
        if kind == "clip_resnet50":
            visual = ref.ModifiedResNet((1, 1, 1, 1), 16, 4, IMAGE_SIZE, 8)
            ref.randomize_batch_norms(visual, self.generator)
        else:
            visual = ref.VisionTransformer(IMAGE_SIZE, 8, 32, 2, 2, 16)
        model = ref.WithHead(visual, 16, NUM_CLASSES)
        return model, ref.CLIP(visual, 16), model.head

    def save(self, kind, checkpoint, file_format):
        torch = self.torch
        path = os.path.join(self.directory, f"{kind}-{file_format}")
        state = checkpoint.state_dict()
        if file_format == "state_dict":
            torch.save(state, path + ".pth")
            return path + ".pth"
        if file_format == "moco":
            wrapped = {
                "epoch": 100,
                "arch": "resnet50",
                "state_dict": {
                    **{"module.base_encoder." + k: v for k, v in state.items()},
                    **{
                        "module.momentum_encoder." + k: torch.zeros_like(v)
                        for k, v in state.items()
                    },
                },
                "optimizer": {"state": {0: {"exp_avg": torch.ones(3)}}, "param_groups": []},
            }
            torch.save(wrapped, path + ".pth.tar")
            return path + ".pth.tar"
        if file_format == "torchscript":  # how OpenAI publishes CLIP (RN50.pt, ViT-B-16.pt)
            example = torch.zeros(1, 3, IMAGE_SIZE, IMAGE_SIZE)
            torch.jit.save(torch.jit.trace(checkpoint.eval(), example), path + ".pt")
            return path + ".pt"
        if file_format == "safetensors":
            from safetensors.torch import save_file

            save_file({k: v.contiguous() for k, v in state.items()}, path + ".safetensors")
            return path + ".safetensors"
        raise ValueError(file_format)

    @parameterized.named_parameters(
        ("torchvision_resnet", "torchvision_resnet50", "state_dict"),
        ("moco_resnet", "torchvision_resnet50", "moco"),
        ("clip_resnet_torchscript", "clip_resnet50", "torchscript"),
        ("clip_resnet_safetensors", "clip_resnet50", "safetensors"),
        ("clip_vit_torchscript", "clip_vit_b16", "torchscript"),
        ("clip_vit_state_dict", "clip_vit_b16", "state_dict"),
    )
    def test_features_and_logits_match_pytorch(self, kind, file_format):
        torch = self.torch
        if file_format == "safetensors":
            pytest.importorskip("safetensors.torch")
        reference, checkpoint, head = self.reference_model(kind)
        path = self.save(kind, checkpoint, file_format)
        model = tiny_model(kind, seed=3)
        report = convert.load_pretrained(model, path, kind=kind)
        self.assertEqual(report.fresh, ("head/bias", "head/kernel"))
        # The comparison copies the new head too.
        model.head.kernel.set_value(jnp.asarray(head.weight.detach().numpy().T))
        model.head.bias.set_value(jnp.asarray(head.bias.detach().numpy()))
        x = images()
        reference.eval()
        with torch.no_grad():
            x_torch = torch.from_numpy(x.transpose(0, 3, 1, 2).copy())
            expected_features = reference.features(x_torch).numpy()
            expected_logits = reference(x_torch).numpy()
        model.eval()
        logits, features = forward(model, jnp.asarray(x))
        scale = float(np.abs(expected_features).max())
        np.testing.assert_allclose(features, expected_features, atol=1e-4 * scale, rtol=1e-4)
        scale = float(np.abs(expected_logits).max())
        np.testing.assert_allclose(logits, expected_logits, atol=1e-4 * scale, rtol=1e-4)
        # FTP's rows on the converted model are the reference's rows on the PyTorch tensors.
        torch_arrays = {k: v.detach().numpy() for k, v in reference.state_dict().items()}
        keys = convert.torch_key_map(model)
        if kind != "torchvision_resnet50":
            keys = {p: k if p.startswith("head/") else "visual." + k for p, k in keys.items()}
        assert_row_norms_match(self, model, models.ROW_AXES[kind], torch_arrays, keys)
        # The pure-python reader and torch agree on the file.
        ours = convert.read_state_dict(path, engine="python")
        theirs = convert.read_state_dict(path, engine="torch")
        self.assertEqual(sorted(ours), sorted(theirs))
        for key, value in theirs.items():
            np.testing.assert_array_equal(ours[key], value, err_msg=key)

    def test_in_memory_torch_state_dict(self):
        reference, _, _ = self.reference_model("torchvision_resnet50")
        model = tiny_model("torchvision_resnet50", seed=3)
        report = convert.load_state_dict(model, reference.state_dict(), new_head=r"head/.*")
        self.assertEqual(report.prefix, "")
        self.assertEqual(report.format, "state dict")
        self.assertIn("fc.weight", report.unused)
        expected = reference.layer1[0].downsample[0].weight.detach().numpy().transpose(2, 3, 1, 0)
        np.testing.assert_array_equal(model.layer1[0].downsample[0].kernel[...], expected)
        np.testing.assert_array_equal(
            model.bn1.var[...], reference.bn1.running_var.detach().numpy()
        )

    def test_committed_fixtures_are_what_the_generator_writes(self):
        paths = self.reference.write_fixtures(self.directory)
        for name, file in self.reference.FIXTURES.items():
            written = convert.read_state_dict(paths[name], engine="python")
            committed = convert.read_state_dict(os.path.join(DATA, file), engine="python")
            assert_same_arrays(self, written, committed)
            theirs = convert.read_state_dict(paths[name], engine="torch")
            for key, value in theirs.items():
                np.testing.assert_array_equal(
                    np.asarray(written[key], np.float64), np.asarray(value, np.float64)
                )

    def test_full_size_keys_and_shapes_match_pytorch(self):
        # The paper-size models, built without memory (meta device / eval_shape).
        from flax import nnx

        torch, ref = self.torch, self.reference
        builds = {
            "torchvision_resnet50": (models.resnet50, lambda: ref.TorchResNet(num_classes=1000)),
            "clip_resnet50": (
                models.clip_resnet50,
                lambda: ref.ModifiedResNet((3, 4, 6, 3), 1024, 32, 224, 64),
            ),
            "clip_vit_b16": (
                models.clip_vit_b16,
                lambda: ref.VisionTransformer(224, 16, 768, 12, 12, 512),
            ),
        }
        for kind, (build, build_torch) in builds.items():
            model = nnx.eval_shape(lambda build=build: build(1000, rngs=nnx.Rngs(0)))
            with torch.device("meta"):
                reference = build_torch()
            expected = {
                k: tuple(v.shape)
                for k, v in reference.state_dict().items()
                if not k.startswith(("fc.", "head.")) and not k.endswith("num_batches_tracked")
            }
            ours = {
                entry.key: convert._names.torch_shape(entry.variable.shape, entry.layout)
                for entry in convert._names.leaf_entries(model)
                if not entry.path.startswith("head/")
            }
            self.assertEqual(sorted(ours), sorted(expected), msg=kind)
            wrong = {k: (ours[k], expected[k]) for k in ours if ours[k] != expected[k]}
            self.assertEqual(wrong, {}, msg=kind)
