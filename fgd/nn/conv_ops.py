"""Convolution and pooling on (C, H, W, m) images, forward and hand-derived backward.

The primitives of `fgd.nn.cnn`, as pure functions of arrays. Images are
`(C, H, W, m)`, examples last.

Forward pass of a convolution, for output channel o at output position (y, x)
of example n, with the input A zero-padded by (pt, pl) at the top/left:

    Z[o, y, x, n] = b[o] + sum_{i, u, v} W[o, i, u, v] A[i, s y + u - pt, s x + v - pl, n]
    output size Ho = floor((H + pt + pb - kh) / s) + 1
    'valid': pt = pb = 0;  'same': Ho = ceil(H / s), pt + pb = max((Ho-1) s + kh - H, 0),
    pt = (pt + pb) // 2 (the extra row goes to the bottom, as in TensorFlow)

Backward pass from dZ = dJ/dZ, shape (F, Ho, Wo, m) (the derivation is the chain
rule on the sum above; each input and weight appears once per output it feeds):

    db[o]          = sum_{y, x, n} dZ[o, y, x, n]                              (F,)
    dW[o, i, u, v] = sum_{y, x, n} dZ[o, y, x, n] A[i, s y + u - pt, s x + v - pl, n]
                     the correlation of the input with dZ dilated by s     (F, C, kh, kw)
    dA[i, h, w, n] = sum_{o, u, v} dZ[o, y, x, n] W[o, i, u, v]  over h = s y + u - pt
                     the full convolution of dZ, dilated by s, with the kernel
                     flipped in both spatial axes and its channels swapped  (C, H, W, m)

Pooling over p x p windows moved by q (only 'valid' windows):

    max:  Z[y, x] = max_{u, v} A[q y + u, q x + v];  dA[q y + u, q x + v] += dZ[y, x]
          for the first (u, v) in row-major order that attains the max (ties go to
          the first, as jax's own gradient of lax.reduce_window does)
    avg:  Z[y, x] = mean_{u, v} A[q y + u, q x + v]; dA[q y + u, q x + v] += dZ[y, x] / p^2

Convolutions are computed as strided patches and one matrix product, and
pooling as a running max/sum over strided slices: XLA:CPU sends a convolution
to its fast kernel only outside loops, and `fit` runs every epoch inside one.
Nothing here calls jax.grad or jax.vjp.
"""
from __future__ import annotations

from typing import Optional

import jax.numpy as jnp
from jax import lax

from fgd._types import Array


# --- shapes and padding -----------------------------------------------------------
def conv_padding(size: int, k: int, s: int, padding: str) -> tuple[tuple[int, int], int]:
    """((low, high) padding, output size) along one spatial axis."""
    if padding == "valid":
        return (0, 0), (size - k) // s + 1
    out = -(-size // s)
    total = max((out - 1) * s + k - size, 0)
    return (total // 2, total - total // 2), out


# --- the primitives, on (C, H, W, m) arrays -------------------------------------
# Convolutions are computed as patches and one matrix product, pooling as a
# running max / sum over strided slices, never with XLA's convolution or
# reduce_window: XLA:CPU runs a convolution with its fast (Eigen) kernel only
# after rewriting it to NHWC/HWIO order, and it rewrites only the convolutions
# of the entry computation. Inside `fit`'s while/scan loop a convolution stays
# a naive loop (here 25x slower), as do the convolutions and select-and-scatter
# that autodiff makes of lax.conv_general_dilated and lax.reduce_window.
# Slices, pads, concatenations and dots are fast everywhere, and so are their
# autodiff transposes, so `fit` differentiates this forward pass as it is.
def patches(A: Array, kernel: tuple, stride: tuple, pads: tuple) -> Array:
    """The windows of A as columns: (C, H, W, m) -> (kh kw C, Ho, Wo, m), with

        P[(u kw + v) C + i, y, x, n] = A_padded[i, s y + u, s x + v, n]

    where A_padded has (pt, pb) rows and (pl, pr) columns of zeros
    (`pads` = ((pt, pb), (pl, pr))): one strided slice per kernel offset (u, v).
    """
    (kh, kw), (sh, sw) = kernel, stride
    (pt, pb), (pl, pr) = pads
    C, H, W, m = A.shape
    Ho, Wo = (H + pt + pb - kh) // sh + 1, (W + pl + pr - kw) // sw + 1
    zero = jnp.asarray(0, A.dtype)
    Ap = lax.pad(A, zero, ((0, 0, 0), (pt, pb, 0), (pl, pr, 0), (0, 0, 0)))
    views = [lax.slice(Ap, (0, u, v, 0), (C, u + (Ho - 1) * sh + 1, v + (Wo - 1) * sw + 1, m),
                       (1, sh, sw, 1))
             for u in range(kh) for v in range(kw)]                    # each (C, Ho, Wo, m)
    return views[0] if len(views) == 1 else jnp.concatenate(views, axis=0)


def _matmul_first(M: Array, P: Array) -> Array:
    """M (N, K) @ P (K, ...) -> (N, ...)."""
    return lax.dot_general(M, P, (((1,), (0,)), ((), ())))


def conv2d(A: Array, W: Array, b: Array, stride: tuple, pads: tuple) -> Array:
    """Z = W * A + b: A (C, H, W, m), W (F, C, kh, kw), b (F,) -> (F, Ho, Wo, m).

    The sum of the module docstring as one matrix product: W laid out as
    (F, kh kw C) times the patches of A (kh kw C, Ho, Wo, m). Equal to
    `lax.conv_general_dilated` (dimension numbers ("CHWN", "OIHW", "CHWN"))
    plus b, up to the order of the sums.
    """
    F, C, kh, kw = W.shape
    W_rows = jnp.transpose(W, (0, 2, 3, 1)).reshape(F, kh * kw * C)   # column (u kw + v) C + i
    return _matmul_first(W_rows, patches(A, (kh, kw), stride, pads)) + b[:, None, None, None]


def conv2d_backward(A: Array, W: Array, dZ: Array, stride: tuple, pads: tuple,
                    input_grad: bool = True) -> tuple[Array, Array, Optional[Array]]:
    """(dW, db, dA) of `conv2d` from dZ (F, Ho, Wo, m); see the module docstring.

    dW: the correlation of the input with dZ. Its sum over (y, x, n) of
    dZ[o, y, x, n] A[i, s y + u - pt, s x + v - pl, n] is dZ times the
    patches of A (the columns the forward pass multiplied), transposed:
    (F, Ho Wo m) @ (Ho Wo m, kh kw C). Rows that 'valid' windows leave
    unread appear in no patch and get no gradient.

    dA: the full convolution of dZ, dilated by the stride, with the flipped
    kernel read as (C, F): dZ with s - 1 zeros between its rows (columns),
    padded by kh - 1 - pt above and H - 1 - (Ho-1) s + pt below, so that its
    stride-1 patches are (kh kw F, H, W, m), times W[o, i, kh-1-u, kw-1-v]
    laid out as (C, kh kw F).
    """
    (sh, sw) = stride
    F, C, kh, kw = W.shape
    (pt, _), (pl, _) = pads
    _, H, Wd, _ = A.shape
    _, Ho, Wo, _ = dZ.shape
    db = jnp.sum(dZ, axis=(1, 2, 3))                                   # (F,)
    P = patches(A, (kh, kw), stride, pads)                             # (kh kw C, Ho, Wo, m)
    dW = lax.dot_general(dZ, P, (((1, 2, 3), (1, 2, 3)), ((), ())))   # (F, kh kw C)
    dW = jnp.transpose(dW.reshape(F, kh, kw, C), (0, 3, 1, 2))        # (F, C, kh, kw)
    if not input_grad:
        return dW, db, None
    zero = jnp.asarray(0, dZ.dtype)
    dZ_full = lax.pad(dZ, zero, ((0, 0, 0),
                                 (kh - 1 - pt, H - 1 - (Ho - 1) * sh + pt, sh - 1),
                                 (kw - 1 - pl, Wd - 1 - (Wo - 1) * sw + pl, sw - 1),
                                 (0, 0, 0)))                           # (F, H+kh-1, W+kw-1, m)
    W_flip = jnp.transpose(W[:, :, ::-1, ::-1], (1, 2, 3, 0)).reshape(C, kh * kw * F)
    P_dZ = patches(dZ_full, (kh, kw), (1, 1), ((0, 0), (0, 0)))      # (kh kw F, H, W, m)
    dA = _matmul_first(W_flip, P_dZ)                                   # (C, H, W, m)
    return dW, db, dA


def _pool_views(A: Array, size: tuple, stride: tuple) -> list:
    """A[:, u + q y, v + q x, :] (C, Ho, Wo, m) for each window offset (u, v), row-major."""
    C, H, W, m = A.shape
    (p, r), (qh, qw) = size, stride
    Ho, Wo = (H - p) // qh + 1, (W - r) // qw + 1
    return [lax.slice(A, (0, u, v, 0), (C, u + (Ho - 1) * qh + 1, v + (Wo - 1) * qw + 1, m),
                      (1, qh, qw, 1))
            for u in range(p) for v in range(r)]


def max_pool(A: Array, size: tuple, stride: tuple) -> Array:
    """max over each window: (C, H, W, m) -> (C, Ho, Wo, m).

    A running max over the window offsets in row-major order that replaces
    the best so far only by a strictly larger value (or a NaN, which then
    stays, as in lax.max): autodiff of it sends each window's gradient to the
    first offset attaining the max, the rule of `max_pool_backward` (and of
    jax's gradient of lax.reduce_window).
    """
    views = _pool_views(A, size, stride)
    best = views[0]
    for view in views[1:]:
        best = jnp.where((view > best) | (view != view), view, best)
    return best


def avg_pool(A: Array, size: tuple, stride: tuple) -> Array:
    """mean over each window: (C, H, W, m) -> (C, Ho, Wo, m)."""
    views = _pool_views(A, size, stride)
    total = views[0]
    for view in views[1:]:
        total = total + view
    return total / (size[0] * size[1])


def _window_offsets(A: Array, dZ: Array, size: tuple, stride: tuple):
    """For each offset (u, v) inside the window, row-major: the strided view
    A[:, u + q y, v + q x, :] (C, Ho, Wo, m) and the lax.pad config that puts
    a (C, Ho, Wo, m) array back at those positions of a (C, H, W, m) one."""
    C, H, W, m = A.shape
    _, Ho, Wo, _ = dZ.shape
    (qh, qw) = stride
    for u in range(size[0]):
        for v in range(size[1]):
            end = (C, u + (Ho - 1) * qh + 1, v + (Wo - 1) * qw + 1, m)
            view = lax.slice(A, (0, u, v, 0), end, (1, qh, qw, 1))
            pad = ((0, 0, 0), (u, H - end[1], qh - 1), (v, W - end[2], qw - 1), (0, 0, 0))
            yield view, pad


def max_pool_backward(A: Array, Z: Array, dZ: Array, size: tuple, stride: tuple) -> Array:
    """dA of `max_pool`: each dZ[y, x] goes to the first arg-max of its window.

    Offsets (u, v) are visited row-major; `taken` marks windows whose max has
    been claimed, so a tie goes to the first offset that attains it. A
    position shared by overlapping windows sums what each window sends it.
    """
    dA = jnp.zeros_like(A)
    taken = jnp.zeros(Z.shape, bool)                                   # (C, Ho, Wo, m)
    zero = jnp.asarray(0, A.dtype)
    for view, pad in _window_offsets(A, dZ, size, stride):
        hit = (view == Z) & ~taken
        taken = taken | hit
        dA = dA + lax.pad(jnp.where(hit, dZ, zero), zero, pad)
    return dA


def avg_pool_backward(A: Array, dZ: Array, size: tuple, stride: tuple) -> Array:
    """dA of `avg_pool`: each dZ[y, x] / (p_h p_w) to every position of its window."""
    dA = jnp.zeros_like(A)
    share = dZ / (size[0] * size[1])
    zero = jnp.asarray(0, A.dtype)
    for _, pad in _window_offsets(A, dZ, size, stride):
        dA = dA + lax.pad(share, zero, pad)
    return dA
