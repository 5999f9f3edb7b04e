"""The default experiment's configuration: pre-train on one digit domain, fine-tune on another."""

from __future__ import annotations

import dataclasses

from ftp_jax.train.config import MethodConfig, TrainConfig

__all__ = ["ExperimentConfig", "MethodRun", "default_config", "quick"]


@dataclasses.dataclass(frozen=True)
class MethodRun:
    """One row of the results table: a label and the method it runs."""

    label: str
    method: MethodConfig


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
    """Pre-train (cached), then fine-tune every method with every seed, then report.

    Attributes:
      data_dir: where the TFDS datasets are prepared ("" = ``<workdir>/data``).
      pretrain_dataset: the pre-training domain (its train/validation splits).
      pretrain: the pre-training run (a vanilla run of a fresh model).
      id_dataset: the fine-tuning (in-distribution) domain.
      id_percent: percent of its train split used for fine-tuning.
      ood_datasets: ``(name, split)`` of every out-of-distribution test set.
      finetune: the fine-tuning schedule shared by every method (its ``method``
        is replaced by each row's).
      methods: the rows of the table.
      seeds: fine-tuning seeds (the new head's initialization and the data order).
      train_subset: use only this many training examples of each stage (0 = all;
        for quick runs).
    """

    data_dir: str = ""
    pretrain_dataset: str = "mnist5k"
    pretrain: TrainConfig = TrainConfig()
    id_dataset: str = "uci_digits"
    id_percent: int = 10
    ood_datasets: tuple[tuple[str, str], ...] = ()
    finetune: TrainConfig = TrainConfig()
    methods: tuple[MethodRun, ...] = ()
    seeds: tuple[int, ...] = (0, 1, 2)
    train_subset: int = 0


CORRUPTIONS = (
    "gaussian_noise",
    "impulse_noise",
    "gaussian_blur",
    "low_contrast",
    "rotate",
    "translate",
)


def default_config() -> ExperimentConfig:
    """MNIST-5k pre-training, UCI-digits fine-tuning (10% of train), 6 methods x 3 seeds."""
    sgd = dict(optimizer="sgd", learning_rate=1e-2, momentum=0.9)
    adamw = dict(optimizer="adamw", learning_rate=1e-3)
    methods = (
        MethodRun("vanilla (SGD)", MethodConfig(name="vanilla", **sgd)),
        MethodRun("linear probe (SGD)", MethodConfig(name="linear_probe", **sgd)),
        MethodRun("FTP (SGD)", MethodConfig(name="ftp", **sgd)),
        MethodRun(
            "TPGM (SGD)", MethodConfig(name="tpgm", proj_freq=1, max_iters=1, proj_lr=1e-2, **sgd)
        ),
        MethodRun("vanilla (AdamW)", MethodConfig(name="vanilla", **adamw)),
        MethodRun("FTP (AdamW)", MethodConfig(name="ftp", **adamw)),
    )
    ood = (("mnist5k", "test"),) + tuple(
        (f"{domain}_corrupted/{c}", "test")
        for domain in ("uci_digits", "mnist5k")
        for c in CORRUPTIONS
    )
    return ExperimentConfig(
        pretrain=TrainConfig(
            epochs=6,
            batch_size=64,
            lr_schedule="cosine",
            method=MethodConfig(name="vanilla", optimizer="adamw", learning_rate=1e-3),
        ),
        finetune=TrainConfig(epochs=30, batch_size=16, lr_schedule="cosine_per_epoch"),
        ood_datasets=ood,
        methods=methods,
    )


def quick(config: ExperimentConfig) -> ExperimentConfig:
    """A fast version for tests: one seed, two epochs, small subsets, three OOD sets."""
    return dataclasses.replace(
        config,
        pretrain=dataclasses.replace(config.pretrain, epochs=1),
        finetune=dataclasses.replace(config.finetune, epochs=2),
        seeds=config.seeds[:1],
        ood_datasets=config.ood_datasets[:2] + config.ood_datasets[-1:],
        train_subset=512,
    )
