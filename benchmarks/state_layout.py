"""FTP's state layouts (issue 24): arrays, kernels, bytes and CPU time next to the base.

Command (from the repository root)::

    .venv/bin/python benchmarks/state_layout.py            # ResNet-50 and ViT-B/16 (~10 min)
    .venv/bin/python benchmarks/state_layout.py --quick    # smoke run (seconds)
    .venv/bin/python benchmarks/state_layout.py --device gpu   # the same on CUDA

For each base optimizer and each FTP ``layout`` (and, with ``--ftp-before PATH``,
another version of ``ftp_jax/_ftp.py``, e.g. the per-leaf state before issue 24),
one jitted update step ``(params, state, grads) -> (params, state)`` with params
and state donated, on a random tree with the real shapes
(:mod:`benchmarks._shapes`, every leaf constrained). The deterministic figures,
the same on any machine with the same JAX version:

- ``state_arrays``: arrays in ``tx.init(params)``;
- ``step_arrays_in`` / ``step_arrays_out``: arrays the jitted step takes in
  (params, state, gradients) and gives back (params, state);
- ``kernels``: instructions of the compiled step's ENTRY computation other than
  parameters, constants, tuples, get-tuple-elements and bitcasts (fusions,
  copies, custom calls, reductions left unfused: what the device launches);
- ``bytes_accessed_per_param_byte``, ``temp_per_param_byte``: XLA's cost and
  memory analyses (:func:`benchmarks._common.compiled_costs`).

And timed (machine- and load-dependent): the methods run round-robin after
warm-up; ``cpu_ratio_to_base`` is the median over rounds of this process's CPU
seconds for the step divided by the base's in the same round (less sensitive to
other processes than wall time), ``wall_ratio_to_base`` the same with wall time.

Prints its tables; ``--out benchmarks/results/state_layout_<device>.json`` updates the
committed JSON.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import _common, _shapes  # noqa: E402
from benchmarks.update_step import _quick_shapes  # noqa: E402

NOT_KERNELS = ("parameter", "constant", "tuple", "get-tuple-element", "bitcast")
_INSTRUCTION = re.compile(r"^\s*(?:ROOT\s+)?%\S+\s*=\s*.*?\s([a-z][a-z0-9-]*)\(")


def count_kernels(hlo_text: str) -> dict[str, int]:
    """Opcode counts of the ENTRY computation's instructions that are kernels."""
    lines = hlo_text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("ENTRY"))
    counts: dict[str, int] = {}
    for line in lines[start + 1 :]:
        if line.startswith("}"):
            break
        match = _INSTRUCTION.match(line)
        if match and match.group(1) not in NOT_KERNELS:
            counts[match.group(1)] = counts.get(match.group(1), 0) + 1
    return counts


def methods(bases: list[str], layouts: list[str], before_module) -> dict:
    """``name -> (transform, base name or None)``."""
    import ftp_jax

    zoo = _common.base_optimizers()
    rows = {}
    for base in bases:
        rows[base] = (zoo[base], None)
        if before_module is not None:
            rows[f"ftp({base}) [before]"] = (before_module.ftp(zoo[base]), base)
        for layout in layouts:  # "buckets+base": layout="buckets", bucket_base=True
            kwargs = {"layout": layout.split("+")[0], "bucket_base": layout.endswith("+base")}
            rows[f"ftp({base}) layout={layout}"] = (ftp_jax.ftp(zoo[base], **kwargs), base)
    return rows


def count_arrays(name, shapes, args, before_module) -> dict:
    """``--arrays-only``: the array counts alone, from ``jax.eval_shape`` (no compile, no
    timing: seconds on any machine)."""
    import jax
    import numpy as np

    params = jax.tree_util.tree_map(
        lambda shape: jax.ShapeDtypeStruct(shape, "float32"),
        _shapes.shape_tree(shapes),
        is_leaf=lambda x: isinstance(x, tuple),
    )
    n_leaves = len(jax.tree_util.tree_leaves(params))
    param_bytes = 4 * int(sum(np.prod(s) for _, s in shapes))
    info = {}
    for row, (tx, base) in methods(args.bases, args.layouts, before_module).items():
        state = jax.eval_shape(tx.init, params)
        state_arrays = len(jax.tree_util.tree_leaves(state))
        info[row] = {
            "base": base,
            "state_arrays": state_arrays,
            "step_arrays_in": 2 * n_leaves + state_arrays,
            "step_arrays_out": n_leaves + state_arrays,
            "state_bytes_per_param_byte": _common.tree_bytes(state) / param_bytes,
        }
    for entry in info.values():
        if entry["base"] is not None:
            base = info[entry["base"]]
            entry["step_arrays_ratio_to_base"] = (
                entry["step_arrays_in"] + entry["step_arrays_out"]
            ) / (base["step_arrays_in"] + base["step_arrays_out"])
    rows = [
        [row, e["state_arrays"], f"{e['step_arrays_in']}/{e['step_arrays_out']}"]
        for row, e in info.items()
    ]
    _common.print_table(
        ["method", "state arrays", "step in/out"], rows, title=f"{name}: {n_leaves} leaves"
    )
    n_params = param_bytes // 4
    return {"params": n_params, "leaves": n_leaves, "param_bytes": param_bytes, "methods": info}


def run_model(name, shapes, args, before_module) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax

    grads = _shapes.random_tree(shapes, seed=1, scale=1e-3)
    params = _shapes.random_tree(shapes, seed=0)
    param_bytes = _common.tree_bytes(grads)
    n_leaves = len(jax.tree_util.tree_leaves(params))
    rows = methods(args.bases, args.layouts, before_module)
    steps, info = {}, {}
    for row, (tx, base) in rows.items():

        def step(params, state, grads, tx=tx):
            updates, state = tx.update(grads, state, params)
            return optax.apply_updates(params, updates), state

        holder = {"params": jax.tree_util.tree_map(jnp.copy, params)}
        holder["state"] = jax.jit(tx.init)(holder["params"])
        state_arrays = len(jax.tree_util.tree_leaves(holder["state"]))
        compiled = (
            jax.jit(step, donate_argnums=(0, 1)).lower(holder["params"], holder["state"], grads)
        ).compile()
        kernels = count_kernels(compiled.as_text())
        entry = {
            "base": base,
            "state_arrays": state_arrays,
            "step_arrays_in": 2 * n_leaves + state_arrays,
            "step_arrays_out": n_leaves + state_arrays,
            "kernels": sum(kernels.values()),
            "kernel_opcodes": dict(sorted(kernels.items(), key=lambda kv: -kv[1])),
            "state_bytes_per_param_byte": _common.tree_bytes(holder["state"]) / param_bytes,
            **_common.compiled_costs(compiled, param_bytes),
        }
        info[row] = entry

        def run(holder=holder, compiled=compiled):
            holder["params"], holder["state"] = compiled(holder["params"], holder["state"], grads)
            jax.block_until_ready((holder["params"], holder["state"]))

        steps[row] = run
    del params
    cpu_times: dict[str, list[float]] = {}
    times = _common.interleaved_times(
        steps, rounds=args.rounds, warmup=args.warmup, cpu_times=cpu_times
    )
    table = []
    for row, samples in times.items():
        entry = info[row]
        entry.update(_common.summarize(samples))
        entry["cpu_median_s"] = float(np.median(cpu_times[row]))
        if entry["base"] is not None:
            base = info[entry["base"]]
            entry["cpu_ratio_to_base"] = _common.paired_ratio(cpu_times, row, entry["base"])
            entry["wall_ratio_to_base"] = _common.paired_ratio(times, row, entry["base"])
            entry["kernels_ratio_to_base"] = entry["kernels"] / base["kernels"]
            entry["step_arrays_ratio_to_base"] = (
                entry["step_arrays_in"] + entry["step_arrays_out"]
            ) / (base["step_arrays_in"] + base["step_arrays_out"])
        table.append(
            [
                row,
                entry["state_arrays"],
                f"{entry['step_arrays_in']}/{entry['step_arrays_out']}",
                entry["kernels"],
                entry.get("bytes_accessed_per_param_byte", float("nan")),
                entry.get("temp_per_param_byte", float("nan")),
                1e3 * entry["median_s"],
                entry.get("cpu_ratio_to_base", 1.0),
            ]
        )
    n_params = int(sum(np.prod(s) for _, s in shapes))
    _common.print_table(
        [
            "method",
            "state arrays",
            "step in/out",
            "kernels",
            "bytes/param-byte",
            "temp/param-byte",
            "median ms",
            "CPU-s x base",
        ],
        table,
        title=f"{name}: {n_params:,} params, {n_leaves} leaves, {args.rounds} rounds",
    )
    return {"params": n_params, "leaves": n_leaves, "param_bytes": param_bytes, "methods": info}


def gpu_line(gpu_result: dict, model: str) -> dict:
    """Issue 24's straight line, refitted: the H200's update time of the committed GPU
    rows (sgd, adamw, ftp(sgd), ftp(adamw) in the per-leaf state, from
    ``update_step_gpu.json``) against the arrays each step takes in and gives back
    (counted here from the shapes, with ``_ftp_per_leaf.py``). Least squares:
    ``ms = intercept + slope * arrays``."""
    import jax
    import numpy as np

    import ftp_jax  # noqa: F401 - the per-leaf module imports the package's helpers

    per_leaf = _common.load_ftp_module(Path(__file__).parent / "_ftp_per_leaf.py")
    zoo = _common.base_optimizers()
    params = jax.tree_util.tree_map(
        lambda shape: jax.ShapeDtypeStruct(shape, "float32"),
        _shapes.shape_tree(_shapes.SHAPE_LISTS[model]()),
        is_leaf=lambda x: isinstance(x, tuple),
    )
    n_leaves = len(jax.tree_util.tree_leaves(params))
    points = []
    for name, tx in (
        ("sgd", zoo["sgd"]),
        ("adamw", zoo["adamw"]),
        ("ftp(sgd)", per_leaf.ftp(zoo["sgd"])),
        ("ftp(adamw)", per_leaf.ftp(zoo["adamw"])),
    ):
        state_arrays = len(jax.tree_util.tree_leaves(jax.eval_shape(tx.init, params)))
        arrays = 3 * n_leaves + 2 * state_arrays
        points.append(
            (name, arrays, 1e3 * gpu_result["models"][model]["methods"][name]["median_s"])
        )
    x = np.array([p[1] for p in points], float)
    y = np.array([p[2] for p in points], float)
    slope, intercept = np.polyfit(x, y, 1)
    misses = y - (intercept + slope * x)
    return {
        "points": points,
        "slope_us_per_array": 1e3 * float(slope),
        "intercept_ms": float(intercept),
        "largest_miss_ms": float(np.max(np.abs(misses))),
    }


def markdown(result: dict, gpu_result: dict | None = None) -> str:
    """The tables of ``benchmarks/RESULTS_LAYOUT.md``, from a results JSON (generated, so
    that every number in the document is the committed file's)."""
    lines = []
    for model, entry in result["models"].items():
        lines += [
            f"**{model}** ({entry['params']:,} params, {entry['leaves']} leaves; "
            f"{result['machine']['backend']}, "
            + (
                "array counts only, by jax.eval_shape)"
                if result["settings"].get("arrays_only")
                else f"{result['settings']['rounds']} rounds)"
            ),
            "",
            "| method | state arrays | step arrays in/out | kernels (x base) | "
            "bytes / param byte | temp / param byte | CPU time x base |",
            "|---|---|---|---|---|---|---|",
        ]
        for name, m in entry["methods"].items():
            ratio = m.get("kernels_ratio_to_base")
            kernels = (
                f"{m['kernels']:,}" + (f" ({ratio:.2f}x)" if ratio else "")
                if "kernels" in m
                else "-"
            )
            cpu = m.get("cpu_ratio_to_base")
            timed = "median_s" in m
            bytes_ = m.get("bytes_accessed_per_param_byte")
            temp = m.get("temp_per_param_byte")
            lines.append(
                f"| {name} | {m['state_arrays']:,} | {m['step_arrays_in']:,} / "
                f"{m['step_arrays_out']:,} | {kernels} | "
                + (f"{bytes_:.1f} | " if bytes_ is not None else "- | ")
                + (f"{temp:.2f} | " if temp is not None else "- | ")
                + (f"{cpu:.2f}x |" if cpu else "1 |" if timed else "- |")
            )
        lines.append("")
        if gpu_result is None or model not in gpu_result.get("models", {}):
            continue
        line = gpu_line(gpu_result, model)
        fitted = ", ".join(
            f"{name} {arrays:,} arrays {ms:.2f} ms" for name, arrays, ms in line["points"]
        )
        lines += [
            f"*Extrapolated, not measured*: the H200 line for {model} (from "
            f"`update_step_gpu.json`: {fitted}) is {line['intercept_ms']:.2f} ms + "
            f"{line['slope_us_per_array']:.2f} us x arrays in+out (largest miss "
            f"{line['largest_miss_ms']:.2f} ms). Applied to the arrays above:",
            "",
            "| method | arrays in+out | H200 update ms (extrapolated) | x base (extrapolated) |",
            "|---|---|---|---|",
        ]

        def predicted(m, line=line):
            arrays = m["step_arrays_in"] + m["step_arrays_out"]
            return arrays, line["intercept_ms"] + 1e-3 * line["slope_us_per_array"] * arrays

        for name, m in entry["methods"].items():
            arrays, ms = predicted(m)
            base = entry["methods"].get(m["base"]) if m["base"] else None
            ratio = f"{ms / predicted(base)[1]:.2f}x" if base else "1"
            lines.append(f"| {name} | {arrays:,} | {ms:.2f} | {ratio} |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    _common.add_common_flags(parser, default_rounds=15)
    parser.add_argument(
        "--models", default="resnet50,vit_b16", help="comma-separated: resnet50, vit_b16"
    )
    parser.add_argument(
        "--bases", default="sgd+momentum,adamw", help="comma-separated: sgd, sgd+momentum, adamw"
    )
    parser.add_argument(
        "--layouts",
        default="leaves,buckets,buckets+base",
        help="comma-separated ftp layouts to compare (buckets+base: layout='buckets' with "
        "bucket_base=True, the base optimizer on the buckets too)",
    )
    parser.add_argument(
        "--arrays-only",
        action="store_true",
        help="only the array counts, by jax.eval_shape (no compile, no timing)",
    )
    parser.add_argument(
        "--markdown",
        type=Path,
        default=None,
        metavar="JSON",
        help="print the Markdown tables of a results file (RESULTS_LAYOUT.md's) and exit",
    )
    parser.add_argument(
        "--ftp-before",
        type=Path,
        default=None,
        help="another version of ftp_jax/_ftp.py (e.g. the per-leaf state before issue 24)",
    )
    args = parser.parse_args(argv)
    if args.markdown is not None:
        import json

        gpu = _common.RESULTS / "update_step_gpu.json"
        gpu_result = json.loads(gpu.read_text()) if gpu.exists() else None
        print(markdown(json.loads(args.markdown.read_text()), gpu_result))
        return {}
    args.bases = args.bases.split(",")
    args.layouts = args.layouts.split(",")
    if args.quick:
        args.rounds, args.warmup = min(args.rounds, 2), 1
    _common.select_device(args.device)
    before = _common.load_ftp_module(args.ftp_before) if args.ftp_before else None
    result = {
        "benchmark": "state_layout",
        "machine": _common.machine(),
        "load_average_start": _common.load_average(),
        "settings": {
            "rounds": args.rounds,
            "warmup": args.warmup,
            "quick": args.quick,
            "bases": args.bases,
            "layouts": args.layouts,
            "ftp_before": str(args.ftp_before) if args.ftp_before else None,
            "mask": "every leaf constrained (ftp's default)",
            "kernels": "ENTRY instructions other than " + ", ".join(NOT_KERNELS),
            "arrays_only": args.arrays_only,
        },
        "models": {},
    }
    models = (
        {"quick": _quick_shapes()}
        if args.quick
        else {name: _shapes.SHAPE_LISTS[name]() for name in args.models.split(",")}
    )
    for name, shapes in models.items():
        run = count_arrays if args.arrays_only else run_model
        result["models"][name] = run(name, shapes, args, before)
    result["load_average_end"] = _common.load_average()
    suffix = ("_quick" if args.quick else "") + ("_arrays" if args.arrays_only else "")
    default_name = f"state_layout_{args.device}{suffix}.json"
    _common.write_json(result, args.out, default_name)
    return result


if __name__ == "__main__":
    main()
