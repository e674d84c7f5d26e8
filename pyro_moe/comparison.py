"""CAVI and SVI side by side on the same model, data and priors.

:func:`compare` runs :func:`pyro_moe.fit` with both methods, aligns the experts of the SVI
fit to those of the CAVI fit (the permutation pi minimising sum_k ||m_k^CAVI - m_pi(k)^SVI||^2,
Hungarian algorithm, :func:`scipy.optimize.linear_sum_assignment`) and tabulates:
final objective F of each, |dF| = |F_SVI - F_CAVI| and |dF| / |F_CAVI|, the largest
distance between aligned posterior means max_k ||m_k^CAVI - m_pi(k)^SVI||, circles of each
(shape data), iterations, wall time, and the time to reach within 0.1 % of its own final
objective: the first t with |F(t) - F_final| <= 1e-3 max(|F_final|, 1), with F(t) the
recorded objective for CAVI and its 50-step rolling mean for SVI (a single SVI step is a
one-draw Monte Carlo estimate).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import InputError
from .fitting import fit
from .result import FitResult
from .result import expert_alignment as align
from .shapes.geometry import Geometry


def _circle_design(r) -> bool:
    """Whether ``r`` is a curve fit (:class:`pyro_moe.curves.CurveFit`) of circles."""
    geometry = getattr(r, "geometry", None)
    return geometry is not None and geometry.design == "circle"


ROLLING = 50


def time_to_within(result: FitResult, rel: float = 1e-3, *, rolling: int | None = None) -> float:
    """Seconds until the objective is first within ``rel`` of its own final value.

    Uses the recorded objective (CAVI) or its ``rolling``-step trailing mean (SVI, default
    50 steps; the last history entry, the exact final objective, is the target). Returns
    the time of the first entry with |F(t) - F_final| <= rel * max(|F_final|, 1).
    """
    F = result.objective_history.detach().cpu().numpy().astype(float)
    t = result.time_history.detach().cpu().numpy().astype(float)
    final = F[-1]
    if rolling is None:  # a noisy per-step objective: Adam, or natural SVI on minibatches
        summary = result.restarts[0] if result.restarts else {}
        exact = summary.get("optimizer") == "natural" and summary.get("stop_se") == 0.0
        rolling = ROLLING if result.method == "svi" and not exact else 1
    if rolling > 1 and len(F) > 1:
        steps = F[:-1]
        c = np.cumsum(np.insert(steps, 0, 0.0))
        w = np.minimum(np.arange(1, len(steps) + 1), rolling)
        smooth = (c[1:] - c[np.arange(1, len(steps) + 1) - w]) / w
        F = np.append(smooth, final)
    close = np.abs(F - final) <= rel * max(abs(final), 1.0)
    return float(t[int(np.argmax(close))])


@dataclass
class Comparison:
    """Both fits, the expert alignment (SVI expert ``perm[k]`` is CAVI expert k) and summaries."""

    cavi: FitResult
    svi: FitResult
    perm: list[int]
    objective_gap: float  # |F_SVI - F_CAVI|
    relative_gap: float  # |F_SVI - F_CAVI| / max(|F_CAVI|, 1)
    max_mean_distance: float  # max_k ||m_k^CAVI - m_perm(k)^SVI||
    extras: dict[str, Any] = field(default_factory=dict)
    adam: FitResult | None = None  # plain Adam SVI beside them (compare(..., adam=True))
    adam_perm: list[int] | None = None

    def rows(self) -> list[tuple[str, FitResult]]:
        out = [("cavi", self.cavi), ("svi", self.svi)]
        return out + ([("svi_adam", self.adam)] if self.adam is not None else [])

    def _perm(self, name: str) -> list[int]:
        return self.adam_perm if name == "svi_adam" else self.perm  # type: ignore[return-value]

    def _gaps(self, name: str, r: FitResult) -> tuple[float, float, float]:
        if name == "cavi":
            return 0.0, 0.0, 0.0
        if name == "svi":
            return self.objective_gap, self.relative_gap, self.max_mean_distance
        gap = abs(r.objective - self.cavi.objective)
        dist = (self.cavi.mean - r.mean[self._perm(name)]).norm(dim=-1).max()
        return gap, gap / max(abs(self.cavi.objective), 1.0), float(dist)

    def table(self) -> list[dict[str, Any]]:
        """One row per method: objective, gaps, mean distance, steps, times, circles."""
        out = []
        for name, r in self.rows():
            abs_gap, rel_gap, mean_distance = self._gaps(name, r)
            row: dict[str, Any] = {
                "method": name,
                "objective": r.objective,
                "abs_gap": abs_gap,
                "rel_gap": rel_gap,
                "max_mean_distance": mean_distance,
                "iterations": r.iterations,
                "converged": r.converged,
                "wall_time_s": r.wall_time,
                "time_to_0.1%_s": time_to_within(r),
            }
            if _circle_design(r):
                circles = r.circles()
                if name != "cavi":
                    circles = [circles[j] for j in self._perm(name)]
                row["circles"] = [(round(c.x0, 6), round(c.y0, 6), round(c.r, 6)) for c in circles]
            out.append(row)
        return out

    def to_markdown(self) -> str:
        rows = self.table()
        keys = list(rows[0])
        for row in rows[1:]:
            keys += [k for k in row if k not in keys]
        lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
        for row in rows:
            lines.append("| " + " | ".join(_fmt(row.get(k, "")) for k in keys) + " |")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.to_markdown()

    def plot(self, path=None):
        """Left: objective vs wall time (log x); right: fitted curves (circles) or predictions.

        Returns the matplotlib figure; saves it to ``path`` when given. Never calls show().
        """
        import matplotlib.pyplot as plt

        fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5))
        for name, r in self.rows():
            t = r.time_history.cpu().numpy()
            F = r.objective_history.cpu().numpy()
            left.plot(np.maximum(t, 1e-6), F, label=f"{name.upper()} (final {r.objective:.4g})")
        left.set_xscale("log")
        left.set_xlabel("wall time (s)")
        left.set_ylabel("objective F (nats)")
        lo = min(r.objective for _, r in self.rows())
        span = max(abs(lo) * 0.05, 10.0)
        left.set_ylim(lo - span, max(r.objective for _, r in self.rows()) + span / 5)
        left.legend()
        if _circle_design(self.cavi):
            pts = self.cavi.pixel_points()
            right.scatter(pts[:, 0], pts[:, 1], s=4, c="0.6", label="data")
            phi = np.linspace(0, 2 * np.pi, 200)
            for (name, r), style in zip(self.rows(), ("-", "--", ":"), strict=False):
                for k, c in enumerate(r.circles()):
                    if c.valid:
                        right.plot(
                            c.x0 + c.r * np.cos(phi),
                            c.y0 + c.r * np.sin(phi),
                            style,
                            label=name.upper() if k == 0 else None,
                        )
            right.set_aspect("equal")
            right.invert_yaxis()
        else:
            idx = np.arange(len(self.cavi.y))
            right.scatter(idx, self.cavi.y.cpu().numpy(), s=4, c="0.6", label="y")
            for name, r in self.rows():
                right.plot(idx, r.predict(r.X).mean.cpu().numpy(), label=f"{name.upper()} mean")
            right.set_xlabel("index i")
        right.legend()
        fig.tight_layout()
        if path is not None:
            fig.savefig(path, dpi=120)
        return fig


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


def compare(
    model,
    X,
    y,
    *,
    experts: int = 2,
    geometry: Geometry | None = None,
    svi_options: dict | None = None,
    cavi_options: dict | None = None,
    seed: int = 0,
    adam: bool = False,
    **common,
) -> Comparison:
    """Fit ``model`` by CAVI and by SVI with the same data, priors and ``common`` options.

    ``cavi_options`` / ``svi_options`` are extra keyword arguments of :func:`pyro_moe.fit`
    for one method only (e.g. ``{"batch_size": 1000}`` for SVI). ``method="svi"`` is
    natural-gradient SVI (its default optimizer); ``adam=True`` adds plain Adam SVI
    (``optimizer="adam"``, the same ``svi_options``) as a third row. ``geometry``: the
    curve geometry of a curve design (:func:`compare_circles`): ``prior_units="unit"``
    is then the default and each fit is a :class:`~pyro_moe.curves.CurveFit`.
    """
    for name in ("method",):
        if name in common:
            raise InputError(f"compare runs both methods; do not pass {name!r}")
    kw = dict(experts=experts, seed=seed, **common)
    if geometry is not None:
        from .curves.result import CurveFit

        kw.setdefault("prior_units", "unit")

        def run(**options):
            return CurveFit(fit(model, X, y, **options), geometry)
    else:

        def run(**options):
            return fit(model, X, y, **options)

    cavi = run(method="cavi", **copy.deepcopy(kw), **(cavi_options or {}))
    svi = run(method="svi", **copy.deepcopy(kw), **(svi_options or {}))
    perm = align(cavi.mean, svi.mean)
    gap = abs(svi.objective - cavi.objective)
    dist = (cavi.mean - svi.mean[perm]).norm(dim=-1).max()
    adam_fit = adam_perm = None
    if adam:
        extra = {**(svi_options or {}), "optimizer": "adam"}
        adam_fit = run(method="svi", **copy.deepcopy(kw), **extra)
        adam_perm = align(cavi.mean, adam_fit.mean)
    return Comparison(
        adam=adam_fit,
        adam_perm=adam_perm,
        cavi=cavi,
        svi=svi,
        perm=perm,
        objective_gap=gap,
        relative_gap=gap / max(abs(cavi.objective), 1.0),
        max_mean_distance=float(dist),
    )


def compare_circles(
    source,
    *,
    experts: int = 2,
    model="mixture_of_models",
    max_points: int | None = None,
    seed: int = 0,
    **options,
) -> Comparison:
    """:func:`compare` on circles from points or an image (standardized circle design)."""
    from .curves.fitting import curve_data
    from .model_file import load_model

    model = load_model(model)
    data = curve_data(source, experts, model=model, max_points=max_points, seed=seed)
    return compare(
        model, data.X, data.y, experts=experts, geometry=data.geometry, seed=seed, **options
    )
