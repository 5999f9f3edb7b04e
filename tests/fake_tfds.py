"""A tiny fake DomainNet-like TFDS dataset, prepared offline, for the recipes' smoke tests."""

from __future__ import annotations

import io
import tempfile
from typing import ClassVar

import numpy as np
import PIL.Image
import tensorflow_datasets as tfds

from ftp_jax.data._builders import _OfflineBuilder, offline

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
