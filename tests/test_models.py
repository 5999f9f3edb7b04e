"""Tests for the paper-scale models (ftp_jax.models) and their row-axis rules.

Tiny versions with the paper models' structure run in seconds; the full-size
models are only built abstractly (``nnx.eval_shape``) to check their sizes.
The equivalence with PyTorch is in ``test_convert.py``.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from absl.testing import parameterized
from flax import nnx

import ftp_jax
from ftp_jax import convert, models
from ftp_jax.train.steps import cross_entropy, initial_train_state, make_train_step, split_model

IMAGE_SIZE = 64
NUM_CLASSES = 5


def build_tiny(kind: str, seed: int = 0, vit_layers: int = 2) -> nnx.Module:
    """A tiny model of ``kind`` with the paper model's structure (1 block per stage, width 8)."""
    rngs = nnx.Rngs(seed)
    if kind == "torchvision_resnet50":
        return models.ResNet(NUM_CLASSES, layers=(1, 1, 1, 1), width=8, rngs=rngs)
    if kind == "clip_resnet50":
        return models.CLIPResNet(
            NUM_CLASSES,
            layers=(1, 1, 1, 1),
            width=8,
            heads=4,
            output_dim=16,
            image_size=IMAGE_SIZE,
            rngs=rngs,
        )
    if kind == "clip_vit_b16":
        return models.VisionTransformer(
            NUM_CLASSES,
            image_size=IMAGE_SIZE,
            patch_size=8,
            width=32,
            layers=vit_layers,
            heads=2,
            output_dim=16,
            rngs=rngs,
        )
    raise ValueError(kind)


def tiny_model(kind: str, seed: int = 0, vit_layers: int = 2) -> nnx.Module:
    """:func:`build_tiny`, its variables drawn with numpy (fast: no per-shape XLA compile).

    Kernels get a standard deviation of ``1 / sqrt(fan_in)``, norm scales ``1 +
    N(0, 0.1)``, biases and running means ``N(0, 0.1)``, running variances
    ``U(0.5, 1.5)``: values that keep the activations of order one.
    """
    abstract = nnx.eval_shape(lambda: build_tiny(kind, seed, vit_layers))
    graphdef, state = nnx.split(abstract)
    rng = np.random.default_rng(seed)

    def draw(key_path, spec):
        name = ftp_jax.leaf_path(key_path).rsplit("/", 1)[-1]
        shape = spec.shape
        if name == "var":
            value = rng.uniform(0.5, 1.5, shape)
        elif name == "scale":
            value = 1.0 + 0.1 * rng.normal(size=shape)
        elif len(shape) <= 1:
            value = 0.1 * rng.normal(size=shape)
        else:
            value = rng.normal(size=shape) / np.sqrt(np.prod(shape[:-1]))
        return jnp.asarray(value, spec.dtype)

    state = jax.tree_util.tree_map_with_path(draw, state)
    return nnx.merge(graphdef, state)


@nnx.jit
def forward(model: nnx.Module, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(logits, features)``, jitted once per model structure for the whole test session."""
    return model(x), model.features(x)


def images(n: int = 2, seed: int = 0) -> np.ndarray:
    return (
        np.random.default_rng(seed).normal(size=(n, IMAGE_SIZE, IMAGE_SIZE, 3)).astype(np.float32)
    )


KINDS = [
    ("resnet", "torchvision_resnet50"),
    ("clip_resnet", "clip_resnet50"),
    ("vit", "clip_vit_b16"),
]

# Full-size models: parameter counts with a 1000-class head.
# torchvision resnet50: 25,557,032; CLIP RN50 visual 38,316,896 + head 1,025,000;
# CLIP ViT-B/16 visual 86,192,640 + head 513,000.
FULL_SIZE = [
    ("resnet50", models.resnet50, 25_557_032, 2048),
    ("clip_resnet50", models.clip_resnet50, 38_316_896 + 1_025_000, 1024),
    ("clip_vit_b16", models.clip_vit_b16, 86_192_640 + 513_000, 512),
]


def param_count(model: nnx.Module) -> int:
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nnx.state(model, nnx.Param)))


class ModelTest(parameterized.TestCase):
    @parameterized.named_parameters(*KINDS)
    def test_logits_and_features(self, kind):
        model = tiny_model(kind)
        model.eval()
        logits, features = forward(model, jnp.asarray(images()))
        self.assertEqual(logits.shape, (2, NUM_CLASSES))
        self.assertEqual(features.shape, (2, model.num_features))
        self.assertIsInstance(model.head, nnx.Linear)
        np.testing.assert_allclose(logits, model.head(features), rtol=1e-6, atol=1e-6)
        self.assertTrue(np.all(np.isfinite(logits)))

    @parameterized.named_parameters(*FULL_SIZE)
    def test_full_size_parameter_count(self, build, count, features):
        model = nnx.eval_shape(lambda: build(1000, rngs=nnx.Rngs(0)))
        self.assertEqual(param_count(model), count)
        self.assertEqual(model.num_features, features)
        self.assertEqual(model.head.kernel.shape, (features, 1000))

    def test_resnet_batch_norm_statistics(self):
        model = tiny_model("torchvision_resnet50")
        x = jnp.asarray(images())
        before = np.asarray(model.bn1.mean[...])
        model.eval()
        forward(model, x)
        np.testing.assert_array_equal(model.bn1.mean[...], before)  # eval: running stats used
        model.train()
        forward(model, x)
        self.assertFalse(np.allclose(model.bn1.mean[...], before))  # train: stats updated
        _, _, rest = nnx.split(model, nnx.Param, ...)
        self.assertIn("layer1/0/downsample/1/var", ftp_jax.leaf_paths(rest))

    def test_paths_follow_pytorch_names(self):
        resnet = ftp_jax.leaf_paths(nnx.state(tiny_model("torchvision_resnet50"), nnx.Param))
        self.assertIn("layer2/0/downsample/0/kernel", resnet)
        clip = ftp_jax.leaf_paths(nnx.state(tiny_model("clip_resnet50"), nnx.Param))
        self.assertIn("attnpool/positional_embedding", clip)
        self.assertIn("attnpool/c_proj/kernel", clip)
        vit = ftp_jax.leaf_paths(nnx.state(tiny_model("clip_vit_b16"), nnx.Param))
        for path in [
            "class_embedding",
            "positional_embedding",
            "proj",
            "transformer/resblocks/1/attn/in_proj/kernel",
            "transformer/resblocks/1/mlp/c_fc/kernel",
        ]:
            self.assertIn(path, vit)

    def test_wrong_image_size_is_an_error(self):
        small = jnp.zeros((1, 32, 32, 3))
        with self.assertRaisesRegex(ValueError, r"built for 64x64"):
            forward(tiny_model("clip_vit_b16"), small)
        with self.assertRaisesRegex(ValueError, r"the image size must be 64"):
            forward(tiny_model("clip_resnet50"), small)
        with self.assertRaisesRegex(ValueError, r"multiple of 32"):
            nnx.eval_shape(lambda: models.CLIPResNet(image_size=100, rngs=nnx.Rngs(0)))
        with self.assertRaisesRegex(ValueError, r"must divide"):
            nnx.eval_shape(lambda: models.VisionTransformer(width=30, heads=4, rngs=nnx.Rngs(0)))

    def test_jitted_ftp_train_step(self):
        # The training loop's jitted step: FTP with the CLIP row rules, the new head free.
        model = tiny_model("clip_vit_b16", vit_layers=1)
        graphdef, params, model_state = split_model(model)
        mask = ftp_jax.path_rules([(r"head/.*", False), (r".*", True)], name="mask")
        tx = ftp_jax.ftp(optax.sgd(1e-2, momentum=0.9), mask=mask, row_axes=models.clip_row_axes)
        state = initial_train_state(params, model_state, tx)
        batch = {"image": jnp.asarray(images()), "label": jnp.asarray([0, 3])}
        new_state, metrics = jax.jit(make_train_step(graphdef, tx))(state, batch)
        self.assertTrue(bool(metrics["finite"]))
        radii = ftp_jax.ftp_radii(new_state.opt_state)
        self.assertIsNone(radii["head"]["kernel"])
        self.assertEqual(radii["positional_embedding"].shape, ())
        # Step 1: the radius is 1e-8 (the reference's start), so constrained rows stay put
        # and the excluded head moves as plain SGD.
        self.assertLess(float(np.max(np.abs(new_state.params["proj"] - params["proj"]))), 1e-7)
        self.assertFalse(np.allclose(new_state.params["head"]["kernel"], params["head"]["kernel"]))


def all_row_norms(arrays: list[np.ndarray], kept_axes: list[tuple[int, ...]]) -> list[np.ndarray]:
    """``ftp_jax.row_norms`` of every array, raveled (one jitted program for all of them)."""
    norms = jax.jit(
        lambda xs: [ftp_jax.row_norms(x, k) for x, k in zip(xs, kept_axes, strict=True)]
    )
    return [np.ravel(n) for n in norms([jnp.asarray(a) for a in arrays])]


def assert_row_norms_match(test, model, row_axes, torch_arrays, keys):
    """Every Param leaf's FTP row norms equal the reference's on the PyTorch tensor, row by row.

    The reference keeps axis 0 of the PyTorch tensor (``ftp_jax.torch_row_axes``);
    the Flax leaf keeps the axes of ``row_axes``. Both keep the kept axes at full
    size and the others at 1, so both ravel to one norm per row (output channel,
    output unit, position, or input unit of CLIP's ``proj``) in the same order.
    """
    flat = jax.tree_util.tree_flatten_with_path(nnx.state(model, nnx.Param))[0]
    paths = [ftp_jax.leaf_path(key_path) for key_path, _ in flat]
    flax_arrays = [leaf for _, leaf in flat]
    torch_leaves = [torch_arrays[keys[path]] for path in paths]
    flax_norms = all_row_norms(
        flax_arrays, [row_axes(p, x) for p, x in zip(paths, flax_arrays, strict=True)]
    )
    torch_norms = all_row_norms(
        torch_leaves,
        [ftp_jax.torch_row_axes(p, x) for p, x in zip(paths, torch_leaves, strict=True)],
    )
    for path, ours, reference in zip(paths, flax_norms, torch_norms, strict=True):
        test.assertEqual(ours.shape, reference.shape, msg=path)
        np.testing.assert_allclose(ours, reference, rtol=1e-5, atol=1e-7, err_msg=path)


class RowAxesTest(parameterized.TestCase):
    @parameterized.named_parameters(*KINDS)
    def test_row_norms_equal_the_references_in_pytorch_layout(self, kind):
        model = tiny_model(kind)
        torch_arrays = convert.to_torch_state_dict(model)
        keys = convert.torch_key_map(model)
        assert_row_norms_match(self, model, models.ROW_AXES[kind], torch_arrays, keys)

    def test_clip_rules(self):
        vit = nnx.state(tiny_model("clip_vit_b16"), nnx.Param)
        axes = models.clip_row_axes(vit)
        self.assertEqual(axes["positional_embedding"], (0,))
        self.assertEqual(axes["proj"], (0,))  # (width, out) used as x @ proj: torch axis 0
        self.assertEqual(axes["class_embedding"], ())
        self.assertEqual(axes["conv1"]["kernel"], (3,))
        block = axes["transformer"]["resblocks"][0]
        self.assertEqual(block["attn"]["in_proj"]["kernel"], (1,))
        self.assertEqual(block["attn"]["in_proj"]["bias"], ())
        self.assertEqual(block["ln_1"]["scale"], ())
        clip = models.clip_row_axes(nnx.state(tiny_model("clip_resnet50"), nnx.Param))
        self.assertEqual(clip["attnpool"]["positional_embedding"], (0,))
        self.assertEqual(clip["attnpool"]["q_proj"]["kernel"], (1,))
        # The default rule would keep the last axis of the positional embedding.
        self.assertEqual(ftp_jax.flax_row_axes(vit)["positional_embedding"], (1,))

    def test_rules_compose_with_path_rules(self):
        params = nnx.state(tiny_model("clip_vit_b16"), nnx.Param)
        rules = ftp_jax.path_rules(
            [(r"head/.*", ftp_jax.flax_row_axes), (r".*", models.clip_row_axes)], name="row_axes"
        )
        self.assertEqual(rules(params)["proj"], (0,))


if __name__ == "__main__":
    pytest.main([__file__])


def _primitive_inputs(fn, *args, names: tuple[str, ...]) -> list[tuple[str, list]]:
    """``(primitive, input dtypes)`` of every equation named in ``names`` in ``fn``'s jaxpr,
    sub-jaxprs (pjit, custom_jvp) included."""
    found = []

    def walk(jaxpr):
        for eqn in jaxpr.eqns:
            if eqn.primitive.name in names:
                found.append((eqn.primitive.name, [v.aval.dtype for v in eqn.invars]))
            for sub in jax.extend.core.jaxprs_in_params(eqn.params):
                walk(sub)

    walk(jax.make_jaxpr(fn)(*args).jaxpr)
    return found


def _pure_forward(model: nnx.Module, x: jax.Array, *, train: bool):
    graphdef, state = nnx.split(model)

    def run(state, x):
        model = nnx.merge(graphdef, state)
        model.train() if train else model.eval()
        return model(x)

    return run, state


class MixedPrecisionTest(parameterized.TestCase):
    """``models.with_compute_dtype``: bfloat16 activations, float32 params and statistics."""

    @parameterized.named_parameters(*KINDS)
    def test_bfloat16_activations_float32_params(self, kind):
        model = tiny_model(kind)
        model.eval()
        low = models.with_compute_dtype(model, "bfloat16")
        x = jnp.asarray(images())
        run, state = _pure_forward(low, x, train=False)
        found = _primitive_inputs(
            run, state, x, names=("conv_general_dilated", "dot_general", "exp")
        )
        # Every convolution and matrix product runs on bfloat16 operands.
        products = [(name, dtypes) for name, dtypes in found if name != "exp"]
        self.assertNotEmpty(products)
        for name, dtypes in products:
            self.assertEqual(set(dtypes), {jnp.dtype(jnp.bfloat16)}, name)
        # Softmaxes (the attention's; the only exp in these models) run in float32.
        exps = [dtypes for name, dtypes in found if name == "exp"]
        if kind != "torchvision_resnet50":
            self.assertNotEmpty(exps)
        for dtypes in exps:
            self.assertEqual(dtypes, [jnp.dtype(jnp.float32)])
        logits = jax.jit(run)(state, x)
        self.assertEqual(logits.dtype, jnp.bfloat16)
        # The params stay float32, and the float32 model is left as it was.
        for leaf in jax.tree.leaves(nnx.state(low, nnx.Param)):
            self.assertEqual(leaf.dtype, jnp.float32)
        self.assertIsNone(model.head.dtype)
        reference, _ = forward(model, x)
        # bfloat16 keeps 8 bits of mantissa: logits of order 1 agree to a few 1e-2.
        np.testing.assert_allclose(logits.astype(jnp.float32), reference, rtol=0.1, atol=0.1)

    def test_batch_norm_statistics_and_normalization_stay_float32(self):
        # A ResNet bottleneck (convolutions and batch norms), trained one forward pass.
        block = models.resnet.Bottleneck(8, 2, rngs=nnx.Rngs(0))  # 8 -> 2 -> 8 channels
        low = models.with_compute_dtype(block, "bfloat16")
        x = jnp.asarray(images()[..., :1].repeat(8, -1)[:, :8, :8])  # (2, 8, 8, 8)
        for module in (block, low):
            module.train()
            nnx.jit(lambda m, x: m(x))(module, x)
        for name in ("bn1", "bn3"):
            layer, reference = getattr(low, name), getattr(block, name)
            self.assertEqual(layer.dtype, jnp.bfloat16)
            self.assertEqual(layer.mean[...].dtype, jnp.float32)
            self.assertEqual(layer.var[...].dtype, jnp.float32)
            np.testing.assert_allclose(layer.mean[...], reference.mean[...], rtol=0.05, atol=0.01)
            np.testing.assert_allclose(layer.var[...], reference.var[...], rtol=0.05, atol=0.01)
        # Eval mode: the float32 running statistics normalize a bfloat16 input in float32;
        # only the output is rounded to bfloat16.
        layer = low.bn3
        layer.eval()
        exact = models.resnet.batch_norm(8, rngs=nnx.Rngs(0))
        nnx.update(exact, nnx.state(layer))
        exact.eval()
        features = x.astype(jnp.bfloat16)
        out = layer(features)
        self.assertEqual(out.dtype, jnp.bfloat16)
        np.testing.assert_array_equal(out, exact(features.astype(jnp.float32)).astype(jnp.bfloat16))

    @parameterized.named_parameters(*KINDS)
    def test_float32_forward_has_no_casts(self, kind):
        # The casts that mixed precision adds (softmax, embeddings, logits) are no-ops in
        # float32: the float32 programs, hence their numbers, are those of before.
        model = tiny_model(kind, vit_layers=1)
        x = jnp.asarray(images())
        for train in (True, False):
            run, state = _pure_forward(model, x, train=train)
            self.assertEmpty(_primitive_inputs(run, state, x, names=("convert_element_type",)))

    def test_float32_batch_norm_is_flaxs(self):
        # float32_statistics changes nothing in float32: the same numbers, bit for bit.
        ours = models.resnet.batch_norm(8, rngs=nnx.Rngs(0))
        flax_default = nnx.BatchNorm(
            8, momentum=0.9, epsilon=1e-5, use_fast_variance=False, rngs=nnx.Rngs(0)
        )
        x = jnp.asarray(np.random.default_rng(1).normal(size=(4, 3, 3, 8)), jnp.float32)
        for train in (True, False):
            ours.train() if train else ours.eval()
            flax_default.train() if train else flax_default.eval()
            np.testing.assert_array_equal(ours(x), flax_default(x))
            np.testing.assert_array_equal(ours.mean[...], flax_default.mean[...])
            np.testing.assert_array_equal(ours.var[...], flax_default.var[...])

    def test_float32_is_the_model_itself_and_names_are_checked(self):
        model = tiny_model("clip_vit_b16", vit_layers=1)
        self.assertIs(models.with_compute_dtype(model, "float32"), model)
        self.assertIs(models.with_compute_dtype(model, jnp.float32), model)
        self.assertEqual(models.with_compute_dtype(model, jnp.bfloat16).conv1.dtype, jnp.bfloat16)
        with self.assertRaisesRegex(ValueError, r"compute_dtype 'int8'.*'float32', 'bfloat16'"):
            models.with_compute_dtype(model, "int8")

    def test_bfloat16_ftp_step_keeps_float32_state(self):
        # FTP's anchor, radii and displacement, the momentum and the params stay float32
        # after bfloat16 steps; the loss is float32 and close to the float32 model's. (The
        # batch statistics: test_train's MixedPrecisionLoopTest.)
        kind = "clip_vit_b16"
        model = tiny_model(kind, vit_layers=1)
        graphdef, params, model_state = split_model(models.with_compute_dtype(model, "bfloat16"))
        mask = ftp_jax.path_rules([(r"head/.*", False), (r".*", True)], name="mask")
        tx = ftp_jax.ftp(optax.sgd(1e-2, momentum=0.9), mask=mask, row_axes=models.ROW_AXES[kind])
        state = initial_train_state(params, model_state, tx)
        batch = {"image": jnp.asarray(images()), "label": jnp.asarray([0, 3])}
        step = jax.jit(make_train_step(graphdef, tx))
        state, first = step(state, batch)
        state, metrics = step(state, batch)
        self.assertTrue(bool(metrics["finite"]))
        self.assertEqual(first["loss"].dtype, jnp.float32)
        ftp_state = state.opt_state
        float32_trees = {
            "params": state.params,
            "anchor": ftp_state.anchor,
            "radius": ftp_jax.radii(state.opt_state),
            "prev_displacement": ftp_state.prev_displacement,
            "momentum": ftp_state.base_state,
        }
        for name, tree in float32_trees.items():
            leaves = [x for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.floating)]
            self.assertNotEmpty(leaves, name)
            for leaf in leaves:
                self.assertEqual(leaf.dtype, jnp.float32, name)
        self.assertGreater(float(jnp.max(ftp_jax.radii(state.opt_state)["proj"])), 0.0)
        # The first step's loss is the loss at the initial params: the float32 model's,
        # up to bfloat16's rounding (losses of order 1-2, 5 classes).
        reference = cross_entropy(jax.jit(lambda m, x: m(x))(model, batch["image"]), batch["label"])
        np.testing.assert_allclose(first["loss"], reference, rtol=0.02)
