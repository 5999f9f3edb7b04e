"""Tests for ftp_jax._lpft: LP-FT, a linear probe then full fine-tuning, as one transform."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from absl.testing import parameterized

import ftp_jax

MASK = ftp_jax.path_rules([(r"head/.*", False), (r".*", True)], name="mask")
PARAMS = {"body": {"kernel": jnp.ones((2, 2))}, "head": {"kernel": jnp.ones(2)}}
ONES = jax.tree_util.tree_map(jnp.ones_like, PARAMS)


def _updates(tx, steps, grads=ONES):
    state = tx.init(PARAMS)
    out = []
    for _ in range(steps):
        updates, state = tx.update(grads, state, PARAMS)
        out.append(updates)
    return out, state


class PhaseTest(parameterized.TestCase):
    @parameterized.parameters(1, 3)
    def test_backbone_still_before_switch_moves_after(self, switch_step):
        updates, state = _updates(ftp_jax.lp_ft(optax.sgd(0.5), switch_step, mask=MASK), 5)
        for step, u in enumerate(updates):
            np.testing.assert_array_equal(u["head"]["kernel"], [-0.5, -0.5])
            expected = 0.0 if step < switch_step else -0.5
            np.testing.assert_array_equal(u["body"]["kernel"], np.full((2, 2), expected))
        self.assertEqual(int(state.count), 5)

    def test_momentum_hand_computed(self):
        """Gradient 1, SGD(lr 1, momentum 0.9), switch at step 2.

        Head: -1, -1.9, -2.71, -3.439 (its momentum carried through the switch);
        backbone: 0, 0, then a fresh momentum: -1, -1.9.
        """
        tx = ftp_jax.lp_ft(optax.sgd(1.0, momentum=0.9), 2, mask=MASK)
        updates, _ = _updates(tx, 4)
        head = [float(u["head"]["kernel"][0]) for u in updates]
        body = [float(u["body"]["kernel"][0, 0]) for u in updates]
        np.testing.assert_allclose(head, [-1.0, -1.9, -2.71, -3.439], rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(body, [0.0, 0.0, -1.0, -1.9], rtol=1e-6, atol=1e-7)

    def test_backbone_state_held_until_switch(self):
        tx = ftp_jax.lp_ft(optax.adam(0.1), 3, mask=MASK)
        initial = tx.init(PARAMS).backbone_state
        _, state = _updates(tx, 3)
        chex.assert_trees_all_equal(state.backbone_state, initial)  # count 0, moments 0
        _, state = _updates(tx, 4)
        self.assertFalse(
            all(
                bool(jnp.all(a == b))
                for a, b in zip(
                    jax.tree_util.tree_leaves(state.backbone_state),
                    jax.tree_util.tree_leaves(initial),
                    strict=True,
                )
            )
        )

    def test_shifted_schedule_continues_the_global_one(self):
        """backbone_optimizer with schedule(count + switch): the head's lr at the switch."""

        def schedule(count):
            return 0.1 * (count + 1)

        tx = ftp_jax.lp_ft(
            optax.sgd(schedule),
            2,
            mask=MASK,
            backbone_optimizer=optax.sgd(lambda count: schedule(count + 2)),
        )
        updates, _ = _updates(tx, 4)
        for step in (2, 3):  # lr 0.3, then 0.4, for both
            np.testing.assert_allclose(
                updates[step]["body"]["kernel"], -0.1 * (step + 1), atol=1e-7
            )
            np.testing.assert_allclose(
                updates[step]["head"]["kernel"], -0.1 * (step + 1), atol=1e-7
            )
        # Without it, the backbone's own schedule restarts at the switch (lr 0.1).
        restarted, _ = _updates(ftp_jax.lp_ft(optax.sgd(schedule), 2, mask=MASK), 3)
        np.testing.assert_allclose(restarted[2]["body"]["kernel"], -0.1, atol=1e-7)

    def test_switch_0_is_the_base_optimizer(self):
        base = optax.sgd(0.3, momentum=0.9)
        keys = jax.random.split(jax.random.key(0), 2)
        params = {"body": jax.random.normal(keys[0], (3, 2)), "head": jax.random.normal(keys[1], 2)}
        tx = ftp_jax.lp_ft(base, 0, mask={"body": True, "head": False})
        theta, state, base_theta, base_state = params, tx.init(params), params, base.init(params)
        for t in range(4):
            grads = jax.tree_util.tree_map(lambda p: jnp.sin(p + t), theta)  # noqa: B023
            updates, state = tx.update(grads, state, theta)
            theta = optax.apply_updates(theta, updates)
            base_grads = jax.tree_util.tree_map(lambda p: jnp.sin(p + t), base_theta)  # noqa: B023
            base_updates, base_state = base.update(base_grads, base_state)
            base_theta = optax.apply_updates(base_theta, base_updates)
        chex.assert_trees_all_close(theta, base_theta, rtol=1e-6, atol=1e-7)

    def test_backbone_switches_inside_jit(self):
        tx = ftp_jax.lp_ft(optax.sgd(0.5), 2, mask=MASK)

        @jax.jit
        def step(state):
            return tx.update(ONES, state, PARAMS)

        state = tx.init(PARAMS)
        body = []
        for _ in range(4):
            updates, state = step(state)
            body.append(float(updates["body"]["kernel"][0, 0]))
        self.assertEqual(body, [0.0, 0.0, -0.5, -0.5])


class ErrorTest(parameterized.TestCase):
    @parameterized.parameters(-1, 1.5, True, "2")
    def test_bad_switch_step(self, switch_step):
        with self.assertRaisesRegex(ValueError, r"`switch_step`.*integer >= 0"):
            ftp_jax.lp_ft(optax.sgd(0.1), switch_step, mask=MASK)

    def test_mask_is_required(self):
        with self.assertRaisesRegex(ValueError, r"lp_ft needs `mask`"):
            ftp_jax.lp_ft(optax.sgd(0.1), 1, mask=None)

    @parameterized.parameters((True, "every"), (False, "no"))
    def test_mask_needs_a_head_and_a_backbone(self, value, which):
        tx = ftp_jax.lp_ft(
            optax.sgd(0.1), 1, mask=lambda p: jax.tree_util.tree_map(lambda _: value, p)
        )
        with self.assertRaisesRegex(ValueError, f"marks {which} leaf as backbone"):
            tx.init(PARAMS)

    def test_mask_tree_mismatch_names_paths(self):
        tx = ftp_jax.lp_ft(optax.sgd(0.1), 1, mask={"body": {"kernel": True}})
        with self.assertRaisesRegex(ValueError, r"`mask`.*'head/kernel'"):
            tx.init(PARAMS)

    def test_optimizers_must_be_transforms(self):
        with self.assertRaisesRegex(TypeError, r"`base_optimizer`"):
            ftp_jax.lp_ft(optax.sgd, 1, mask=MASK)
        with self.assertRaisesRegex(TypeError, r"`backbone_optimizer`"):
            ftp_jax.lp_ft(optax.sgd(0.1), 1, mask=MASK, backbone_optimizer=optax.adam)


if __name__ == "__main__":
    pytest.main([__file__])
