"""Test-wide settings: float64 is available so gradient comparisons run in it.

Library code never touches jax.config; the test session does, once. Tests of
float32 paths build float32 arrays explicitly.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

jax.config.update("jax_enable_x64", True)


@pytest.fixture(scope="module")
def traffic():
    """The seed's traffic data (SEEDS.md section 8), premnmx-scaled to [-1, 1], float64."""
    import fgd

    d = fgd.data.traffic(jnp.float64)
    X, _ = fgd.data.premnmx(d.X)
    Y, _ = fgd.data.premnmx(d.Y)
    return np.asarray(X), np.asarray(Y)
