"""The DomainNet recipe's training step fed by the real input pipeline vs by on-device batches.

Commands (from the repository root)::

    .venv/bin/python benchmarks/recipe_throughput.py                 # CPU, a small CLIP RN50
    .venv/bin/python benchmarks/recipe_throughput.py --device gpu --model clip_rn50 \\
        --batch-size 256 --method ftp                                # the real model on a GPU
    .venv/bin/python benchmarks/recipe_throughput.py --quick         # smoke run (seconds)

The step is the recipe's (:func:`ftp_jax.recipes.domainnet`: SGD momentum 0.9,
weight decay 5e-4, lr 1e-2; ``--method ftp`` is its ``ftp_sgd``, ``vanilla``
its ``vanilla``): :func:`ftp_jax.train.make_train_step` over the recipe's model
(:func:`ftp_jax.recipes.build_model`) and :func:`ftp_jax.train.build_method`,
jitted with the state donated and the CLIP normalization applied on the device
to ``uint8`` batches, exactly as ``fit`` runs it. Two feeds, timed in
alternating rounds of ``--steps`` steps each (one wait for the device per
round, none per step, as in ``fit``):

- ``real``: ``SourceTrainData`` over ``synthetic_photos`` (320 DomainNet-sized
  JPEGs, see ``benchmarks/input_pipeline.py``, repeated so that one epoch spans
  the whole benchmark: every image is still read and decoded each time) with
  ``train_transform(224, output="uint8")``, ``--workers`` threads, the next
  batch put on the device while the step runs (the loop's double buffering);
- ``synthetic``: one ``uint8`` batch already on the device, every step.

``real / synthetic`` is the fraction of the step rate the input pipeline
sustains (1.0: not input-bound). On the CPU the input workers and the step
share the same cores, so the model must be large enough for decoding to be a
small part of the work: the default CPU model is CLIP RN50's structure at a
quarter of its width (``--width 16``: all four stages of 3-4-6-3 blocks, about
1/16 of RN50's FLOPs, 1.6M parameters) at 224 px, batch 16.

Prints a table; ``--out benchmarks/results/recipe_throughput_<device>[_<model>_<method>].json``
updates the committed JSON.
"""

from __future__ import annotations

import argparse
import collections.abc
import dataclasses
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import _common, input_pipeline  # noqa: E402

MODELS = {"clip_rn50": "clip_resnet50", "clip_vit_b16": "clip_vit_b16"}
METHODS = {"ftp": "ftp_sgd", "vanilla": "vanilla"}
QUICK_MODELS = {  # --quick: the same structures, tiny
    "clip_rn50": dict(layers=(1, 1, 1, 1), width=8, heads=2, output_dim=16),
    "clip_vit_b16": dict(patch_size=8, width=16, layers=1, heads=2, output_dim=8),
}


def build(args):
    """``(step, state, params)``: the recipe's jitted step, its start state, the parameter count."""
    import jax
    from flax import nnx

    from ftp_jax.recipes.config import domainnet
    from ftp_jax.recipes.run import build_model, row_axes_of
    from ftp_jax.train.methods import build_method
    from ftp_jax.train.steps import initial_train_state, make_train_step, split_model

    config = domainnet(METHODS[args.method], model=MODELS[args.model])
    config = dataclasses.replace(
        config,
        image_size=args.size,
        num_classes=345,
        finetune=dataclasses.replace(
            config.finetune, batch_size=args.batch_size, compute_dtype=args.compute_dtype
        ),
    )
    overrides = {} if args.width is None else {"width": args.width}
    if args.quick:
        overrides = QUICK_MODELS[args.model]
    model = build_model(config, rngs=nnx.Rngs(0), **overrides)
    graphdef, params, model_state = split_model(model)
    method = build_method(config.finetune, params, 1000, row_axes=row_axes_of(config))
    device = jax.devices()[0]
    state = jax.device_put(
        initial_train_state(params, model_state, method.tx),
        device,
    )
    from ftp_jax import data

    normalization = (tuple(data.CLIP_MEAN), tuple(data.CLIP_STD))
    step = jax.jit(
        make_train_step(graphdef, method.tx, normalization=normalization), donate_argnums=0
    )
    return step, state, sum(x.size for x in jax.tree_util.tree_leaves(params))


class Repeated(collections.abc.Sequence):
    """``source`` repeated to ``length`` examples (``[i]`` is ``source[i % len(source)]``).

    One epoch of it covers the whole benchmark, so that no epoch starts (and waits
    for its first batch) inside a timed round, whatever the batch size.
    """

    def __init__(self, source, length: int):
        self.source, self.length = source, length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int):
        return self.source[index % len(self.source)]

    def __getitems__(self, indices):
        return self.source.__getitems__([index % len(self.source) for index in indices])


def real_batches(source, args):
    """The recipe's training batches, epoch after epoch, placed one step ahead."""
    import jax

    from ftp_jax import data
    from ftp_jax.train.inputs import SourceTrainData
    from ftp_jax.train.loop import _placed_ahead

    transform = data.train_transform(
        args.size, mean=data.CLIP_MEAN, std=data.CLIP_STD, output="uint8"
    )
    length = args.batch_size * (args.steps * (args.rounds + args.warmup) + 2)
    source = Repeated(source, max(len(source), length))
    train = SourceTrainData(source, args.batch_size, transform, shard=(0, 1), workers=args.workers)
    device = jax.devices()[0]
    epoch = 0
    while True:
        batches = train.batches(seed=0, epoch=epoch, start=0)
        yield from _placed_ahead(batches, lambda batch: jax.device_put(batch, device))
        epoch += 1


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    _common.add_common_flags(parser, default_rounds=8)
    parser.add_argument("--model", choices=tuple(MODELS), default="clip_rn50")
    parser.add_argument("--method", choices=tuple(METHODS), default="ftp")
    parser.add_argument("--batch-size", type=int, default=None, help="default: 16 CPU, 256 GPU")
    parser.add_argument(
        "--width", type=int, default=None, help="CLIP RN50's width (default: 16 CPU, 64 GPU)"
    )
    parser.add_argument("--size", type=int, default=224, help="crop size in pixels")
    parser.add_argument(
        "--compute-dtype",
        choices=("float32", "bfloat16"),
        default=None,
        help="the model's compute dtype (default: float32 CPU, the recipe's bfloat16 GPU)",
    )
    parser.add_argument("--steps", type=int, default=None, help="steps per round (default 4)")
    parser.add_argument("--workers", type=int, default=None, help="default: the cores")
    parser.add_argument("--data-dir", type=Path, default=None, help="default: a temporary dir")
    parser.set_defaults(warmup=1)  # a round of each feed: compiles, fills the workers
    args = parser.parse_args(argv)
    _common.select_device(args.device)
    import jax
    import numpy as np

    from ftp_jax import data

    gpu = args.device == "gpu"
    if args.batch_size is None:
        args.batch_size = 256 if gpu else 16
    if args.compute_dtype is None:  # XLA on the CPU emulates bfloat16 convolutions slowly
        args.compute_dtype = "bfloat16" if gpu else "float32"
    if args.width is None and not gpu and args.model == "clip_rn50":
        args.width = 16
    if args.quick:
        args.rounds, args.warmup, args.batch_size, args.size = 1, 1, 4, 64
    args.steps = args.steps or (2 if args.quick else 4)
    if args.workers is None:
        args.workers = data.available_cores()
    data_dir = args.data_dir or Path(tempfile.gettempdir(), "ftp_jax_benchmark_tfds")
    source = input_pipeline.prepared_source(data_dir)

    step, state, params = build(args)
    holder = {"state": state}
    real = real_batches(source, args)
    rng = np.random.default_rng(0)
    synthetic = jax.device_put(
        {
            "image": rng.integers(0, 256, (args.batch_size, args.size, args.size, 3), np.uint8),
            "label": rng.integers(0, 345, (args.batch_size,)).astype(np.int32),
        },
        jax.devices()[0],
    )

    def run(feed):
        def steps():
            for _ in range(args.steps):
                batch = next(real) if feed == "real" else synthetic
                holder["state"], _ = step(holder["state"], batch)
            jax.block_until_ready(holder["state"])

        return steps

    cpu_times = {}
    load_before = _common.load_average()
    times = _common.interleaved_times(
        {"real": run("real"), "synthetic": run("synthetic")},
        rounds=args.rounds,
        warmup=args.warmup,
        cpu_times=cpu_times,
    )
    images = args.steps * args.batch_size
    rates = {feed: images / statistics.median(t) for feed, t in times.items()}
    ratio = 1.0 / _common.paired_ratio(times, "real", "synthetic")
    # This process's CPU seconds (all threads: the step's and the input workers'): what the
    # input costs on top of the step, whatever other processes do to the wall times.
    cpu_ratio = 1.0 / _common.paired_ratio(cpu_times, "real", "synthetic")
    model = (
        f"{args.model}" + (f" width {args.width}" if args.width else "") + f", {params:,} params"
    )
    if args.quick:
        model += " (quick: tiny)"
    _common.print_table(
        ["feed", "img/s", "step ms"],
        [[feed, rate, 1000 * args.batch_size / rate] for feed, rate in rates.items()]
        + [["real / synthetic", ratio, ""], ["same, in CPU time", cpu_ratio, ""]],
        f"DomainNet recipe step ({args.method}, {model}, {args.size} px, batch "
        f"{args.batch_size}) on {jax.devices()[0].device_kind}; real input: "
        f"{args.workers} worker threads",
    )
    result = {
        "benchmark": "recipe_throughput",
        "model": args.model,
        "width": args.width,
        "params": params,
        "quick": args.quick,
        "method": args.method,
        "recipe_method": METHODS[args.method],
        "compute_dtype": args.compute_dtype,
        "image_size": args.size,
        "batch_size": args.batch_size,
        "workers": args.workers,
        "steps_per_round": args.steps,
        "rounds": args.rounds,
        "images_per_s": rates,
        "real_over_synthetic": ratio,
        "real_over_synthetic_cpu_time": cpu_ratio,
        "times_s": times,
        "cpu_times_s": cpu_times,
        "load_average_before": load_before,
        "load_average": _common.load_average(),
        "machine": _common.machine(),
    }
    name = f"recipe_throughput_{args.device}" + (f"_{args.model}_{args.method}" if gpu else "")
    _common.write_json(result, args.out, f"{name}.json")
    return result


if __name__ == "__main__":
    main()
