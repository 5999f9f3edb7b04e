"""Tests for ftp_jax._wise: WiSE-FT weight interpolation."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized

import ftp_jax

MASK = {"body": {"kernel": True, "bias": True}, "head": {"kernel": False}}
ANCHOR = {
    "body": {"kernel": jnp.array([[0.0, 2.0], [4.0, -4.0]]), "bias": jnp.array([1.0])},
    "head": {"kernel": jnp.array([9.0, 9.0, 9.0])},  # a source head of another shape
}
FINETUNED = {
    "body": {"kernel": jnp.array([[4.0, 0.0], [0.0, 4.0]]), "bias": jnp.array([-1.0])},
    "head": {"kernel": jnp.array([1.0, 2.0])},
}


class InterpolationTest(parameterized.TestCase):
    @parameterized.parameters(
        # (1 - a) w0 + a w_ft, by hand.
        (0.0, [[0.0, 2.0], [4.0, -4.0]], [1.0]),
        (0.25, [[1.0, 1.5], [3.0, -2.0]], [0.5]),
        (0.5, [[2.0, 1.0], [2.0, 0.0]], [0.0]),
        (1.0, [[4.0, 0.0], [0.0, 4.0]], [-1.0]),
    )
    def test_hand_computed(self, alpha, kernel, bias):
        mixed = ftp_jax.wise_ft(ANCHOR, FINETUNED, alpha, mask=MASK)
        np.testing.assert_allclose(mixed["body"]["kernel"], kernel, rtol=0, atol=1e-6)
        np.testing.assert_allclose(mixed["body"]["bias"], bias, rtol=0, atol=1e-6)
        # The new head has no pre-trained value: fine-tuned for every alpha.
        chex.assert_trees_all_equal(mixed["head"], FINETUNED["head"])

    def test_endpoints_are_exact(self):
        chex.assert_trees_all_equal(ftp_jax.wise_ft(ANCHOR, FINETUNED, 1.0, mask=MASK), FINETUNED)
        start = ftp_jax.wise_ft(ANCHOR, FINETUNED, 0.0, mask=MASK)
        chex.assert_trees_all_equal(start["body"], ANCHOR["body"])

    def test_excluded_anchor_may_be_none(self):
        anchor = {"body": ANCHOR["body"], "head": {"kernel": None}}
        mixed = ftp_jax.wise_ft(anchor, FINETUNED, 0.5, mask=MASK)
        np.testing.assert_allclose(mixed["body"]["bias"], [0.0], atol=1e-6)

    def test_default_mask_interpolates_every_leaf(self):
        anchor = dict(ANCHOR, head={"kernel": jnp.array([3.0, 0.0])})
        mixed = ftp_jax.wise_ft(anchor, FINETUNED, 0.5)
        np.testing.assert_allclose(mixed["head"]["kernel"], [2.0, 1.0], atol=1e-6)

    def test_dtype_is_kept(self):
        anchor = {"w": jnp.array([0.0, 1.0], jnp.bfloat16)}
        finetuned = {"w": jnp.array([1.0, 0.0], jnp.bfloat16)}
        mixed = ftp_jax.wise_ft(anchor, finetuned, 0.5)
        self.assertEqual(mixed["w"].dtype, jnp.bfloat16)
        np.testing.assert_array_equal(np.asarray(mixed["w"], np.float32), [0.5, 0.5])

    def test_jit_and_vmap_over_alpha(self):
        sweep = jax.jit(
            jax.vmap(lambda a: ftp_jax.wise_ft(ANCHOR, FINETUNED, a, mask=MASK)["body"]["bias"])
        )
        np.testing.assert_allclose(
            sweep(jnp.array([0.0, 0.25, 0.5, 1.0])), [[1.0], [0.5], [0.0], [-1.0]], atol=1e-6
        )


class ErrorTest(parameterized.TestCase):
    @parameterized.parameters(-0.1, 1.5, True, "0.5")
    def test_alpha_outside_unit_interval(self, alpha):
        with self.assertRaisesRegex(ValueError, r"`alpha`.*\[0, 1\]"):
            ftp_jax.wise_ft(ANCHOR, FINETUNED, alpha, mask=MASK)

    def test_constrained_anchor_shape_mismatch_names_leaf(self):
        with self.assertRaisesRegex(ValueError, r"`anchor` at 'head/kernel' has shape \(3,\)"):
            ftp_jax.wise_ft(ANCHOR, FINETUNED, 0.5)  # the head is interpolated by default

    def test_anchor_missing_a_leaf(self):
        anchor = {"body": ANCHOR["body"]}
        with self.assertRaisesRegex(ValueError, r"`anchor`.*'head/kernel'"):
            ftp_jax.wise_ft(anchor, FINETUNED, 0.5, mask=MASK)

    def test_mask_tree_mismatch(self):
        with self.assertRaisesRegex(ValueError, r"`mask`.*'head/kernel'"):
            ftp_jax.wise_ft(ANCHOR, FINETUNED, 0.5, mask={"body": MASK["body"]})


if __name__ == "__main__":
    pytest.main([__file__])
