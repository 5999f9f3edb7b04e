"""Images/s of the DomainNet training transform on DomainNet-sized JPEGs, by worker count.

Command (from the repository root)::

    .venv/bin/python benchmarks/input_pipeline.py            # 0, 1, ... cores workers
    .venv/bin/python benchmarks/input_pipeline.py --quick    # smoke run (seconds)

Data: ``synthetic_photos`` (:mod:`ftp_jax.data._photos`): 320 JPEGs (quality 90)
of 300-500 px a side made from scikit-learn's sample photos, as a TFDS
``array_record`` dataset, prepared into ``--data-dir`` on the first run (no
download). Pipeline: :func:`ftp_jax.data.batches` exactly as the recipes run
it (:class:`ftp_jax.train.inputs.SourceTrainData`): read a batch of records,
decode each JPEG (Pillow, through TFDS), ``train_transform(224,
output="uint8")`` (random resized crop, flip; the normalization runs on the
device), stack; ``workers`` threads of grain's prefetch make whole batches
ahead of the consumer. ``workers=0`` is the calling thread.

Reported per worker count: images/s (median over ``--rounds`` epochs' worth of
batches), images/s per worker, and the scaling efficiency
``rate(w) / (w * rate(1))``. Also, at 1 and at all cores: the same work in
worker *processes* (``concurrent.futures.ProcessPoolExecutor``, each process
opening the source and making whole batches with
:func:`ftp_jax.data.read_examples`, the batch pickled back), which is what
threads are chosen over. Finally, for stated GPU training rates, how many
cores at the measured rate per core would keep the GPU fed.

Prints its tables; ``--out benchmarks/results/input_pipeline_cpu.json`` updates
the committed JSON.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import _common  # noqa: E402

# GPU training rates (images/s at 224 px, one GPU). The first is this project's own
# measurement; the others are orders of magnitude from public benchmark tables:
GPU_RATES = {
    "ResNet-50 on H200 (float32), this project": {
        "images_per_s": 3340,
        "source": (
            "benchmarks/results/train_step_gpu.json: an sgd+momentum training step of "
            "ResNet-50, batch 128 at 224 px, float32 (TF32 matmuls), 38.3 ms on one H200 "
            "= 3,340 img/s (ftp(sgd+momentum): 49.1 ms = 2,610 img/s)"
        ),
    },
    "ResNet-50 on A100 (AMP)": {
        "images_per_s": 3000,
        "source": (
            "NVIDIA DeepLearningExamples, ResNet-50 v1.5 training performance tables "
            "(PyTorch/TensorFlow, one A100 80GB, mixed precision, batch 256): about 2,700-3,000 "
            "img/s; rounded up to 3,000"
        ),
    },
    "ViT-B/16 on A100 (AMP)": {
        "images_per_s": 1000,
        "source": (
            "timm's benchmark tables (vit_base_patch16_224 training, one A100, AMP): "
            "about 900-1,000 img/s; rounded to 1,000"
        ),
    },
}
DATASET = "synthetic_photos"


def prepared_source(data_dir: Path):
    """The ``synthetic_photos`` train split, prepared into ``data_dir`` if needed."""
    from ftp_jax import data

    data.prepare_datasets(data_dir, names=(DATASET,))
    return data.open_split(DATASET, "train", data_dir)


def pipeline(source, *, batch_size: int, workers: int, size: int, seed: int = 0, epoch: int = 0):
    """The recipes' training batches (:class:`SourceTrainData`) of one epoch."""
    from ftp_jax import data
    from ftp_jax.train.inputs import SourceTrainData

    transform = data.train_transform(size, output="uint8")
    train = SourceTrainData(source, batch_size, transform, shard=(0, 1), workers=workers)
    return train.batches(seed, epoch, 0)


def thread_rate(source, *, batch_size: int, workers: int, size: int, batches: int):
    """``(images/s, images per CPU second)`` of the first ``batches`` batches of an epoch.

    Timed from the iterator's creation (the workers start with it), so that batches
    made ahead before the clock starts do not count. The CPU seconds are this
    process's, all threads: the per-core rate, which other processes competing for
    the cores do not change (the wall rate they do).
    """
    start, start_cpu = time.perf_counter(), time.process_time()
    iterator = pipeline(source, batch_size=batch_size, workers=workers, size=size)
    for _ in range(batches):
        next(iterator)
    wall, cpu = time.perf_counter() - start, time.process_time() - start_cpu
    iterator.close()
    return batches * batch_size / wall, batches * batch_size / cpu


_PROCESS_SOURCE = {}


def _open_in_process(data_dir: str) -> None:
    from ftp_jax import data

    _PROCESS_SOURCE["source"] = data.open_split(DATASET, "train", data_dir)


def _process_batch(indices, size: int):
    """A batch made in a worker process, and the worker's CPU seconds for it."""
    from ftp_jax import data

    start = time.process_time()
    transform = data.train_transform(size, output="uint8")
    batch = data.read_examples(_PROCESS_SOURCE["source"], indices, transform=transform)
    return batch, time.process_time() - start


def process_rate(data_dir: Path, *, batch_size: int, workers: int, size: int, batches: int):
    """``(images/s, images per CPU second)`` of the same work in ``workers`` processes.

    The CPU seconds are the workers' (making the batches) and this process's
    (receiving them: unpickling).
    """
    import numpy as np

    plans = [np.arange(i * batch_size, (i + 1) * batch_size) % 320 for i in range(batches + 1)]
    with concurrent.futures.ProcessPoolExecutor(
        workers, initializer=_open_in_process, initargs=(str(data_dir),)
    ) as pool:
        list(pool.map(_process_batch, plans[:workers], [size] * workers))  # start-up
        start, start_cpu = time.perf_counter(), time.process_time()
        done = list(pool.map(_process_batch, plans[1:], [size] * batches))  # in order
        wall = time.perf_counter() - start
        cpu = time.process_time() - start_cpu + sum(seconds for _, seconds in done)
    return batches * batch_size / wall, batches * batch_size / cpu


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    _common.add_common_flags(parser, default_rounds=3)
    parser.add_argument("--data-dir", type=Path, default=None, help="default: a temporary dir")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument(
        "--batches", type=int, default=10, help="timed batches per round (at most an epoch)"
    )
    parser.add_argument("--size", type=int, default=224, help="crop size in pixels")
    parser.add_argument("--max-workers", type=int, default=None, help="default: the cores")
    args = parser.parse_args(argv)
    _common.select_device(args.device)
    from ftp_jax import data

    if args.quick:
        args.rounds, args.batches, args.batch_size = 1, 2, 8
    cores = data.available_cores()
    max_workers = args.max_workers or cores
    data_dir = args.data_dir or Path(tempfile.gettempdir(), "ftp_jax_benchmark_tfds")
    source = prepared_source(data_dir)
    settings = dict(batch_size=args.batch_size, size=args.size, batches=args.batches)

    counts = [0, *range(1, max_workers + 1)]
    kinds = [("threads", w) for w in counts] + [("processes", w) for w in sorted({1, max_workers})]
    samples = {kind: [] for kind in kinds}
    load_before = _common.load_average()
    for _ in range(args.rounds):  # interleaved: load that drifts hits every setting alike
        for kind, workers in kinds:
            measure = thread_rate if kind == "threads" else process_rate
            where = source if kind == "threads" else data_dir
            samples[kind, workers].append(measure(where, workers=workers, **settings))

    def summary(kind, workers):
        wall = statistics.median(s[0] for s in samples[kind, workers])
        cpu = statistics.median(s[1] for s in samples[kind, workers])
        return {"images_per_s": wall, "images_per_cpu_s": cpu}

    table = {kind: {} for kind in ("threads", "processes")}
    for kind, workers in kinds:
        table[kind][str(workers)] = {
            **summary(kind, workers),
            "samples": [list(s) for s in samples[kind, workers]],
        }
    one = table["threads"]["1"]["images_per_s"]
    rows = []
    for kind, workers in kinds:
        entry = table[kind][str(workers)]
        entry["images_per_s_per_worker"] = entry["images_per_s"] / max(workers, 1)
        entry["scaling_efficiency"] = entry["images_per_s"] / (max(workers, 1) * one)
        rows.append(
            [
                kind,
                workers,
                entry["images_per_s"],
                entry["images_per_s_per_worker"],
                entry["scaling_efficiency"],
                entry["images_per_cpu_s"],
            ]
        )
    _common.print_table(
        ["workers", "count", "img/s", "img/s per worker", "scaling eff.", "img per CPU s"],
        rows,
        f"{DATASET} train ({len(source)} JPEGs, 300-500 px), train_transform({args.size}, "
        f'output="uint8"), batch {args.batch_size}, {cores} cores, load average '
        f"{load_before}; threads 0 = the calling thread; scaling vs 1 thread",
    )
    # The per-core rate: images per CPU second of one worker thread (the wall rate of one
    # worker equals it only on an idle core).
    per_core = table["threads"]["1"]["images_per_cpu_s"]
    needs = {}
    for name, gpu in GPU_RATES.items():
        needs[name] = {**gpu, "cores_needed": gpu["images_per_s"] / per_core}
    _common.print_table(
        ["GPU step rate (stated)", "img/s", "cores at the measured img/s per core"],
        [[name, g["images_per_s"], g["cores_needed"]] for name, g in needs.items()],
        f"Cores to keep a GPU fed at {per_core:.0f} img/s per core (images per CPU second, "
        "1 worker thread; linear scaling with the cores assumed)",
    )
    for name, gpu in GPU_RATES.items():
        print(f"- {name}: {gpu['source']}.")
    result = {
        "benchmark": "input_pipeline",
        "dataset": DATASET,
        "examples": len(source),
        "image_sides_px": [300, 500],
        "transform": f'train_transform({args.size}, output="uint8")',
        "batch_size": args.batch_size,
        "batches_per_round": args.batches,
        "rounds": args.rounds,
        "cores": cores,
        "threads": table["threads"],
        "processes": table["processes"],
        "images_per_s_per_core": per_core,
        "gpu_needs": needs,
        "load_average_before": load_before,
        "load_average": _common.load_average(),
        "machine": _common.machine(),
    }
    _common.write_json(result, args.out, "input_pipeline_cpu.json")
    return result


if __name__ == "__main__":
    main()
