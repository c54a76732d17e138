"""Tests for fgd.plots: each function writes a non-empty, small PNG."""
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("matplotlib")
from fgd import plots  # noqa: E402

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
MAX_BYTES = 150_000   # figures are committed: keep them small


def _assert_png(path):
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    assert 1_000 < len(data) < MAX_BYTES, len(data)


def _titles(fig):
    return [ax.get_title() for ax in fig.axes] + [fig._suptitle.get_text() if fig._suptitle else ""]


def test_import_fgd_does_not_import_matplotlib():
    code = "import sys, fgd; assert 'matplotlib' not in sys.modules and 'fgd.plots' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_loss_curves_marks_divergence(tmp_path):
    epochs = np.arange(200)
    histories = {
        "sgd": 1.0 / (1 + epochs),
        "adam": np.exp(-epochs / 20.0),
        "nan run": np.concatenate([np.geomspace(1, 1e8, 50), [np.inf, np.nan]]),
        "blow-up": np.geomspace(1, 1e12, 30),
        "zero loss": np.r_[1.0, 0.5, 0.0],
    }
    out = tmp_path / "sub" / "loss.png"
    fig = plots.loss_curves(histories, path=out, title="Losses")
    _assert_png(out)
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert "nan run (diverged at epoch 50)" in legend
    assert "blow-up (diverged)" in legend and "sgd" in legend
    lo, hi = fig.axes[0].get_ylim()
    assert hi < 10.0   # the exploding runs do not set the scale
    plots.loss_curves(np.ones(5), log=False)   # a single array, linear axis


def test_decision_boundary_binary_and_softmax(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(2, 60))
    Y = (X[0] + X[1] > 0).astype(float)[None, :]
    sigmoid = lambda G: 1 / (1 + np.exp(-3 * (G[0:1] + G[1:2])))
    fig = plots.decision_boundary(sigmoid, X, Y, path=tmp_path / "db.png", title="Binary")
    _assert_png(tmp_path / "db.png")
    assert "Binary" in _titles(fig)

    def softmax(G):
        Z = np.stack([G[0], G[1], -G[0] - G[1]])
        E = np.exp(Z - Z.max(axis=0))
        return E / E.sum(axis=0)
    onehot = np.eye(3)[rng.integers(0, 3, 60)].T
    plots.decision_boundary(softmax, X, onehot, path=tmp_path / "db3.png", resolution=50)
    _assert_png(tmp_path / "db3.png")


def test_optimizer_paths(tmp_path):
    rosen = lambda x, y: (1 - x) ** 2 + 100 * (y - x ** 2) ** 2
    t = np.linspace(0, 1, 40)[:, None]
    paths = {"sgd": np.hstack([-1.5 + 2.5 * t, 2 - t]),
             "adam": np.hstack([-1.5 + 2.5 * t ** 0.5, 2 - t ** 2]),
             "escaped": np.array([[0.0, 0.0], [5.0, 9.0], [np.nan, np.nan]])}
    plots.optimizer_paths(rosen, paths, xlim=(-2, 2), ylim=(-1, 3), path=tmp_path / "p.png")
    _assert_png(tmp_path / "p.png")


def test_gradient_norms_dict_and_array(tmp_path):
    norms = np.abs(np.random.default_rng(0).normal(size=(3, 100))) * np.array([[1], [1e-2], [1e-4]])
    norms[2, 10] = 0.0
    plots.gradient_norms(norms, path=tmp_path / "g.png")
    _assert_png(tmp_path / "g.png")
    fig = plots.gradient_norms({"W1": norms[0], "W2": norms[1]})
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == ["W1", "W2"]


def test_fitted_vs_actual_with_forecast(tmp_path):
    t = np.arange(20)
    actual = np.vstack([np.linspace(5e3, 4e4, 20), np.linspace(1e3, 2e4, 20)])
    fitted = actual * 1.02
    fig = plots.fitted_vs_actual(t, actual, fitted, ["passengers", "freight"],
                                 path=tmp_path / "f.png",
                                 forecast=(np.array([20, 21]), np.array([[45e3, 47e3], [22e3, 23e3]])))
    _assert_png(tmp_path / "f.png")
    assert len(fig.axes) == 2


def test_filters(tmp_path):
    W = np.random.default_rng(0).normal(size=(8, 1, 5, 5))
    fig = plots.filters(W, path=tmp_path / "w.png")
    _assert_png(tmp_path / "w.png")
    assert len(fig.axes) == 9   # 3x3 grid, one cell off


@pytest.mark.parametrize("call", [
    lambda: plots.filters(np.ones((4, 4))),
    lambda: plots.decision_boundary(lambda G: G[:1], np.ones((3, 5)), np.ones((1, 5))),
    lambda: plots.fitted_vs_actual(np.arange(3), np.ones((2, 3)), np.ones((2, 4)), ["a", "b"]),
])
def test_shape_errors(call):
    with pytest.raises(ValueError, match="must have shape"):
        call()

