"""Pure train and eval steps over pytrees, with a Flax NNX model at the boundary.

The model is split once into a static ``graphdef``, its trainable ``nnx.Param``
values and the rest of its state (batch statistics, RNG state), all as pure
dicts; the steps merge them back, run the model, and split again. They are
jittable functions of arrays only:

``train_step(state, batch, heldout=None) -> (state, metrics)``,
``eval_step(params, model_state, batch, classes=None) -> metrics`` and TPGM's
``heldout_loss(params, batch, *, model_state) -> loss``.

Batches of ``uint8`` images (a quarter of the bytes of float32 over the
host-to-device link) are scaled and normalized inside the step
(:func:`normalize_images`); float32 batches go to the model as they are.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import nnx

import ftp_jax

__all__ = [
    "TrainState",
    "initial_train_state",
    "split_model",
    "make_train_step",
    "make_eval_step",
    "make_heldout_loss",
    "cross_entropy",
    "normalize_images",
]

PyTree = Any
# Per-channel (mean, std) of images scaled to [0, 1], e.g. ftp_jax.data.CLIP_MEAN/CLIP_STD.
Normalization = tuple[tuple[float, ...], tuple[float, ...]]


class TrainState(NamedTuple):
    """Everything a fine-tuning run needs to continue; saved in checkpoints."""

    step: jax.Array  # int32 []: optimizer steps taken.
    params: PyTree  # the model's nnx.Param values, as a pure dict.
    model_state: PyTree  # the model's other variables (batch statistics, RNG state).
    opt_state: optax.OptState  # the optimizer's state (FTP's/TPGM's anchor and radii included).
    rng: jax.Array  # uint32 [2]: raw key; the data order of epoch e uses fold_in(rng, e).
    skipped_steps: jax.Array  # int32 []: steps skipped for a non-finite loss or gradient.


def initial_train_state(
    params: PyTree, model_state: PyTree, tx: optax.GradientTransformation, seed: int = 0
) -> TrainState:
    """The state before the first step: step 0, ``tx.init(params)``, the run's key.

    Jit it (as ``fit`` does) to initialize the optimizer state in one compiled
    computation; eagerly, every leaf's init ops compile on their own.
    """
    return TrainState(
        step=jnp.zeros([], jnp.int32),
        params=params,
        model_state=model_state,
        opt_state=tx.init(params),
        rng=jax.random.key_data(jax.random.PRNGKey(seed)),
        skipped_steps=jnp.zeros([], jnp.int32),
    )


def split_model(model: nnx.Module) -> tuple[nnx.GraphDef, PyTree, PyTree]:
    """``(graphdef, params, model_state)`` of an NNX model, states as pure dicts."""
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    return graphdef, nnx.to_pure_dict(params), nnx.to_pure_dict(rest)


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Mean softmax cross-entropy with integer labels, in at least float32 (a bfloat16
    model's logits are cast first: the log-softmax of bfloat16 logits would round the loss)."""
    logits = _at_least_float32(logits)
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


def _at_least_float32(x: jax.Array) -> jax.Array:
    """``x`` cast to float32 if it is a 16-bit float (float32 and float64 kept)."""
    return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def normalize_images(images: jax.Array, normalization: Normalization | None) -> jax.Array:
    """``uint8`` images scaled to ``[0, 1]`` and normalized; other dtypes unchanged.

    .. math::

       x = (u / 255 - \\mu) / \\sigma

    computed in float32 in the order of the host's transform
    (:func:`ftp_jax.data.train_transform` with ``output="float32"``), so the
    result equals the host's float32 images up to float32 rounding (XLA may
    fuse or reorder the two divisions: a few ulps).

    Args:
      images: ``uint8 (b, h, w, c)``, or already float images (returned as they are).
      normalization: ``(mean, std)`` per channel (:math:`\\mu`, :math:`\\sigma`),
        or ``None``: only the scaling to ``[0, 1]``.

    Returns:
      float32 images for ``uint8`` input; else ``images``.
    """
    if images.dtype != jnp.uint8:  # a static dtype: no trace-time branch on values
        return images
    scaled = images.astype(jnp.float32) / jnp.float32(255.0)
    if normalization is None:
        return scaled
    # Per channel, broadcast over the leading axes explicitly (no rank promotion).
    shape = (1,) * (images.ndim - 1) + (-1,)
    mean, std = (jnp.asarray(v, jnp.float32).reshape(shape) for v in normalization)
    return (scaled - mean) / std


def _forward(graphdef, params, model_state, images, *, train: bool):
    model = nnx.merge(graphdef, params, model_state)
    model.train() if train else model.eval()
    logits = _at_least_float32(model(images))  # a no-op for float32 models
    _, _, new_model_state = nnx.split(model, nnx.Param, ...)
    return logits, nnx.to_pure_dict(new_model_state)


def make_train_step(
    graphdef: nnx.GraphDef,
    tx: optax.GradientTransformation,
    *,
    normalization: Normalization | None = None,
    radius_gradients: bool = False,
):
    """The training step: forward in train mode, backward, optimizer update.

    ``radius_gradients``: also return FTP's radius gradient ``h_t`` per constrained
    leaf (:func:`ftp_jax.radius_gradients`, from the state before the update) as
    ``metrics["radius_gradient"]``, a dict of leaf path -> scalar; nothing for a
    method without FTP's state.

    ``normalization``: ``(mean, std)`` applied on the device to ``uint8`` batch
    images (:func:`normalize_images`); float32 images are used as they are.

    A step whose loss or gradient is not finite changes nothing but
    ``skipped_steps`` and ``step`` (the batch is consumed): the params, the
    optimizer state (FTP's anchor, radii and moments) and the batch statistics
    stay as they were.

    ``heldout`` (optional): held-out batches stacked on a leading axis, passed to
    the optimizer as ``tx.update(..., heldout_batches=heldout, model_state=...)``
    with the batch statistics after this step's forward pass (TPGM's projection
    update, inside the same compiled step).
    """

    def train_step(state: TrainState, batch: dict[str, jax.Array], heldout: PyTree | None = None):
        def loss_fn(params):
            images = normalize_images(batch["image"], normalization)
            logits, model_state = _forward(graphdef, params, state.model_state, images, train=True)
            return cross_entropy(logits, batch["label"]), (logits, model_state)

        (loss, (logits, model_state)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            state.params
        )
        extra = {} if heldout is None else {"heldout_batches": heldout, "model_state": model_state}
        updates, opt_state = tx.update(grads, state.opt_state, state.params, **extra)
        params = optax.apply_updates(state.params, updates)
        finite = jnp.isfinite(loss) & jnp.all(
            jnp.asarray([jnp.all(jnp.isfinite(g)) for g in jax.tree_util.tree_leaves(grads)])
        )
        keep = lambda new, old: jax.tree_util.tree_map(  # noqa: E731
            lambda n, o: jnp.where(finite, n, o), new, old
        )
        new_state = state._replace(
            step=state.step + 1,
            params=keep(params, state.params),
            model_state=keep(model_state, state.model_state),
            opt_state=keep(opt_state, state.opt_state),
            skipped_steps=state.skipped_steps + jnp.where(finite, 0, 1).astype(jnp.int32),
        )
        metrics = {
            "loss": loss,
            "correct": jnp.sum(jnp.argmax(logits, -1) == batch["label"]),
            "count": jnp.asarray(batch["label"].shape[0]),
            "finite": finite,
        }
        if radius_gradients:
            gradients = ftp_jax.radius_gradients(state.opt_state, grads)
            if gradients is not None:
                flat = jax.tree_util.tree_flatten_with_path(gradients)[0]
                metrics["radius_gradient"] = {
                    ftp_jax.leaf_path(path): value for path, value in flat if value is not None
                }
        return new_state, metrics

    return train_step


def make_eval_step(graphdef: nnx.GraphDef, *, normalization: Normalization | None = None):
    """The evaluation step: forward in eval mode; sums over the unmasked examples.

    ``normalization``: as for :func:`make_train_step` (``uint8`` images only).

    ``batch["mask"]`` (optional, bool) marks the real examples of a padded batch,
    so that every batch has one shape and the step compiles once.

    ``classes`` (optional, int array ``(K,)``) restricts the prediction to those
    label indices, as ImageNet-A/-R are evaluated (Hendrycks et al. 2021): the
    argmax and the softmax run over ``logits[:, classes]`` only, i.e.
    ``pred = classes[argmax_k logits[:, classes[k]]]`` and
    ``loss = logsumexp_k logits[:, classes[k]] - logits[:, label]``. Labels stay
    in the model's label space and must lie in ``classes``.
    """

    def eval_step(
        params: PyTree,
        model_state: PyTree,
        batch: dict[str, jax.Array],
        classes: jax.Array | None = None,
    ):
        images = normalize_images(batch["image"], normalization)
        logits, _ = _forward(graphdef, params, model_state, images, train=False)
        mask = batch.get("mask", jnp.ones(batch["label"].shape, bool))
        if classes is None:
            losses = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"])
            predictions = jnp.argmax(logits, -1)
        else:
            subset = jnp.take(logits, classes, axis=-1)
            label_logits = jnp.take_along_axis(logits, batch["label"][:, None], axis=-1)[:, 0]
            losses = jax.nn.logsumexp(subset, axis=-1) - label_logits
            predictions = classes[jnp.argmax(subset, -1)]
        correct = (predictions == batch["label"]) & mask
        return {
            "loss_sum": jnp.sum(jnp.where(mask, losses, 0.0)),
            "correct": jnp.sum(correct),
            "count": jnp.sum(mask),
        }

    return eval_step


def make_heldout_loss(graphdef: nnx.GraphDef, *, normalization: Normalization | None = None):
    """TPGM's held-out loss: the forward pass in eval mode, its mean cross-entropy.

    ``heldout_loss(params, batch, *, model_state) -> loss``: the batch statistics
    (``model_state``) come through the transform's extra arguments
    (:func:`ftp_jax.tpgm`), so that the radii are fitted to the model as the
    evaluation runs it. ``normalization``: as for :func:`make_train_step`.
    """

    def heldout_loss(params, batch, *, model_state, **unused):
        images = normalize_images(batch["image"], normalization)
        logits, _ = _forward(graphdef, params, model_state, images, train=False)
        return cross_entropy(logits, batch["label"])

    return heldout_loss
