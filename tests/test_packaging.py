"""What the built wheel holds, and what the package needs: the command lines' configs in it.

The wheel is built (without dependencies, without network) from a copy of the
files it is made of; everything a user of the command lines needs must be in it:
the config files (``--config digits``), ``py.typed`` and the license.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

from ftp_jax import cli

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = sorted(p.stem for p in (ROOT / "experiments" / "configs").glob("[!_]*.py"))


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> zipfile.ZipFile:
    source = tmp_path_factory.mktemp("source")
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "experiments" / "configs", source / "experiments" / "configs")
    shutil.copytree(
        ROOT / "ftp_jax",
        source / "ftp_jax",
        symlinks=True,
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation"]
        + ["--no-index", "-q", "-w", str(out)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (path,) = out.glob("ftp_jax-*.whl")
    return zipfile.ZipFile(path)


def test_the_wheel_holds_the_configs_the_license_and_py_typed(wheel):
    names = set(wheel.namelist())
    assert CONFIGS and {f"ftp_jax/configs/{name}.py" for name in CONFIGS} <= names
    assert "ftp_jax/py.typed" in names
    licenses = [n for n in names if n.endswith("/licenses/LICENSE")]
    assert licenses, sorted(n for n in names if "dist-info" in n)
    assert "Apache License" in wheel.read(licenses[0]).decode()
    metadata = wheel.read(next(n for n in names if n.endswith("dist-info/METADATA"))).decode()
    assert re.search(r"^License-Expression: Apache-2.0$", metadata, re.M)
    # The core installs without chex (the tests' dependency).
    core = [line for line in metadata.splitlines() if line.startswith("Requires-Dist:")]
    assert not [line for line in core if "chex" in line and "extra ==" not in line], core


def test_the_license_file_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"] == "Apache-2.0"
    assert "Apache License" in (ROOT / "LICENSE").read_text()
    assert "Version 2.0" in (ROOT / "LICENSE").read_text()


def test_packaged_configs_are_the_experiments_configs():
    # ftp_jax/configs is experiments/configs: a new config file is in the package too.
    assert sorted(cli.packaged_configs()) == CONFIGS
    assert (ROOT / "ftp_jax" / "configs").resolve() == (ROOT / "experiments" / "configs")


def test_a_config_name_loads_the_packaged_config():
    from ftp_jax.experiment.config import ExperimentConfig, digits_config
    from ftp_jax.recipes.config import RecipeConfig

    assert cli.load_config("digits", ExperimentConfig) == digits_config()
    by_path = cli.load_config("experiments/configs/digits.py", ExperimentConfig)
    assert by_path == digits_config()
    assert isinstance(cli.load_config("domainnet_ftp_sgd", RecipeConfig), RecipeConfig)
    with pytest.raises(cli.UsageError, match=r"--config digit: no such file, and no config.*digit"):
        cli.load_config("digit", ExperimentConfig)
    with pytest.raises(cli.UsageError, match=r"--config nothing/digits.py: no such file"):
        cli.load_config("nothing/digits.py", ExperimentConfig)
