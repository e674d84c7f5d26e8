"""Matplotlib figures of fits: data and curves, objective curves, parameter trajectories and
the gate's weights over the input space.

Every function returns the :class:`matplotlib.figure.Figure` and never calls ``show()``,
so it works under the Agg backend. Curve fits (:class:`pyro_moe.curves.CurveFit`, from
:func:`pyro_moe.fit_circles` / :func:`pyro_moe.fit_conics`) are drawn in pixel units with
the image convention: x = column, y = row, y axis pointing down.
(ArviZ posterior and forest plots are in :mod:`pyro_moe.diagnostics`.)
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure

from .errors import ConvergenceWarning, InputError
from .fitting import fit
from .result import FitResult
from .shapes.curves import Circle, Conic, Line, circle_parameters
from .shapes.geometry import Geometry, monomials

__all__ = [
    "DEFAULT_ITERATIONS",
    "ParameterTrace",
    "data_points",
    "plot_fit",
    "plot_gate_map",
    "plot_objective",
    "plot_trajectories",
    "trace_parameters",
]

DEFAULT_ITERATIONS = (1, 2, 3, 5, 8, 13, 20, 30, 50)


def _np(t: Any) -> np.ndarray:
    return t.detach().cpu().numpy() if torch.is_tensor(t) else np.asarray(t)


def _new_axes(ax: Axes | None, figsize=(5.5, 5.0)) -> tuple[Figure, Axes]:
    if ax is not None:
        return ax.get_figure(), ax
    fig, ax = plt.subplots(figsize=figsize)
    return fig, ax


def _geometry(result) -> Geometry | None:
    """The curve geometry of a curve fit (:class:`pyro_moe.curves.CurveFit`), else None."""
    return getattr(result, "geometry", None)


def _design(result: FitResult) -> str | None:
    return _geometry(result).design if _geometry(result) is not None else None


def data_points(result: FitResult) -> np.ndarray:
    """The fitted points (N, 2) in pixel units, recovered from the design of a shape fit
    (circle: X = [x, y, 1]; conic: X = [xy, y^2, x, y, 1], in standardized units)."""
    return result.pixel_points()


def _point_colors(result: FitResult) -> np.ndarray:
    r = _np(result.responsibilities).astype(float)
    k = r.argmax(1)
    colors = np.array([to_rgba(f"C{j % 10}") for j in k])
    colors[:, 3] = 0.15 + 0.85 * np.clip(r.max(1), 0.0, 1.0)
    return colors


def _mask(outliers: Any, n: int) -> np.ndarray | None:
    if outliers is None:
        return None
    arr = np.asarray(outliers)
    if arr.dtype == bool:
        if arr.shape != (n,):
            raise InputError(f"outliers mask must have shape ({n},), got {arr.shape}")
        return arr
    mask = np.zeros(n, dtype=bool)
    mask[arr.astype(int)] = True
    return mask


def plot_fit(
    result: FitResult, ax: Axes | None = None, outliers: Any = None, *, title: str | None = None
) -> Figure:
    """The data coloured by responsibility (colour: argmax_k r_ik; opacity: max_k r_ik) and
    the fitted curves, one colour per expert.

    Shape fits are drawn in pixel units, y axis inverted (image convention), with the
    circles (``result.circles()``) or conics (``result.conics()``, as the zero level set
    of their polynomial). Other fits show y against the first non-constant column of X
    with each expert's posterior mean line m_k^T x.

    Args:
        result: the fit.
        ax: axes to draw on (a new figure when None).
        outliers: boolean mask (N,) or indices of points to mark with black crosses
            (e.g. the true outliers of a synthetic data set).
        title: axes title (default: method, model and K).
    """
    fig, ax = _new_axes(ax)
    design = _design(result)
    colors = _point_colors(result)
    K = result.experts
    mask = _mask(outliers, len(result.y))
    if design is not None:
        pts = data_points(result)
        ax.scatter(pts[:, 0], pts[:, 1], s=8, c=colors, linewidths=0)
        if mask is not None and mask.any():
            ax.scatter(*pts[mask].T, s=14, marker="x", c="k", linewidths=0.8, label="outliers")
        lo, hi = pts.min(0), pts.max(0)
        pad = 0.1 * (hi - lo).max() + 1e-9
        xlim, ylim = (lo[0] - pad, hi[0] + pad), (lo[1] - pad, hi[1] + pad)
        draw_curves(ax, result, xlim, ylim)
        ax.set_xlim(*xlim)
        ax.set_ylim(ylim[1], ylim[0])  # image convention: y down
        ax.set_aspect("equal")
        ax.set_xlabel("x (column, px)")
        ax.set_ylabel("y (row, px)")
    else:
        X, y = _np(result.X).astype(float), _np(result.y).astype(float)
        varying = [j for j in range(X.shape[1]) if np.ptp(X[:, j]) > 0]
        j = varying[0] if varying else 0
        ax.scatter(X[:, j], y, s=8, c=colors, linewidths=0)
        if mask is not None and mask.any():
            ax.scatter(X[mask, j], y[mask], s=14, marker="x", c="k", linewidths=0.8)
        order = np.argsort(X[:, j])
        mu = X[order] @ _np(result.mean).T
        for k in range(K):
            ax.plot(X[order, j], mu[:, k], color=f"C{k % 10}", lw=1.2, label=f"expert {k}")
        ax.set_xlabel(f"x[{j}]")
        ax.set_ylabel("y")
    ax.legend(fontsize=7, loc="best")
    ax.set_title(title or f"{result.method.upper()} {result.model_name}, K={K}")
    return fig


def draw_curves(ax: Axes, result: FitResult, xlim, ylim, *, labels: bool = True) -> None:
    """Each expert of a shape fit as its own kind of curve (``result.curves()``), in pixel
    units, one colour per expert: circles (centre marked), conics as the zero level set of
    their polynomial on a grid over xlim x ylim, lines x = a y + c across ylim."""
    gx, gy = np.meshgrid(np.linspace(*xlim, 300), np.linspace(*ylim, 300))
    grid = np.column_stack([gx.ravel(), gy.ravel()])
    phi = np.linspace(0.0, 2 * np.pi, 361)
    for k, c in enumerate(result.curves()):
        color = f"C{k % 10}"
        if isinstance(c, Circle):
            label = f"expert {k}: ({c.x0:.3g}, {c.y0:.3g}), r={c.r:.3g}"
            ax.plot([c.x0], [c.y0], marker="+", color=color, ms=8)
            if c.valid:
                x, y = c.x0 + c.r * np.cos(phi), c.y0 + c.r * np.sin(phi)
                ax.plot(x, y, color=color, lw=1.5, label=label if labels else None)
                continue
        elif isinstance(c, Conic):
            label = f"expert {k}: {c.kind}"
            values = c.evaluate(grid).reshape(gx.shape)
            if c.kind != "degenerate" and values.min() < 0 < values.max():
                ax.contour(gx, gy, values, levels=[0.0], colors=color, linewidths=1.5)
        elif isinstance(c, Line):
            label = f"expert {k}: x = {c.a:.3g} y + {c.c:.3g}"
            ys = np.linspace(*ylim, 2)
            ax.plot(c.a * ys + c.c, ys, color=color, lw=1.5)
        else:
            label = f"expert {k}: weights only"
        if labels:
            ax.plot([], [], color=color, label=label)


def plot_objective(
    results: Mapping[str, FitResult] | FitResult, x: str = "both", *, ylim_nats: float | None = None
) -> Figure:
    """Objective F (total nats) against iteration and/or wall time (log x) for several fits.

    Args:
        results: name -> FitResult (e.g. ``{"CAVI": cavi, "SVI": svi}``) or one result.
        x: ``"iteration"``, ``"time"`` or ``"both"`` (two panels).
        ylim_nats: show F down to this many nats below the lowest final objective
            (default max(5 % of it, 10 nats)); early SVI steps are far below.
    """
    if not isinstance(results, Mapping):  # one result (a FitResult or a CurveFit)
        results = {results.method.upper(): results}
    if not results:
        raise InputError("no results to plot")
    kinds = {"iteration": ["iteration"], "time": ["time"], "both": ["iteration", "time"]}
    if x not in kinds:
        raise InputError(f"x must be 'iteration', 'time' or 'both', got {x!r}")
    panels = kinds[x]
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.0), squeeze=False)
    finals = [r.objective for r in results.values()]
    span = ylim_nats if ylim_nats is not None else max(0.05 * abs(min(finals)), 10.0)
    for ax, kind in zip(axes[0], panels, strict=True):
        for name, r in results.items():
            F = _np(r.objective_history).astype(float)
            if kind == "iteration":
                ax.plot(np.arange(1, len(F) + 1), F, label=f"{name} (final {r.objective:.5g})")
            else:
                t = np.maximum(_np(r.time_history).astype(float), 1e-6)
                ax.plot(t[: len(F)], F[: len(t)], label=name)
        ax.set_xscale("log")
        ax.set_xlabel("iteration / step" if kind == "iteration" else "wall time (s)")
        ax.set_ylabel("objective F (nats)")
        ax.set_ylim(min(finals) - span, max(finals) + 0.2 * span)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


@dataclass
class ParameterTrace:
    """Posterior means after ``iterations[t]`` CAVI iterations, from one fixed start.

    ``mean`` (T, K, n); ``objective`` (T,); ``geometry`` of the fit (for circle parameters).
    """

    iterations: np.ndarray
    mean: np.ndarray
    objective: np.ndarray
    geometry: Geometry | None = None

    def circles(self) -> np.ndarray:
        """(T, K, 3) circle parameters (x0, y0, r) in pixel units (r NaN when r^2 < 0)."""
        if self.geometry is None or self.geometry.design != "circle":
            raise InputError("the trace is not of a circle design")
        return circle_parameters(self.mean, self.geometry.standardization)


def trace_parameters(
    model: Any,
    X: Any,
    y: Any,
    iterations: Sequence[int] = DEFAULT_ITERATIONS,
    **fit_kwargs: Any,
) -> ParameterTrace:
    """Parameter trajectories of CAVI by RE-RUNNING it: one :func:`pyro_moe.fit` per entry
    of ``iterations`` with ``n_init=1`` and ``max_iter=t``.

    :class:`~pyro_moe.result.FitResult` keeps only the final parameters, so the trajectory
    is rebuilt from fits that all start from the same point: the same ``seed`` and ``init``
    (or the same ``responsibilities``) make CAVI deterministic, so the fit stopped after t
    iterations is iteration t of the full run. Cost: sum(iterations) CAVI iterations, hence
    a short geometric grid by default (1, 2, 3, 5, 8, ..., 50). Runs stop early once a fit
    converges before its limit (later entries repeat it). The truncated runs' expected
    :class:`~pyro_moe.errors.ConvergenceWarning` is suppressed here, and only here.

    Args:
        model, X, y: as for :func:`pyro_moe.fit`.
        iterations: increasing iteration counts.
        fit_kwargs: other :func:`pyro_moe.fit` arguments (experts, seed, init,
            responsibilities, priors, ...); ``method`` must be "cavi". ``geometry``: the
            curve geometry of a curve design (then ``prior_units="unit"``, as the curve
            functions fit), for the trace's circle parameters.
    """
    its = sorted({int(t) for t in iterations})
    if not its or its[0] < 1:
        raise InputError(f"iterations must be positive integers, got {list(iterations)}")
    if fit_kwargs.get("method", "cavi") != "cavi":
        raise InputError("trace_parameters re-runs CAVI; method must be 'cavi'")
    fit_kwargs = {**fit_kwargs, "n_init": 1, "method": "cavi"}
    geometry = fit_kwargs.pop("geometry", None)
    if geometry is not None:
        fit_kwargs.setdefault("prior_units", "unit")
    means, objectives, done = [], [], None
    for t in its:
        if done is None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                res = fit(model, X, y, max_iter=t, **fit_kwargs)
            if res.converged:
                done = res
        else:
            res = done
        means.append(_np(res.mean).astype(float))
        objectives.append(res.objective)
    return ParameterTrace(np.array(its), np.stack(means), np.array(objectives), geometry)


def plot_trajectories(trace: ParameterTrace, *, names: Sequence[str] | None = None) -> Figure:
    """Each parameter of each expert against the iteration (log x), one panel per parameter:
    x0, y0, r in pixels for circle designs, else the weights w_j. A last panel shows F."""
    circle = trace.geometry is not None and trace.geometry.design == "circle"
    values = trace.circles() if circle else trace.mean
    n = values.shape[-1]
    labels = list(names) if names is not None else (["x0", "y0", "r"] if circle else None)
    if labels is None:
        labels = [f"w[{j}]" for j in range(n)]
    fig, axes = plt.subplots(1, n + 1, figsize=(3.3 * (n + 1), 3.2), squeeze=False)
    its = trace.iterations
    for j, ax in enumerate(axes[0][:n]):
        for k in range(values.shape[1]):
            ax.plot(its, values[:, k, j], "o-", ms=3, color=f"C{k % 10}", label=f"expert {k}")
        ax.set_xscale("log")
        ax.set_xlabel("iteration")
        ax.set_title(labels[j])
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    last = axes[0][n]
    last.plot(its, trace.objective, "o-", ms=3, color="k")
    last.set_xscale("log")
    last.set_xlabel("iteration")
    last.set_title("objective F (nats)")
    last.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def _grid_design(result: FitResult) -> Callable[[np.ndarray], np.ndarray]:
    if _geometry(result) is not None:  # a curve fit: the design's columns, as monomials
        columns = _geometry(result).columns
        return lambda s: np.column_stack([monomials(s)[c] for c in columns])
    X = _np(result.X)
    if X.shape[1] == 3 and np.ptp(X[:, 2]) == 0:
        return lambda s: np.column_stack([s, np.full(len(s), X[0, 2])])
    raise InputError(
        "plot_gate_map needs a circle/conic design or X = [x1, x2, const]; pass design="
    )


def plot_gate_map(
    result: FitResult,
    extent: Sequence[float] | None = None,
    resolution: int = 100,
    *,
    design: Callable[[np.ndarray], np.ndarray] | None = None,
) -> Figure:
    """The experts' weights g_k(x) over the plane, one map per expert (colour 0..1).

    For shape fits the plane is the image plane in pixels (y down); each grid point is
    standardized and put through the design (circle: X = [x, y, 1]) before the gate. For a
    mixture of models the weights are the constant E_q[pi_k] (flat maps).

    Args:
        result: the fit.
        extent: (xmin, xmax, ymin, ymax) of the map (pixels for shape fits, X's units
            otherwise); default: the data's bounding box, padded by 10 %.
        resolution: grid points per axis.
        design: maps (M, 2) plane points (standardized for shape fits) to rows of X; by
            default from ``result.geometry``, or [x1, x2, c] when X has that form.
    """
    make = design or _grid_design(result)
    shape = _geometry(result) is not None
    st = _geometry(result).standardization if shape else None
    if shape:
        pts = data_points(result)
    else:
        pts = _np(result.X)[:, :2].astype(float)
    if extent is None:
        lo, hi = pts.min(0), pts.max(0)
        pad = 0.1 * (hi - lo).max() + 1e-9
        extent = (lo[0] - pad, hi[0] + pad, lo[1] - pad, hi[1] + pad)
    xmin, xmax, ymin, ymax = (float(v) for v in extent)
    if not (xmax > xmin and ymax > ymin) or int(resolution) < 2:
        raise InputError(f"bad extent {extent} or resolution {resolution}")
    gx, gy = np.meshgrid(np.linspace(xmin, xmax, resolution), np.linspace(ymin, ymax, resolution))
    plane = np.column_stack([gx.ravel(), gy.ravel()])
    s = st.to_standard(plane) if st is not None else plane
    Xg = torch.as_tensor(make(s), dtype=result.X.dtype, device=result.X.device)
    g = _np(result.expert_weights(Xg)).astype(float)
    K = result.experts
    fig, axes = plt.subplots(1, K, figsize=(3.6 * K + 0.8, 3.4), squeeze=False)
    for k, ax in enumerate(axes[0]):
        im = ax.imshow(
            g[:, k].reshape(gx.shape),
            extent=(xmin, xmax, ymax, ymin) if shape else (xmin, xmax, ymin, ymax),
            origin="upper" if shape else "lower",
            vmin=0.0,
            vmax=1.0,
            cmap="viridis",
            aspect="equal" if shape else "auto",
        )
        ax.scatter(pts[:, 0], pts[:, 1], s=2, c="w", alpha=0.5, linewidths=0)
        kind = "gate g_k(x)" if result.gate_state is not None else "constant E[pi_k]"
        ax.set_title(f"expert {k}: {kind}", fontsize=9)
        ax.set_xlim(xmin, xmax)
        if shape:
            ax.set_ylim(ymax, ymin)
        else:
            ax.set_ylim(ymin, ymax)
    fig.colorbar(im, ax=list(axes[0]), shrink=0.85, label="weight")
    return fig
