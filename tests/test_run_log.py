"""Pinned leaves, FTP's radius gradients in the loop, TensorBoard event files, epoch cadence."""

from __future__ import annotations

import json
import warnings

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import ftp_jax
from ftp_jax.train import MethodConfig, TrainConfig, fit
from ftp_jax.train.methods import FTPOptions
from ftp_jax.train.run_log import PINNED_RADIUS, pinned_leaves
from tests import tiny_fit


def _record(step, **radius):
    return {"step": step, "radius": radius}


def test_pinned_leaves_needs_half_the_epochs_at_the_floor():
    history = [
        _record(10, a=1e-8, b=0.3, c=1e-8),
        _record(20, a=1e-8, b=1e-8, c=0.2),
        _record(30, a=1e-8, b=0.2, c=0.4),
        _record(40, a=1e-8, b=0.1, c=1e-7),
    ]
    # a: 4 of 4 from step 10; b: 1 of 4; c: 2 of 4 (half) from step 10.
    assert pinned_leaves(history) == {"a": 10, "c": 10}
    assert pinned_leaves(history[:1]) == {}  # one epoch says nothing yet
    assert pinned_leaves([_record(5), _record(6)]) == {}  # no radii (vanilla)
    assert pinned_leaves([_record(1, a=2 * PINNED_RADIUS), _record(2, a=2 * PINNED_RADIUS)]) == {}


def test_radius_gradients_is_the_reference_h():
    """h_t = sum(g_t * c_{t-1} / n_{t-1}) per leaf, from the state before the update."""
    params = {"w": jnp.asarray([[0.5, -1.0], [2.0, 0.25], [0.0, 1.0]]), "b": jnp.ones(3)}
    tx = ftp_jax.ftp(optax.sgd(0.1), mask={"w": True, "b": False})
    state = tx.init(params)
    grads = jax.tree_util.tree_map(lambda x: 0.1 * x + 0.3, params)
    h0 = ftp_jax.radius_gradients(state, grads)
    assert h0["b"] is None
    np.testing.assert_allclose(h0["w"], 0.0, atol=0)  # no previous displacement yet
    updates, state = tx.update(grads, state, params)
    params = optax.apply_updates(params, updates)
    grads = jax.tree_util.tree_map(lambda x: jnp.sin(3.0 * x), params)
    # By hand: c_1 = theta_0 + u_1 - w0 = u_1 = -0.1 g_0; its MARS row norms (rows:
    # the output axis, last for a Flax kernel) are column sums of |c| (+1e-8).
    c = -0.1 * (0.1 * jnp.asarray([[0.5, -1.0], [2.0, 0.25], [0.0, 1.0]]) + 0.3)
    n = jnp.sum(jnp.abs(c), axis=0, keepdims=True) + 1e-8
    expected = jnp.sum(grads["w"] * c / n)
    h1 = ftp_jax.radius_gradients(state, grads)
    np.testing.assert_allclose(h1["w"], expected, rtol=1e-6, atol=1e-7)
    assert ftp_jax.radius_gradients(optax.sgd(0.1).init(params), grads) is None


@pytest.fixture(scope="module")
def ftp_run(tmp_path_factory):
    """A tiny FTP fit with radius gradients logged and a checkpoint every 2 epochs."""
    workdir = tmp_path_factory.mktemp("ftp_run")
    config = TrainConfig(
        epochs=3,
        batch_size=16,
        progress=False,
        checkpoint_epochs=2,
        log_radius_gradients=True,
        method=MethodConfig(name="ftp", learning_rate=0.05, options=FTPOptions(k=1.0)),
    )
    train, validation, tests = tiny_fit.data()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = fit(tiny_fit.TinyNet(nnx.Rngs(0)), config, train, validation, tests, workdir)
    return workdir, result, caught


def test_epoch_records_carry_radius_gradients(ftp_run):
    _, result, _ = ftp_run
    for record in result.history:
        assert (
            set(record["radius_gradient"])
            == set(record["radius"])
            == {
                "body/kernel",
                "body/bias",
                "norm/scale",
                "norm/bias",
            }
        )
        for leaf, share in record["radius_gradient_positive"].items():
            assert 0.0 <= share <= 1.0, leaf
        assert all(np.isfinite(v) for v in record["radius_gradient"].values())


def test_checkpoint_epochs_saves_every_other_epoch_and_the_last(ftp_run):
    workdir, result, _ = ftp_run
    steps_per_epoch = result.steps // 3
    saved = sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())
    # Epoch 2 and epoch 3 (the last); epoch 1 was not saved. keep_checkpoints=2.
    assert saved == [2 * steps_per_epoch, 3 * steps_per_epoch]


def test_tensorboard_events_read_back_by_tensorboard(ftp_run):
    from tensorboard.backend.event_processing import event_accumulator

    workdir, result, _ = ftp_run
    accumulator = event_accumulator.EventAccumulator(str(workdir / "tensorboard"))
    accumulator.Reload()
    tags = set(accumulator.Tags()["scalars"])
    assert {"train/loss", "validation/accuracy", "radius/body/kernel", "distance/head/kernel"} <= (
        tags
    )
    assert "radius_gradient/body/kernel" in tags
    events = accumulator.Scalars("validation/accuracy")
    assert [e.step for e in events] == [r["step"] for r in result.history]
    np.testing.assert_allclose(
        [e.value for e in events], [r["val_accuracy"] for r in result.history], rtol=1e-6
    )


def test_pinned_leaves_warn_once_and_reach_the_result(tmp_path):
    """A leaf whose radius FTP drives to the floor is named in one warning and in the result.

    The radius learning rate of FTP is 1e-2; a large learning rate and k=1 on the
    tiny problem drive some radii to the floor within a few epochs. The test
    checks the loop's plumbing against the pure rule on the run's own history.
    """
    config = TrainConfig(
        epochs=4,
        batch_size=16,
        progress=False,
        tensorboard=False,
        method=MethodConfig(name="ftp", learning_rate=0.5, options=FTPOptions(k=1.0)),
    )
    train, validation, tests = tiny_fit.data()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = fit(tiny_fit.TinyNet(nnx.Rngs(0)), config, train, validation, tests, tmp_path)
    expected = pinned_leaves(result.history)
    assert result.pinned == expected
    messages = [str(w.message) for w in caught if "pins" in str(w.message)]
    if expected:
        assert len(messages) == 1
        for leaf in expected:
            assert leaf in messages[0]
    else:
        assert messages == []
    stored = json.loads((tmp_path / "result.json").read_text())
    assert stored["pinned"] == expected


def test_nesterov_base_is_torch_sgd_nesterov():
    """MethodConfig(nesterov=True): torch's SGD(momentum, nesterov=True, weight_decay)."""
    from ftp_jax.train.methods import build_method

    params = {"backbone": {"w": jnp.asarray([1.0, -2.0])}, "head": {"b": jnp.asarray([0.5])}}
    config = TrainConfig(
        epochs=1,
        lr_schedule="constant",
        method=MethodConfig(
            name="vanilla", learning_rate=0.1, momentum=0.9, nesterov=True, weight_decay=0.01
        ),
    )
    tx = build_method(config, params, 10).tx
    state = tx.init(params)

    def flat(tree):
        leaves = jax.tree_util.tree_leaves(tree)
        return dict(
            zip(ftp_jax.leaf_paths(tree), (np.asarray(x, np.float64) for x in leaves), strict=True)
        )

    theta, buf = flat(params), None
    current = params
    for step in range(3):
        grads = jax.tree_util.tree_map(lambda x: jnp.cos(x + step), current)  # noqa: B023
        updates, state = tx.update(grads, state, current)
        current = optax.apply_updates(current, updates)
        # torch.optim.SGD: d = g + wd p; buf = m buf + d (buf = d at first); d = d + m buf.
        d = {k: np.cos(theta[k] + step) + 0.01 * theta[k] for k in theta}
        buf = d if buf is None else {k: 0.9 * buf[k] + d[k] for k in d}
        theta = {k: theta[k] - 0.1 * (d[k] + 0.9 * buf[k]) for k in theta}
    chex.assert_trees_all_close(flat(current), theta, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="nesterov"):
        MethodConfig(optimizer="adamw", nesterov=True)
