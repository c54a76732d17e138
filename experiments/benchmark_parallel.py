"""Data-parallel fgd.fit: the medium MLP's samples/s on 1, 2, 4 and 8 devices.

    python experiments/benchmark_parallel.py            # about 1-2 minutes on 2 cores
    python experiments/benchmark_parallel.py --quick    # fewer samples and repeats

The medium case of experiments/benchmark.py (a 784-512-512-10 ReLU MLP,
softmax cross-entropy, Adam 1e-3, shuffled mini-batches of 256, one epoch of
synthetic float32 samples) trained by `fgd.fit(..., mesh=fgd.parallel.data_mesh())`
with each batch split over N devices. Each N runs in its own Python process
started with `XLA_FLAGS=--xla_force_host_platform_device_count=N`, so on a
machine without accelerators the N devices are simulated CPU devices that
share the same cores: the figures show what splitting the batch and
all-reducing the gradient cost, not a speed-up (N real GPUs or TPU cores
would each bring their own arithmetic). The 1-device process also times fit
without a mesh, the baseline the mesh's own overhead is measured against.

Within a process the first call (compilation included) is "cold"; the
median of `repeats` later calls is "warm" and gives samples/s.
"""
from __future__ import annotations

import dataclasses
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import fgd.cli

HERE = Path(__file__).resolve().parent


@dataclasses.dataclass(frozen=True)
class Config:
    """Data-parallel fit of the medium MLP on 1, 2, 4, 8 simulated devices."""

    quick: bool = False
    devices: tuple[int, ...] = (1, 2, 4, 8)
    samples: int = 20_480           # one epoch; a multiple of batch_size
    batch_size: int = 256           # every device count here divides it
    repeats: int = 3                # warm calls per device count (median)
    seed: int = 0
    timeout: int = 600              # seconds per device-count process


def quick_config(config: Config) -> Config:
    return dataclasses.replace(config, samples=5_120, repeats=2)


def measure(samples: int, batch_size: int, repeats: int, seed: int) -> dict:
    """In this process (its device count already fixed): time one-epoch fits of
    the medium MLP with a mesh over all devices, and without one on 1 device."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    import fgd

    net = fgd.MLP((784, 512, 512, 10), hidden="relu", output="softmax")
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((784, samples), dtype=np.float32)
    Y = np.eye(10, dtype=np.float32)[:, rng.integers(0, 10, samples)]
    loss = fgd.make_loss(net, "cross_entropy")
    params = net.init(jax.random.key(seed), "he", dtype=jnp.float32)
    opt = fgd.adam(1e-3)
    mesh = fgd.parallel.data_mesh()
    contenders = {"mesh": mesh} if jax.device_count() > 1 else {"no mesh": None, "mesh": mesh}
    rows = {}
    for name, m in contenders.items():
        def run():
            t = time.perf_counter()
            out = fgd.fit(loss, params, opt, X, Y, epochs=1, batch_size=batch_size,
                          key=jax.random.key(seed), progress=False, mesh=m)
            jax.block_until_ready(out.params)
            return time.perf_counter() - t, float(out.history["loss"][0])
        cold, first_loss = run()
        warm = statistics.median(run()[0] for _ in range(repeats))
        done = (samples // batch_size) * batch_size
        rows[name] = {"cold_s": cold, "warm_s": warm, "samples_per_s": done / warm,
                      "epoch_loss": first_loss}
    return {"devices": jax.device_count(), "platform": jax.devices()[0].platform, "rows": rows}


def run_devices(n: int, config: Config) -> dict:
    """`measure` in a fresh process with n simulated host devices."""
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={n}",
               JAX_PLATFORMS="cpu")
    code = (f"import sys, json; sys.path.insert(0, {str(HERE)!r}); import benchmark_parallel as b; "
            f"print('RESULT', json.dumps(b.measure({config.samples}, {config.batch_size}, "
            f"{config.repeats}, {config.seed})))")
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=config.timeout)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"the {n}-device process failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def main(config: Config) -> dict:
    if config.quick:
        config = quick_config(config)
    for n in config.devices:
        if config.batch_size % n:
            raise ValueError(f"batch_size {config.batch_size} must be divisible by each device "
                             f"count; got {n}")
    print(f"data-parallel fgd.fit, 784-512-512-10 ReLU, Adam, batches of {config.batch_size}, "
          f"{(config.samples // config.batch_size) * config.batch_size} samples, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    print("simulated CPU devices share this machine's cores: the figures show the cost of "
          "splitting batches and all-reducing gradients, not a speed-up")
    print(f"  {'devices':>7} {'fit':<8} {'cold s':>8} {'warm s':>8} {'samples/s':>11} {'vs 1 device':>12}")
    results, base = {}, None
    for n in config.devices:
        r = run_devices(n, config)
        results[n] = r
        for name, row in r["rows"].items():
            if base is None and name == "no mesh":
                base = row["samples_per_s"]
            rel = row["samples_per_s"] / base if base else float("nan")
            print(f"  {n:>7} {name:<8} {row['cold_s']:>8.2f} {row['warm_s']:>8.3f} "
                  f"{row['samples_per_s']:>11,.0f} {rel:>12.2f}")
    return {"devices": results, "baseline_samples_per_s": base, "simulated": True}


if __name__ == "__main__":
    main(fgd.cli.parse_config(Config, sys.argv[1:], prog="python experiments/benchmark_parallel.py"))
