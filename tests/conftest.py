"""Test-wide settings: float64 is available so gradient comparisons run in it.

Library code never touches jax.config; the test session does, once. Tests of
float32 paths build float32 arrays explicitly.

Hypothesis draws the same examples on every run (profile "repeatable"), so a
suite that passed passes again on a fresh clone; `HYPOTHESIS_PROFILE=explore
pytest` draws new random examples on each run to look for new failures
(each one found becomes a test of its own, as the float16 clipping case in
test_transforms.py did).
"""
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import settings

jax.config.update("jax_enable_x64", True)

settings.register_profile("repeatable", derandomize=True)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "repeatable"))


@pytest.fixture(scope="module")
def traffic():
    """The seed's traffic data (SEEDS.md section 8), premnmx-scaled to [-1, 1], float64."""
    import fgd

    d = fgd.data.traffic(jnp.float64)
    X, _ = fgd.data.premnmx(d.X)
    Y, _ = fgd.data.premnmx(d.Y)
    return np.asarray(X), np.asarray(Y)
