"""The `Optimizer` pair shared by every optimizer and transform of fgd.

An optimizer is the pair of pure functions that optax made the norm::

    state = opt.init(params)
    updates, state = opt.update(grads, state, params)   # params optional
    params = fgd.apply_updates(params, updates)

Parameters change only through `apply_updates`; an optimizer never returns new
parameters. Any object with these two attributes works with `make_step` and
`fit`, including an optax `GradientTransformation`.

Structure and numbers. fgd's factories also fill three more fields, so that
compiled programs are cached on what an optimizer *is* rather than on which
object it is:

* ``key``: a hashable description of everything that changes the traced
  program: the kind, the chain of transforms, static options (``nesterov``,
  masks, a schedule's kind, whether momentum is 0), never a numeric value;
* ``hparams``: a pytree of the numeric hyperparameters (rates, momenta,
  decays, eps, clip bounds, a schedule's numbers);
* ``rebuild``: ``hparams -> Optimizer``, the same optimizer with other
  numbers, called by `fit`, `make_step` and `sweep` with *traced* hparams
  inside the compiled program.

Two optimizers with equal keys therefore share one compiled program, and
``fgd.sgd(0.1)`` and ``fgd.sgd(0.2)`` compile once. An object without a key
(an optax optimizer, a hand-made `Optimizer(init, update)`) is compared by
identity: the same object reuses its program, a new one compiles again.
"""
from __future__ import annotations

from typing import Any, Callable, Hashable, NamedTuple, Optional

from fgd._types import OptState, Params, Updates


class Optimizer(NamedTuple):
    """A gradient transformation: `init(params) -> state` and
    `update(grads, state, params=None, **extra) -> (updates, state)`; fgd's
    own also carry their structural `key`, numeric `hparams` and `rebuild`
    (see the module docstring). ``Optimizer(init, update)`` leaves them None."""

    init: Callable[[Params], OptState]
    update: Callable[..., tuple[Updates, OptState]]
    key: Optional[Hashable] = None
    hparams: Any = None
    rebuild: Optional[Callable[[Any], "Optimizer"]] = None


class Identity:
    """Any object, hashed and compared by identity (a user's function or
    optimizer inside a structural key: two closures with equal code may hold
    different numbers)."""

    __slots__ = ("obj",)

    def __init__(self, obj: Any):
        self.obj = obj

    def __hash__(self) -> int:
        return id(self.obj)

    def __eq__(self, other: Any) -> bool:
        return isinstance(other, Identity) and other.obj is self.obj

    def __repr__(self) -> str:
        return f"Identity({type(self.obj).__name__} at {id(self.obj):#x})"

    def build(self, hparams: Any) -> Any:
        """The object itself (it has no traced numbers)."""
        return self.obj


class Structure:
    """An fgd optimizer as a static argument of a compiled program, hashed
    and compared by its structural key: equal keys share the program, whose
    traced `hparams` argument carries the numbers (`build`)."""

    __slots__ = ("obj", "key")

    def __init__(self, obj: Any):
        self.obj, self.key = obj, obj.key

    def __hash__(self) -> int:
        return hash(self.key)

    def __eq__(self, other: Any) -> bool:
        return isinstance(other, Structure) and other.key == self.key

    def build(self, hparams: Any) -> Any:
        """The optimizer rebuilt with (traced) numbers `hparams`."""
        return self.obj.rebuild(hparams)


def is_structural(opt: Any) -> bool:
    """Whether `opt` is compared by structure (an fgd optimizer with a key)."""
    return isinstance(opt, Optimizer) and opt.key is not None and opt.rebuild is not None


def parts(opt: Any) -> tuple[Hashable, Any, Callable[[Any], Any]]:
    """``(key, hparams, rebuild)`` of any optimizer: an fgd one's own; any
    other object by identity, with no numbers and a rebuild that returns it."""
    if is_structural(opt):
        return opt.key, opt.hparams, opt.rebuild
    return ("identity", Identity(opt)), None, lambda hparams: opt


def number(x: Any) -> Any:
    """A numeric hyperparameter as it enters ``hparams``: a Python int given
    for a real-valued option becomes a float (so ``sgd(1)`` and ``sgd(0.5)``
    trace alike); floats, numpy and jax scalars are kept as they are (a
    Python float stays weakly typed: it takes the dtype of the arrays it
    meets, as the constant it replaces did)."""
    if isinstance(x, int) and not isinstance(x, bool):
        return float(x)
    return x


def structured(build: Callable[[Any], Optimizer], key: Hashable, hparams: Any) -> Optimizer:
    """``build(hparams)`` (an ``Optimizer(init, update)``) with its `key`,
    `hparams` and a `rebuild` that calls `build` again with new numbers."""
    opt = build(hparams)
    return Optimizer(opt.init, opt.update, key, hparams,
                     lambda new: structured(build, key, new))
