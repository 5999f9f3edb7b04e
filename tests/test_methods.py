"""The peer methods in the training loop: MethodConfig checks, build_method, tiny fits."""

from __future__ import annotations

import dataclasses
import json
import shutil
import tempfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from absl.testing import parameterized
from flax import nnx

import ftp_jax
from ftp_jax.train import MethodConfig, TrainConfig, apply_overrides, build_method, fit, methods
from ftp_jax.train.steps import split_model
from tests import tiny_fit


def _params():
    return split_model(tiny_fit.TinyNet(nnx.Rngs(0)))[1]


def _method_config(name="vanilla", **settings):
    """A MethodConfig from flat keyword settings: those of the method's options go there."""
    options_type = methods.options_type(name)
    own = {f.name for f in dataclasses.fields(options_type)}
    options = options_type(**{k: v for k, v in settings.items() if k in own})
    common = {k: v for k, v in settings.items() if k not in own}
    return MethodConfig(name=name, options=options, **common)


class ConfigTest(parameterized.TestCase):
    def test_options_are_the_methods_own(self):
        """Each method's options dataclass comes from the registry; another's is refused."""
        self.assertEqual(MethodConfig(name="ftp").options, methods.FTPOptions())
        self.assertEqual(MethodConfig(name="vanilla").options, methods.NoOptions())
        with self.assertRaisesRegex(ValueError, r"method 'tpgm' must be a TPGMOptions.*FTPOptions"):
            MethodConfig(name="tpgm", options=methods.FTPOptions(k=0.5))
        for name in methods.METHODS:
            self.assertIsInstance(MethodConfig(name=name).options, methods.REGISTRY[name].options)

    def test_methods_lists_a_method_registered_after_import(self):
        """Regression: ``METHODS`` was a tuple taken at import, without later methods."""
        from ftp_jax.train import config as config_module

        self.assertEqual(methods.METHODS, tuple(methods.REGISTRY))
        self.assertNotIn("added", methods.METHODS)
        methods.REGISTRY["added"] = methods.Entry(
            methods.NoOptions, methods.REGISTRY["vanilla"].build
        )
        self.addCleanup(methods.REGISTRY.pop, "added")
        self.assertEqual(methods.METHODS[-1], "added")
        self.assertEqual(config_module.METHODS, methods.METHODS)
        self.assertEqual(MethodConfig(name="added").options, methods.NoOptions())
        with self.assertRaises(AttributeError):
            methods.NOT_AN_ATTRIBUTE  # noqa: B018

    def test_lp_epochs_must_leave_fine_tuning_epochs(self):
        lp_ft = methods.LPFTOptions(lp_epochs=3)
        with self.assertRaisesRegex(ValueError, r"lp_epochs=3 and epochs=3 never fine-tunes"):
            TrainConfig(epochs=3, method=MethodConfig(name="lp_ft", options=lp_ft))
        TrainConfig(epochs=4, method=MethodConfig(name="lp_ft", options=lp_ft))

    def test_new_names_and_overrides(self):
        config = apply_overrides(
            TrainConfig(epochs=5),
            ["method.name='mars_pgm'", "method.options.radius=(('dense/.*', 2.0), ('.*', 1))"],
        )
        self.assertEqual(config.method.options.radius, (("dense/.*", 2.0), (".*", 1)))
        # A name change with default options takes the new method's defaults; an option of
        # another method is an unknown key naming the close ones.
        with self.assertRaisesRegex(ValueError, r"must be a TPGMOptions.*got MarsPGMOptions"):
            apply_overrides(config, ["method.name=tpgm"])  # set options that are not defaults
        config = apply_overrides(
            TrainConfig(epochs=5), ["method.name=tpgm", "method.options.max_iters=3"]
        )
        self.assertEqual(config.method.options, methods.TPGMOptions(max_iters=3))
        with self.assertRaisesRegex(KeyError, r"no key 'method.options.k'"):
            apply_overrides(config, ["method.options.k=0.5"])
        with self.assertRaisesRegex(ValueError, r"unknown method.name 'spdd'.*'spd'.*'lp_ft'"):
            MethodConfig(name="spdd")


class BuildMethodTest(parameterized.TestCase):
    def _tx(self, **method):
        config = TrainConfig(epochs=4, method=_method_config(learning_rate=0.1, **method))
        return build_method(config, _params(), steps_per_epoch=2).tx

    def test_l2sp_coupled_is_l2sp_before_sgd(self):
        params = _params()
        tx = self._tx(name="l2sp", alpha=0.5, beta=0.2, momentum=0.0)
        moved = jax.tree_util.tree_map(lambda p: p + 1.0, params)
        zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
        updates, _ = tx.update(zeros, tx.init(params), moved)
        # lr 0.1 (cosine at epoch 0): -0.1 * 0.5 * 1 on the body, -0.1 * 0.2 * w on the head.
        np.testing.assert_allclose(updates["body"]["kernel"], -0.05, rtol=1e-6)
        np.testing.assert_allclose(
            updates["head"]["kernel"], -0.02 * moved["head"]["kernel"], rtol=1e-5, atol=1e-7
        )

    def test_l2sp_decoupled(self):
        params = _params()
        tx = self._tx(name="l2sp", alpha=0.5, decoupled=True, optimizer="adamw")
        self.assertIsInstance(tx.init(params), ftp_jax.L2SPDecoupledState)

    def test_mars_pgm_radius_rules_skip_the_head(self):
        params = _params()
        rules = (("body/kernel", 0.0), (".*", 1e6))
        tx = self._tx(name="mars_pgm", radius=rules)
        grads = jax.tree_util.tree_map(jnp.ones_like, params)
        updates, state = tx.update(grads, tx.init(params), params)
        np.testing.assert_array_equal(updates["body"]["kernel"], 0.0)  # radius 0: pinned
        np.testing.assert_allclose(updates["body"]["bias"], -0.1, rtol=1e-6)  # free
        np.testing.assert_allclose(updates["head"]["kernel"], -0.1, rtol=1e-6)  # excluded
        self.assertIsInstance(state.anchor["head"]["kernel"], optax.MaskedNode)

    def test_mars_pgm_rules_must_cover_the_backbone(self):
        with self.assertRaisesRegex(ValueError, r"`method.options.radius`: no rule covers"):
            self._tx(name="mars_pgm", radius=(("body/.*", 1.0),)).init(_params())

    def test_spd_and_lp_ft_states(self):
        params = _params()
        self.assertIsInstance(self._tx(name="spd").init(params), ftp_jax.SPDState)
        self.assertIsInstance(self._tx(name="lp_ft", lp_epochs=1).init(params), ftp_jax.LPFTState)

    def test_lp_ft_switches_after_lp_epochs_on_the_global_schedule(self):
        params = _params()
        tx = self._tx(name="lp_ft", lp_epochs=1, momentum=0.0)  # 2 steps per epoch: switch at 2
        grads = jax.tree_util.tree_map(jnp.ones_like, params)
        state = tx.init(params)
        body, head = [], []
        for _ in range(3):
            updates, state = tx.update(grads, state, params)
            body.append(float(updates["body"]["kernel"][0, 0]))
            head.append(float(updates["head"]["kernel"][0, 0]))
        self.assertEqual(body[:2], [0.0, 0.0])
        # At the switch both follow the cosine at epoch 1 of 4: 0.1 * (1 + cos(pi / 4)) / 2.
        np.testing.assert_allclose([body[2], head[2]], -0.1 * (1 + np.cos(np.pi / 4)) / 2, 1e-5)


def _tiny_fit(workdir, **method):
    train, validation, tests = tiny_fit.data()
    config = TrainConfig(
        epochs=3,
        batch_size=16,
        progress=False,
        method=_method_config(learning_rate=0.05, **method),
    )
    return fit(tiny_fit.TinyNet(nnx.Rngs(0)), config, train, validation, tests, workdir)


class TinyFitTest(parameterized.TestCase):
    def setUp(self):
        super().setUp()
        self.workdir = Path(tempfile.mkdtemp(prefix="ftp_jax_methods_"))
        self.addCleanup(shutil.rmtree, self.workdir, ignore_errors=True)

    def _epochs(self):
        lines = (self.workdir / "metrics.jsonl").read_text().splitlines()
        return [x for x in map(json.loads, lines) if x["event"] == "epoch"]

    @parameterized.parameters(
        dict(name="l2sp", alpha=1.0),
        dict(name="mars_pgm", radius=0.05),
        dict(name="spd"),
        dict(name="lp_ft", lp_epochs=1),
    )
    def test_end_to_end(self, **method):
        result = _tiny_fit(self.workdir, **method)
        self.assertGreater(result.validation["accuracy"], 0.6)  # 3 classes: chance is 1/3
        epochs = self._epochs()
        self.assertLen(epochs, 3)
        distance = [e["distance"]["body/kernel"] for e in epochs]
        if method["name"] == "lp_ft":
            self.assertEqual(distance[0], 0.0)  # the linear probe: backbone untouched
            self.assertGreater(distance[-1], 0.0)
        else:
            self.assertGreater(distance[-1], 0.0)
        if method["name"] == "mars_pgm":
            # Each of the 16 rows has L1 distance <= 0.05, so L2 <= 0.05 * sqrt(16).
            self.assertLessEqual(distance[-1], 0.05 * 4 * (1 + 1e-5))


if __name__ == "__main__":
    pytest.main([__file__])


class ResumeTest(parameterized.TestCase):
    @parameterized.parameters(
        dict(name="lp_ft", lp_epochs=1),
        dict(name="l2sp", decoupled=True, optimizer="adamw"),
    )
    def test_resumed_run_is_identical(self, **method):
        straight, resumed = (Path(tempfile.mkdtemp(prefix="ftp_jax_methods_")) for _ in "ab")
        for path in (straight, resumed):
            self.addCleanup(shutil.rmtree, path, ignore_errors=True)
        train, validation, tests = tiny_fit.data()
        config = TrainConfig(
            epochs=3,
            batch_size=16,
            checkpoint_every=5,
            progress=False,
            method=_method_config(learning_rate=0.05, **method),
        )

        def run(workdir, **kwargs):
            model = tiny_fit.TinyNet(nnx.Rngs(0))
            return fit(model, config, train, validation, tests, workdir, **kwargs)

        expected = run(straight)
        self.assertIsNone(run(resumed, stop_after_steps=17))  # mid-epoch 2, after the switch
        self.assertEqual(run(resumed).to_json(), expected.to_json())
