"""Test-wide settings: 8 simulated CPU devices, strict rank promotion, one XLA cache.

The suite compiles the same programs many times: every ``fit`` of the tiny
model jits fresh closures of the same steps, and the command-line, README and
multi-host tests compile them again in their subprocesses. XLA's persistent
compilation cache, in one fresh directory per test session (set through the
environment, so that subprocesses share it), compiles each program once per
session; a later compile of the same program loads it from disk. The cache is
keyed by the program, the devices and the flags, so it never changes a number.
"""

import atexit
import os
import shutil
import subprocess
import sys
import tempfile

DEVICES_FLAG = "--xla_force_host_platform_device_count=8"
# XLA's CPU fusion emitters (the default codegen since jaxlib 0.5) take ~40% longer
# to compile the suite's many small programs than the classic elemental emitter; the
# suite is mostly compiling, so the tests use the classic one where the installed
# jaxlib still has the flag (an unknown flag would abort XLA). Both compute the same
# operations; the suite passes under either (run it on the default codegen with
# ``XLA_FLAGS=--xla_force_host_platform_device_count=8 pytest tests``).
CODEGEN_FLAG = "--xla_cpu_use_fusion_emitters=false"


def _supported(flag: str) -> bool:
    """Whether this jaxlib's XLA accepts ``flag`` (in a throwaway process)."""
    env = dict(os.environ, XLA_FLAGS=flag, JAX_PLATFORMS="cpu")
    probe = [sys.executable, "-c", "import jax; jax.devices()"]
    return subprocess.run(probe, env=env, capture_output=True, timeout=120).returncode == 0


# Must happen before JAX initializes its backends: the multi-device tests shard
# over 8 simulated CPU devices; every other test runs on device 0 as usual. Set once,
# by the first process (pytest-xdist's workers inherit it, and subprocesses).
if "XLA_FLAGS" not in os.environ:
    flags = [DEVICES_FLAG] + ([CODEGEN_FLAG] if _supported(CODEGEN_FLAG) else [])
    os.environ["XLA_FLAGS"] = " ".join(flags)
os.environ.setdefault("JAX_PLATFORMS", "cpu")
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    _cache = tempfile.mkdtemp(prefix="ftp_jax_tests_xla_cache_")
    atexit.register(shutil.rmtree, _cache, ignore_errors=True)
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _cache
    os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"

import jax  # noqa: E402

# Catches row-broadcast bugs: (rows, 1) against (rows,) raises instead of broadcasting.
jax.config.update("jax_numpy_rank_promotion", "raise")


import socket  # noqa: E402

import pytest  # noqa: E402


@pytest.fixture(scope="module")
def no_network():
    """Fails any test of the module that opens a network connection."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"a test tried to open a network connection: {args}")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(socket.socket, "connect", refuse)
        patch.setattr(socket.socket, "connect_ex", refuse)
        patch.setattr(socket, "create_connection", refuse)
        yield
