"""The light core: ``import ftp_jax`` and its transforms need only jax, optax and numpy."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# chex too: the core annotates with jax.Array (chex is the tests' dependency, not the core's).
HEAVY = (
    "tensorflow_datasets",
    "tensorflow",
    "grain",
    "orbax",
    "matplotlib",
    "sklearn",
    "flax",
    "chex",
)

SCRIPT = """
import json, sys
import jax, jax.numpy as jnp, optax
import ftp_jax

params = {"body": {"kernel": jnp.ones((3, 4))}, "head": {"kernel": jnp.ones((4, 2))}}
grads = jax.tree_util.tree_map(jnp.ones_like, params)
mask = ftp_jax.path_rules([(r"head/.*", False), (r".*", True)], name="mask")
tx = ftp_jax.ftp_adamw(1e-3, mask=mask)
updates, state = jax.jit(tx.update)(grads, tx.init(params), params)

def heldout_loss(params, batch):
    return jnp.mean((batch["x"] @ params["body"]["kernel"] @ params["head"]["kernel"]) ** 2)

tpgm = ftp_jax.tpgm(optax.sgd(0.1), heldout_loss, mask=mask)
heldout = {"x": jnp.ones((4, 3))}
_, tpgm_state = jax.jit(tpgm.update)(grads, tpgm.init(params), params, heldout_batch=heldout)
print(json.dumps({
    "modules": sorted({name.split(".")[0] for name in sys.modules}),
    "radius": float(ftp_jax.radii(state)["body"]["kernel"]),
    "tpgm_radius": float(ftp_jax.radii(tpgm_state)["body"]["kernel"]),
}))
"""


def test_import_and_transforms_need_only_the_core():
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert not set(HEAVY) & set(report["modules"]), set(HEAVY) & set(report["modules"])
    assert report["radius"] > 0 and report["tpgm_radius"] > 0


def test_a_missing_extra_is_named(monkeypatch):
    from ftp_jax import _extras

    monkeypatch.setattr(_extras, "_installed", lambda module: module != "grain")
    with pytest.raises(
        ImportError,
        match=r"ftp_jax.train needs the 'train' extra.*grain.*"
        r"pip install 'ftp_jax\[train\]'",
    ):
        _extras.require_extra("train", "ftp_jax.train")
    with pytest.raises(ImportError, match=r"'experiments' extra"):
        _extras.require_extra("experiments", "ftp_jax.experiment")
