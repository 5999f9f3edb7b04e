"""``python -m ftp_jax.recipes``: a paper-scale fine-tuning run, given data and weights on disk.

Example (the reference's DomainNet FTP run with SGD, CLIP ResNet-50)::

    python -m ftp_jax.recipes --config experiments/configs/domainnet_ftp_sgd.py \\
        --data_dir ~/tensorflow_datasets --weights RN50.pt --workdir runs/domainnet_ftp_sgd

The config is a Python file whose get_config() returns a RecipeConfig; --set
KEY=VALUE changes any key of it, --print-config shows them all. Datasets are
read by TFDS name from --data_dir (prepare them with `tfds build` on a machine
with internet); nothing is downloaded. Every input (the datasets, the weights
file, the work directory) is checked before the model is built. All local
devices are used (data parallel). Run the same command again to resume
(Ctrl-C saves a checkpoint first); --fresh starts over.

Several hosts: start the same command on every host with --multihost; it calls
jax.distributed.initialize() first, which finds the cluster by itself on
Cloud TPU, SLURM, Open MPI and Kubernetes; elsewhere give
--coordinator_address HOST:PORT --num_processes N --process_id I. Each host
reads its own rows of every training batch; --workdir must be a directory
all hosts share (orbax checkpoints are written by all of them; the metrics and
results by host 0).
"""

from __future__ import annotations

import argparse
import json
import sys

from ftp_jax import cli

COMMAND = "python -m ftp_jax.recipes"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=COMMAND,
        description=__doc__,
        epilog=cli.EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--config",
        required=True,
        help="a recipe config file whose get_config() returns a RecipeConfig "
        "(experiments/configs/domainnet_*.py, imagenet_*.py), or the name of one that ships "
        "with ftp_jax (domainnet_ftp_sgd, imagenet_vit_tpgm_posthoc, ...)",
    )
    parser.add_argument("--data_dir", help="where the TFDS datasets are prepared (required)")
    parser.add_argument(
        "--weights", help="the pre-trained weights: .pt/.pth/.safetensors file or folder (required)"
    )
    parser.add_argument("--workdir", help="checkpoints, metrics and the result (required)")
    cli.add_common_flags(parser)
    parser.add_argument(
        "--multihost",
        action="store_true",
        help="call jax.distributed.initialize() (multi-host runs)",
    )
    parser.add_argument("--coordinator_address", help="HOST:PORT of process 0 (--multihost)")
    parser.add_argument("--num_processes", type=int, help="number of hosts (--multihost)")
    parser.add_argument("--process_id", type=int, help="this host's index (--multihost)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Runs the command line; returns its exit code (see ``--help``)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    cluster = {
        "coordinator_address": args.coordinator_address,
        "num_processes": args.num_processes,
        "process_id": args.process_id,
    }
    given = {key: value for key, value in cluster.items() if value is not None}
    if given and not args.multihost:
        parser.error(f"--{' --'.join(given)} need --multihost.")
    if not args.print_config:
        required = ("data_dir", "weights", "workdir")
        missing = [f"--{name}" for name in required if not getattr(args, name)]
        if missing:
            parser.error(f"the following arguments are required: {', '.join(missing)}")
    if args.fresh and args.multihost:
        parser.error(
            "--fresh with --multihost: every host would move the shared work directory; "
            "move it aside once yourself, or give a new --workdir."
        )
    return cli.run(lambda: _main(args, given), debug=args.debug, workdir=args.workdir)


def _main(args: argparse.Namespace, cluster: dict) -> int:
    from ftp_jax.experiment.config import ExperimentConfig
    from ftp_jax.recipes.config import RecipeConfig

    config = cli.load_config(
        args.config, RecipeConfig, other_clis={ExperimentConfig: "python -m ftp_jax.experiment"}
    )
    config = cli.configure(config, args.set, print_config=False)
    check_config(config, args)  # every derived setting, before any input is read
    if args.print_config:
        from ftp_jax.train.config import format_config

        print(format_config(config))
        return 0
    cli.quiet(progress=not args.no_progress)
    from ftp_jax.recipes.run import check_inputs, run_recipe

    if args.fresh:
        cli.start_fresh(args.workdir)
    # Every input before JAX's distributed start-up, the model and the weights.
    try:
        check_inputs(config, data_dir=args.data_dir, workdir=args.workdir, weights=args.weights)
    except ValueError as error:
        if type(error) is not ValueError:  # a refused checkpoint, another run: their own codes
            raise
        raise cli.InputError(str(error)) from error  # an unknown or empty split
    if args.multihost:
        import jax

        jax.distributed.initialize(**cluster)
    summary = run_recipe(
        config,
        data_dir=args.data_dir,
        workdir=args.workdir,
        weights=args.weights,
        progress=not args.no_progress,
    )
    print(json.dumps(summary, indent=1))
    return 0


def check_config(config, args: argparse.Namespace) -> None:
    """:func:`ftp_jax.recipes.config.validate`; a refused setting is a usage error (exit 2)."""
    from ftp_jax.recipes.config import validate

    try:
        validate(config)
    except ValueError as error:
        after = f" after --set {' --set '.join(args.set)}" if args.set else ""
        raise cli.UsageError(f"the config{after} is refused: {error}") from None


if __name__ == "__main__":
    sys.exit(main())
