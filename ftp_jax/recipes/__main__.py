"""``python -m ftp_jax.recipes``: a paper-scale fine-tuning run, given data and weights on disk.

Example (the reference's DomainNet FTP run with SGD, CLIP ResNet-50)::

    python -m ftp_jax.recipes --config experiments/configs/domainnet_ftp_sgd.py \\
        --data_dir ~/tensorflow_datasets --weights RN50.pt --workdir runs/domainnet_ftp_sgd

Datasets are read by TFDS name from ``--data_dir`` (prepare them with ``tfds build``
on a machine with internet); nothing is downloaded. All local devices are used
(data parallel).

Several hosts: start the same command on every host with ``--multihost``; it calls
``jax.distributed.initialize()`` first, which finds the cluster by itself on
Cloud TPU, SLURM, Open MPI and Kubernetes; elsewhere give
``--coordinator_address HOST:PORT --num_processes N --process_id I``. Each host
reads its own rows of every training batch; ``--workdir`` must be a directory
all hosts share (orbax checkpoints are written by all of them; the metrics and
results by host 0).
"""

from __future__ import annotations

import argparse
import json
import sys

from ftp_jax.experiment.__main__ import _load_config
from ftp_jax.recipes.run import run_recipe
from ftp_jax.train.config import apply_overrides


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m ftp_jax.recipes",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", required=True, help="a recipe config file (get_config())")
    parser.add_argument("--data_dir", required=True, help="prepared TFDS datasets")
    parser.add_argument("--weights", required=True, help="pre-trained weights (.pt/.safetensors)")
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument(
        "--multihost",
        action="store_true",
        help="call jax.distributed.initialize() (multi-host runs)",
    )
    parser.add_argument("--coordinator_address", help="HOST:PORT of process 0 (--multihost)")
    parser.add_argument("--num_processes", type=int, help="number of hosts (--multihost)")
    parser.add_argument("--process_id", type=int, help="this host's index (--multihost)")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    cluster = {
        "coordinator_address": args.coordinator_address,
        "num_processes": args.num_processes,
        "process_id": args.process_id,
    }
    given = {key: value for key, value in cluster.items() if value is not None}
    if given and not args.multihost:
        parser.error(f"--{' --'.join(given)} need --multihost.")
    if args.multihost:
        import jax

        jax.distributed.initialize(**given)
    config = apply_overrides(_load_config(args.config), args.set)
    summary = run_recipe(
        config,
        data_dir=args.data_dir,
        workdir=args.workdir,
        weights=args.weights,
        progress=not args.no_progress,
    )
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    sys.exit(main())
