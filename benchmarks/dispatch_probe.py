"""Per-buffer or per-kernel? A probe of what a jitted step's fixed costs follow (issue 24).

Command (from the repository root)::

    .venv/bin/python benchmarks/dispatch_probe.py --device gpu   # on a GPU (~1 min)
    .venv/bin/python benchmarks/dispatch_probe.py --quick        # smoke run (seconds)

On the H200 the update step's time was a straight line in the number of arrays it
takes in and gives back (issue 24), but those arrays and the kernels grow together
with the leaves. Three jitted steps, each with its input donated, for ``N`` in
``--sizes``, separate the two:

- ``buffers``: ``N`` 0-D float32 arrays in, each plus one out (``N`` buffers in and
  out; XLA may fuse the additions into few kernels: the kernel count is reported);
- ``vector``: one vector of ``N`` elements, plus one (one buffer, one kernel);
- ``kernels``: one vector, ``N`` in-place updates of one element each, each
  reading the one before (one buffer, about ``N`` kernels: the count is reported).

Solved from the same rounds' medians and the compiled kernel counts: per kernel =
(kernels - vector) / (their kernel difference); per buffer = (buffers - vector -
per kernel x their kernel difference) / (their buffer difference). The JSON keeps
every time and count.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import _common  # noqa: E402
from benchmarks.state_layout import count_kernels  # noqa: E402


def _steps(n: int):
    import jax
    import jax.numpy as jnp

    def buffers(xs):
        return [x + 1.0 for x in xs]

    def vector(x):
        return x + 1.0

    def kernels(x):
        # N in-place updates of one element each, in sequence: one kernel each.
        for i in range(n):
            x = jax.lax.dynamic_update_slice(x, x[i : i + 1] * 1.5 + x[(i + 1) % n], (i,))
        return x

    scalars = [jnp.zeros((), jnp.float32) for _ in range(n)]
    return {
        "buffers": (buffers, scalars),
        "vector": (vector, jnp.zeros((n,), jnp.float32)),
        "kernels": (kernels, jnp.zeros((n,), jnp.float32)),
    }


def run_size(n: int, args) -> dict:
    import jax

    runners, info = {}, {}
    for name, (fn, example) in _steps(n).items():
        compiled = jax.jit(fn, donate_argnums=0).lower(example).compile()
        holder = {"x": jax.tree_util.tree_map(lambda a: a + 0, example)}

        def run(holder=holder, compiled=compiled):
            holder["x"] = compiled(holder["x"])
            jax.block_until_ready(holder["x"])

        runners[f"{name} N={n}"] = run
        info[f"{name} N={n}"] = {
            "arrays_in_out": 2 * len(jax.tree_util.tree_leaves(example)),
            "kernels": sum(count_kernels(compiled.as_text()).values()),
        }
    cpu: dict[str, list[float]] = {}
    times = _common.interleaved_times(
        runners, rounds=args.rounds, warmup=args.warmup, cpu_times=cpu
    )
    for name, samples in times.items():
        info[name].update(_common.summarize(samples))
    vector, buffers, kernels = (info[f"{k} N={n}"] for k in ("vector", "buffers", "kernels"))
    per_kernel = (kernels["median_s"] - vector["median_s"]) / max(
        kernels["kernels"] - vector["kernels"], 1
    )
    per_buffer = (
        buffers["median_s"]
        - vector["median_s"]
        - per_kernel * (buffers["kernels"] - vector["kernels"])
    ) / (buffers["arrays_in_out"] - vector["arrays_in_out"])
    derived = {"per_buffer_us": 1e6 * per_buffer, "per_kernel_us": 1e6 * per_kernel}
    return {"steps": info, "derived": derived}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    _common.add_common_flags(parser, default_rounds=30)
    parser.add_argument("--sizes", default="100,1000,3000", help="comma-separated N")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    if args.quick:
        args.rounds, args.warmup, sizes = min(args.rounds, 3), 1, [20]
    _common.select_device(args.device)
    result = {
        "benchmark": "dispatch_probe",
        "machine": _common.machine(),
        "settings": {"rounds": args.rounds, "warmup": args.warmup, "sizes": sizes},
        "sizes": {},
    }
    rows = []
    for n in sizes:
        entry = run_size(n, args)
        result["sizes"][str(n)] = entry
        for name, step in entry["steps"].items():
            rows.append([name, step["arrays_in_out"], step["kernels"], 1e3 * step["median_s"]])
        derived = entry["derived"]
        rows.append(
            [
                f"N={n}: per buffer / per kernel (us)",
                "",
                "",
                f"{derived['per_buffer_us']:.2f} / {derived['per_kernel_us']:.2f}",
            ]
        )
    _common.print_table(["step", "arrays in+out", "kernels", "median ms"], rows)
    default_name = f"dispatch_probe_{args.device}{'_quick' if args.quick else ''}.json"
    _common.write_json(result, args.out, default_name)
    return result


if __name__ == "__main__":
    main()
