"""The few JAX names whose place differs across the JAX versions fgd supports.

fgd runs on every JAX from the floor in pyproject to the newest release (CI
tests both ends). Where a public name moved between them, it is looked up
here once, so the rest of the package uses one spelling.
"""
from __future__ import annotations

from typing import Callable, ContextManager

import jax
import jax.experimental

#: `with enable_x64(True):` float64 in this thread (jax.enable_x64 in newer
#: JAX, jax.experimental.enable_x64 before it).
enable_x64: Callable[[bool], ContextManager] = (
    jax.enable_x64 if hasattr(jax, "enable_x64")   # newer JAX
    else jax.experimental.enable_x64)  # type: ignore[attr-defined]


def thread_setting_managers() -> dict:
    """{jax config name: the context manager that sets it for one thread}, for
    the settings this JAX has."""
    managers = {
        "jax_enable_x64": enable_x64,
        "jax_default_matmul_precision": getattr(jax, "default_matmul_precision", None),
        "jax_numpy_dtype_promotion": getattr(jax, "numpy_dtype_promotion", None),
        "jax_numpy_rank_promotion": getattr(jax, "numpy_rank_promotion", None),
        "jax_debug_nans": getattr(jax, "debug_nans", None),
        "jax_debug_infs": getattr(jax, "debug_infs", None),
        "jax_default_device": getattr(jax, "default_device", None),
        "jax_log_compiles": getattr(jax, "log_compiles", None),
    }
    return {name: m for name, m in managers.items() if m is not None}
