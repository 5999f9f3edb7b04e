"""The default experiment end to end, in --quick mode, through its command line."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import pytest

from ftp_jax.experiment.__main__ import main
from ftp_jax.experiment.config import default_config, quick

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def quick_run():
    workdir = Path(tempfile.mkdtemp(prefix="ftp_jax_experiment_"))
    main(["--quick", "--no-progress", "--workdir", str(workdir)])
    yield workdir
    shutil.rmtree(workdir, ignore_errors=True)


def test_writes_table_json_and_plots(quick_run):
    results_dir = quick_run / "results"
    for name in ("results.md", "results.json", "id_vs_ood.png", "radii.png"):
        assert (results_dir / name).stat().st_size > 0, name
    results = json.loads((results_dir / "results.json").read_text())
    config = quick(default_config())
    labels = [row.label for row in config.methods]
    assert [row["label"] for row in results["summary"]] == labels
    assert len(results["runs"]) == len(labels) * len(config.seeds)
    assert results["ood_sets"] == [name for name, _ in config.ood_datasets]
    table = (results_dir / "results.md").read_text()
    for label in labels:
        assert f"| {label} |" in table
    for row in results["summary"]:
        assert 0.0 <= row["ID"]["mean"] <= 1.0 and 0.0 <= row["OOD avg"]["mean"] <= 1.0
    ftp_run = next(r for r in results["runs"] if r["label"] == "FTP (SGD)")
    assert "conv1/kernel" in ftp_run["history"][-1]["radius"]
    assert "head/kernel" not in ftp_run["history"][-1]["radius"]


def test_rerun_reuses_finished_stages(quick_run):
    before = json.loads((quick_run / "results" / "results.json").read_text())
    main(["--quick", "--no-progress", "--workdir", str(quick_run)])
    after = json.loads((quick_run / "results" / "results.json").read_text())
    assert after["runs"] == before["runs"]
    assert after["seconds"] < before["seconds"]


def test_config_file_and_unknown_key(quick_run):
    with pytest.raises(KeyError, match="no key 'finetune.epoch'"):
        main(
            [
                "--quick",
                "--workdir",
                str(quick_run),
                "--config",
                str(ROOT / "experiments" / "configs" / "digits.py"),
                "--set",
                "finetune.epoch=3",
            ]
        )
