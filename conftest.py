"""Strict numerics for every test: no silent rank promotion, CPU, float32 unless asked.

The XLA:CPU flag the command line sets is set here too, before JAX starts, so that in-process
runs compute bitwise what the command computes. Compiled programs are cached on disk for the
session (a fresh folder each time, shared with the tests' subprocesses): many tests compile the
same training step, and a cache hit returns the same executable. (Strict dtype promotion is not
switched on: optax mixes Python floats with int32 step counts.)"""

import atexit
import os
import shutil
import tempfile

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("MPLBACKEND", "Agg")
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    _cache = tempfile.mkdtemp(prefix="mdnjax-test-xla-cache-")
    atexit.register(shutil.rmtree, _cache, ignore_errors=True)
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _cache
    os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"

from mdnjax import xla  # noqa: E402

xla.configure_cpu()

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_numpy_rank_promotion", "raise")


@pytest.fixture
def x64():
    """Runs a test with 64-bit floats enabled."""
    jax.config.update("jax_enable_x64", True)
    try:
        yield
    finally:
        jax.config.update("jax_enable_x64", False)
