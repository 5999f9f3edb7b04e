"""Shared by the benchmark scripts: device selection, machine description, interleaved
timing, the methods compared, state sizes, tables and JSON output."""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"


def add_common_flags(parser: argparse.ArgumentParser, *, default_rounds: int) -> None:
    """``--device``, ``--quick``, ``--rounds``, ``--warmup``, ``--out``."""
    parser.add_argument(
        "--device",
        choices=("cpu", "gpu"),
        default="cpu",
        help="backend to run on (gpu = CUDA; needs the cuda12 extra)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="a smoke run: tiny sizes, 2 rounds (seconds)"
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=default_rounds,
        help="timed rounds; each round runs every method once, in rotated order",
    )
    parser.add_argument("--warmup", type=int, default=3, help="untimed rounds first")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="also write the results as JSON to this file (default: only print)",
    )


def select_device(device: str) -> None:
    """Makes ``device`` JAX's only platform; call before any JAX computation."""
    import jax

    jax.config.update("jax_platforms", "cuda" if device == "gpu" else "cpu")


def machine() -> dict[str, Any]:
    """The machine and software the figures were measured on."""
    import flax
    import jax
    import jaxlib
    import optax

    info: dict[str, Any] = {
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "jax": jax.__version__,
        "jaxlib": jaxlib.__version__,
        "flax": flax.__version__,
        "optax": optax.__version__,
        "backend": jax.default_backend(),
        "devices": [str(d.device_kind) for d in jax.devices()],
        "cpu_count": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
    }
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
        fields = {}
        for line in cpuinfo.splitlines():
            if ":" in line:
                key, value = (part.strip() for part in line.split(":", 1))
                fields.setdefault(key, value)
        info["cpu_model"] = fields.get("model name")
        info["cpu_family_model"] = f"{fields.get('cpu family')}/{fields.get('model')}"
        flags = fields.get("flags", "").split()
        info["cpu_simd"] = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in flags]
    except OSError:
        info["cpu_model"] = platform.processor()
    try:
        meminfo = Path("/proc/meminfo").read_text().split()
        info["memory_gib"] = round(int(meminfo[meminfo.index("MemTotal:") + 1]) / 2**20, 1)
    except (OSError, ValueError):
        pass
    for level in ("L2", "L3"):
        index = 2 if level == "L2" else 3
        path = Path(f"/sys/devices/system/cpu/cpu0/cache/index{index}/size")
        if path.exists():
            info[f"{level}_cache"] = path.read_text().strip()
    return info


def interleaved_times(
    steps: dict[str, Callable[[], Any]],
    *,
    rounds: int,
    warmup: int,
    cpu_times: dict[str, list[float]] | None = None,
) -> dict[str, list[float]]:
    """Wall-clock seconds per call of each step, measured round-robin.

    Every round calls each step once; the starting method rotates from round to
    round so that no method always runs right after the same other one. Each call
    must block until its results are ready. ``warmup`` untimed rounds come first
    (compilation, allocator warm-up). If ``cpu_times`` is given, it receives this
    process's CPU seconds (all threads) per call: less sensitive than wall time to
    other processes competing for the cores.
    """
    names = list(steps)
    for _ in range(warmup):
        for name in names:
            steps[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    if cpu_times is not None:
        cpu_times.update({name: [] for name in names})
    for r in range(rounds):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            start, start_cpu = time.perf_counter(), time.process_time()
            steps[name]()
            times[name].append(time.perf_counter() - start)
            if cpu_times is not None:
                cpu_times[name].append(time.process_time() - start_cpu)
    return times


def summarize(samples: list[float]) -> dict[str, float]:
    """Median and the 10th/90th percentiles (seconds)."""
    ordered = sorted(samples)
    n = len(ordered)
    return {
        "median_s": statistics.median(ordered),
        "p10_s": ordered[int(0.1 * (n - 1))],
        "p90_s": ordered[int(round(0.9 * (n - 1)))],
        "n": n,
    }


def paired_ratio(times: dict[str, list[float]], numerator: str, denominator: str) -> float:
    """Median over rounds of ``time(numerator) / time(denominator)`` of the same round.

    Less sensitive than a ratio of medians to load that drifts over the run.
    """
    return statistics.median(
        a / b for a, b in zip(times[numerator], times[denominator], strict=True)
    )


def tree_bytes(tree: Any) -> int:
    """Bytes of the arrays in a pytree (``optax.MaskedNode`` and None count 0)."""
    import jax
    import numpy as np

    total = 0
    for leaf in jax.tree_util.tree_leaves(tree):
        if hasattr(leaf, "shape") and hasattr(leaf, "dtype"):
            total += int(np.prod(leaf.shape, dtype=np.int64)) * np.dtype(leaf.dtype).itemsize
    return total


def print_table(headers: list[str], rows: list[list[Any]], title: str = "") -> None:
    """A Markdown table on stdout."""
    if title:
        print(f"\n{title}\n")
    cells = [[_format(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    print("| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in cells:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |")


def _format(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)


def write_json(result: dict[str, Any], out: Path | None, default_name: str) -> Path | None:
    """Writes ``result`` (with the machine description) to ``out``; returns the path.

    Without ``out`` nothing is written: the committed figures under
    ``benchmarks/results/`` change only when asked (``--out``).
    """
    if out is None:
        committed = (RESULTS / default_name).relative_to(ROOT)
        print(f"\n(not written; --out {committed} would replace the committed figures)")
        return None
    path = out
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2, sort_keys=False) + "\n")
    print(f"\nwrote {path}")
    return path


# The optimizers compared. Learning rates do not matter for timing; these are the
# published recipes' values (FTP/TPGM DomainNet: SGD momentum 0.9, weight decay 5e-4;
# AdamW 1e-4 with weight decay 0.05 for ViTs).
def base_optimizers() -> dict[str, Any]:
    """``name -> optax transform`` for the base optimizers."""
    import optax

    return {
        "sgd": optax.sgd(1e-2),
        "sgd+momentum": optax.chain(optax.add_decayed_weights(5e-4), optax.sgd(1e-2, momentum=0.9)),
        "adamw": optax.adamw(1e-4, weight_decay=0.05),
    }


def ftp_variants() -> dict[str, dict[str, Any]]:
    """``suffix -> ftp keyword arguments``: the exact default and the memory options."""
    import jax.numpy as jnp

    return {
        "": {},
        " bf16 displacement": {"displacement_dtype": jnp.bfloat16},
        " bf16 anchor+displacement": {
            "anchor_dtype": jnp.bfloat16,
            "displacement_dtype": jnp.bfloat16,
        },
    }


def load_ftp_module(path: Path | None):
    """``ftp_jax._ftp``, or another version of that file (for before/after timings)."""
    if path is None:
        import ftp_jax._ftp as module

        return module
    import importlib.util

    spec = importlib.util.spec_from_file_location("ftp_before", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def update_runner(tx: Any, params: Any, grads: Any, param_bytes: int):
    """A jitted update-only step of ``tx`` with params and state donated.

    Returns ``(run, costs)``: ``run()`` applies one update to its own copy of the
    params and blocks until done; ``costs`` is :func:`compiled_costs`.
    """
    import jax
    import jax.numpy as jnp
    import optax

    def step(params, state, grads):
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    holder = {"params": jax.tree_util.tree_map(jnp.copy, params)}
    holder["state"] = tx.init(holder["params"])
    compiled = (
        jax.jit(step, donate_argnums=(0, 1)).lower(holder["params"], holder["state"], grads)
    ).compile()

    def run():
        holder["params"], holder["state"] = compiled(holder["params"], holder["state"], grads)
        jax.block_until_ready((holder["params"], holder["state"]))

    return run, compiled_costs(compiled, param_bytes)


def compiled_costs(compiled: Any, param_bytes: int) -> dict[str, float]:
    """XLA's own accounting of a compiled step, in units of the params' bytes.

    ``bytes_accessed``: bytes read and written by the step's kernels (XLA's cost
    analysis; 3.0 for in-place SGD = read params and gradients, write params).
    ``temp``: the step's temporary memory (intermediates: activations, gradients,
    and whatever the optimizer materializes); ``peak``: arguments + outputs not
    aliased to a donated argument + temporaries, XLA's bound on the step's memory.
    """
    out: dict[str, float] = {}
    try:
        cost = compiled.cost_analysis()
        cost = cost[0] if isinstance(cost, list) else cost
        out["bytes_accessed_per_param_byte"] = float(cost["bytes accessed"]) / param_bytes
    except Exception:  # noqa: BLE001 - not every backend reports costs
        pass
    try:
        memory = compiled.memory_analysis()
        out["temp_per_param_byte"] = float(memory.temp_size_in_bytes) / param_bytes
        peak = (
            memory.argument_size_in_bytes
            + memory.output_size_in_bytes
            - memory.alias_size_in_bytes
            + memory.temp_size_in_bytes
        )
        out["peak_per_param_byte"] = float(peak) / param_bytes
    except Exception:  # noqa: BLE001
        pass
    return out


def load_average() -> list[float] | None:
    """1/5/15-minute load averages (other processes compete for the cores)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None
