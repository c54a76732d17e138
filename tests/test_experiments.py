"""The experiments, each claim checked at a small setting.

Each test calls an experiment's `main(Config(...))` with `out` in a temporary
directory and checks the numbers it returns against the claim
and, where there is one, a reference value; and that its figures were
written. Reference values of long runs (traffic's 50,000 epochs) were
measured once in float64 on CPU; their tolerance is loose (1e-3 relative)
because 50,000 chaotic-ish steps amplify rounding differences between
machines.
"""
import dataclasses
import math
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fgd
import fgd.cli

MINE = ("batch_modes", "initialization", "learning_rate", "planar", "traffic", "xor")
PNG_MIN_BYTES = 1000
needs_sweep = pytest.mark.skipif(not hasattr(fgd, "sweep"), reason="fgd.sweep has not landed yet")


def experiment(name):
    return fgd.cli.load_experiment(name)


def assert_figures(directory: Path, names):
    for name in names:
        path = directory / name
        assert path.is_file(), f"{path} missing"
        assert path.stat().st_size > PNG_MIN_BYTES, f"{path} is only {path.stat().st_size} bytes"
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (directory / "results.json").is_file()
    assert (directory / "history.csv").is_file()


# --- traffic: the MATLAB BP example -------------------------------------------
TRAFFIC_SSE_KEY0 = 0.04931    # final SSE after 50,000 epochs from jax key 0, float64
TRAFFIC_SSE_MATLAB = 0.04438  # the same from MATLAB's own rand start


@pytest.mark.slow   # a long end-to-end run: deselected by -m 'not slow'
def test_traffic_runs_all_50000_epochs_without_reaching_the_goal(tmp_path):
    mod = experiment("traffic")
    with pytest.warns(UserWarning, match="outside the fitted range"):
        out = mod.main(mod.Config(out=str(tmp_path)))
    # What happens with its settings: the goal SSE < 1e-3 is never met.
    assert out["epochs"] == 50_000
    assert out["stop_reason"] == "epochs"
    assert not out["reached_goal"]
    assert out["final_sse"] == pytest.approx(TRAFFIC_SSE_KEY0, rel=1e-3)
    # the forecast inputs scale to about 1.6..1.8, outside [-1, 1]
    scaled = np.asarray(out["forecast_inputs_scaled"])
    assert 1.5 < scaled.min() and scaled.max() < 1.85
    assert "outside the fitted range" in out["forecast_warning"]
    assert_figures(tmp_path / "traffic", ["fit.png", "sse.png"])


@pytest.mark.slow   # a long end-to-end run: deselected by -m 'not slow'
def test_traffic_matlab_init_reproduces_matlab_rand(tmp_path):
    mod = experiment("traffic")
    params, first = mod.matlab_rand_params()
    assert first == 0.8147236863931789  # MATLAB's first rand after startup, exactly
    assert params[0]["W"][0, 0] == first and params[0]["W"][1, 0] == 0.9057919370756192  # column-major
    assert [p["W"].shape for p in params] == [(8, 3), (2, 8)]
    assert [p["b"].shape for p in params] == [(8, 1), (2, 1)]
    with pytest.warns(UserWarning, match="outside the fitted range"):
        out = mod.main(mod.Config(out=str(tmp_path), matlab_init=True))
    assert out["first_rand"] == 0.8147236863931789
    assert out["epochs"] == 50_000 and out["stop_reason"] == "epochs"
    assert out["final_sse"] == pytest.approx(TRAFFIC_SSE_MATLAB, rel=1e-3)


# --- xor --------------------------------------------------------------------------
@pytest.mark.slow   # a long end-to-end run: deselected by -m 'not slow'
@needs_sweep
def test_xor_wide_net_solves_and_stuck_runs_sit_at_ln2_over_2(tmp_path):
    mod = experiment("xor")
    out = mod.main(mod.Config(out=str(tmp_path), seeds=12, epochs=3000))
    assert out["2-4-1"]["solved"] >= 11
    # every 2-2-1 run either solves XOR or sits at the plateau ln(2)/2 (loose: it is
    # still approaching it after 3,000 epochs)
    for value in out["2-2-1"]["final_loss_stuck"]:
        assert value == pytest.approx(math.log(2) / 2, abs=0.01)
    assert_figures(tmp_path / "xor", ["loss.png", "boundary_2-4-1_solved.png"])


# --- planar -----------------------------------------------------------------------
def test_planar_hidden_units_beat_logistic_regression(tmp_path):
    mod = experiment("planar")
    out = mod.main(mod.Config(out=str(tmp_path), sizes=(1, 4), epochs=2000, m=200))
    lr_acc = out["logistic regression"]["train_accuracy"]
    assert lr_acc < 0.65                          # a line cannot separate the petals
    assert out["4 hidden"]["train_accuracy"] > 0.85
    assert_figures(tmp_path / "planar", ["boundaries.png", "loss.png"])


# --- initialization -----------------------------------------------------------------
@pytest.mark.slow   # a long end-to-end run: deselected by -m 'not slow'
def test_zero_and_equal_init_keep_hidden_units_identical(tmp_path):
    mod = experiment("initialization")
    out = mod.main(mod.Config(out=str(tmp_path), epochs=300, m=100, hidden=(4, 4)))
    # exactly identical at every epoch, in both hidden layers
    assert np.all(np.asarray(out["zeros"]["spread_max_over_epochs"]) == 0.0)
    assert np.all(np.asarray(out["equal"]["spread_max_over_epochs"]) == 0.0)
    assert out["zeros"]["hidden_weights_moved"] == 0.0     # tanh(0) = 0: nothing flows
    assert out["equal"]["hidden_weights_moved"] > 1e-3      # they move, yet stay equal
    assert out["zeros"]["accuracy"] == pytest.approx(0.5)   # a constant on balanced classes
    # x10 weights saturate most tanh units; xavier almost none
    assert min(out["large"]["saturated_fraction"]) > 0.5
    assert max(out["xavier"]["saturated_fraction"]) < 0.2
    assert out["small"]["grad_norm_W1_at_init"] < 1e-2 * out["xavier"]["grad_norm_W1_at_init"]
    # fit's on-device history says the same: equal units, exactly
    assert np.all(np.asarray(out["zeros"]["history_unit_spread_max"]) == 0.0)
    assert np.all(np.asarray(out["equal"]["history_unit_spread_max"]) == 0.0)
    # ||g[1]|| (W and b) at epoch 0 is at least ||dW[1]|| at the start (the same params)
    assert np.asarray(out["xavier"]["history_grad_norm_start"])[0] >= \
        out["xavier"]["grad_norm_W1_at_init"] * (1 - 1e-5)
    assert_figures(tmp_path / "initialization", ["loss.png", "preactivations.png",
                                                 "saturated_fraction.png", "layer_grad_norm.png"])


# --- learning rate ------------------------------------------------------------------
def test_classify_rule_on_hand_made_histories():
    mod = experiment("learning_rate")
    down = np.geomspace(1.0, 1e-3, 100)
    assert mod.classify(down, best_final=1e-3) == "converges"
    assert mod.classify(down, best_final=1e-5) == "slow"
    zigzag = np.where(np.arange(100) % 2, 0.4, 0.5)   # starts 0.5, ends 0.4
    assert mod.classify(zigzag, best_final=0.4) == "oscillates"
    assert mod.classify(np.array([1.0, 10.0, np.inf]), best_final=1.0) == "diverges"
    assert mod.classify(np.linspace(1.0, 2.0, 10), best_final=1.0) == "diverges"


@pytest.mark.slow   # a long end-to-end run: deselected by -m 'not slow'
@needs_sweep
def test_learning_rate_too_large_diverges_good_converges(tmp_path):
    mod = experiment("learning_rate")
    out = mod.main(mod.Config(out=str(tmp_path), epochs=1000))
    classes = dict(zip(np.asarray(out["rates"]).round(6), out["classes"]))
    assert 0.01 in classes                              # the common first value 0.01 is in the grid
    assert classes[31.622777] == "diverges"
    assert classes[10.0] == "diverges"
    assert classes[0.316228] == "converges"
    assert classes[0.001] == "slow"
    assert out["quadratic_rule_holds"]                  # diverges exactly when eta > 2/lambda_max
    assert out["quadratic_lambda_max"] == pytest.approx(out["quadratic_lambda_max_closed_form"], rel=1e-4)
    assert_figures(tmp_path / "learning_rate", ["loss.png", "final_loss.png", "sharpness.png"])


# --- batch modes ----------------------------------------------------------------------
@pytest.mark.slow   # a long end-to-end run: deselected by -m 'not slow'
def test_batch_modes_updates_per_epoch_and_figures(tmp_path):
    mod = experiment("batch_modes")
    out = mod.main(mod.Config(out=str(tmp_path), m=200, epochs=5, repeats=1))
    assert out["batch (all m)"]["updates_per_epoch"] == 1
    assert out["stochastic (1)"]["updates_per_epoch"] == 200
    assert out["mini-batch 32"]["updates_per_epoch"] == 6
    assert out["mini-batch 64"]["updates_per_epoch"] == 3
    # same epochs, same rate: more updates per epoch get further
    assert out["stochastic (1)"]["final_loss"] < out["batch (all m)"]["final_loss"]
    assert_figures(tmp_path / "batch_modes", ["loss.png"])


# --- the command line ---------------------------------------------------------------------
def test_cli_lists_the_experiments():
    done = subprocess.run([sys.executable, "-m", "fgd", "list"], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    listed = {line.split()[0]: line for line in done.stdout.splitlines() if line.strip()}
    for name in MINE:
        assert name in listed
        assert len(listed[name].split(None, 1)) == 2, f"{name} has no summary line"


def test_cli_bad_option_value_exits_2_with_one_line():
    done = subprocess.run([sys.executable, "-m", "fgd", "run", "traffic", "--lr", "abc"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "--lr" in lines[0] and "abc" in lines[0], done.stderr


# --- the benchmark ---------------------------------------------------------------------------
@pytest.mark.slow   # a long end-to-end run: deselected by -m 'not slow'
def test_benchmark_runs_every_case_at_a_tiny_setting(monkeypatch):
    """experiments/benchmark.py end to end on a few epochs and samples (a smoke
    test: its figures are timings, which a test does not judge); the FLOP
    count per sample is 4 x weights + 2 x the weights past the first layer
    (no gradient is formed for the input) on the 784-512-512-10 net."""
    import importlib.util

    path = fgd.cli.EXPERIMENTS_DIR / "benchmark.py"
    spec = importlib.util.spec_from_file_location("fgd_experiments.benchmark", path)
    bench = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, bench)           # for its dataclass
    spec.loader.exec_module(bench)
    P = 784 * 512 + 512 * 512 + 512 * 10
    assert bench.medium_flops_per_sample(bench.MEDIUM) == 4 * P + 2 * (P - 784 * 512)
    monkeypatch.setattr(bench, "torch_or_none", lambda: None)      # PyTorch: optional
    config = bench.Config(repeats=1, tiny_epochs=50, torch_tiny_epochs=5, medium_samples=512,
                          torch_medium_samples=256, sweep_configs=4, sweep_epochs=50)
    out = bench.main(config)
    assert set(out["targets_met"]) == {"tiny_vs_numpy", "medium_vs_roofline", "sweep_speedup"}
    for ratio in (out["tiny"]["vs_numpy"], out["medium"]["vs_roofline"],
                  out["medium"]["new_x_vs_roofline"], out["sweep"]["speedup"]):
        assert math.isfinite(ratio) and ratio > 0
    assert out["medium"]["rows"]["fgd.fit"]["samples"] == 512
    assert set(out["sweep"]["rows"]) == {"fgd.sweep", "4 x fgd.fit"}
    assert math.isfinite(out["sweep"]["init_s"])
    assert out["sweep"]["host_s"] > 0 and math.isfinite(out["sweep"]["epoch_us"])


def test_benchmark_refuses_an_unknown_section_in_one_line_before_running():
    """`--only` takes comma-separated sections; a wrong one exits 2 with one
    line naming the option and what was typed, before any section runs."""
    path = fgd.cli.EXPERIMENTS_DIR / "benchmark.py"
    done = subprocess.run([sys.executable, str(path), "--only", "tiny,swep"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "--only" in lines[0] and "tiny,swep" in lines[0], done.stderr
    assert "sweep" in lines[0] and done.stdout == "", "refused before the machine line"


def test_benchmark_grid_prints_its_table_at_a_smoke_setting(monkeypatch, capsys):
    """experiments/benchmark_grid.py on two points, the optional libraries
    left out: every contender's row is produced with a positive rate and
    fit runs the epochs it was asked for (a smoke test; timings are not judged).
    The numpy contender's backprop is checked against jax.grad first."""
    import importlib.util

    path = fgd.cli.EXPERIMENTS_DIR / "benchmark_grid.py"
    spec = importlib.util.spec_from_file_location("fgd_experiments.benchmark_grid", path)
    grid = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, grid)
    spec.loader.exec_module(grid)
    config = grid.Config(ms=(80,), widths=(4,), depths=(2,), costs=("bce", "cross_entropy"),
                         batches=(0, 64), contenders=("fit", "plain", "make_step", "numpy"),
                         seconds=0.002, repeats=1, max_epochs=50)
    out = grid.main(config)
    assert len(out["points"]) == 4
    for point in out["points"]:
        assert set(point["rows"]) == {"fit", "plain", "make_step", "numpy"}
        assert all(r["epochs_per_s"] > 0 and r["epochs"] >= 1 for r in point["rows"].values())
    assert set(out["summary"]) == {"plain", "make_step", "numpy"}
    table = capsys.readouterr().out
    assert "m=80" in table and "mb64" in table and "plain/fit" in table
    with pytest.raises(ValueError, match="contenders"):
        grid.main(dataclasses.replace(config, contenders=("fit", "jaxopt")))


@pytest.mark.parametrize("cost", ["sse", "bce", "cross_entropy"])
def test_benchmark_grid_numpy_backprop_is_one_sgd_step(cost):
    """The numpy contender's hand-written step equals one fgd SGD step (jax.grad)."""
    import importlib.util

    path = fgd.cli.EXPERIMENTS_DIR / "benchmark_grid.py"
    spec = importlib.util.spec_from_file_location("fgd_experiments.benchmark_grid_np", path)
    grid = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = grid
    spec.loader.exec_module(grid)
    config = grid.Config(n_x=3, n_y=4)
    net, loss, params, X, Y, lr = grid.problem(config, grid.Point(30, 5, 2, cost, 0))
    Ws = grid.numpy_loop(params, X, Y, cost, lr, 0, 1)
    grads = jax.grad(loss)(params, jnp.asarray(X), jnp.asarray(Y))
    for W, p, g in zip(Ws, params, grads):
        np.testing.assert_allclose(W, np.asarray(p["W"]) - lr * np.asarray(g["W"]), rtol=2e-4, atol=2e-6)
