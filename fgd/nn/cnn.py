"""Convolutional networks with hand-derived gradients.

A `CNN` is a frozen description (input shape, a tuple of layers, activations)
plus a pytree of parameters, following the model protocol of `fgd.MLP`, so
`make_loss`, `backprop`, `check_gradients`, `make_step` and `fit` take it as
they take an MLP. Images are `(C, H, W, m)`, examples last, and they
stay so inside: every layer maps (C, H, W, m) to (C', H', W', m), so `Flatten`
is the reshape to `(C*H*W, m)` columns and a local gradient is already in the
public layout.

Layers and parameters (one dict per layer, `{}` for the parameter-free ones):

    Conv(F, k, stride=s, padding)  W: (F, C, kh, kw)   b: (F,)
    MaxPool(p, stride=q), AvgPool  {}
    Flatten()                      {}
    Dense(n)                       W: (n, n_prev)      b: (n, 1)

The forward and backward formulas of each layer are in `fgd.nn.conv_ops`.

A hidden activation g follows every Conv and Dense layer except the last Dense,
which carries the output activation; pooling and Flatten have none, so their
"Z" is their output and their local gradient is dJ/d(output). Nothing here
calls jax.grad or jax.vjp.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np

from fgd import _checks
from fgd._types import Array, Params
from fgd.nn import activations, outputs
from fgd.nn.conv_ops import (
    avg_pool,
    avg_pool_backward,
    conv2d,
    conv2d_backward,
    conv_padding,
    max_pool,
    max_pool_backward,
)
from fgd.nn.init import check_scheme, init_conv, init_dense, resolve_dtype
from fgd.nn.mlp import Cache

PADDINGS = ("valid", "same")


# --- layer descriptions ---------------------------------------------------------
def _pair(value: Any, name: str, minimum: int = 1) -> tuple[int, int]:
    """An int or a pair of ints >= minimum, as (rows, columns)."""
    pair = tuple(value) if isinstance(value, (tuple, list)) else (value, value)
    if len(pair) != 2 or not all(
        isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= minimum for v in pair
    ):
        raise ValueError(f"{name} must be an int >= {minimum} or a pair of them; got {value!r}")
    return int(pair[0]), int(pair[1])


def _positive_int(value: Any, name: str) -> int:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be an int >= 1; got {value!r}")
    return int(value)


@dataclasses.dataclass(frozen=True)
class Conv:
    """A 2-D convolution with `filters` output channels, then the hidden activation.

    Args:
      filters: output channels F.
      kernel_size: k or (kh, kw).
      stride: s or (sh, sw).
      padding: "valid" (no padding) or "same" (output ceil(H / s)).
      in_channels: optional; when given it must match the channels coming in.
    """

    filters: int
    kernel_size: Any = 3      # an int or (kh, kw); a pair once constructed
    stride: Any = 1           # an int or (sh, sw); a pair once constructed
    padding: str = "valid"
    in_channels: Optional[int] = None

    def __post_init__(self):
        object.__setattr__(self, "filters", _positive_int(self.filters, "Conv filters"))
        object.__setattr__(self, "kernel_size", _pair(self.kernel_size, "Conv kernel_size"))
        object.__setattr__(self, "stride", _pair(self.stride, "Conv stride"))
        if self.padding not in PADDINGS:
            raise ValueError(f"Conv padding must be one of {', '.join(map(repr, PADDINGS))}; "
                             f"got {self.padding!r}")
        if self.in_channels is not None:
            object.__setattr__(self, "in_channels", _positive_int(self.in_channels, "Conv in_channels"))


@dataclasses.dataclass(frozen=True)
class _Pool:
    """Shared fields of the pooling layers: window `size`, `stride` (default `size`)."""

    size: Any = 2             # an int or (p, r); a pair once constructed
    stride: Any = None        # an int, a pair or None (= size); a pair once constructed

    def __post_init__(self):
        name = type(self).__name__
        object.__setattr__(self, "size", _pair(self.size, f"{name} size"))
        stride = self.size if self.stride is None else self.stride
        object.__setattr__(self, "stride", _pair(stride, f"{name} stride"))


@dataclasses.dataclass(frozen=True)
class MaxPool(_Pool):
    """Max over `size` windows moved by `stride` (default: `size`, no overlap)."""


@dataclasses.dataclass(frozen=True)
class AvgPool(_Pool):
    """Mean over `size` windows moved by `stride` (default: `size`, no overlap)."""


@dataclasses.dataclass(frozen=True)
class Flatten:
    """(C, H, W, m) images to (C*H*W, m) columns, in the order of `reshape`."""


@dataclasses.dataclass(frozen=True)
class Dense:
    """A fully connected layer of `units` on columns (after `Flatten`)."""

    units: int

    def __post_init__(self):
        object.__setattr__(self, "units", _positive_int(self.units, "Dense units"))


LAYERS = (Conv, MaxPool, AvgPool, Flatten, Dense)



# --- the model --------------------------------------------------------------------
def _describe_layers(input_shape: tuple, layers: tuple) -> tuple:
    """The output shape of every layer ((C, H, W) or (n,)); ValueError naming
    the first layer that cannot follow what comes before it."""
    shape, shapes = input_shape, []
    for i, layer in enumerate(layers):
        where = f"layers[{i}] ({layer!r})"
        if not isinstance(layer, LAYERS):
            raise TypeError(f"{where} must be one of {', '.join(t.__name__ for t in LAYERS)}; "
                            f"got {type(layer).__name__}")
        image = len(shape) == 3
        if isinstance(layer, Dense):
            if image:
                raise ValueError(f"{where}: Dense needs columns, but the input to it is an image "
                                 f"of shape {shape}; put Flatten() before it")
            shape = (layer.units,)
        elif not image:
            raise ValueError(f"{where} needs (C, H, W) images, but after Flatten the input to it "
                             f"has shape {shape}; image layers must come before Flatten()")
        elif isinstance(layer, Flatten):
            shape = (math.prod(shape),)
        elif isinstance(layer, Conv):
            C, H, W = shape
            if layer.in_channels is not None and layer.in_channels != C:
                raise ValueError(f"{where}: in_channels={layer.in_channels} does not match the "
                                 f"{C} channels coming in (input shape {shape})")
            (kh, kw), (sh, sw) = layer.kernel_size, layer.stride
            if layer.padding == "valid" and (kh > H or kw > W):
                raise ValueError(f"{where}: kernel {layer.kernel_size} is larger than its input "
                                 f"{(H, W)} with padding='valid'; use a smaller kernel or 'same'")
            shape = (layer.filters, conv_padding(H, kh, sh, layer.padding)[1],
                     conv_padding(W, kw, sw, layer.padding)[1])
        else:
            C, H, W = shape
            (p, r), (q, t) = layer.size, layer.stride
            if p > H or r > W:
                raise ValueError(f"{where}: pooling window {layer.size} is larger than its input "
                                 f"{(H, W)}")
            shape = (C, (H - p) // q + 1, (W - r) // t + 1)
        shapes.append(shape)
    if not layers or not isinstance(layers[-1], Dense):
        raise ValueError(f"layers must end with a Dense layer (the outputs); got {layers!r}"[:300])
    return tuple(shapes)


@dataclasses.dataclass(frozen=True)
class CNN:
    """A convolutional network on (C, H, W, m) images.

    Args:
      input_shape: (C, H, W) of one image.
      layers: Conv, MaxPool, AvgPool layers, one Flatten, then Dense layers;
        the last Dense gives the outputs.
      hidden: activation after every Conv and every Dense but the last.
      output: activation of the last Dense (the hidden ones, or softmax).
        Either may also be a user's `fgd.Activation(name, g, g_prime)`.

    Frozen and hashable, validated at construction; `shapes` holds each
    layer's output shape.

    Example:
      net = CNN((1, 8, 8), (Conv(8, 3, padding="same"), MaxPool(2), Flatten(), Dense(10)),
                hidden="relu", output="softmax")
    """

    input_shape: tuple
    layers: tuple
    hidden: str = "relu"
    output: str = "softmax"

    def __post_init__(self):
        shape = self.input_shape
        if (not isinstance(shape, (tuple, list)) or len(shape) != 3
                or not all(isinstance(n, (int, np.integer)) and not isinstance(n, bool) and n >= 1
                           for n in shape)):
            raise ValueError(f"input_shape must be (C, H, W), three ints >= 1; got {shape!r}")
        object.__setattr__(self, "input_shape", tuple(int(n) for n in shape))
        if not isinstance(self.layers, (tuple, list)):
            raise TypeError(f"layers must be a tuple of layers; got {type(self.layers).__name__}")
        object.__setattr__(self, "layers", tuple(self.layers))
        activations.get(self.hidden, argument="hidden")
        activations.get(self.output, output=True, argument="output")
        # not a field: equality and hashing see only the description
        object.__setattr__(self, "_shapes", _describe_layers(self.input_shape, self.layers))

    @property
    def shapes(self) -> tuple:
        """Each layer's output shape for one example: (C, H, W) or (n,)."""
        return self._shapes  # type: ignore[attr-defined]  # set in __post_init__

    @property
    def out_dim(self) -> int:
        return self.layers[-1].units

    @property
    def output_activation(self) -> activations.Activation:
        return activations.get(self.output, output=True)

    def activation(self, i: int) -> Optional[activations.Activation]:
        """g after layers[i]: output for the last, hidden for Conv/Dense, None otherwise."""
        if i == len(self.layers) - 1:
            return self.output_activation
        if isinstance(self.layers[i], (Conv, Dense)):
            return activations.get(self.hidden)
        return None

    def check_input(self, X: Any, name: str = "X") -> None:
        """X must be (C, H, W, m): images, examples last."""
        if len(X.shape) != 4 or tuple(X.shape[:3]) != self.input_shape:
            C, H, W = self.input_shape
            hint = (f"; columns (C*H*W, m) become images with {name}.reshape({C}, {H}, {W}, -1)"
                    if len(X.shape) == 2 and X.shape[0] == C * H * W else "")
            raise ValueError(f"{name} must have shape ({C}, {H}, {W}, m) (images, examples last) "
                             f"for input_shape {self.input_shape}; got shape {tuple(X.shape)}{hint}")

    def init(self, key, scheme: str = "small", *, dtype=None, scale: float = 1.0) -> Params:
        """Parameters, one dict per layer: Conv {"W": (F, C, kh, kw), "b": (F,)},
        Dense {"W": (n, n_prev), "b": (n, 1)}, pooling and Flatten {}.

        Args:
          key: a JAX PRNG key; the same key gives the same params.
          scheme: as `fgd.MLP.init` ("small", "zeros", "normal", "uniform",
            "xavier", "he"); for a Conv, fan_in = C kh kw and fan_out = F kh kw.
          dtype: float dtype; JAX's default float when None.
          scale: the standard deviation of the "normal" scheme.
        """
        _checks.check_key(key)
        check_scheme(scheme, scale)
        dtype = resolve_dtype(dtype)
        keys = jax.random.split(key, len(self.layers))
        params, shape = [], self.input_shape
        for k, layer, out_shape in zip(keys, self.layers, self.shapes):
            if isinstance(layer, Conv):
                params.append(init_conv(k, layer.filters, shape[0], layer.kernel_size, scheme, dtype, scale))
            elif isinstance(layer, Dense):
                params.append(init_dense(k, layer.units, shape[0], scheme, dtype, scale))
            else:
                params.append({})
            shape = out_shape
        return params

    def forward(self, params: Params, X: Array) -> Cache:
        """The forward pass, keeping Z and A of every layer for backprop.

        A[0] = X; image activations are (C, H, W, m), columns (n, m). For
        pooling and Flatten, Z[i] = A[i+1] (no activation).
        Z[-1] and A[-1] are the output logits and activations (n_out, m).
        """
        dtype = jax.tree_util.tree_leaves(params)[0].dtype
        A = jnp.asarray(X, dtype)                                       # (C, H, W, m)
        Zs, As, shape = [], [A], self.input_shape
        for i, (layer, p) in enumerate(zip(self.layers, params)):
            if isinstance(layer, Conv):
                Z = conv2d(A, p["W"], p["b"], layer.stride, self._pads(i, shape))
            elif isinstance(layer, MaxPool):
                Z = max_pool(A, layer.size, layer.stride)
            elif isinstance(layer, AvgPool):
                Z = avg_pool(A, layer.size, layer.stride)
            elif isinstance(layer, Flatten):
                Z = A.reshape(-1, A.shape[-1])                            # (C*H*W, m)
            else:
                Z = p["W"] @ A + p["b"]                                    # (n, m)
            g = self.activation(i)
            A = Z if g is None else g.fn(Z)
            Zs.append(Z)
            As.append(A)
            shape = self.shapes[i]
        return Cache(Zs, As)

    def _pads(self, i: int, shape: tuple) -> tuple:
        layer = self.layers[i]
        return tuple(conv_padding(n, k, s, layer.padding)[0]
                     for n, k, s in zip(shape[1:], layer.kernel_size, layer.stride))

    def logits(self, params: Params, X: Array) -> Array:
        """Z of the last layer, (n_out, m)."""
        return self.forward(params, X).Z[-1]

    def apply(self, params: Params, X: Array) -> Array:
        """The predictions g(Z) of the last layer, (n_out, m)."""
        return self.forward(params, X).A[-1]

    def predict(self, params: Params, X: Array) -> Array:
        """Class labels for a softmax output (argmax, (m,)) or a sigmoid output
        (A > 0.5, (n_out, m), like Y), the output values otherwise
        (`fgd.nn.outputs`)."""
        return outputs.predict(self, params, X)

    def backward(self, params: Params, cache: Cache, dZ_out: Array) -> tuple[list, list]:
        """The hand-derived backward pass from dZ of the last layer (n_out, m).

        For i = last, ..., 0, with dZ = dJ/dZ[i]:
          Dense:   dW = dZ A^T, db = sum_columns dZ, dA = W^T dZ
          Conv:    dW, db, dA by `conv2d_backward`
          MaxPool: dA by `max_pool_backward`; AvgPool: `avg_pool_backward`
          Flatten: dA = dZ reshaped to (C, H, W, m)
        then dZ[i-1] = g'(Z[i-1]) * dA where layer i-1 has an activation, else dA.

        Returns:
          (grads like params, deltas): deltas[i] = dJ/dZ[i], as (C, H, W, m) for
          image layers and (n, m) for Flatten and Dense; for pooling and
          Flatten, Z[i] is the layer's output.
        """
        n = len(self.layers)
        grads: list = [None] * n
        deltas: list = [None] * n
        dZ = dZ_out
        for i in range(n - 1, -1, -1):
            layer, p, A = self.layers[i], params[i], cache.A[i]
            deltas[i] = dZ
            need_dA = i > 0
            dA = None
            if isinstance(layer, Dense):
                grads[i] = {"W": dZ @ A.T, "b": jnp.sum(dZ, axis=1, keepdims=True)}
                dA = p["W"].T @ dZ if need_dA else None
            elif isinstance(layer, Conv):
                shape = self.input_shape if i == 0 else self.shapes[i - 1]
                dW, db, dA = conv2d_backward(A, p["W"], dZ, layer.stride, self._pads(i, shape),
                                             input_grad=need_dA)
                grads[i] = {"W": dW, "b": db}
            else:
                grads[i] = {}
                if not need_dA:
                    pass
                elif isinstance(layer, Flatten):
                    dA = dZ.reshape(A.shape)
                elif isinstance(layer, AvgPool):
                    dA = avg_pool_backward(A, dZ, layer.size, layer.stride)
                else:
                    dA = max_pool_backward(A, cache.Z[i], dZ, layer.size, layer.stride)
            if need_dA:
                g = self.activation(i - 1)
                dZ = dA if g is None else g.vjp(cache.Z[i - 1], A, dA)
        return grads, deltas
