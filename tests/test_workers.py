"""The experiment's worker pool: same numbers for any worker count, follow-up jobs, signals."""

from __future__ import annotations

import os
import signal
import threading
import time

import numpy as np
import pytest

from ftp_jax.experiment.workers import (
    Interrupted,
    Job,
    _single_thread_flags,
    interrupted_exit,
    run_jobs,
)


class _Compute:
    """A picklable runner factory: each job reduces a seeded matrix product (XLA, jitted)."""

    def __call__(self):
        import jax
        import jax.numpy as jnp

        @jax.jit
        def work(x):
            return jnp.sum(jnp.tanh(x @ x.T) @ x, axis=0)

        def run(job: Job) -> dict:
            x = np.random.default_rng(job.seed).normal(size=(96, 64)).astype(np.float32)
            out = np.asarray(work(x))
            return {
                "seed": job.seed,
                "value": job.value,
                "bytes": out.tobytes().hex(),
                "flags": os.environ["XLA_FLAGS"],
                "pid": os.getpid(),
            }

        return run


class _SleepIgnoringTerm:
    """A worker stuck where SIGTERM does nothing (as one stuck in a failing writer)."""

    def __call__(self):
        def run(job: Job) -> dict:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            time.sleep(60)
            return {}

        return run


def test_single_thread_flags_are_added_once():
    flags = _single_thread_flags("--xla_force_host_platform_device_count=8")
    assert flags.split() == [
        "--xla_force_host_platform_device_count=8",
        "--xla_cpu_multi_thread_eigen=false",
        "intra_op_parallelism_threads=1",
    ]
    assert _single_thread_flags(flags) == flags
    assert "intra_op_parallelism_threads=2" in _single_thread_flags(
        "intra_op_parallelism_threads=2"
    )


def test_one_worker_and_two_give_the_same_bits_and_queue_follow_ups():
    first = [Job(100, "row", None, seed) for seed in range(3)]

    def then(job, run):  # after seed 0: one more job, as a tuned row's other seeds
        return [Job(100, "row", 1.0, 7)] if job.seed == 0 and job.value is None else []

    started, finished = [], []
    serial = run_jobs(first, _Compute(), workers=1, then=then)
    parallel = run_jobs(
        first,
        _Compute(),
        workers=2,
        then=then,
        started=lambda job, i, n: started.append((i, n)),
        finished=lambda job, run, i, n: finished.append((i, n)),
        total=4,
    )
    assert set(serial) == set(parallel) == {*first, Job(100, "row", 1.0, 7)}
    for job in serial:
        assert serial[job]["bytes"] == parallel[job]["bytes"], job
        assert "--xla_cpu_multi_thread_eigen=false" in parallel[job]["flags"]
    assert len({run["pid"] for run in parallel.values()}) >= 1
    assert sorted(started) == [(i, 4) for i in range(1, 5)]
    assert sorted(finished) == [(i, 4) for i in range(1, 5)]


def test_a_signal_stops_the_workers_and_the_pool(monkeypatch):
    """SIGTERM to the experiment's process: each busy worker gets one SIGTERM (here they
    ignore it, and are killed after the grace period), the pool stops and run_jobs raises
    Interrupted (SystemExit(143) for the command line)."""
    from ftp_jax.experiment import workers

    monkeypatch.setattr(workers, "STOP_GRACE_SECONDS", 2.0)
    timer = threading.Timer(4.0, os.kill, (os.getpid(), signal.SIGTERM))
    timer.start()
    started = time.perf_counter()
    try:
        with pytest.raises(Interrupted) as caught:
            run_jobs([Job(100, "row", None, s) for s in range(3)], _SleepIgnoringTerm(), workers=2)
    finally:
        timer.cancel()
    assert caught.value.signum == signal.SIGTERM
    assert time.perf_counter() - started < 50  # not the 60 s the jobs would sleep
    exit_error = interrupted_exit(caught.value)
    assert isinstance(exit_error, SystemExit) and exit_error.code == 143
    assert isinstance(interrupted_exit(Interrupted(signal.SIGINT)), KeyboardInterrupt)
