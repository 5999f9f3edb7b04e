"""``Interrupt``: SIGTERM and Ctrl-C on one process, and through JAX's preemption sync
point on several (simulated, and two real processes for Ctrl-C; ``test_multihost``
stops a two-process training run with SIGTERM)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from ftp_jax.train import preemption
from ftp_jax.train.preemption import Interrupt


def test_one_process_sigterm_stops_at_the_next_step_with_exit_143():
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    with Interrupt(7) as interrupt:
        assert not interrupt.reached(8)
        os.kill(os.getpid(), signal.SIGTERM)
        assert interrupt.reached(9)
        with pytest.raises(SystemExit) as stopped:
            interrupt.stop()
    assert stopped.value.code == 143
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before


def test_one_process_ctrl_c_stops_with_keyboard_interrupt_and_twice_at_once():
    with Interrupt() as interrupt:
        os.kill(os.getpid(), signal.SIGINT)
        assert interrupt.reached(1)
        with pytest.raises(KeyboardInterrupt):
            interrupt.stop()
        with pytest.raises(KeyboardInterrupt):  # the second Ctrl-C: at once
            os.kill(os.getpid(), signal.SIGINT)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_after_the_last_check_stops_when_the_block_ends(signum):
    """It was acknowledged, then dropped: the caller went on to other work (issue 21)."""
    with pytest.raises((KeyboardInterrupt, SystemExit)) as stopped:
        with Interrupt() as interrupt:
            assert not interrupt.reached(1)  # the loop's last check
            os.kill(os.getpid(), signum)  # e.g. during the last evaluation
    expected = KeyboardInterrupt if signum == signal.SIGINT else SystemExit
    assert stopped.type is expected and interrupt.stopped
    if signum == signal.SIGTERM:
        assert stopped.value.code == 143
    with Interrupt() as interrupt:  # no signal, or one already answered: no stop
        assert not interrupt.reached(1)


@pytest.fixture
def two_hosts(monkeypatch):
    """Two processes with JAX's preemption service, whose sync point is ``sync[0]``."""
    calls, sync, kills = [], [None], []

    def reached_preemption_sync_point(step):
        calls.append(step)
        return step == sync[0]

    monkeypatch.setattr(preemption.jax, "process_count", lambda: 2)
    monkeypatch.setattr(preemption, "preemption_service_running", lambda: True)
    monkeypatch.setattr(
        preemption.multihost_utils, "reached_preemption_sync_point", reached_preemption_sync_point
    )
    monkeypatch.setattr(preemption.os, "kill", lambda pid, signum: kills.append(signum))
    return calls, sync, kills


def test_several_hosts_stop_at_the_sync_point_and_leave_sigterm_to_jax(two_hosts):
    calls, sync, _ = two_hosts
    sigterm = signal.getsignal(signal.SIGTERM)
    with Interrupt(40) as interrupt:
        # JAX's C++ handler keeps SIGTERM: a Python handler would hide the notice.
        assert signal.getsignal(signal.SIGTERM) is sigterm
        assert [interrupt.reached(step) for step in (41, 42)] == [False, False]
        sync[0] = 44  # a host got SIGTERM; the hosts agreed on step 44
        assert [interrupt.reached(step) for step in (43, 44)] == [False, True]
        assert interrupt.reached(45)  # asked once: the loop saves and stops at 44
        with pytest.raises(SystemExit) as stopped:  # whichever host got the signal
            interrupt.stop()
    assert stopped.value.code == 143
    assert calls == [40, 41, 42, 43, 44]  # the start step, then every step


def test_several_hosts_ctrl_c_becomes_a_preemption_notice(two_hosts):
    calls, sync, kills = two_hosts
    with Interrupt() as interrupt:
        handler = signal.getsignal(signal.SIGINT)
        handler(signal.SIGINT, None)  # Ctrl-C on this host
        assert kills == [signal.SIGTERM]  # to JAX's handler, which tells every host
        assert not interrupt.reached(1)  # not before the hosts agree
        sync[0] = 2
        assert interrupt.reached(2)
        with pytest.raises(KeyboardInterrupt):
            interrupt.stop()
        with pytest.raises(KeyboardInterrupt):  # the second Ctrl-C: at once
            handler(signal.SIGINT, None)


def test_several_hosts_without_the_preemption_service_leave_signals_alone(monkeypatch):
    monkeypatch.setattr(preemption.jax, "process_count", lambda: 2)
    monkeypatch.setattr(preemption, "preemption_service_running", lambda: False)
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    with pytest.warns(UserWarning, match="jax_enable_preemption_service"):
        with Interrupt() as interrupt:
            assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before
            assert not interrupt.reached(1)


def test_one_process_asks_no_sync_point(monkeypatch):
    def fail(step):
        raise AssertionError("one process needs no sync point")

    monkeypatch.setattr(preemption.multihost_utils, "reached_preemption_sync_point", fail)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with Interrupt() as interrupt:
            assert not interrupt.reached(1)


def test_ctrl_c_on_one_of_two_processes_stops_both_at_one_step():
    """Two real processes (``tests/preemption_worker.py``) and JAX's preemption service."""
    from ftp_jax.cli import EXIT_INTERRUPTED, EXIT_TERMINATED

    with socket.socket() as s:
        s.bind(("localhost", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_PLATFORMS")}
    workers = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.preemption_worker", str(i), str(port)],
            cwd=Path(__file__).resolve().parent.parent,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(2)
    ]
    outputs = [worker.communicate(timeout=120)[0] for worker in workers]
    codes = [worker.returncode for worker in workers]
    assert codes == [EXIT_TERMINATED, EXIT_INTERRUPTED], "\n".join(o[-2000:] for o in outputs)
    stops = [[line for line in out.splitlines() if line.startswith("STOP ")] for out in outputs]
    assert stops[0] == stops[1] and len(stops[0]) == 1  # one step, the same on both
    assert int(stops[0][0].split()[1]) > 5
