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
      wise_ft_alphas: WiSE-FT: for each alpha, one more row of the table: the
        fine-tuned models of the ``wise_ft_source`` row (one per seed),
        interpolated with the pre-trained weights (the new head stays
        fine-tuned); () = no WiSE-FT rows.
      wise_ft_source: the label of the row whose fine-tuned models WiSE-FT
        interpolates.
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
    wise_ft_alphas: tuple[float, ...] = ()
    wise_ft_source: str = "vanilla (SGD)"

    def __post_init__(self):
        if not self.wise_ft_alphas:
            return
        labels = [row.label for row in self.methods]
        if self.wise_ft_source not in labels:
            raise ValueError(
                f"wise_ft_source {self.wise_ft_source!r} is not a row of the table; rows: {labels}."
            )
        for alpha in self.wise_ft_alphas:
            if isinstance(alpha, bool) or not isinstance(alpha, (int, float)):
                raise ValueError(f"wise_ft_alphas must be numbers in [0, 1], got {alpha!r}.")
            if not 0.0 <= alpha <= 1.0:
                raise ValueError(f"wise_ft_alphas must be numbers in [0, 1], got {alpha!r}.")


CORRUPTIONS = (
    "gaussian_noise",
    "impulse_noise",
    "gaussian_blur",
    "low_contrast",
    "rotate",
    "translate",
)


def default_config() -> ExperimentConfig:
    """MNIST-5k pre-training, UCI-digits fine-tuning (10% of train), 10 methods x 3 seeds.

    Plus WiSE-FT of the vanilla (SGD) models at 5 mixing weights (5 more rows).
    The peers' hyper-parameters are set once, a priori, not tuned on these data:
    L2-SP alpha=1 (beta=0.01 on the new head), MARS-PGM radius 0.5 per row (MARS
    norm; about FTP's learned radii for the convolutions), SPD lambda=1 (a
    selected step cannot increase the distance from the anchor), LP-FT 10 of the
    30 epochs as a linear probe.
    """
    sgd = dict(optimizer="sgd", learning_rate=1e-2, momentum=0.9)
    adamw = dict(optimizer="adamw", learning_rate=1e-3)
    methods = (
        MethodRun("vanilla (SGD)", MethodConfig(name="vanilla", **sgd)),
        MethodRun("linear probe (SGD)", MethodConfig(name="linear_probe", **sgd)),
        MethodRun("FTP (SGD)", MethodConfig(name="ftp", **sgd)),
        MethodRun(
            "TPGM (SGD)",
            MethodConfig(name="tpgm", proj_freq=1, max_iters=1, radius_learning_rate=1e-2, **sgd),
        ),
        MethodRun("L2-SP (SGD)", MethodConfig(name="l2sp", l2sp_alpha=1.0, l2sp_beta=0.01, **sgd)),
        MethodRun("MARS-PGM (SGD)", MethodConfig(name="mars_pgm", pgm_radius=0.5, **sgd)),
        MethodRun("SPD (SGD)", MethodConfig(name="spd", spd_strength=1.0, **sgd)),
        MethodRun("LP-FT (SGD)", MethodConfig(name="lp_ft", lp_epochs=10, **sgd)),
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
        # eval_batch_size 180 = the uci_digits validation split: the per-epoch validation
        # pass runs no padding (512 ran 2.8x the images). It changes no result.
        finetune=TrainConfig(
            epochs=30, batch_size=16, eval_batch_size=180, lr_schedule="cosine_per_epoch"
        ),
        ood_datasets=ood,
        methods=methods,
        wise_ft_alphas=(0.0, 0.25, 0.5, 0.75, 1.0),
        wise_ft_source="vanilla (SGD)",
    )


def quick(config: ExperimentConfig) -> ExperimentConfig:
    """A fast version for tests: one seed, two epochs, small subsets, three OOD sets.

    LP-FT rows keep their share of linear-probe epochs (at least 1, fewer than 2).
    """
    epochs = 2
    methods = tuple(
        dataclasses.replace(
            row,
            method=dataclasses.replace(
                row.method,
                lp_epochs=_scaled_epochs(row.method.lp_epochs, config.finetune.epochs, epochs),
            ),
        )
        if row.method.name == "lp_ft"
        else row
        for row in config.methods
    )
    return dataclasses.replace(
        config,
        methods=methods,
        pretrain=dataclasses.replace(config.pretrain, epochs=1),
        finetune=dataclasses.replace(config.finetune, epochs=epochs),
        seeds=config.seeds[:1],
        ood_datasets=config.ood_datasets[:2] + config.ood_datasets[-1:],
        train_subset=512,
    )


def _scaled_epochs(part: int, total: int, new_total: int) -> int:
    """``part`` of ``total`` epochs, scaled to ``new_total``: in [1, new_total - 1]."""
    return min(max(round(part * new_total / total), 1), new_total - 1)
