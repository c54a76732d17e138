"""Test-wide settings: float64 where a module compares in it, float32 elsewhere.

Library code never touches jax.config; the test session does. The modules in
`FLOAT64_MODULES` compare hand-derived and autodiff gradients (and other
reference values) to about 1e-10, so JAX's x64 mode is on while they are
imported and while their tests run. Every other module runs with x64 off,
as users run fgd: JAX's default float32.

Hypothesis draws the same examples on every run (profile "repeatable"), so a
suite that passed passes again on a fresh clone; `HYPOTHESIS_PROFILE=explore
pytest` draws new random examples on each run to look for new failures
(each one found becomes a test of its own, as the float16 clipping case in
test_transforms.py did).

Compiling is most of the suite's time on a CPU, and many programs recur in
other processes: pytest-xdist's workers (`-n auto` in pyproject's addopts)
and the child processes tests start. So the session keeps JAX's persistent
compilation cache in one new, empty folder of its own (`COMPILE_CACHE_ENV`
names it for the workers and children, through the environment JAX reads),
removed at the end: each program is compiled once per session, never taken
from an earlier run. `FGD_TEST_COMPILE_CACHE=0 pytest` compiles everything in
every process instead (a child that must compile afresh drops
`JAX_COMPILATION_CACHE_DIR` from its environment).
`FGD_TEST_COMPILE_CACHE=FOLDER pytest` keeps the cache in FOLDER (made if
missing) and leaves it there, so the next run of the edit-test loop takes
every unchanged program from it; CI never sets it, so CI compiles from
nothing.

The session also compiles with most of XLA's optimizations off (JAX's own
`jax_disable_most_optimizations` setting: XLA's backend at optimization
level 0, no expensive LLVM passes) and two XLA:CPU flags (below): on the
2-core CPU machine, where compiling the suite's many small programs costs
far more than running them, the fast subset takes 1 min 21 s this way and
2 min 25 s compiled as users compile. Neither level uses fast-math, so every
reference value holds at both; what can change is the last bit where two
different programs round differently, so the tests that promise bit-identity
between two programs (`users_codegen`) compile at the users' level.
Two XLA:CPU flags (`FAST_COMPILE_XLA_FLAGS`: the older fusion emitters, one
LLVM module per program) took the fast subset's XLA compile time from 150 s
to 56 s of CPU on that machine; like the optimization level they change
no reference value, only which instructions XLA emits. They go into
`XLA_FLAGS` before JAX starts its backend, so they hold for the whole
process: the `users_codegen` tests get the users' optimization level but
keep these emitters.
`FGD_TEST_OPTIMIZE=1 pytest` compiles everything as users do, with XLA's
full optimization and its default flags (CI runs the suite on the JAX floor
that way). The settings travel to the workers and the children tests start
through `JAX_DISABLE_MOST_OPTIMIZATIONS` and `XLA_FLAGS`, so a child's
numbers compare bit for bit with its parent's.
"""
import os
import shutil
import tempfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import settings

#: test modules (file stems) that run with x64 on
FLOAT64_MODULES = frozenset({
    "test_activations", "test_backprop", "test_checkpoint", "test_conv", "test_data", "test_gradcheck", "test_gradcheck_any",
    "test_losses", "test_models", "test_optimizers", "test_schedules", "test_sweep", "test_train",
    "test_reliability", "test_robustness", "test_transforms", "test_tree",
    "test_metrics", "test_resume_load", "test_callbacks", "test_workflow", "test_curvature",
    "test_diagnostics", "test_compile_once", "test_cli_fast",
})


#: the environment variables through which every process of the session
#: (controller, xdist workers, the children tests start) shares one cache
COMPILE_CACHE_ENV = {"JAX_COMPILATION_CACHE_DIR": None,           # the folder, set below
                     "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",   # tiny programs too
                     "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"}


#: the environment variable through which every process of the session
#: compiles with the same optimization setting
OPTIMIZE_ENV = "JAX_DISABLE_MOST_OPTIMIZATIONS"


def _off(value: str) -> bool:
    return value.strip().lower() in ("0", "false", "off", "no")


#: XLA:CPU flags of the fast-compiling session: the older, simpler IR emitters
#: for fusions (the newer MLIR fusion emitters took about twice the compile
#: time on the suite's small programs) and one LLVM module per program instead of
#: pieces compiled on a thread pool (the workers already hold every core).
#: Both are known to every jaxlib from pyproject's floor on.
FAST_COMPILE_XLA_FLAGS = ("--xla_cpu_use_fusion_emitters=false",
                          "--xla_cpu_parallel_codegen_split_count=1")


def _set_optimization(config) -> None:
    if "jax_disable_most_optimizations" not in jax.config.values:    # a jax without it: full
        return
    if not hasattr(config, "workerinput"):    # the controller decides; workers, children inherit
        full = not _off(os.environ.get("FGD_TEST_OPTIMIZE", "0"))
        os.environ[OPTIMIZE_ENV] = "0" if full else "1"
        if not full:      # read when JAX starts its CPU backend, which nothing has done yet
            flags = os.environ.get("XLA_FLAGS", "").split()
            named = {flag.split("=")[0] for flag in flags}
            flags += [flag for flag in FAST_COMPILE_XLA_FLAGS if flag.split("=")[0] not in named]
            os.environ["XLA_FLAGS"] = " ".join(flags)
    jax.config.update("jax_disable_most_optimizations", not _off(os.environ.get(OPTIMIZE_ENV, "0")))


def pytest_configure(config):
    _set_optimization(config)
    setting = os.environ.get("FGD_TEST_COMPILE_CACHE", "1").strip()
    if _off(setting):
        return
    if not hasattr(config, "workerinput"):    # the controller (or a run without xdist)
        if setting.lower() in ("1", "true", "on", "yes", ""):
            folder = config.fgd_compile_cache = tempfile.mkdtemp(prefix="fgd-test-jax-cache-")
        else:                                 # a folder of the caller's: kept between runs
            folder = os.path.abspath(os.path.expanduser(setting))
            os.makedirs(folder, exist_ok=True)
        os.environ.update({name: value or folder for name, value in COMPILE_CACHE_ENV.items()})
    folder = os.environ.get("JAX_COMPILATION_CACHE_DIR")
    if not folder:
        return
    # jax was imported above, before these were set: tell this process too
    for name, value in (("jax_compilation_cache_dir", folder),
                        ("jax_persistent_cache_min_compile_time_secs", 0.0),
                        ("jax_persistent_cache_min_entry_size_bytes", 0)):
        try:
            jax.config.update(name, value)
        except (AttributeError, KeyError, ValueError):     # a jax without the setting: its default
            pass


@pytest.fixture
def users_codegen():
    """Compile at XLA's full optimization level, as users do, for the test's duration.

    For tests whose claim is bit-identity between two different programs: the
    last bit of a sum can differ between programs at one optimization level
    and agree at another. (The session's `FAST_COMPILE_XLA_FLAGS` hold for
    the whole process and stay; `FGD_TEST_OPTIMIZE=1` drops them too.)
    fgd's and JAX's in-memory caches are cleared on the way in and out
    (`fgd.clear_caches`), so the test compiles its programs afresh at the
    users' level and the tests after it do not reuse them (the
    session's persistent cache, keyed by the compile options, hands every
    other program back without compiling it again).
    """
    import fgd

    if not jax.config.values.get("jax_disable_most_optimizations", False):
        yield
        return
    fgd.clear_caches()
    jax.config.update("jax_disable_most_optimizations", False)
    try:
        yield
    finally:
        jax.config.update("jax_disable_most_optimizations", True)
        fgd.clear_caches()


def pytest_unconfigure(config):
    folder = getattr(config, "fgd_compile_cache", None)     # made by this process
    if folder:
        shutil.rmtree(folder, ignore_errors=True)


def _set_x64(path) -> None:
    jax.config.update("jax_enable_x64", Path(path).stem in FLOAT64_MODULES)


def pytest_collectstart(collector):
    if isinstance(collector, pytest.Module):        # before the module is imported
        _set_x64(collector.path)


def pytest_runtest_setup(item):
    _set_x64(item.path)


settings.register_profile("repeatable", derandomize=True)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "repeatable"))


@pytest.fixture(scope="module")
def traffic():
    """The MATLAB BP example's traffic data, premnmx-scaled to [-1, 1], float64 numpy."""
    import fgd

    with fgd.enable_x64(True):
        d = fgd.data.traffic(jnp.float64)
        X, _ = fgd.data.premnmx(d.X)
        Y, _ = fgd.data.premnmx(d.Y)
        return np.asarray(X), np.asarray(Y)
