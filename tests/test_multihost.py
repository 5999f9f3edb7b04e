"""Multi-host runs: 2 processes joined by ``jax.distributed`` equal one process with their devices.

Each process is a separate Python (``tests/multihost_worker.py``) with one
simulated CPU device, joined over gloo, as two hosts would be; the reference is
one process with two devices. The recipe streams its data from TFDS with each
host reading its own rows of every batch, evaluates on global batches, runs
TPGM's held-out updates, shards params and optimizer state, checkpoints with
orbax from both hosts, and writes its files from host 0 only. A SIGTERM on one
host stops both at the same step, and the resumed run is the uninterrupted one.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

from ftp_jax.cli import EXIT_TERMINATED
from tests import fake_tfds

ROOT = Path(__file__).resolve().parent.parent
RUNS = ["ftp:ftp_sgd:1", "tpgm:tpgm:0"]  # FTP with sharded params; TPGM with held-out updates
# Run "ftp" again on two hosts, the last of which gets SIGTERM after step 4 (of 10).
PREEMPTED = "preempted:ftp_sgd:1:4"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _worker(process_id, num_processes, devices, port, data_dir, out_dir, runs=RUNS):
    command = [
        sys.executable,
        "-m",
        "tests.multihost_worker",
        f"--process_id={process_id}",
        f"--num_processes={num_processes}",
        f"--port={port}",
        f"--devices={devices}",
        f"--data_dir={data_dir}",
        f"--out_dir={out_dir}",
        "--runs",
        *runs,
    ]
    env = {k: v for k, v in os.environ.items() if k != "JAX_PLATFORMS"}
    # The worker sets its own device count; other flags (conftest's codegen) pass through.
    flags = env.pop("XLA_FLAGS", "").split()
    env["XLA_FLAGS"] = " ".join(f for f in flags if "host_platform_device_count" not in f)
    return subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def _records(process, returncode=0) -> dict[str, dict]:
    """The worker's records (``multihost_worker``) by tag (``SUMMARY``, ...), then by run."""
    output, _ = process.communicate(timeout=600)
    if process.returncode != returncode:
        raise AssertionError(f"worker exit code {process.returncode}:\n{output[-4000:]}")
    found = {"SUMMARY": {}, "READS": {}, "STOPPED": {}}
    for line in output.splitlines():
        tag, _, payload = line.partition(" ")
        if tag in found:
            record = json.loads(payload)
            found[tag][record.pop("run")] = record
    return found


def _summaries(process, returncode=0) -> tuple[dict, dict, dict]:
    """The worker's run summaries, training reads and stopped runs, by run."""
    found = _records(process, returncode)
    return found["SUMMARY"], found["READS"], found["STOPPED"]


def _epochs(workdir: Path) -> list[dict]:
    return [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def runs():
    root = Path(tempfile.mkdtemp(prefix="ftp_jax_multihost_"))
    try:
        fake_tfds.prepare(str(root / "data"))
        port = _free_port()
        runs = [*RUNS, PREEMPTED]  # the last one ends the processes (exit code 143)
        hosts = [_worker(i, 2, 1, port, root / "data", root / "multi", runs) for i in range(2)]
        single = _worker(0, 1, 2, 0, root / "data", root / "single")
        host_results = [_summaries(p, returncode=EXIT_TERMINATED) for p in hosts]
        single_summary, single_reads, _ = _summaries(single)
        yield (
            [summary for summary, _, _ in host_results],
            single_summary,
            root,
            [reads for _, reads, _ in host_results],
            single_reads,
            [stopped for _, _, stopped in host_results],
        )
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_two_hosts_equal_one_host_with_their_devices(runs):
    hosts, single, *_ = runs
    assert set(single) == {"ftp", "tpgm"}
    for name in single:
        assert single[name]["devices"] == 2
        # Both hosts see the same numbers: the single process's accuracies exactly,
        # its losses up to the order of float32 sums across hosts.
        assert hosts[0][name] == hosts[1][name]
        multi = hosts[0][name]
        for key in ("id", "ood", "ood_average", "best_epoch", "devices"):
            assert multi[key] == single[name][key]
        assert multi["validation"]["accuracy"] == single[name]["validation"]["accuracy"]
        np.testing.assert_allclose(
            multi["validation"]["loss"], single[name]["validation"]["loss"], rtol=1e-5
        )
        # Every evaluation example counted once (not once per host).
        assert multi["validation"]["count"] == single[name]["validation"]["count"] == 16


def test_two_hosts_write_one_set_of_files_equal_to_one_host(runs):
    _, _, root, *_ = runs
    for name in ("ftp", "tpgm"):
        multi, single = _epochs(root / "multi" / name), _epochs(root / "single" / name)
        assert [r["event"] for r in multi] == ["epoch", "result"]  # one writer
        for record_multi, record_single in zip(multi, single, strict=True):
            for key in ("train_loss", "val_loss"):
                if key in record_single:
                    np.testing.assert_allclose(record_multi[key], record_single[key], rtol=1e-5)
            for key in ("distance", "radius"):
                if key in record_single:
                    assert record_multi[key].keys() == record_single[key].keys()
                    np.testing.assert_allclose(
                        list(record_multi[key].values()),
                        list(record_single[key].values()),
                        rtol=1e-5,
                        atol=1e-6,  # leaves that barely moved (~1e-9)
                    )
        assert (root / "multi" / name / "recipe_result.json").exists()
        assert (root / "multi" / name / "checkpoints").is_dir()


def test_each_host_trains_on_its_own_half_of_every_batch(runs):
    """Regression: every host used to read, decode and train on the whole global batch."""
    *_, host_reads, single_reads, _ = runs
    for name in ("ftp", "tpgm"):
        single = single_reads[name]
        assert set(single["global_rows"]) == {fake_tfds.BATCH_SIZE}
        epochs = single["examples"]
        assert epochs and all(len(set(e)) == len(e) for e in epochs.values())
        for epoch, everything in epochs.items():
            per_host = [set(reads[name]["examples"][epoch]) for reads in host_reads]
            assert [len(reads[name]["examples"][epoch]) for reads in host_reads] == [
                len(everything) // 2
            ] * 2
            assert per_host[0].isdisjoint(per_host[1])
            assert per_host[0] | per_host[1] == set(everything)
        for reads in host_reads:
            assert reads[name]["global_rows"] == single["global_rows"]


def test_sigterm_on_one_host_stops_both_at_one_step_and_the_run_resumes_identically(runs):
    """One host gets SIGTERM after step 4: both save step 4 and exit 143 (the CLI's
    code for SIGTERM); the resumed two-host run ends bit-identical to "ftp", the same
    run uninterrupted."""
    hosts, _, root, *_, stopped = runs
    assert stopped[0] == stopped[1] == {"preempted": {"code": EXIT_TERMINATED, "saved": [4]}}
    workdir = root / "multi" / "preempted"
    assert [p.name for p in (workdir / "checkpoints").iterdir() if p.name.isdigit()] == ["4"]
    assert not (workdir / "recipe_result.json").exists()

    port = _free_port()
    resume = PREEMPTED.rsplit(":", 1)[:1]
    workers = [_worker(i, 2, 1, port, root / "data", root / "multi", resume) for i in range(2)]
    resumed = [_summaries(p)[0]["preempted"] for p in workers]
    # The digest of the final state (params, optimizer and model state, RNG), the numbers.
    assert resumed[0] == resumed[1] == hosts[0]["ftp"]
    metrics = (workdir / "metrics.jsonl").read_text()
    assert metrics == (root / "multi" / "ftp" / "metrics.jsonl").read_text()


class _Initialized(Exception):
    pass


def test_cli_passes_the_cluster_to_jax_distributed(monkeypatch):
    import jax

    from ftp_jax.recipes.__main__ import main

    calls = []

    def initialize(**kwargs):
        calls.append(kwargs)
        raise _Initialized

    monkeypatch.setattr(jax.distributed, "initialize", initialize)
    # The config and the inputs are checked before JAX's distributed start-up (a mistake
    # fails at once instead of waiting for the other hosts): these checks pass here.
    monkeypatch.setattr("ftp_jax.recipes.run.check_inputs", lambda *args, **kwargs: None)
    config = str(ROOT / "experiments" / "configs" / "domainnet_ftp_sgd.py")
    common = ["--config", config, "--data_dir", "d", "--weights", "w", "--workdir", "r"]
    common.append("--debug")  # _Initialized raised as it is, not reported as an error
    with pytest.raises(_Initialized):
        main([*common, "--multihost"])
    with pytest.raises(_Initialized):
        main(
            [
                *common,
                "--multihost",
                "--coordinator_address=10.0.0.1:1234",
                "--num_processes=4",
                "--process_id=3",
            ]
        )
    assert calls == [
        {},
        {"coordinator_address": "10.0.0.1:1234", "num_processes": 4, "process_id": 3},
    ]
    with pytest.raises(SystemExit):  # cluster options without --multihost
        main([*common, "--num_processes=4"])


class _Mesh:
    shape = {"data": 4}  # 2 hosts x 2 devices


class _Placement:
    mesh, devices = _Mesh(), 4


@pytest.mark.parametrize("length", [1, 3, 16, 17, 33, 40])
def test_each_host_reads_its_rows_once(monkeypatch, length):
    import jax

    from ftp_jax.train.evaluation import _padded_batches
    from ftp_jax.train.evaluation import heldout_batches as _heldout_batches
    from ftp_jax.train.inputs import EvalSet

    images = np.arange(length, dtype=np.float32).reshape(length, 1, 1, 1)
    evalset = EvalSet("s", images, np.arange(length, dtype=np.int32) % 7)
    monkeypatch.setattr(jax, "process_count", lambda: 2)
    per_host = []
    for host in range(2):
        monkeypatch.setattr(jax, "process_index", lambda host=host: host)
        batches = list(_padded_batches(evalset, 16, _Placement()))
        assert all(host_rows for _, host_rows in batches)
        assert all(b["image"].shape == (8, 1, 1, 1) and b["mask"].shape == (8,) for b, _ in batches)
        per_host.append([b["image"][b["mask"], 0, 0, 0] for b, _ in batches])
    # Global batch k is host 0's rows then host 1's: every example once, in order.
    assert len(per_host[0]) == len(per_host[1]) == -(-length // 16)
    rows = np.concatenate([np.concatenate(pair) for pair in zip(*per_host, strict=True)])
    np.testing.assert_array_equal(rows, np.arange(length))
    # Held-out batches: the same split of full batches, cycled.
    if length >= 16:
        held = []
        for host in range(2):
            monkeypatch.setattr(jax, "process_index", lambda host=host: host)
            stream = _heldout_batches(evalset, 16, 0, _Placement())
            held.append([next(stream)[0]["image"][:, 0, 0, 0] for _ in range(length // 16 + 1)])
        batches = [np.concatenate(pair) for pair in zip(*held, strict=True)]
        np.testing.assert_array_equal(batches[0], np.arange(16))
        np.testing.assert_array_equal(batches[-1], np.arange(16))  # cycled back
