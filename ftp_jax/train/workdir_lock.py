"""One run per work directory: an ``fcntl`` lock held for the run's whole life.

Two runs in one work directory would write the same checkpoints, metrics and
prepared data (TFDS's rename of its ``incomplete.*`` directory fails in the
second). :func:`workdir_lock` takes an exclusive ``flock`` on
``<workdir>/.ftp_jax.lock`` without waiting, and records in that file who holds
it (pid, host, start time, command); a second run raises
:class:`WorkdirBusyError` at once, naming the holder. The operating system
releases the lock when the holder's process ends, however it ends (SIGKILL, a
crash, a lost machine's NFS lease), so a dead run never blocks the next one; the
file itself stays (an unlocked file blocks nothing).

The lock is re-entrant within a process: ``python -m ftp_jax.recipes`` locks its
work directory and ``fit`` locks it again; the experiment locks its work
directory and each ``fit`` of it locks the run's own subdirectory. On several
hosts sharing one work directory only the primary host takes it (the callers
check :func:`ftp_jax.train.placement.is_primary_host`).

This module needs only the standard library.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import fcntl
import functools
import inspect
import json
import os
import socket
import sys
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["LOCK_FILE", "WorkdirBusyError", "held", "holder", "holds_workdir_lock", "workdir_lock"]

LOCK_FILE = ".ftp_jax.lock"

_held: dict[str, list[int]] = {}  # resolved work directory -> [file descriptor, depth]
_guard = threading.Lock()


class WorkdirBusyError(RuntimeError):
    """Another live process holds the work directory's lock (exit code 4 on the command lines).

    Attributes:
      workdir: the work directory.
      holder: what the holder recorded: ``pid``, ``host``, ``started``, ``command``
        (empty if it had not written it yet).
    """

    def __init__(self, workdir: Path, holder: dict[str, Any]):
        self.workdir, self.holder = workdir, holder
        super().__init__(_busy_message(workdir, holder))

    def __reduce__(self):  # picklable: a worker process's error reaches its parent
        return (type(self), (self.workdir, self.holder))


def _busy_message(workdir: Path, holder: dict[str, Any]) -> str:
    pid, host = holder.get("pid"), holder.get("host")
    if pid is None:
        who = "another process (it has not recorded its pid yet)"
        stop = "stop that run"
    else:
        who = f"process {pid} on host {host}, started {holder.get('started', '?')}"
        if holder.get("command"):
            who += f" ({holder['command']})"
        here = host == socket.gethostname()
        stop = f"stop it (`kill -INT {pid}`{'' if here else f' on {host}'} saves a checkpoint)"
    return (
        f"the work directory {workdir} is in use by another run: {who}. Wait for it to "
        f"finish, or {stop} and run again to resume; or give this run another work directory."
    )


def holder(workdir: str | os.PathLike) -> dict[str, Any]:
    """What the lock file of ``workdir`` records (its last holder's, if none holds it now)."""
    try:
        text = Path(workdir, LOCK_FILE).read_text()
        return json.loads(text) if text.strip() else {}
    except (OSError, ValueError):
        return {}


def _record() -> str:
    started = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    command = " ".join([Path(sys.executable).name, *sys.argv]) if sys.argv else ""
    info = {"pid": os.getpid(), "host": socket.gethostname(), "started": started}
    if command.strip():
        info["command"] = command[:300]
    return json.dumps(info)


def _acquire(key: str, path: Path) -> None:
    with _guard:
        if key in _held:
            _held[key][1] += 1
            return
        path.mkdir(parents=True, exist_ok=True)
        fd = os.open(path / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            os.close(fd)
            if error.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise WorkdirBusyError(path, holder(path)) from None
            # A file system without locks (some network mounts): run unprotected.
            warnings.warn(
                f"cannot lock the work directory {path} ({error.strerror}): nothing stops a "
                "second run from starting in it.",
                stacklevel=4,
            )
            _held[key] = [-1, 1]
            return
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, _record().encode(), 0)
        except OSError:  # a full disk: the lock holds; the holder's details are missing
            pass
        _held[key] = [fd, 1]


def _release(key: str) -> None:
    with _guard:
        entry = _held.get(key)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] > 0:
            return
        del _held[key]
        if entry[0] >= 0:
            os.close(entry[0])  # closing the descriptor releases the lock


@contextlib.contextmanager
def workdir_lock(workdir: str | os.PathLike) -> Iterator[Path]:
    """Holds ``workdir``'s lock (creating the directory) until the block ends.

    Re-entrant within a process. Yields the resolved work directory.

    Raises:
      WorkdirBusyError: another live process holds it; the message names that
        process (pid, host, start time, command) and what to do.
    """
    path = Path(workdir).resolve()
    key = str(path)
    _acquire(key, path)
    try:
        yield path
    finally:
        _release(key)


def held(workdir: str | os.PathLike) -> bool:
    """Whether this process holds ``workdir``'s lock."""
    return str(Path(workdir).resolve()) in _held


def holds_workdir_lock(function):
    """Decorates ``function`` to hold the lock of its ``workdir`` argument while it runs."""
    signature = inspect.signature(function)

    @functools.wraps(function)
    def locked(*args, **kwargs):
        workdir = signature.bind(*args, **kwargs).arguments["workdir"]
        with workdir_lock(workdir):
            return function(*args, **kwargs)

    return locked
