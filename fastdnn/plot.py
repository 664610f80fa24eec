"""Pictures of training (matplotlib, the ``plot`` extra): the cost curve and 2-D decision boundaries.

Each function returns a ``matplotlib.figure.Figure`` built with the object-oriented API: no backend
is switched and pyplot keeps no reference to it, so a notebook shows the returned figure inline and
a script can save it anywhere; with ``path`` it is written as PNG (through the Agg canvas, which
needs no display)."""
import numpy as np


def _figure(figsize):
    """A new Figure on its own Agg canvas (matplotlib's global backend left as it is)."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise ImportError("fastdnn.plot needs matplotlib: pip install 'fastdnn[plot]'") from exc
    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path):
    if path is not None:
        fig.savefig(path, dpi=110, bbox_inches="tight")
    return fig


def cost_curve(history, path=None, title=None):
    """J per iteration or epoch (log scale), with the validation cost when recorded; saved as PNG
    when ``path`` is given. Returns the matplotlib Figure."""
    fig = _figure((6, 4))
    ax = fig.add_subplot()
    ax.plot(history.iterations, history.costs, label="training cost")
    if any(v is not None for v in history.val_costs):
        ax.plot(history.iterations, history.val_costs, label="validation cost")
    if history.best is not None:
        ax.axvline(history.best.iteration, color="gray", linestyle=":", label="best (kept)")
    ax.set_xlabel(f"{history.unit}s")
    ax.set_ylabel("cost J")
    ax.set_yscale("log")
    ax.set_title(title or "cost")
    ax.legend()
    ax.grid(alpha=0.3)
    return _save(fig, path)


def decision_boundary(net, X, Y, path=None, title=None, resolution=300):
    """The network's predicted class over the plane of 2-D inputs X (2, m), with the examples colored
    by Y (class ids (1, m) or (m,)); saved as PNG when ``path`` is given. Returns the Figure."""
    if X.shape[0] != 2:
        raise ValueError(f"decision_boundary needs 2-D inputs X (2, m); got X of shape {X.shape}")
    pad = 0.1 * (X.max(axis=1) - X.min(axis=1)) + 1e-9
    lo, hi = X.min(axis=1) - pad, X.max(axis=1) + pad
    xx, yy = np.meshgrid(np.linspace(lo[0], hi[0], resolution), np.linspace(lo[1], hi[1], resolution))
    grid = np.vstack([xx.ravel(), yy.ravel()])
    classes = net.predict(grid)
    classes = np.asarray(classes if isinstance(classes, np.ndarray) else net.backend.to_numpy(classes))
    fig = _figure((5, 5))
    ax = fig.add_subplot()
    ax.contourf(xx, yy, classes[0].reshape(xx.shape), alpha=0.35, cmap="Spectral")
    ax.scatter(X[0], X[1], c=np.asarray(Y).reshape(-1), s=12, cmap="Spectral", edgecolors="k", linewidths=0.3)
    ax.set_title(title or f"decision boundary, accuracy {100 * net.accuracy(X, Y):.1f} %")
    return _save(fig, path)
