"""Tests for ftp_jax._row_axes: the Flax and PyTorch row conventions."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized
from flax import nnx

import ftp_jax
from ftp_jax._row_axes import normalize_row_axes


class Model(nnx.Module):
    def __init__(self, rngs):
        self.conv = nnx.Conv(3, 8, (3, 3), rngs=rngs)
        self.dense = nnx.Linear(8, 16, rngs=rngs)
        self.embed = nnx.Embed(10, 16, rngs=rngs)
        self.attention = nnx.MultiHeadAttention(
            num_heads=2, in_features=16, qkv_features=16, decode=False, rngs=rngs
        )
        self.norm = nnx.LayerNorm(16, rngs=rngs)


class FlaxRowAxesTest(parameterized.TestCase):
    def test_default_rule_on_flax_modules(self):
        state = nnx.state(Model(nnx.Rngs(0)), nnx.Param)
        axes = dict(
            zip(
                ftp_jax.leaf_paths(state),
                jax.tree_util.tree_leaves(
                    ftp_jax.flax_row_axes(state), is_leaf=lambda x: isinstance(x, tuple)
                ),
                strict=True,
            )
        )
        self.assertEqual(
            axes,
            {
                "attention/key/bias": (),
                "attention/key/kernel": (1, 2),
                "attention/out/bias": (),
                "attention/out/kernel": (2,),
                "attention/query/bias": (),
                "attention/query/kernel": (1, 2),
                "attention/value/bias": (),
                "attention/value/kernel": (1, 2),
                "conv/bias": (),
                "conv/kernel": (3,),
                "dense/bias": (),
                "dense/kernel": (1,),
                "embed/embedding": (0,),
                "norm/bias": (),
                "norm/scale": (),
            },
        )

    @parameterized.parameters(
        # (PyTorch shape, permutation to Flax layout)
        ((16, 8), (1, 0)),  # Linear
        ((8, 3, 3, 3), (2, 3, 1, 0)),  # Conv2d
    )
    def test_flax_and_torch_layouts_give_the_same_row_norms(self, torch_shape, to_flax):
        weight = np.random.default_rng(0).normal(size=torch_shape)
        kernel = np.transpose(weight, to_flax)
        torch_norms = ftp_jax.row_norms(
            jnp.asarray(weight), ftp_jax.torch_row_axes("fc.weight", weight)
        )
        flax_norms = ftp_jax.row_norms(
            jnp.asarray(kernel), ftp_jax.flax_row_axes("fc/kernel", kernel)
        )
        np.testing.assert_allclose(np.ravel(flax_norms), np.ravel(torch_norms), rtol=1e-6)
        self.assertEqual(np.size(torch_norms), torch_shape[0])

    def test_attention_rows_match_torch_in_projection(self):
        # torch in_proj (3E, E): one row per output feature; flax (E, heads, head_dim).
        kernel = np.random.default_rng(1).normal(size=(16, 2, 8))
        torch_weight = kernel.reshape(16, 16).T
        flax_norms = ftp_jax.row_norms(
            jnp.asarray(kernel), ftp_jax.flax_row_axes("attn/query/kernel", kernel)
        )
        torch_norms = ftp_jax.row_norms(jnp.asarray(torch_weight), (0,))
        np.testing.assert_allclose(np.ravel(flax_norms), np.ravel(torch_norms), rtol=1e-6)


class TorchRowAxesTest(parameterized.TestCase):
    @parameterized.parameters(((6, 3, 3, 3), (0,)), ((12, 20), (0,)), ((12,), ()), ((), ()))
    def test_keeps_axis_zero(self, shape, expected):
        self.assertEqual(ftp_jax.torch_row_axes("w", np.zeros(shape)), expected)


class NormalizeTest(parameterized.TestCase):
    def test_negative_axes_normalized_and_sorted(self):
        self.assertEqual(normalize_row_axes((-1, 0), (3, 4, 5), "x"), (0, 2))
        self.assertEqual(normalize_row_axes(1, (3, 4), "x"), (1,))

    @parameterized.parameters(
        ((2,), r"axis 2, out of range for a leaf of shape \(3, 4\)"),
        ((0, 0), r"repeats an axis"),
        (("0",), r"must be a tuple of ints"),
        ((True,), r"must be a tuple of ints"),
    )
    def test_bad_values_name_the_leaf(self, value, message):
        with self.assertRaisesRegex(ValueError, r"`row_axes` for 'a/b' .*" + message):
            normalize_row_axes(value, (3, 4), "a/b")


if __name__ == "__main__":
    pytest.main([__file__])
