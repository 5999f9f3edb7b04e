"""Tests for ftp_jax.experiment.compare, on the committed renditions results."""

import copy
import json
from pathlib import Path

import pytest

from ftp_jax.experiment.compare import compare, compare_markdown, main

RESULTS = Path(__file__).resolve().parent.parent / "experiments/results/renditions/results.json"


@pytest.fixture(scope="module")
def results():
    return json.loads(RESULTS.read_text())


def test_a_run_against_itself_differs_nowhere(results):
    records = compare(results, results)
    assert {r["regime"] for r in records} == {100, 10}
    assert any(r["label"] == "FTP (SGD)" for r in records)
    for record in records:
        for key in ("ID", "OOD avg"):
            assert record["difference"][key]["mean"] == 0.0
            # No verdict where the seeds do not vary (the pre-trained model, alpha = 0).
            single = record["reference"][key]["std"] < 1e-9
            assert record["difference"][key]["beyond_noise"] is (None if single else False)
    assert any(r["difference"]["ID"]["beyond_noise"] is None for r in records)


def test_a_shifted_row_is_beyond_the_noise_and_bold(results, tmp_path):
    shifted = copy.deepcopy(results)
    for run in shifted["runs"]:
        if run["label"] == "FTP (SGD)" and run["regime"] == 100:
            run["tests"][shifted["id_test"]]["accuracy"] -= 0.2
    records = compare(results, shifted)
    ftp = next(r for r in records if r["label"] == "FTP (SGD)" and r["regime"] == 100)
    assert ftp["difference"]["ID"]["mean"] == pytest.approx(-0.2)
    assert ftp["difference"]["ID"]["beyond_noise"] is True
    assert ftp["difference"]["OOD avg"]["beyond_noise"] is False
    markdown = compare_markdown(records, ("float32", "bfloat16"))
    # The cells, from the committed results (not retyped): FTP's tuned k, its ID mean and
    # std, the same shifted by -20 points, the difference and its standard error.
    row = next(r for r in results["summary"] if r["label"] == "FTP (SGD)" and r["regime"] == 100)
    mean, std = 100 * row["ID"]["mean"], 100 * row["ID"]["std"]
    setting = ", ".join(f"{k}={v:g}" for k, v in row["setting"].items())
    stderr = 100 * ftp["difference"]["ID"]["stderr"]
    assert (
        f"| FTP (SGD) | {setting} | {setting} | {mean:.1f} ± {std:.1f} | "
        f"{mean - 20:.1f} ± {std:.1f} | **-20.0 (SE {stderr:.1f})** |"
    ) in markdown
    spd = next(r for r in results["summary"] if r["label"] == "SPD (SGD)" and r["regime"] == 100)
    strength = f"strength={spd['setting']['strength']:g}"
    assert f"| SPD (SGD) | {strength} | {strength} |" in markdown
    assert "1 of " in markdown
    path = tmp_path / "shifted.json"
    path.write_text(json.dumps(shifted))
    assert main([str(RESULTS), str(path), "--out", str(tmp_path), "--names", "a", "b"]) == 0
    assert json.loads((tmp_path / "compare.json").read_text()) == json.loads(json.dumps(records))


def test_results_with_the_former_setting_names_compare_as_the_same_settings(results):
    """Results written before the per-method options name the tuned settings
    l2sp_alpha, pgm_radius and spd_strength: the same settings, under today's names."""
    former = copy.deepcopy(results)
    renamed = {"alpha": "l2sp_alpha", "radius": "pgm_radius", "strength": "spd_strength"}
    for run in former["runs"]:
        if "setting" in run and not run["label"].startswith("WiSE-FT"):
            run["setting"] = {renamed.get(k, k): v for k, v in run["setting"].items()}
    assert any("spd_strength" in run.get("setting", {}) for run in former["runs"])
    records = compare(results, former)
    assert records == compare(results, results)
    spd = next(r for r in records if r["label"] == "SPD (SGD)" and r["regime"] == 100)
    chosen = next(
        r["setting"] for r in results["summary"] if r["label"] == "SPD (SGD)" and r["regime"] == 100
    )
    assert spd["other"]["setting"] == spd["reference"]["setting"] == chosen


def test_unrelated_results_are_refused(results):
    other = copy.deepcopy(results)
    for run in other["runs"]:
        run["label"] = "x " + run["label"]
    other["config"]["methods"] = [
        {**row, "label": "x " + row["label"]} for row in other["config"]["methods"]
    ]
    other["config"]["wise_ft_sources"] = ["x " + s for s in other["config"]["wise_ft_sources"]]
    other["config"]["speed_reference"] = "x vanilla (SGD)"
    with pytest.raises(ValueError, match="share no"):
        compare(results, other)
