"""Tests for ftp_jax._mars_pgm: MARS-PGM, a projection onto a fixed radius."""

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


def _zeros_like_target():
    return {
        "dense": {"kernel": jnp.zeros((3, 2)), "bias": jnp.zeros(2)},
        "head": {"kernel": jnp.zeros((2, 2))},
    }


# Where one SGD step with learning rate 1 takes the params (grads = -TARGET).
TARGET = {
    "dense": {
        # Flax kernel (in, out): rows are the columns here. Column 0 has L1 norm 0.4,
        # column 1 has L1 norm 4.
        "kernel": jnp.array([[0.1, 1.0], [-0.2, -2.0], [0.1, 1.0]]),
        "bias": jnp.array([0.3, -0.3]),  # 1-D: one L1 norm over the vector, 0.6
    },
    "head": {"kernel": jnp.array([[5.0, -5.0], [5.0, 5.0]])},
}
GRADS = jax.tree_util.tree_map(jnp.negative, TARGET)


class HandCaseTest(parameterized.TestCase):
    def test_rows_inside_untouched_rows_outside_on_the_sphere(self):
        params = _zeros_like_target()
        tx = ftp_jax.mars_pgm(optax.sgd(1.0), radius=0.5, mask=HEAD_MASK)
        updates, _ = tx.update(GRADS, tx.init(params), params)
        new = optax.apply_updates(params, updates)
        expected_kernel = np.array([[0.1, 0.125], [-0.2, -0.25], [0.1, 0.125]])  # column 1 / 8
        np.testing.assert_allclose(new["dense"]["kernel"], expected_kernel, rtol=1e-6, atol=1e-7)
        # Row 0 is inside the ball: the base update itself, bit for bit.
        np.testing.assert_array_equal(
            updates["dense"]["kernel"][:, 0], TARGET["dense"]["kernel"][:, 0]
        )
        # Row 1 is outside: its norm is now exactly the radius.
        self.assertAlmostEqual(float(jnp.sum(jnp.abs(new["dense"]["kernel"][:, 1]))), 0.5, 6)
        np.testing.assert_allclose(new["dense"]["bias"], [0.25, -0.25], rtol=1e-6)  # 0.6 -> 0.5
        # The excluded head follows SGD exactly.
        chex.assert_trees_all_equal(updates["head"], TARGET["head"])

    @parameterized.parameters(
        (0.5, 1.0),  # on the sphere: inside (no epsilon), untouched
        (2.0, 1.0),
        (0.25, 0.5),
        (0.0, 0.0),  # radius 0 pins the row to the anchor
    )
    def test_scale_of_one_row(self, radius, scale):
        params = {"w": jnp.zeros(3)}  # 1-D: one norm over the vector
        target = jnp.array([0.125, -0.25, 0.125])  # L1 0.5, exact in binary
        tx = ftp_jax.mars_pgm(optax.sgd(1.0), radius=radius)
        updates, _ = tx.update({"w": -target}, tx.init(params), params)
        np.testing.assert_allclose(updates["w"], scale * target, rtol=1e-6, atol=0)

    def test_l2_norm_is_over_the_whole_tensor(self):
        """L2-PGM: the displacement [[3, 0], [0, 4]] (Frobenius 5) onto radius 1: x 1/5."""
        anchor = {"w": jnp.array([[1.0, 1.0], [1.0, 1.0]])}
        tx = ftp_jax.mars_pgm(optax.sgd(1.0), radius=1.0, norm="l2")
        state = tx.init(anchor)
        updates, _ = tx.update({"w": -jnp.array([[3.0, 0.0], [0.0, 4.0]])}, state, anchor)
        new = optax.apply_updates(anchor, updates)
        np.testing.assert_allclose(new["w"], [[1.6, 1.0], [1.0, 1.8]], rtol=1e-6)

    def test_explicit_anchor_and_radius_rules(self):
        params = _zeros_like_target()
        anchor = jax.tree_util.tree_map(lambda x: x + 1.0, params)
        radius = ftp_jax.path_rules(
            [(r"head/.*", None), (r"dense/kernel", 100.0), (r"dense/bias", 0.0)], name="radius"
        )
        tx = ftp_jax.mars_pgm(optax.sgd(1.0), radius, mask=HEAD_MASK, anchor=anchor)
        updates, state = tx.update(GRADS, tx.init(params), params)
        new = optax.apply_updates(params, updates)
        # Both kernel rows end at L1 distance 3 from the anchor (ones), < 100: free.
        chex.assert_trees_all_equal(updates["dense"]["kernel"], TARGET["dense"]["kernel"])
        # Radius 0 pins the bias to its anchor.
        np.testing.assert_allclose(new["dense"]["bias"], [1.0, 1.0], rtol=0, atol=1e-7)
        chex.assert_trees_all_equal(state.anchor["dense"], anchor["dense"])
        self.assertIsInstance(state.anchor["head"]["kernel"], optax.MaskedNode)

    def test_torch_layout_is_the_transpose(self):
        params = {"dense": {"kernel": jnp.zeros((2, 3))}}  # PyTorch (out, in): rows on axis 0
        grads = {"dense": {"kernel": -TARGET["dense"]["kernel"].T}}
        tx = ftp_jax.mars_pgm(optax.sgd(1.0), 0.5, row_axes=ftp_jax.torch_row_axes)
        updates, _ = tx.update(grads, tx.init(params), params)
        flax_tx = ftp_jax.mars_pgm(optax.sgd(1.0), 0.5)
        flax_params = {"dense": {"kernel": jnp.zeros((3, 2))}}
        flax_updates, _ = flax_tx.update(
            {"dense": {"kernel": GRADS["dense"]["kernel"]}}, flax_tx.init(flax_params), flax_params
        )
        np.testing.assert_allclose(
            updates["dense"]["kernel"], flax_updates["dense"]["kernel"].T, rtol=1e-7, atol=1e-8
        )

    def test_project_fixed_radius_pure_function(self):
        params = _zeros_like_target()
        projected = ftp_jax.project_fixed_radius(TARGET, params, 0.5, mask=HEAD_MASK)
        tx = ftp_jax.mars_pgm(optax.sgd(1.0), radius=0.5, mask=HEAD_MASK)
        updates, _ = tx.update(GRADS, tx.init(params), params)
        chex.assert_trees_all_close(
            projected, optax.apply_updates(params, updates), rtol=1e-7, atol=1e-8
        )


def _toy_problem():
    keys = jax.random.split(jax.random.key(0), 4)
    params = {
        "conv": {"kernel": jax.random.normal(keys[0], (3, 3, 2, 4)), "bias": jnp.zeros(4)},
        "head": {"kernel": jax.random.normal(keys[1], (4, 3))},
    }
    target = jax.tree_util.tree_map(lambda p: p + 3 * jax.random.normal(keys[2], p.shape), params)

    def gradient(theta, t):  # elementwise: each leaf's gradient depends on that leaf only
        return jax.tree_util.tree_map(lambda x, y: (x - y) + 0.1 * jnp.cos(x + t), theta, target)

    return params, gradient


class TrajectoryTest(parameterized.TestCase):
    @parameterized.parameters("mars", "l2")
    def test_constraint_holds_and_excluded_leaf_follows_base(self, norm):
        params, gradient = _toy_problem()
        base = optax.sgd(0.2, momentum=0.9)
        radius = 0.7
        tx = ftp_jax.mars_pgm(base, radius, mask=HEAD_MASK, norm=norm)
        # Eager, both: the excluded leaf must match the base optimizer bit for bit.
        theta, state = params, tx.init(params)
        base_theta, base_state = params, base.init(params)
        for t in range(15):
            updates, state = tx.update(gradient(theta, t), state, theta)
            theta = optax.apply_updates(theta, updates)
            base_updates, base_state = base.update(gradient(base_theta, t), base_state)
            base_theta = optax.apply_updates(base_theta, base_updates)
        for name in ("kernel", "bias"):
            displacement = theta["conv"][name] - params["conv"][name]
            kept = (3,) if name == "kernel" else ()
            norms = ftp_jax.row_norms(displacement, kept, norm)
            self.assertLessEqual(float(jnp.max(norms)), radius * (1 + 1e-5))
        # The kernel reached the sphere (the target is far away).
        kernel_norms = ftp_jax.row_norms(
            theta["conv"]["kernel"] - params["conv"]["kernel"], (3,), norm
        )
        self.assertGreater(float(jnp.min(kernel_norms)), radius * 0.99)
        chex.assert_trees_all_equal(theta["head"], base_theta["head"])

    def test_large_radius_is_the_base_optimizer(self):
        params, gradient = _toy_problem()
        base = optax.adam(0.05)
        tx = ftp_jax.mars_pgm(base, 1e6)
        theta, state = params, tx.init(params)
        base_theta, base_state = params, base.init(params)
        for t in range(5):
            updates, state = tx.update(gradient(theta, t), state, theta)
            theta = optax.apply_updates(theta, updates)
            base_updates, base_state = base.update(gradient(base_theta, t), base_state)
            base_theta = optax.apply_updates(base_theta, base_updates)
        chex.assert_trees_all_equal(theta, base_theta)


class ErrorTest(parameterized.TestCase):
    @parameterized.parameters(-0.1, float("inf"), True)
    def test_bad_scalar_radius_at_construction(self, radius):
        with self.assertRaisesRegex(ValueError, r"`radius` must be a finite number >= 0"):
            ftp_jax.mars_pgm(optax.sgd(0.1), radius)

    def test_bad_radius_rule_names_the_leaf(self):
        radius = ftp_jax.path_rules([(r"dense/bias", -1.0), (r".*", 0.5)], name="radius")
        tx = ftp_jax.mars_pgm(optax.sgd(0.1), radius, mask=HEAD_MASK)
        with self.assertRaisesRegex(ValueError, r"`radius` at 'dense/bias' .* got -1.0"):
            tx.init(_zeros_like_target())

    def test_missing_radius_at_constrained_leaf(self):
        radius = {"dense": {"kernel": 0.5, "bias": None}, "head": {"kernel": None}}
        tx = ftp_jax.mars_pgm(optax.sgd(0.1), radius, mask=HEAD_MASK)
        with self.assertRaisesRegex(ValueError, r"`radius` at 'dense/bias'.*got None"):
            tx.init(_zeros_like_target())

    def test_radius_tree_mismatch_names_paths(self):
        tx = ftp_jax.mars_pgm(optax.sgd(0.1), {"dense": {"kernel": 0.5}})
        with self.assertRaisesRegex(ValueError, r"`radius`.*'dense/bias'"):
            tx.init(_zeros_like_target())

    def test_unknown_norm(self):
        with self.assertRaisesRegex(ValueError, r"unknown `norm` 'l1'"):
            ftp_jax.mars_pgm(optax.sgd(0.1), 0.5, norm="l1")

    def test_base_optimizer_not_a_transform(self):
        with self.assertRaisesRegex(TypeError, r"`base_optimizer`.*GradientTransformation"):
            ftp_jax.mars_pgm(optax.sgd, 0.5)

    def test_update_without_params(self):
        tx = ftp_jax.mars_pgm(optax.sgd(0.1), 0.5)
        with self.assertRaisesRegex(ValueError, r"needs the current params"):
            tx.update(GRADS, tx.init(TARGET))

    def test_anchor_shape_mismatch_names_leaf(self):
        anchor = _zeros_like_target()
        anchor["dense"]["bias"] = jnp.zeros(3)
        with self.assertRaisesRegex(ValueError, r"`anchor` at 'dense/bias' has shape \(3,\)"):
            ftp_jax.mars_pgm(optax.sgd(0.1), 0.5, anchor=anchor).init(_zeros_like_target())

    def test_row_axes_out_of_range_names_leaf(self):
        row_axes = ftp_jax.path_rules(
            [(r"dense/kernel", (2,)), (r".*", ftp_jax.flax_row_axes)], name="row_axes"
        )
        with self.assertRaisesRegex(ValueError, r"`row_axes` for 'dense/kernel' has axis 2"):
            ftp_jax.mars_pgm(optax.sgd(0.1), 0.5, row_axes=row_axes).init(_zeros_like_target())

    def test_mask_changed_between_init_and_update(self):
        flip = {"value": True}
        tx = ftp_jax.mars_pgm(
            optax.sgd(0.1), 0.5, mask=lambda p: jax.tree_util.tree_map(lambda _: flip["value"], p)
        )
        state = tx.init(TARGET)
        flip["value"] = False
        with self.assertRaisesRegex(ValueError, r"`mask` at 'dense/bias' is False now"):
            tx.update(GRADS, state, TARGET)


if __name__ == "__main__":
    pytest.main([__file__])
