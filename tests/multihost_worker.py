"""One process of a multi-host recipe run on CPU, for ``tests/test_multihost.py``.

``python -m tests.multihost_worker --process_id I --num_processes N --port P
--devices D --data_dir DIR --runs NAME:METHOD:SHARD[:SIGTERM] ... --out_dir DIR``

Each process simulates ``D`` CPU devices and joins the others through
``jax.distributed.initialize`` (CPU collectives over gloo), so that N processes
form one mesh of ``N * D`` devices, as N hosts would. Every run is a recipe
(``domainnet(METHOD)`` on the fake DomainNet, with a tiny dense model for a
small compile cost; ``SHARD``: 1 to shard params and optimizer state) written
to ``out_dir/NAME``; its summary goes to stdout as one JSON line per run, with a
digest of its final training state (params, optimizer and model state, RNG).

``SIGTERM``: the last process sends itself SIGTERM after this many training
steps of the run, as a scheduler would on preemption (see :func:`_sigterm_after`);
the run prints the steps it checkpointed and its exit code, and the process
exits with that code.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--process_id", type=int, required=True)
    parser.add_argument("--num_processes", type=int, required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--devices", type=int, required=True)
    parser.add_argument("--data_dir", required=True)
    parser.add_argument("--out_dir", required=True)
    parser.add_argument("--runs", nargs="+", required=True)
    args = parser.parse_args(argv)

    # This host's devices, after the flags the test passes (conftest's codegen flag).
    flags = os.environ.get("XLA_FLAGS", "").split()
    flags.append(f"--xla_force_host_platform_device_count={args.devices}")
    os.environ["XLA_FLAGS"] = " ".join(flags)
    os.environ["JAX_PLATFORMS"] = "cpu"
    global jax
    import jax

    jax.config.update("jax_numpy_rank_promotion", "raise")
    if args.num_processes > 1:
        jax.distributed.initialize(
            f"localhost:{args.port}",
            num_processes=args.num_processes,
            process_id=args.process_id,
            initialization_timeout=120,
        )
    from flax import nnx

    from ftp_jax.recipes import domainnet, run_recipe
    from tests import fake_tfds

    reads = _record_training_reads()
    final, saved = _record_final_state(), _record_saves()
    for run in args.runs:
        name, method, shard, *sigterm = run.split(":")
        _sigterm_after(int(sigterm[0]) if sigterm else None)
        reads.clear()
        saved.clear()
        config = dataclasses.replace(
            fake_tfds.fake_recipe(domainnet(method, model="torchvision_resnet50")),
            shard_params=shard == "1",
        )
        # Built in one jitted call: on several hosts every eager op of the random
        # initialization would be a multi-host computation compiled on its own.
        model = nnx.jit(lambda: fake_tfds.TinyNet(nnx.Rngs(0)))()
        try:
            summary = run_recipe(
                config,
                data_dir=args.data_dir,
                workdir=os.path.join(args.out_dir, name),
                weights=None,
                model=model,
                progress=False,
            )
        except SystemExit as stopped:
            print(
                "STOPPED " + json.dumps({"run": name, "code": stopped.code, "saved": saved}),
                flush=True,
            )
            raise
        print("SUMMARY " + json.dumps({"run": name, **summary, **final}), flush=True)
        print("READS " + json.dumps({"run": name, **reads}), flush=True)


def _record_training_reads() -> dict:
    """Records what this host reads for training and what the train step receives.

    ``examples``: per epoch, a digest of every training example this host read (the
    transformed image: the same example gives the same bytes on every host, a pure
    function of seed, epoch and index); ``global_rows``: the row count of every
    global batch passed to the train step.
    """
    import hashlib

    from ftp_jax.train import inputs, placement

    reads: dict = {}
    batches, place = inputs.SourceTrainData.batches, placement.Placement.batch

    def recording_batches(self, seed, epoch, start):
        for batch in batches(self, seed, epoch, start):
            digests = reads.setdefault("examples", {}).setdefault(str(epoch), [])
            digests += [hashlib.sha1(image.tobytes()).hexdigest() for image in batch["image"]]
            yield batch

    def recording_place(self, batch, *, host_rows=False):
        placed = place(self, batch, host_rows=host_rows)
        if host_rows or jax.process_count() == 1:
            reads.setdefault("global_rows", []).append(int(placed["label"].shape[0]))
        return placed

    inputs.SourceTrainData.batches = recording_batches
    placement.Placement.batch = recording_place
    return reads


def _record_final_state() -> dict:
    """Records ``{"final_state": digest}`` of the training state at the end of every run.

    The digest covers every leaf of the global state (gathered from all hosts), so
    equal digests mean bit-identical params, optimizer state, model state and RNG.
    """
    import hashlib

    import numpy as np
    from jax.experimental import multihost_utils

    from ftp_jax.train import loop

    final: dict = {}
    result = loop._Run.result

    def recording_result(self, *args, **kwargs):
        digest = hashlib.sha1()
        for leaf in multihost_utils.process_allgather(jax.tree.leaves(self.state), tiled=True):
            digest.update(np.ascontiguousarray(leaf).tobytes())
        final["final_state"] = digest.hexdigest()
        return result(self, *args, **kwargs)

    loop._Run.result = recording_result
    return final


def _record_saves() -> list:
    """Records the step of every checkpoint this process writes (for all runs: cleared
    per run by the caller)."""
    from ftp_jax.train.checkpoint import Checkpointer

    saved: list = []
    save = Checkpointer.save

    def recording_save(self, step, *args, **kwargs):
        saved.append(step)
        return save(self, step, *args, **kwargs)

    Checkpointer.save = recording_save
    return saved


_COUNTERS = "PREEMPTION_CURRENT_COUNTER/"  # where each host reports its step to the protocol


_fit = None  # the recipe's `fit`, without a SIGTERM hook


def _sigterm_after(step: int | None) -> None:
    """The last process sends itself SIGTERM after training step ``step`` of the next run.

    Every process then waits (in the step hook, before the loop's preemption check)
    until all have reported their step to JAX's preemption sync protocol. The
    protocol picks the step after the fastest host's last check, so every host
    stops at ``step``: the test does not depend on how fast the notice travels.
    (The key is the one XLA's preemption sync manager writes, as of jaxlib 0.10.)
    ``None``: no SIGTERM.
    """
    import signal
    import time

    from jax._src import distributed

    from ftp_jax.recipes import run

    global _fit
    fit = _fit = _fit or run.fit
    if step is None:
        run.fit = fit
        return

    def fit_with_sigterm(*args, **kwargs):
        done = [0]

        def after_step(state):
            del state
            done[0] += 1
            if done[0] != step:
                return
            if jax.process_index() == jax.process_count() - 1:
                os.kill(os.getpid(), signal.SIGTERM)
            client, deadline = distributed.global_state.client, time.time() + 60
            while len(client.key_value_dir_get(_COUNTERS)) < jax.process_count():
                if time.time() > deadline:
                    raise TimeoutError("the preemption sync protocol did not start in 60 s")
                time.sleep(0.02)

        return fit(*args, after_step=after_step, **kwargs)

    run.fit = fit_with_sigterm


if __name__ == "__main__":
    sys.exit(main())
