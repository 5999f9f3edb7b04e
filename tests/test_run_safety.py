"""A run stops wherever a signal lands, owns its work directory, names a full disk, and
refuses a work directory of other data.

Signals and failures are injected in-process, at a chosen point (an evaluation set
that signals this process while it is read, a writer that raises ``ENOSPC``); a
second real process runs only where it is the point: the holder of a work
directory's lock, killed with SIGKILL at the end. Every ``fit`` is the tiny one of
``tests/tiny_fit.py``, two epochs.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from flax import nnx

from ftp_jax import cli
from ftp_jax._diskspace import OutOfSpaceError, as_out_of_space
from ftp_jax.train import CheckpointMismatchError, fit
from ftp_jax.train.loop import EvalSet, data_identity
from ftp_jax.train.workdir_lock import (
    LOCK_FILE,
    WorkdirBusyError,
    held,
    holder,
    workdir_lock,
)
from tests import tiny_fit

ROOT = Path(__file__).resolve().parent.parent
EPOCHS = 2
STEPS_PER_EPOCH = 200 // 16


def tiny(workdir, *, train=None, validation=None, tests=None, **overrides):
    """The tiny fit (``vanilla``, two epochs), with the given data in place of its own."""
    train_, validation_, tests_ = tiny_fit.data()
    config = tiny_fit.config("vanilla", epochs=EPOCHS, **overrides)
    return fit(
        tiny_fit.TinyNet(nnx.Rngs(0)),
        config,
        train or train_,
        validation or validation_,
        tests or tests_,
        workdir,
    )


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted run: its work directory, result and metrics."""
    workdir = tmp_path_factory.mktemp("reference")
    result = tiny(workdir)
    return workdir, result.to_json(), (workdir / "metrics.jsonl").read_text()


def assert_resumes_to(workdir: Path, reference) -> None:
    """Running again in ``workdir`` ends as the uninterrupted run, bit for bit."""
    _, expected, metrics = reference
    assert tiny(workdir).to_json() == expected
    assert (workdir / "metrics.jsonl").read_text() == metrics


def checkpoint_steps(workdir: Path) -> list[int]:
    return sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())


@pytest.fixture
def sigterm_caught():
    """SIGTERM raises here instead of killing the test process (where no handler is set)."""

    def unhandled(signum, frame):
        raise AssertionError("SIGTERM reached no handler of the run")

    previous = signal.signal(signal.SIGTERM, unhandled)
    yield
    signal.signal(signal.SIGTERM, previous)


@dataclasses.dataclass(frozen=True)
class SignalDuring(EvalSet):
    """An evaluation set that sends ``signum`` to this process while its ``at_read``-th
    evaluation (1-based) reads its first batch; the same data (and identity) as the set."""

    signum: int = signal.SIGINT
    at_read: int = 0
    reads: list = dataclasses.field(default_factory=list, compare=False)

    @classmethod
    def of(cls, evalset: EvalSet, signum: int, at_read: int) -> SignalDuring:
        return cls(evalset.name, evalset.images, evalset.labels, signum=signum, at_read=at_read)

    def batches(self, batch_size, start=0):
        self.reads.append(start)
        for index, batch in enumerate(super().batches(batch_size, start)):
            if index == 0 and len(self.reads) == self.at_read:
                os.kill(os.getpid(), self.signum)
            yield batch


# --- Item 3: a signal ends the run wherever it lands -------------------------------------


def test_ctrl_c_during_the_last_epochs_validation_stops_the_run_and_what_follows(
    tmp_path, reference, capsys
):
    """The reported bug: a Ctrl-C after the last step's check was acknowledged, then
    dropped; the experiment went on to its next runs and exited 0."""
    _, validation, _ = tiny_fit.data()
    signalling = SignalDuring.of(validation, signal.SIGINT, at_read=EPOCHS)
    workdir, after = tmp_path / "run", []

    def experiment():  # a run, then the next one
        tiny(workdir, validation=signalling)
        after.append("the next run started")

    assert cli.run(experiment, debug=False, workdir=str(workdir)) == cli.EXIT_INTERRUPTED
    assert after == []
    assert "interrupted (Ctrl-C); run the same command again" in capsys.readouterr().err
    assert not (workdir / "result.json").exists()
    # The last epoch's training is saved, not yet evaluated: the rerun evaluates it.
    assert checkpoint_steps(workdir)[-1] == EPOCHS * STEPS_PER_EPOCH
    assert_resumes_to(workdir, reference)


def test_sigterm_during_the_final_evaluation_stops_with_143_and_resumes(
    tmp_path, reference, sigterm_caught, capsys
):
    _, validation, _ = tiny_fit.data()
    signalling = SignalDuring.of(validation, signal.SIGTERM, at_read=EPOCHS + 1)
    workdir = tmp_path / "run"
    code = cli.run(lambda: tiny(workdir, validation=signalling), debug=False)
    assert code == cli.EXIT_TERMINATED
    assert "stopped by SIGTERM" in capsys.readouterr().err
    assert len(signalling.reads) == EPOCHS + 1  # stopped in the final evaluation
    assert not (workdir / "result.json").exists()
    assert_resumes_to(workdir, reference)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_outside_training_ends_the_command_at_once(signum, sigterm_caught, capsys):
    """Between the experiment's runs, in data preparation, in the report: no loop to ask."""
    started = time.perf_counter()

    def between_runs():
        os.kill(os.getpid(), signum)
        time.sleep(30)  # ended by the signal, not waited out

    code = cli.run(between_runs, debug=False, workdir="runs/x")
    assert time.perf_counter() - started < 10
    if signum == signal.SIGINT:
        assert code == cli.EXIT_INTERRUPTED
    else:
        assert code == cli.EXIT_TERMINATED
        assert "stopped by SIGTERM; run the same command again" in capsys.readouterr().err
    assert signal.getsignal(signal.SIGTERM) is not cli._on_signal  # restored


def test_sigterm_during_data_preparation_then_the_rerun_prepares(
    tmp_path, monkeypatch, sigterm_caught
):
    from ftp_jax.data import open_split
    from tests import fake_tfds

    generate = fake_tfds.FakeDomainnet._generate_examples

    def signalling(self, count, split_seed):
        for index, example in enumerate(generate(self, count, split_seed)):
            if index == 3:
                os.kill(os.getpid(), signal.SIGTERM)
            yield example

    monkeypatch.setattr(fake_tfds.FakeDomainnet, "_generate_examples", signalling)
    code = cli.run(lambda: fake_tfds.prepare(str(tmp_path)), debug=False)
    assert code == cli.EXIT_TERMINATED
    monkeypatch.setattr(fake_tfds.FakeDomainnet, "_generate_examples", generate)
    fake_tfds.prepare(str(tmp_path))  # nothing half-made is in the way
    assert len(open_split("fake_domainnet/real", "train", tmp_path)) == 160


# --- Item 5: one run per work directory ---------------------------------------------------

HOLDER = textwrap.dedent(
    """
    import importlib.util, sys, time
    spec = importlib.util.spec_from_file_location("workdir_lock", sys.argv[1])
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with module.workdir_lock(sys.argv[2]):
        print("locked", flush=True)
        time.sleep(120)
    """
)


@pytest.fixture
def other_process(tmp_path):
    """A second process that holds the lock of ``tmp_path / "run"`` until it is killed."""
    workdir = tmp_path / "run"
    lock_module = ROOT / "ftp_jax" / "train" / "workdir_lock.py"
    process = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(lock_module), str(workdir)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout.readline() == "locked\n"
    yield workdir, process
    process.kill()
    process.wait()


def test_a_second_run_stops_at_once_naming_the_first_and_sigkill_frees_it(
    other_process, reference, capsys
):
    from ftp_jax.experiment.__main__ import main as experiment
    from ftp_jax.recipes.run import run_recipe

    workdir, process = other_process
    recorded = holder(workdir)
    assert recorded["pid"] == process.pid and recorded["host"] and recorded["started"]
    started = time.perf_counter()
    code = cli.run(lambda: tiny(workdir), debug=False, workdir=str(workdir))
    assert code == cli.EXIT_WORKDIR
    err = capsys.readouterr().err
    assert f"in use by another run: process {process.pid} on host {recorded['host']}" in err
    assert f"started {recorded['started']}" in err and f"kill -INT {process.pid}" in err
    assert "--fresh" not in err and len(err.strip().splitlines()) == 1
    assert not (workdir / "checkpoints").exists()  # refused before any work
    code = experiment(["--quick", "--no-progress", "--workdir", str(workdir)])
    assert code == cli.EXIT_WORKDIR and str(process.pid) in capsys.readouterr().err
    assert not (workdir / "data").exists()  # before data preparation
    with pytest.raises(WorkdirBusyError, match=str(process.pid)):
        run_recipe(None, data_dir=workdir / "no_data", workdir=workdir, weights="x.pt")
    with pytest.raises(WorkdirBusyError):
        cli.start_fresh(workdir)  # --fresh never moves a live run's directory
    assert workdir.is_dir()
    assert time.perf_counter() - started < 30
    # SIGKILL: the OS releases the lock; its file (the dead holder's record) blocks nothing.
    process.kill()
    process.wait()
    assert holder(workdir)["pid"] == process.pid
    assert_resumes_to(workdir, reference)
    assert not held(workdir)


def test_the_lock_is_reentrant_in_a_process_and_released_after(tmp_path):
    workdir = tmp_path / "run"
    with workdir_lock(workdir):
        with workdir_lock(workdir / "."):  # the recipe locks, then its fit
            assert held(workdir)
        assert held(workdir)
        assert holder(workdir)["pid"] == os.getpid()
    assert not held(workdir)
    assert (workdir / LOCK_FILE).exists()
    with workdir_lock(workdir):  # free again
        pass


# --- Item 6: a full disk is one line, exit 3 ----------------------------------------------

TENSORSTORE_ENOSPC = (
    'RESOURCE_EXHAUSTED: Error writing "w/0.0" in OCDBT database at local file '
    '"{where}/ocdbt.process_0/": Failed to write 481596 bytes to file 7: No space left on '
    "device [os_error_code='28']"
)


def test_a_full_disk_during_a_checkpoint_is_one_line_and_the_rerun_resumes(
    tmp_path, reference, monkeypatch, capsys, caplog
):
    """orbax raises TensorStore's error in the main thread after its writer thread logged
    it with a traceback; the second save of the run fails."""
    import orbax.checkpoint as ocp

    save, saves = ocp.CheckpointManager.save, []

    def full_disk(self, step, *args, **kwargs):
        saves.append(step)
        if len(saves) < 2:
            return save(self, step, *args, **kwargs)
        where = Path(self.directory) / f"{step}.orbax-checkpoint-tmp"
        error = ValueError(TENSORSTORE_ENOSPC.format(where=where))
        try:
            raise error
        except ValueError:
            logging.getLogger("absl").exception(
                "[thread=array_type_handler] _SignalingThread.run() raised an exception: %s", error
            )
        raise error

    monkeypatch.setattr(ocp.CheckpointManager, "save", full_disk)
    workdir = tmp_path / "run"
    code = cli.run(lambda: tiny(workdir), debug=False, workdir=str(workdir))
    assert code == cli.EXIT_INPUT
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert f"out of disk space writing a checkpoint in {workdir / 'checkpoints'} (" in err
    assert " free, about " in err and " needed)" in err
    assert "run the same command again: it resumes" in err
    assert not [r for r in caplog.records if "raised an exception" in r.getMessage()]
    monkeypatch.setattr(ocp.CheckpointManager, "save", save)
    assert checkpoint_steps(workdir) == [saves[0]]
    assert_resumes_to(workdir, reference)


def test_a_checkpoint_is_not_started_without_the_room_the_last_one_took(tmp_path, monkeypatch):
    """A clean stop before orbax's writers start (they would fail one after the other, each
    logging from its thread)."""
    import jax.numpy as jnp

    from ftp_jax.train import checkpoint

    checkpointer = checkpoint.Checkpointer(tmp_path / "checkpoints")
    state, extra = {"w": jnp.arange(1000.0)}, {"b": jnp.zeros(3)}
    checkpointer.save(1, state, extra, {})
    monkeypatch.setattr(checkpoint, "free_bytes", lambda directory: 10)
    with pytest.raises(OutOfSpaceError, match=r"\(10 bytes free, about [0-9.]+ KB needed\)"):
        checkpointer.save(2, state, extra, {})
    checkpointer.close()
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["1"]


def test_a_full_disk_leaves_no_tensorboard_writer_behind(tmp_path, monkeypatch):
    """tensorboardX retries a failed flush at exit and its thread fails on a closed queue:
    tracebacks after the one-line message."""
    from tensorboardX import record_writer

    from ftp_jax.train.run_log import EventLog

    events = EventLog(tmp_path, None)
    record = {"step": 1, "train_loss": 1.0, "train_accuracy": 0.5, "val_loss": 1.0}
    events.epoch({**record, "val_accuracy": 0.5})
    writers = list(events.writer.all_writers.values())

    def full_disk(self):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(record_writer.RecordWriter, "flush", full_disk)
    with pytest.raises(OSError):
        events.close()
    for writer in writers:
        assert writer.event_writer._closed  # the exit hook does nothing
        assert not writer.event_writer._worker.is_alive()
        writer.event_writer.close()


def test_a_full_disk_writing_the_result_names_the_work_directory(tmp_path, reference, monkeypatch):
    write_text = Path.write_text

    def full_disk(self, *args, **kwargs):
        if self.name == "result.json":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self))
        return write_text(self, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", full_disk)
    workdir = tmp_path / "run"
    with pytest.raises(OutOfSpaceError, match=f"writing the result in {workdir} "):
        tiny(workdir)
    monkeypatch.setattr(Path, "write_text", write_text)
    assert_resumes_to(workdir, reference)  # from the last checkpoint: no training


def test_a_full_disk_in_data_preparation_is_one_line(tmp_path, monkeypatch, capsys):
    from tests import fake_tfds

    def full_disk(self, count, split_seed):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        yield

    monkeypatch.setattr(fake_tfds.FakeDomainnet, "_generate_examples", full_disk)
    data_dir = tmp_path / "data"
    code = cli.run(lambda: fake_tfds.prepare(str(data_dir)), debug=False, workdir=str(tmp_path))
    assert code == cli.EXIT_INPUT
    err = capsys.readouterr().err
    assert err.startswith("error: out of disk space writing files in ") and err.count("\n") == 1
    assert " free)" in err and "run the same command again" in err


@pytest.mark.parametrize(
    "error, directory",
    [
        # Python's open() in a report writer: the file's directory.
        (OSError(errno.ENOSPC, "No space left on device", "{tmp}/results/results.json"), "results"),
        # A quota, wrapped by the writer (matplotlib, TFDS): the work directory.
        (RuntimeError("cannot save the plot"), "."),
        # TensorStore's text, with the path in it.
        (ValueError(TENSORSTORE_ENOSPC.format(where="{tmp}/checkpoints/8.tmp")), "checkpoints"),
    ],
)
def test_any_writers_full_disk_is_one_line_naming_its_directory(error, directory, tmp_path, capsys):
    (tmp_path / "results").mkdir()
    (tmp_path / "checkpoints").mkdir()
    if isinstance(error, OSError):
        error = OSError(error.errno, error.strerror, error.filename.format(tmp=tmp_path))
    elif isinstance(error, ValueError):
        error = ValueError(str(error).format(tmp=tmp_path))
    else:
        error.__cause__ = OSError(errno.EDQUOT, os.strerror(errno.EDQUOT))

    def body():
        raise error

    assert cli.run(body, debug=False, workdir=str(tmp_path)) == cli.EXIT_INPUT
    err = capsys.readouterr().err
    expected = tmp_path if directory == "." else tmp_path / directory
    assert f"out of disk space writing files in {expected} (" in err and err.count("\n") == 1
    with pytest.raises(type(error)):
        cli.run(body, debug=True)
    assert as_out_of_space(ValueError("another error")) is None


def test_the_errors_cross_process_boundaries():
    """The experiment's worker processes send their errors to the parent by pickle."""
    import pickle

    space = OutOfSpaceError("/tmp/w/checkpoints", "a checkpoint", needed=2000, free=10)
    busy = WorkdirBusyError(Path("/tmp/w"), {"pid": 12, "host": "h", "started": "noon"})
    for error in (space, busy):
        copy = pickle.loads(pickle.dumps(error))
        assert type(copy) is type(error) and str(copy) == str(error)
    assert copy.holder["pid"] == 12


# --- Item 8: a finished or checkpointed run refuses other data ---------------------------


def test_a_finished_run_refuses_other_data(reference):
    workdir, expected, _ = reference
    train, validation, tests = tiny_fit.data()
    assert tiny(workdir).to_json() == expected  # the same data: the stored result
    shifted = type(train)(train.images, (train.labels + 1) % 3, train.batch_size)
    with pytest.raises(CheckpointMismatchError, match=r"other data: data\.train\.labels: "):
        tiny(workdir, train=shifted)
    scaled = EvalSet(validation.name, validation.images * 2, validation.labels)
    with pytest.raises(CheckpointMismatchError, match=r"data\.validation\.images: '\(50, "):
        tiny(workdir, validation=scaled)
    fewer = EvalSet("test", tests[0].images[:40], tests[0].labels[:40])
    with pytest.raises(CheckpointMismatchError, match=r"data\.tests\.test\.count: 50 in the"):
        tiny(workdir, tests=[fewer])


def test_a_checkpointed_run_refuses_other_data_and_old_records_are_kept(tmp_path, reference):
    workdir = tmp_path / "run"
    train, _, _ = tiny_fit.data()
    config = tiny_fit.config("vanilla", epochs=EPOCHS)
    model = tiny_fit.TinyNet(nnx.Rngs(0))
    _, validation, tests = tiny_fit.data()
    assert fit(model, config, train, validation, tests, workdir, stop_after_steps=5) is None
    shifted = type(train)(train.images, (train.labels + 1) % 3, train.batch_size)
    with pytest.raises(CheckpointMismatchError, match=r"checkpoints/5 belongs to a run on other"):
        tiny(workdir, train=shifted)
    # A result recorded before data was recorded is taken as it is.
    finished = tmp_path / "finished"
    shutil.copytree(reference[0], finished)
    record = json.loads((finished / "result.json").read_text())
    del record["data"]
    (finished / "result.json").write_text(json.dumps(record))
    assert tiny(finished, train=shifted).to_json() == reference[1]


def test_data_identity_of_sources_and_wrappers():
    class Info:
        version = "1.2.0"

    class Source:
        name, split, info = "domainnet/real", "train[:10%]", Info()

        def __len__(self):
            return 1000

    class SourceData:  # as SourceTrainData / SourceEvalSet
        name, source, class_subset = "real", Source(), np.array([1, 3])

    class Timed:  # a wrapper of the arrays
        def __init__(self, inner):
            self.inner = inner

    train, validation, tests = tiny_fit.data()
    identity = data_identity(Timed(train), validation, SourceData(), [SourceData()])
    assert identity["train"] == data_identity(train, validation, validation, [])["train"]
    assert "heldout" not in data_identity(train, validation, validation, [])
    source = identity["heldout"]
    assert {k: source[k] for k in ("dataset", "version", "split", "count")} == {
        "dataset": "domainnet/real",
        "version": "1.2.0",
        "split": "train[:10%]",
        "count": 1000,
    }
    assert identity["tests"]["real"] == source
