"""Tests for ftp_jax._tpgm: reference numbers, schedules, the loop, errors."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from absl.testing import parameterized
from flax import nnx

import ftp_jax
from tests import golden


def _radii_trajectory(projection, params, state, batches):
    """Runs the update steps one by one; returns (radii after each, final state)."""

    def body(state, batch):
        state, _ = projection.update_step(params, state, batch)
        return state, ftp_jax.tpgm_radii(state)

    return jax.lax.scan(body, state, batches)[::-1]


class GoldenTest(parameterized.TestCase):
    @parameterized.product(
        case=golden.TPGM_CASES, precision=("float64", "float32"), layout=("torch", "flax")
    )
    def test_matches_reference(self, case, precision, layout):
        norm, exclusion = case
        with jax.enable_x64(precision == "float64"):
            problem = golden.TPGMProblem(precision, norm, exclusion, layout)
            pre, tuned = problem.tree("pre"), problem.tree("ft")
            batches = problem.batches()
            projection = ftp_jax.tpgm(
                problem.loss,
                mask=problem.mask,
                row_axes=problem.row_axes,
                norm=problem.norm,
                proj_lr=problem.proj_lr,
                max_iters=batches["y"].shape[0],
            )
            state = projection.init(pre)
            radii, _ = jax.jit(_radii_trajectory, static_argnums=0)(
                projection, tuned, state, batches
            )
            projected, final_state, losses = jax.jit(projection.update)(tuned, state, batches)
            expected_projected = problem.tree("projected")
        rtol = 1e-9 if precision == "float64" else 1e-5
        expected = problem.reference_radii()
        by_path = {
            ftp_jax.leaf_path(kp): r for kp, r in jax.tree_util.tree_flatten_with_path(radii)[0]
        }
        self.assertEqual(sorted(by_path), sorted(problem.path(n) for n in problem.radius_names))
        for column, name in enumerate(problem.radius_names):
            # float32: relative to the trajectory's scale (radii cross zero after a step).
            scale = 0.0 if precision == "float64" else np.max(np.abs(expected[:, column]))
            np.testing.assert_allclose(
                by_path[problem.path(name)],
                expected[:, column],
                rtol=rtol,
                atol=rtol * scale,
                err_msg=name,
            )
        atol = 0.0 if precision == "float64" else 1e-6
        chex.assert_trees_all_close(projected, expected_projected, rtol=rtol, atol=atol)
        self.assertEqual(losses.shape, (expected.shape[0],))
        self.assertTrue(bool(final_state.initialized))


def _mlp_problem():
    keys = jax.random.split(jax.random.key(0), 8)
    pre = {
        "fc1": {"kernel": jax.random.normal(keys[0], (5, 8)) * 0.5, "bias": jnp.zeros(8)},
        "fc2": {"kernel": jax.random.normal(keys[1], (8, 3)) * 0.5, "bias": jnp.zeros(3)},
    }
    tuned = jax.tree_util.tree_map(
        lambda p, k: p + 0.3 * jax.random.normal(k, p.shape),
        pre,
        {"fc1": {"kernel": keys[2], "bias": keys[3]}, "fc2": {"kernel": keys[4], "bias": keys[5]}},
    )

    def loss(params, batch):
        hidden = jnp.tanh(batch["x"] @ params["fc1"]["kernel"] + params["fc1"]["bias"][None])
        logits = hidden @ params["fc2"]["kernel"] + params["fc2"]["bias"][None]
        return optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"]).mean()

    x = jax.random.normal(keys[6], (6, 16, 5))
    y = jnp.argmax(x @ pre["fc1"]["kernel"] @ pre["fc2"]["kernel"], axis=-1)
    return pre, tuned, loss, {"x": x, "y": y}


class BehaviourTest(parameterized.TestCase):
    def test_jit_and_no_jit_agree(self):
        pre, tuned, loss, batches = _mlp_problem()
        projection = ftp_jax.tpgm(loss, proj_lr=5e-2, max_iters=6)
        state = projection.init(pre)
        eager = projection.update(tuned, state, batches)
        jitted = jax.jit(projection.update)(tuned, state, batches)
        chex.assert_trees_all_close(eager, jitted, rtol=1e-5, atol=1e-6)

    def test_no_recompile_across_steps(self):
        pre, tuned, loss, batches = _mlp_problem()
        projection = ftp_jax.tpgm(loss, proj_lr=5e-2, max_iters=3)
        traces = []

        @jax.jit
        def step(params, state, batch):
            traces.append(1)
            return projection.update_step(params, state, batch)

        state = projection.init(pre)
        heldout = [jax.tree_util.tree_map(lambda x, i=i: x[i], batches) for i in range(6)]
        iterator = None
        for _ in range(3):
            _, state, losses, iterator = ftp_jax.run_projection_update(
                projection, tuned, state, heldout, update_step=step, iterator=iterator
            )
            self.assertLen(losses, 3)
        self.assertLen(traces, 1)

    def test_initialization_and_clipping(self):
        pre, tuned, loss, _ = _mlp_problem()
        projection = ftp_jax.tpgm(loss)
        state = projection.init(pre)
        self.assertFalse(bool(state.initialized))
        _, state = projection.apply(tuned, state)
        kernel_norms = jnp.sum(jnp.abs(tuned["fc1"]["kernel"] - pre["fc1"]["kernel"]), axis=0)
        np.testing.assert_allclose(state.radius["fc1"]["kernel"], kernel_norms.min() / 2, rtol=1e-6)
        bias_norm = jnp.sum(jnp.abs(tuned["fc1"]["bias"] - pre["fc1"]["bias"]))
        np.testing.assert_allclose(state.radius["fc1"]["bias"], bias_norm / 2, rtol=1e-6)
        # A radius above every row norm is clipped to the largest; below 1e-8 to 1e-8.
        big = state._replace(radius=jax.tree_util.tree_map(lambda r: r + 100.0, state.radius))
        _, clipped = projection.apply(tuned, big)
        np.testing.assert_allclose(clipped.radius["fc1"]["kernel"], kernel_norms.max(), rtol=1e-6)
        small = state._replace(radius=jax.tree_util.tree_map(lambda r: r * 0 - 1, state.radius))
        projected, clipped = projection.apply(tuned, small)
        np.testing.assert_allclose(clipped.radius["fc2"]["bias"], 1e-8)
        np.testing.assert_allclose(projected["fc1"]["kernel"], pre["fc1"]["kernel"], atol=1e-6)

    def test_gradient_flows_to_radius_only(self):
        pre, tuned, loss, batches = _mlp_problem()
        radius = {"fc1": {"kernel": 0.5, "bias": 0.1}, "fc2": {"kernel": 0.3, "bias": 0.1}}
        batch = jax.tree_util.tree_map(lambda x: x[0], batches)

        def outer(params, radius):
            return loss(ftp_jax.project_to_anchor(params, pre, radius), batch)

        params_grad, radius_grad = jax.grad(outer, argnums=(0, 1))(tuned, radius)
        for leaf in jax.tree_util.tree_leaves(params_grad["fc1"]):
            # fc1 is projected with stop_gradient: only its radius gets a gradient.
            self.assertEqual(float(jnp.max(jnp.abs(leaf))), 0.0)
        self.assertNotEqual(float(radius_grad["fc1"]["kernel"]), 0.0)

    def test_projected_rows_within_radius(self):
        pre, tuned, loss, batches = _mlp_problem()
        projection = ftp_jax.tpgm(loss, proj_lr=5e-2, max_iters=6)
        projected, state, _ = projection.update(tuned, projection.init(pre), batches)
        rows = jnp.sum(jnp.abs(projected["fc1"]["kernel"] - pre["fc1"]["kernel"]), axis=0)
        self.assertLessEqual(float(rows.max()), float(state.radius["fc1"]["kernel"]) * (1 + 1e-5))

    def test_rows_inside_the_ball_are_unchanged(self):
        pre, tuned, _, _ = _mlp_problem()
        tuned_rows = jnp.sum(jnp.abs(tuned["fc1"]["kernel"] - pre["fc1"]["kernel"]), axis=0)
        radius = {
            "fc1": {"kernel": jnp.median(tuned_rows), "bias": None},
            "fc2": {"kernel": None, "bias": None},
        }
        mask = {"fc1": {"kernel": True, "bias": False}, "fc2": {"kernel": False, "bias": False}}
        projected = ftp_jax.project_to_anchor(tuned, pre, radius, mask=mask)
        inside = np.asarray(tuned_rows < radius["fc1"]["kernel"])
        self.assertTrue(inside.any() and not inside.all())
        np.testing.assert_allclose(
            projected["fc1"]["kernel"][:, inside], tuned["fc1"]["kernel"][:, inside], rtol=1e-6
        )
        projected_rows = jnp.sum(jnp.abs(projected["fc1"]["kernel"] - pre["fc1"]["kernel"]), 0)
        np.testing.assert_allclose(projected_rows[~inside], radius["fc1"]["kernel"], rtol=1e-5)
        chex.assert_trees_all_equal(projected["fc2"], tuned["fc2"])

    def test_schedule(self):
        self.assertEqual(
            [ftp_jax.projection_action(i, 3) for i in range(5)],
            ["update", "apply", "apply", "update", "apply"],
        )
        self.assertEqual(ftp_jax.projection_action(4, 0), "none")
        with self.assertRaisesRegex(ValueError, r"proj_freq"):
            ftp_jax.projection_action(0, -1)


class BatchNormLoopTest(parameterized.TestCase):
    """TPGM in a small jitted fine-tuning loop of an NNX model with batch norm."""

    def test_loop_with_proj_freq_and_batch_norm(self):
        class Net(nnx.Module):
            def __init__(self, rngs):
                self.body = nnx.Linear(4, 8, rngs=rngs)
                self.norm = nnx.BatchNorm(8, rngs=rngs)
                self.head = nnx.Linear(8, 3, rngs=rngs)

            def __call__(self, x):
                return self.head(jnp.tanh(self.norm(self.body(x))))

        model = Net(nnx.Rngs(0))
        graphdef, params, batch_stats = nnx.split(model, nnx.Param, nnx.BatchStat)
        params, batch_stats = nnx.to_pure_dict(params), nnx.to_pure_dict(batch_stats)
        x = jax.random.normal(jax.random.key(1), (8, 16, 4))
        y = jax.random.randint(jax.random.key(2), (8, 16), 0, 3)

        def loss(params, batch_stats, batch, train):
            m = nnx.merge(graphdef, params, batch_stats)
            m.train() if train else m.eval()
            logits = m(batch["x"])
            ce = optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"]).mean()
            return ce, nnx.to_pure_dict(nnx.state(m, nnx.BatchStat))

        heldout_calls = []

        def heldout_loss(params, batch):
            heldout_calls.append(1)
            return loss(params, batch_stats_now[0], batch, train=False)[0]

        mask = ftp_jax.path_rules([(r"head/.*", False), (r".*", True)], name="mask")
        projection = ftp_jax.tpgm(heldout_loss, mask=mask, proj_lr=1e-2, max_iters=1)
        tx = optax.sgd(0.1, momentum=0.9)
        opt_state = tx.init(params)
        tpgm_state = projection.init(params)
        batch_stats_now = [batch_stats]

        @jax.jit
        def train_step(params, batch_stats, opt_state, batch):
            (_, new_stats), grads = jax.value_and_grad(
                lambda p: loss(p, batch_stats, batch, train=True), has_aux=True
            )(params)
            updates, opt_state = tx.update(grads, opt_state, params)
            return optax.apply_updates(params, updates), new_stats, opt_state

        update_step = jax.jit(projection.update_step)
        apply = jax.jit(projection.apply)
        heldout = [{"x": x[i], "y": y[i]} for i in range(6, 8)]
        iterator = None
        for i in range(6):
            batch = {"x": x[i], "y": y[i]}
            params, batch_stats, opt_state = train_step(params, batch_stats, opt_state, batch)
            batch_stats_now[0] = batch_stats
            stats_before = jax.tree_util.tree_map(jnp.copy, batch_stats)
            action = ftp_jax.projection_action(i, proj_freq=2)
            if action == "update":
                params, tpgm_state, _, iterator = ftp_jax.run_projection_update(
                    projection,
                    params,
                    tpgm_state,
                    heldout,
                    update_step=update_step,
                    apply=apply,
                    iterator=iterator,
                )
            else:
                params, tpgm_state = apply(params, tpgm_state)
            # The projection touches neither the statistics nor the head.
            chex.assert_trees_all_equal(batch_stats, stats_before)
        # Batch statistics are not params: they are not in the TPGM state at all.
        self.assertNotIn("mean", str(ftp_jax.leaf_paths(tpgm_state.radius)))
        radii = ftp_jax.tpgm_radii(tpgm_state)
        self.assertIsNone(radii["head"]["kernel"])
        self.assertIn("scale", radii["norm"])
        # The statistics did move during training (so the equality above is meaningful).
        self.assertGreater(float(jnp.abs(batch_stats["norm"]["mean"]).max()), 1e-3)
        rows = jnp.sum(jnp.abs(params["body"]["kernel"] - tpgm_state.anchor["body"]["kernel"]), 0)
        self.assertLessEqual(float(rows.max()), float(radii["body"]["kernel"]) * (1 + 1e-5))
        self.assertLen(heldout_calls, 1)  # traced once, reused by every update


class UnrolledTest(parameterized.TestCase):
    def test_unrolled_differs_and_is_sensible(self):
        pre, tuned, loss, batches = _mlp_problem()
        train = {"x": batches["x"][:, None] * 1.5, "y": batches["y"][:, None]}  # (iters, K=1)
        truncated = ftp_jax.tpgm(loss, proj_lr=5e-2, max_iters=6)
        unrolled = ftp_jax.tpgm(
            loss,
            proj_lr=5e-2,
            max_iters=6,
            unroll_steps=1,
            train_loss=loss,
            inner_learning_rate=0.5,
        )
        state = truncated.init(pre)
        _, t_state, t_losses = jax.jit(truncated.update)(tuned, state, batches)
        _, u_state, u_losses = jax.jit(unrolled.update)(tuned, state, batches, train)
        t_radii = np.array(jax.tree_util.tree_leaves(t_state.radius))
        u_radii = np.array(jax.tree_util.tree_leaves(u_state.radius))
        self.assertTrue(np.all(np.isfinite(u_radii)))
        self.assertGreater(np.max(np.abs(t_radii - u_radii)), 1e-4)
        self.assertTrue(np.all(np.isfinite(np.asarray(u_losses))))

    def test_zero_inner_learning_rate_matches_projection_of_projection(self):
        # With eta = 0 the inner step is the projection applied again (idempotent on
        # the clipped radius), so the unrolled gradient's value equals the truncated one.
        pre, tuned, loss, batches = _mlp_problem()
        train = {"x": batches["x"][:, None], "y": batches["y"][:, None]}
        truncated = ftp_jax.tpgm(loss, proj_lr=5e-2, max_iters=6)
        unrolled = ftp_jax.tpgm(
            loss,
            proj_lr=5e-2,
            max_iters=6,
            unroll_steps=1,
            train_loss=loss,
            inner_learning_rate=0.0,
        )
        state = truncated.init(pre)
        _, _, t_losses = truncated.update(tuned, state, batches)
        _, _, u_losses = unrolled.update(tuned, state, batches, train)
        np.testing.assert_allclose(u_losses[0], t_losses[0], rtol=1e-6)


class ErrorTest(parameterized.TestCase):
    def setUp(self):
        super().setUp()
        self.pre, self.tuned, self.loss, self.batches = _mlp_problem()
        self.projection = ftp_jax.tpgm(self.loss, max_iters=2)
        self.state = self.projection.init(self.pre)

    def test_empty_heldout(self):
        with self.assertRaisesRegex(ValueError, r"yielded no batch"):
            ftp_jax.run_projection_update(self.projection, self.tuned, self.state, [])
        with self.assertRaisesRegex(ValueError, r"yielded no batch.*cannot be restarted"):
            ftp_jax.run_projection_update(self.projection, self.tuned, self.state, iter([]))

    def test_wrong_batch_structure(self):
        good = {"x": self.batches["x"][0], "y": self.batches["y"][0]}
        with self.assertRaisesRegex(ValueError, r"batch #1 has structure"):
            ftp_jax.run_projection_update(
                self.projection, self.tuned, self.state, [good, {"x": good["x"]}]
            )
        with self.assertRaisesRegex(ValueError, r"does not fit `heldout_loss`.*KeyError"):
            ftp_jax.run_projection_update(
                self.projection, self.tuned, self.state, [{"image": good["x"]}]
            )

    def test_bad_arguments(self):
        with self.assertRaisesRegex(ValueError, r"unknown `norm` 'l1'"):
            ftp_jax.tpgm(self.loss, norm="l1")
        with self.assertRaisesRegex(ValueError, r"`max_iters` must be a positive int"):
            ftp_jax.tpgm(self.loss, max_iters=0)
        with self.assertRaisesRegex(ValueError, r"train_loss"):
            ftp_jax.tpgm(self.loss, unroll_steps=2)
        with self.assertRaisesRegex(ValueError, r"max_iters=2 batches"):
            self.projection.update(self.tuned, self.state, self.batches)  # 6 stacked

    def test_mask_matching_nothing(self):
        mask = ftp_jax.path_rules([(r"head/.*", False), (r".*", True)], name="mask")
        with self.assertRaisesRegex(ValueError, r"rule 'head/\.\*' matched no parameter"):
            ftp_jax.tpgm(self.loss, mask=mask).init(self.pre)


if __name__ == "__main__":
    pytest.main([__file__])
