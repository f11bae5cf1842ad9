"""Strict numerics for every test: no silent rank promotion, CPU, float32 unless asked.

(Strict dtype promotion is not switched on: optax mixes Python floats with int32 step counts.)"""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

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
