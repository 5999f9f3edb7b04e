"""Optimizer-state memory of every method, relative to the params, from the actual state.

Command (from the repository root)::

    .venv/bin/python benchmarks/state_memory.py            # ResNet-50 and ViT-B/16 trees
    .venv/bin/python benchmarks/state_memory.py --quick    # smoke run (seconds)

For each method, ``tx.init(params)`` is
run on a random parameter tree with the real shapes (:mod:`benchmarks._shapes`),
and the bytes of the arrays in the returned state are summed. ``extra`` is the
state beyond the base optimizer's, in parameter-sized buffers. ``update temp``
is XLA's largest temporary buffer in the jitted, donated update step, which
also counts at the moment of the update (not for TPGM, whose projection runs
apart from the optimizer step). Every leaf is constrained (FTP's default mask).

Prints its tables; ``--out benchmarks/results/state_memory_<device>.json`` updates the
committed JSON.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import _common, _shapes  # noqa: E402
from benchmarks.update_step import _quick_shapes  # noqa: E402


def _rows(ftp_module) -> dict:
    """``name -> (init function, jittable update or None, base name or None)``."""
    import ftp_jax

    zoo = _common.base_optimizers()
    rows = {}
    for base in ("sgd", "sgd+momentum", "adamw"):
        rows[base] = (zoo[base], None)
    for base in ("sgd", "sgd+momentum", "adamw"):
        variants = _common.ftp_variants() if base == "adamw" else {"": {}}
        for suffix, kwargs in variants.items():
            rows[f"ftp({base}){suffix}"] = (ftp_module.ftp(zoo[base], **kwargs), base)
    import optax

    def heldout_loss(params, batch, **unused):
        return 0.0

    rows["tpgm (projection state alone)"] = (ftp_jax.tpgm(optax.set_to_zero(), heldout_loss), None)
    rows["sgd+momentum + tpgm"] = (
        ftp_jax.tpgm(zoo["sgd+momentum"], heldout_loss),
        "sgd+momentum",
    )
    return rows


def run_model(name, shapes) -> dict:
    import jax
    import numpy as np
    import optax

    ftp_module = _common.load_ftp_module(None)
    params = _shapes.random_tree(shapes, seed=0)
    param_bytes = _common.tree_bytes(params)
    results, table = {}, []
    for row, (method, base) in _rows(ftp_module).items():
        parts = method if isinstance(method, list) else [method]
        state = [jax.jit(part.init)(params) for part in parts]
        state_bytes = _common.tree_bytes(state)
        del state
        entry = {"state_bytes": state_bytes, "state_per_param": state_bytes / param_bytes}
        if base is not None:
            entry["extra_over_base_per_param"] = (
                state_bytes - results[base]["state_bytes"]
            ) / param_bytes
        if isinstance(method, optax.GradientTransformation):

            def step(params, state, grads, tx=method):
                updates, state = tx.update(grads, state, params)
                return optax.apply_updates(params, updates), state

            abstract = jax.eval_shape(method.init, params)
            compiled = jax.jit(step, donate_argnums=(0, 1)).lower(params, abstract, params)
            entry.update(_common.compiled_costs(compiled.compile(), param_bytes))
        dtypes = sorted(
            {
                str(leaf.dtype)
                for part in parts
                for leaf in jax.tree_util.tree_leaves(jax.eval_shape(part.init, params))
                if np.prod(leaf.shape) > 1
            }
        )
        entry["array_dtypes"] = dtypes
        results[row] = entry
        table.append(
            [
                row,
                state_bytes / 2**20,
                entry["state_per_param"],
                entry.get("extra_over_base_per_param", ""),
                entry.get("temp_per_param_byte", ""),
                ",".join(dtypes),
            ]
        )
    n_params = int(sum(np.prod(s) for _, s in shapes))
    _common.print_table(
        ["method", "state MiB", "state/params", "extra/params", "update temp/params", "dtypes"],
        table,
        title=f"{name}: {n_params:,} params ({param_bytes / 2**20:.1f} MiB float32)",
    )
    return {"params": n_params, "param_bytes": param_bytes, "methods": results}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    parser.add_argument("--quick", action="store_true", help="a smoke run on a small tree")
    parser.add_argument(
        "--models", default="resnet50,vit_b16", help="comma-separated: resnet50, vit_b16"
    )
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    _common.select_device(args.device)
    models = (
        {"quick": _quick_shapes()}
        if args.quick
        else {name: _shapes.SHAPE_LISTS[name]() for name in args.models.split(",")}
    )
    result = {"benchmark": "state_memory", "machine": _common.machine(), "models": {}}
    for name, shapes in models.items():
        result["models"][name] = run_model(name, shapes)
    default_name = f"state_memory_{args.device}{'_quick' if args.quick else ''}.json"
    _common.write_json(result, args.out, default_name)
    return result


if __name__ == "__main__":
    main()
