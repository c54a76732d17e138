"""Private: every trick in fgd that leans on JAX or XLA internals, behind one entry point.

On a net as small as the MATLAB BP example's 3-8-2 an epoch is a dozen
operations on a few dozen numbers, and what costs is XLA's per-operation
overhead, not arithmetic. The tricks below change only the compiled code,
never the formulas:

- small dots as sums: each small float32/float64 matrix product of a step (at
  most `SMALL_DOT` multiply-adds, default precision) becomes a broadcast
  multiply and a sum, which XLA fuses with its neighbours instead of calling
  a BLAS kernel per product;
- transposed copies: a large product W^T dZ of the backward pass computed
  from a contiguous copy of W^T, which XLA:CPU's GEMMs read faster than a
  transposed operand (`_transposed_copy`);
- one-kernel loops: a whole small training loop (or a mini-batch epoch's loop
  over its batches) compiled by XLA:CPU as one
  function (its "small call"), with no dispatch between operations;
- batch-last: a sweep's runs kept on the LAST axis of every array (vmap would
  put them first), so XLA:CPU vectorises over contiguous rows of runs;
- XLA:CPU compiler options (`CPU_OPTIONS`, `REGION_OPTIONS`, `ONE_KERNEL_OPTIONS`);
- the mini-batch order `jax.random.permutation(key, m)` computed with
  single-array sorts instead of XLA:CPU's slow key-value sort, to the same
  numbers (`_permutation`);
- long chunks: training chunks of programs with large temporaries run
  longer than the usual second, since each XLA:CPU call page-faults its
  temporaries in afresh (`Tricks.chunk_seconds`).

They were measured to help on XLA:CPU only, so they apply only there. The one
entry point is `tricks(platform)`: it returns the `Tricks` to use, all off on
other backends, when an internal API they need is missing from this JAX
(`AVAILABLE`), or when the environment variable `FGD_COMPILE_TRICKS=0` is
set. With every trick off, each `Tricks` method is plain public JAX:
`rewrite_dots(fn)` is `fn`, `batched(fn, runs)` is
`jax.vmap(fn, -1, -1)`, `loop(fn, state)` is `fn(state)`, `permutation`
is `jax.random.permutation`, `compiler_options` is None, and
`chunk_seconds(seconds, n)` is `seconds`.
"""
from __future__ import annotations

import contextlib
import math
import os
from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from fgd import _cache
from fgd._types import Array

try:  # internal APIs: without them every trick is off and plain JAX runs
    from jax.experimental.xla_metadata import set_xla_metadata
    from jax.extend import core as jex_core

    AVAILABLE = all(hasattr(jex_core, name) for name in ("Literal", "ClosedJaxpr", "Jaxpr",
                                                         "jaxpr_as_fun"))
except ImportError:  # pragma: no cover - depends on the installed jax
    AVAILABLE = False

#: The environment variable that switches every trick off when set to "0".
ENV_SWITCH = "FGD_COMPILE_TRICKS"


def _bind(primitive, params: dict, args) -> Any:
    """`primitive` applied to `args` with an equation's params (older JAX's
    `get_bind_params` returns (subfuns, params), newer JAX's the params)."""
    got = primitive.get_bind_params(params)
    if isinstance(got, tuple):
        subfuns, kwargs = got
        return primitive.bind(*subfuns, *args, **kwargs)
    return primitive.bind(*args, **got)


def _context(eqn):
    """The equation's tracing context (source info, name stack), where JAX keeps one."""
    ctx = getattr(eqn, "ctx", None)
    manager = getattr(ctx, "manager", None)
    return manager if manager is not None else contextlib.nullcontext()

#: Largest dot_general (output entries x contracted length) that
#: `_rewrite_dots` rewrites as multiply + sum; a 3-8-2 net's are <= 480.
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
    dtypes = {np.dtype(lhs.dtype), np.dtype(rhs.dtype), np.dtype(out.dtype)}
    precision = eqn.params.get("precision")
    preferred = eqn.params.get("preferred_element_type")
    return (math.prod(out.shape) * contracted <= SMALL_DOT
            and len(dtypes) == 1 and dtypes <= {np.dtype(np.float32), np.dtype(np.float64)}
            and (precision is None or all(p is None or str(p).endswith("DEFAULT") for p in
                                          (precision if isinstance(precision, tuple) else (precision,))))
            and (preferred is None or np.dtype(preferred) == np.dtype(out.dtype)))


#: A product L^T R (both operands contracted over their first axis, as the
#: backward pass's W^T dZ) is computed from a contiguous transposed copy of
#: one operand when that operand has at least `TRANSPOSED_MIN` rows and
#: columns and at most `TRANSPOSED_MAX` entries (`_transposed_copy`).
TRANSPOSED_MIN = 256
TRANSPOSED_MAX = 1 << 20


def _transposed_copy(eqn, flipped: bool) -> Optional[int]:
    """Which operand (0: lhs, 1: rhs) of `eqn` to copy transposed, or None.

    XLA:CPU's GEMMs read a transposed lhs slowly at many shapes: the
    784-512-512-10 step's W2^T dZ takes 0.53 ms as dot(W2, dZ) contracted
    over W2's rows, 0.36 ms as a transposed copy of W2 times dZ, the copy
    included. The backward pass writes it as dot(dZ, W) followed by a
    transpose (`flipped`: the product's only use is a 2-D transpose), so there
    the rhs W is copied and the two transposes cancel; otherwise the lhs.
    Measured (2-core AVX-512 CPU, float32, copy included): a 512 x 512 W
    times dZ of 20 / 64 / 256 / 4,000 / 40,000 columns, 2.1x / 2.3-2.6x /
    1.5x / 1.1x / 1.55x faster; 256 x 256 up to 2.7x, 1024 x 1024 up to 3x;
    an examples-first 256 x 512 operand 1.1x, 2048 x 512 1.02x, and 4,000 x
    512 0.81x (hence `TRANSPOSED_MAX`); 784 x 784 0.95-1.05x; a 64-row
    operand 0.8x (hence `TRANSPOSED_MIN`)."""
    lhs, rhs = (v.aval for v in eqn.invars)
    (lc, rc), (lb, rb) = eqn.params["dimension_numbers"]
    if (lhs.ndim, rhs.ndim, tuple(lc), tuple(rc), tuple(lb), tuple(rb)) != (2, 2, (0,), (0,), (), ()):
        return None
    copied = rhs if flipped else lhs
    floats = all(jnp.issubdtype(a.dtype, jnp.floating) for a in (lhs, rhs))
    fits = min(copied.shape) >= TRANSPOSED_MIN and math.prod(copied.shape) <= TRANSPOSED_MAX
    return (1 if flipped else 0) if floats and fits else None


def _dot_from_copy(lhs: Array, rhs: Array, side: int, params: dict) -> Array:
    """L^T R (dot_general contracting axis 0 of both) with operand `side`
    first copied transposed: the copy behind `lax.optimization_barrier`, so
    that XLA cannot fold the transpose back into the product."""
    kw = {"precision": params.get("precision"),
          "preferred_element_type": params.get("preferred_element_type")}
    nn = (((1,), (0,)), ((), ()))
    if side == 0:
        return jax.lax.dot_general(jax.lax.optimization_barrier(lhs.T), rhs, nn, **kw)
    return jax.lax.dot_general(jax.lax.optimization_barrier(rhs.T), lhs, nn, **kw).T


def _flipped(jaxpr) -> set:
    """The variables of `jaxpr` whose only use is one 2-D transpose."""
    uses: dict = {}
    for eqn in jaxpr.eqns:
        for v in eqn.invars:
            if not isinstance(v, jex_core.Literal):
                uses.setdefault(v, []).append(eqn)
    for v in jaxpr.outvars:
        if not isinstance(v, jex_core.Literal):
            uses.setdefault(v, []).append(None)
    return {v for v, eqns in uses.items()
            if len(eqns) == 1 and eqns[0] is not None and eqns[0].primitive.name == "transpose"
            and tuple(eqns[0].params["permutation"]) == (1, 0)}


def _eval_rewritten(jaxpr, consts, args, small: bool = True, transposed: bool = False) -> list:
    """Evaluate `jaxpr` like `jax.core.eval_jaxpr`, nested jit calls inlined
    (control flow is bound unchanged), with small dots as sums (`small`) and
    large transposed-lhs products from a transposed copy (`transposed`)."""
    env: dict = {}
    flipped = _flipped(jaxpr) if transposed else set()

    def read(v):
        return v.val if isinstance(v, jex_core.Literal) else env[v]

    env.update(zip(jaxpr.constvars, consts))
    env.update(zip(jaxpr.invars, args))
    for eqn in jaxpr.eqns:
        invals = [read(v) for v in eqn.invars]
        inner = eqn.params.get("jaxpr")
        dot = eqn.primitive.name == "dot_general"
        side = _transposed_copy(eqn, eqn.outvars[0] in flipped) if dot and transposed else None
        if dot and small and _is_small_dot(eqn):
            lhs, rhs = invals
            outs = [_dot_as_sum(lhs, rhs, eqn.params["dimension_numbers"], eqn.outvars[0].aval.dtype)]
        elif side is not None:
            lhs, rhs = invals
            with _context(eqn):
                outs = [_dot_from_copy(lhs, rhs, side, eqn.params)]
        elif eqn.primitive.name in ("jit", "pjit", "closed_call") and isinstance(inner, jex_core.ClosedJaxpr):
            outs = _eval_rewritten(inner.jaxpr, inner.consts, invals, small, transposed)
        else:
            with _context(eqn):
                outs = _bind(eqn.primitive, eqn.params, invals)
            if not eqn.primitive.multiple_results:
                outs = [outs]
        env.update(zip(eqn.outvars, outs))
    return [read(v) for v in jaxpr.outvars]


def _rewrite_dots(fn: Callable, small: bool = True, transposed: bool = False) -> Callable:
    """`fn` with its matrix products rewritten, to the same numbers up to the
    order of the sums (a few ulps): with `small`, each float32/float64
    `dot_general` of at most `SMALL_DOT` multiply-adds as multiply + sum
    (which XLA fuses with its neighbours); with `transposed`, each large
    transposed-lhs product from a contiguous copy (`_transposed_copy`).
    Traces `fn` to a jaxpr at the abstract values of its arguments and
    evaluates it rewritten. Use it inside `jax.jit`: it costs one extra trace.
    """
    def rewritten(*args):
        closed, out_shape = jax.make_jaxpr(fn, return_shape=True)(*args)
        outs = _eval_rewritten(closed.jaxpr, closed.consts, jax.tree.leaves(args), small, transposed)
        return jax.tree.unflatten(jax.tree.structure(out_shape), outs)

    return rewritten


def _fuse_small_dots(fn: Callable) -> Callable:
    """`fn` with every small matrix product computed as multiply + sum (`_rewrite_dots`)."""
    return _rewrite_dots(fn, small=True)


# --- a small loop as one XLA:CPU kernel ------------------------------------------------
#: Primitives XLA:CPU can compile into one kernel (its "small call": the whole
#: loop in one function, no thunk dispatch between operations). Anything else
#: (sort, scatter, gather, large products, convolutions, custom and library
#: calls, collectives) keeps the loop on XLA's usual per-operation runtime.
KERNEL_PRIMITIVES = frozenset("""
    abs acos acosh add add_any and asin asinh atan atan2 atanh cbrt ceil clamp convert_element_type
    copy copy_p cos cosh div eq erf erf_inv erfc exp exp2 expm1 floor ge gt integer_pow
    is_finite le log log1p logistic lt max min mul ne neg nextafter not or pow
    reduce_precision rem round rsqrt select_n sign sin sinh sqrt square sub tan tanh xor
    shift_left shift_right_arithmetic shift_right_logical population_count
    reduce_sum reduce_max reduce_min reduce_prod reduce_and reduce_or argmax argmin
    broadcast_in_dim reshape squeeze expand_dims transpose rev slice dynamic_slice
    dynamic_update_slice concatenate pad iota split
    while scan cond jit pjit closed_call custom_jvp_call custom_vjp_call stop_gradient
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


def _as_one_kernel(fn: Callable, *args):
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
#: leaves the GEMM-bound medium case as it was.
CPU_OPTIONS = {"xla_cpu_prefer_vector_width": 512}
#: Added for a chunk whose largest weight has at least `REGION_MIN` entries:
#: region-based copy insertion lets an update write a weight in place
#: although the backward pass's W^T dZ reads it out of data-flow order;
#: without it XLA copies W2 and W3 on every 784-512-512-10 step (0.13 ms of
#: 2.5). On small nets it costs instead (16-8-8-8-4 tanh net, 400 examples,
#: full batch: 25 -> 38 us per epoch).
REGION_OPTIONS = {"xla_cpu_copy_insertion_use_region_analysis": True}
REGION_MIN = 1 << 16
#: XLA:CPU options for a chunk compiled as one kernel: no YNNPACK fusions.
#: XLA:CPU forms them by default around small reductions and GEMMs, and a
#: one-kernel loop cannot hold them (compiling fails). A chunk of larger work keeps
#: them: its GEMMs run ~4% faster (784-512-512-10 Adam step, 2.53 -> 2.42 ms).
ONE_KERNEL_OPTIONS = {**CPU_OPTIONS, "xla_cpu_experimental_ynn_fusion_type": ""}


#: XLA:CPU allocates a program's temporaries on every call, and the C library
#: maps large blocks (above its 32 MiB mmap threshold) afresh each time, so a
#: call first pays a page fault per 4 KiB page of them: 0.31-0.33 ms per MiB
#: measured here (2-core KVM guest, 4 KiB pages). A 40,000-example
#: full-batch epoch of a 16-512-4 tanh net (157 MiB of temporaries) took 100
#: ms as a call of its own and 47.6 ms inside a call of 30 epochs;
#: 16-512-512-512-4 (314 MiB) 873 ms and 776 ms; programs with 16-20 MiB of
#: temporaries paid 0.4-0.9 ms a call. `Tricks.chunk_seconds` lengthens the
#: chunks of programs of at least `FAULT_MIN_BYTES` until a call's faults are at
#: most `CALL_SHARE` of it, up to `MAX_CHUNK_SECONDS`.
FAULT_SECONDS_PER_BYTE = 0.33e-3 / 2**20
FAULT_MIN_BYTES = 1 << 26
CALL_SHARE = 0.02
MAX_CHUNK_SECONDS = 8.0


def is_one_kernel(jaxpr) -> bool:
    """Whether `as_one_kernel` marked a loop of `jaxpr` (or of a jaxpr inside
    it): whether it holds the jitted call `one_kernel_loop`."""
    for eqn in jaxpr.eqns:
        if eqn.primitive.name in ("jit", "pjit") and eqn.params.get("name") == "one_kernel_loop":
            return True
        if any(is_one_kernel(inner) for inner in _sub_jaxprs(eqn.params)):
            return True
    return False


_PROBED = _cache.LRU("cpu_options_supported", 1)


def _cpu_options_supported() -> bool:
    """Whether this jax's XLA:CPU takes every option above (probed once)."""
    def probe() -> bool:
        every = {**ONE_KERNEL_OPTIONS, **REGION_OPTIONS}
        try:
            jax.jit(lambda x: x + 1, compiler_options=every).lower(np.float32(0)).compile()
        except Exception:                 # an unknown flag or no compiler_options: XLA's defaults
            return False
        return True

    return _PROBED.get("cpu", probe)


# --- runs along the last axis -------------------------------------------------------
# jax.vmap puts the batch axis first, and XLA lays arrays out in that order:
# a sweep of tiny nets then reduces over short innermost rows (3, 8, 20 long)
# for each of the R runs. With the runs on the LAST axis every elementwise op
# and every reduction of the step runs over contiguous R-wide rows, which
# XLA:CPU vectorises: 3.3x faster on 64 runs of the 3-8-2 net. `batch_last`
# evaluates a function's jaxpr with that layout; the few primitives it has no
# rule for go through jax.vmap one by one, so any function still works.
ELEMENTWISE = frozenset("""
    abs acos acosh add add_any and asin asinh atan atan2 atanh cbrt ceil clamp convert_element_type
    copy copy_p cos cosh digamma div eq erf erf_inv erfc exp exp2 expm1 floor ge gt imag
    integer_pow is_finite le lgamma log log1p logistic lt max min mul ne neg nextafter not or
    pow real reduce_precision rem round rsqrt select_n shift_left shift_right_arithmetic
    shift_right_logical sign sin sinh sqrt square stop_gradient sub tan tanh xor
""".split())
SAME_AXES = frozenset("reduce_sum reduce_max reduce_min reduce_prod reduce_and reduce_or "
                      "argmax argmin cumsum cumprod cummax cummin".split())
CALLS = frozenset(["jit", "pjit", "closed_call", "core_call", "custom_jvp_call", "custom_vjp_call"])


def _widen(x: Any, batched: bool, shape: tuple, runs: int) -> Any:
    """`x` (unbatched, or batched with its own shape + (R,)) broadcast to shape + (R,)."""
    x_shape = np.shape(x)[:-1] if batched else np.shape(x)
    if batched and x_shape == shape:
        return x
    dims = tuple(range(len(shape) - len(x_shape), len(shape))) + ((len(shape),) if batched else ())
    return jax.lax.broadcast_in_dim(x, shape + (runs,), dims)


def _batched_rule(eqn, vals: list, flags: list, runs: int) -> Optional[list]:
    """The primitive applied with the runs on the last axis, or None (no rule)."""
    name, params = eqn.primitive.name, eqn.params
    bind = lambda *xs, **kw: _bind(eqn.primitive, {**params, **kw}, xs)
    if name in ELEMENTWISE:
        shape = tuple(eqn.outvars[0].aval.shape)
        return [bind(*(_widen(x, b, shape, runs) for x, b in zip(vals, flags)))]
    if not flags[0] or any(flags[1:]):
        return None                                   # rules below: batched operand 0 only
    x, rank = vals[0], np.ndim(vals[0]) - 1
    if name in SAME_AXES:
        out = bind(*vals)
        return list(out) if eqn.primitive.multiple_results else [out]
    if name == "broadcast_in_dim":
        return [bind(x, shape=tuple(params["shape"]) + (runs,),
                     broadcast_dimensions=tuple(params["broadcast_dimensions"]) + (len(params["shape"]),))]
    if name == "reshape" and params.get("dimensions") is None:
        return [bind(x, new_sizes=tuple(params["new_sizes"]) + (runs,))]
    if name == "transpose":
        return [bind(x, permutation=tuple(params["permutation"]) + (rank,))]
    if name == "squeeze":
        return [bind(x)]
    return None


def _eval_batch_last(jaxpr, consts: list, vals: list, flags: list, runs: int) -> tuple[list, list]:
    env: dict = {}

    def read(v):
        return (v.val, False) if isinstance(v, jex_core.Literal) else env[v]

    env.update((v, (c, False)) for v, c in zip(jaxpr.constvars, consts))
    env.update((v, (x, b)) for v, x, b in zip(jaxpr.invars, vals, flags))
    for eqn in jaxpr.eqns:
        ins = [read(v) for v in eqn.invars]
        xs, bs = [x for x, _ in ins], [b for _, b in ins]
        inner = eqn.params.get("jaxpr", eqn.params.get("call_jaxpr"))
        if not any(bs):
            with _context(eqn):
                out = _bind(eqn.primitive, eqn.params, xs)
            outs = list(out) if eqn.primitive.multiple_results else [out]
            out_flags = [False] * len(outs)
        elif eqn.primitive.name in CALLS and isinstance(inner, jex_core.ClosedJaxpr):
            outs, out_flags = _eval_batch_last(inner.jaxpr, inner.consts, xs, bs, runs)
        else:
            rule = _batched_rule(eqn, xs, bs, runs)
            outs = [] if rule is None else rule
            if rule is None:                          # no rule: vmap this primitive alone
                prim, params = eqn.primitive, eqn.params
                single = lambda *a: _bind(prim, params, a)
                outs = jax.vmap(single, in_axes=[-1 if b else None for b in bs], out_axes=-1)(*xs)
                outs = list(outs) if prim.multiple_results else [outs]
            out_flags = [True] * len(outs)
        env.update((v, (x, b)) for v, x, b in zip(eqn.outvars, outs, out_flags))
    result = [read(v) for v in jaxpr.outvars]
    return [x for x, _ in result], [b for _, b in result]


def _weak(x: Any) -> bool:
    """Whether `x` (an array or tracer) is weakly typed."""
    try:
        return bool(jax.typeof(x).weak_type)
    except (AttributeError, TypeError):           # an older jax without jax.typeof
        return bool(getattr(x, "weak_type", False))


def _batch_last(fn: Callable, runs: int) -> Callable:
    """`fn` applied to `runs` runs at once, every leaf of the arguments and
    results carrying the runs on its LAST axis (what `jax.vmap(fn, -1, -1)`
    computes, with that layout kept throughout)."""
    def batched(*args):
        leaves, treedef = jax.tree.flatten(args)
        # weak types kept: a sweep's stacked Python-float hyperparameters must
        # meet the arrays as the Python constants of a single fit would
        avals = [jax.ShapeDtypeStruct(np.shape(x)[:-1], x.dtype, weak_type=_weak(x))
                 for x in leaves]
        closed, out_shape = jax.make_jaxpr(fn, return_shape=True)(*jax.tree.unflatten(treedef, avals))
        outs, flags = _eval_batch_last(closed.jaxpr, closed.consts, leaves, [True] * len(leaves), runs)
        outs = [x if b else _widen(x, False, tuple(np.shape(x)), runs) for x, b in zip(outs, flags)]
        return jax.tree.unflatten(jax.tree.structure(out_shape), outs)

    return batched


# --- jax.random.permutation without XLA:CPU's key-value sort ------------------------
# jax.random.permutation(key, m) shuffles arange(m) in a few rounds, each a
# stable sort by fresh random 32-bit keys (lax.sort_key_val). XLA:CPU sorts
# a key-value pair with a comparator call per comparison: 1.7 ms for m =
# 4,000, 20 ms for 40,000, which on a small net is most of a mini-batch
# epoch. A single uint32 array sorts several times faster, and when the keys
# are distinct the stable order follows from it: element i goes to position
# rank_i = #{keys < key_i} (a binary search in the sorted keys), one scatter.
# With a tie (rare: probability about m^2 / 2^33 per round) the round sorts
# (rank_i, i) packed into one uint32 when m <= 2^16, and falls back to
# lax.sort_key_val above that. The result is jax.random.permutation's, bit
# for bit; it reproduces that function's rounds (its key splits, its bits,
# its round count), which JAX does not promise to keep, so
# `_permutation_matches` checks it against jax.random.permutation and turns
# it off on a mismatch.
def _stable_order(keys: Array, x: Array) -> Array:
    """`x` in the order of a stable sort by the uint32 `keys` (what
    `lax.sort_key_val(keys, x)[1]` returns)."""
    m = keys.shape[0]
    ordered = jax.lax.sort(keys)
    rank = jnp.searchsorted(ordered, keys, side="left").astype(jnp.int32)
    distinct = jnp.all(ordered[1:] != ordered[:-1])

    def scatter():
        return jnp.zeros_like(x).at[rank].set(x, unique_indices=True, mode="promise_in_bounds")

    def ties():
        if m > 1 << 16:
            return jax.lax.sort_key_val(keys, x)[1]
        packed = (rank.astype(jnp.uint32) << 16) | jnp.arange(m, dtype=jnp.uint32)
        where = (jax.lax.sort(packed) & 0xFFFF).astype(jnp.int32)
        return x[where]

    return jax.lax.cond(distinct, scatter, ties)


def _permutation(key: Any, m: int) -> Array:
    """`jax.random.permutation(key, m)` for an integer m, sorting single arrays."""
    rounds = int(np.ceil(3 * np.log(max(1, m)) / np.log(np.iinfo(np.uint32).max)))
    x = jnp.arange(m)
    for _ in range(rounds):
        key, subkey = jax.random.split(key)
        x = _stable_order(jax.random.bits(subkey, (m,), jnp.uint32), x)
    return x


# --- the entry point -----------------------------------------------------------------
class Tricks(NamedTuple):
    """Which tricks a compiled program uses; hashable, part of a chunk's jit key."""

    small_dots: bool = False
    one_kernel: bool = False
    batch_last: bool = False
    cpu_options: bool = False
    permutation_sort: bool = False
    transposed_copies: bool = False
    long_chunks: bool = False

    def rewrite_dots(self, fn: Callable) -> Callable:
        """`fn` with its small matrix products as multiply + sum and its large
        transposed-lhs ones from a transposed copy, as far as those are on;
        `fn` itself when neither is."""
        if not (self.small_dots or self.transposed_copies):
            return fn
        return _rewrite_dots(fn, self.small_dots, self.transposed_copies)

    def batched(self, fn: Callable, runs: int) -> Callable:
        """`fn` over `runs` runs carried on the last axis of every leaf."""
        if self.batch_last:
            return _batch_last(fn, runs)
        return jax.vmap(fn, in_axes=-1, out_axes=-1)

    def loop(self, fn: Callable, state: Any) -> Any:
        """`fn(state)`, compiled as one XLA:CPU kernel when `one_kernel` and small."""
        return _as_one_kernel(fn, state) if self.one_kernel else fn(state)

    def permutation(self, key: Any, m: int) -> Array:
        """`jax.random.permutation(key, m)`, with single-array sorts when on."""
        return _permutation(key, m) if self.permutation_sort else jax.random.permutation(key, m)

    def compiler_options(self, one_kernel: bool, largest_weight: int = 0) -> Optional[dict]:
        """The XLA compiler options of a chunk (None: XLA's defaults), given
        whether it is one kernel and the entries of its largest weight."""
        if not self.cpu_options:
            return None
        if one_kernel:
            return ONE_KERNEL_OPTIONS
        return {**CPU_OPTIONS, **REGION_OPTIONS} if largest_weight >= REGION_MIN else CPU_OPTIONS

    def chunk_seconds(self, seconds: float, temp_bytes: int) -> float:
        """How long a training chunk should aim to run, given the usual
        `seconds` and the bytes of temporaries its program allocates per
        call: with `long_chunks`, long enough that the call's page faults are
        at most `CALL_SHARE` of it (a program of 157 MiB: 2.6 s), at most
        `MAX_CHUNK_SECONDS`."""
        if not self.long_chunks or temp_bytes < FAULT_MIN_BYTES:
            return seconds
        return max(seconds, min(MAX_CHUNK_SECONDS, temp_bytes * FAULT_SECONDS_PER_BYTE / CALL_SHARE))


NONE = Tricks()


def switched_off() -> bool:
    """Whether `FGD_COMPILE_TRICKS=0` is set (read at each call)."""
    return os.environ.get(ENV_SWITCH, "1").strip().lower() in ("0", "false", "off", "no")


def tricks(platform: str, *, shuffles: bool = False) -> Tricks:
    """The tricks to use for programs on `platform` ("cpu", "gpu", "tpu");
    `shuffles`: whether the program draws mini-batch orders (only then is
    `_permutation_matches` asked, once per process: full-batch runs never
    compile its checks)."""
    if platform != "cpu" or not AVAILABLE or switched_off() or not _self_test():
        return NONE
    options = _cpu_options_supported()
    return Tricks(small_dots=True, one_kernel=options, batch_last=True, cpu_options=options,
                  permutation_sort=shuffles and _permutation_matches(), transposed_copies=True,
                  long_chunks=True)


_SELF_TEST = _cache.LRU("compile_tricks_self_test", 1)


def _self_test() -> bool:
    """Whether the jaxpr rewrites run on this JAX and give plain JAX's numbers
    on a small step (once per process, in one compiled program); if not,
    every trick stays off."""
    def run() -> bool:
        def f(w, x):
            return jnp.sum(jnp.tanh(w @ x) ** 2)

        def both(w, x, ws):
            grad = jax.grad(f)
            return (_fuse_small_dots(grad)(w, x), grad(w, x),
                    _batch_last(lambda w: grad(w, x), 2)(ws), jax.vmap(lambda w: grad(w, x), -1, -1)(ws))

        w = np.linspace(-1, 1, 6, dtype=np.float32).reshape(2, 3)
        x = np.linspace(0, 1, 12, dtype=np.float32).reshape(3, 4)
        ws = np.stack([w, 2 * w], axis=-1)
        try:
            fused, plain, runs, want = jax.jit(both)(w, x, ws)
        except Exception:                 # an internal API this JAX lacks or spells otherwise
            return False
        return bool(np.allclose(fused, plain, rtol=1e-5, atol=1e-6)
                    and np.allclose(runs, want, rtol=1e-5, atol=1e-6))

    return _SELF_TEST.get("cpu", run)


def _permutation_matches() -> bool:
    """Whether `_permutation` gives jax.random.permutation's numbers on this
    JAX (checked once per process, in three compiled programs): one round
    (m = 300) and two (m = 3000) with a typed key, a raw uint32 key, and the
    tie branch of a round against lax.sort_key_val."""
    sizes = (300, 3000, 50)

    def draws(permutation, keys):
        return [permutation(k, m) for k, m in zip(keys, sizes)]

    def run() -> bool:
        try:
            keys = (jax.random.key(0), jax.random.key(1), jax.random.PRNGKey(2))  # the last raw
            ours = jax.jit(lambda k: draws(_permutation, k))(keys)
            theirs = jax.jit(lambda k: draws(jax.random.permutation, k))(keys)
            ties = jnp.asarray([5, 3, 5, 1, 3, 3, 0], jnp.uint32)   # ties: the packed sort
            got, want = jax.jit(lambda t, x: (_stable_order(t, x), jax.lax.sort_key_val(t, x)[1]))(
                ties, jnp.arange(7))
        except Exception:                 # an API this JAX lacks or spells otherwise
            return False
        return (all(np.array_equal(a, b) for a, b in zip(ours, theirs))
                and np.array_equal(got, want))

    return _PERMUTATION_OK.get("cpu", run)


_PERMUTATION_OK = _cache.LRU("permutation_self_test", 1)


def platform_of(x: Any) -> str:
    """The platform of the device holding array `x` (the default backend for
    a host array)."""
    devices = getattr(x, "devices", None)
    if callable(devices):
        return next(iter(devices())).platform
    return jax.default_backend()
