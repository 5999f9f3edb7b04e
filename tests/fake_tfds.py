"""A tiny fake DomainNet-like TFDS dataset, prepared offline, for the recipes' smoke tests."""

from __future__ import annotations

import dataclasses
import io
import tempfile
from typing import ClassVar

import numpy as np
import PIL.Image
import tensorflow_datasets as tfds
from flax import nnx

from ftp_jax.data._builders import _OfflineBuilder, offline
from ftp_jax.recipes import RecipeConfig

DOMAINS = ("real", "sketch", "painting", "infograph", "clipart")
NUM_CLASSES = 5


class FakeDomainnet(_OfflineBuilder):
    """Random RGB images of varying sizes, 5 classes, one config per domain."""

    name = "fake_domainnet"
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES: ClassVar[dict[str, str]] = {"1.0.0": "Fake data for tests."}
    BUILDER_CONFIGS: ClassVar[list[tfds.core.BuilderConfig]] = [
        tfds.core.BuilderConfig(name=domain) for domain in DOMAINS
    ]

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=(None, None, 3), dtype=np.uint8),
                    "label": tfds.features.ClassLabel(num_classes=NUM_CLASSES),
                }
            ),
            supervised_keys=("image", "label"),
        )

    def _split_generators(self, dl_manager):
        del dl_manager
        return {"train": self._generate_examples(160, 0), "test": self._generate_examples(32, 1)}

    def _generate_examples(self, count: int, split_seed: int):
        rng = np.random.default_rng([DOMAINS.index(self.builder_config.name), split_seed])
        for index in range(count):
            height, width = rng.integers(20, 40, size=2)
            image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
            buffer = io.BytesIO()
            PIL.Image.fromarray(image).save(buffer, format="PNG")
            yield index, {"image": buffer.getvalue(), "label": int(index % NUM_CLASSES)}


def prepare(data_dir: str) -> None:
    with offline():
        for domain in DOMAINS:
            builder = FakeDomainnet(data_dir=data_dir, config=domain, file_format="array_record")
            with tempfile.TemporaryDirectory() as download_dir:
                builder.download_and_prepare(
                    download_dir=download_dir,
                    file_format="array_record",
                    download_config=tfds.download.DownloadConfig(try_download_gcs=False),
                )


BATCH_SIZE = 16  # the fake recipes' global training batch


class TinyNet(nnx.Module):
    """Dense-BatchNorm-head on 32x32 RGB: the recipes' loop at a small compile cost."""

    def __init__(self, rngs: nnx.Rngs):
        self.body = nnx.Linear(32 * 32 * 3, 32, rngs=rngs)
        self.norm = nnx.BatchNorm(32, rngs=rngs)
        self.head = nnx.Linear(32, NUM_CLASSES, rngs=rngs)

    def __call__(self, x):
        return self.head(nnx.relu(self.norm(self.body(x.reshape(x.shape[0], -1)))))


# Tiny versions of the recipes' models (same structure, random weights).
TINY_MODELS = {
    "torchvision_resnet50": dict(layers=(1, 1, 1, 1), width=4),
    "clip_resnet50": dict(layers=(1, 1, 1, 1), width=8, heads=2, output_dim=16),
    "clip_vit_b16": dict(patch_size=8, width=16, layers=1, heads=2, output_dim=8),
}


def fake_recipe(config: RecipeConfig, **finetune_overrides) -> RecipeConfig:
    """``config`` on the fake DomainNet: 32 px, one short epoch, no mid-epoch checkpoints.

    The OOD sets map onto the fake domains in order; class subsets (ImageNet-A/-R)
    become every class of the fake data.
    """
    finetune = dataclasses.replace(
        config.finetune,
        **{
            "epochs": 1,
            "batch_size": BATCH_SIZE,
            "eval_batch_size": 16,
            "checkpoint_every": 0,
            "method": _short_post_hoc(config.finetune.method),
            **finetune_overrides,
        },
    )
    ood_names = [name for name, _ in config.ood]
    fake_name = {
        name: f"fake_domainnet/{d}" for name, d in zip(ood_names, DOMAINS[1:], strict=True)
    }
    return dataclasses.replace(
        config,
        num_classes=NUM_CLASSES,
        image_size=32,
        train=("fake_domainnet/real", "train"),
        validation=("fake_domainnet/real", "test[:50%]"),
        id_test=("fake_domainnet/real", "test[50%:]"),
        ood=tuple((fake_name[name], "test") for name in ood_names),
        class_subsets=tuple(
            (fake_name[name], tuple(range(NUM_CLASSES))) for name, _ in config.class_subsets
        ),
        finetune=finetune,
    )


def _short_post_hoc(method):
    """``method`` with at most 2 post-hoc TPGM iterations (the recipe's 200 take long)."""
    iters = getattr(method.options, "post_hoc_iters", 0)
    if iters <= 2:
        return method
    return dataclasses.replace(
        method, options=dataclasses.replace(method.options, post_hoc_iters=2)
    )
