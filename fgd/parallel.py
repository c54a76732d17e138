"""Data parallelism on JAX's own runtime: a device mesh, sharded batches.

fgd scales out the way JAX programs do at scale, with no runtime of its own:

- `data_mesh()` puts every device of every process on one mesh axis, "data";
- the examples of a batch are split across that axis (`NamedSharding` with
  "data" on the example axis), the params and the optimizer state are
  replicated on every device;
- the step is the same global-view `jax.jit` program as on one device. XLA's
  SPMD partitioner computes each device's share of the loss and inserts the
  all-reduce that the global reductions need, so the gradient is the gradient
  of the loss over the whole global batch (a mean where the cost carries 1/m,
  a sum for "sse": exactly what one device computes, never a sum of
  per-device means);
- several processes (hosts) join through `jax.distributed` (`initialize`),
  after which `jax.devices()` lists the devices of all of them and each
  process runs the same program on its own devices.

Data layout. fit keeps full-batch data as given, examples last `(..., m)`,
sharded on the LAST axis; for mini-batches it stores them examples first
`(m, ...)`, sharded on the FIRST axis, and each gathered batch is constrained
back to "data" on its example axis (`constrain_examples`), so every device
computes on `batch_size / devices` examples. A batch the device count does
not divide is rejected (`check_divisible`) before JAX's own sharding error.

Several processes. Each process runs the same script. It may pass fgd the
full data (every process the same arrays: fgd keeps the slice its devices
hold) or, with `local_data=True`, only its own block of examples: process p
holds the p-th of `jax.process_count()` equal contiguous blocks (the order of
`jax.devices()`); the global arrays are assembled with
`jax.make_array_from_process_local_data`.

Example: the README's "Scaling out" script; tests/test_parallel.py runs this
very text on 1 process with 1 device and on 2 processes with 2 devices each::

    import jax
    import fgd

    fgd.parallel.initialize()          # join the other processes (no-op when alone)
    mesh = fgd.parallel.data_mesh()    # every device of every process, axis "data"

    X, Y = fgd.data.moons(jax.random.key(0), m=2048, dtype="float32")  # same on all
    net = fgd.MLP((2, 32, 32, 1), hidden="tanh", output="sigmoid")
    params = net.init(jax.random.key(1), scheme="xavier", dtype="float32")
    result = fgd.fit(fgd.make_loss(net, "bce"), params, fgd.adam(1e-2), X, Y,
                     epochs=20, batch_size=256, key=jax.random.key(2), mesh=mesh)
    if jax.process_index() == 0:
        print(f"processes: {jax.process_count()}, devices: {jax.device_count()}, "
              f"loss: {result.history['loss'][-1]:.4f}")
"""
from __future__ import annotations

import os
from typing import Any, Callable, Optional, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

#: The name of the mesh axis the examples are split over.
DATA = "data"


# --- processes and the mesh ------------------------------------------------------
def initialize(coordinator_address: Optional[str] = None, num_processes: Optional[int] = None,
               process_id: Optional[int] = None, **kwargs: Any) -> bool:
    """Join this process to a multi-process JAX run (`jax.distributed.initialize`).

    Call it once per process, first thing, before any JAX computation. An
    argument left out is read from the environment: `JAX_COORDINATOR_ADDRESS`
    (read by JAX itself), `FGD_NUM_PROCESSES` and `FGD_PROCESS_ID` (read here,
    for launching processes by hand); what is still missing JAX detects from
    the cluster (TPU pods, SLURM, Open MPI, Kubernetes). Where nothing is
    given or detected this is a single-process run: `initialize` does nothing
    and returns False, so one script serves a laptop, a multi-GPU machine (one
    process drives all its GPUs) and a cluster. Explicitly:
    `initialize("10.0.0.1:1234", num_processes=2, process_id=0)` on process 0.

    On the CPU the cross-process collectives need an implementation: this
    selects gloo (`jax_cpu_collectives_implementation`) unless one ("gloo" or
    "mpi") is already chosen. It is the one place fgd changes `jax.config`,
    because `initialize` is an explicit process-setup call, not library code
    that a computation runs; GPUs and TPUs do not read this setting.

    Args:
      coordinator_address: "host:port" of process 0's coordinator service.
      num_processes: how many processes take part.
      process_id: this process's index in [0, num_processes).
      **kwargs: passed on to `jax.distributed.initialize` (e.g.
        `local_device_ids`, `initialization_timeout`).

    Returns:
      True once the distributed runtime is up (also if it already was),
      False for a single process with nothing detected.
    """
    if jax.distributed.is_initialized():
        return True
    if getattr(jax.config, "jax_cpu_collectives_implementation", None) not in ("gloo", "mpi"):
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    env = lambda name: int(os.environ[name]) if os.environ.get(name) else None
    num_processes = env("FGD_NUM_PROCESSES") if num_processes is None else num_processes
    process_id = env("FGD_PROCESS_ID") if process_id is None else process_id
    explicit = (coordinator_address, num_processes, process_id) != (None, None, None)
    try:
        jax.distributed.initialize(coordinator_address, num_processes, process_id, **kwargs)
    except ValueError as e:
        if explicit or "coordinator_address" not in str(e):
            raise
        return False
    return True


def data_mesh(devices: Optional[Sequence[Any]] = None) -> Mesh:
    """A one-axis `Mesh` named "data" over `devices` (default: `jax.devices()`,
    the devices of all processes).

    Args:
      devices: the devices to split each batch over, in order.
    """
    devices = jax.devices() if devices is None else list(devices)
    if len(devices) == 0:
        raise ValueError("devices must hold at least one device; got an empty sequence")
    return Mesh(np.array(devices, dtype=object), (DATA,))


def check_mesh(mesh: Any, name: str = "mesh") -> Mesh:
    """`mesh` if it is a `jax.sharding.Mesh` with a "data" axis (else TypeError/ValueError)."""
    if not isinstance(mesh, Mesh):
        raise TypeError(f"{name} must be a jax.sharding.Mesh such as fgd.parallel.data_mesh(); "
                        f"got {type(mesh).__name__}")
    if DATA not in mesh.axis_names:
        raise ValueError(f"{name} must have an axis named {DATA!r}; got axes {mesh.axis_names}")
    return mesh


def data_size(mesh: Mesh) -> int:
    """How many devices the examples are split over (the "data" axis length)."""
    return int(mesh.shape[DATA])


def check_divisible(mesh: Mesh, size: int, name: str) -> None:
    """Raise ValueError unless the "data" axis divides `size` (a global batch)."""
    n = data_size(mesh)
    if size % n:
        raise ValueError(f"{name} must be divisible by the number of devices on the mesh's "
                         f"{DATA!r} axis, so that every device gets the same number of examples: "
                         f"got {size} examples for {n} devices")


# --- shardings and placing data ----------------------------------------------------
def replicated(mesh: Mesh) -> NamedSharding:
    """Every device holds the whole array (params, optimizer state, scalars)."""
    return NamedSharding(mesh, P())


def examples_sharding(mesh: Mesh, ndim: int, axis: int = -1) -> NamedSharding:
    """"data" on the example axis `axis` of an `ndim`-dimensional array, the
    other axes whole: `P(None, "data")` for X (n_x, m), `P("data", None)` for
    examples-first (m, n_x)."""
    spec: list = [None] * ndim
    spec[axis] = DATA
    return NamedSharding(mesh, P(*spec))


def _place(x: Any, sharding: NamedSharding, local: bool) -> jax.Array:
    """`x` as a global array with `sharding`. One process: a device_put. Several:
    `make_array_from_process_local_data`, from the full array (`local=False`,
    the same on every process) or from this process's block (`local=True`)."""
    if isinstance(x, jax.Array) and x.sharding.is_equivalent_to(sharding, x.ndim):
        return x
    if jax.dtypes.issubdtype(getattr(x, "dtype", None), jax.dtypes.prng_key):
        data = _place(jax.random.key_data(x), sharding, local)
        return jax.random.wrap_key_data(data, impl=jax.random.key_impl(x))
    if jax.process_count() == 1:
        return jax.device_put(x, sharding)
    host = np.asarray(x)
    return jax.make_array_from_process_local_data(sharding, host, None if local else host.shape)


def replicate(mesh: Mesh, tree: Any) -> Any:
    """Every array leaf of `tree` replicated on all devices of `mesh` (leaves
    that already are stay as they are). With several processes every process
    must pass the same values, as each process's `init` with the same key gives."""
    sharding = replicated(mesh)
    return jax.tree.map(lambda x: _place(x, sharding, False), tree)


def shard_examples(mesh: Mesh, x: Any, axis: int = -1, *, local_data: bool = False,
                   name: str = "X") -> jax.Array:
    """`x` as a global array split over the "data" axis along its example axis.

    Args:
      mesh: a mesh with a "data" axis.
      x: the full array (`local_data=False`, with several processes the same on
        each), or this process's contiguous block of examples (`local_data=True`).
      axis: the example axis: -1 for fgd's (..., m), 0 for examples-first (m, ...).
      local_data: see `x`.
      name: the argument's name in errors.

    Raises:
      ValueError: the device count does not divide the global number of examples.
    """
    check_mesh(mesh)
    shape = np.shape(x)
    count = global_examples(shape[axis], local_data)
    check_divisible(mesh, count, f"the number of examples of {name}")
    return _place(x, examples_sharding(mesh, len(shape), axis), local_data)


def global_examples(count: int, local_data: bool) -> int:
    """The global number of examples when each process holds `count` of them
    (`local_data=True`: one equal block per process) or all of them."""
    return count * jax.process_count() if local_data else count


def constrain_examples(mesh: Mesh, x: jax.Array, axis: int = -1) -> jax.Array:
    """Inside jit: keep `x` split over "data" on its example axis (the batch a
    mini-batch epoch gathers would otherwise be placed as XLA sees fit)."""
    return jax.lax.with_sharding_constraint(x, examples_sharding(mesh, x.ndim, axis))


# --- what fit and make_step call -----------------------------------------------------
def place_training_data(mesh: Mesh, X, Y, Xv, Yv, *, batch_size: Optional[int], local_data: bool):
    """fit's data, checked and laid out for the mode, as global sharded arrays.

    Full batch (`batch_size=None`): X, Y (..., m) split on the last axis; the
    device count must divide m. Mini-batch: X, Y examples first (m, ...); the
    device count must divide `batch_size`; the stored data are split on the
    first axis when it also divides m, and replicated otherwise (possible only
    when every process passes the full data). Validation data are split on
    their last axis when the device count divides their size, else replicated.
    """
    n = data_size(mesh)
    m = global_examples(X.shape[-1], local_data)
    if batch_size is None:
        check_divisible(mesh, m, "the full batch (the number of examples m of X)")
    else:
        check_divisible(mesh, batch_size, "batch_size")
        if local_data:
            check_divisible(mesh, m, "the number of examples of X with local_data=True")
    if Xv is not None and local_data:
        check_divisible(mesh, global_examples(Xv.shape[-1], True),
                        "the number of examples of Xv with local_data=True")

    def put(a, axis, split):
        sharding = examples_sharding(mesh, a.ndim, axis) if split else replicated(mesh)
        return _place(a, sharding, local_data)

    if batch_size is None:
        X, Y = put(X, -1, True), put(Y, -1, True)
    else:
        X, Y = (put(np.moveaxis(np.asarray(a), -1, 0) if jax.process_count() > 1
                    else jax.numpy.moveaxis(a, -1, 0), 0, m % n == 0) for a in (X, Y))
    if Xv is not None:
        split = local_data or global_examples(Xv.shape[-1], False) % n == 0
        Xv, Yv = put(Xv, -1, split), put(Yv, -1, split)
    return X, Y, Xv, Yv


def sharded_step(update: Callable, mesh: Mesh) -> Callable:
    """`update(params, opt_state, X, Y)` jitted (params and state donated),
    behind a function that first replicates params and state and splits X, Y
    over "data" on their last axis (a no-op for arrays already placed so).

    With several processes, X and Y are the global batch: the same full arrays
    on every process, or global arrays from `shard_examples(..., local_data=True)`.
    """
    check_mesh(mesh)
    jitted = jax.jit(update, donate_argnums=(0, 1))

    def step(params, opt_state, X, Y):
        check_divisible(mesh, int(np.shape(X)[-1]), "the batch (the number of examples of X)")
        params, opt_state = replicate(mesh, (params, opt_state))
        X = shard_examples(mesh, X, name="X")
        Y = shard_examples(mesh, Y, name="Y")
        return jitted(params, opt_state, X, Y)

    step.jitted = jitted  # type: ignore[attr-defined]
    return step
