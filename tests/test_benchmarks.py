"""Smoke runs of the benchmark scripts (``--quick``): they run and write their JSON.

Each script runs in its own process, without the test-wide XLA flags (8 simulated
devices), as a user would run it. No timing is asserted.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _run(script: str, out: Path, *flags: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env["JAX_PLATFORMS"] = "cpu"
    completed = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), "--quick", "--out", str(out), *flags],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    assert "|" in completed.stdout  # printed a table
    return json.loads(out.read_text())


def _check_machine(result: dict) -> None:
    machine = result["machine"]
    for key in ("jax", "backend", "cpu_count", "cpu_model"):
        assert key in machine, key
    assert machine["backend"] == "cpu"


def test_update_step(tmp_path):
    before = tmp_path / "ftp_before.py"
    before.write_text((ROOT / "ftp_jax" / "_ftp.py").read_text())
    result = _run("update_step.py", tmp_path / "update.json", "--ftp-before", str(before))
    _check_machine(result)
    methods = result["models"]["quick"]["methods"]
    for name in ("sgd", "ftp(sgd)", "adamw", "ftp(adamw)", "ftp(adamw) [before]"):
        assert methods[name]["median_s"] > 0, name
    assert methods["ftp(adamw)"]["base"] == "adamw"
    assert methods["ftp(adamw)"]["ratio_to_base"] > 0
    assert "ftp(adamw) bf16 displacement" in methods


def test_state_memory(tmp_path):
    result = _run("state_memory.py", tmp_path / "memory.json")
    _check_machine(result)
    methods = result["models"]["quick"]["methods"]
    # Counted from the actual state pytrees: FTP keeps two parameter-sized buffers
    # (plus per-row norms and scalars) beyond its base optimizer.
    assert methods["sgd"]["state_per_param"] == 0
    assert methods["adamw"]["state_per_param"] == pytest.approx(2.0, abs=1e-3)
    assert methods["ftp(adamw)"]["extra_over_base_per_param"] == pytest.approx(2.0, abs=0.05)
    assert methods["ftp(adamw) bf16 displacement"]["extra_over_base_per_param"] == (
        pytest.approx(1.5, abs=0.05)
    )
    assert methods["ftp(adamw) bf16 anchor+displacement"]["extra_over_base_per_param"] == (
        pytest.approx(1.0, abs=0.05)
    )
    assert methods["tpgm (projection state alone)"]["state_per_param"] == pytest.approx(
        1.0, abs=0.01
    )


def test_buffer_options(tmp_path):
    result = _run("buffer_options.py", tmp_path / "options.json")
    _check_machine(result)
    problems = {row["problem"] for row in result["rows"]}
    assert any(p.startswith("reference") for p in problems)
    assert any(p.startswith("SmallCNN") for p in problems)
    for row in result["rows"]:
        assert row["params_vs_leaf_scale"] >= 0


def test_train_step(tmp_path):
    result = _run("train_step.py", tmp_path / "train.json")
    _check_machine(result)
    steps = result["steps"]
    for name in ("sgd+momentum", "ftp(sgd+momentum)", "adamw", "ftp(adamw)", "tpgm apply"):
        assert steps[name]["median_s"] > 0, name
    assert "overhead_vs_base" in steps["ftp(adamw)"]
    assert steps["tpgm update_step"]["relative_to_sgd_momentum_step"] > 0
