"""Tests for ftp_jax._projection: row norms and the projection ratio, by hand."""

import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized

import ftp_jax
from ftp_jax._projection import row_sums

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

    def test_row_sums_keep_dims(self):
        self.assertEqual(row_sums(jnp.ones((2, 3, 4)), (1,)).shape, (1, 3, 1))


class ProjectionRatioTest(parameterized.TestCase):
    def test_clipped_to_unit_interval(self):
        ratio = ftp_jax.projection_ratio(jnp.asarray(2.0), 1.0 / jnp.array([1.0, 4.0, 2.0]))
        np.testing.assert_array_equal(ratio, [1.0, 0.5, 1.0])


if __name__ == "__main__":
    pytest.main([__file__])
