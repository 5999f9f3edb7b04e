"""``python -m ftp_jax.experiment``: the default robust fine-tuning experiment, offline.

Prepares six renditions of the digits (no download), pre-trains a small CNN on
five of them (cached), fine-tunes it on 100% and 10% of ``photo`` with every
method and seed (the peers tuned on validation), tests on the five others, and
writes ``results.md``, ``results.json`` and PNG plots to ``<workdir>/results``.
Run the same command again to resume an interrupted run (Ctrl-C saves a
checkpoint first); ``--fresh`` starts over.

The config is a Python file whose get_config() returns an ExperimentConfig
(default: the renditions experiment, experiments/configs/renditions.py); --set KEY=VALUE
changes any key of it, --print-config shows them all.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ftp_jax import cli

COMMAND = "python -m ftp_jax.experiment"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=COMMAND,
        description=__doc__,
        epilog=cli.EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--config",
        help="a config file whose get_config() returns an ExperimentConfig, or the name of "
        "one that ships with ftp_jax (digits: experiments/configs/digits.py; default: the "
        "renditions experiment, experiments/configs/renditions.py)",
    )
    parser.add_argument(
        "--workdir",
        help="default: runs/renditions, or runs/<name> for --config <dir>/<name>.py (with "
        "--quick: the same with _quick)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a smoke test of about two minutes (1 seed, 2 epochs, subsets; its accuracies "
        "mean nothing)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="fine-tuning runs in parallel, each a process with one XLA thread (default: one "
        "per available core); any count gives the same numbers",
    )
    cli.add_common_flags(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Runs the command line; returns its exit code (see ``--help``)."""
    args = build_parser().parse_args(argv)
    if args.workdir is None:  # a quick run never meets the full run's work directory
        name = Path(args.config).stem if args.config else "renditions"
        args.workdir = f"runs/{name}_quick" if args.quick else f"runs/{name}"
    return cli.run(lambda: _main(args), debug=args.debug, workdir=args.workdir)


def _main(args: argparse.Namespace) -> int:
    from ftp_jax.experiment.config import ExperimentConfig, default_config, quick
    from ftp_jax.recipes.config import RecipeConfig

    if args.config:
        config = cli.load_config(
            args.config,
            ExperimentConfig,
            other_clis={RecipeConfig: "python -m ftp_jax.recipes"},
        )
    else:
        config = default_config()
    if args.quick:
        try:
            config = quick(config)
        except ValueError as error:
            raise cli.UsageError(f"--quick cannot shorten this config: {error}") from None
    for item in args.set:  # a key the experiment would silently ignore
        key = item.partition("=")[0].strip()
        if key.startswith("finetune.method.") and getattr(config, "methods", ()):
            name = key.removeprefix("finetune.method.")
            raise cli.UsageError(
                f"--set {item}: every row of the table runs its own method, which replaces "
                f"finetune.method; set methods.<i>.method.{name} for row i (--print-config "
                "lists the rows)."
            )
    config = cli.configure(config, args.set, print_config=False)
    _refuse_tuned_overrides(config, args.set)
    check_config(config, args)  # every derived setting, before any work (and --print-config)
    if args.print_config:
        from ftp_jax.train.config import format_config

        print(format_config(config))
        return 0
    cli.quiet(progress=not args.no_progress)
    if args.fresh:
        cli.start_fresh(args.workdir)

    from ftp_jax.experiment.run import run_experiment

    if args.workers is not None and args.workers < 1:
        raise cli.UsageError(f"--workers must be >= 1, got {args.workers}.")
    results = run_experiment(
        config, args.workdir, progress=not args.no_progress, workers=args.workers
    )
    report = Path(args.workdir) / "results" / "results.md"
    seconds = results.get("rerun_seconds", [results["seconds"]])[-1]
    print(f"\nwrote {report} ({seconds:.0f} s)")
    print(report.read_text())
    return 0


def _refuse_tuned_overrides(config, overrides: list[str]) -> None:
    """A ``--set`` of an option a row tunes would be silently replaced by its grid values."""
    import re

    from ftp_jax.experiment.config import LP_SHARE

    for item in overrides:
        key = item.partition("=")[0].strip()
        match = re.fullmatch(r"methods\.(\d+)\.method\.options\.(\w+)", key)
        if not match or int(match[1]) >= len(config.methods):
            continue
        index, option = int(match[1]), match[2]
        row = config.methods[index]
        tuned = "lp_epochs" if row.tune == LP_SHARE else row.tune
        if tuned and option == tuned:
            raise cli.UsageError(
                f"--set {item}: row {index} ({row.label!r}) tunes {row.tune} over its grid "
                f"{row.grid}, whose values replace options.{option}; set "
                f"methods.{index}.grid=(...) instead (one value: no tuning)."
            )


def check_config(config, args: argparse.Namespace) -> None:
    """:func:`ftp_jax.experiment.config.validate`; a refused setting is a usage error (exit 2)."""
    from ftp_jax.experiment.config import validate

    try:
        validate(config)
    except ValueError as error:
        given = []
        if args.quick:
            given.append("--quick (1 seed, 2 epochs, subsets)")
        if args.set:
            given.append("--set " + " --set ".join(args.set))
        after = f" after {' and '.join(given)}" if given else ""
        raise cli.UsageError(f"the config{after} is refused: {error}") from None


if __name__ == "__main__":
    sys.exit(main())
