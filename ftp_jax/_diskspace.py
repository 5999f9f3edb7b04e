"""A full disk as one message: which directory, how much space is free (and needed).

Out-of-space errors reach the code in many forms: ``OSError(ENOSPC)`` from
Python's own writes, ``ValueError("RESOURCE_EXHAUSTED: ... No space left on
device [os_error_code='28']")`` from TensorStore under orbax (raised again in the
main thread after orbax's worker thread logged it with its traceback), wrapped
by TFDS's preparation. :func:`is_out_of_space` recognises every form along an
exception's chain; :func:`writing` turns one into :class:`OutOfSpaceError` that
names the directory being written and the space; ``ftp_jax.cli`` prints that as
one line, exit code 3 (:func:`as_out_of_space` for errors no writer wrapped).

Nothing is lost by a full disk: checkpoints and prepared datasets are written to
temporary names and renamed when complete, so the same command, run again after
space is freed, resumes. Only the standard library is used.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

__all__ = ["OutOfSpaceError", "as_out_of_space", "is_out_of_space", "writing"]

_CODES = {errno.ENOSPC, errno.EDQUOT}
_TEXTS = ("No space left on device", "Disk quota exceeded", "os_error_code='28'")


class OutOfSpaceError(OSError):
    """Writing ``what`` into ``directory`` ran out of disk space (ENOSPC or a quota).

    Attributes:
      directory: the directory being written.
      free: bytes free on its file system when the error was raised (``None``
        if it cannot be read).
      needed: about how many bytes the write needed (``None`` if unknown).
      at_least: ``needed`` is a lower bound (e.g. the arrays alone, before any
        checkpoint on disk showed what one takes).
      free: the bytes free, if the caller measured them (default: measured now).
    """

    def __init__(
        self,
        directory: str | os.PathLike,
        what: str,
        *,
        needed: int | None = None,
        at_least: bool = False,
        free: int | None = None,
    ):
        self.directory, self.what, self.needed = Path(directory), what, needed
        self.at_least = at_least
        self.free = free_bytes(self.directory) if free is None else free
        super().__init__(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self.directory))

    def __reduce__(self):
        # Picklable (a worker process's error reaches its parent): rebuilt from the fields.
        state = {"needed": self.needed, "at_least": self.at_least, "free": self.free}
        return (type(self), (self.directory, self.what), state)

    def __str__(self) -> str:
        space = f"{_size(self.free)} free" if self.free is not None else "free space unknown"
        if self.needed:
            space += f", {'at least' if self.at_least else 'about'} {_size(self.needed)} needed"
        return (
            f"out of disk space writing {self.what} in {self.directory} ({space}). Free some "
            "space (or point the work directory at a larger disk) and run the same command "
            "again: it resumes from what is finished or checkpointed, nothing is lost."
        )


def _size(count: int) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if count < 1000 or unit == "GB":
            return f"{count} bytes" if unit == "bytes" else f"{count:.1f} {unit}"
        count /= 1000
    raise AssertionError("unreachable")


def free_bytes(directory: str | os.PathLike) -> int | None:
    """Bytes free on the file system of ``directory`` (or of its nearest existing parent)."""
    path = Path(directory).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return None


def _chain(error: BaseException) -> Iterator[BaseException]:
    """``error``, its causes and contexts, and an exception group's members (each once)."""
    seen, todo = set(), [error]
    while todo:
        current = todo.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        todo += [current.__cause__, current.__context__]
        todo += list(getattr(current, "exceptions", None) or ())


def _is_one(error: BaseException) -> bool:
    if isinstance(error, OSError) and error.errno in _CODES:
        return True
    text = str(error)
    return any(fragment in text for fragment in _TEXTS)


def is_out_of_space(error: BaseException) -> bool:
    """Whether ``error`` (or anything along its chain) says that a disk or quota is full."""
    return any(_is_one(e) for e in _chain(error))


def _directory_of(error: BaseException) -> Path | None:
    """The directory an out-of-space error names: its ``filename``, or a path in its text."""
    for e in _chain(error):
        if not _is_one(e):
            continue
        names = [getattr(e, "filename", None)]
        text = str(e).replace("file://", "")
        names += re.findall(r"(?:^|[\s\"'(])(/[^\s\"'\[\]:]+)", text)
        for name in filter(None, names):
            path = Path(os.fsdecode(name))
            while not path.is_dir() and path != path.parent:
                path = path.parent
            if path != path.parent:  # not the root: a directory the error names
                return path
    return None


def as_out_of_space(
    error: BaseException, fallback: str | os.PathLike | None = None, what: str = "files"
) -> OutOfSpaceError | None:
    """``error`` as an :class:`OutOfSpaceError` if it is one (``None`` if not).

    An :class:`OutOfSpaceError` along the chain is returned as it is; another
    out-of-space error names the directory its file name or text gives, else
    ``fallback``.
    """
    for e in _chain(error):
        if isinstance(e, OutOfSpaceError):
            return e
    if not is_out_of_space(error):
        return None
    directory = _directory_of(error) or (Path(fallback) if fallback else Path.cwd())
    return OutOfSpaceError(directory, what)


@contextlib.contextmanager
def writing(directory: str | os.PathLike, what: str, *, needed: int | None = None):
    """Raises :class:`OutOfSpaceError` (from the original) if the block runs out of space.

    Args:
      directory: the directory the block writes into (named in the message).
      what: what is written, e.g. ``"a checkpoint"``.
      needed: about how many bytes the block writes, if known.
    """
    try:
        yield
    except OutOfSpaceError:
        raise
    except Exception as error:
        if not is_out_of_space(error):
            raise
        raise OutOfSpaceError(directory, what, needed=needed) from error
