"""The digits experiment end to end, in --quick mode, through its command line."""

from __future__ import annotations

import dataclasses
import json
import shutil
import tempfile
from pathlib import Path

import pytest

from ftp_jax.experiment.__main__ import main
from ftp_jax.experiment.config import digits_config, quick
from ftp_jax.experiment.run import wise_ft_label

ROOT = Path(__file__).resolve().parent.parent
DIGITS = str(ROOT / "experiments" / "configs" / "digits.py")


@pytest.fixture(scope="module")
def quick_run():
    workdir = Path(tempfile.mkdtemp(prefix="ftp_jax_experiment_"))
    main(["--quick", "--no-progress", "--config", DIGITS, "--workdir", str(workdir)])
    yield workdir
    shutil.rmtree(workdir, ignore_errors=True)


def test_writes_table_json_and_plots(quick_run):
    results_dir = quick_run / "results"
    for name in ("results.md", "results.json", "id_vs_ood.png", "radii.png"):
        assert (results_dir / name).stat().st_size > 0, name
    results = json.loads((results_dir / "results.json").read_text())
    config = quick(digits_config())
    wise = [wise_ft_label(a, "vanilla (SGD)") for a in config.wise_ft_alphas]
    labels = [row.label for row in config.methods] + wise
    assert len(wise) == 5
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


def test_peer_rows(quick_run):
    results = json.loads((quick_run / "results" / "results.json").read_text())
    runs = {run["label"]: run for run in results["runs"]}
    for label in ("L2-SP (SGD)", "MARS-PGM (SGD)", "SPD (SGD)", "LP-FT (SGD)"):
        assert runs[label]["steps"] == runs["vanilla (SGD)"]["steps"] > 0, label
    # LP-FT (1 linear-probe epoch of 2 in quick mode): the backbone moves in epoch 2 only.
    lp_ft = [record["distance"]["conv1/kernel"] for record in runs["LP-FT (SGD)"]["history"]]
    assert lp_ft[0] == 0.0 < lp_ft[1]
    # WiSE-FT at alpha = 1 is the vanilla (SGD) model itself; alpha = 0 is another model.
    vanilla = runs["vanilla (SGD)"]
    for alpha, same in ((1.0, True), (0.0, False)):
        wise = runs[wise_ft_label(alpha, "vanilla (SGD)")]
        assert wise["wise_ft_alpha"] == alpha and wise["best_epoch"] == vanilla["best_epoch"]
        accuracies = [
            wise["tests"][n]["accuracy"] == vanilla["tests"][n]["accuracy"]
            for n in vanilla["tests"]
        ]
        assert all(accuracies) if same else not all(accuracies), alpha
    assert "WiSE-FT α=a" in (quick_run / "results" / "results.md").read_text()


def test_digits_config_rows():
    config = digits_config()
    names = {row.label: row.method.name for row in config.methods}
    assert names["L2-SP (SGD)"] == "l2sp" and names["MARS-PGM (SGD)"] == "mars_pgm"
    assert names["SPD (SGD)"] == "spd" and names["LP-FT (SGD)"] == "lp_ft"
    ftp = next(row.method for row in config.methods if row.label == "FTP (SGD)")
    for row in config.methods:  # the SGD peers share FTP's base optimizer and budget
        if row.label.endswith("(SGD)"):
            assert (row.method.optimizer, row.method.learning_rate) == ("sgd", ftp.learning_rate)
    assert config.wise_ft_alphas == (0.0, 0.25, 0.5, 0.75, 1.0)
    lp_ft = next(row.method for row in quick(config).methods if row.method.name == "lp_ft")
    assert lp_ft.options.lp_epochs == 1  # 10 of 30 epochs -> 1 of 2


def test_wise_ft_source_must_be_a_row():
    with pytest.raises(ValueError, match=r"wise_ft_source 'nope' is not a row"):
        dataclasses.replace(digits_config(), wise_ft_sources=("nope",))
    with pytest.raises(ValueError, match=r"wise_ft_alphas must be numbers in \[0, 1\]"):
        dataclasses.replace(digits_config(), wise_ft_alphas=(0.5, 2.0))


def test_rerun_reuses_finished_stages(quick_run):
    before = json.loads((quick_run / "results" / "results.json").read_text())
    main(["--quick", "--no-progress", "--config", DIGITS, "--workdir", str(quick_run)])
    after = json.loads((quick_run / "results" / "results.json").read_text())
    assert after["runs"] == before["runs"]
    # The record keeps the first complete run's time and adds the rerun's.
    assert after["seconds"] == before["seconds"]
    assert len(after["rerun_seconds"]) == 1  # nothing retrained: the runs are equal above
    report = (quick_run / "results" / "results.md").read_text()
    assert f"Total time: {before['seconds']:.0f} s. (Rerun" in report


def test_config_file_and_unknown_key(quick_run, capsys):
    code = main(
        [
            "--quick",
            "--workdir",
            str(quick_run),
            "--config",
            DIGITS,
            "--set",
            "finetune.epoch=3",
        ]
    )
    assert code == 2
    assert "no key 'finetune.epoch'; did you mean finetune.epochs" in capsys.readouterr().err
