"""Test-wide settings: 8 simulated CPU devices and strict rank promotion."""

import os

# Must happen before JAX initializes its backends: the multi-device tests shard
# over 8 simulated CPU devices; every other test runs on device 0 as usual.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402

# Catches row-broadcast bugs: (rows, 1) against (rows,) raises instead of broadcasting.
jax.config.update("jax_numpy_rank_promotion", "raise")
