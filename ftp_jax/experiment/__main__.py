"""``python -m ftp_jax.experiment``: the default robust fine-tuning experiment, offline.

Prepares six renditions of the digits (no download), pre-trains a small CNN on
five of them (cached), fine-tunes it on 100% and 10% of ``photo`` with every
method and seed (the peers tuned on validation), tests on the five others, and
writes ``results.md``, ``results.json`` and PNG plots to ``<workdir>/results``.
Run again in the same work directory to resume an interrupted run.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

from ftp_jax.experiment.config import default_config, quick
from ftp_jax.experiment.run import run_experiment
from ftp_jax.train.config import apply_overrides


def _load_config(path: str | None):
    if path is None:
        return default_config()
    spec = importlib.util.spec_from_file_location("experiment_config", path)
    if spec is None or spec.loader is None:
        raise FileNotFoundError(f"cannot load the config file {path!r}.")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise AttributeError(f"the config file {path!r} defines no get_config().")
    return module.get_config()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m ftp_jax.experiment",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--config",
        help="a config file with get_config() (default: the renditions experiment, "
        "experiments/configs/renditions.py)",
    )
    parser.add_argument(
        "--workdir",
        help="default: runs/renditions, or runs/<name> for --config <dir>/<name>.py",
    )
    parser.add_argument("--quick", action="store_true", help="a fast run for tests")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key, e.g. --set finetune.epochs=10",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    config = _load_config(args.config)
    if args.quick:
        config = quick(config)
    config = apply_overrides(config, args.set)
    if args.workdir is None:
        args.workdir = f"runs/{Path(args.config).stem if args.config else 'renditions'}"
    results = run_experiment(config, args.workdir, progress=not args.no_progress)
    print(f"\nwrote {args.workdir}/results/results.md ({results['seconds']:.0f} s)")
    print((Path(args.workdir) / "results" / "results.md").read_text())


if __name__ == "__main__":
    sys.exit(main())
