"""Independent fine-tuning runs in worker processes, with results identical to a serial run.

The experiment's runs (every row, grid value, seed and regime) share nothing but
the pre-trained model and the data, so they run in a pool of worker processes,
one per available core. Each worker is a fresh Python process (``spawn``) whose
XLA runs on one thread (:data:`SINGLE_THREAD_XLA_FLAGS`), so that ``N`` workers
use ``N`` cores without fighting over them, and a run's numbers do not depend on
how many workers there are, or which one runs it: one worker and eight give the
same bits (a run is a deterministic function of its config, seed and data; the
test ``test_parallel_runs_equal_serial`` checks it). A run that needs a tuned
setting waits for its row's tuning runs (the choice is made on their validation
accuracies), and is queued as soon as they are done.

Signals: the workers live in their own process group, so a Ctrl-C at the
terminal reaches the experiment's process alone; it tells each busy worker to
save its run's checkpoint and stop (one SIGTERM each), waits for them, and
stops (exit 130 after Ctrl-C, 143 after SIGTERM). A worker whose parent dies is
killed by the OS (Linux ``PR_SET_PDEATHSIG``), so no orphan keeps writing to the
work directory. The next start resumes every run from its last checkpoint.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
import signal
import sys
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

__all__ = [
    "SINGLE_THREAD_XLA_FLAGS",
    "Job",
    "default_workers",
    "run_jobs",
]

# XLA's CPU backend on one thread: a worker per core, and the same numbers in every worker.
SINGLE_THREAD_XLA_FLAGS = ("--xla_cpu_multi_thread_eigen=false", "intra_op_parallelism_threads=1")


class Job(NamedTuple):
    """One fine-tuning run of the experiment: a row of a regime, with a setting and a seed."""

    regime: int  # the regime's percent
    label: str  # the row's label
    value: float | None  # the tuned setting's value (None: the row as it is)
    seed: int

    def describe(self, tune: str = "") -> str:
        setting = f" {tune}={self.value:g}" if self.value is not None else ""
        return f"[{self.regime}%] {self.label}{setting} seed {self.seed}"


def default_workers() -> int:
    """One worker per core this process may run on."""
    from ftp_jax.data import available_cores

    return max(1, available_cores())


def _single_thread_flags(existing: str) -> str:
    """``existing`` XLA flags with the single-thread ones (each set once)."""
    flags = existing.split()
    names = {flag.split("=")[0].lstrip("-") for flag in flags}
    for flag in SINGLE_THREAD_XLA_FLAGS:
        if flag.split("=")[0].lstrip("-") not in names:
            flags.append(flag)
    return " ".join(flags)


def _die_with_parent() -> None:
    """Linux: the OS kills this process when its parent dies (no orphan workers)."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # no prctl: the pool's broken pipe ends it later
        pass


# The worker process's run function, set by its initializer.
_RUN: Callable[[Job], dict[str, Any]] | None = None


def _initialize(make_runner: Callable[[], Callable[[Job], dict[str, Any]]]) -> None:
    global _RUN
    os.setpgrp()  # the terminal's Ctrl-C goes to the parent only, which stops us cleanly
    _die_with_parent()
    os.environ["XLA_FLAGS"] = _single_thread_flags(os.environ.get("XLA_FLAGS", ""))
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    _RUN = make_runner()


def _work(job: Job) -> tuple[Job, dict[str, Any]]:
    assert _RUN is not None, "the worker was not initialized"
    return job, _RUN(job)


class Interrupted(Exception):
    """The experiment was asked to stop (``signum``) while workers ran."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def run_jobs(
    first: Iterable[Job],
    make_runner: Callable[[], Callable[[Job], dict[str, Any]]],
    *,
    workers: int,
    then: Callable[[Job, dict[str, Any]], Iterable[Job]] = lambda job, run: (),
    started: Callable[[Job, int, int], None] = lambda job, index, total: None,
    finished: Callable[[Job, dict[str, Any], int, int], None] = lambda job, run, i, n: None,
    total: int | None = None,
) -> dict[Job, dict[str, Any]]:
    """Runs ``first`` (and the jobs ``then`` adds as runs finish) on ``workers`` processes.

    Args:
      first: the jobs that can start now, largest first (for a balanced pool).
      make_runner: a picklable function, called once in each worker, returning the
        function that runs one job there (and returns its run record).
      workers: worker processes (at least 1; a pool of one gives the same numbers).
      then: called in this process with each finished job and its record; returns
        the jobs that may start now (a tuned row's other seeds once its trials end).
      started, finished: progress callbacks (the job, its 1-based index, the total).
      total: the number of jobs in all (for progress), if known in advance.

    Returns:
      Every job's run record.

    Raises:
      KeyboardInterrupt / SystemExit(143): after Ctrl-C / SIGTERM here, once every
        busy worker has saved its run and stopped.
    """
    queue = list(first)
    total = total or len(queue)
    done: dict[Job, dict[str, Any]] = {}
    context = multiprocessing.get_context("spawn")
    pool = concurrent.futures.ProcessPoolExecutor(
        max_workers=max(1, workers),
        mp_context=context,
        initializer=_initialize,
        initargs=(make_runner,),
    )
    received: list[int] = []

    def handle(signum, frame):
        del frame
        if received:  # a second signal: stop at once
            raise KeyboardInterrupt
        received.append(signum)
        print(
            "\nstopping: each running fine-tuning run saves a checkpoint first "
            "(a second Ctrl-C stops at once); run the same command again to resume",
            file=sys.stderr,
            flush=True,
        )

    previous = {}
    for signum in (signal.SIGINT, signal.SIGTERM):
        try:
            previous[signum] = signal.signal(signum, handle)
        except ValueError:  # not the main thread
            pass
    running: dict[concurrent.futures.Future, Job] = {}
    index = 0
    try:
        while (queue or running) and not received:
            while queue and len(running) < max(1, workers) and not received:
                job = queue.pop(0)
                index += 1
                started(job, index, total)
                running[pool.submit(_work, job)] = job
            finished_now, _ = concurrent.futures.wait(
                running, timeout=0.2, return_when=concurrent.futures.FIRST_COMPLETED
            )
            for future in finished_now:
                job = running.pop(future)
                _, run = future.result()
                done[job] = run
                finished(job, run, len(done), total)
                queue.extend(then(job, run))
    except BaseException:
        _stop_workers(pool)
        raise
    finally:
        if received:
            _stop_workers(pool)
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        pool.shutdown(wait=True, cancel_futures=True)
    if received:
        raise Interrupted(received[0])
    return done


# How long a worker may take to save its run and stop after SIGTERM, before SIGKILL.
STOP_GRACE_SECONDS = 120.0


def _stop_workers(pool: concurrent.futures.ProcessPoolExecutor) -> None:
    """One SIGTERM to each live worker (each saves its run and stops), waits for them, and
    kills (SIGKILL) any still alive after ``STOP_GRACE_SECONDS``: a worker stuck in a
    failing writer must not keep the experiment from ending (its run resumes from its
    last checkpoint)."""
    import time

    processes = list(getattr(pool, "_processes", {}).values())
    for process in processes:
        if process.is_alive():
            try:
                os.kill(process.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + STOP_GRACE_SECONDS
    for process in processes:
        process.join(timeout=max(0.0, deadline - time.monotonic()))
    for process in processes:
        if process.is_alive():
            process.kill()
            process.join(timeout=10)


def interrupted_exit(error: Interrupted) -> BaseException:
    """The exception that ends the experiment after ``error``: Ctrl-C or SIGTERM's."""
    if error.signum == signal.SIGINT:
        return KeyboardInterrupt()
    return SystemExit(128 + int(error.signum))
