"""The everyday workflow around fit: optax's rate in the history, and a command
line that says what it did (resumes, plain numbers, min/final SSE)."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fgd
from fgd import records

ROOT = Path(__file__).resolve().parent.parent
NET = fgd.MLP((3, 8, 2), hidden="logsig", output="purelin")
LOSS = fgd.make_loss(NET, "sse")
RNG = np.random.default_rng(3)
X, Y = RNG.uniform(-1, 1, (3, 20)), RNG.uniform(-1, 1, (2, 20))
PARAMS = NET.init(jax.random.key(0), "uniform", dtype=jnp.float64)


def test_history_lr_reads_an_optax_inject_hyperparams_schedule():
    optax = pytest.importorskip("optax")
    schedule = optax.exponential_decay(0.05, transition_steps=1, decay_rate=0.9)
    opt = optax.inject_hyperparams(optax.sgd)(learning_rate=schedule)
    result = fgd.fit(LOSS, PARAMS, opt, X, Y, epochs=8, history=("loss", "lr"))
    # optax records the rate of the update it last made (the first one's at init):
    # row k holds the schedule at step max(k - 1, 0)
    want = 0.05 * 0.9 ** np.maximum(np.arange(8) - 1, 0)
    np.testing.assert_allclose(result.history["lr"], want, rtol=1e-6)
    chained = optax.chain(optax.clip_by_global_norm(1.0),
                          optax.inject_hyperparams(optax.adam)(learning_rate=0.01))
    assert float(fgd.current_lr(chained.init(PARAMS))) == pytest.approx(0.01)
    assert float(fgd.current_lr({"hyperparams": {"learning_rate": jnp.float32(0.3)}})) == \
        pytest.approx(0.3)


def test_history_lr_without_a_recorded_rate_names_the_fix():
    optax = pytest.importorskip("optax")
    with pytest.raises(ValueError, match=r"history 'lr'.*optax.inject_hyperparams\(optax.adam\)"):
        fgd.fit(LOSS, PARAMS, optax.adam(0.01), X, Y, epochs=2, history=("loss", "lr"))


def test_plain_numbers_in_tables():
    assert records.plain(44038.4) == "44,038" and records.plain(0.0493072) == "0.04931"
    assert records.plain(1.2e20) == "1.2e+20" and records.plain(float("nan")) == "nan"


def run_cli(*args):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "FGD_EXPERIMENTS": str(ROOT / "experiments"),
           "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run([sys.executable, "-m", "fgd", "run", *args], capture_output=True,
                          text=True, env=env, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.mark.slow   # a long end-to-end run: deselected by -m 'not slow'
def test_a_resumed_cli_run_prints_the_epoch_and_file_it_resumed_from(tmp_path):
    ckpt, out = tmp_path / "ckpt", tmp_path / "runs"
    first = run_cli("digits", "--epochs", "4", "--checkpoint-dir", str(ckpt),
                    "--checkpoint-every", "2", "--out", str(out))
    assert "started at epoch 0" in first
    second = run_cli("digits", "--epochs", "6", "--checkpoint-dir", str(ckpt),
                     "--checkpoint-every", "2", "--resume", "--out", str(out))
    assert f"resumed at epoch 4 from {ckpt / 'ckpt-4.npz'}" in second


@pytest.mark.slow   # a long end-to-end run: deselected by -m 'not slow'
def test_traffic_prints_forecasts_as_plain_numbers_and_min_sse_includes_the_final(tmp_path):
    stdout = run_cli("traffic", "--epochs", "300", "--out", str(tmp_path))
    table = stdout[stdout.index("forecast, original units"):]
    assert re.search(r"\b\d{1,3},\d{3}\b", table) and "e+0" not in table
    numbers = json.loads((tmp_path / "traffic" / "results.json").read_text())
    assert numbers["min_sse"] <= numbers["final_sse"]


def test_optimizer_paths_window_holds_every_path_and_has_a_colour_bar():
    pytest.importorskip("matplotlib")
    from fgd import plots
    f = lambda x, y: (1 - x) ** 2 + 100 * (y - x ** 2) ** 2
    t = np.linspace(0, 1, 50)[:, None]
    paths = {"long": np.hstack([t, t]), "same valley": np.hstack([t, t]) + 1e-3,
             "far": np.hstack([-3 * t, 5 * t])}
    fig = plots.optimizer_paths(f, paths, (-2, 2), (-1, 3))
    ax = fig.axes[0]
    x0, y1 = ax.get_xlim()[0], ax.get_ylim()[1]
    assert x0 < -3 and y1 > 5                        # "far" is inside the frame, not at its edge
    assert len(fig.axes) == 2                        # the colour bar
    lines = {line.get_label(): line for line in ax.get_lines() if not line.get_label().startswith("_")}
    long, twin = lines["long (49 steps)"], lines["same valley (49 steps)"]
    assert long.get_linewidth() > twin.get_linewidth() and long.get_zorder() < twin.get_zorder()
    assert long.get_marker() != twin.get_marker() and long.get_linestyle() != twin.get_linestyle()


def test_readme_using_a_trained_model_runs(tmp_path, monkeypatch, capsys):
    import re as _re
    text = (ROOT / "README.md").read_text()
    block = _re.search(r"```python\n(.*?)```", text[text.index("## Using a trained model"):], _re.S).group(1)
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(block, namespace)
    assert namespace["scores"]["accuracy"] > 0.9
    assert (tmp_path / "run.csv").read_text().count("\n") == 301       # header + 300 epochs
