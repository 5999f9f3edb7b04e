"""What the command lines (``python -m ftp_jax.experiment``, ``python -m ftp_jax.recipes``) share.

- The config is a Python file whose ``get_config()`` returns the config
  dataclass (as big_vision's); ``--set KEY=VALUE`` overrides any key of it and
  ``--print-config`` prints every key after the overrides (:func:`load_config`,
  :func:`configure`).
- Errors are one or two lines (what is wrong, the value, what to do) and an exit
  code that scripts can test (:data:`EXIT_CODES`); ``--debug`` shows the traceback
  instead (:func:`run`).
- Ctrl-C and SIGTERM end the run wherever they land (training saves a checkpoint
  first) and say how to resume: exit 130 and 143.
- A full disk is one line naming the directory and the space, exit 3; rerunning
  after freeing space resumes.
- One run per work directory: a second run started in it stops at once, exit 4,
  naming the first (``ftp_jax.train.workdir_lock``).
- ``--fresh`` moves an old work directory aside, never deletes it (:func:`move_aside`).

This module imports nothing heavy: a command line answers ``--help`` and usage
errors before JAX is loaded.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = [
    "EXIT_CODES",
    "EXIT_ERROR",
    "EXIT_INPUT",
    "EXIT_INTERRUPTED",
    "EXIT_TERMINATED",
    "EXIT_USAGE",
    "EXIT_WORKDIR",
    "InputError",
    "UsageError",
    "add_common_flags",
    "configure",
    "load_config",
    "packaged_configs",
    "move_aside",
    "quiet",
    "run",
    "start_fresh",
]

EXIT_ERROR = 1  # an unexpected error (a bug): rerun with --debug and report it
EXIT_USAGE = 2  # a bad flag, config file or --set (argparse's code too)
EXIT_INPUT = 3  # an input that is missing or unreadable (data, weights file), or a full disk
EXIT_WORKDIR = 4  # the work directory holds another run's checkpoints, or another run uses it
EXIT_INTERRUPTED = 130  # Ctrl-C (after saving a checkpoint when training)
EXIT_TERMINATED = 143  # SIGTERM (after saving a checkpoint)

EXIT_CODES = f"""exit codes:
  0    done (or --print-config)
  {EXIT_ERROR}    unexpected error (rerun with --debug for the traceback)
  {EXIT_USAGE}    bad command line, config file or --set
  {EXIT_INPUT}    missing or unreadable input (data, weights), or out of disk space
  {EXIT_WORKDIR}    the work directory holds another run (see --fresh), or one runs in it now
  {EXIT_INTERRUPTED}  interrupted by Ctrl-C; {EXIT_TERMINATED}: by SIGTERM (run again to resume)"""


class UsageError(Exception):
    """A bad command line, config file or override: exit code 2."""


class InputError(Exception):
    """An input that is missing or unreadable (data, weights): exit code 3."""


def add_common_flags(parser: argparse.ArgumentParser) -> None:
    """``--set``, ``--print-config``, ``--fresh``, ``--no-progress`` and ``--debug``."""
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key (repeatable), e.g. --set finetune.epochs=10; "
        "--print-config lists the keys",
    )
    parser.add_argument(
        "--print-config",
        action="store_true",
        help="print the full config (every key, after --set) and exit",
    )
    parser.add_argument(
        "--fresh",
        action="store_true",
        help="start over: move an existing work directory aside to WORKDIR.old-DATE "
        "(nothing is deleted)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument(
        "--debug", action="store_true", help="show tracebacks instead of short error messages"
    )


def load_config(path: str, expected: type, *, other_clis: dict[type, str] | None = None) -> Any:
    """Runs a config file's ``get_config()`` and checks that it returns an ``expected``.

    Args:
      path: the ``--config`` file, or the name of a config that ships with the
        package (``digits``, ``domainnet_ftp_sgd``: ``ftp_jax/configs/<name>.py``,
        which is ``experiments/configs/<name>.py`` in a checkout).
      expected: the config class this command line runs.
      other_clis: ``{config class: command}`` of the other command lines, to say
        where a config of another kind belongs.

    Raises:
      UsageError: no such file or config name, the file fails, has no
        ``get_config()``, or returns another kind of config.
    """
    if not os.path.isfile(path) and _is_config_name(path):
        names = packaged_configs()
        if path not in names:
            raise UsageError(
                f"--config {path}: no such file, and no config of that name ships with "
                f"ftp_jax (they are: {', '.join(sorted(names))}); give a file's path."
            )
        path = names[path]
    if not os.path.isfile(path):
        hint = " (it is a directory)" if os.path.isdir(path) else ""
        raise UsageError(f"--config {path}: no such file{hint}.")
    spec = importlib.util.spec_from_file_location("_ftp_jax_config", path)
    if spec is None or spec.loader is None:
        raise UsageError(f"--config {path}: not a Python file; a config file defines get_config().")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
        if not hasattr(module, "get_config"):
            raise UsageError(f"--config {path} defines no get_config(); it must return the config.")
        config = module.get_config()
    except UsageError:
        raise
    except Exception as error:  # noqa: BLE001 - any failure of the user's file
        raise UsageError(
            f"--config {path} failed: {type(error).__name__}: {error} (--debug shows where)."
        ) from error
    if isinstance(config, expected):
        return config
    for kind, command in (other_clis or {}).items():
        if isinstance(config, kind):
            raise UsageError(
                f"--config {path} holds {_a(kind.__name__)}, not the {expected.__name__} "
                f"this command runs: run it with `{command} --config {path}`."
            )
    raise UsageError(
        f"--config {path}: get_config() returned {_a(type(config).__name__)}, not the "
        f"{expected.__name__} this command runs."
    )


def _is_config_name(text: str) -> bool:
    return bool(text) and "/" not in text and os.sep not in text and not text.endswith(".py")


def packaged_configs() -> dict[str, str]:
    """``{name: file}`` of the config files that ship with the package (``ftp_jax/configs``)."""
    folder = Path(__file__).resolve().parent / "configs"
    return {
        file.stem: str(file)
        for file in sorted(folder.glob("*.py"))
        if not file.stem.startswith("_")
    }


def _a(name: str) -> str:
    return f"{'an' if name[:1].lower() in 'aeiou' else 'a'} {name}"


def configure(config: Any, overrides: list[str], *, print_config: bool) -> Any:
    """The config after ``--set`` overrides; prints it when ``print_config``.

    Raises:
      UsageError: an unknown key (naming the closest keys) or a bad value (naming
        the key and the expected type or the rule).
    """
    from ftp_jax.train.config import apply_overrides, format_config

    try:
        config = apply_overrides(config, overrides)
    except KeyError as error:
        raise UsageError(f"--set: {error.args[0]}") from error
    except ValueError as error:
        raise UsageError(f"--set {error}") from error
    if print_config:
        print(format_config(config))
    return config


def move_aside(workdir: str | os.PathLike) -> Path | None:
    """Renames ``workdir`` to ``<workdir>.old-<date>`` (never deletes); ``None`` if absent."""
    workdir = Path(workdir)
    if not workdir.exists():
        return None
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    target = workdir.with_name(f"{workdir.name}.old-{stamp}")
    suffix = 1
    while target.exists():
        suffix += 1
        target = workdir.with_name(f"{workdir.name}.old-{stamp}-{suffix}")
    workdir.rename(target)
    return target


def start_fresh(workdir: str | os.PathLike) -> None:
    """``--fresh``: moves ``workdir`` aside (see :func:`move_aside`) and says where to.

    Raises:
      WorkdirBusyError: a run is using ``workdir`` now (its directory is not moved).
    """
    moved = None
    if Path(workdir).is_dir():
        from ftp_jax.train.workdir_lock import workdir_lock

        with workdir_lock(workdir):  # never from under a live run
            moved = move_aside(workdir)
    if moved is None:
        print(f"--fresh: {workdir} does not exist yet; starting a new run there.")
    else:
        print(f"--fresh: moved the old work directory {workdir} aside to {moved}.")


def _drop_opencv_notice(record) -> bool:
    # TFDS decodes images with Pillow when OpenCV is missing, which is what we want.
    return "OpenCV is not installed" not in record.getMessage()


def quiet(*, progress: bool) -> None:
    """No start-up noise; without ``progress``, no progress bar of TFDS's either."""
    import logging

    logging.getLogger("absl").addFilter(_drop_opencv_notice)
    if not progress:
        import tensorflow_datasets as tfds

        tfds.display_progress_bar(False)


def _error(message: str, hint: str | None = None) -> None:
    print(f"error: {message}", file=sys.stderr)
    if hint:
        print(hint, file=sys.stderr)


def _exit_code(error: BaseException) -> int:
    """The exit code of an expected error, or ``EXIT_ERROR``."""
    # By class name: this module imports neither orbax nor the converters.
    names = {cls.__name__ for cls in type(error).__mro__}
    if isinstance(error, UsageError):
        return EXIT_USAGE
    if names & {"CheckpointMismatchError", "WorkdirBusyError"}:
        return EXIT_WORKDIR
    # OSError: a missing, unreadable or damaged file; ImportError: a missing optional package.
    if isinstance(error, (InputError, OSError, ImportError)) or names & {
        "UnsupportedCheckpoint",  # ftp_jax.convert: a weights file no reader can read
        "CheckpointError",  # ftp_jax.convert: weights that do not fit the model
    }:
        return EXIT_INPUT
    return EXIT_ERROR


def _message(error: BaseException) -> str:
    if isinstance(error, KeyError) and error.args:
        return str(error.args[0])
    return str(error) or type(error).__name__


def _swallows_exceptions(frame) -> bool:
    """Whether ``frame`` runs inside a gc callback or ``__del__``, where Python ignores exceptions.

    JAX registers a gc callback; a Ctrl-C that lands in it would be printed as
    "Exception ignored" and lost.
    """
    import gc

    codes = {getattr(callback, "__code__", None) for callback in gc.callbacks}
    for _ in range(64):
        if frame is None:
            return False
        if frame.f_code in codes or frame.f_code.co_name in ("__del__", "_xla_gc_callback"):
            return True
        frame = frame.f_back
    return False


def _on_signal(signum, frame) -> None:
    """Ctrl-C: ``KeyboardInterrupt``; SIGTERM: ``SystemExit(143)``, wherever they land.

    (The training loop replaces this handler while it trains, to save a checkpoint
    first: :class:`ftp_jax.train.preemption.Interrupt`.)
    """
    import signal

    if _swallows_exceptions(frame):  # deliver it again in a moment, where it can stop the run
        import threading

        threading.Timer(0.05, os.kill, (os.getpid(), signum)).start()
        return
    if signum == signal.SIGTERM:
        raise SystemExit(EXIT_TERMINATED)
    raise KeyboardInterrupt


def _jax_owns_sigterm() -> bool:
    """Whether JAX's preemption service has SIGTERM (several hosts): it must keep it."""
    distributed = sys.modules.get("jax._src.distributed")
    state = getattr(distributed, "global_state", None)
    return (
        state is not None and state.client is not None and state.preemption_sync_manager is not None
    )


def _out_of_space(error: BaseException, workdir: str | None):
    """``error`` as an ``OutOfSpaceError`` naming a directory, if a disk was full."""
    from ftp_jax._diskspace import as_out_of_space  # the standard library only

    return as_out_of_space(error, workdir)


def run(body: Callable[[], int | None], *, debug: bool, workdir: str | None = None) -> int:
    """Runs a command line's ``body`` and turns its errors into short messages and exit codes.

    Expected errors print ``error: <message>`` (and a hint) on stderr; an
    unexpected one prints its type and message and suggests ``--debug``. With
    ``debug``, every error is raised with its traceback. Ctrl-C (after the
    training loop has saved a checkpoint) and SIGTERM say how to resume, wherever
    they land (data preparation, between runs, evaluation). A full disk is one
    line naming the directory and the space (exit 3).

    Returns:
      The exit code (0 when ``body`` returns ``None``).
    """
    import signal

    resume = "run the same command again to resume"
    if workdir:
        resume += f" (what is finished or checkpointed in {workdir} is kept)"
    previous = {}
    signums = [signal.SIGINT] + ([] if _jax_owns_sigterm() else [signal.SIGTERM])
    for signum in signums:
        try:
            previous[signum] = signal.signal(signum, _on_signal)
        except ValueError:  # not the main thread
            pass
    try:
        code = body()
        return 0 if code is None else int(code)
    except KeyboardInterrupt:
        if debug:
            raise
        print(file=sys.stderr)
        _error(f"interrupted (Ctrl-C); {resume}.")
        return EXIT_INTERRUPTED
    except SystemExit as exit_:
        if exit_.code == EXIT_TERMINATED and not debug:
            _error(f"stopped by SIGTERM; {resume}.")
            return EXIT_TERMINATED
        raise
    except Exception as error:  # noqa: BLE001 - every error ends as a message and a code
        if debug:
            raise
        space = _out_of_space(error, workdir)
        if space is not None:  # one line, whatever wrote (orbax, TFDS, the report)
            _error(str(space))
            return EXIT_INPUT
        code = _exit_code(error)
        message = _message(error)
        if code == EXIT_ERROR and isinstance(error, ValueError):  # a value the code refused
            _error(message, "Rerun with --debug for the traceback.")
        elif code == EXIT_ERROR:
            _error(
                f"{type(error).__name__}: {message}",
                "This looks like a bug: rerun with --debug for the traceback, and report it.",
            )
        elif code == EXIT_WORKDIR and "WorkdirBusyError" in {
            c.__name__ for c in type(error).__mro__
        }:
            _error(message)  # it says what to do; --fresh would not help
        elif code == EXIT_WORKDIR:
            where = f" {workdir}" if workdir else ""
            _error(
                message,
                f"To start over, add --fresh (moves the work directory{where} aside, deletes "
                "nothing), or give another --workdir.",
            )
        else:
            _error(message)
        return code
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
