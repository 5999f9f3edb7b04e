"""Tests for ftp_jax._tpgm: reference numbers, schedules, the loop, errors."""

from __future__ import annotations

import functools

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


def _zeros(params):
    return jax.tree_util.tree_map(jnp.zeros_like, params)


def _post_hoc(problem, tuned, pre, batches):
    """The reference's projection update: the radii after each Adam step, and the projection."""
    projected, state, history = ftp_jax.tpgm_post_hoc(
        problem.loss,
        tuned,
        batches,
        anchor=pre,
        mask=problem.mask,
        row_axes=problem.row_axes,
        norm=problem.norm,
        radius_learning_rate=problem.proj_lr,
    )
    return projected, state, ftp_jax.radii(state._replace(radius=history["radius"]))


def _reference_tx(problem, max_iters):
    """TPGM around a base optimizer that never moves: only the projection update acts."""
    return ftp_jax.tpgm(
        optax.set_to_zero(),
        problem.loss,
        mask=problem.mask,
        row_axes=problem.row_axes,
        norm=problem.norm,
        radius_learning_rate=problem.proj_lr,
        max_iters=max_iters,
    )


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
            iters = batches["y"].shape[0]
            post_hoc = jax.jit(functools.partial(_post_hoc, problem))
            projected, final_state, radii = post_hoc(tuned, pre, batches)
            # The transform (around a base that does not move) does the same.
            whole = _reference_tx(problem, iters)
            updates, tx_state = jax.jit(whole.update)(
                _zeros(tuned), whole.init(pre), tuned, heldout_batches=batches
            )
            tx_projected = optax.apply_updates(tuned, updates)
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
        chex.assert_trees_all_close(tx_projected, expected_projected, rtol=rtol, atol=atol)
        chex.assert_trees_all_equal(tx_state.radius, final_state.radius)
        self.assertTrue(np.isfinite(float(final_state.heldout_loss)))
        self.assertTrue(bool(final_state.initialized))


class LongFloat32GoldenTest(parameterized.TestCase):
    """40 radius-Adam iterations in float32 with x64 off (as users run it): radii reach
    their upper bound, where the ratio is exactly 1.0 and the reference's Hardtanh passes
    no gradient. Regression: with ``jnp.clip``'s 0.5 there, two cases were ~1e-2 off."""

    @parameterized.product(case=golden.TPGM_CASES, layout=("torch", "flax"))
    def test_matches_reference(self, case, layout):
        norm, exclusion = case
        self.assertFalse(jax.config.jax_enable_x64)
        problem = golden.TPGMProblem("float32", norm, exclusion, layout, stem=golden.TPGM_LONG)
        batches = problem.batches()
        pre, tuned = problem.tree("pre"), problem.tree("ft")
        projected, _, radii = jax.jit(functools.partial(_post_hoc, problem))(tuned, pre, batches)
        expected = problem.reference_radii()
        self.assertEqual(expected.shape[0], 40)
        by_path = {
            ftp_jax.leaf_path(kp): r for kp, r in jax.tree_util.tree_flatten_with_path(radii)[0]
        }
        for column, name in enumerate(problem.radius_names):
            scale = np.max(np.abs(expected[:, column]))
            np.testing.assert_allclose(
                by_path[problem.path(name)],
                expected[:, column],
                rtol=0,
                atol=1e-4 * scale,
                err_msg=name,
            )
        for path, got, want in zip(
            ftp_jax.leaf_paths(projected),
            jax.tree_util.tree_leaves(projected),
            jax.tree_util.tree_leaves(problem.tree("projected")),
            strict=True,
        ):
            scale = np.max(np.abs(want))
            np.testing.assert_allclose(got, want, rtol=0, atol=1e-4 * scale, err_msg=path)


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


def _post_hoc_tx(loss, max_iters, **kwargs):
    return ftp_jax.tpgm(
        optax.set_to_zero(), loss, radius_learning_rate=5e-2, max_iters=max_iters, **kwargs
    )


class BehaviourTest(parameterized.TestCase):
    def test_jit_and_no_jit_agree(self):
        pre, tuned, loss, batches = _mlp_problem()
        tx = _post_hoc_tx(loss, 6)
        state = tx.init(pre)
        eager = tx.update(_zeros(tuned), state, tuned, heldout_batches=batches)
        jitted = jax.jit(tx.update)(_zeros(tuned), state, tuned, heldout_batches=batches)
        chex.assert_trees_all_close(eager, jitted, rtol=1e-5, atol=1e-6)

    def test_update_without_heldout_only_projects(self):
        pre, tuned, loss, batches = _mlp_problem()
        tx = _post_hoc_tx(loss, 6)
        fitted = jax.jit(tx.update)(_zeros(tuned), tx.init(pre), tuned, heldout_batches=batches)[1]
        updates, applied = jax.jit(tx.update)(_zeros(tuned), fitted, tuned)
        chex.assert_trees_all_equal(applied.radius, fitted.radius)  # already clipped
        chex.assert_trees_all_equal(applied.radius_adam, fitted.radius_adam)
        expected = ftp_jax.project_to_anchor(tuned, pre, ftp_jax.tpgm_radii(fitted))
        chex.assert_trees_all_close(
            optax.apply_updates(tuned, updates), expected, rtol=1e-6, atol=1e-7
        )

    def test_post_hoc_in_chunks_equals_one_call(self):
        pre, tuned, loss, batches = _mlp_problem()
        whole, state, history = jax.jit(
            lambda p, b: ftp_jax.tpgm_post_hoc(loss, p, b, anchor=pre, radius_learning_rate=5e-2)
        )(tuned, batches)
        post_hoc = jax.jit(
            lambda p, b, s: ftp_jax.tpgm_post_hoc(
                loss, p, b, anchor=pre, radius_learning_rate=5e-2, state=s
            )
        )
        chunk_state, chunk_losses = None, []
        for i in range(3):
            chunk = jax.tree_util.tree_map(lambda x, i=i: x[2 * i : 2 * i + 2], batches)
            projected, chunk_state, part = post_hoc(tuned, chunk, chunk_state)
            chunk_losses.append(part["loss"])
        chex.assert_trees_all_close(projected, whole, rtol=1e-6, atol=1e-7)
        chex.assert_trees_all_close(chunk_state.radius, state.radius, rtol=1e-6, atol=1e-8)
        np.testing.assert_allclose(
            np.concatenate(chunk_losses), history["loss"], rtol=1e-6, atol=1e-7
        )
        # The same as the transform around a base that does not move.
        tx = _post_hoc_tx(loss, 6)
        updates, tx_state = tx.update(_zeros(tuned), tx.init(pre), tuned, heldout_batches=batches)
        chex.assert_trees_all_close(tx_state.radius, state.radius, rtol=1e-6, atol=1e-8)
        chex.assert_trees_all_close(
            optax.apply_updates(tuned, updates), whole, rtol=1e-6, atol=1e-7
        )

    def test_excluded_leaves_follow_the_base_optimizer_exactly(self):
        pre, tuned, loss, batches = _mlp_problem()
        mask = ftp_jax.path_rules([(r"fc2/.*", False), (r".*", True)], name="mask")
        base = optax.sgd(0.1, momentum=0.9)
        tx = ftp_jax.tpgm(base, loss, mask=mask, max_iters=1)
        grads = jax.grad(loss)(tuned, jax.tree_util.tree_map(lambda x: x[0], batches))
        batch = jax.tree_util.tree_map(lambda x: x[1], batches)
        updates, state = jax.jit(tx.update)(grads, tx.init(pre), tuned, heldout_batch=batch)
        base_updates, _ = base.update(grads, base.init(tuned), tuned)
        chex.assert_trees_all_equal(updates["fc2"], base_updates["fc2"])
        self.assertIsNone(ftp_jax.tpgm_radii(state)["fc2"]["kernel"])
        self.assertIsInstance(state.anchor["fc2"]["kernel"], optax.MaskedNode)

    def test_extra_arguments_reach_the_heldout_loss(self):
        pre, tuned, loss, batches = _mlp_problem()
        seen = []

        def heldout_loss(params, batch, *, temperature, **unused):
            seen.append(sorted(unused))
            return loss(params, batch) / temperature

        tx = ftp_jax.tpgm(optax.sgd(0.1), heldout_loss, max_iters=2)
        heldout = jax.tree_util.tree_map(lambda x: x[:2], batches)
        _, state = jax.jit(tx.update)(
            _zeros(tuned), tx.init(pre), tuned, heldout_batches=heldout, temperature=2.0, rng=1
        )
        self.assertEqual(seen, [["rng"]] * 2)  # traced once per radius step (unrolled)
        self.assertTrue(np.isfinite(float(state.heldout_loss)))

    def test_nnx_optimizer_and_chain(self):
        class Net(nnx.Module):
            def __init__(self, rngs):
                self.fc1 = nnx.Linear(5, 8, rngs=rngs)
                self.fc2 = nnx.Linear(8, 3, rngs=rngs)

            def __call__(self, x):
                return self.fc2(jnp.tanh(self.fc1(x)))

        model = Net(nnx.Rngs(0))
        graphdef = nnx.graphdef(model)
        _, _, loss, batches = _mlp_problem()

        def heldout_loss(params, batch):
            logits = nnx.merge(graphdef, params)(batch["x"])
            return optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"]).mean()

        tx = optax.chain(optax.clip_by_global_norm(1.0), ftp_jax.tpgm(optax.sgd(0.1), heldout_loss))
        optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)

        @nnx.jit
        def step(model, optimizer, batch, heldout):
            grads = nnx.grad(lambda m: heldout_loss(nnx.state(m, nnx.Param), batch))(model)
            optimizer.update(model, grads, heldout_batch=heldout)

        for i in range(3):
            pick = lambda x, i=i: x[i]  # noqa: E731
            step(
                model,
                optimizer,
                jax.tree_util.tree_map(pick, batches),
                jax.tree_util.tree_map(lambda x, i=i: x[i + 3], batches),
            )
        radii = ftp_jax.radii(optimizer.opt_state)
        self.assertEqual(set(radii), {"fc1", "fc2"})
        self.assertTrue(np.isfinite(float(radii["fc1"]["kernel"])))

    def test_initialization_and_clipping(self):
        pre, tuned, loss, _ = _mlp_problem()
        tx = _post_hoc_tx(loss, 1)
        state = tx.init(pre)
        self.assertFalse(bool(state.initialized))
        apply = jax.jit(tx.update)
        _, state = apply(_zeros(tuned), state, tuned)
        kernel_norms = jnp.sum(jnp.abs(tuned["fc1"]["kernel"] - pre["fc1"]["kernel"]), axis=0)
        radii = ftp_jax.tpgm_radii(state)  # the state holds a vector; read as a tree
        np.testing.assert_allclose(radii["fc1"]["kernel"], kernel_norms.min() / 2, rtol=1e-6)
        bias_norm = jnp.sum(jnp.abs(tuned["fc1"]["bias"] - pre["fc1"]["bias"]))
        np.testing.assert_allclose(radii["fc1"]["bias"], bias_norm / 2, rtol=1e-6)
        # A radius above every row norm is clipped to the largest; below 1e-8 to 1e-8.
        big = state._replace(radius=jax.tree_util.tree_map(lambda r: r + 100.0, state.radius))
        _, clipped = apply(_zeros(tuned), big, tuned)
        np.testing.assert_allclose(
            ftp_jax.tpgm_radii(clipped)["fc1"]["kernel"], kernel_norms.max(), rtol=1e-6
        )
        small = state._replace(radius=jax.tree_util.tree_map(lambda r: r * 0 - 1, state.radius))
        updates, clipped = apply(_zeros(tuned), small, tuned)
        np.testing.assert_allclose(ftp_jax.tpgm_radii(clipped)["fc2"]["bias"], 1e-8)
        projected = optax.apply_updates(tuned, updates)
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
        tx = _post_hoc_tx(loss, 6)
        updates, state = tx.update(_zeros(tuned), tx.init(pre), tuned, heldout_batches=batches)
        projected = optax.apply_updates(tuned, updates)
        rows = jnp.sum(jnp.abs(projected["fc1"]["kernel"] - pre["fc1"]["kernel"]), axis=0)
        self.assertLessEqual(
            float(rows.max()), float(ftp_jax.tpgm_radii(state)["fc1"]["kernel"]) * (1 + 1e-5)
        )

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
            projected["fc1"]["kernel"][:, inside],
            tuned["fc1"]["kernel"][:, inside],
            rtol=1e-6,
            atol=1e-7,
        )
        projected_rows = jnp.sum(jnp.abs(projected["fc1"]["kernel"] - pre["fc1"]["kernel"]), 0)
        np.testing.assert_allclose(
            projected_rows[~inside], radius["fc1"]["kernel"], rtol=1e-5, atol=1e-7
        )
        chex.assert_trees_all_equal(projected["fc2"], tuned["fc2"])


class BatchNormLoopTest(parameterized.TestCase):
    """TPGM in a small jitted fine-tuning loop of an NNX model with batch norm."""

    def test_loop_with_updates_every_other_step_and_batch_norm(self):
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

        def heldout_loss(params, batch, *, model_state):
            heldout_calls.append(1)
            return loss(params, model_state, batch, train=False)[0]

        mask = ftp_jax.path_rules([(r"head/.*", False), (r".*", True)], name="mask")
        tx = ftp_jax.tpgm(
            optax.sgd(0.1, momentum=0.9), heldout_loss, mask=mask, radius_learning_rate=1e-2
        )
        opt_state = tx.init(params)

        def train_step(params, batch_stats, opt_state, batch, heldout):
            (_, new_stats), grads = jax.value_and_grad(
                lambda p: loss(p, batch_stats, batch, train=True), has_aux=True
            )(params)
            extra = {} if heldout is None else {"heldout_batch": heldout}
            updates, opt_state = tx.update(grads, opt_state, params, model_state=new_stats, **extra)
            return optax.apply_updates(params, updates), new_stats, opt_state

        train_step = jax.jit(train_step)
        heldout = [{"x": x[i], "y": y[i]} for i in range(6, 8)]
        for i in range(6):
            batch = {"x": x[i], "y": y[i]}
            update = heldout[(i // 2) % 2] if i % 2 == 0 else None
            params, batch_stats, opt_state = train_step(
                params, batch_stats, opt_state, batch, update
            )
        # Batch statistics are not params: they are not in the TPGM state at all.
        self.assertNotIn("mean", str(ftp_jax.leaf_paths(ftp_jax.tpgm_radii(opt_state))))
        radii = ftp_jax.tpgm_radii(opt_state)
        self.assertIsNone(radii["head"]["kernel"])
        self.assertIn("scale", radii["norm"])
        # The statistics did move during training.
        self.assertGreater(float(jnp.abs(batch_stats["norm"]["mean"]).max()), 1e-3)
        rows = jnp.sum(jnp.abs(params["body"]["kernel"] - opt_state.anchor["body"]["kernel"]), 0)
        self.assertLessEqual(float(rows.max()), float(radii["body"]["kernel"]) * (1 + 1e-5))
        self.assertLen(heldout_calls, 1)  # traced once, reused by every update
        # Three radius updates (steps 0, 2, 4): the radius Adam's count says so.
        self.assertEqual(int(optax.tree_utils.tree_get(opt_state.radius_adam, "count")), 3)


class UnrolledTest(parameterized.TestCase):
    def test_unrolled_differs_and_is_sensible(self):
        pre, tuned, loss, batches = _mlp_problem()
        train = {"x": batches["x"][:, None] * 1.5, "y": batches["y"][:, None]}  # (iters, K=1)
        truncated = _post_hoc_tx(loss, 6)
        unrolled = _post_hoc_tx(loss, 6, unroll_steps=1, train_loss=loss, inner_learning_rate=0.5)
        state = truncated.init(pre)
        zeros = _zeros(tuned)
        _, t_state = jax.jit(truncated.update)(zeros, state, tuned, heldout_batches=batches)
        _, u_state = jax.jit(unrolled.update)(
            zeros, state, tuned, heldout_batches=batches, train_batches=train
        )
        t_radii = np.array(jax.tree_util.tree_leaves(t_state.radius))
        u_radii = np.array(jax.tree_util.tree_leaves(u_state.radius))
        self.assertTrue(np.all(np.isfinite(u_radii)))
        self.assertGreater(np.max(np.abs(t_radii - u_radii)), 1e-4)
        self.assertTrue(np.isfinite(float(u_state.heldout_loss)))

    def test_zero_inner_learning_rate_matches_projection_of_projection(self):
        # With eta = 0 the inner step is the projection applied again (idempotent on
        # the clipped radius), so the unrolled loss equals the truncated one.
        pre, tuned, loss, batches = _mlp_problem()
        train = {"x": batches["x"][:, None], "y": batches["y"][:, None]}
        one = jax.tree_util.tree_map(lambda x: x[0], batches)
        truncated = _post_hoc_tx(loss, 1)
        unrolled = _post_hoc_tx(loss, 1, unroll_steps=1, train_loss=loss, inner_learning_rate=0.0)
        state = truncated.init(pre)
        zeros = _zeros(tuned)
        _, t_state = truncated.update(zeros, state, tuned, heldout_batch=one)
        _, u_state = unrolled.update(
            zeros,
            state,
            tuned,
            heldout_batch=one,
            train_batches=jax.tree_util.tree_map(lambda x: x[0], train),
        )
        np.testing.assert_allclose(u_state.heldout_loss, t_state.heldout_loss, rtol=1e-6)


class ErrorTest(parameterized.TestCase):
    def setUp(self):
        super().setUp()
        self.pre, self.tuned, self.loss, self.batches = _mlp_problem()
        self.tx = _post_hoc_tx(self.loss, 2)
        self.state = self.tx.init(self.pre)

    def test_heldout_batches_not_stacked_max_iters_deep(self):
        zeros = _zeros(self.tuned)
        with self.assertRaisesRegex(ValueError, r"stack 2 batches.*leading sizes \[6\]"):
            self.tx.update(zeros, self.state, self.tuned, heldout_batches=self.batches)
        with self.assertRaisesRegex(ValueError, r"`heldout_batch` is one batch, for max_iters=1"):
            self.tx.update(zeros, self.state, self.tuned, heldout_batch=self.batches)

    def test_heldout_batch_that_does_not_fit_the_loss(self):
        heldout = {"image": self.batches["x"][:2]}
        with self.assertRaises(KeyError):
            self.tx.update(_zeros(self.tuned), self.state, self.tuned, heldout_batches=heldout)

    def test_bad_arguments(self):
        sgd = optax.sgd(0.1)
        with self.assertRaisesRegex(ValueError, r"unknown `norm` 'l1'"):
            ftp_jax.tpgm(sgd, self.loss, norm="l1")
        with self.assertRaisesRegex(ValueError, r"`max_iters` must be a positive int"):
            ftp_jax.tpgm(sgd, self.loss, max_iters=0)
        with self.assertRaisesRegex(ValueError, r"train_loss"):
            ftp_jax.tpgm(sgd, self.loss, unroll_steps=2)
        with self.assertRaisesRegex(TypeError, r"`base_optimizer` must be an optax"):
            ftp_jax.tpgm(self.loss, self.loss)
        with self.assertRaisesRegex(TypeError, r"`heldout_loss` must be a function"):
            ftp_jax.tpgm(sgd, None)
        with self.assertRaisesRegex(ValueError, r"needs the current params"):
            self.tx.update(_zeros(self.tuned), self.state)

    def test_mask_matching_nothing(self):
        mask = ftp_jax.path_rules([(r"head/.*", False), (r".*", True)], name="mask")
        with self.assertRaisesRegex(ValueError, r"rule 'head/\.\*' matched no parameter"):
            ftp_jax.tpgm(optax.sgd(0.1), self.loss, mask=mask).init(self.pre)


if __name__ == "__main__":
    pytest.main([__file__])
