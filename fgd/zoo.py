"""A zoo of models whose hand-derived gradients `python -m fgd check` verifies.

Each entry is a model, a cost and a small random data set; `run_check` runs
`fgd.check_gradients` on each (float64, hand vs jax.grad vs finite
differences) and prints one row per entry.
"""
from __future__ import annotations

from typing import Any, Iterator, NamedTuple

import jax
import numpy as np

from fgd.gradcheck import check_gradients
from fgd.nn.cnn import CNN, AvgPool, Conv, Dense, Flatten, MaxPool
from fgd.nn.mlp import MLP

M = 6  # examples per check: enough to exercise the 1/m sums, small enough for finite differences


class Case(NamedTuple):
    name: str
    net: Any
    cost: str
    l2: float = 0.0
    l1: float = 0.0


def _targets(rng: np.random.Generator, net: Any, cost: str) -> np.ndarray:
    n = net.out_dim
    if cost == "cross_entropy":
        return np.eye(n)[:, rng.integers(0, n, M)]
    if cost == "bce":
        return rng.integers(0, 2, (n, M)).astype(np.float64)
    return rng.standard_normal((n, M))


def _inputs(rng: np.random.Generator, net: Any) -> np.ndarray:
    shape = getattr(net, "input_shape", None) or (net.in_dim,)
    return rng.standard_normal((*shape, M))


def cases() -> Iterator[Case]:
    """The textbook networks, every activation and cost, deep nets, penalties,
    and convolutional networks (strides, paddings, max and average pooling)."""
    yield Case("traffic 3-8-2 logsig/purelin", MLP((3, 8, 2), "logsig", "purelin"), "sse")
    yield Case("xor 2-2-1 sigmoid", MLP((2, 2, 1), "sigmoid", "sigmoid"), "bce")
    yield Case("planar 2-4-1 tanh/sigmoid", MLP((2, 4, 1), "tanh", "sigmoid"), "bce")
    for hidden in ("sigmoid", "tanh", "relu", "leaky_relu", "identity"):
        yield Case(f"4-6-5-3 {hidden}/softmax", MLP((4, 6, 5, 3), hidden, "softmax"), "cross_entropy")
    yield Case("3-5-2 sigmoid out, sse", MLP((3, 5, 2), "tanh", "sigmoid"), "sse")
    yield Case("3-5-3 softmax out, mse", MLP((3, 5, 3), "relu", "softmax"), "mse")
    yield Case("deep 3-4-4-4-4-2 tanh", MLP((3, 4, 4, 4, 4, 2), "tanh", "identity"), "mse")
    yield Case("3-8-2 mse + l2", MLP((3, 8, 2), "sigmoid", "identity"), "mse", l2=0.3)
    yield Case("3-8-2 mse + l1", MLP((3, 8, 2), "sigmoid", "identity"), "mse", l1=0.2)
    yield Case("cnn conv3 same + maxpool", CNN((2, 6, 6), (Conv(3, 3, padding="same"), MaxPool(2),
                                                        Flatten(), Dense(3)), "tanh", "softmax"), "cross_entropy")
    yield Case("cnn conv3 stride 2 valid", CNN((1, 7, 7), (Conv(4, 3, stride=2), Flatten(), Dense(2)),
                                               "relu", "identity"), "mse", l2=0.1)
    yield Case("cnn conv2 + avgpool + dense", CNN((3, 6, 6), (Conv(2, 2), AvgPool(2, stride=1), Flatten(),
                                                           Dense(4), Dense(1)), "sigmoid", "sigmoid"), "bce")


def run_check(verbose: bool = False, seed: int = 0) -> bool:
    """Check every case; print a table; True when all pass."""
    rng = np.random.default_rng(seed)
    key = jax.random.key(seed)
    header = f"{'model':<34} {'cost':<14} {'hand~autodiff':>13} {'hand~fd':>10}  result"
    print(header)
    print("-" * len(header))
    all_ok = True
    for i, case in enumerate(cases()):
        params = case.net.init(jax.random.fold_in(key, i), "normal", scale=0.5)
        X, Y = _inputs(rng, case.net), _targets(rng, case.net, case.cost)
        report = check_gradients(case.net, case.cost, params, X, Y, l2=case.l2, l1=case.l1)
        worst = {c: max((r.errors[c] for r in report.rows if not np.isnan(r.errors[c])), default=0.0)
                 for c in ("hand~autodiff", "hand~fd")}   # NaN: every sampled entry at a kink
        result = "ok" if report.ok else f"FAILED at {report.first_failure}"
        print(f"{case.name:<34} {case.cost:<14} {worst['hand~autodiff']:>13.1e} {worst['hand~fd']:>10.1e}  {result}")
        if verbose or not report.ok:
            print(report)
        all_ok &= report.ok
    print("all gradients agree" if all_ok else "some gradients disagree")
    return all_ok
