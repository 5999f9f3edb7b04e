"""The command lines as a newcomer meets them: ``--help``, one mistake of each kind, Ctrl-C.

Every call runs in a fresh Python process, as a user's would: the mistakes
share one process (``tests/cli_runner.py`` runs them one after the other, each
as ``python -m MODULE`` would, capturing its output and exit code), and a few
run through ``python -m`` itself. Every mistake must fail fast (before any model
is built or weights are read) with one or two lines, no traceback, and the exit
code of its kind (``ftp_jax.cli``).
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
import zipfile
from pathlib import Path

import pytest

from ftp_jax import cli
from ftp_jax.recipes import domainnet
from ftp_jax.recipes.run import _identity
from ftp_jax.train.config import config_items
from tests import fake_tfds

ROOT = Path(__file__).resolve().parent.parent
EXPERIMENT = "ftp_jax.experiment.__main__"
RECIPES = "ftp_jax.recipes.__main__"
ENV = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu")
ENV.pop("XLA_FLAGS", None)  # a user's process: one device


def python_m(module: str, *args: str, cwd=ROOT, timeout=120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=cwd,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def assert_short_error(result: dict, code: int, *fragments: str) -> str:
    """A failure of ``code`` with an ``error:`` line holding ``fragments``, and no traceback."""
    stderr = result["stderr"]
    assert result["code"] == code, (result["code"], stderr)
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert 1 <= len(lines) <= 2 or lines[0].startswith("usage:"), stderr
    for fragment in fragments:
        assert fragment in stderr, (fragment, stderr)
    return stderr


@pytest.fixture(scope="module")
def sandbox():
    """A fake DomainNet prepared in ``data``, a recipe config over it, and weights files."""
    directory = Path(tempfile.mkdtemp(prefix="ftp_jax_cli_"))
    fake_tfds.prepare(str(directory / "data"))
    (directory / "fake_recipe.py").write_text(
        textwrap.dedent(
            """
            from ftp_jax.recipes import domainnet
            from tests.fake_tfds import fake_recipe

            def get_config():
                return fake_recipe(domainnet("ftp_sgd"))
            """
        )
    )
    (directory / "notes.txt").write_text("my notes, not a checkpoint\n")
    marker = directory / "code_ran"

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    with zipfile.ZipFile(directory / "evil.pt", "w") as archive:
        archive.writestr("evil/data.pkl", pickle.dumps({"state_dict": Exploit()}, protocol=2))
    (directory / "empty_folder").mkdir()
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


def recipe_args(sandbox: Path, weights: str = "notes.txt", workdir: str = "run") -> list[str]:
    return [
        "--config",
        str(sandbox / "fake_recipe.py"),
        "--data_dir",
        str(sandbox / "data"),
        "--weights",
        str(sandbox / weights),
        "--workdir",
        str(sandbox / workdir),
    ]


@pytest.fixture(scope="module")
def other_recipe_workdir(sandbox):
    """A work directory with checkpoints of the same recipe at another learning rate."""
    from tests.fake_tfds import fake_recipe

    workdir = sandbox / "other_run"
    (workdir / "checkpoints" / "8").mkdir(parents=True)
    (workdir / "checkpoints" / "8" / "state").write_text("an earlier run's checkpoint")
    config = fake_recipe(domainnet("ftp_sgd"))
    record = _identity(config)
    record["finetune.method.learning_rate"] = 0.05
    (workdir / "recipe.json").write_text(json.dumps(record))
    return workdir


@pytest.fixture(scope="module")
def newcomer(sandbox, other_recipe_workdir):
    """The first hour: both --help, then one mistake of each kind; all in one process."""
    recipe_config = str(ROOT / "experiments" / "configs" / "domainnet_ftp_sgd.py")
    calls = {
        "experiment_help": (EXPERIMENT, ["--help"]),
        "recipes_help": (RECIPES, ["--help"]),
        "prepare_help": ("ftp_jax.data.prepare", ["--help"]),
        "not_an_int": (EXPERIMENT, ["--set", "finetune.epochs=abc"]),
        "unknown_key": (EXPERIMENT, ["--set", "method.lr=0.1"]),
        "no_equals": (EXPERIMENT, ["--set", "finetune.epochs"]),
        "ignored_key": (EXPERIMENT, ["--set", "finetune.method.learning_rate=0.1"]),
        "refused_value": (EXPERIMENT, ["--set", "finetune.batch_size=0"]),
        "recipe_config_to_experiment": (EXPERIMENT, ["--config", recipe_config]),
        "missing_config": (EXPERIMENT, ["--config", str(sandbox / "nope.py")]),
        "print_config": (
            EXPERIMENT,
            ["--quick", "--print-config", "--set", "seeds=(0, 7)", "--set", "methods.2.label=x"],
        ),
        "debug": (EXPERIMENT, ["--debug", "--set", "finetune.epochs=abc"]),
        "recipe_print_config": (RECIPES, ["--config", recipe_config, "--print-config"]),
        "recipe_flags_missing": (RECIPES, ["--config", recipe_config]),
        "recipe_no_data_dir": (
            RECIPES,
            [*recipe_args(sandbox)[:3], str(sandbox / "no_data"), *recipe_args(sandbox)[4:]],
        ),
        "recipe_data_not_prepared": (
            RECIPES,
            ["--config", recipe_config, *recipe_args(sandbox)[2:]],
        ),
        "recipe_unknown_split": (
            RECIPES,
            [*recipe_args(sandbox), "--set", "validation=('fake_domainnet/real', 'valid')"],
        ),
        "recipe_weights_missing": (RECIPES, recipe_args(sandbox, weights="RN50.pt")),
        "recipe_weights_folder": (RECIPES, recipe_args(sandbox, weights="empty_folder")),
        "recipe_weights_text": (RECIPES, recipe_args(sandbox, weights="notes.txt")),
        "recipe_weights_code": (RECIPES, recipe_args(sandbox, weights="evil.pt")),
        "recipe_other_workdir": (
            RECIPES,
            [
                *recipe_args(sandbox, workdir="other_run"),
                "--weights",  # a valid checkpoint: the work directory is what is wrong
                str(ROOT / "tests" / "data" / "tiny_checkpoint.pt"),
            ],
        ),
        "recipe_fresh": (
            RECIPES,
            [*recipe_args(sandbox, workdir="other_run"), "--fresh"],
        ),
    }
    calls_path, results_path = sandbox / "calls.json", sandbox / "results.json"
    calls_path.write_text(json.dumps([[module, args] for module, args in calls.values()]))
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "tests.cli_runner", str(calls_path), str(results_path)],
        cwd=sandbox,
        env=ENV,
        check=True,
        timeout=300,
    )
    seconds = time.perf_counter() - started
    results = dict(zip(calls, json.loads(results_path.read_text()), strict=True))
    return results, seconds


def test_help_names_every_flag_and_the_exit_codes(newcomer):
    results, _ = newcomer
    for name in ("experiment_help", "recipes_help"):
        help_text = results[name]["stdout"]
        assert results[name]["code"] == 0
        for flag in ("--config", "--set", "--print-config", "--fresh", "--no-progress", "--debug"):
            assert flag in help_text, (name, flag)
        assert "exit codes:" in help_text and "130" in help_text
    assert results["experiment_help"]["stdout"].startswith("usage: python -m ftp_jax.experiment")
    assert results["recipes_help"]["stdout"].startswith("usage: python -m ftp_jax.recipes")
    prepare = results["prepare_help"]["stdout"]
    assert prepare.startswith("usage: python -m ftp_jax.data.prepare")
    from ftp_jax.data import DATASETS

    for name in DATASETS:
        assert name in prepare, name


def test_set_errors_name_the_key_the_type_and_close_keys(newcomer):
    results, _ = newcomer
    assert_short_error(
        results["not_an_int"], cli.EXIT_USAGE, "finetune.epochs", "expects an int", "'abc'"
    )
    assert_short_error(
        results["unknown_key"],
        cli.EXIT_USAGE,
        "no key 'method.lr'",
        "did you mean",
        "methods.<i>.method.learning_rate",
        "--print-config",
    )
    assert_short_error(results["no_equals"], cli.EXIT_USAGE, "key=value")
    assert_short_error(
        results["ignored_key"], cli.EXIT_USAGE, "set methods.<i>.method.learning_rate for row i"
    )
    assert_short_error(
        results["refused_value"], cli.EXIT_USAGE, "finetune.batch_size=0", "must be >= 1"
    )


def test_config_files_of_the_other_cli_and_missing_ones(newcomer):
    results, _ = newcomer
    assert_short_error(
        results["recipe_config_to_experiment"],
        cli.EXIT_USAGE,
        "holds a RecipeConfig",
        "python -m ftp_jax.recipes --config",
    )
    assert_short_error(results["missing_config"], cli.EXIT_USAGE, "nope.py: no such file")


def test_print_config_lists_every_key_after_the_overrides(newcomer):
    from ftp_jax.experiment.config import default_config, quick

    results, _ = newcomer
    printed = results["print_config"]
    assert printed["code"] == 0 and printed["stderr"] == ""
    lines = printed["stdout"].splitlines()
    keys = [line.split(" = ")[0] for line in lines if " = " in line]
    assert keys == [key for key, _ in config_items(quick(default_config()))]
    assert "seeds = (0, 7)" in lines and "methods.2.label = 'x'" in lines
    assert "methods.0.method.learning_rate = 0.01" in lines
    recipe = results["recipe_print_config"]
    assert recipe["code"] == 0 and "finetune.method.name = 'ftp'" in recipe["stdout"]


def test_debug_shows_the_traceback(newcomer):
    results, _ = newcomer
    assert results["debug"]["code"] != 0
    assert "Traceback" in results["debug"]["stderr"]


def test_recipe_inputs_are_checked_before_any_heavy_work(newcomer, sandbox):
    results, seconds = newcomer
    assert_short_error(results["recipe_flags_missing"], 2, "--data_dir, --weights, --workdir")
    assert_short_error(results["recipe_no_data_dir"], cli.EXIT_INPUT, "no_data", "does not exist")
    assert_short_error(
        results["recipe_data_not_prepared"],
        cli.EXIT_INPUT,
        "'domainnet/real'",
        "is not prepared",
        "tfds build",
    )
    assert_short_error(
        results["recipe_unknown_split"], cli.EXIT_INPUT, "'valid' is not a split", "'train'"
    )
    assert_short_error(results["recipe_weights_missing"], cli.EXIT_INPUT, "no weights file")
    assert_short_error(results["recipe_weights_folder"], cli.EXIT_INPUT, "no checkpoint in")
    text = assert_short_error(
        results["recipe_weights_text"], cli.EXIT_INPUT, "notes.txt is not a checkpoint"
    )
    assert "weights_only" not in text and "install torch" not in text
    assert_short_error(
        results["recipe_weights_code"], cli.EXIT_INPUT, "asks for posix.system", "refused"
    )
    assert not (sandbox / "code_ran").exists()
    # Every call in one process, none of which built a model or read weights: seconds.
    assert seconds < 90, seconds


def test_work_directory_of_another_run_lists_the_difference_and_fresh_moves_it(newcomer, sandbox):
    results, _ = newcomer
    assert_short_error(
        results["recipe_other_workdir"],
        cli.EXIT_WORKDIR,
        "finetune.method.learning_rate: 0.05 in the work directory, 0.01 now",
        "--fresh",
    )
    fresh = results["recipe_fresh"]
    # --fresh moved the old run aside (nothing deleted), then the next check failed.
    assert "--fresh: moved the old work directory" in fresh["stdout"]
    assert_short_error(fresh, cli.EXIT_INPUT, "notes.txt is not a checkpoint")
    moved = [p for p in sandbox.iterdir() if p.name.startswith("other_run.old-")]
    assert len(moved) == 1 and (moved[0] / "checkpoints" / "8" / "state").exists()
    assert not (sandbox / "other_run").exists()


def test_python_m_exit_codes_and_no_start_up_noise(sandbox):
    result = python_m(EXPERIMENT.rsplit(".", 1)[0], "--set", "finetune.epochs=abc")
    assert result.returncode == cli.EXIT_USAGE
    assert result.stderr.splitlines() == [
        "error: --set finetune.epochs=abc: finetune.epochs expects an int, got the text 'abc'."
    ]
    assert result.stdout == ""
    result = python_m("ftp_jax.recipes", *recipe_args(sandbox, weights="evil.pt"))
    assert result.returncode == cli.EXIT_INPUT
    assert len(result.stderr.splitlines()) == 1 and "posix.system" in result.stderr
    assert "WARNING" not in result.stderr


def test_quiet_start_and_no_progress_silences_tfds(tmp_path):
    """No OpenCV notice when images are decoded; no TFDS bar while a dataset is prepared."""
    script = textwrap.dedent(
        f"""
        import io
        import numpy as np
        import PIL.Image
        import tensorflow_datasets as tfds
        from ftp_jax import cli
        from tests import fake_tfds

        cli.quiet(progress=False)
        fake_tfds.prepare({str(tmp_path)!r})
        png = io.BytesIO()
        PIL.Image.fromarray(np.zeros((4, 4), np.uint8)).save(png, format="PNG")
        feature = tfds.features.Image(shape=(4, 4, 1))
        feature.decode_example_np(png.getvalue())  # TFDS's notice when OpenCV is missing
        print("done")
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=ENV, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "done\n" and result.stderr == "", result.stderr


def test_ctrl_c_says_how_to_resume(tmp_path):
    process = subprocess.Popen(
        [sys.executable, "-m", "ftp_jax.experiment", "--quick", "--no-progress"]
        + ["--workdir", str(tmp_path / "run")],
        cwd=ROOT,
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 60
    while time.time() < deadline and not (tmp_path / "run" / "data").exists():
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == cli.EXIT_INTERRUPTED, stderr
    assert "Traceback" not in stderr, stderr
    assert "interrupted (Ctrl-C); run the same command again to resume" in stderr
    assert stdout == ""
