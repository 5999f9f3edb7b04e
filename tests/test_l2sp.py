"""Tests for ftp_jax._l2sp: L2-SP, coupled and decoupled, against hand-computed updates."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from absl.testing import parameterized

import ftp_jax

HEAD_MASK = ftp_jax.path_rules([(r"head/.*", False), (r".*", True)], name="mask")

# A hand-sized problem: the anchor, where the params are now, and a gradient.
ANCHOR = {"body": {"kernel": jnp.array([1.0, 2.0])}, "head": {"kernel": jnp.array([3.0, 1.0])}}
PARAMS = {"body": {"kernel": jnp.array([2.0, 0.0])}, "head": {"kernel": jnp.array([4.0, -2.0])}}
GRADS = {"body": {"kernel": jnp.array([0.5, -1.0])}, "head": {"kernel": jnp.array([1.0, 1.0])}}


def _tree(body, head):
    return {"body": {"kernel": jnp.array(body)}, "head": {"kernel": jnp.array(head)}}


class CoupledTest(parameterized.TestCase):
    @parameterized.named_parameters(
        # body: g + alpha (w - w0) = [0.5, -1] + alpha [1, -2]
        # head: g + beta w = [1, 1] + beta [4, -2]
        ("alpha_half_beta_quarter", 0.5, 0.25, [1.0, -2.0], [2.0, 0.5]),
        ("alpha_two_no_beta", 2.0, 0.0, [2.5, -5.0], [1.0, 1.0]),
        ("nothing", 0.0, 0.0, [0.5, -1.0], [1.0, 1.0]),
    )
    def test_adds_the_penalty_gradient(self, alpha, beta, body, head):
        tx = ftp_jax.l2sp(alpha, beta, mask=HEAD_MASK, anchor=ANCHOR)
        updates, state = tx.update(GRADS, tx.init(PARAMS), PARAMS)
        chex.assert_trees_all_close(updates, _tree(body, head), rtol=0, atol=1e-7)
        # The state holds the anchor of the constrained leaves only.
        chex.assert_trees_all_equal(state.anchor["body"], ANCHOR["body"])
        self.assertIsInstance(state.anchor["head"]["kernel"], optax.MaskedNode)

    def test_before_sgd_is_sgd_on_the_penalized_loss(self):
        """chain(l2sp, sgd(lr)): w <- w - lr (g + alpha (w - w0)), hand-computed."""
        tx = optax.chain(ftp_jax.l2sp(0.5, 0.25, mask=HEAD_MASK, anchor=ANCHOR), optax.sgd(0.1))
        updates, _ = tx.update(GRADS, tx.init(PARAMS), PARAMS)
        new = optax.apply_updates(PARAMS, updates)
        chex.assert_trees_all_close(new, _tree([1.9, 0.2], [3.8, -2.05]), rtol=0, atol=1e-6)

    def test_default_anchor_is_init_params_and_update_equals_penalty_grad(self):
        tx = ftp_jax.l2sp(0.3, 0.7, mask=HEAD_MASK)
        state = tx.init(ANCHOR)  # the anchor: the params at init
        zeros = jax.tree_util.tree_map(jnp.zeros_like, GRADS)
        updates, _ = tx.update(zeros, state, PARAMS)
        expected = jax.grad(ftp_jax.l2sp_penalty)(PARAMS, ANCHOR, 0.3, 0.7, mask=HEAD_MASK)
        chex.assert_trees_all_close(updates, expected, rtol=1e-6, atol=1e-7)
        # 0.3/2 * (1 + 4) + 0.7/2 * (16 + 4)
        self.assertAlmostEqual(
            float(ftp_jax.l2sp_penalty(PARAMS, ANCHOR, 0.3, 0.7, mask=HEAD_MASK)), 7.75, 5
        )

    def test_penalty_ignores_the_anchor_of_excluded_leaves(self):
        anchor = {"body": ANCHOR["body"], "head": {"kernel": None}}
        self.assertAlmostEqual(
            float(ftp_jax.l2sp_penalty(PARAMS, anchor, 2.0, 0.0, mask=HEAD_MASK)), 5.0, 5
        )

    def test_jit_matches_eager(self):
        tx = ftp_jax.l2sp(0.5, 0.25, mask=HEAD_MASK)

        @jax.jit
        def step(grads, state, params):
            return tx.update(grads, state, params)

        state = tx.init(ANCHOR)
        for _ in range(3):
            jitted, state = step(GRADS, state, PARAMS)
        eager, _ = tx.update(GRADS, state, PARAMS)
        chex.assert_trees_all_close(jitted, eager, rtol=1e-6, atol=1e-7)


class DecoupledTest(parameterized.TestCase):
    def test_hand_computed_with_a_schedule(self):
        """u = -lr_t g - lr_t alpha (w - w0) (body), - lr_t beta w (head); lr_t = 0.1 / (t + 1)."""

        def schedule(count):
            return 0.1 / (count + 1)

        tx = ftp_jax.l2sp_decoupled(
            optax.sgd(schedule), schedule, 0.5, 0.25, mask=HEAD_MASK, anchor=ANCHOR
        )
        state = tx.init(PARAMS)
        first, state = tx.update(GRADS, state, PARAMS)
        # lr 0.1: body -0.1 [0.5, -1] - 0.05 [1, -2]; head -0.1 [1, 1] - 0.025 [4, -2]
        chex.assert_trees_all_close(first, _tree([-0.1, 0.2], [-0.2, -0.05]), atol=1e-7)
        second, state = tx.update(GRADS, state, PARAMS)  # lr 0.05: half of it
        chex.assert_trees_all_close(second, _tree([-0.05, 0.1], [-0.1, -0.025]), atol=1e-7)
        self.assertEqual(int(state.count), 2)

    def test_equals_decay_between_adam_and_learning_rate(self):
        """l2sp_decoupled(adam(lr), lr, a) = chain(scale_by_adam, l2sp(a), scale_by_lr(lr))."""
        lr = optax.linear_schedule(1e-1, 1e-2, 5)
        wrapped = ftp_jax.l2sp_decoupled(optax.adam(lr), lr, 0.3, 0.1, mask=HEAD_MASK)
        chained = optax.chain(
            optax.scale_by_adam(),
            ftp_jax.l2sp(0.3, 0.1, mask=HEAD_MASK),
            optax.scale_by_learning_rate(lr),
        )
        coupled = optax.chain(ftp_jax.l2sp(0.3, 0.1, mask=HEAD_MASK), optax.adam(lr))
        results = []
        for tx in (wrapped, chained, coupled):
            params, state = PARAMS, tx.init(ANCHOR)
            for t in range(5):
                grads = jax.tree_util.tree_map(lambda p: jnp.sin(p + t), params)  # noqa: B023
                updates, state = tx.update(grads, state, params)
                params = optax.apply_updates(params, updates)
            results.append(params)
        chex.assert_trees_all_close(results[0], results[1], rtol=1e-6, atol=1e-7)
        # The coupled form differs: Adam normalizes the penalty's gradient too.
        diff = jnp.abs(results[0]["body"]["kernel"] - results[2]["body"]["kernel"])
        self.assertGreater(float(jnp.max(diff)), 1e-3)

    def test_passes_extra_args_to_base(self):
        seen = {}

        def update_fn(updates, state, params=None, **extra):
            seen.update(extra)
            return updates, state

        base = optax.GradientTransformationExtraArgs(lambda p: optax.EmptyState(), update_fn)
        tx = ftp_jax.l2sp_decoupled(base, 0.1, 0.5)
        tx.update(GRADS, tx.init(PARAMS), PARAMS, value=3.0)
        self.assertEqual(seen, {"value": 3.0})


class ErrorTest(parameterized.TestCase):
    @parameterized.parameters(("alpha", -1.0), ("beta", -0.1), ("alpha", float("nan")))
    def test_negative_strength(self, name, value):
        kwargs = {"alpha": 0.1, "beta": 0.0, name: value}
        with self.assertRaisesRegex(ValueError, f"`{name}` must be a finite number >= 0"):
            ftp_jax.l2sp(**kwargs)
        with self.assertRaisesRegex(ValueError, f"`{name}` must be a finite number >= 0"):
            ftp_jax.l2sp_decoupled(optax.sgd(0.1), 0.1, **kwargs)

    def test_base_optimizer_not_a_transform(self):
        with self.assertRaisesRegex(TypeError, r"`base_optimizer`.*GradientTransformation"):
            ftp_jax.l2sp_decoupled(optax.sgd, 0.1, 0.5)

    def test_update_without_params(self):
        tx = ftp_jax.l2sp(0.1)
        with self.assertRaisesRegex(ValueError, r"needs the current params"):
            tx.update(GRADS, tx.init(PARAMS))

    def test_anchor_shape_mismatch_names_leaf(self):
        anchor = {"body": {"kernel": jnp.zeros(3)}, "head": ANCHOR["head"]}
        with self.assertRaisesRegex(ValueError, r"`anchor` at 'body/kernel' has shape \(3,\)"):
            ftp_jax.l2sp(0.1, anchor=anchor).init(PARAMS)

    def test_mask_tree_mismatch_names_paths(self):
        with self.assertRaisesRegex(ValueError, r"`mask`.*'head/kernel'"):
            ftp_jax.l2sp(0.1, mask={"body": {"kernel": True}}).init(PARAMS)

    def test_mask_changed_between_init_and_update(self):
        flip = {"value": True}
        tx = ftp_jax.l2sp(0.1, mask=lambda p: jax.tree_util.tree_map(lambda _: flip["value"], p))
        state = tx.init(PARAMS)
        flip["value"] = False
        with self.assertRaisesRegex(ValueError, r"`mask` at 'body/kernel' is False now"):
            tx.update(GRADS, state, PARAMS)

    def test_integer_leaf_must_be_excluded(self):
        params = dict(PARAMS, step=jnp.zeros((), jnp.int32))
        with self.assertRaisesRegex(TypeError, r"'step' has dtype int32"):
            ftp_jax.l2sp(0.1).init(params)

    def test_penalty_anchor_missing_at_constrained_leaf(self):
        anchor = {"body": {"kernel": None}, "head": {"kernel": None}}
        with self.assertRaisesRegex(ValueError, r"`anchor` at 'body/kernel' has None"):
            ftp_jax.l2sp_penalty(PARAMS, anchor, 1.0, mask=HEAD_MASK)


def test_float64_hand_case():
    with jax.enable_x64(True):
        params = {"w": jnp.array([1.0, -1.0], jnp.float64)}
        tx = ftp_jax.l2sp(0.1, anchor={"w": jnp.zeros(2, jnp.float64)})
        updates, _ = tx.update({"w": jnp.zeros(2, jnp.float64)}, tx.init(params), params)
        assert updates["w"].dtype == jnp.float64
        np.testing.assert_array_equal(np.asarray(updates["w"]), [0.1, -0.1])


if __name__ == "__main__":
    pytest.main([__file__])
