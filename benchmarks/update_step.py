"""Update-only time of FTP next to its base optimizer, on ResNet-50- and ViT-B/16-sized trees.

Command (from the repository root)::

    .venv/bin/python benchmarks/update_step.py                 # CPU, both trees (~5 min)
    .venv/bin/python benchmarks/update_step.py --device gpu    # CUDA
    .venv/bin/python benchmarks/update_step.py --quick         # smoke run (seconds)

Each method is one jitted step ``(params, state, grads) -> (params, state)``
(``tx.update`` then ``optax.apply_updates``) with params and state donated, on a
random parameter tree with the real shapes in Flax layout
(:mod:`benchmarks._shapes`; every leaf constrained, FTP's default mask). The
methods run round-robin, in rotated order, after warm-up; the table gives the
median time per step, the median over rounds of the time relative to the base
optimizer in the same round, and XLA's own accounting of the compiled step: the
bytes its kernels read and write and its largest temporary buffer, both per byte
of params. ``--ftp-before PATH`` adds rows for another version of
``ftp_jax/_ftp.py`` (e.g. ``git show HEAD~1:ftp_jax/_ftp.py > /tmp/ftp_before.py``).

``--reference PATH`` adds the PyTorch reference (needs torch): PATH is the
authors' optimizer file (GT-RIPL/FTP ``util/FTP.py``, which the project does not
contain), whose ``SGDP`` and ``AdamP`` are timed next to ``torch.optim.SGD``
(momentum 0.9, weight decay 5e-4) and ``torch.optim.AdamW`` on the same shapes in
PyTorch layout, after the JAX rows of each tree, with ``--torch-threads`` threads
(default: the CPUs this process may use, as XLA). Add ``sgd+momentum`` to
``--bases`` for the JAX row that matches ``SGDP``. Those rows go under the JSON's
``reference`` key, with the torch version and thread count. See
:mod:`benchmarks._reference`.

Prints its tables; ``--out benchmarks/results/update_step_<device>.json`` updates the
committed JSON.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import _common, _reference, _shapes  # noqa: E402


def _quick_shapes() -> _shapes.Shapes:
    """The stem, first stage and head of ResNet-50 at 10 classes (0.24M params)."""
    return [
        (path, shape)
        for path, shape in _shapes.resnet50_shapes(num_classes=10)
        if path.startswith(("stem/", "stages/0/", "head/"))
    ]


def methods(bases: list[str], ftp_module, before_module, memory_options: bool) -> dict:
    """``name -> (transform, base name or None)`` for every row of the table."""
    zoo = _common.base_optimizers()
    rows = {}
    for base in bases:
        rows[base] = (zoo[base], None)
        variants = _common.ftp_variants() if memory_options and base == "adamw" else {"": {}}
        for suffix, kwargs in variants.items():
            rows[f"ftp({base}){suffix}"] = (ftp_module.ftp(zoo[base], **kwargs), base)
        if before_module is not None:
            rows[f"ftp({base}) [before]"] = (before_module.ftp(zoo[base]), base)
    return rows


def run_model(name, shapes, args, ftp_module, before_module) -> dict:
    import numpy as np

    grads = _shapes.random_tree(shapes, seed=1, scale=1e-3)
    param_bytes = _common.tree_bytes(grads)
    rows = methods(args.bases, ftp_module, before_module, not args.no_memory_options)
    steps, info = {}, {}
    params = _shapes.random_tree(shapes, seed=0)
    for row, (tx, base) in rows.items():
        steps[row], costs = _common.update_runner(tx, params, grads, param_bytes)
        info[row] = {"base": base, **costs}
    del params
    times = _common.interleaved_times(steps, rounds=args.rounds, warmup=args.warmup)
    table = []
    for row, samples in times.items():
        entry = info[row]
        entry.update(_common.summarize(samples))
        if entry["base"] is not None:
            entry["ratio_to_base"] = _common.paired_ratio(times, row, entry["base"])
            entry["ratio_of_medians"] = entry["median_s"] / statistics.median(times[entry["base"]])
        table.append(
            [
                row,
                1e3 * entry["median_s"],
                f"{1e3 * entry['p10_s']:.1f}-{1e3 * entry['p90_s']:.1f}",
                entry.get("ratio_to_base", 1.0),
                entry.get("bytes_accessed_per_param_byte", float("nan")),
                entry.get("temp_per_param_byte", float("nan")),
            ]
        )
    n_params = int(sum(np.prod(s) for _, s in shapes))
    _common.print_table(
        ["method", "median ms", "p10-p90 ms", "x base", "bytes/param-byte", "temp/param-byte"],
        table,
        title=f"{name}: {n_params:,} params ({param_bytes / 2**20:.0f} MiB), {args.rounds} rounds",
    )
    return {"params": n_params, "param_bytes": param_bytes, "methods": info}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    _common.add_common_flags(parser, default_rounds=30)
    parser.add_argument(
        "--models", default="resnet50,vit_b16", help="comma-separated: resnet50, vit_b16"
    )
    parser.add_argument(
        "--bases", default="sgd,adamw", help="comma-separated: sgd, sgd+momentum, adamw"
    )
    parser.add_argument(
        "--no-memory-options",
        action="store_true",
        help="skip the ftp(adamw) rows with bfloat16 buffers",
    )
    parser.add_argument(
        "--ftp-before",
        type=Path,
        default=None,
        help="another version of ftp_jax/_ftp.py to time next to the current one",
    )
    parser.add_argument(
        "--reference",
        type=Path,
        default=None,
        metavar="PATH",
        help="the authors' PyTorch optimizer file (GT-RIPL/FTP util/FTP.py): also time its "
        "SGDP and AdamP next to torch.optim.SGD and AdamW (needs torch)",
    )
    parser.add_argument(
        "--torch-threads",
        type=int,
        default=None,
        help="torch.set_num_threads for the --reference rows (default: the CPUs this "
        "process may use, as XLA's CPU backend)",
    )
    args = parser.parse_args(argv)
    args.bases = args.bases.split(",")
    if args.quick:
        args.rounds, args.warmup = min(args.rounds, 2), 1
    reference = None
    if args.reference is not None:  # fail before any JAX timing
        try:
            reference = _reference.load(args.reference)
        except _reference.ReferenceError as error:
            parser.error(str(error))
        torch = reference[0]
        if args.device == "gpu" and not torch.cuda.is_available():
            parser.error("--reference with --device gpu needs a CUDA build of torch")
        torch_default_threads = torch.get_num_threads()
        threads = args.torch_threads
        if threads is None:  # the CPUs this process may run on, as XLA's CPU backend uses
            from ftp_jax.data import available_cores

            threads = available_cores()
        if threads < 1:
            parser.error(f"--torch-threads must be positive, got {threads}")
        torch.set_num_threads(threads)
    _common.select_device(args.device)
    ftp_module = _common.load_ftp_module(None)
    before_module = _common.load_ftp_module(args.ftp_before) if args.ftp_before else None

    result = {
        "benchmark": "update_step",
        "machine": _common.machine(),
        "load_average_start": _common.load_average(),
        "settings": {
            "rounds": args.rounds,
            "warmup": args.warmup,
            "quick": args.quick,
            "bases": args.bases,
            "mask": "every leaf constrained (ftp's default)",
            "ftp_before": str(args.ftp_before) if args.ftp_before else None,
            "reference": str(args.reference) if args.reference else None,
        },
        "models": {},
    }
    models = {"quick": _quick_shapes()} if args.quick else {}
    if not args.quick:
        for name in args.models.split(","):
            models[name] = _shapes.SHAPE_LISTS[name]()
    if reference is not None:
        result["reference"] = {
            **_reference.settings(
                args.reference, torch, threads, torch_default_threads, args.device
            ),
            "models": {},
        }
    for name, shapes in models.items():
        result["models"][name] = run_model(name, shapes, args, ftp_module, before_module)
        if reference is not None:
            try:
                result["reference"]["models"][name] = _reference.run_model(
                    name, shapes, args, *reference, result["models"][name]["methods"]
                )
            except _reference.ReferenceError as error:
                parser.error(str(error))
    result["load_average_end"] = _common.load_average()
    default_name = f"update_step_{args.device}{'_quick' if args.quick else ''}.json"
    _common.write_json(result, args.out, default_name)
    return result


if __name__ == "__main__":
    main()
