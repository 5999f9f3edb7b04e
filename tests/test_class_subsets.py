"""Class-subset evaluation (ImageNet-A/-R are scored on their 200 classes of the 1000)."""

from __future__ import annotations

import dataclasses

import chex
import jax
import numpy as np
import pytest
from flax import nnx

from ftp_jax import data
from ftp_jax.recipes import RecipeConfig, imagenet_vit_posthoc
from ftp_jax.train import make_eval_step
from ftp_jax.train.evaluation import evaluate
from ftp_jax.train.inputs import EvalSet, SourceEvalSet
from ftp_jax.train.placement import Placement as _Placement
from ftp_jax.train.steps import split_model

# The first ten and last five entries of `indices_in_1k` in the ImageNet-A and
# -R evaluation code (hendrycks/natural-adv-examples, hendrycks/imagenet-r);
# e.g. 1 goldfish, 6 stingray, 980 volcano, 988 acorn.
PUBLISHED = {
    "imagenet_a": ([6, 11, 13, 15, 17, 22, 23, 27, 30, 37], [981, 984, 986, 987, 988]),
    "imagenet_r": ([1, 2, 4, 6, 8, 9, 11, 13, 22, 23], [967, 980, 981, 983, 988]),
}


@pytest.mark.parametrize("name", ["imagenet_a", "imagenet_r"])
def test_subsets_are_200_imagenet_classes_in_label_order(name):
    indices = data.class_subset_indices(name)
    assert indices.dtype == np.int32 and indices.shape == (200,)
    assert np.all(np.diff(indices) > 0) and indices[0] >= 0 and indices[-1] < 1000
    first, last = PUBLISHED[name]
    np.testing.assert_array_equal(indices[: len(first)], first)
    np.testing.assert_array_equal(indices[-len(last) :], last)


def test_unknown_subset_name_is_refused():
    with pytest.raises(ValueError, match="unknown class subset 'imagenet_o'"):
        data.class_subset_indices("imagenet_o")


class _Linear(nnx.Module):
    def __init__(self, rngs):
        self.head = nnx.Linear(6, 10, rngs=rngs)

    def __call__(self, x):
        return self.head(x.reshape(x.shape[0], -1))


def _problem(classes):
    model = _Linear(nnx.Rngs(0))
    rng = np.random.default_rng(1)
    images = rng.normal(size=(37, 1, 2, 3)).astype(np.float32)
    labels = rng.choice(classes, size=37).astype(np.int32)
    logits = np.asarray(model(images))
    return model, images, labels, logits


def _expected(logits, labels, classes):
    subset = logits[:, classes]
    predictions = np.asarray(classes)[np.argmax(subset, -1)]
    log_z = np.log(np.sum(np.exp(subset - subset.max(-1, keepdims=True)), -1)) + subset.max(-1)
    losses = log_z - logits[np.arange(len(labels)), labels]
    return float(np.mean(losses)), float(np.mean(predictions == labels))


@pytest.mark.parametrize("devices", [1, 8])
def test_evaluate_restricts_argmax_and_softmax_to_the_subset(devices):
    classes = [1, 4, 5, 8]
    model, images, labels, logits = _problem(classes)
    graphdef, params, model_state = split_model(model)
    eval_step = jax.jit(make_eval_step(graphdef))
    placement = None
    if devices > 1:
        placement = _Placement(jax.make_mesh((devices,), ("data",)), 8, 8)
    restricted = EvalSet("s", images, labels, class_subset=np.asarray([8, 5, 4, 1]))
    result = evaluate(eval_step, params, model_state, restricted, 8, placement)
    loss, accuracy = _expected(logits, labels, classes)
    assert result["count"] == 37
    np.testing.assert_allclose(result["loss"], loss, rtol=1e-5)
    assert result["accuracy"] == accuracy
    # The restriction matters here: over all 10 logits the accuracy is another.
    full = evaluate(eval_step, params, model_state, EvalSet("s", images, labels), 8, placement)
    assert full["accuracy"] == float(np.mean(np.argmax(logits, -1) == labels))
    assert full["accuracy"] != accuracy


def test_subset_of_every_class_equals_no_subset():
    model, images, labels, _ = _problem(list(range(10)))
    graphdef, params, model_state = split_model(model)
    eval_step = jax.jit(make_eval_step(graphdef))
    every = EvalSet("s", images, labels, class_subset=np.arange(10))
    chex.assert_trees_all_close(
        evaluate(eval_step, params, model_state, every, 8),
        evaluate(eval_step, params, model_state, EvalSet("s", images, labels), 8),
        rtol=1e-6,
        atol=1e-7,  # an accuracy of 0
    )


def test_label_outside_the_subset_is_an_error():
    model, images, labels, _ = _problem([1, 4])
    labels[5] = 7
    graphdef, params, model_state = split_model(model)
    eval_step = jax.jit(make_eval_step(graphdef))
    with pytest.raises(ValueError, match="label 7 outside its class subset of 2 classes"):
        evaluate(eval_step, params, model_state, EvalSet("s", images, labels, np.array([1, 4])), 8)


@pytest.mark.parametrize("subset", [[], [1.5, 2.0], [3, 3], [-1, 2], [[1, 2]]])
def test_malformed_subsets_are_refused(subset):
    with pytest.raises(ValueError, match="class subset"):
        EvalSet("s", np.zeros((1, 1)), np.zeros(1, np.int32), class_subset=np.asarray(subset))
    with pytest.raises(ValueError, match="class subset"):
        SourceEvalSet("s", [0], class_subset=np.asarray(subset))


def test_imagenet_recipe_scores_a_and_r_on_their_200_classes():
    config = imagenet_vit_posthoc()
    for name in ("imagenet_a", "imagenet_r"):
        np.testing.assert_array_equal(config.class_subset_of(name), data.class_subset_indices(name))
    assert config.class_subset_of("imagenet_v2") is None
    assert config.class_subset_of("imagenet_sketch") is None
    assert config.class_subset_of("imagenet2012") is None


def test_recipe_refuses_a_subset_for_a_dataset_it_does_not_evaluate():
    with pytest.raises(ValueError, match="'imagenet_a', which is not evaluated"):
        RecipeConfig(class_subsets=(("imagenet_a", "imagenet_a"),))
    with pytest.raises(ValueError, match="unknown class subset 'imagenet_x'"):
        dataclasses.replace(imagenet_vit_posthoc(), class_subsets=(("imagenet_a", "imagenet_x"),))
    explicit = RecipeConfig(class_subsets=(("domainnet/sketch", (3, 1, 2)),))
    np.testing.assert_array_equal(explicit.class_subset_of("domainnet/sketch"), [3, 1, 2])
