"""Smoke tests: every paper-scale recipe runs a few steps, with tiny random models on fake data."""

from __future__ import annotations

import importlib.util
import json
import shutil
import tempfile
from pathlib import Path

import jax
import pytest
from flax import nnx

from ftp_jax.recipes import RecipeConfig, build_model, run_recipe
from tests import fake_tfds

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = sorted((ROOT / "experiments" / "configs").glob("[di][om]*_*.py"))


def _load(path: Path) -> RecipeConfig:
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


@pytest.fixture(scope="module")
def data_dir():
    path = tempfile.mkdtemp(prefix="ftp_jax_recipes_")
    fake_tfds.prepare(path)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_recipe_configs_are_found():
    names = {p.stem for p in CONFIGS}
    assert {
        "domainnet_vanilla",
        "domainnet_ftp_sgd",
        "domainnet_ftp_adamw",
        "domainnet_tpgm",
        "domainnet_ftp_sgd_10pct",
        "imagenet_vit_tpgm_posthoc",
    } <= names


# The ViT post-hoc recipe runs with a tiny version of its own model kind (its row
# rules for attention and patch embedding), in float32 (XLA on the CPU emulates
# bfloat16 slowly; the recipes' bfloat16 default is run end to end by test_train's
# MixedPrecisionLoopTest and on two hosts by test_multihost). The DomainNet recipes
# differ from one another only in method, optimizer or data percent: they run the
# same loop on a dense TinyNet with batch norm (TPGM's held-out loss carries its
# statistics), in float32, at a fraction of the compile time. Their model kinds'
# forward passes are checked in test_models and test_convert (against PyTorch),
# TPGM with batch norm in test_tpgm's loop, their methods in
# test_methods/test_train, and the FTP-SGD and TPGM recipes run again on two hosts
# in test_multihost.
OWN_MODEL = ("imagenet_vit_tpgm_posthoc",)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_recipe_runs_a_few_steps(path, data_dir):
    config = _load(path)
    assert config.train[0] in ("domainnet/real", "imagenet2012")  # the real datasets by name
    fake = fake_tfds.fake_recipe(config, compute_dtype="float32")
    if path.stem in OWN_MODEL:
        model = build_model(fake, rngs=nnx.Rngs(0), **fake_tfds.TINY_MODELS[config.model])
    else:
        model = fake_tfds.TinyNet(nnx.Rngs(0))
    # One recipe on all 8 devices (data parallel); the others on one (multi-device
    # equality is tested in test_reliability.py and test_multihost.py).
    devices = jax.devices() if path.stem == "domainnet_ftp_sgd" else jax.devices()[:1]
    mesh = jax.make_mesh((len(devices),), ("data",), devices=devices)
    workdir = tempfile.mkdtemp()
    try:
        summary = run_recipe(
            fake,
            data_dir=data_dir,
            workdir=workdir,
            weights=None,
            model=model,
            progress=False,
            mesh=mesh,
        )
        stored = json.loads(Path(workdir, "recipe_result.json").read_text())
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    assert summary == stored
    assert len(summary["ood"]) == 4 and 0.0 <= summary["ood_average"] <= 1.0
    assert summary["devices"] == len(devices)
