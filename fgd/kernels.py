"""How fgd's training loops are compiled: small work made into few XLA kernels.

On a net as small as the seed's 3-8-2 an epoch is a dozen operations on a few
dozen numbers, and what costs is XLA's per-operation overhead, not arithmetic.
Two rewrites change only the compiled code, never the arithmetic's formulas:

- `fuse_small_dots`: each small matrix product of a step (at most `SMALL_DOT`
  multiply-adds) becomes a broadcast multiply and a sum, which XLA fuses with
  its neighbours instead of calling a BLAS kernel per product;
- `as_one_kernel`: a whole small training loop compiled by XLA:CPU as one
  function (its "small call"), with no dispatch between operations.

`CPU_OPTIONS` and `ONE_KERNEL_OPTIONS` are the XLA:CPU compiler options the
training chunks use where this jaxlib knows them (`cpu_options_supported`);
other backends compile with XLA's defaults. Nothing here changes what a
program computes beyond the order of float sums in the rewritten products.
"""
from __future__ import annotations

import functools
import math
from typing import Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental.xla_metadata import set_xla_metadata
from jax.extend import core as jex_core

from fgd.base import Array

#: Largest dot_general (output entries x contracted length) that
#: `fuse_small_dots` rewrites as multiply + sum; a 3-8-2 net's are <= 480.
SMALL_DOT = 8192


# --- small matrix products as fusible multiply + sum ---------------------------
def _dot_as_sum(lhs: Array, rhs: Array, dimension_numbers, dtype) -> Array:
    """dot_general as an explicit broadcast product summed over the contraction.

    The result keeps dot_general's axis order: (batch, lhs free, rhs free).
    """
    (lc, rc), (lb, rb) = dimension_numbers
    lf = [d for d in range(lhs.ndim) if d not in lc and d not in lb]
    rf = [d for d in range(rhs.ndim) if d not in rc and d not in rb]
    nb, nl, nr = len(lb), len(lf), len(rf)
    lhs = jnp.transpose(lhs, (*lb, *lf, *lc)).astype(dtype)   # (B, Lf, C)
    rhs = jnp.transpose(rhs, (*rb, *rf, *rc)).astype(dtype)   # (B, Rf, C)
    lhs = jnp.expand_dims(lhs, tuple(range(nb + nl, nb + nl + nr)))
    rhs = jnp.expand_dims(rhs, tuple(range(nb, nb + nl)))
    return jnp.sum(lhs * rhs, axis=tuple(range(nb + nl + nr, lhs.ndim)))


def _is_small_dot(eqn) -> bool:
    lhs, rhs = (v.aval for v in eqn.invars)
    out = eqn.outvars[0].aval
    (lc, _), _ = eqn.params["dimension_numbers"]
    contracted = math.prod(lhs.shape[d] for d in lc)
    floats = {np.dtype(np.float32), np.dtype(np.float64)}
    return (math.prod(out.shape) * contracted <= SMALL_DOT
            and {np.dtype(lhs.dtype), np.dtype(rhs.dtype), np.dtype(out.dtype)} <= floats)


def _eval_rewritten(jaxpr, consts, args) -> list:
    """Evaluate `jaxpr` like `jax.core.eval_jaxpr`, small dots rewritten,
    nested jit calls inlined (control flow is bound unchanged)."""
    env = {}

    def read(v):
        return v.val if isinstance(v, jex_core.Literal) else env[v]

    env.update(zip(jaxpr.constvars, consts))
    env.update(zip(jaxpr.invars, args))
    for eqn in jaxpr.eqns:
        invals = [read(v) for v in eqn.invars]
        inner = eqn.params.get("jaxpr")
        if eqn.primitive.name == "dot_general" and _is_small_dot(eqn):
            outs = [_dot_as_sum(*invals, eqn.params["dimension_numbers"], eqn.outvars[0].aval.dtype)]
        elif eqn.primitive.name in ("jit", "pjit", "closed_call") and isinstance(inner, jex_core.ClosedJaxpr):
            outs = _eval_rewritten(inner.jaxpr, inner.consts, invals)
        else:
            with eqn.ctx.manager:
                outs = eqn.primitive.bind(*invals, **eqn.primitive.get_bind_params(eqn.params))
            if not eqn.primitive.multiple_results:
                outs = [outs]
        env.update(zip(eqn.outvars, outs))
    return [read(v) for v in jaxpr.outvars]


def fuse_small_dots(fn: Callable) -> Callable:
    """`fn` with every small matrix product computed as multiply + sum.

    Traces `fn` to a jaxpr at the abstract values of its arguments and
    evaluates it, replacing each float32/float64 `dot_general` of at most
    `SMALL_DOT` multiply-adds. The result equals `fn`'s up to the order of the
    sums (a few ulps). Use it inside `jax.jit`: it costs one extra trace.
    """
    def fused(*args):
        closed, out_shape = jax.make_jaxpr(fn, return_shape=True)(*args)
        outs = _eval_rewritten(closed.jaxpr, closed.consts, jax.tree.leaves(args))
        return jax.tree.unflatten(jax.tree.structure(out_shape), outs)

    return fused


# --- a small loop as one XLA:CPU kernel ------------------------------------------------
#: Primitives XLA:CPU can compile into one kernel (its "small call": the whole
#: loop in one function, no thunk dispatch between operations). Anything else
#: (sort, scatter, gather, large products, convolutions, custom and library
#: calls, collectives) keeps the loop on XLA's usual per-operation runtime.
KERNEL_PRIMITIVES = frozenset("""
    abs acos acosh add and asin asinh atan atan2 atanh cbrt ceil clamp convert_element_type
    copy copy_p cos cosh div eq erf erf_inv erfc exp exp2 expm1 floor ge gt integer_pow
    is_finite le log log1p logistic lt max min mul ne neg nextafter not or pow
    reduce_precision rem round rsqrt select_n sign sin sinh sqrt square sub tan tanh xor
    shift_left shift_right_arithmetic shift_right_logical population_count
    reduce_sum reduce_max reduce_min reduce_prod reduce_and reduce_or argmax argmin
    broadcast_in_dim reshape squeeze expand_dims transpose rev slice dynamic_slice
    dynamic_update_slice concatenate pad iota split
    while scan cond jit pjit closed_call custom_jvp_call custom_vjp_call
""".split())
#: The most array elements the operations of one loop iteration may produce
#: for it to become one kernel (about a millisecond of single-threaded work):
#: above that, XLA's per-operation runtime costs little and can use threads.
KERNEL_ELEMENTS = 1 << 22


def _sub_jaxprs(params: dict):
    for value in params.values():
        for v in value if isinstance(value, (tuple, list)) else (value,):
            if isinstance(v, jex_core.ClosedJaxpr):
                yield v.jaxpr
            elif isinstance(v, jex_core.Jaxpr):
                yield v


def _kernel_elements(jaxpr) -> Optional[int]:
    """The elements the operations of `jaxpr` produce (a history write counts
    its update), or None if one of them cannot join a kernel."""
    total = 0
    for eqn in jaxpr.eqns:
        if eqn.primitive.name not in KERNEL_PRIMITIVES:
            return None
        if eqn.primitive.name == "dynamic_update_slice":
            total += math.prod(eqn.invars[1].aval.shape)
        else:
            total += sum(math.prod(getattr(v.aval, "shape", ())) for v in eqn.outvars)
        for inner in _sub_jaxprs(eqn.params):
            n = _kernel_elements(inner)
            if n is None:
                return None
            total += n
    return total


def as_one_kernel(fn: Callable, *args):
    """`fn(*args)`, compiled by XLA:CPU as a single kernel when it is small.

    On a 3-8-2 network an epoch is ~20 XLA operations of a few dozen numbers
    each, and XLA:CPU's runtime spends more on dispatching them (and, for a
    sweep, on handing them to its thread pool) than on the arithmetic. XLA:CPU
    compiles a loop whose buffers are under 1 kB as one function (its small
    call); the chunk's history rows keep ours above that, so the loop is
    marked as such a call here instead (the frontend attribute
    `xla_cpu_small_call`). 3-8-2 full batch: 1.04 -> 0.40 us per epoch;
    64-run sweep: 22.7 -> 8.4 us.

    `fn` is traced once (a jaxpr); the loop is marked only when its primitives
    are in `KERNEL_PRIMITIVES` and one iteration produces at most
    `KERNEL_ELEMENTS` elements; otherwise the jaxpr is evaluated unchanged.
    The arithmetic is the same either way; only the compiled code differs.
    """
    closed, out_shape = jax.make_jaxpr(fn, return_shape=True)(*args)
    run = jex_core.jaxpr_as_fun(closed)
    n = _kernel_elements(closed.jaxpr)
    if n is None or n > KERNEL_ELEMENTS:
        outs = run(*jax.tree.leaves(args))
    else:
        def one_kernel_loop(*leaves):    # the attributes are for the call alone
            with set_xla_metadata(xla_cpu_small_call="false", inlineable="true"):
                return run(*leaves)

        with set_xla_metadata(xla_cpu_small_call="true", inlineable="false"):
            outs = jax.jit(one_kernel_loop)(*jax.tree.leaves(args))
    return jax.tree.unflatten(jax.tree.structure(out_shape), outs)


#: XLA:CPU options for every chunk. LLVM vectorises XLA's own loops 256 bits
#: wide unless told otherwise; 512 makes the 64-run sweep's epoch 8.5 -> 5.4
#: us where the CPU has AVX-512 (without it the hint changes nothing), and
#: leaves the GEMM-bound medium case as it was. Region-based copy insertion
#: lets an update write a weight in place although the backward pass's
#: W^T dZ reads it out of data-flow order: without it XLA copies W2 and W3 on
#: every 784-512-512-10 step (0.13 ms of 2.5).
CPU_OPTIONS = {"xla_cpu_prefer_vector_width": 512, "xla_cpu_copy_insertion_use_region_analysis": True}
#: XLA:CPU options for a chunk compiled as one kernel: no YNNPACK fusions.
#: XLA:CPU forms them by default around small reductions and GEMMs, and a
#: one-kernel loop cannot hold them (compiling fails). A chunk of larger work keeps
#: them: its GEMMs run ~4% faster (784-512-512-10 Adam step, 2.53 -> 2.42 ms).
ONE_KERNEL_OPTIONS = {**CPU_OPTIONS, "xla_cpu_experimental_ynn_fusion_type": ""}


def is_one_kernel(jaxpr) -> bool:
    """Whether `as_one_kernel` marked a loop of `jaxpr` (or of a jaxpr inside
    it): whether it holds the jitted call `one_kernel_loop`."""
    for eqn in jaxpr.eqns:
        if eqn.primitive.name in ("jit", "pjit") and eqn.params.get("name") == "one_kernel_loop":
            return True
        if any(is_one_kernel(inner) for inner in _sub_jaxprs(eqn.params)):
            return True
    return False


@functools.lru_cache(maxsize=None)
def cpu_options_supported(backend: str) -> bool:
    """Whether this jaxlib's XLA:CPU knows `ONE_KERNEL_OPTIONS` (probed once)."""
    if backend != "cpu":
        return False
    try:
        jax.jit(lambda x: x + 1, compiler_options=ONE_KERNEL_OPTIONS).lower(np.float32(0)).compile()
    except Exception:                     # an unknown flag: keep XLA's defaults
        return False
    return True
