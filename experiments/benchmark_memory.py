"""Resident memory over many fits of different configurations in one process.

    python experiments/benchmark_memory.py                    # 200 fits, two child processes
    python experiments/benchmark_memory.py --fits 40          # quicker

Each distinct configuration (layer sizes, cost, batch mode, optimizer
structure) is a distinct program: JAX compiles it and keeps the executable
in its caches, and fgd keeps a few small entries of its own (`fgd._cache`,
bounded LRUs). This benchmark runs `fits` fits, each of a configuration not
seen before, in a fresh child process, twice: once never clearing anything,
once calling `fgd.clear_caches()` (fgd's caches and `jax.clear_caches()`)
every `clear_every` fits. It reports the resident set size (RSS, from
/proc/self/statm, or `resource` where that is missing) before the first fit
and after every `report_every` fits, and the entries held by fgd's caches
at the end. Run it as a benchmark, not a test: a run of 200 fits takes
minutes on a loaded 2-core machine.
"""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time


@dataclasses.dataclass(frozen=True)
class Config:
    """Resident memory over many fits of distinct configurations."""

    fits: int = 200
    epochs: int = 10
    clear_every: int = 10        # the clearing run calls fgd.clear_caches() this often
    report_every: int = 25
    seed: int = 0


def rss_mib() -> float:
    """This process's resident set size in MiB."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:                         # not Linux: the peak, not the current size
        import resource
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak / (2**20 if sys.platform == "darwin" else 2**10)


def configurations(n: int):
    """n distinct (sizes, hidden, output, cost, batch_size, optimizer name) tuples."""
    pairs = [("identity", "sse"), ("identity", "mse"), ("sigmoid", "bce"), ("softmax", "cross_entropy")]
    hidden = ("sigmoid", "tanh", "relu")
    optimizers = ("sgd", "adam", "momentum")
    out, width = [], 2
    while len(out) < n:
        for (output, cost) in pairs:
            for act in hidden:
                for opt in optimizers:
                    for batch in (None, 4):
                        out.append(((3, width, 2), act, output, cost, batch, opt))
        width += 1
    return out[:n]


def child(config: Config, clear: bool) -> dict:
    import jax
    import jax.numpy as jnp

    import fgd
    from fgd import _cache

    key = jax.random.key(config.seed)
    X = jax.random.uniform(key, (3, 16))
    Y = jax.nn.one_hot(jnp.arange(16) % 2, 2).T          # (2, 16): valid for every cost
    make = {"sgd": lambda: fgd.sgd(0.1), "adam": lambda: fgd.adam(1e-2),
            "momentum": lambda: fgd.sgd(0.1, momentum=0.9)}
    rows = [(0, rss_mib())]
    t0 = time.perf_counter()
    for i, (sizes, act, output, cost, batch, opt) in enumerate(configurations(config.fits), 1):
        net = fgd.MLP(sizes, hidden=act, output=output)
        loss = fgd.make_loss(net, cost)
        fgd.fit(loss, net.init(key, "xavier"), make[opt](), X, Y, epochs=config.epochs,
                batch_size=batch, key=key, progress=False)
        if clear and i % config.clear_every == 0:
            fgd.clear_caches()
        if i % config.report_every == 0 or i == config.fits:
            rows.append((i, rss_mib()))
    return {"clear": clear, "rows": rows, "seconds": time.perf_counter() - t0,
            "fgd_cache_entries": _cache.cache_sizes()}


def main(config: Config) -> dict:
    results = {}
    for clear in (False, True):
        env = dict(os.environ)
        proc = subprocess.run([sys.executable, __file__, "--child", json.dumps(
            {"clear": clear, **dataclasses.asdict(config)})], capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            raise RuntimeError(proc.stderr[-3000:])
        results["clear_caches" if clear else "no_clearing"] = json.loads(proc.stdout.splitlines()[-1])
    print(f"resident memory (MiB) over {config.fits} fits of distinct configurations, "
          f"{config.epochs} epochs each; load average {os.getloadavg()[0]:.1f}")
    no, yes = results["no_clearing"]["rows"], results["clear_caches"]["rows"]
    print(f"{'fits':>6} {'no clearing':>12} {'clear_caches every ' + str(config.clear_every):>24}")
    for (i, a), (_, b) in zip(no, yes):
        print(f"{i:>6} {a:>12.0f} {b:>24.0f}")
    for name, r in results.items():
        first, last = r["rows"][0][1], r["rows"][-1][1]
        per = (last - first) / max(1, config.fits)
        print(f"{name}: {first:.0f} -> {last:.0f} MiB ({per:.2f} MiB per fit), "
              f"{r['seconds']:.0f} s; fgd caches at the end: {r['fgd_cache_entries']}")
    return results


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        args = json.loads(sys.argv[2])
        clear = args.pop("clear")
        print(json.dumps(child(Config(**args), clear)))
    else:
        import fgd.cli
        main(fgd.cli.parse_config(Config, sys.argv[1:], prog="python experiments/benchmark_memory.py"))
