"""Tests for ftp_jax.train: the loop end to end, checkpoints and resumption, config."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import chex
import jax
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest
from absl.testing import parameterized
from flax import nnx

from ftp_jax.train import (
    Checkpointer,
    CheckpointMismatchError,
    MethodConfig,
    TrainConfig,
    apply_overrides,
    fit,
)
from ftp_jax.train.steps import initial_train_state, split_model
from tests import tiny_fit

ROOT = Path(__file__).resolve().parent.parent


def _final_state(workdir, method):
    """The last checkpoint's TrainState and extra trees, restored."""
    checkpointer = Checkpointer(Path(workdir) / "checkpoints")
    step = checkpointer.latest_step()
    restored = checkpointer._manager.restore(
        step,
        args=ocp.args.Composite(state=ocp.args.StandardRestore(), extra=ocp.args.StandardRestore()),
    )
    checkpointer.close()
    return step, {"state": restored.state, "extra": restored.extra}


class _TempdirTest(parameterized.TestCase):
    def tmpdir(self) -> str:
        path = tempfile.mkdtemp(prefix="ftp_jax_test_")
        self.addCleanup(shutil.rmtree, path, ignore_errors=True)
        return path


class LoopTest(_TempdirTest):
    @parameterized.parameters("vanilla", "linear_probe", "ftp", "tpgm")
    def test_end_to_end(self, method):
        workdir = self.tmpdir()
        result = tiny_fit.run(workdir, method)
        self.assertBetween(result.best_epoch, 1, 3)
        self.assertEqual(result.steps, 3 * (200 // 16))
        self.assertGreater(result.validation["accuracy"], 0.6)  # 3 classes: chance is 1/3
        self.assertEqual(set(result.tests), {"test"})
        lines = [json.loads(x) for x in Path(workdir, "metrics.jsonl").read_text().splitlines()]
        epochs = [x for x in lines if x["event"] == "epoch"]
        self.assertLen(epochs, 3)
        self.assertEqual(lines[-1]["event"], "result")
        self.assertIn("body/kernel", epochs[-1]["distance"])
        if method in ("ftp", "tpgm"):
            self.assertIn("body/kernel", epochs[-1]["radius"])
            self.assertNotIn("head/kernel", epochs[-1]["radius"])
            # Projected: the body moved less than its radius allows per row, in L1.
        else:
            self.assertEqual(epochs[-1]["radius"], {})
        if method == "linear_probe":
            self.assertEqual(epochs[-1]["distance"]["body/kernel"], 0.0)
            self.assertGreater(epochs[-1]["distance"]["head/kernel"], 0.0)
        else:
            self.assertGreater(epochs[-1]["distance"]["body/kernel"], 0.0)
        # A finished run returns its stored result without training again.
        again = tiny_fit.run(workdir, method)
        self.assertEqual(again.to_json(), result.to_json())

    def test_head_pattern_must_match(self):
        train, validation, tests = tiny_fit.data()
        config = TrainConfig(
            epochs=1,
            batch_size=16,
            progress=False,
            method=MethodConfig(name="ftp", head_pattern=r"classifier/.*"),
        )
        with self.assertRaisesRegex(ValueError, r"rule 'classifier/\.\*' matched no parameter"):
            from ftp_jax.train import fit

            fit(
                tiny_fit.TinyNet(nnx.Rngs(0)),
                config,
                train,
                validation,
                tests,
                self.tmpdir(),
            )


class ResumeTest(_TempdirTest):
    @parameterized.parameters("ftp", "tpgm")
    def test_resumed_run_is_bit_identical(self, method):
        straight = self.tmpdir()
        resumed = self.tmpdir()
        expected = tiny_fit.run(straight, method)
        self.assertIsNone(tiny_fit.run(resumed, method, stop_after_steps=17))
        self.assertFalse(Path(resumed, "result.json").exists())
        result = tiny_fit.run(resumed, method)
        self.assertEqual(result.to_json(), expected.to_json())
        self.assertEqual(
            Path(resumed, "metrics.jsonl").read_text(), Path(straight, "metrics.jsonl").read_text()
        )
        step_a, state_a = _final_state(straight, method)
        step_b, state_b = _final_state(resumed, method)
        self.assertEqual(step_a, step_b)
        chex.assert_trees_all_equal(state_a, state_b)

    @parameterized.parameters(signal.SIGKILL, signal.SIGTERM)
    def test_killed_run_resumes_identically(self, signum):
        straight = self.tmpdir()
        killed = self.tmpdir()
        expected = tiny_fit.run(straight, "ftp")
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        process = subprocess.Popen(
            [sys.executable, "-m", "tests.tiny_fit", killed, "ftp"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        checkpoints = Path(killed, "checkpoints")
        deadline = time.time() + 120
        while time.time() < deadline:  # wait for a first checkpoint, then kill mid-run
            if checkpoints.exists() and any(p.name.isdigit() for p in checkpoints.iterdir()):
                break
            time.sleep(0.05)
        time.sleep(0.3)
        process.send_signal(signum)
        code = process.wait(timeout=120)
        self.assertEqual(code, -signal.SIGKILL if signum == signal.SIGKILL else 143)
        self.assertFalse(Path(killed, "result.json").exists())
        result = tiny_fit.run(killed, "ftp")
        self.assertEqual(result.to_json(), expected.to_json())
        chex.assert_trees_all_equal(
            _final_state(straight, "ftp")[1], _final_state(killed, "ftp")[1]
        )

    def test_ctrl_c_saves_then_stops_and_the_run_resumes_identically(self):
        straight = self.tmpdir()
        interrupted = self.tmpdir()
        expected = tiny_fit.run(straight, "ftp")
        train, validation, tests = tiny_fit.data()

        class CtrlCAtBatch7(tiny_fit.ArrayTrainData):
            def batches(self, seed, epoch, start):
                for index, batch in enumerate(super().batches(seed, epoch, start), start):
                    if epoch == 1 and index == 7:
                        os.kill(os.getpid(), signal.SIGINT)  # as a Ctrl-C in the terminal
                    yield batch

        previous = signal.getsignal(signal.SIGINT)
        with self.assertRaises(KeyboardInterrupt):
            fit(
                tiny_fit.TinyNet(nnx.Rngs(0)),
                tiny_fit.config("ftp"),
                CtrlCAtBatch7(train.images, train.labels, train.batch_size),
                validation,
                tests,
                interrupted,
            )
        self.assertIs(signal.getsignal(signal.SIGINT), previous)  # the handler is restored
        # The loop reads batch k + 1 ahead, while step k runs (device prefetch): the Ctrl-C at
        # the read of batch 7 comes during step 6, which finished and was saved: epoch 2,
        # batch 7 (12 per epoch).
        self.assertEqual(Checkpointer(Path(interrupted, "checkpoints")).latest_step(), 12 + 7)
        self.assertFalse(Path(interrupted, "result.json").exists())
        self.assertEqual(tiny_fit.run(interrupted, "ftp").to_json(), expected.to_json())
        chex.assert_trees_all_equal(
            _final_state(straight, "ftp")[1], _final_state(interrupted, "ftp")[1]
        )

    def test_half_written_checkpoint_is_ignored(self):
        straight = self.tmpdir()
        workdir = self.tmpdir()
        expected = tiny_fit.run(straight, "ftp")
        tiny_fit.run(workdir, "ftp", stop_after_steps=8)
        # A save interrupted by a kill: orbax's temporary directory, never finalized.
        partial = Path(workdir, "checkpoints", "30.orbax-checkpoint-tmp-123")
        partial.mkdir()
        (partial / "garbage").write_text("half")
        self.assertEqual(Checkpointer(Path(workdir, "checkpoints")).latest_step(), 8)
        self.assertEqual(tiny_fit.run(workdir, "ftp").to_json(), expected.to_json())

    def test_other_method_checkpoint_is_refused(self):
        workdir = self.tmpdir()
        tiny_fit.run(workdir, "ftp", stop_after_steps=8)
        with self.assertRaisesRegex(
            CheckpointMismatchError,
            r"belongs to another run, with other settings: "
            r"method.name: 'ftp' in the work directory, 'vanilla' now\.$",
        ):
            tiny_fit.run(workdir, "vanilla")

    def test_mismatch_names_exactly_the_settings_that_differ(self):
        workdir = self.tmpdir()
        tiny_fit.run(workdir, "ftp", stop_after_steps=8)
        with self.assertRaises(CheckpointMismatchError) as caught:
            tiny_fit.run(workdir, "ftp", epochs=4, batch_size=8, progress=True)
        message = str(caught.exception)
        self.assertIn("epochs: 3 in the work directory, 4 now", message)
        self.assertIn("batch_size: 16 in the work directory, 8 now", message)
        self.assertNotIn("progress", message)  # not part of a run's identity
        self.assertNotIn("learning_rate", message)  # the same in both

    def test_corrupted_checkpoint_is_refused(self):
        workdir = self.tmpdir()
        tiny_fit.run(workdir, "ftp", stop_after_steps=8)
        step_dir = Path(workdir, "checkpoints", "8")
        for path in step_dir.rglob("*"):
            if path.is_file() and "meta" not in str(path.relative_to(step_dir)):
                path.write_bytes(b"\x00corrupt")
        with self.assertRaisesRegex(CheckpointMismatchError, r"cannot restore the checkpoint"):
            tiny_fit.run(workdir, "ftp")

    def test_prng_key_model_state_round_trips(self):
        class WithDropout(nnx.Module):
            def __init__(self, rngs):
                self.dense = nnx.Linear(2, 2, rngs=rngs)
                self.dropout = nnx.Dropout(0.5, rngs=rngs)

        graphdef, params, model_state = split_model(WithDropout(nnx.Rngs(0)))
        state = initial_train_state(params, model_state, optax.sgd(0.1))
        checkpointer = Checkpointer(self.tmpdir())
        extra = {"best": params}
        checkpointer.save(1, state, extra, {"fingerprint": "x"})
        restored, _, _ = checkpointer.restore(1, state, extra, "x")
        key = restored.model_state["dropout"]["rngs"]["key"]
        self.assertTrue(jax.numpy.issubdtype(key.dtype, jax.dtypes.prng_key))
        np.testing.assert_array_equal(
            jax.random.key_data(key), jax.random.key_data(model_state["dropout"]["rngs"]["key"])
        )


class ConfigTest(parameterized.TestCase):
    def test_overrides(self):
        config = apply_overrides(
            TrainConfig(), ["epochs=3", "method.name='ftp'", "method.learning_rate=1"]
        )
        self.assertEqual(config.epochs, 3)
        self.assertEqual(config.method.name, "ftp")
        self.assertIsInstance(config.method.learning_rate, float)

    def test_unknown_key(self):
        with self.assertRaisesRegex(KeyError, r"no key 'method.lr'.*learning_rate"):
            apply_overrides(TrainConfig(), ["method.lr=0.1"])

    def test_unknown_method(self):
        with self.assertRaisesRegex(ValueError, r"unknown method.name 'ftpp'"):
            MethodConfig(name="ftpp")

    def test_values_are_checked_against_the_field_types(self):
        with self.assertRaisesRegex(ValueError, r"^epochs=abc: epochs expects an int, got"):
            apply_overrides(TrainConfig(), ["epochs=abc"])
        with self.assertRaisesRegex(ValueError, r"method.momentum expects a number"):
            apply_overrides(TrainConfig(), ["method.momentum=[1]"])
        with self.assertRaisesRegex(ValueError, r"^epochs=0 is refused: epochs must be >= 1"):
            apply_overrides(TrainConfig(), ["epochs=0"])
        config = apply_overrides(
            TrainConfig(), ["method.name=ftp", "progress=false", "method.learning_rate=1"]
        )
        self.assertEqual((config.method.name, config.progress), ("ftp", False))
        self.assertEqual(config.method.learning_rate, 1.0)

    def test_unknown_keys_suggest_the_closest(self):
        with self.assertRaisesRegex(KeyError, r"did you mean epochs\b"):
            apply_overrides(TrainConfig(), ["epoch=3"])
        with self.assertRaisesRegex(KeyError, r"did you mean method.learning_rate\b"):
            apply_overrides(TrainConfig(), ["learning_rate=3"])  # the key without its group
        with self.assertRaisesRegex(KeyError, r"'method' is a group; set one of its keys"):
            apply_overrides(TrainConfig(), ["method=3"])

    def test_tuples_of_configs_by_position_and_every_key_listed(self):
        from ftp_jax.experiment.config import default_config
        from ftp_jax.train.config import config_items, format_config

        config = apply_overrides(default_config(), ["methods.2.method.learning_rate=0.5"])
        self.assertEqual(config.methods[2].method.learning_rate, 0.5)
        self.assertEqual(config.methods[1:2], default_config().methods[1:2])
        keys = dict(config_items(config))
        self.assertEqual(keys["methods.2.method.learning_rate"], 0.5)
        self.assertIn("methods.2.method.learning_rate = 0.5", format_config(config).splitlines())
        last = len(default_config().methods) - 1
        with self.assertRaisesRegex(KeyError, rf"'99' is not a position 0..{last}\b"):
            apply_overrides(config, ["methods.99.label=x"])


class MixedPrecisionLoopTest(_TempdirTest):
    """``TrainConfig.compute_dtype``: a bfloat16 run keeps float32 params and state."""

    def test_compute_dtype_is_a_checked_choice_defaulting_to_float32(self):
        from ftp_jax import models
        from ftp_jax.train.config import COMPUTE_DTYPES
        from ftp_jax.train.loop import _run_settings

        self.assertEqual(TrainConfig().compute_dtype, "float32")
        self.assertEqual(COMPUTE_DTYPES, models.COMPUTE_DTYPES)
        config = apply_overrides(TrainConfig(), ["compute_dtype=bfloat16"])
        self.assertEqual(config.compute_dtype, "bfloat16")
        with self.assertRaisesRegex(
            ValueError,
            r"^compute_dtype=int8 is refused: unknown compute_dtype 'int8'; expected one of "
            r"\('float32', 'bfloat16', 'float16'\)",
        ):
            apply_overrides(TrainConfig(), ["compute_dtype=int8"])
        # float32 is not part of a run's identity (work directories from before stay
        # readable); bfloat16 is (its checkpoints are not resumed as float32's).
        self.assertNotIn("compute_dtype", _run_settings(TrainConfig()))
        self.assertEqual(_run_settings(config)["compute_dtype"], "bfloat16")

    def test_the_loss_is_at_least_float32(self):
        from ftp_jax.train.steps import cross_entropy

        logits = np.asarray([[2.0, 0.5, -1.0], [0.1, 0.2, 0.3]], np.float32)
        labels = np.asarray([0, 2])
        low = cross_entropy(jax.numpy.asarray(logits, jax.numpy.bfloat16), labels)
        self.assertEqual(low.dtype, np.float32)
        rounded = np.asarray(jax.numpy.asarray(logits, jax.numpy.bfloat16), np.float32)
        self.assertEqual(float(low), float(cross_entropy(rounded, labels)))
        with jax.enable_x64(True):
            self.assertEqual(cross_entropy(logits.astype(np.float64), labels).dtype, np.float64)

    def test_bfloat16_run_keeps_float32_state_and_lands_near_float32(self):
        # TPGM: its held-out loss runs the bfloat16 model too. TinyNet has a batch norm.
        results, states = {}, {}
        for dtype in ("float32", "bfloat16"):
            workdir = self.tmpdir()
            results[dtype] = tiny_fit.run(workdir, "tpgm", epochs=2, compute_dtype=dtype)
            _, states[dtype] = _final_state(workdir, "tpgm")
        state = states["bfloat16"]["state"]
        self.assertEqual(results["bfloat16"].skipped_steps, 0)
        for name in ("params", "model_state", "opt_state"):
            leaves = jax.tree.leaves(state[name])
            floats = [x for x in leaves if np.issubdtype(x.dtype, np.floating)]
            self.assertNotEmpty(floats, name)
            self.assertEqual({x.dtype for x in floats}, {np.dtype(np.float32)}, name)
        self.assertEqual(state["model_state"]["norm"]["mean"].dtype, np.float32)
        # TPGM's state (restored as dicts): its anchor and radii.
        # The radii are one vector per dtype (ftp_jax._layout.LeafScalars), keyed by it.
        self.assertEqual(state["opt_state"]["radius"]["float32"].dtype, np.float32)
        self.assertEqual(state["opt_state"]["anchor"]["body"]["kernel"].dtype, np.float32)
        # 50 validation examples, 3 classes: the accuracies agree within a few examples,
        # the batch statistics within bfloat16's rounding.
        self.assertAlmostEqual(
            results["bfloat16"].validation["accuracy"],
            results["float32"].validation["accuracy"],
            delta=0.06,
        )
        np.testing.assert_allclose(
            state["model_state"]["norm"]["mean"],
            states["float32"]["state"]["model_state"]["norm"]["mean"],
            rtol=0.05,
            atol=0.02,
        )


if __name__ == "__main__":
    pytest.main([__file__])


def test_run_settings_hold_only_what_differs_from_the_defaults():
    import dataclasses

    from ftp_jax.train.loop import _run_settings

    base = TrainConfig(method=MethodConfig(name="ftp", learning_rate=0.05))
    assert _run_settings(base) == {"method": {"name": "ftp", "learning_rate": 0.05}}
    # What does not change the numbers is not part of the run's identity.
    quiet = dataclasses.replace(base, progress=False, checkpoint_every=7, eval_batch_size=3)
    assert _run_settings(quiet) == _run_settings(base)
    assert _run_settings(dataclasses.replace(base, epochs=base.epochs + 1)) != _run_settings(base)

    # A field added later with a default keeps existing work directories readable.
    @dataclasses.dataclass(frozen=True)
    class LaterMethodConfig(MethodConfig):
        new_option: float = 0.0

    @dataclasses.dataclass(frozen=True)
    class LaterTrainConfig(TrainConfig):
        another_option: bool = False

    later = LaterTrainConfig(method=LaterMethodConfig(name="ftp", learning_rate=0.05))
    assert _run_settings(later) == _run_settings(base)
    changed = LaterTrainConfig(
        method=LaterMethodConfig(name="ftp", learning_rate=0.05, new_option=1.0)
    )
    assert _run_settings(changed) != _run_settings(base)
