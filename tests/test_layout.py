"""Tests for ftp_jax._layout and ftp_jax._ftp_layout: FTP's state layouts (issue 24).

Both layouts against the per-leaf code (``ftp_leaf_update`` over ``map_leaves``) on a
mixed tree, the reference trajectories in the bucketed layout, array counts that do
not grow with the number of same-shape leaves, stable state shapes, read-outs,
sharding without all-gathers, checkpoints and the old layout's error.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl.testing import parameterized

import ftp_jax
from ftp_jax import _layout
from ftp_jax._ftp import ftp_leaf_update
from ftp_jax._skeleton import anchor_tree, constrained_tree, leaf_plans, map_leaves, radius_dtype
from tests import golden

LAYOUTS = ("leaves", "buckets")


def _mixed_params(dtype=jnp.float32):
    """Same-shape leaves (two buckets of 3), one-norm and per-row leaves, an excluded
    head, a float64 leaf when x64 is on."""
    rng = np.random.default_rng(0)

    def normal(*shape, dtype=dtype):
        return jnp.asarray(rng.normal(size=shape), dtype)

    params = {
        "blocks": [{"kernel": normal(3, 3, 2, 4), "bias": normal(4)} for _ in range(3)],
        "dense": {"kernel": normal(4, 5)},
        "embed": normal(6, 4),
        "head": {"kernel": normal(5, 2), "bias": normal(2)},
    }
    return params


MASK = ftp_jax.path_rules([(r"head/.*", False), (r".*", True)], name="mask")
ROW_AXES = ftp_jax.path_rules([(r"embed", (0,)), (r".*", ftp_jax.flax_row_axes)], name="row_axes")


def _per_leaf_ftp(base, *, norm="mars", mask=MASK, row_axes=ROW_AXES):
    """FTP as it was before issue 24: ``ftp_leaf_update`` on every leaf, scalars per leaf."""
    from ftp_jax._projection import row_norms_shape

    def init(params):
        plans = leaf_plans(params, mask, row_axes)
        radius = constrained_tree(params, plans, lambda p, _: jnp.zeros((), radius_dtype(p)))
        return (
            jnp.zeros([], jnp.int32),
            anchor_tree(params, None, plans),
            radius,
            radius,
            radius,
            constrained_tree(params, plans, lambda p, _: jnp.zeros_like(p)),
            constrained_tree(
                params,
                plans,
                lambda p, plan: jnp.zeros(
                    row_norms_shape(np.shape(p), plan.kept_axes, norm), radius_dtype(p)
                ),
            ),
            base.init(params),
        )

    def update(grads, state, params):
        base_updates, base_state = base.update(grads, state[-1], params)
        count = optax.safe_int32_increment(state[0])
        step = functools.partial(
            ftp_leaf_update,
            norm=norm,
            k=1.0,
            step=count.astype(jnp.float32),
            first_step=count == 1,
            learning_rate=1e-2,
            b1=0.9,
            b2=0.999,
        )
        new_updates, *buffers = map_leaves(
            step,
            leaf_plans(params, mask, row_axes),
            params,
            (grads, base_updates),
            state[1:-1],
            excluded_fn=lambda plan, p, g, u, *stored: (u, *stored),
            method="FTP",
        )
        return new_updates, (count, *buffers, base_state)

    return optax.GradientTransformation(init, update)


def _trajectory(tx, params, steps, radii_of):
    """Params and radii after ``steps`` jitted updates with deterministic gradients."""

    def step(carry, t):
        theta, state = carry
        grads = jax.tree_util.tree_map(
            lambda x: jnp.sin(3.0 * x + t.astype(x.dtype)) - 0.3 * x, theta
        )
        updates, state = tx.update(grads, state, theta)
        theta = optax.apply_updates(theta, updates)
        return (theta, state), (theta, radii_of(state))

    carry = (params, tx.init(params))
    (_, state), (thetas, radii) = jax.jit(lambda c: jax.lax.scan(step, c, jnp.arange(steps)))(carry)
    return thetas, radii, state


def _per_leaf_radii(state):
    return jax.tree_util.tree_map(
        lambda r: None if isinstance(r, optax.MaskedNode) else r,
        state[2],
        is_leaf=lambda x: isinstance(x, optax.MaskedNode),
    )


def _close_to_leaf_scale(actual, expected, rtol):
    """|actual - expected| <= rtol * max|expected| (per leaf): a few ulp of the leaf."""

    def check(a, e):
        if a is None or e is None:
            assert a is None and e is None
            return
        scale = float(np.max(np.abs(e))) or 1.0
        np.testing.assert_allclose(np.asarray(a), np.asarray(e), rtol=0, atol=rtol * scale)

    jax.tree_util.tree_map(check, actual, expected, is_leaf=lambda x: x is None)


def _mixed_close(actual, expected, dtype=None):
    if actual is None or expected is None:
        assert actual is None and expected is None
        return
    dtype = jnp.dtype(expected.dtype if dtype is None else dtype)
    tolerance = {"float64": 1e-14, "float32": 1e-6, "bfloat16": 1e-2}[dtype.name]
    _close_to_leaf_scale(actual.astype(jnp.float64), expected.astype(jnp.float64), tolerance)


class AgreementTest(parameterized.TestCase):
    """Each layout against the per-leaf code, 12 steps on a mixed tree."""

    @parameterized.parameters(
        ("leaves", "mars"), ("buckets", "mars"), ("buckets", "l2"), ("buckets+base", "mars")
    )
    def test_layout_matches_per_leaf_code(self, layout, norm):
        params = _mixed_params()
        base = optax.adamw(3e-2, weight_decay=1e-2)
        new = ftp_jax.ftp(
            base,
            mask=MASK,
            row_axes=ROW_AXES,
            norm=norm,
            layout=layout.split("+")[0],
            bucket_base=layout.endswith("+base"),  # adamw is element-wise: exact
        )
        old = _per_leaf_ftp(base, norm=norm)
        thetas, radii, _ = _trajectory(new, params, 12, ftp_jax.ftp_radii)
        old_thetas, old_radii, _ = _trajectory(old, params, 12, _per_leaf_radii)
        # float32: the same operations, the radius Adam on vectors, stacked reductions in
        # "buckets": a few ulp of each leaf's scale after 12 steps.
        _close_to_leaf_scale(thetas, old_thetas, 3e-6)
        _close_to_leaf_scale(radii, old_radii, 3e-6)
        self.assertIsNone(radii["head"]["kernel"])
        if layout == "buckets+base":  # the base state holds one moment array per bucket
            moments = jax.eval_shape(new.init, params).base_state[0].mu
            self.assertEqual(
                [m.shape for m in moments[0]], [(3, 4), (3, 3, 3, 2, 4), (1, 4, 5), (1, 6, 4)]
            )
            self.assertEqual([m.shape for m in moments[1]], [(2,), (5, 2)])  # excluded head

    def test_float64_and_mixed_dtypes(self):
        with jax.enable_x64(True):
            params = _mixed_params(jnp.float64)
            params["dense"]["kernel"] = params["dense"]["kernel"].astype(jnp.float32)
            params["blocks"][1]["bias"] = params["blocks"][1]["bias"].astype(jnp.bfloat16)
            base = optax.sgd(1e-1, momentum=0.9)
            old_thetas, old_radii, _ = _trajectory(_per_leaf_ftp(base), params, 8, _per_leaf_radii)
            for layout in LAYOUTS:
                tx = ftp_jax.ftp(base, mask=MASK, row_axes=ROW_AXES, layout=layout)
                thetas, radii, state = _trajectory(tx, params, 8, ftp_jax.ftp_radii)
                # One vector per radius dtype: float64, and float32 (float32 and bfloat16).
                self.assertEqual(
                    sorted(str(v.dtype) for v in state.radius.vectors), ["float32", "float64"]
                )
                self.assertEqual(radii["blocks"][1]["bias"].dtype, jnp.float32)
                self.assertEqual(radii["embed"].dtype, jnp.float64)
                # float64 leaves within 1e-14 of their scale; bfloat16's rounding may
                # move by one of its ulps.
                jax.tree_util.tree_map(_mixed_close, thetas, old_thetas)
                # Radii to the tolerance of their leaf's dtype (XLA may keep a bfloat16
                # fusion's intermediates in float32: the fusions' boundaries round).
                jax.tree_util.tree_map(
                    lambda r, e, p: _mixed_close(r, e, p.dtype),
                    radii,
                    old_radii,
                    params,
                    is_leaf=lambda x: x is None,
                )


class GoldenBucketsTest(parameterized.TestCase):
    """The reference trajectories with ``layout="buckets"`` (``"leaves"``, the CPU's
    default, runs in tests/test_ftp.py), at the golden tests' tolerances."""

    @parameterized.product(config=golden.FTP_CONFIGS, precision=("float64", "float32"))
    def test_matches_reference(self, config, precision):
        layout = "torch" if precision == "float64" else "flax"
        with jax.enable_x64(precision == "float64"):
            problem = golden.FTPProblem(precision, layout)
            theta0 = problem.tree("problem/w0")
            tx = problem.optimizer(config, layout="buckets")
            thetas, radii = golden.run_trajectory(tx, theta0, problem.gradient_fn(), problem.steps)
            radius_by_path = {
                ftp_jax.leaf_path(kp): r for kp, r in jax.tree_util.tree_flatten_with_path(radii)[0]
            }
            expected = problem.reference_params(config)
        expected_radii = problem.reference_radii(config)
        rtol = 1e-9 if precision == "float64" else 1e-5

        def leaf_close(actual, wanted, err_msg=""):
            wanted = np.asarray(wanted)
            scale = np.max(np.abs(wanted))
            atol = 0.0 if precision == "float64" else rtol * scale
            np.testing.assert_allclose(
                np.asarray(actual), wanted, rtol=rtol, atol=atol, err_msg=err_msg
            )

        jax.tree_util.tree_map(leaf_close, thetas, expected)
        self.assertEqual(
            sorted(radius_by_path), sorted(problem.path(n) for n in problem.constrained)
        )
        for column, name in enumerate(problem.constrained):
            leaf_close(radius_by_path[problem.path(name)], expected_radii[:, column], name)


def _resnet_like(blocks: int):
    """``blocks`` identical residual blocks: the leaves grow with depth, the shapes do not."""
    rng = np.random.default_rng(1)
    params = {"stem": jnp.asarray(rng.normal(size=(3, 3, 3, 8)), jnp.float32)}
    for b in range(blocks):
        params[f"block{b}"] = {
            "conv": jnp.asarray(rng.normal(size=(3, 3, 8, 8)), jnp.float32),
            "scale": jnp.ones(8, jnp.float32),
            "bias": jnp.zeros(8, jnp.float32),
        }
    return params


class CountTest(parameterized.TestCase):
    def test_state_arrays(self):
        for blocks in (2, 5):
            params = _resnet_like(blocks)
            n_leaves = 1 + 3 * blocks
            base_arrays = len(jax.tree_util.tree_leaves(optax.adam(1.0).init(params)))
            counts = {
                layout: len(
                    jax.tree_util.tree_leaves(
                        jax.eval_shape(ftp_jax.ftp(optax.adam(1.0), layout=layout).init, params)
                    )
                )
                - base_arrays
                for layout in LAYOUTS
            }
            # leaves: count, (anchor, displacement, inverse norms) per leaf, 3 vectors.
            self.assertEqual(counts["leaves"], 1 + 3 * n_leaves + 3)
            # buckets: stem, conv, and the 1-D leaves (scale and bias share a bucket):
            # 3 buckets whatever the depth.
            self.assertEqual(counts["buckets"], 1 + 3 * 3 + 3)

    def test_auto_is_leaves_on_the_cpu(self):
        params = _resnet_like(2)
        state = ftp_jax.ftp(optax.sgd(1.0)).init(params)
        self.assertEqual(state.radius.layout.kind, "leaves")
        self.assertEqual(_layout.default_layout("gpu"), "buckets")
        self.assertEqual(_layout.default_layout("tpu"), "buckets")
        self.assertEqual(_layout.default_layout("cpu"), "leaves")

    def test_unknown_layout(self):
        with self.assertRaisesRegex(ValueError, r"ftp: `layout` must be one of"):
            ftp_jax.ftp(optax.sgd(1.0), layout="stacked")


class StateTest(parameterized.TestCase):
    @parameterized.product(layout=LAYOUTS, norm=("mars", "l2"))
    def test_shapes_stable_across_updates(self, layout, norm):
        params = _mixed_params()
        tx = ftp_jax.ftp(optax.adamw(1e-2), mask=MASK, row_axes=ROW_AXES, norm=norm, layout=layout)
        state = jax.eval_shape(tx.init, params)
        _, after = jax.eval_shape(tx.update, params, state, params)
        self.assertEqual(jax.tree_util.tree_structure(after), jax.tree_util.tree_structure(state))
        jax.tree_util.tree_map(
            lambda a, b: self.assertEqual((a.shape, a.dtype), (b.shape, b.dtype)), after, state
        )

    @parameterized.parameters(*LAYOUTS)
    def test_read_outs_are_trees_like_the_params(self, layout):
        params = _mixed_params()
        tx = ftp_jax.ftp(optax.sgd(1e-1), mask=MASK, row_axes=ROW_AXES, layout=layout)
        state = tx.init(params)
        _, state = tx.update(params, state, params)
        radii = ftp_jax.ftp_radii(state)
        self.assertEqual(
            jax.tree_util.tree_structure(radii, is_leaf=lambda x: x is None),
            jax.tree_util.tree_structure(
                jax.tree_util.tree_map(lambda _: 0, params), is_leaf=lambda x: x is None
            ),
        )
        self.assertIsNone(radii["head"]["bias"])
        self.assertEqual(float(radii["embed"]), np.float32(1e-8))  # step 1's radius
        anchor = state.anchor.tree() if layout == "buckets" else state.anchor
        np.testing.assert_array_equal(anchor["blocks"][2]["kernel"], params["blocks"][2]["kernel"])
        self.assertIsInstance(anchor["head"]["kernel"], optax.MaskedNode)
        self.assertIs(radii, radii)  # a plain tree (no params needed)
        self.assertEqual(ftp_jax.radii(state).keys(), radii.keys())

    def test_old_layout_state_is_refused(self):
        params = _mixed_params()
        tx = ftp_jax.ftp(optax.sgd(1e-1), mask=MASK, row_axes=ROW_AXES, layout="leaves")
        state = tx.init(params)
        per_leaf = state.radius.tree()  # the radii as the old layout held them
        old = state._replace(radius=per_leaf, radius_mu=per_leaf, radius_nu=per_leaf)
        with self.assertRaisesRegex(ValueError, r"older ftp_jax .* old checkpoint"):
            tx.update(params, old, params)

    def test_checkpoint_round_trip(self):
        import tempfile

        import orbax.checkpoint as ocp

        params = _mixed_params()
        tx = ftp_jax.ftp(optax.adamw(1e-2), mask=MASK, row_axes=ROW_AXES, layout="buckets")
        state = tx.init(params)
        _, state = tx.update(params, state, params)
        with tempfile.TemporaryDirectory() as directory:
            checkpointer = ocp.StandardCheckpointer()
            checkpointer.save(f"{directory}/state", state)
            checkpointer.wait_until_finished()
            abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, state)
            restored = checkpointer.restore(f"{directory}/state", abstract)
            checkpointer.close()
        self.assertEqual(
            jax.tree_util.tree_structure(restored), jax.tree_util.tree_structure(state)
        )
        jax.tree_util.tree_map(np.testing.assert_array_equal, restored, state)


class ShardingTest(parameterized.TestCase):
    @parameterized.parameters(*LAYOUTS)
    def test_sharded_update_has_no_all_gather(self, layout):
        if jax.device_count() < 8:
            self.skipTest("needs 8 devices (XLA_FLAGS set by conftest)")
        mesh = jax.make_mesh((8,), ("data",))
        P = jax.sharding.PartitionSpec
        params = _resnet_like(3)

        def spec(x):  # split the output channels (the rows), as a ZeRO-style placement
            return P(*([None] * (x.ndim - 1)), "data")

        params = jax.tree_util.tree_map(
            lambda x: jax.device_put(x, jax.sharding.NamedSharding(mesh, spec(x))), params
        )
        tx = ftp_jax.ftp(optax.adamw(1e-2), layout=layout)
        state = tx.init(params)

        def step(params, state, grads):
            updates, state = tx.update(grads, state, params)
            return optax.apply_updates(params, updates), state

        compiled = jax.jit(step).lower(params, state, params).compile()
        hlo = compiled.as_text()
        self.assertNotIn("all-gather", hlo)
        new_params, new_state = compiled(params, state, params)
        kernel = new_params["block1"]["conv"]
        self.assertEqual(kernel.sharding.spec, spec(kernel))
        if layout == "buckets":
            conv_bucket = [a for a in new_state.anchor.arrays if a.shape == (3, 3, 3, 8, 8)]
            self.assertLen(conv_bucket, 1)
            self.assertEqual(conv_bucket[0].sharding.spec, P(None, None, None, None, "data"))
