"""Every transform the package exports, through the same checks: one table, one row each.

A row builds its transform from a learning rate (a float or a schedule), so that the
same row serves ``optax.inject_hyperparams``, a schedule and a float. Every check
runs every row on a tiny tree toward the quadratic ``0.5 ||theta - target||^2``,
whose minimum is within reach of the anchor:

- the state's tree, shapes and dtypes are those of ``init`` after ``update`` (a
  ``lax.scan``, whose carry must keep its type), and the second jitted call does not
  compile again;
- the run then continues (a long scan) to the quadratic's minimum (the regularized
  one for L2-SP), where the method lets the params reach it;
- bfloat16 params keep their dtype, and the state its types;
- a constant schedule in place of the float, ``optax.inject_hyperparams`` and
  ``optax.MultiSteps`` (two half batches = one large batch) give the float's steps;
- extra keyword arguments of ``update`` are accepted and reach the base optimizer;
- ``optax.tree_utils.tree_map_params`` maps exactly the state's trees like the params;
- ``update`` with params that do not fit the state names the method, the leaf and
  both shapes.

Adding a method, or another setting of one (a state layout, say), means adding one
:class:`Row` to ``ROWS``. Each row compiles two small programs once per module: the
float32 run, and the variants (schedule, injection, MultiSteps, bfloat16) together;
the other checks only trace.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from absl.testing import parameterized

import ftp_jax

LR = 0.2  # the base optimizers' learning rate
SCAN = 25  # steps per jitted call (a lax.scan)
LONG_CALLS = 12  # calls of the run for convergence: 300 steps in all
SHAPES = {"body": {"kernel": (3, 2), "bias": (2,)}, "head": {"kernel": (2, 3)}}
MASK = {"body": {"kernel": True, "bias": True}, "head": {"kernel": False}}  # the head is new
L2SP_ALPHA = 0.5


def _tree(seed: int, scale: float, dtype=jnp.float32):
    rng = np.random.default_rng(seed)
    return jax.tree.map(
        lambda shape: jnp.asarray(scale * rng.standard_normal(shape), dtype),
        SHAPES,
        is_leaf=lambda x: isinstance(x, tuple),
    )


ANCHOR = _tree(0, 1.0)
# The quadratic's minimum: each row's L1 norm from the anchor is below ~1.5, reachable by
# learned radii (from 1e-8, ~0.01 per step) well within the long run.
TARGET = jax.tree.map(jnp.add, ANCHOR, _tree(1, 0.2))


def _gradient(params, shift=0.0):
    """The quadratic's gradient ``theta - target`` (+ ``shift``: a micro-batch's noise)."""
    return jax.tree.map(lambda p, t: (p - t.astype(p.dtype)) + shift, params, TARGET)


def _heldout_loss(params, batch, **kwargs):
    """TPGM's held-out loss: the same quadratic, the batch holding the minimum."""
    del kwargs  # extra keyword arguments of update reach it too
    leaves = jax.tree.map(lambda p, t: jnp.sum(jnp.square(p - t.astype(p.dtype))), params, batch)
    return 0.5 * sum(jax.tree.leaves(leaves))


def _l2sp_minimum():
    """argmin 0.5 ||w - t||^2 + 0.5 alpha ||w - w0||^2 on the body; the head (beta = 0): t."""
    regularized = jax.tree.map(lambda t, a: (t + L2SP_ALPHA * a) / (1 + L2SP_ALPHA), TARGET, ANCHOR)
    return {"body": regularized["body"], "head": TARGET["head"]}


@dataclasses.dataclass(frozen=True, eq=False)  # hashed by identity: a cache key
class Row:
    """One transform.

    ``make(learning_rate)`` builds it (``learning_rate`` a float or a schedule, passed
    to every learning rate the transform has); ``wrap(base)`` builds it around a given
    base optimizer (None for a shortcut that builds its own); ``method`` is the name
    its errors start with; ``update_kwargs`` are extra arguments its ``update`` needs;
    ``minimum()`` is where the long run ends (None: the method does not go there, e.g.
    TPGM without held-out data keeps its first radius).
    """

    name: str
    make: Callable[..., optax.GradientTransformation]
    wrap: Callable[[optax.GradientTransformation], optax.GradientTransformation] | None
    method: str
    update_kwargs: dict = dataclasses.field(default_factory=dict)
    minimum: Callable[[], Any] | None = lambda: TARGET
    params_tolerance: float = 1e-3  # atol of the minimum reached (float32)
    # Whether the state holds trees like the params (not when everything is stacked
    # per bucket: ftp's layout="buckets" with bucket_base=True).
    params_like_state: bool = True

    def __repr__(self) -> str:  # the test ids
        return self.name


def _sgd(learning_rate):
    return optax.sgd(learning_rate, momentum=0.5)


def _times(learning_rate, factor):
    """``factor`` times a learning rate that may be a schedule."""
    if callable(learning_rate):
        return lambda count: factor * learning_rate(count)
    return factor * learning_rate


def _tpgm(base, **kwargs):
    return ftp_jax.tpgm(base, _heldout_loss, radius_learning_rate=5e-2, mask=MASK, **kwargs)


ROWS = (
    Row(
        "ftp_mars",
        lambda learning_rate: ftp_jax.ftp(_sgd(learning_rate)),
        lambda base: ftp_jax.ftp(base),
        "ftp",
    ),
    Row(
        "ftp_l2",
        lambda learning_rate: ftp_jax.ftp(_sgd(learning_rate), norm="l2"),
        lambda base: ftp_jax.ftp(base, norm="l2"),
        "ftp",
    ),
    Row(
        "ftp_mars_mask_torch_rows",
        lambda learning_rate: ftp_jax.ftp(
            _sgd(learning_rate), mask=MASK, row_axes=ftp_jax.torch_row_axes
        ),
        lambda base: ftp_jax.ftp(base, mask=MASK, row_axes=ftp_jax.torch_row_axes),
        "ftp",
    ),
    Row(
        "ftp_l2_mask",
        lambda learning_rate: ftp_jax.ftp(_sgd(learning_rate), norm="l2", mask=MASK),
        lambda base: ftp_jax.ftp(base, norm="l2", mask=MASK),
        "ftp",
    ),
    Row(  # the state layouts of issue 24 ("leaves" is the CPU's default, the rows above)
        "ftp_mars_buckets_mask",
        lambda learning_rate: ftp_jax.ftp(_sgd(learning_rate), mask=MASK, layout="buckets"),
        lambda base: ftp_jax.ftp(base, mask=MASK, layout="buckets"),
        "ftp",
    ),
    Row(
        "ftp_l2_buckets_base",
        lambda learning_rate: ftp_jax.ftp(
            _sgd(learning_rate), norm="l2", layout="buckets", bucket_base=True
        ),
        lambda base: ftp_jax.ftp(base, norm="l2", layout="buckets", bucket_base=True),
        "ftp",
        params_like_state=False,
    ),
    Row("ftp_sgd", lambda learning_rate: ftp_jax.ftp_sgd(learning_rate, 0.5), None, "ftp"),
    Row(
        "ftp_adamw",
        lambda learning_rate: ftp_jax.ftp_adamw(_times(learning_rate, 0.1), mask=MASK),
        None,
        "ftp",
    ),
    Row(
        "tpgm_heldout",
        lambda learning_rate: _tpgm(_sgd(learning_rate)),
        _tpgm,
        "tpgm",
        update_kwargs={"heldout_batch": TARGET},
    ),
    Row(
        "tpgm_apply_only",  # no held-out batch: projects with its first radii
        lambda learning_rate: _tpgm(_sgd(learning_rate)),
        _tpgm,
        "tpgm",
        minimum=None,
    ),
    Row(
        "mars_pgm",
        lambda learning_rate: ftp_jax.mars_pgm(_sgd(learning_rate), 5.0, mask=MASK),
        lambda base: ftp_jax.mars_pgm(base, 5.0, mask=MASK),
        "mars_pgm",
    ),
    Row(
        "l2sp",
        lambda learning_rate: optax.chain(ftp_jax.l2sp(L2SP_ALPHA, mask=MASK), _sgd(learning_rate)),
        lambda base: optax.chain(ftp_jax.l2sp(L2SP_ALPHA, mask=MASK), base),
        "l2sp",
        minimum=_l2sp_minimum,
    ),
    Row(
        "l2sp_decoupled",
        # Plain SGD: with momentum m the decoupled decay's fixed point moves (the
        # gradient is scaled by 1 / (1 - m), the decay is not).
        lambda learning_rate: ftp_jax.l2sp_decoupled(
            optax.sgd(learning_rate), learning_rate, L2SP_ALPHA, mask=MASK
        ),
        lambda base: ftp_jax.l2sp_decoupled(base, LR, L2SP_ALPHA, mask=MASK),
        "l2sp_decoupled",
        minimum=_l2sp_minimum,
    ),
    Row(
        "spd",
        lambda learning_rate: ftp_jax.spd(_sgd(learning_rate), 1.0, mask=MASK),
        lambda base: ftp_jax.spd(base, 1.0, mask=MASK),
        "spd",
    ),
    Row(
        "lp_ft",
        lambda learning_rate: ftp_jax.lp_ft(_sgd(learning_rate), 3, mask=MASK),
        lambda base: ftp_jax.lp_ft(base, 3, mask=MASK),
        "lp_ft",
    ),
)
ROW_PARAMS = [(row,) for row in ROWS]


# The projections, for the state check over every norm, row axes and mask (traced only).
PROJECTIONS = {
    "ftp": (lambda **options: ftp_jax.ftp(_sgd(LR), **options), {}),
    "tpgm": (
        lambda **options: ftp_jax.tpgm(_sgd(LR), _heldout_loss, **options),
        {"heldout_batch": TARGET},
    ),
    "mars_pgm": (lambda **options: ftp_jax.mars_pgm(_sgd(LR), 5.0, **options), {}),
}
ROW_AXES = {
    "flax": None,
    "torch": ftp_jax.torch_row_axes,
    "whole": lambda params: jax.tree.map(lambda _: (), params),
}


# --- the programs, compiled once per row --------------------------------------------


# LLVM's optimization level 0: ~40% less compile time for these tiny programs (the suite
# is mostly compiling); every comparison below is between programs compiled alike.
_jit = functools.partial(jax.jit, compiler_options={"xla_backend_optimization_level": 0})


def _scan(tx, update_kwargs, trace_log=None):
    """``SCAN`` steps on the quadratic as one ``lax.scan``: ``(params, state) -> (params,
    state, last updates)``, to be jitted. ``trace_log`` gets one entry per trace."""

    def step(carry, _):
        params, state, _ = carry
        updates, state = tx.update(_gradient(params), state, params, **update_kwargs)
        return (optax.apply_updates(params, updates), state, updates), None

    def run(params, state):
        if trace_log is not None:
            trace_log.append(1)
        zeros = jax.tree.map(jnp.zeros_like, params)
        return jax.lax.scan(step, (params, state, zeros), None, length=SCAN)[0]

    return run


@functools.cache
def _float32_run(row: Row):
    """The float32 run: its first two calls (stability, one compile), then the long run."""
    tx, traces = row.make(LR), []
    run = _jit(_scan(tx, row.update_kwargs, traces))
    state0 = tx.init(ANCHOR)
    first = run(ANCHOR, state0)
    second = run(*first[:2])
    params, state = second[:2]
    for _ in range(LONG_CALLS - 2):
        params, state, _ = run(params, state)
    return {
        "state0": state0,
        "first": first,
        "second": second,
        "final": params,
        "traces": len(traces),
    }


def _constant(count):
    return jnp.asarray(LR, jnp.float32) + 0 * count  # a schedule of the step count


@functools.cache
def _variants(row: Row):
    """One program for the rest: the float run's first ``SCAN`` steps with a schedule for
    the learning rate and with ``inject_hyperparams``; MultiSteps' step against a large
    batch's; ``SCAN`` steps in bfloat16 (with the state ``init`` gives for them)."""
    scheduled = row.make(_constant)
    injected = optax.inject_hyperparams(row.make)(learning_rate=LR)
    tx = row.make(LR)
    multi = optax.MultiSteps(tx, every_k_schedule=2)

    def program(params, low):
        by_schedule = _scan(scheduled, row.update_kwargs)(params, scheduled.init(params))
        by_injection = _scan(injected, row.update_kwargs)(params, injected.init(params))
        # MultiSteps: the mean of two micro-batches' gradients = one large batch's.
        multi_state = multi.init(params)
        for shift in (0.05, -0.05):
            accumulated, multi_state = multi.update(
                _gradient(params, shift), multi_state, params, **row.update_kwargs
            )
        large, _ = tx.update(_gradient(params), tx.init(params), params, **row.update_kwargs)
        in_bfloat16 = _scan(tx, row.update_kwargs)(low, tx.init(low))
        return {
            "schedule": by_schedule[0],
            "injection": by_injection[0],
            "accumulated": accumulated,
            "large": large,
            "bfloat16": in_bfloat16,
        }

    low = jax.tree.map(lambda x: x.astype(jnp.bfloat16), ANCHOR)
    return jax.eval_shape(tx.init, low), _jit(program)(ANCHOR, low)


def _leaves_by_path():
    return zip(ftp_jax.leaf_paths(ANCHOR), jax.tree.leaves(ANCHOR), strict=True)


def _assert_same_state_types(test, state, reference):
    test.assertEqual(jax.tree.structure(state), jax.tree.structure(reference))
    chex.assert_trees_all_equal_shapes_and_dtypes(state, reference)
    weak = lambda tree: [getattr(x, "weak_type", False) for x in jax.tree.leaves(tree)]  # noqa: E731
    test.assertEqual(weak(state), weak(reference))


# --- the checks ---------------------------------------------------------------------


class CommonTest(parameterized.TestCase):
    @parameterized.parameters(ROW_PARAMS)
    def test_state_is_stable_under_scan_and_compiles_once(self, row):
        run = _float32_run(row)
        self.assertEqual(run["traces"], 1, "the second jitted call compiled again")
        for params, state, updates in (run["first"], run["second"]):
            _assert_same_state_types(self, state, run["state0"])
            chex.assert_trees_all_equal_shapes_and_dtypes((params, updates), (ANCHOR, ANCHOR))
            chex.assert_tree_all_finite((params, updates))

    @parameterized.product(
        method=tuple(PROJECTIONS),
        norm=("mars", "l2"),
        row_axes=tuple(ROW_AXES),
        masked=(False, True),
    )
    def test_state_types_for_every_norm_row_axes_and_mask(self, method, norm, row_axes, masked):
        """Regression: ftp(norm="l2") sized its inverse norms per row at init and (1, 1)
        after update (issue 21): a second compile, a failing scan, a checkpoint restored
        into init's shapes that no longer fit. Traced only (eval_shape)."""
        make, update_kwargs = PROJECTIONS[method]
        tx = make(norm=norm, row_axes=ROW_AXES[row_axes], mask=MASK if masked else None)
        state = jax.eval_shape(tx.init, ANCHOR)
        after = jax.eval_shape(
            lambda s: tx.update(_gradient(ANCHOR), s, ANCHOR, **update_kwargs)[1], state
        )
        _assert_same_state_types(self, after, state)

    @parameterized.parameters(ROW_PARAMS)
    def test_long_run_reaches_the_minimum(self, row):
        if row.minimum is None:
            self.skipTest(f"{row.name} does not move its radii toward the minimum")
        chex.assert_trees_all_close(
            _float32_run(row)["final"], row.minimum(), atol=row.params_tolerance, rtol=0
        )
        # ... and it started away from it: the check can fail.
        distance = max(
            float(jnp.max(jnp.abs(a - m)))
            for a, m in zip(jax.tree.leaves(ANCHOR), jax.tree.leaves(row.minimum()), strict=True)
        )
        self.assertGreater(distance, 100 * row.params_tolerance)

    @parameterized.parameters(ROW_PARAMS)
    def test_bfloat16_params_keep_their_dtype(self, row):
        state0, outputs = _variants(row)
        params, state, updates = outputs["bfloat16"]
        _assert_same_state_types(self, state, state0)
        for leaf in jax.tree.leaves((params, updates)):
            self.assertEqual(leaf.dtype, jnp.bfloat16)
        chex.assert_tree_all_finite(params)

    @parameterized.parameters(ROW_PARAMS)
    def test_schedule_injection_and_multisteps_equal_the_float_steps(self, row):
        outputs = _variants(row)[1]
        expected = _float32_run(row)["first"][0]
        chex.assert_trees_all_close(outputs["schedule"], expected, rtol=1e-5, atol=1e-6)
        chex.assert_trees_all_close(outputs["injection"], expected, rtol=1e-5, atol=1e-6)
        chex.assert_trees_all_close(outputs["accumulated"], outputs["large"], rtol=1e-5, atol=1e-6)

    @parameterized.parameters(ROW_PARAMS)
    def test_extra_arguments_reach_the_base(self, row):
        tx = row.make(LR)
        state = tx.init(ANCHOR)
        # Accepted (a trace: no compile)...
        jax.eval_shape(
            functools.partial(tx.update, **row.update_kwargs, marker=1.0),
            _gradient(ANCHOR),
            state,
            ANCHOR,
        )
        if row.wrap is None:
            return
        # ... and passed on to the base optimizer.
        seen = []

        def base_update(updates, state, params=None, **extra):
            seen.append(sorted(extra))
            return jax.tree.map(lambda g: -LR * g, updates), state

        base = optax.GradientTransformationExtraArgs(lambda _: optax.EmptyState(), base_update)
        tx = row.wrap(base)
        jax.eval_shape(
            functools.partial(tx.update, **row.update_kwargs, marker=1.0),
            _gradient(ANCHOR),
            tx.init(ANCHOR),
            ANCHOR,
        )
        self.assertTrue(seen)
        for extra in seen:
            self.assertIn("marker", extra)

    @parameterized.parameters(ROW_PARAMS)
    def test_tree_map_params_reaches_the_trees_like_the_params(self, row):
        tx = row.make(LR)
        state = tx.init(ANCHOR)
        paths = jax.tree_util.tree_map_with_path(lambda kp, _: ftp_jax.leaf_path(kp), ANCHOR)
        shapes = {path: np.shape(leaf) for path, leaf in _leaves_by_path()}
        mapped = []

        def mark(leaf, path):
            if isinstance(leaf, optax.MaskedNode):
                return leaf
            mapped.append(path)
            self.assertEqual(np.shape(leaf), shapes[path], f"{path} is not like the params")
            return "param"

        result = optax.tree_utils.tree_map_params(
            tx,
            mark,
            state,
            paths,
            transform_non_params=lambda _: "other",
            is_leaf=lambda x: isinstance(x, optax.MaskedNode),
        )
        if not row.params_like_state:  # every field goes to transform_non_params whole
            self.assertEqual(mapped, [])
            self.assertEqual(set(jax.tree.leaves(result)), {"other"})
            return
        self.assertTrue(mapped)  # the anchor, at least (the base's moments if it has any)
        self.assertIn("param", jax.tree.leaves(result))
        self.assertLessEqual(set(jax.tree.leaves(result)), {"param", "other"})

    @parameterized.parameters(ROW_PARAMS)
    def test_update_with_params_unlike_init_names_method_leaf_and_shapes(self, row):
        """Regression: JAX's raw broadcasting or pytree errors, naming nothing."""
        tx = row.make(LR)
        state = tx.init(ANCHOR)
        update = functools.partial(tx.update, **row.update_kwargs)
        wider = jax.tree.map(jnp.copy, ANCHOR)
        wider["body"]["kernel"] = jnp.ones((3, 3))
        with self.assertRaisesRegex(
            ValueError, rf"^{row.method}: .*'body/kernel'.*\(3, 3\).*\(3, 2\)"
        ):
            jax.eval_shape(update, wider, state, wider)
        fewer = {"body": {"kernel": ANCHOR["body"]["kernel"]}, "head": ANCHOR["head"]}
        with self.assertRaisesRegex(ValueError, rf"{row.method}.*body/bias"):
            jax.eval_shape(update, fewer, state, fewer)
        with self.assertRaisesRegex(
            ValueError, rf"^{row.method}: .*'body/kernel'.*\(3, 3\).*\(3, 2\)"
        ):
            jax.eval_shape(update, wider, state, ANCHOR)  # gradients unlike the params


if __name__ == "__main__":
    pytest.main([__file__])
