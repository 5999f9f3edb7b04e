"""The shortcuts ``ftp_adamw`` and ``ftp_sgd`` pass FTP's memory options through.

``ftp_adamw(..., displacement_dtype=...)`` must be exactly
``ftp(optax.adamw(...), displacement_dtype=...)``: the same state dtypes and the
same updates, bit for bit, over several steps (so that the stored buffers enter
``h_t`` and the projection).
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import optax
import pytest

import ftp_jax

STEPS = 4

OPTIONS = {
    "displacement": {"displacement_dtype": jnp.bfloat16},
    "anchor": {"anchor_dtype": jnp.bfloat16},
    "both": {"anchor_dtype": jnp.bfloat16, "displacement_dtype": jnp.bfloat16},
}


def _params():
    k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
    return {
        "conv": {"kernel": 0.1 * jax.random.normal(k1, (3, 3, 4, 8))},
        "dense": {
            "kernel": 0.1 * jax.random.normal(k2, (8, 5)),
            "bias": 0.1 * jax.random.normal(k3, (5,)),
        },
    }


def _grads(params, step):
    keys = jax.random.split(jax.random.key(100 + step), len(jax.tree_util.tree_leaves(params)))
    leaves, treedef = jax.tree_util.tree_flatten(params)
    return treedef.unflatten(
        [0.05 * jax.random.normal(k, p.shape, p.dtype) for k, p in zip(keys, leaves, strict=True)]
    )


def _run(tx):
    """Params, updates and state after ``STEPS`` steps (pre-trained params = anchor)."""
    params = _params()
    state = tx.init(params)
    all_updates = []
    update = jax.jit(tx.update)  # one compile, not one per primitive
    for step in range(STEPS):
        updates, state = update(_grads(params, step), state, params)
        params = optax.apply_updates(params, updates)
        all_updates.append(updates)
    return params, all_updates, state


def _buffer_dtypes(state: ftp_jax.FTPState):
    leaves = lambda tree: jax.tree_util.tree_leaves(tree)  # noqa: E731
    return (
        {leaf.dtype for leaf in leaves(state.anchor)},
        {leaf.dtype for leaf in leaves(state.prev_displacement)},
    )


def _check(shortcut, reference, options):
    params, updates, state = _run(shortcut)
    ref_params, ref_updates, ref_state = _run(reference)
    anchor_dtypes, displacement_dtypes = _buffer_dtypes(state)
    assert anchor_dtypes == {jnp.dtype(options.get("anchor_dtype", jnp.float32))}
    assert displacement_dtypes == {jnp.dtype(options.get("displacement_dtype", jnp.float32))}
    chex.assert_trees_all_equal(updates, ref_updates)
    chex.assert_trees_all_equal(params, ref_params)
    chex.assert_trees_all_equal(state, ref_state)
    chex.assert_trees_all_equal_dtypes(state, ref_state)


@pytest.mark.parametrize("option", sorted(OPTIONS))
def test_ftp_adamw_passes_buffer_options(option):
    options = OPTIONS[option]
    shortcut = ftp_jax.ftp_adamw(1e-2, weight_decay=0.05, **options)
    reference = ftp_jax.ftp(optax.adamw(1e-2, weight_decay=0.05), **options)
    _check(shortcut, reference, options)


@pytest.mark.parametrize("option", sorted(OPTIONS))
def test_ftp_sgd_passes_buffer_options(option):
    options = OPTIONS[option]
    shortcut = ftp_jax.ftp_sgd(1e-1, momentum=0.9, weight_decay=5e-4, **options)
    reference = ftp_jax.ftp(
        optax.chain(optax.add_decayed_weights(5e-4), optax.sgd(1e-1, momentum=0.9)), **options
    )
    _check(shortcut, reference, options)


def test_defaults_keep_params_dtype():
    """Without the options the buffers keep the params' dtype (the exact default)."""
    for tx in (ftp_jax.ftp_adamw(1e-2), ftp_jax.ftp_sgd(1e-1, momentum=0.9)):
        _, _, state = _run(tx)
        assert _buffer_dtypes(state) == ({jnp.dtype(jnp.float32)}, {jnp.dtype(jnp.float32)})


def test_options_change_the_buffers_not_just_the_dtype():
    """The option is really in effect: a bfloat16 displacement moves the radii."""
    exact = _run(ftp_jax.ftp_adamw(1e-2))[2]
    rounded = _run(ftp_jax.ftp_adamw(1e-2, displacement_dtype=jnp.bfloat16))[2]
    radii = jax.tree_util.tree_leaves(ftp_jax.ftp_radii(exact))
    rounded_radii = jax.tree_util.tree_leaves(ftp_jax.ftp_radii(rounded))
    assert any(not jnp.array_equal(a, b) for a, b in zip(radii, rounded_radii, strict=True)), (
        "displacement_dtype had no effect"
    )
