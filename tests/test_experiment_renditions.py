"""The renditions experiment (the default): a reduced --quick run end to end, and its parts."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from ftp_jax.experiment import run as run_module
from ftp_jax.experiment.config import (
    ExperimentConfig,
    MethodRun,
    Regime,
    default_config,
    quick,
    renditions_config,
)
from ftp_jax.experiment.run import run_experiment, wise_ft_label, wise_ft_tuned_label
from ftp_jax.train.config import MethodConfig

HEAD = "vanilla (SGD), pre-trained head"
KEPT = ("L2-SP (SGD)", HEAD)


def _tiny() -> ExperimentConfig:
    """``--quick`` with two rows (one tuned), 64 training and 100 test examples: seconds.

    (The digits experiment's test covers the new-head rows and their WiSE-FT.)
    """
    config = quick(default_config())
    return dataclasses.replace(
        config,
        methods=tuple(
            dataclasses.replace(row, grid=(0.1, 10.0)) if row.tune else row
            for row in config.methods
            if row.label in KEPT
        ),
        pretrain=dataclasses.replace(config.pretrain, eval_batch_size=100),
        finetune=dataclasses.replace(config.finetune, epochs=1, eval_batch_size=100),
        regimes=tuple(dataclasses.replace(r, epochs=1) for r in config.regimes),
        train_subset=64,
        eval_subset=100,
        wise_ft_alphas=(0.0, 0.5, 1.0),
        wise_ft_sources=(HEAD,),
        speed_reference=HEAD,
        compilation_cache=False,  # a process-wide setting: not from inside the test run
    )


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("renditions")
    results = run_experiment(_tiny(), workdir, progress=False)
    return workdir, results


def test_writes_tables_and_plots(tiny_run):
    workdir, results = tiny_run
    report = (workdir / "results" / "results.md").read_text()
    assert report.splitlines()[2].startswith("> **A smoke test (`--quick`)")
    assert "## Pinned leaves" in report
    for name in ("results.md", "id_vs_ood.png", "per_set.png", "ood_vs_speed.png", "samples.png"):
        assert (workdir / "results" / name).stat().st_size > 0, name
    assert results["id_test"] == "digit_renditions/photo"
    assert results["ood_sets"] == [
        f"digit_renditions/{r}" for r in ("hand", "mnistm", "uci", "print", "outline")
    ]
    assert results["id_train_examples"] == {"100": 64, "10": 64}
    table = (workdir / "results" / "results.md").read_text()
    assert "## 100% of `photo` train" in table and "## 10% of `photo` train" in table
    for regime in (100, 10):
        labels = [row["label"] for row in results["summary"] if row["regime"] == regime]
        wise = [wise_ft_label(alpha, HEAD) for alpha in (0.0, 0.5, 1.0)]
        assert labels == [*KEPT, *wise, wise_ft_tuned_label(HEAD)]
        assert (workdir / "finetune" / f"p{regime}" / "l2_sp_sgd" / "alpha_10" / "seed0").is_dir()


def test_tuned_row_counts_its_runs_and_keeps_the_best_on_validation(tiny_run):
    _, results = tiny_run
    for regime in (100, 10):
        trials = [
            r for r in results["runs"] if r["label"] == "L2-SP (SGD)" and r["regime"] == regime
        ]
        assert sorted(r["setting"]["alpha"] for r in trials) == [0.1, 10.0]
        best = max(trials, key=lambda r: r["validation"]["accuracy"])  # first on ties
        assert [r["selected"] for r in trials].count(True) == 1
        row = next(
            r for r in results["summary"] if r["label"] == "L2-SP (SGD)" and r["regime"] == regime
        )
        assert (row["settings_tried"], row["training_runs"]) == (2, 2)
        assert row["setting"] == best["setting"]
        assert row["ID"]["values"] == [best["tests"]["digit_renditions/photo"]["accuracy"]]


def test_speed_is_measured_and_relative_to_the_reference(tiny_run):
    _, results = tiny_run
    for row in results["summary"]:
        if "wise_ft_source" in row:
            assert "steps_per_s" not in row  # evaluation only: its source's speed
            continue
        assert row["steps_per_s"]["mean"] > 0, row["label"]
        if row["label"] == HEAD:
            assert row["speed_vs_reference"] == 1.0
    for run in results["runs"]:
        if "wise_ft_source" not in run:  # every step but the first (compilation) is timed
            assert run["speed"]["steps"] == run["steps"] - 1 > 0


def test_pretrained_head_rows(tiny_run):
    _, results = tiny_run
    runs = {(r["label"], r["regime"]): r for r in results["runs"] if r.get("selected", True)}
    pretrained = results["pretrained"]["tests"]
    for regime in (100, 10):
        # WiSE-FT at alpha 0 over a run from the pre-trained head is the pre-trained model.
        zero = runs[(wise_ft_label(0.0, HEAD), regime)]
        for name, metrics in pretrained.items():
            assert zero["tests"][name]["accuracy"] == pytest.approx(metrics["accuracy"], abs=1e-9)
        one = runs[(wise_ft_label(1.0, HEAD), regime)]
        assert one["tests"] == runs[(HEAD, regime)]["tests"]


def test_other_seeds_run_the_chosen_value(monkeypatch):
    """A tuned row's trials run first; the chosen value (best validation, first on ties)
    then runs on the other seeds; the table's runs come first, in seed order."""
    config = dataclasses.replace(renditions_config(), seeds=(0, 1, 2), tune_seeds=(0,))
    config = dataclasses.replace(
        config,
        methods=tuple(r for r in config.methods if r.label == "MARS-PGM (SGD)"),
        wise_ft_alphas=(),
        speed_reference="MARS-PGM (SGD)",
    )
    validation = {0.1: 0.5, 0.5: 0.7, 2.0: 0.7}  # a tie: the first wins
    calls = []

    def serial(first, make_runner, *, workers, then, started, finished, total):
        queue, done = list(first), {}
        while queue:
            job = queue.pop(0)
            calls.append((job.regime, job.value, job.seed))
            done[job] = run = {
                "seed": job.seed,
                "setting": {"radius": job.value},
                "validation": {"accuracy": validation[job.value]},
            }
            queue += then(job, run)
        assert total == len(done)
        return done

    monkeypatch.setattr(run_module, "run_jobs", serial)
    done = run_module.finetune_all(config, None, None, workers=1, progress=False)
    for percent in (100, 10):
        assert [c[1:] for c in calls if c[0] == percent] == [
            (0.1, 0),
            (0.5, 0),
            (2.0, 0),
            (0.5, 1),
            (0.5, 2),
        ]
    runs = run_module._row_runs(config, config.methods[0], config.regimes[0], done)
    assert [(r["setting"]["radius"], r["seed"], r["selected"]) for r in runs] == [
        (0.5, 0, True),
        (0.5, 1, True),
        (0.5, 2, True),
        (0.1, 0, False),
        (2.0, 0, False),
    ]


def test_default_is_the_reference_protocol():
    """The FTP reference's DomainNet recipe, where these data allow (issue 23)."""
    config = default_config()
    assert config == renditions_config()
    assert [r.percent for r in config.regimes] == [100, 10]

    def rows(percent):
        return {row.label: row for row in config.methods if row.runs_in(percent)}

    for percent, ftp_lr in ((100, 1e-2), (10, 1e-1)):
        found = rows(percent)
        ftp = found["FTP (SGD)"]
        assert (ftp.tune, ftp.grid) == ("k", (0.0, 0.1, 1.0))
        reference = found["FTP (SGD), k=1 (reference default)"]
        assert reference.method.options.k == 1.0 and not reference.grid
        for row in (ftp, reference):
            method = row.method
            assert (method.learning_rate, method.weight_decay) == (ftp_lr, 0.0)
            assert method.nesterov and method.momentum == 0.9
        for label in ("vanilla (SGD)", "linear probe (SGD)", "TPGM (SGD)", HEAD):
            method = found[label].method
            assert method.nesterov and method.weight_decay == 5e-4, label
            assert method.learning_rate == 1e-2, label
        adamw = found["FTP (AdamW)"].method
        assert (adamw.optimizer, adamw.learning_rate, adamw.weight_decay) == ("adamw", 1e-4, 0)
        assert ("linear probe (AdamW)" in found) == (percent == 10)
        tuned = {label: row.tune for label, row in found.items() if row.grid}
        assert tuned == {
            "LP-FT (SGD)": "lp_share",
            "L2-SP (SGD)": "alpha",
            "MARS-PGM (SGD)": "radius",
            "SPD (SGD)": "strength",
            "FTP (SGD)": "k",
        }
    assert config.finetune.lr_schedule == "cosine_per_epoch"
    assert config.finetune.batch_size > 16 and config.regimes[1].batch_size > 8
    assert config.protocol_notes and all(len(note) > 40 for note in config.protocol_notes)
    assert rows(100)[HEAD].pretrained_head and config.wise_ft_tune
    assert len(config.seeds) >= 3 and "digit_renditions/photo" not in dict(config.ood_datasets)
    assert quick(config).smoke_test and not config.smoke_test


def test_rows_share_a_label_only_in_disjoint_regimes():
    config = renditions_config()
    row = config.methods[0]
    with pytest.raises(ValueError, match="labels must differ within a regime"):
        dataclasses.replace(config, methods=(row, row))
    with pytest.raises(ValueError, match="not regimes of the experiment"):
        dataclasses.replace(config, methods=(dataclasses.replace(row, regimes=(50,)),))
    with pytest.raises(ValueError, match="must run in every regime"):
        dataclasses.replace(config, methods=(dataclasses.replace(row, regimes=(10,)),))


def test_row_and_regime_settings():
    lp_ft = MethodRun("LP-FT", MethodConfig(name="lp_ft"), tune="lp_share", grid=(0.25, 0.75))
    assert lp_ft.with_setting(0.25, 15).options.lp_epochs == 4
    assert lp_ft.with_setting(0.75, 3).options.lp_epochs == 2
    assert lp_ft.with_setting(0.25, 2).options.lp_epochs == 1
    mars = MethodRun("M", MethodConfig(name="mars_pgm"), tune="radius", grid=(0.1, 2.0))
    assert mars.with_setting(2.0, 3).options.radius == 2.0
    config = renditions_config()
    ten = config.regime_finetune(Regime(10, epochs=15, batch_size=16))
    assert (ten.epochs, ten.batch_size, ten.lr_schedule) == (15, 16, config.finetune.lr_schedule)
    with pytest.raises(ValueError, match="`tune` and `grid` go together"):
        MethodRun("x", MethodConfig(), tune="alpha")
    with pytest.raises(
        ValueError, match=r"neither a field of method 'vanilla''s options \(NoOptions"
    ):
        MethodRun("x", MethodConfig(), tune="alpha", grid=(1.0,))
    with pytest.raises(ValueError, match=r"an lp_share must be in \(0, 1\)"):
        MethodRun("x", MethodConfig(name="lp_ft"), tune="lp_share", grid=(1.0,))
    with pytest.raises(ValueError, match="tune_seeds"):
        dataclasses.replace(config, tune_seeds=(5,))
    with pytest.raises(ValueError, match="distinct percents"):
        dataclasses.replace(config, regimes=(Regime(10), Regime(10)))


def test_results_json_round_trips(tiny_run):
    workdir, results = tiny_run
    stored = json.loads((workdir / "results" / "results.json").read_text())
    assert stored["summary"] == results["summary"]
    assert np.isfinite([row["OOD avg"]["mean"] for row in stored["summary"]]).all()
