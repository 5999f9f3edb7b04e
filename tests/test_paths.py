"""Tests for ftp_jax._paths: leaf paths and path rules."""

import jax.numpy as jnp
import pytest
from absl.testing import parameterized
from flax import nnx

import ftp_jax

PARAMS = {
    "backbone": {"conv1": {"kernel": jnp.zeros((3, 3, 1, 4)), "bias": jnp.zeros(4)}},
    "head": {"kernel": jnp.zeros((4, 2)), "bias": jnp.zeros(2)},
    "blocks": [{"scale": jnp.ones(4)}, {"scale": jnp.ones(4)}],
}


class LeafPathTest(parameterized.TestCase):
    def test_paths_join_keys_with_slash(self):
        self.assertEqual(
            ftp_jax.leaf_paths(PARAMS),
            [
                "backbone/conv1/bias",
                "backbone/conv1/kernel",
                "blocks/0/scale",
                "blocks/1/scale",
                "head/bias",
                "head/kernel",
            ],
        )

    def test_nnx_state_paths_drop_variable_value(self):
        model = nnx.Linear(3, 2, rngs=nnx.Rngs(0))
        self.assertEqual(ftp_jax.leaf_paths(nnx.state(model, nnx.Param)), ["bias", "kernel"])
        self.assertEqual(ftp_jax.leaf_paths(nnx.to_pure_dict(nnx.state(model))), ["bias", "kernel"])


class PathRulesTest(parameterized.TestCase):
    def test_first_match_wins(self):
        rules = ftp_jax.path_rules(
            [(r"head/.*", False), (r"backbone/.*/bias", False), (r".*", True)],
            name="mask",
        )
        mask = rules(PARAMS)
        self.assertEqual(
            mask,
            {
                "backbone": {"conv1": {"kernel": True, "bias": False}},
                "head": {"kernel": False, "bias": False},
                "blocks": [{"scale": True}, {"scale": True}],
            },
        )

    def test_patterns_match_the_whole_path(self):
        # 'head' alone does not match 'head/kernel' (fullmatch, not search).
        rules = ftp_jax.path_rules([(r"head", False), (r".*", True)], name="mask")
        with self.assertRaisesRegex(ValueError, r"rule 'head' matched no parameter"):
            rules(PARAMS)

    def test_rule_matching_nothing_lists_paths(self):
        rules = ftp_jax.path_rules([(r"classifier/.*", False), (r".*", True)], name="mask")
        with self.assertRaisesRegex(
            ValueError,
            r"`mask`: rule 'classifier/\.\*' matched no parameter\. Parameter paths look "
            r"like 'backbone/conv1/bias', 'backbone/conv1/kernel'",
        ):
            rules(PARAMS)

    def test_shadowed_rule_is_an_error(self):
        rules = ftp_jax.path_rules([(r".*", True), (r"head/.*", False)], name="mask")
        with self.assertRaisesRegex(ValueError, r"'head/\.\*' matches only parameters taken"):
            rules(PARAMS)

    def test_uncovered_leaf_is_an_error(self):
        rules = ftp_jax.path_rules([(r"backbone/.*", True), (r"head/.*", False)], name="mask")
        with self.assertRaisesRegex(
            ValueError, r"no rule covers 'blocks/0/scale', 'blocks/1/scale'"
        ):
            rules(PARAMS)

    def test_invalid_pattern(self):
        with self.assertRaisesRegex(ValueError, r"invalid pattern '\('"):
            ftp_jax.path_rules([("(", True)])

    def test_rule_not_a_pair(self):
        with self.assertRaisesRegex(ValueError, r"rule #0 must be a \(regex, value\) pair"):
            ftp_jax.path_rules([r"head/.*"])

    def test_function_values_are_called_per_leaf(self):
        rules = ftp_jax.path_rules(
            [(r"head/kernel", (0,)), (r".*", ftp_jax.flax_row_axes)], name="row_axes"
        )
        axes = rules(PARAMS)
        self.assertEqual(axes["head"]["kernel"], (0,))
        self.assertEqual(axes["backbone"]["conv1"]["kernel"], (3,))
        self.assertEqual(axes["backbone"]["conv1"]["bias"], ())


if __name__ == "__main__":
    pytest.main([__file__])
