"""Tests for ftp_jax._spd: Selective Projection Decay, hand-derived cases of both branches."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from absl.testing import parameterized

import ftp_jax


def _spd_step(theta, grad, anchor, strength=1.0):
    """One SPD step around SGD with learning rate 1 (u = -g) on a one-leaf tree."""
    tx = ftp_jax.spd(optax.sgd(1.0), strength, anchor={"w": jnp.array(anchor)})
    theta = {"w": jnp.array(theta)}
    updates, _ = tx.update({"w": jnp.array(grad)}, tx.init(theta), theta)
    return optax.apply_updates(theta, updates)["w"]


class HandCaseTest(parameterized.TestCase):
    @parameterized.named_parameters(
        # theta - w0 = (1, 0). c = -g . (theta - w0).
        # g = (-1, 0): c = 1 >= 0, no decay: theta + u = (2, 0).
        ("gradient_agrees_no_decay", [1.0, 0.0], [-1.0, 0.0], 1.0, [2.0, 0.0]),
        # g = (1, -2): c = -1 < 0; theta + u = (0, 2), distance 2 vs 1: r = 1/2;
        # theta_new = (0, 2) - lambda / 2 (0, 2).
        ("decay_lambda_1", [1.0, 0.0], [1.0, -2.0], 1.0, [0.0, 1.0]),
        ("decay_lambda_half", [1.0, 0.0], [1.0, -2.0], 0.5, [0.0, 1.5]),
        ("decay_lambda_0", [1.0, 0.0], [1.0, -2.0], 0.0, [0.0, 2.0]),
        # g = (1, -4): c = -1; theta + u = (0, 4), r = (4 - 1) / 4 = 3/4.
        ("decay_r_three_quarters", [1.0, 0.0], [1.0, -4.0], 1.0, [0.0, 1.0]),
        # g = (0.5, 0): c = -0.5 < 0 but the step shrinks the distance (1 -> 0.5): r = 0.
        ("selected_but_closer_r_0", [1.0, 0.0], [0.5, 0.0], 1.0, [0.5, 0.0]),
        # At the anchor (first step): c = 0, not < 0, no decay.
        ("at_anchor_c_0", [0.0, 0.0], [1.0, -2.0], 1.0, [-1.0, 2.0]),
    )
    def test_anchor_at_origin(self, theta, grad, strength, expected):
        new = _spd_step(theta, grad, [0.0, 0.0], strength)
        np.testing.assert_allclose(new, expected, rtol=0, atol=1e-6)

    def test_nonzero_anchor_shifts_everything(self):
        anchor = [3.0, -1.0]
        theta = [4.0, -1.0]  # theta - w0 = (1, 0), as in decay_lambda_1
        new = _spd_step(theta, [1.0, -2.0], anchor)
        np.testing.assert_allclose(new, [3.0, 0.0], rtol=0, atol=1e-6)

    def test_zero_norm_guard(self):
        """theta + u lands exactly on the anchor while c < 0: r = 0, no NaN (reference: 0/0)."""
        new = _spd_step([1.0, 0.0], [1.0, 0.0], [0.0, 0.0])  # c = -1, theta + u = (0, 0)
        np.testing.assert_array_equal(new, [0.0, 0.0])
        update, decayed = ftp_jax.spd_leaf_update(
            jnp.array([1.0, 0.0]), jnp.array([-1.0, 0.0]), jnp.array([1.0, 0.0]), None, 1.0
        )
        self.assertTrue(bool(decayed))
        self.assertTrue(bool(jnp.all(jnp.isfinite(update))))

    def test_whole_tensor_norm(self):
        """A 2x2 leaf: one L2 norm over the tensor (the vector case, reshaped)."""
        new = _spd_step([[1.0, 0.0], [0.0, 0.0]], [[1.0, 0.0], [0.0, -2.0]], [[0.0, 0.0]] * 2)
        np.testing.assert_allclose(new, [[0.0, 0.0], [0.0, 1.0]], rtol=0, atol=1e-6)

    def test_lambda_1_keeps_the_previous_distance(self):
        """On a selected step that moves away, lambda = 1 ends on the previous sphere."""
        keys = jax.random.split(jax.random.key(3), 3)
        anchor = jax.random.normal(keys[0], (5, 4))
        theta = anchor + jax.random.normal(keys[1], (5, 4))
        grad = theta - anchor + 0.5 * jax.random.normal(keys[2], (5, 4))  # c < 0
        tx = ftp_jax.spd(optax.sgd(-0.5), 1.0, anchor={"w": anchor})  # lr < 0: moves away
        updates, _ = tx.update({"w": grad}, tx.init({"w": theta}), {"w": theta})
        new = theta + updates["w"]
        self.assertLess(float(-jnp.sum(grad * (theta - anchor))), 0.0)
        moved = jnp.linalg.norm(theta + 0.5 * grad - anchor)  # the base step moves away: r > 0
        self.assertGreater(float(moved), float(jnp.linalg.norm(theta - anchor)) * 1.1)
        np.testing.assert_allclose(
            jnp.linalg.norm(new - anchor), jnp.linalg.norm(theta - anchor), rtol=1e-5, atol=1e-7
        )

    def test_leaves_are_selected_independently(self):
        params = {"a": jnp.array([1.0, 0.0]), "b": jnp.array([1.0, 0.0])}
        grads = {"a": jnp.array([1.0, -2.0]), "b": jnp.array([-1.0, 0.0])}  # a: c < 0; b: c > 0
        tx = ftp_jax.spd(optax.sgd(1.0), anchor=jax.tree_util.tree_map(jnp.zeros_like, params))
        updates, _ = tx.update(grads, tx.init(params), params)
        new = optax.apply_updates(params, updates)
        np.testing.assert_allclose(new["a"], [0.0, 1.0], atol=1e-6)
        np.testing.assert_allclose(new["b"], [2.0, 0.0], atol=1e-6)


class ExcludedLeafTest(parameterized.TestCase):
    def setUp(self):
        super().setUp()
        self.mask = {"body": True, "head": False}
        self.params = {"body": jnp.array([5.0, 5.0]), "head": jnp.array([1.0, 0.0])}
        self.grads = {"body": jnp.array([0.0, 0.0]), "head": jnp.array([1.0, -2.0])}

    def test_excluded_leaf_decays_toward_zero(self):
        """The reference's leaves without a pre-trained value: anchor 0 (decay_lambda_1)."""
        tx = ftp_jax.spd(optax.sgd(1.0), 1.0, mask=self.mask)
        state = tx.init(self.params)
        self.assertIsInstance(state.anchor["head"], optax.MaskedNode)
        updates, _ = tx.update(self.grads, state, self.params)
        new = optax.apply_updates(self.params, updates)
        np.testing.assert_allclose(new["head"], [0.0, 1.0], atol=1e-6)
        np.testing.assert_array_equal(new["body"], self.params["body"])  # g = 0: c = 0

    def test_excluded_leaf_follows_base_without_decay(self):
        tx = ftp_jax.spd(optax.sgd(1.0), 1.0, mask=self.mask, decay_excluded=False)
        updates, _ = tx.update(self.grads, tx.init(self.params), self.params)
        chex.assert_trees_all_equal(updates["head"], -self.grads["head"])

    def test_strength_0_is_the_base_optimizer(self):
        keys = jax.random.split(jax.random.key(0), 2)
        params = {"w": jax.random.normal(keys[0], (3, 4)), "head": jnp.ones(3)}
        base = optax.adam(0.1)
        tx = ftp_jax.spd(base, 0.0, mask={"w": True, "head": False})
        theta, state, base_theta, base_state = params, tx.init(params), params, base.init(params)
        for t in range(4):
            grads = jax.tree_util.tree_map(lambda p: jnp.sin(3 * p + t), theta)  # noqa: B023
            updates, state = tx.update(grads, state, theta)
            theta = optax.apply_updates(theta, updates)
            base_grads = jax.tree_util.tree_map(lambda p: jnp.sin(3 * p + t), base_theta)  # noqa: B023
            base_updates, base_state = base.update(base_grads, base_state)
            base_theta = optax.apply_updates(base_theta, base_updates)
        chex.assert_trees_all_equal(theta, base_theta)


class CompositionTest(parameterized.TestCase):
    def test_jit_matches_eager(self):
        params = {"w": jnp.array([[1.0, 0.5], [0.0, -1.0]]), "b": jnp.array([0.2, 0.1])}
        tx = ftp_jax.spd(optax.sgd(0.3, momentum=0.9), 0.7)

        @jax.jit
        def step(theta, state, t):
            grads = jax.tree_util.tree_map(lambda p: jnp.cos(2 * p + t), theta)
            updates, state = tx.update(grads, state, theta)
            return optax.apply_updates(theta, updates), state

        theta, state = params, tx.init(params)
        eager_theta, eager_state = params, tx.init(params)
        for t in range(5):
            theta, state = step(theta, state, jnp.asarray(t, jnp.float32))
            grads = jax.tree_util.tree_map(lambda p: jnp.cos(2 * p + t), eager_theta)  # noqa: B023
            updates, eager_state = tx.update(grads, eager_state, eager_theta)
            eager_theta = optax.apply_updates(eager_theta, updates)
        chex.assert_trees_all_close(theta, eager_theta, rtol=1e-5, atol=1e-6)


class ErrorTest(parameterized.TestCase):
    def test_negative_strength(self):
        with self.assertRaisesRegex(ValueError, r"SPD: `strength` must be a finite number >= 0"):
            ftp_jax.spd(optax.sgd(0.1), -1.0)

    def test_base_optimizer_not_a_transform(self):
        with self.assertRaisesRegex(TypeError, r"`base_optimizer`.*GradientTransformation"):
            ftp_jax.spd(optax.sgd)

    def test_update_without_params(self):
        tx = ftp_jax.spd(optax.sgd(0.1))
        params = {"w": jnp.ones(2)}
        with self.assertRaisesRegex(ValueError, r"needs the current params"):
            tx.update(params, tx.init(params))

    def test_anchor_shape_mismatch_names_leaf(self):
        tx = ftp_jax.spd(optax.sgd(0.1), anchor={"w": jnp.ones(3)})
        with self.assertRaisesRegex(ValueError, r"`anchor` at 'w' has shape \(3,\)"):
            tx.init({"w": jnp.ones(2)})

    def test_mask_changed_between_init_and_update(self):
        flip = {"value": True}
        tx = ftp_jax.spd(
            optax.sgd(0.1), mask=lambda p: jax.tree_util.tree_map(lambda _: flip["value"], p)
        )
        params = {"w": jnp.ones(2)}
        state = tx.init(params)
        flip["value"] = False
        with self.assertRaisesRegex(ValueError, r"`mask` at 'w' is False now"):
            tx.update(params, state, params)


if __name__ == "__main__":
    pytest.main([__file__])
