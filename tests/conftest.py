"""Test-wide settings: 8 simulated CPU devices and strict rank promotion."""

import os

# Must happen before JAX initializes its backends: the multi-device tests shard
# over 8 simulated CPU devices; every other test runs on device 0 as usual.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

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
