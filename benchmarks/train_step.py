"""Full training step with FTP next to its base optimizer, and TPGM's costs, on ResNet-50.

Command (from the repository root)::

    .venv/bin/python benchmarks/train_step.py                            # CPU, batch 8 at 224x224
    .venv/bin/python benchmarks/train_step.py --batch-size 64 --device gpu
    .venv/bin/python benchmarks/train_step.py --quick                    # smoke run (seconds)

Model: a compact Flax NNX ResNet-50 (:mod:`benchmarks._resnet`: torchvision's
design and parameter count, 25.6M params, batch norm in training mode; random
initialization and random images, which do not change the time). Every timed
function is jitted with its params, batch statistics and optimizer state donated:

- a training step (forward, backward, ``tx.update``, ``optax.apply_updates``) with
  ``sgd+momentum`` (weight decay 5e-4), ``ftp(sgd+momentum)``, ``adamw`` and
  ``ftp(adamw)``, every leaf constrained;
- TPGM's projection update (``ftp_jax.tpgm(...).update`` with a held-out batch: the held-out loss
  in eval mode on a batch of the same size, its gradient with respect to the
  radii through the projection, one Adam step) and its apply-only projection
  (``.apply``), as run after each ``sgd+momentum`` step with ``proj_freq=1``.

The functions run round-robin in rotated order after warm-up, together with the
four optimizers' update alone (jitted, donated) on the same tree. The table
gives the median wall and CPU time (this process, all threads), FTP's overhead
(the median over rounds of its step time over the base's in the same round,
minus 1; on a shared machine this difference of two long steps is noisy) and,
more precisely, FTP's added time measured on the update alone over the base's
step; and TPGM's costs relative to the ``sgd+momentum`` step.

Prints its tables; ``--out benchmarks/results/train_step_<device>.json`` updates the
committed JSON.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import _common, _shapes  # noqa: E402


def _split(model):
    from flax import nnx

    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    return graphdef, nnx.to_pure_dict(params), nnx.to_pure_dict(rest)


def make_train_step(graphdef, tx):
    """``(params, model_state, opt_state, images, labels) -> (same three, loss)``."""
    import jax
    import optax
    from flax import nnx

    def train_step(params, model_state, opt_state, images, labels):
        def loss_fn(params):
            model = nnx.merge(graphdef, params, model_state)
            model.train()
            logits = model(images)
            new_state = nnx.to_pure_dict(nnx.split(model, nnx.Param, ...)[2])
            loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
            return loss, new_state

        (loss, model_state), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), model_state, opt_state, loss

    return train_step


def make_heldout_loss(graphdef):
    """TPGM's held-out loss: the model in eval mode with the batch statistics passed in."""
    import optax
    from flax import nnx

    def heldout_loss(params, batch, *, model_state, **unused):
        model = nnx.merge(graphdef, params, model_state)
        model.eval()
        logits = model(batch["image"])
        return optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"]).mean()

    return heldout_loss


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    _common.add_common_flags(parser, default_rounds=10)
    parser.set_defaults(warmup=1)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument(
        "--ftp-layouts",
        default="",
        help="comma-separated ftp layouts (leaves, buckets) to time as extra rows next to "
        "ftp's default ('auto'), e.g. leaves,buckets on a GPU",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.warmup = min(args.rounds, 2), 1
        args.batch_size, args.image_size = 2, 32
    _common.select_device(args.device)

    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax
    from flax import nnx

    import ftp_jax
    from benchmarks import _resnet

    size = {"blocks": (1,), "widths": (8,), "num_classes": 10} if args.quick else {}
    model = nnx.jit(lambda: _resnet.ResNet50(rngs=nnx.Rngs(0), **size))()  # one compile
    graphdef, params0, model_state0 = _split(model)
    param_bytes = _common.tree_bytes(params0)
    n_params = int(sum(np.size(x) for x in jax.tree_util.tree_leaves(params0)))
    if not args.quick:  # the model is the update-only benchmark's ResNet-50 tree
        shapes = jax.tree_util.tree_map(np.shape, params0)
        assert shapes == _shapes.shape_tree(_shapes.resnet50_shapes()), "shape mismatch"
    key_images, key_labels = jax.random.split(jax.random.key(1))
    images = jax.random.normal(
        key_images, (args.batch_size, args.image_size, args.image_size, 3), jnp.float32
    )
    num_classes = size.get("num_classes", 1000)
    labels = jax.random.randint(key_labels, (args.batch_size,), 0, num_classes)

    def copy(tree):
        return jax.tree_util.tree_map(jnp.copy, tree)

    zoo = _common.base_optimizers()
    optimizers = {
        "sgd+momentum": zoo["sgd+momentum"],
        "ftp(sgd+momentum)": ftp_jax.ftp(zoo["sgd+momentum"]),
        "adamw": zoo["adamw"],
        "ftp(adamw)": ftp_jax.ftp(zoo["adamw"]),
    }
    ftp_rows = {"ftp(sgd+momentum)": "sgd+momentum", "ftp(adamw)": "adamw"}
    for layout in filter(None, args.ftp_layouts.split(",")):
        for base in ("sgd+momentum", "adamw"):
            optimizers[f"ftp({base}) layout={layout}"] = ftp_jax.ftp(zoo[base], layout=layout)
            ftp_rows[f"ftp({base}) layout={layout}"] = base
    steps, costs = {}, {}
    for name, tx in optimizers.items():
        holder = {"params": copy(params0), "model_state": copy(model_state0)}
        holder["opt_state"] = jax.jit(tx.init)(holder["params"])
        compiled = (
            jax.jit(make_train_step(graphdef, tx), donate_argnums=(0, 1, 2))
            .lower(holder["params"], holder["model_state"], holder["opt_state"], images, labels)
            .compile()
        )

        def run(compiled=compiled, holder=holder):
            out = compiled(
                holder["params"], holder["model_state"], holder["opt_state"], images, labels
            )
            holder["params"], holder["model_state"], holder["opt_state"], loss = out
            jax.block_until_ready(out)

        steps[name] = run
        costs[name] = _common.compiled_costs(compiled, param_bytes)

    # Memory only (compiled, not timed): the memory options in the same training step.
    memory_only = {}
    for suffix, kwargs in list(_common.ftp_variants().items())[1 : 2 if args.quick else None]:
        tx = ftp_jax.ftp(zoo["adamw"], **kwargs)
        abstract = jax.eval_shape(tx.init, params0)
        compiled = (
            jax.jit(make_train_step(graphdef, tx), donate_argnums=(0, 1, 2))
            .lower(params0, model_state0, abstract, images, labels)
            .compile()
        )
        memory_only[f"ftp(adamw){suffix}"] = _common.compiled_costs(compiled, param_bytes)

    # TPGM's projection alone (around a base optimizer that does not move): with a held-out
    # batch (a projection update: held-out forward and backward, one radius-Adam step, the
    # projection) and without (apply-only: the projection with the current radii).
    tpgm_tx = ftp_jax.tpgm(optax.set_to_zero(), make_heldout_loss(graphdef), max_iters=1)
    heldout = {"image": images[None], "label": labels[None]}
    tpgm_params = copy(params0)
    tpgm_holder = {"state": jax.jit(tpgm_tx.init)(tpgm_params)}
    tpgm_params = jax.tree_util.tree_map(lambda p: p + 1e-3, tpgm_params)  # moved off the anchor
    zero_grads = jax.tree_util.tree_map(jnp.zeros_like, params0)

    def tpgm_update(params, state, heldout, model_state):
        return tpgm_tx.update(
            zero_grads, state, params, heldout_batches=heldout, model_state=model_state
        )

    def tpgm_apply(params, state):
        updates, state = tpgm_tx.update(zero_grads, state, params)
        return optax.apply_updates(params, updates), state

    update_step = (
        jax.jit(tpgm_update, donate_argnums=(1,))
        .lower(tpgm_params, tpgm_holder["state"], heldout, model_state0)
        .compile()
    )
    apply = (
        jax.jit(tpgm_apply, donate_argnums=(0, 1))
        .lower(tpgm_params, tpgm_holder["state"])
        .compile()
    )
    apply_holder = {"params": copy(tpgm_params), "state": jax.jit(tpgm_tx.init)(params0)}

    def run_update_step():
        _, tpgm_holder["state"] = update_step(
            tpgm_params, tpgm_holder["state"], heldout, model_state0
        )
        jax.block_until_ready(tpgm_holder["state"])

    def run_apply():
        apply_holder["params"], apply_holder["state"] = apply(
            apply_holder["params"], apply_holder["state"]
        )
        jax.block_until_ready(apply_holder)

    steps["tpgm update_step"] = run_update_step
    steps["tpgm apply"] = run_apply
    costs["tpgm update_step"] = _common.compiled_costs(update_step, param_bytes)
    costs["tpgm apply"] = _common.compiled_costs(apply, param_bytes)

    # The update alone, on the same tree, in the same rounds: FTP's added time per
    # step, measured without the forward and backward passes' noise.
    grads = jax.tree_util.tree_map(lambda p: jnp.full_like(p, 1e-3), params0)
    for name, tx in optimizers.items():
        steps[f"update only: {name}"], costs[f"update only: {name}"] = _common.update_runner(
            tx, params0, grads, param_bytes
        )

    load_start = _common.load_average()
    cpu = {}
    times = _common.interleaved_times(steps, rounds=args.rounds, warmup=args.warmup, cpu_times=cpu)
    summary = {}
    for name, samples in times.items():
        summary[name] = {**_common.summarize(samples), **costs[name]}
        summary[name]["cpu_median_s"] = statistics.median(cpu[name])
    for name, base in ftp_rows.items():
        entry = summary[name]
        entry["overhead_vs_base"] = _common.paired_ratio(times, name, base) - 1
        entry["overhead_vs_base_cpu_time"] = _common.paired_ratio(cpu, name, base) - 1
        entry["overhead_ratio_of_medians"] = entry["median_s"] / summary[base]["median_s"] - 1
        # FTP's added time measured on the update alone, over the base's full step.
        added = [
            (f - b) / step
            for f, b, step in zip(
                times[f"update only: {name}"],
                times[f"update only: {base}"],
                times[base],
                strict=True,
            )
        ]
        entry["overhead_from_update_only"] = statistics.median(added)
        entry["added_ms_update_only"] = 1e3 * (
            summary[f"update only: {name}"]["median_s"]
            - summary[f"update only: {base}"]["median_s"]
        )
    for name in ("tpgm update_step", "tpgm apply"):
        summary[name]["relative_to_sgd_momentum_step"] = _common.paired_ratio(
            times, name, "sgd+momentum"
        )
        summary[name]["relative_to_sgd_momentum_step_cpu_time"] = _common.paired_ratio(
            cpu, name, "sgd+momentum"
        )
    table = []
    for name, entry in summary.items():
        if "overhead_vs_base" in entry:
            relation = (
                f"{100 * entry['overhead_vs_base']:+.2f}% (CPU time "
                f"{100 * entry['overhead_vs_base_cpu_time']:+.2f}%; from the update alone "
                f"{100 * entry['overhead_from_update_only']:+.2f}%)"
            )
        elif "relative_to_sgd_momentum_step" in entry:
            relation = (
                f"{entry['relative_to_sgd_momentum_step']:.3f}x an sgd+momentum step (CPU time "
                f"{entry['relative_to_sgd_momentum_step_cpu_time']:.3f}x)"
            )
        else:
            relation = ""
        table.append(
            [
                name,
                1e3 * entry["median_s"],
                f"{1e3 * entry['p10_s']:.0f}-{1e3 * entry['p90_s']:.0f}",
                1e3 * entry["cpu_median_s"],
                relation,
            ]
        )
    model_name = "ResNet-50" if not args.quick else "small ResNet (smoke run)"
    memory_table = [
        [name, entry.get("temp_per_param_byte", ""), entry.get("peak_per_param_byte", "")]
        for name, entry in {**summary, **memory_only}.items()
    ]
    _common.print_table(
        ["step", "median ms", "p10-p90 ms", "CPU ms", "overhead / relative"],
        table,
        title=f"{model_name} ({n_params:,} params), batch {args.batch_size} at "
        f"{args.image_size}x{args.image_size}, {args.rounds} rounds",
    )
    _common.print_table(
        ["step", "XLA temp / params", "XLA peak / params"],
        memory_table,
        title="Memory of each compiled step, in parameter-sized units",
    )
    result = {
        "benchmark": "train_step",
        "machine": _common.machine(),
        "load_average_start": load_start,
        "load_average_end": _common.load_average(),
        "settings": {
            "model": "benchmarks/_resnet.py ResNet50" + (" (smoke-run size)" if args.quick else ""),
            "params": n_params,
            "batch_size": args.batch_size,
            "image_size": args.image_size,
            "rounds": args.rounds,
            "warmup": args.warmup,
            "mask": "every leaf constrained (ftp's and tpgm's default)",
            "tpgm": "radius_learning_rate=1e-2, max_iters=1, mars norm; held-out batch = "
            "training batch size",
        },
        "steps": summary,
        "memory_only": memory_only,
    }
    default_name = f"train_step_{args.device}{'_quick' if args.quick else ''}.json"
    _common.write_json(result, args.out, default_name)
    return result


if __name__ == "__main__":
    main()
