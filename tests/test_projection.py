"""Tests for ftp_jax._projection: row norms and the projection ratio, by hand."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized

import ftp_jax
from ftp_jax._projection import (
    at_least_float32,
    hard_clip_unit,
    radial_projection,
    row_norms_shape,
    row_sums,
)

X = jnp.array([[1.0, -2.0, 3.0], [-4.0, 0.0, 0.5]])


class RowNormsTest(parameterized.TestCase):
    def test_mars_keeps_rows(self):
        np.testing.assert_array_equal(ftp_jax.row_norms(X, (0,)), [[6.0], [4.5]])
        np.testing.assert_array_equal(ftp_jax.row_norms(X, (1,)), [[5.0, 2.0, 3.5]])

    def test_mars_whole_tensor_for_empty_axes(self):
        np.testing.assert_array_equal(ftp_jax.row_norms(X, ()), [[10.5]])
        vector = jnp.array([1.0, -2.0, 0.5])
        np.testing.assert_array_equal(ftp_jax.row_norms(vector, ()), [3.5])

    def test_l2_is_whole_tensor_whatever_the_rows(self):
        expected = np.sqrt(1 + 4 + 9 + 16 + 0.25)
        np.testing.assert_allclose(ftp_jax.row_norms(X, (0,), "l2"), [[expected]], rtol=1e-6)

    def test_unknown_norm(self):
        with self.assertRaisesRegex(ValueError, "unknown norm 'l1'"):
            ftp_jax.row_norms(X, (0,), "l1")

    @parameterized.product(
        shape=((), (4,), (2, 3), (2, 3, 4)), kept=((), (0,), (-1,)), norm=("mars", "l2")
    )
    def test_row_norms_shape_is_the_norms_shape(self, shape, kept, norm):
        kept = tuple(axis % len(shape) for axis in kept) if shape else ()
        x = jnp.ones(shape)
        self.assertEqual(row_norms_shape(shape, kept, norm), ftp_jax.row_norms(x, kept, norm).shape)

    def test_row_sums_keep_dims(self):
        self.assertEqual(row_sums(jnp.ones((2, 3, 4)), (1,)).shape, (1, 3, 1))


class ProjectionRatioTest(parameterized.TestCase):
    def test_clipped_to_unit_interval(self):
        ratio = ftp_jax.projection_ratio(jnp.asarray(2.0), 1.0 / jnp.array([1.0, 4.0, 2.0]))
        np.testing.assert_array_equal(ratio, [1.0, 0.5, 1.0])


if __name__ == "__main__":
    pytest.main([__file__])


class HardClipGradientTest(parameterized.TestCase):
    """The ratio's derivative is the reference's ``Hardtanh(0, 1)``: 1 inside, 0 at the ends.

    Regression: ``jax.grad(jnp.clip)`` passes 0.5 at exactly 0 and 1, which made
    float32 TPGM drift from the reference once a radius reached its upper bound.
    """

    @parameterized.parameters(
        (-0.5, 0.0, 0.0), (0.0, 0.0, 0.0), (0.25, 0.25, 1.0), (1.0, 1.0, 0.0), (3.0, 1.0, 0.0)
    )
    def test_value_and_derivative(self, ratio, value, derivative):
        grad = jax.jit(jax.value_and_grad(hard_clip_unit))
        got_value, got_derivative = grad(jnp.float32(ratio))
        self.assertEqual(float(got_value), value)
        self.assertEqual(float(got_derivative), derivative)

    def test_projection_ratio_at_a_radius_equal_to_the_norm(self):
        # max / (max + 1e-8) rounds to exactly 1.0 in float32: no gradient may pass.
        norm = jnp.float32(0.7)
        derivative = jax.grad(lambda r: ftp_jax.projection_ratio(r, 1.0 / (norm + 1e-8)))(norm)
        self.assertEqual(float(derivative), 0.0)

    def test_same_values_as_clip(self):
        ratios = jnp.array([-1.0, 0.0, 1e-9, 0.5, 1.0 - 1e-7, 1.0, 2.0, jnp.inf, jnp.nan])
        np.testing.assert_array_equal(hard_clip_unit(ratios), jnp.clip(ratios, 0.0, 1.0))


class ComputeDtypeTest(parameterized.TestCase):
    @parameterized.parameters(
        (jnp.float16, jnp.float32), (jnp.bfloat16, jnp.float32), (jnp.float32, jnp.float32)
    )
    def test_at_least_float32(self, dtype, expected):
        self.assertEqual(at_least_float32(jnp.dtype(dtype)), jnp.dtype(expected))


class RadialProjectionTest(parameterized.TestCase):
    def test_rows_outside_onto_the_sphere_inside_kept(self):
        displacement = jnp.array([[3.0, -1.0], [0.5, 0.25]])  # rows: L1 4 and 0.75
        projected, ratio = radial_projection(displacement, jnp.float32(2.0), (0,))
        np.testing.assert_allclose(ratio[:, 0], [0.5, 1.0])
        np.testing.assert_allclose(projected, [[1.5, -0.5], [0.5, 0.25]])

    def test_epsilon_and_precomputed_inverse_norm(self):
        displacement = jnp.array([[4.0, 0.0]])
        with_eps, _ = radial_projection(displacement, 1.0, (0,), norm_eps=1.0)
        np.testing.assert_allclose(with_eps, [[0.8, 0.0]], atol=1e-7)  # 1 / (4 + 1)
        given, _ = radial_projection(displacement, 1.0, (0,), inverse_norm=jnp.array([[0.5]]))
        np.testing.assert_allclose(given, [[2.0, 0.0]], atol=1e-7)

    def test_zero_row_and_zero_radius(self):
        projected, ratio = radial_projection(jnp.zeros((2, 3)), 0.0, (0,))
        self.assertTrue(bool(jnp.all(jnp.isfinite(ratio))))
        np.testing.assert_array_equal(projected, jnp.zeros((2, 3)))

    def test_float16_computes_in_float32(self):
        displacement = jnp.zeros((2, 3), jnp.float16)
        projected, ratio = radial_projection(displacement, 1e-8, (0,), norm_eps=1e-8)
        self.assertEqual(ratio.dtype, jnp.float32)
        self.assertTrue(bool(jnp.all(jnp.isfinite(projected))))
