"""Paper-scale recipes: a model with pre-trained weights, TFDS datasets, a method."""

from __future__ import annotations

import dataclasses
import functools

import numpy as np

from ftp_jax.data.imagenet_classes import CLASS_SUBSETS, class_subset_indices
from ftp_jax.models.kinds import MODEL_KINDS
from ftp_jax.train._checks import check_choice, check_int
from ftp_jax.train.config import MethodConfig, TrainConfig
from ftp_jax.train.methods import TPGMOptions

__all__ = ["RecipeConfig", "MODELS", "domainnet", "imagenet_vit_posthoc", "validate"]

MODELS = tuple(MODEL_KINDS)  # the model kinds' names: ftp_jax.models.MODEL_KINDS
DOMAINNET_OOD = (
    "domainnet/sketch",
    "domainnet/painting",
    "domainnet/infograph",
    "domainnet/clipart",
)
IMAGENET_OOD = ("imagenet_v2", "imagenet_a", "imagenet_r", "imagenet_sketch")


@dataclasses.dataclass(frozen=True)
class RecipeConfig:
    """One fine-tuning run at paper scale.

    Attributes:
      model: one of ``MODELS``; weights come from ``--weights`` (a PyTorch state
        dict or safetensors file, converted by :mod:`ftp_jax.convert`).
      num_classes: classes of the new head.
      image_size: training/eval crop size.
      normalization: ``"clip"`` or ``"imagenet"`` mean/std.
      train: ``(dataset, split)`` fine-tuned on; ``train_percent`` of it.
      validation: ``(dataset, split)`` for best-epoch selection and TPGM.
      id_test: ``(dataset, split)`` of the in-distribution test set.
      ood: ``(dataset, split)`` of every OOD test set; the OOD average is their
        mean (the reference's definition).
      class_subsets: ``(dataset, subset)`` pairs: the eval sets of ``dataset``
        are scored on the classes of ``subset`` only, a name of
        :data:`ftp_jax.data.CLASS_SUBSETS` (``"imagenet_a"``, ``"imagenet_r"``)
        or a tuple of label indices. ImageNet-A and -R hold 200 of the 1000
        classes and are scored on those, as in their papers and the reference.
      finetune: the schedule and method. The recipes compute in bfloat16 (params,
        optimizer state, loss and batch-norm statistics in float32:
        ``finetune.compute_dtype``); ``--set finetune.compute_dtype=float32`` for a
        float32 run.
      shard_params: shard params and optimizer state over the devices.
    """

    model: str = "clip_resnet50"
    num_classes: int = 345
    image_size: int = 224
    normalization: str = "clip"
    train: tuple[str, str] = ("domainnet/real", "train")
    train_percent: int = 100
    validation: tuple[str, str] = ("domainnet/real", "test[:50%]")
    id_test: tuple[str, str] = ("domainnet/real", "test[50%:]")
    ood: tuple[tuple[str, str], ...] = tuple((name, "test") for name in DOMAINNET_OOD)
    class_subsets: tuple[tuple[str, str | tuple[int, ...]], ...] = ()
    finetune: TrainConfig = TrainConfig()
    shard_params: bool = False

    def __post_init__(self):
        check_choice("model", self.model, MODELS)
        for name in ("num_classes", "image_size"):
            check_int(name, getattr(self, name), 1)
        check_int("train_percent", self.train_percent, 1)
        for key in ("train", "validation", "id_test"):
            _check_split(key, getattr(self, key))
        for i, entry in enumerate(self.ood):
            _check_split(f"ood.{i}", entry)
        if not isinstance(self.shard_params, bool):
            raise ValueError(f"shard_params must be True or False, got {self.shard_params!r}.")
        if self.normalization not in ("clip", "imagenet"):
            raise ValueError(f"unknown normalization {self.normalization!r}: clip or imagenet.")
        evaluated = {name for name, _ in (self.validation, self.id_test, *self.ood)}
        for dataset, subset in self.class_subsets:
            if dataset not in evaluated:
                raise ValueError(
                    f"class_subsets names {dataset!r}, which is not evaluated by this recipe "
                    f"(its eval datasets: {sorted(evaluated)}); fix the name or drop the entry."
                )
            if isinstance(subset, str) and subset not in CLASS_SUBSETS:
                raise ValueError(
                    f"unknown class subset {subset!r} for {dataset!r}; known: "
                    f"{sorted(CLASS_SUBSETS)}, or give a tuple of label indices."
                )

    def class_subset_of(self, dataset: str) -> np.ndarray | None:
        """The label indices ``dataset`` is scored on, or ``None`` for all classes."""
        for name, subset in self.class_subsets:
            if name == dataset:
                if isinstance(subset, str):
                    return class_subset_indices(subset)
                return np.asarray(subset, np.int32)
        return None


def _check_split(key: str, entry) -> None:
    if not (
        isinstance(entry, tuple) and len(entry) == 2 and all(isinstance(p, str) for p in entry)
    ):
        raise ValueError(
            f"{key} must be a (dataset, split) pair of TFDS names, e.g. ('domainnet/real', "
            f"'train'), got {entry!r}."
        )


def validate(config: RecipeConfig) -> None:
    """Checks every setting the recipe derives from ``config``, in seconds, before any work.

    The dataclasses check their own fields when built; this checks what the run
    derives from several: the training split of ``train_percent``, the class
    subsets against ``num_classes``, and the method built for the recipe's model
    (constructed abstractly, ``jax.eval_shape``: no device touched, no weights
    read): ``finetune.method.head_pattern`` matches its head, MARS-PGM's radius
    rules cover its backbone, the row rule fits every leaf. ``python -m
    ftp_jax.recipes`` runs it after ``--set`` (also for ``--print-config``).

    Raises:
      ValueError: naming the keys, the values, the rule and how to fix it.
    """
    from ftp_jax import data

    name, split = config.train
    if config.train_percent != 100:
        try:
            data.percent_split(split, config.train_percent)
        except ValueError as error:
            raise ValueError(
                f"train_percent={config.train_percent} of train={config.train}: {error} "
                "(train_percent takes the first percent of a plain split; give a plain split "
                "name, or train_percent=100 with a sliced split)"
            ) from None
    for i, (dataset, subset) in enumerate(config.class_subsets):
        indices = config.class_subset_of(dataset) if isinstance(subset, str) else subset
        bad = [int(k) for k in np.asarray(indices).ravel() if not 0 <= int(k) < config.num_classes]
        if bad or not len(indices):
            raise ValueError(
                f"class_subsets.{i} ({dataset!r}, {subset!r}) has labels outside the model's "
                f"{config.num_classes} classes (num_classes), e.g. {bad[:5]}, or none; give "
                f"label indices in [0, {config.num_classes})."
            )
    _validate_on_model(config)


@functools.lru_cache(maxsize=8)
def _abstract_params(model: str, num_classes: int, image_size: int):
    """The params of the recipe's model as ``jax.ShapeDtypeStruct`` (no device, no weights)."""
    import jax
    from flax import nnx

    from ftp_jax.models import build_model
    from ftp_jax.train.steps import split_model

    def params():
        built = build_model(model, num_classes, image_size=image_size, rngs=nnx.Rngs(0))
        return split_model(built)[1]

    return jax.eval_shape(params)


def _validate_on_model(config: RecipeConfig) -> None:
    from ftp_jax.train.methods import check_method_for

    params = _abstract_params(config.model, config.num_classes, config.image_size)
    try:
        row_axes = MODEL_KINDS[config.model].row_axes  # as recipes.run.row_axes_of
        check_method_for(config.finetune, params, row_axes=row_axes)
    except ValueError as error:
        raise ValueError(f"finetune.method on the {config.model} model: {error}") from None


def domainnet(method: str, *, model: str = "clip_resnet50", percent: int = 100) -> RecipeConfig:
    """The reference's DomainNet runs: fine-tune on real, test on the 4 other domains.

    FTP with SGD (lr 1e-2) or AdamW (lr 1e-4), 50 epochs, cosine stepped per
    epoch, batch 256; TPGM with SGD and ``proj_freq=1``; vanilla SGD. The head
    is new and excluded from the projection. DomainNet has no validation split:
    the first half of real's test split selects the epoch (and feeds TPGM), the
    second half is the ID test.
    """
    sgd = dict(optimizer="sgd", learning_rate=1e-2, momentum=0.9, weight_decay=5e-4)
    methods = {
        "vanilla": MethodConfig(name="vanilla", **sgd),
        "ftp_sgd": MethodConfig(name="ftp", **sgd),
        "ftp_adamw": MethodConfig(
            name="ftp", optimizer="adamw", learning_rate=1e-4, weight_decay=0.1
        ),
        "tpgm": MethodConfig(
            name="tpgm",
            options=TPGMOptions(proj_freq=1, max_iters=1, radius_learning_rate=1e-2),
            **sgd,
        ),
    }
    if method not in methods:
        raise ValueError(f"unknown method {method!r}; expected one of {sorted(methods)}.")
    return RecipeConfig(
        model=model,
        normalization="imagenet" if model == "torchvision_resnet50" else "clip",
        train_percent=percent,
        finetune=TrainConfig(
            epochs=50,
            batch_size=256,
            eval_batch_size=256,
            lr_schedule="cosine_per_epoch",
            checkpoint_every=1000,
            compute_dtype="bfloat16",
            method=methods[method],
        ),
    )


def imagenet_vit_posthoc() -> RecipeConfig:
    """The reference's ImageNet ViT-B/16 run with post-hoc TPGM (200 iterations, L2 norm).

    Fine-tunes CLIP ViT-B/16 on ImageNet (AdamW), then one TPGM projection update
    of 200 iterations on held-out data with the L2 norm and nothing excluded
    (``exclude_head=False``: the new head is projected toward its
    initialization too, as the reference's "nothing excluded" does).
    ImageNet-A and -R are scored on their 200 classes (``class_subsets``).
    """
    return RecipeConfig(
        model="clip_vit_b16",
        num_classes=1000,
        train=("imagenet2012", "train[:99%]"),
        validation=("imagenet2012", "train[99%:]"),
        id_test=("imagenet2012", "validation"),
        ood=tuple((name, "test") for name in IMAGENET_OOD),
        class_subsets=(("imagenet_a", "imagenet_a"), ("imagenet_r", "imagenet_r")),
        finetune=TrainConfig(
            epochs=10,
            batch_size=512,
            eval_batch_size=512,
            lr_schedule="cosine",
            warmup_epochs=1,
            checkpoint_every=1000,
            compute_dtype="bfloat16",
            method=MethodConfig(
                name="tpgm",
                optimizer="adamw",
                learning_rate=3e-5,
                weight_decay=0.1,
                exclude_head=False,
                options=TPGMOptions(
                    norm="l2", proj_freq=0, post_hoc_iters=200, radius_learning_rate=1e-2
                ),
            ),
        ),
    )
