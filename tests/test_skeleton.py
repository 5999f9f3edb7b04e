"""Tests for ftp_jax._skeleton: plans, state trees and the per-leaf map every method uses."""

from __future__ import annotations

from typing import NamedTuple

import chex
import jax.numpy as jnp
import optax
import pytest

import ftp_jax
from ftp_jax._readouts import radius_state
from ftp_jax._skeleton import (
    anchor_tree,
    check_nonnegative,
    constrained_tree,
    leaf_plans,
    map_leaves,
)

PARAMS = {"body": {"kernel": jnp.ones((3, 2))}, "head": {"kernel": jnp.full((2, 1), 2.0)}}
MASK = ftp_jax.path_rules([(r"head/.*", False), (r".*", True)], name="mask")


def test_plans_paths_masks_and_rows():
    plans = leaf_plans(PARAMS, MASK, None, method="test")
    assert [(p.path, p.constrained, p.kept_axes) for p in plans] == [
        ("body/kernel", True, (1,)),
        ("head/kernel", False, ()),
    ]


def test_anchor_is_a_copy_at_constrained_leaves_only():
    plans = leaf_plans(PARAMS, MASK, None, method="test")
    anchor = anchor_tree(PARAMS, None, plans, dtype=jnp.bfloat16)
    assert isinstance(anchor["head"]["kernel"], optax.MaskedNode)
    assert anchor["body"]["kernel"].dtype == jnp.bfloat16
    assert anchor["body"]["kernel"] is not PARAMS["body"]["kernel"]
    with pytest.raises(ValueError, match=r"`anchor` at 'body/kernel' has shape \(2, 3\)"):
        anchor_tree(PARAMS, {**PARAMS, "body": {"kernel": jnp.ones((2, 3))}}, plans)


def test_map_leaves_splits_constrained_and_excluded_and_returns_columns():
    plans = leaf_plans(PARAMS, MASK, None, method="test")
    counts = constrained_tree(PARAMS, plans, lambda p, plan: jnp.zeros(()))
    grads = {"body": {"kernel": jnp.full((3, 2), 0.5)}, "head": {"kernel": jnp.ones((2, 1))}}
    doubled, new_counts = map_leaves(
        lambda plan, p, g, c: (p + 2 * g, c + 1),
        plans,
        PARAMS,
        (grads,),
        (counts,),
        excluded_fn=lambda plan, p, g, c: (p, c),
        method="test",
    )
    chex.assert_trees_all_equal(doubled["body"]["kernel"], jnp.full((3, 2), 2.0))
    chex.assert_trees_all_equal(doubled["head"]["kernel"], PARAMS["head"]["kernel"])
    assert float(new_counts["body"]["kernel"]) == 1.0
    assert isinstance(new_counts["head"]["kernel"], optax.MaskedNode)


def test_map_leaves_refuses_a_mask_changed_since_init():
    state = constrained_tree(
        PARAMS, leaf_plans(PARAMS, MASK, None, method="test"), lambda p, _: jnp.zeros(())
    )
    every_leaf = leaf_plans(PARAMS, None, None, method="test")
    with pytest.raises(ValueError, match=r"`mask` at 'head/kernel' is True now but was False"):
        map_leaves(
            lambda plan, p, s: (p,),
            every_leaf,
            PARAMS,
            state=(state,),
            excluded_fn=lambda plan, p, s: (p,),
            method="test",
        )


def test_map_leaves_refuses_a_tree_of_another_structure():
    plans = leaf_plans(PARAMS, MASK, None, method="test")
    with pytest.raises(ValueError, match=r"gradient tree does not have the structure"):
        map_leaves(
            lambda plan, p, g: (p,),
            plans,
            PARAMS,
            ({"body": jnp.ones(2)},),
            excluded_fn=lambda plan, p, g: (p,),
            method="test",
        )


@pytest.mark.parametrize("value", [-1.0, float("nan"), True, "1", jnp.ones(2), 1.5])
def test_check_nonnegative_refuses(value):
    with pytest.raises(ValueError, match=r"m: `x` must be a finite number in \[0, 1\]"):
        check_nonnegative("x", value, "m", upper=1.0)


def test_radii_reads_any_method_and_none_without_one():
    tx = ftp_jax.ftp(optax.sgd(0.1), mask=MASK)
    radii = ftp_jax.radii(optax.chain(optax.identity(), tx).init(PARAMS))
    assert radii["head"]["kernel"] is None and radii["body"]["kernel"].shape == ()
    assert ftp_jax.radii(optax.adamw(1e-3).init(PARAMS)) is None
    two = (tx.init(PARAMS), tx.init(PARAMS))
    with pytest.raises(ValueError, match=r"2 states in the optimizer state carry radii"):
        ftp_jax.radii(two)


def test_the_method_read_outs_find_their_state_through_the_one_search():
    """ftp_radii and tpgm_radii read their own state type among others (radius_state)."""
    ftp_tx = ftp_jax.ftp(optax.sgd(0.1), mask=MASK)
    tpgm_tx = ftp_jax.tpgm(optax.sgd(0.1), lambda params, batch: 0.0, mask=MASK)
    both = (ftp_tx.init(PARAMS), tpgm_tx.init(PARAMS))
    assert ftp_jax.ftp_radii(both)["body"]["kernel"].shape == ()
    assert ftp_jax.tpgm_radii(both)["head"]["kernel"] is None
    assert radius_state(both, ftp_jax.FTPState) is both[0]
    with pytest.raises(ValueError, match=r"Expected exactly one FTPState .*found 0"):
        ftp_jax.ftp_radii(optax.adamw(1e-3).init(PARAMS))
    with pytest.raises(ValueError, match=r"Expected exactly one TPGMState .*found 0"):
        ftp_jax.tpgm_radii(both[0])
    with pytest.raises(ValueError, match=r"2 states in the optimizer state carry radii"):
        ftp_jax.ftp_radii((both[0], both[0]))


@pytest.mark.parametrize(
    "make",
    [
        lambda: ftp_jax.mars_pgm(optax.sgd(0.1), 1.0),
        lambda: optax.chain(ftp_jax.l2sp(0.1), optax.sgd(0.1)),
        lambda: ftp_jax.l2sp_decoupled(optax.sgd(0.1), 0.1, 0.1),
        lambda: ftp_jax.spd(optax.sgd(0.1), 1.0),
    ],
)
def test_transforms_on_the_skeleton_take_params_without_leaves(make):
    """map_leaves on params without leaves: one empty tree, the params' structure."""
    tx = make()
    updates, _ = tx.update({}, tx.init({}), {})
    assert updates == {}
    assert float(ftp_jax.l2sp_penalty({}, {}, 1.0)) == 0.0
    assert ftp_jax.wise_ft({}, {}, 0.5) == {}
    assert ftp_jax.project_fixed_radius({}, {}, 1.0) == {}


class _Step(NamedTuple):
    moved: object
    count: object


def test_map_leaves_passes_named_trees_by_name_and_returns_a_named_tuple():
    """Mappings of trees reach the per-leaf function as keyword arguments, and a
    NamedTuple it returns comes back as the same NamedTuple of trees."""
    plans = leaf_plans(PARAMS, MASK, None, method="test")
    counts = constrained_tree(PARAMS, plans, lambda p, plan: jnp.zeros(()))
    grads = {"body": {"kernel": jnp.full((3, 2), 0.5)}, "head": {"kernel": jnp.ones((2, 1))}}

    def step(plan, param, *, gradient, count):
        return _Step(moved=param + 2 * gradient, count=count + 1)

    result = map_leaves(
        step,
        plans,
        PARAMS,
        {"gradient": grads},
        {"count": counts},
        excluded_fn=lambda plan, param, gradient, count: (param, count),
        method="test",
    )
    assert isinstance(result, _Step)
    chex.assert_trees_all_equal(result.moved["body"]["kernel"], jnp.full((3, 2), 2.0))
    chex.assert_trees_all_equal(result.moved["head"]["kernel"], PARAMS["head"]["kernel"])
    assert float(result.count["body"]["kernel"]) == 1.0
    assert isinstance(result.count["head"]["kernel"], optax.MaskedNode)
    with pytest.raises(ValueError, match=r"`mask` at 'head/kernel' is True now but was False"):
        map_leaves(
            step,
            leaf_plans(PARAMS, None, None, method="test"),
            PARAMS,
            {"gradient": grads},
            {"count": counts},
            excluded_fn=step,
            method="test",
        )
