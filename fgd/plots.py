"""Figures for the experiments: loss curves, decision boundaries, optimizer
paths, gradient norms, fitted-vs-actual series and learned filters.

matplotlib is an optional extra (``pip install "fgd[plots]"``) and ``import
fgd`` never imports this module. Figures are built from
``matplotlib.figure.Figure`` directly, never through pyplot: no global figure
registry, no GUI backend, no windows; they render with Agg. Each function
takes numpy (or JAX) arrays, returns the Figure and, given ``path``, saves it
as a small PNG via ``save``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Mapping, Optional, Sequence, Union

import numpy as np

try:
    from matplotlib.colors import ListedColormap
    from matplotlib.figure import Figure
except ImportError as err:   # pragma: no cover - exercised only without the extra
    raise ImportError('fgd.plots needs matplotlib: pip install "fgd[plots]"') from err

DPI = 100
_CLASS_COLOURS = ("tab:blue", "tab:red", "tab:green", "tab:orange", "tab:purple",
                  "tab:brown", "tab:pink", "tab:gray", "tab:olive", "tab:cyan")


def save(fig: Figure, path: Union[str, Path], dpi: int = DPI) -> Path:
    """Save ``fig`` to ``path`` (format from the suffix, PNG for ``.png``),
    creating parent directories; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    return path


def _finish(fig: Figure, path) -> Figure:
    if path is not None:
        save(fig, path)
    return fig


def _series(values, name: str) -> dict[str, np.ndarray]:
    """A dict name -> 1-D array from a mapping, a 1-D array or a (rows, n) array."""
    if isinstance(values, Mapping):
        return {str(k): np.asarray(v, dtype=float).ravel() for k, v in values.items()}
    arr = np.asarray(values, dtype=float)
    if arr.ndim == 1:
        return {name: arr}
    if arr.ndim == 2:
        return {f"{name} {i + 1}": row for i, row in enumerate(arr)}
    raise ValueError(f"expected a dict of 1-D arrays or a 1-D/2-D array; got shape {arr.shape}")


def loss_curves(histories, path=None, log: bool = True, xlabel: str = "epoch",
                title: str = "Training loss", ylabel: str = "loss",
                diverge_factor: float = 1e3) -> Figure:
    """Several loss curves on one axis, log-scaled by default.

    A run is marked "(diverged at epoch k)" in the legend when its loss turns
    NaN/inf at k, or "(diverged)" when its final loss exceeds its first by
    ``diverge_factor``. Non-finite values (and, on a log axis, values <= 0)
    are masked, and the y-range follows the runs that did not diverge, so one
    exploding run does not flatten the others.

    Args:
      histories: ``{name: losses (epochs,)}``, or one array of losses.
      path: where to save the PNG, or None.
      log: log-scaled y axis.
    """
    runs = _series(histories, "loss")
    fig = Figure(figsize=(6.4, 4.2))
    ax = fig.add_subplot()
    kept = []
    for name, y in runs.items():
        bad = ~np.isfinite(y)
        label = name
        if bad.any():
            label += f" (diverged at epoch {int(np.argmax(bad))})"
        elif y.size and np.abs(y[-1]) > diverge_factor * max(np.abs(y[0]), 1e-300):
            label += " (diverged)"
        else:
            kept.append(y)
        shown = np.where(bad | ((y <= 0) if log else False), np.nan, y)
        ax.plot(np.arange(y.size), shown, label=label, lw=1.4)
    parts = [v[np.isfinite(v) & ((v > 0) if log else True)] for v in kept]
    finite = np.concatenate(parts) if parts else np.empty(0)
    if log:
        ax.set_yscale("log")
    if finite.size:
        lo, hi = finite.min(), finite.max()
        pad = (hi / lo) ** 0.05 if log and lo > 0 else None
        if log and lo > 0:
            ax.set_ylim(lo / pad, hi * pad)
        elif hi > lo:
            ax.set_ylim(lo - 0.05 * (hi - lo), hi + 0.05 * (hi - lo))
    ax.set(xlabel=xlabel, ylabel=ylabel + (" (log scale)" if log else ""), title=title)
    ax.grid(True, which="major", alpha=0.3)
    if runs:
        ax.legend(fontsize="small")
    return _finish(fig, path)


def _class_index(Y: np.ndarray) -> np.ndarray:
    Y = np.asarray(Y)
    if Y.ndim == 1:
        return Y.astype(int)
    return np.rint(Y[0]).astype(int) if Y.shape[0] == 1 else Y.argmax(axis=0)


def decision_boundary(predict: Callable, X, Y, path=None, title: str = "Decision boundary",
                      resolution: int = 200, margin: float = 0.5,
                      class_names: Optional[Sequence[str]] = None) -> Figure:
    """Filled contours of a classifier over the plane, with the data on top.

    Args:
      predict: maps a (2, k) array to probabilities, (1, k) for a sigmoid
        output (class 1 when > 0.5) or (n_classes, k) for softmax.
      X: (2, m) inputs.
      Y: (1, m) 0/1 labels, (n_classes, m) one-hot, or (m,) labels.
      resolution: grid points per axis.
      margin: space around the data, in data units.
    """
    X = np.asarray(X)
    if X.ndim != 2 or X.shape[0] != 2:
        raise ValueError(f"X must have shape (2, m); got {X.shape}")
    labels = _class_index(Y)
    if labels.shape != (X.shape[1],):
        raise ValueError(f"Y must label the {X.shape[1]} columns of X; got shape {np.shape(Y)}")
    x0 = np.linspace(X[0].min() - margin, X[0].max() + margin, resolution)
    x1 = np.linspace(X[1].min() - margin, X[1].max() + margin, resolution)
    G0, G1 = np.meshgrid(x0, x1)
    grid = np.stack([G0.ravel(), G1.ravel()]).astype(X.dtype if X.dtype.kind == "f" else float)
    P = np.asarray(predict(grid), dtype=float)
    if P.ndim == 1:
        P = P[None, :]
    n_classes = max(P.shape[0], 2, labels.max() + 1)
    colours = _CLASS_COLOURS[:n_classes] if n_classes <= 10 else None
    fig = Figure(figsize=(5.6, 4.8))
    ax = fig.add_subplot()
    if P.shape[0] == 1:
        surface = ax.contourf(G0, G1, P[0].reshape(G0.shape), levels=np.linspace(0, 1, 11),
                              cmap="RdBu_r", alpha=0.45, extend="both")
        ax.contour(G0, G1, P[0].reshape(G0.shape), levels=[0.5], colors="k", linewidths=1)
        fig.colorbar(surface, ax=ax, label="P(class 1)")
    else:
        cmap = ListedColormap(colours) if colours else "tab20"
        ax.contourf(G0, G1, P.argmax(axis=0).reshape(G0.shape),
                    levels=np.arange(P.shape[0] + 1) - 0.5, cmap=cmap, alpha=0.3)
    for c in np.unique(labels):
        name = class_names[c] if class_names is not None else f"class {c}"
        ax.scatter(X[0, labels == c], X[1, labels == c], s=12, label=name, edgecolors="k",
                   linewidths=0.3, color=colours[c] if colours else None)
    ax.set(xlabel="$x_1$", ylabel="$x_2$", title=title)
    ax.legend(fontsize="small", loc="best")
    return _finish(fig, path)


def _window(lim, points: np.ndarray, margin: float = 0.04) -> tuple:
    """`lim` widened so that every finite coordinate in `points` lies at least
    `margin` of the window's width inside it (a path never runs along an edge)."""
    lo, hi = float(lim[0]), float(lim[1])
    finite = points[np.isfinite(points)]
    if finite.size:
        pad = margin * (max(hi, float(finite.max())) - min(lo, float(finite.min())))
        lo, hi = min(lo, float(finite.min()) - pad), max(hi, float(finite.max()) + pad)
    return lo, hi


def optimizer_paths(f: Callable, paths: Mapping[str, np.ndarray], xlim, ylim, path=None,
                    title: str = "Optimizer paths", levels: int = 15,
                    resolution: int = 200) -> Figure:
    """Contours of f(x, y), with a colour bar, and each optimizer's path over them.

    Contour levels are spaced geometrically above the grid's minimum of f, so
    a steep valley (e.g. Rosenbrock) shows detail near its minimum. The
    window is `xlim` x `ylim` widened to hold every finite point of every
    path, so no path leaves the frame. Paths that run along the same valley
    stay visible: the longest path is drawn first, widest and lowest, each
    next one narrower, on top, in its own line style and marker (markers
    every ~1/12 of the path). Paths start at a circle and end at a star on
    their last finite point; NaN points are gaps.

    Args:
      f: ``f(x, y)`` on numpy grids (vectorised, elementwise).
      paths: ``{name: (steps, 2) array of (x, y) iterates}``.
      xlim, ylim: ``(low, high)`` of the window at least shown.
    """
    arrays = {}
    for name, p in paths.items():
        p = np.asarray(p, dtype=float)
        if p.ndim != 2 or p.shape[1] != 2:
            raise ValueError(f"paths[{name!r}] must have shape (steps, 2); got {p.shape}")
        arrays[name] = p
    every = np.concatenate([p for p in arrays.values()]) if arrays else np.zeros((0, 2))
    xlim, ylim = _window(xlim, every[:, 0]), _window(ylim, every[:, 1])
    xs, ys = np.linspace(xlim[0], xlim[1], resolution), np.linspace(ylim[0], ylim[1], resolution)
    GX, GY = np.meshgrid(xs, ys)
    Z = np.asarray(f(GX, GY), dtype=float)
    finite = Z[np.isfinite(Z)]
    fig = Figure(figsize=(7.2, 5.0))
    ax = fig.add_subplot()
    if finite.size and finite.max() > finite.min():
        span = finite.max() - finite.min()
        lv = finite.min() + np.concatenate([[0.0], np.geomspace(span * 1e-4, span, levels)])
        filled = ax.contourf(GX, GY, np.where(np.isfinite(Z), Z, np.nan), levels=lv, cmap="Blues_r",
                             zorder=0)
        ax.contour(GX, GY, Z, levels=lv, colors="k", linewidths=0.3, alpha=0.5, zorder=1)
        bar = fig.colorbar(filled, ax=ax, format="%.3g")
        bar.set_label("$f(x, y)$ (levels spaced geometrically above its minimum)")
    styles, markers = ("-", "--", "-.", ":", (0, (5, 1, 1, 1))), ("o", "s", "^", "D", "v", "P")
    order = sorted(arrays, key=lambda n: -len(arrays[n]))        # longest first, lowest
    colours = {name: _CLASS_COLOURS[i % len(_CLASS_COLOURS)] for i, name in enumerate(arrays)}
    for rank, name in enumerate(order):
        p, colour, z = arrays[name], colours[name], 2 + rank
        ax.plot(p[:, 0], p[:, 1], color=colour, ls=styles[rank % len(styles)],
                lw=max(3.2 - 0.55 * rank, 0.9), marker=markers[rank % len(markers)], ms=5,
                markevery=max(1, len(p) // 12), mec="k", mew=0.4, zorder=z,
                label=f"{name} ({len(p) - 1} steps)")
        ok = np.flatnonzero(np.isfinite(p).all(axis=1))
        if ok.size:
            ax.plot(*p[ok[0]], "o", color=colour, ms=8, mec="k", zorder=20)
            ax.plot(*p[ok[-1]], "*", color=colour, ms=13, mec="k", zorder=21)
    ax.set(xlim=xlim, ylim=ylim, xlabel="$x$", ylabel="$y$",
           title=title + "  (o start, * end)")
    if arrays:
        handles, labels = ax.get_legend_handles_labels()
        index = {label: i for i, label in enumerate(labels)}
        keep = [index[f"{n} ({len(arrays[n]) - 1} steps)"] for n in arrays]   # in the given order
        ax.legend([handles[i] for i in keep], [labels[i] for i in keep], fontsize="small",
                  framealpha=0.9).set_zorder(30)
    return _finish(fig, path)


def gradient_norms(norms, path=None, title: str = "Gradient norm per layer",
                   xlabel: str = "epoch") -> Figure:
    """Per-layer gradient norms over training, log-scaled.

    Args:
      norms: ``{layer_name: norms (epochs,)}`` or a (layers, epochs) array
        (named "layer 1", "layer 2", ...).
    """
    series = _series(norms, "layer")
    fig = Figure(figsize=(6.4, 4.2))
    ax = fig.add_subplot()
    for name, v in series.items():
        ax.plot(np.arange(v.size), np.where(np.isfinite(v) & (v > 0), v, np.nan), label=name)
    ax.set_yscale("log")
    ax.set(xlabel=xlabel, ylabel="gradient norm (log scale)", title=title)
    ax.grid(True, alpha=0.3)
    if series:
        ax.legend(fontsize="small")
    return _finish(fig, path)


def fitted_vs_actual(t, actual, fitted, labels: Sequence[str], path=None, forecast=None,
                     title: str = "Fitted vs actual", xlabel: str = "sample") -> Figure:
    """One panel per output series: actual as markers, fitted as a line.

    Args:
      t: (n,) positions of the samples on the x axis.
      actual, fitted: (k, n) series, one row per output.
      labels: k series names (panel y labels).
      forecast: optional ``(t_forecast (f,), values (k, f))`` drawn as stars.
    """
    t = np.asarray(t, dtype=float)
    actual, fitted = np.atleast_2d(np.asarray(actual, float)), np.atleast_2d(np.asarray(fitted, float))
    if actual.shape != fitted.shape or actual.shape[1] != t.size:
        raise ValueError(f"actual and fitted must have shape (k, {t.size}) to match t; got "
                         f"{actual.shape} and {fitted.shape}")
    if len(labels) != actual.shape[0]:
        raise ValueError(f"labels must name the {actual.shape[0]} series; got {len(labels)}")
    k = actual.shape[0]
    fig = Figure(figsize=(6.4, 2.4 * k + 0.6))
    axes = fig.subplots(k, 1, sharex=True, squeeze=False)[:, 0]
    for i, ax in enumerate(axes):
        ax.plot(t, actual[i], "o", ms=4, color="tab:blue", label="actual")
        ax.plot(t, fitted[i], "-", color="tab:red", label="fitted")
        if forecast is not None:
            tf, vf = np.asarray(forecast[0], float), np.atleast_2d(np.asarray(forecast[1], float))
            ax.plot(tf, vf[i], "*", ms=11, color="tab:green", mec="k", label="forecast")
        ax.set_ylabel(labels[i])
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="small", loc="upper left")
    axes[0].set_title(title)
    axes[-1].set_xlabel(xlabel)
    fig.tight_layout()
    return _finish(fig, path)


def filters(W, path=None, title: str = "Learned filters", ncols: Optional[int] = None,
            cmap: str = "gray") -> Figure:
    """A grid of filters as images, each scaled to its own symmetric range.

    Args:
      W: (n_filters, h, w), or (n_filters, 1, h, w) as a one-channel conv kernel.
      ncols: columns of the grid; default about sqrt(n_filters).
    """
    W = np.asarray(W, dtype=float)
    if W.ndim == 4 and W.shape[1] == 1:
        W = W[:, 0]
    if W.ndim != 3:
        raise ValueError(f"W must have shape (n_filters, h, w) or (n_filters, 1, h, w); "
                         f"got {W.shape}")
    n = W.shape[0]
    ncols = ncols or int(np.ceil(np.sqrt(n)))
    nrows = int(np.ceil(n / ncols))
    fig = Figure(figsize=(1.3 * ncols + 0.4, 1.3 * nrows + 0.6))
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for i, ax in enumerate(axes.ravel()):
        ax.set_xticks([])
        ax.set_yticks([])
        if i >= n:
            ax.axis("off")
            continue
        vmax = np.abs(W[i]).max() or 1.0
        ax.imshow(W[i], cmap=cmap, vmin=-vmax, vmax=vmax, interpolation="nearest")
        ax.set_title(f"{i + 1}", fontsize="small")
    fig.suptitle(f"{title} ({n} x {W.shape[1]}x{W.shape[2]})")
    return _finish(fig, path)


def lr_range(found, path=None, title: str = "Learning-rate range test") -> Figure:
    """The loss of `fgd.lr_find` against the rate (log-log), the suggested
    rate marked; ``found`` has ``.lrs``, ``.losses``, ``.suggestion``."""
    lrs, losses = np.asarray(found.lrs, float), np.asarray(found.losses, float)
    fig = Figure(figsize=(5.5, 3.8))
    ax = fig.add_subplot()
    ok = np.isfinite(losses) & (losses > 0)
    ax.loglog(lrs[ok], losses[ok], color="tab:blue", label="loss at the step's start")
    if np.isfinite(found.suggestion):
        ax.axvline(found.suggestion, color="tab:red", ls="--",
                   label=f"suggestion {found.suggestion:.3g} (steepest fall)")
    if (~ok).any():
        ax.axvline(lrs[~ok][0], color="0.5", ls=":", label=f"stopped at {lrs[~ok][0]:.3g}")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.legend(fontsize=8)
    return _finish(fig, path)


def per_layer(series: Mapping[str, np.ndarray], columns: Sequence[str], path=None,
              title: str = "Per layer", ylabel: str = "", log: bool = False,
              ylim=None) -> Figure:
    """One panel per run (three to a row), one line per layer: ``series[run]``
    is an (epochs, layers) history entry such as ``history["layer_grad_norm"]``
    (NaN rows, from ``diagnostics_every``, are skipped); ``ylim`` shares one range."""
    ncols = min(3, len(series))
    nrows = -(-len(series) // ncols)
    fig = Figure(figsize=(4.2 * ncols, 3.0 * nrows + 0.6), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax in axes[len(series):]:
        ax.set_visible(False)
    for ax, (name, rows) in zip(axes, series.items()):
        rows = np.asarray(rows, float)
        epochs = np.arange(rows.shape[0])
        keep = ~np.all(np.isnan(rows), axis=1)
        for j in range(rows.shape[1]):
            ax.plot(epochs[keep], rows[keep, j], label=columns[j] if j < len(columns) else str(j))
        if log:
            ax.set_yscale("log")
        if ylim is not None:
            ax.set_ylim(*ylim)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
    axes[0].legend(fontsize=7)
    fig.suptitle(title)
    return _finish(fig, path)
