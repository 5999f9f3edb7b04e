"""Tests for the converter's HF CLIP names, sharded checkpoints and positional-embedding resampling.

- HuggingFace ``transformers`` CLIP checkpoints: tiny ``CLIPVisionModelWithProjection``,
  ``CLIPModel`` and ``CLIPVisionModel`` with random weights, written with
  ``save_pretrained`` (safetensors, sharded or not), loaded into a tiny
  :class:`~ftp_jax.models.VisionTransformer` and compared with the transformers
  model's own image embeddings (skipped without transformers); the renaming
  itself is also tested without transformers, on an HF-named state dict built
  from a Flax model.
- Sharded checkpoints (``*.index.json``) and ``save_pretrained`` folders, sharded
  here with numpy.
- Positional embeddings of another grid: bit-exact copy on the same grid; the
  resampling against ``torch.nn.functional.interpolate(mode="bicubic",
  align_corners=False)`` with and without ``antialias`` (skipped without torch)
  and against ``jax.image.resize``; models built at another image size load and run.

Tolerances: the numpy resampling (float64 weights and sums, rounded to float32
once) agrees with torch's float32 ``interpolate`` to float32 rounding: at most
4.4e-6 absolute on unit-variance grids (asserted at 2e-5). Features agree with
transformers' to 7e-7 absolute at a scale of 2.5 (asserted at 1e-4 of the scale,
as tests/test_convert.py does against its references); the two bicubic filters
differ by 1.6e-3 to 6e-3 on those features, so the comparison with
transformers' ``interpolate_pos_encoding`` tells them apart.
"""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import ftp_jax
from ftp_jax import convert, models
from ftp_jax.convert import _resize
from tests.test_models import IMAGE_SIZE, NUM_CLASSES, forward, images, tiny_model

PATCH, WIDTH, LAYERS, HEADS, OUTPUT_DIM = 8, 32, 2, 2, 16  # tests.test_models' tiny ViT


def numpy_initialized(build, seed: int = 0):
    """``build()``'s model with variables drawn by numpy, as ``tests.test_models.tiny_model``.

    Fast: no per-shape XLA compile of the initializers.
    """
    graphdef, state = nnx.split(nnx.eval_shape(build))
    rng = np.random.default_rng(seed)

    def draw(key_path, spec):
        name = ftp_jax.leaf_path(key_path).rsplit("/", 1)[-1]
        if name == "var":
            value = rng.uniform(0.5, 1.5, spec.shape)
        elif name == "scale":
            value = 1.0 + 0.1 * rng.normal(size=spec.shape)
        elif len(spec.shape) <= 1:
            value = 0.1 * rng.normal(size=spec.shape)
        else:
            value = rng.normal(size=spec.shape) / np.sqrt(np.prod(spec.shape[:-1]))
        return jnp.asarray(value, spec.dtype)

    return nnx.merge(graphdef, jax.tree_util.tree_map_with_path(draw, state))


def tiny_vit(image_size: int = IMAGE_SIZE, seed: int = 0) -> models.VisionTransformer:
    """The tiny ViT of tests.test_models, at another image size if asked (same widths, depth)."""
    if image_size == IMAGE_SIZE:
        return tiny_model("clip_vit_b16", seed=seed)
    return numpy_initialized(
        lambda: models.VisionTransformer(
            NUM_CLASSES,
            image_size=image_size,
            patch_size=PATCH,
            width=WIDTH,
            layers=LAYERS,
            heads=HEADS,
            output_dim=OUTPUT_DIM,
            rngs=nnx.Rngs(seed),
        ),
        seed,
    )


def hf_state_dict(model: models.VisionTransformer, prefix: str = "vision_model.") -> dict:
    """The model's tensors under transformers' CLIP names (``CLIPVisionModelWithProjection``).

    Written out by hand from transformers' ``modeling_clip.py``, independently
    of the converter's renaming table.
    """
    openai = convert.to_torch_state_dict(model)
    root = prefix[: -len("vision_model.")] if prefix.endswith("vision_model.") else prefix
    out = {
        prefix + "embeddings.patch_embedding.weight": openai["conv1.weight"],
        prefix + "embeddings.class_embedding": openai["class_embedding"],
        prefix + "embeddings.position_embedding.weight": openai["positional_embedding"],
        prefix + "pre_layrnorm.weight": openai["ln_pre.weight"],
        prefix + "pre_layrnorm.bias": openai["ln_pre.bias"],
        prefix + "post_layernorm.weight": openai["ln_post.weight"],
        prefix + "post_layernorm.bias": openai["ln_post.bias"],
        root + "visual_projection.weight": np.ascontiguousarray(openai["proj"].T),
    }
    for i in range(LAYERS):
        ours, theirs = f"transformer.resblocks.{i}.", f"{prefix}encoder.layers.{i}."
        for leaf in ("weight", "bias"):
            q, k, v = np.split(openai[f"{ours}attn.in_proj_{leaf}"], 3, axis=0)
            out[f"{theirs}self_attn.q_proj.{leaf}"] = q
            out[f"{theirs}self_attn.k_proj.{leaf}"] = k
            out[f"{theirs}self_attn.v_proj.{leaf}"] = v
            out[f"{theirs}self_attn.out_proj.{leaf}"] = openai[f"{ours}attn.out_proj.{leaf}"]
            out[f"{theirs}layer_norm1.{leaf}"] = openai[f"{ours}ln_1.{leaf}"]
            out[f"{theirs}layer_norm2.{leaf}"] = openai[f"{ours}ln_2.{leaf}"]
            out[f"{theirs}mlp.fc1.{leaf}"] = openai[f"{ours}mlp.c_fc.{leaf}"]
            out[f"{theirs}mlp.fc2.{leaf}"] = openai[f"{ours}mlp.c_proj.{leaf}"]
    return {k: np.ascontiguousarray(v) for k, v in out.items()}


def backbone_of(model) -> dict[str, np.ndarray]:
    return {
        k: np.asarray(v)
        for k, v in convert.to_torch_state_dict(model).items()
        if not k.startswith("head.")
    }


def assert_same_backbone(actual, expected) -> None:
    ours, theirs = backbone_of(actual), backbone_of(expected)
    assert sorted(ours) == sorted(theirs)
    for key in theirs:
        np.testing.assert_array_equal(ours[key], theirs[key], err_msg=key)


def assert_close_to_scale(actual, expected, tolerance=1e-4) -> None:
    scale = float(np.abs(expected).max())
    np.testing.assert_allclose(actual, expected, atol=tolerance * scale, rtol=tolerance)


# ----------------------------------------------------------------------------
# HF CLIP names, without transformers.


@pytest.mark.parametrize("prefix", ["vision_model.", "model.vision_model."])
def test_hf_names_map_onto_the_model_exactly(prefix):
    source = tiny_vit(seed=1)
    state = hf_state_dict(source, prefix)
    root = prefix[: -len("vision_model.")]
    state[root + "logit_scale"] = np.array(2.5, np.float32)
    state[prefix + "embeddings.position_ids"] = np.arange(65)[None]
    model = tiny_vit(seed=2)
    report = convert.load_state_dict(model, state, kind="clip_vit_b16")
    assert report.naming == "hf"
    assert report.prefix == prefix
    assert sorted(report.unused) == sorted(
        [prefix + "embeddings.position_ids", root + "logit_scale"]
    )
    assert report.resized == {}
    assert "HF CLIP names" in str(report)
    assert_same_backbone(model, source)


def test_hf_names_explicit_and_wrong_naming():
    source = tiny_vit(seed=1)
    state = hf_state_dict(source)
    model = tiny_vit(seed=2)
    assert convert.load_state_dict(model, state, naming="hf").naming == "hf"
    assert_same_backbone(model, source)
    with pytest.raises(convert.CheckpointError, match="pass naming='hf'"):
        convert.load_state_dict(model, state, naming="openai")
    openai = convert.to_torch_state_dict(source, prefix="visual.")
    with pytest.raises(convert.CheckpointError, match="no transformers CLIP vision tower"):
        convert.load_state_dict(model, openai, naming="hf")
    with pytest.raises(ValueError, match="`naming` must be"):
        convert.load_state_dict(model, state, naming="timm")
    # An OpenAI-named checkpoint still loads with naming="auto".
    report = convert.load_state_dict(model, openai)
    assert (report.naming, report.prefix) == ("openai", "visual.")


def test_hf_missing_tensors_are_named_as_in_the_checkpoint():
    state = hf_state_dict(tiny_vit(seed=1))
    del state["vision_model.encoder.layers.1.self_attn.k_proj.weight"]
    model = tiny_vit(seed=2)
    before = backbone_of(model)
    with pytest.raises(
        convert.CheckpointError,
        match=r"no tensor 'vision_model\.encoder\.layers\.1\.self_attn\.\{q,k,v\}_proj\.weight' "
        r"for the backbone parameter 'transformer/resblocks/1/attn/in_proj/kernel'",
    ):
        convert.load_state_dict(model, state)
    for key, value in backbone_of(model).items():
        np.testing.assert_array_equal(value, before[key], err_msg=key)
    # A CLIPVisionModel has no projection: the error says what to do.
    state = hf_state_dict(tiny_vit(seed=1))
    del state["visual_projection.weight"]
    with pytest.raises(convert.CheckpointError, match=r"(?s)'visual_projection\.weight'.*head/"):
        convert.load_state_dict(model, state)
    report = convert.load_state_dict(model, state, new_head=r"head/.*|proj")
    assert report.fresh == ("head/bias", "head/kernel", "proj")


def test_hf_config_beside_the_checkpoint_is_checked(tmp_path):
    convert.write_safetensors(tmp_path / "model.safetensors", hf_state_dict(tiny_vit(seed=1)))
    config = {"model_type": "clip", "vision_config": {"hidden_act": "quick_gelu"}}
    (tmp_path / "config.json").write_text(json.dumps(config))
    report = convert.load_pretrained(tiny_vit(seed=2), tmp_path)
    assert report.notes == ()
    config["vision_config"] = {"hidden_act": "gelu", "layer_norm_eps": 1e-6}
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.warns(UserWarning) as warned:
        report = convert.load_pretrained(tiny_vit(seed=2), tmp_path)
    assert [str(w.message) for w in warned] == list(report.notes)
    assert "hidden_act='gelu'" in report.notes[0] and "layer_norm_eps=1e-06" in report.notes[1]
    assert "QuickGELU" in str(report)


# ----------------------------------------------------------------------------
# HF CLIP checkpoints written by transformers.


@pytest.fixture(scope="module")
def transformers():
    pytest.importorskip("torch")
    return pytest.importorskip("transformers")


def vision_config(transformers, image_size=IMAGE_SIZE):
    return transformers.CLIPVisionConfig(
        hidden_size=WIDTH,
        intermediate_size=4 * WIDTH,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        image_size=image_size,
        patch_size=PATCH,
        projection_dim=OUTPUT_DIM,
        hidden_act="quick_gelu",  # OpenAI CLIP's, and CLIPVisionConfig's default
    )


def randomized(module, seed=0):
    """Every parameter perturbed (transformers initializes norms to 1 and biases to 0)."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.add_(0.1 * torch.randn(parameter.shape, generator=generator))
    return module.eval()


def pixels(x: np.ndarray):
    import torch

    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


def check_embeddings(model, x, expected):
    """Features equal the transformers embeddings; logits equal our head on them."""
    model.eval()
    logits, features = forward(model, jnp.asarray(x))
    assert_close_to_scale(features, expected)
    kernel, bias = np.asarray(model.head.kernel[...]), np.asarray(model.head.bias[...])
    assert_close_to_scale(logits, expected @ kernel + bias)


def test_transformers_vision_model_with_projection(transformers, tmp_path):
    import torch

    hf = randomized(transformers.CLIPVisionModelWithProjection(vision_config(transformers)))
    hf.save_pretrained(tmp_path)
    model = tiny_vit(seed=3)
    report = convert.load_pretrained(model, tmp_path, kind="clip_vit_b16")
    assert (report.naming, report.prefix, report.format) == ("hf", "vision_model.", "safetensors")
    assert report.source == repr(str(tmp_path / "model.safetensors"))
    assert report.fresh == ("head/bias", "head/kernel")
    assert report.notes == ()
    x = images()
    with torch.no_grad():
        expected = hf(pixel_values=pixels(x)).image_embeds.numpy()
    check_embeddings(model, x, expected)


def test_transformers_clip_model_sharded(transformers, tmp_path):
    import torch

    text = transformers.CLIPTextConfig(
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        vocab_size=50,
        max_position_embeddings=7,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
    )
    config = transformers.CLIPConfig(
        text_config=text.to_dict(),
        vision_config=vision_config(transformers).to_dict(),
        projection_dim=OUTPUT_DIM,
    )
    hf = randomized(transformers.CLIPModel(config), seed=1)
    hf.save_pretrained(tmp_path, max_shard_size="20KB")
    index = tmp_path / "model.safetensors.index.json"
    shards = set(json.loads(index.read_text())["weight_map"].values())
    assert len(shards) > 2
    model = tiny_vit(seed=3)
    report = convert.load_pretrained(model, tmp_path)
    assert report.format == f"safetensors, {len(shards)} shards"
    assert report.source == repr(str(index))
    assert "logit_scale" in report.unused and "text_projection.weight" in report.unused
    assert all(
        k.startswith(("text_model.", "logit_scale", "text_projection")) for k in report.unused
    )
    # Every tensor of the index is read, as transformers reads it.
    tensors = convert.read_state_dict(index)
    assert sorted(tensors) == sorted(hf.state_dict())
    x = images(seed=1)
    with torch.no_grad():
        expected = hf.get_image_features(pixel_values=pixels(x)).pooler_output.numpy()
    check_embeddings(model, x, expected)


def test_transformers_vision_model_without_projection(transformers, tmp_path):
    import torch

    hf = randomized(transformers.CLIPVisionModel(vision_config(transformers)), seed=2)
    hf.save_pretrained(tmp_path)
    model = tiny_vit(seed=3)
    with pytest.raises(convert.CheckpointError, match="CLIPVisionModelWithProjection"):
        convert.load_pretrained(model, tmp_path)
    report = convert.load_pretrained(model, tmp_path, new_head=r"head/.*|proj")
    assert report.fresh == ("head/bias", "head/kernel", "proj")
    x = images()
    with torch.no_grad():
        pooled = hf(pixel_values=pixels(x)).pooler_output.numpy()  # post_layernorm(cls)
    check_embeddings(model, x, pooled @ np.asarray(model.proj[...]))


@pytest.mark.parametrize("image_size", [80, 48])
def test_transformers_interpolate_pos_encoding_is_bicubic(transformers, tmp_path, image_size):
    # transformers' own resampling (interpolate_pos_encoding=True: torch's bicubic,
    # antialias=False) at another image size, against a model built at that size.
    import torch

    hf = randomized(transformers.CLIPVisionModelWithProjection(vision_config(transformers)))
    hf.save_pretrained(tmp_path)
    model = tiny_vit(image_size, seed=3)
    report = convert.load_pretrained(model, tmp_path, pos_embed_resize="bicubic")
    side = image_size // PATCH
    assert report.resized == {"positional_embedding": (IMAGE_SIZE // PATCH, side)}
    x = np.random.default_rng(4).normal(size=(2, image_size, image_size, 3)).astype(np.float32)
    with torch.no_grad():
        expected = hf(pixel_values=pixels(x), interpolate_pos_encoding=True).image_embeds.numpy()
    check_embeddings(model, x, expected)


# ----------------------------------------------------------------------------
# Sharded checkpoints and checkpoint folders.


def write_shards(folder, tensors, shards=3, name="model.safetensors"):
    """Writes ``tensors`` as ``shards`` safetensors files and an HF index; returns the index."""
    keys = list(tensors)
    weight_map = {}
    for n, part in enumerate(np.array_split(np.arange(len(keys)), shards)):
        file = f"model-{n + 1:05d}-of-{shards:05d}.safetensors"
        convert.write_safetensors(
            os.path.join(folder, file), {keys[i]: tensors[keys[i]] for i in part}
        )
        weight_map.update({keys[i]: file for i in part})
    index = os.path.join(folder, name + ".index.json")
    with open(index, "w") as file:
        json.dump({"metadata": {"total_size": 0}, "weight_map": weight_map}, file)
    return index


def test_sharded_safetensors_read_whole(tmp_path):
    source = tiny_vit(seed=1)
    tensors = convert.to_torch_state_dict(source, prefix="visual.")
    tensors["visual.counter"] = np.array(7, np.int64)
    index = write_shards(tmp_path, tensors)
    for path in (index, tmp_path):
        read = convert.read_state_dict(path)
        assert list(read) == list(tensors)
        for key, value in tensors.items():
            assert read[key].dtype == value.dtype, key
            np.testing.assert_array_equal(read[key], value, err_msg=key)
    model = tiny_vit(seed=2)
    report = convert.load_pretrained(model, tmp_path, new_head=None)
    assert report.format == "safetensors, 3 shards"
    assert report.unused == ("visual.counter",)
    assert_same_backbone(model, source)


def test_sharded_errors(tmp_path):
    tensors = convert.to_torch_state_dict(tiny_vit(seed=1))
    index = write_shards(tmp_path, tensors)
    os.remove(tmp_path / "model-00002-of-00003.safetensors")
    with pytest.raises(
        convert.CheckpointError,
        match=r"shard file '.*model-00002-of-00003\.safetensors' named by the index "
        r"'.*model\.safetensors\.index\.json' is missing",
    ):
        convert.read_state_dict(index)
    with pytest.raises(convert.CheckpointError, match="is missing"):
        convert.load_pretrained(tiny_vit(), tmp_path)  # the folder finds the index
    # A shard that lacks a tensor the index puts in it.
    with open(index) as file:
        weight_map = json.load(file)["weight_map"]
    weight_map["extra.weight"] = "model-00001-of-00003.safetensors"
    weight_map = {k: v for k, v in weight_map.items() if "00002" not in v}
    with open(index, "w") as file:
        json.dump({"weight_map": weight_map}, file)
    with pytest.raises(convert.CheckpointError, match="does not hold, e.g. 'extra.weight'"):
        convert.read_state_dict(index)
    with open(index, "w") as file:
        json.dump({"metadata": {}}, file)
    with pytest.raises(convert.CheckpointError, match="no 'weight_map'"):
        convert.read_state_dict(index)
    with open(index, "w") as file:
        file.write("{not json")
    with pytest.raises(convert.CheckpointError, match="not valid JSON"):
        convert.read_state_dict(index)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("")
    with pytest.raises(FileNotFoundError, match=r"no checkpoint in the folder .*notes\.txt"):
        convert.read_state_dict(empty)


def test_sharded_torch_bin(tmp_path):
    torch = pytest.importorskip("torch")
    tensors = convert.to_torch_state_dict(tiny_vit(seed=1))
    keys = list(tensors)
    weight_map = {}
    for n, part in enumerate((keys[:10], keys[10:])):
        file = f"pytorch_model-0000{n + 1}-of-00002.bin"
        torch.save({k: torch.from_numpy(tensors[k].copy()) for k in part}, tmp_path / file)
        weight_map.update(dict.fromkeys(part, file))
    (tmp_path / "pytorch_model.bin.index.json").write_text(json.dumps({"weight_map": weight_map}))
    read = convert.read_state_dict(tmp_path, engine="python")
    assert list(read) == keys
    for key in keys:
        np.testing.assert_array_equal(read[key], tensors[key], err_msg=key)


# ----------------------------------------------------------------------------
# Positional embeddings of another grid.


def test_same_grid_copies_bit_exactly():
    source = tiny_vit(seed=1)
    state = convert.to_torch_state_dict(source, prefix="visual.")
    for resize in ("bicubic_antialias", "bicubic", None):
        model = tiny_vit(seed=2)
        report = convert.load_state_dict(model, state, pos_embed_resize=resize)
        assert report.resized == {} and report.notes == ()
        np.testing.assert_array_equal(
            model.positional_embedding[...], state["visual.positional_embedding"]
        )
        assert_same_backbone(model, source)


GRIDS = [(8, 10), (8, 5), (14, 24), (7, 2), (4, 9), (16, 7)]


@pytest.mark.parametrize("antialias", [True, False])
@pytest.mark.parametrize(("source", "target"), GRIDS)
def test_resampling_matches_torch_interpolate(source, target, antialias):
    torch = pytest.importorskip("torch")
    width = 6
    rng = np.random.default_rng(source * 100 + target)
    embedding = rng.normal(size=(1 + source * source, width)).astype(np.float32)
    method = "bicubic_antialias" if antialias else "bicubic"
    ours = _resize.resample_positions(embedding, (1 + target * target, width), method, name="test")
    grid = torch.from_numpy(embedding[1:].reshape(1, source, source, width)).permute(0, 3, 1, 2)
    theirs = torch.nn.functional.interpolate(
        grid, size=(target, target), mode="bicubic", align_corners=False, antialias=antialias
    )
    theirs = theirs.permute(0, 2, 3, 1).reshape(target * target, width).numpy()
    assert ours.dtype == np.float32
    np.testing.assert_array_equal(ours[0], embedding[0])
    np.testing.assert_allclose(ours[1:], theirs, atol=2e-5, rtol=0)


@pytest.mark.parametrize(("source", "target"), GRIDS)
def test_antialiased_resampling_is_jax_image_resize(source, target):
    rng = np.random.default_rng(source)
    grid = rng.normal(size=(source, source, 3)).astype(np.float32)
    matrix = _resize.bicubic_matrix(source, target, antialias=True)
    ours = np.einsum("oi,ijc,pj->opc", matrix, grid, matrix)
    theirs = jax.image.resize(jnp.asarray(grid), (target, target, 3), "bicubic")
    np.testing.assert_allclose(ours, theirs, atol=2e-5, rtol=0)


@pytest.mark.parametrize("image_size", [80, 48])
def test_model_at_another_image_size_loads_and_runs(image_size):
    source = tiny_vit(seed=1)
    state = convert.to_torch_state_dict(source, prefix="visual.")
    model = tiny_vit(image_size, seed=2)
    report = convert.load_state_dict(model, state, kind="clip_vit_b16")
    side = image_size // PATCH
    assert report.resized == {"positional_embedding": (8, side)}
    assert f"from a 8x8 to a {side}x{side} grid of positions (bicubic_antialias)" in str(report)
    assert "positional_embedding" in report.loaded
    positions = np.asarray(model.positional_embedding[...])
    assert positions.shape == (1 + side * side, WIDTH)
    expected = state["visual.positional_embedding"]
    np.testing.assert_array_equal(positions[0], expected[0])  # the class token's position
    grid = jax.image.resize(
        jnp.asarray(expected[1:].reshape(8, 8, WIDTH)), (side, side, WIDTH), "bicubic"
    )
    np.testing.assert_allclose(positions[1:], np.reshape(grid, (-1, WIDTH)), atol=2e-5, rtol=0)
    assert_same_backbone_except_positions(model, source)
    x = np.random.default_rng(0).normal(size=(2, image_size, image_size, 3)).astype(np.float32)
    model.eval()
    logits, features = forward(model, jnp.asarray(x))
    assert logits.shape == (2, NUM_CLASSES) and features.shape == (2, OUTPUT_DIM)
    assert np.all(np.isfinite(logits))


def assert_same_backbone_except_positions(actual, expected):
    ours, theirs = backbone_of(actual), backbone_of(expected)
    for key in theirs:
        if key != "positional_embedding":
            np.testing.assert_array_equal(ours[key], theirs[key], err_msg=key)


def test_grid_mismatch_errors():
    state = convert.to_torch_state_dict(tiny_vit(seed=1), prefix="visual.")
    model = tiny_vit(seed=2)
    before = backbone_of(model)
    state["visual.positional_embedding"] = np.zeros((60, WIDTH), np.float32)
    with pytest.raises(
        convert.CheckpointError,
        match=r"the checkpoint has \(60, 32\), not 1 \+ a square grid of positions; the model "
        r"expects \(65, 32\) = 1 \+ 8x8 positions of width 32",
    ):
        convert.load_state_dict(model, state)
    state["visual.positional_embedding"] = np.zeros((50, 16), np.float32)
    with pytest.raises(convert.CheckpointError, match=r"has shape \(50, 16\).*needs \(65, 32\)"):
        convert.load_state_dict(model, state)
    state["visual.positional_embedding"] = np.zeros((50, WIDTH), np.float32)
    with pytest.raises(
        convert.CheckpointError,
        match=r"has shape \(50, 32\).*pass pos_embed_resize='bicubic_antialias'",
    ):
        convert.load_state_dict(model, state, pos_embed_resize=None)
    with pytest.raises(ValueError, match="`pos_embed_resize` must be one of"):
        convert.load_state_dict(model, state, pos_embed_resize="bilinear")
    for key, value in backbone_of(model).items():
        np.testing.assert_array_equal(value, before[key], err_msg=key)


def test_attention_pool_positions_resample_on_request():
    source = tiny_model("clip_resnet50", seed=1)  # 64 px: a 2x2 attention-pool grid
    state = convert.to_torch_state_dict(source, prefix="visual.")
    model = numpy_initialized(
        lambda: models.CLIPResNet(
            NUM_CLASSES,
            layers=(1, 1, 1, 1),
            width=8,
            heads=4,
            output_dim=16,
            image_size=96,
            rngs=nnx.Rngs(2),
        )
    )
    with pytest.raises(
        convert.CheckpointError, match=r"needs \(10, 256\).*2x2 grid.*3x3.*resize_attnpool=True"
    ):
        convert.load_state_dict(model, state)
    report = convert.load_state_dict(model, state, resize_attnpool=True)
    assert report.resized == {"attnpool/positional_embedding": (2, 3)}
    positions = np.asarray(model.attnpool.positional_embedding[...])
    expected = state["visual.attnpool.positional_embedding"]
    np.testing.assert_array_equal(positions[0], expected[0])
    grid = _resize.bicubic_matrix(2, 3, antialias=True)
    resized = np.einsum("oi,ijc,pj->opc", grid, expected[1:].reshape(2, 2, -1), grid)
    np.testing.assert_allclose(positions[1:], resized.reshape(9, -1), atol=1e-6, rtol=0)
    model.eval()
    x = np.random.default_rng(0).normal(size=(1, 96, 96, 3)).astype(np.float32)
    logits, _ = forward(model, jnp.asarray(x))
    assert np.all(np.isfinite(logits))
