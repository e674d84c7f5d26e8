"""A curve fit: the core :class:`~pyro_moe.result.FitResult` and the curve geometry.

The core result knows weights, not curves. :class:`CurveFit` holds it (``.result``) with
the :class:`~pyro_moe.shapes.geometry.Geometry` that reads each expert's weights as its
kind of curve in pixel units: :meth:`CurveFit.curves`, :meth:`~CurveFit.circles`,
:meth:`~CurveFit.conics`, :attr:`~CurveFit.expert_kinds`, :meth:`~CurveFit.pixel_points`.

Delegation: every other attribute reads the core result's (``fit.mean``,
``fit.objective``, ``fit.responsibilities``, ``fit.predict(X)``, ``fit.summary()``, ...),
so a curve fit reads like the result it holds; the core result itself is ``fit.result``.

Geometric refinement (:meth:`CurveFit.refined`): the circle regression of
t = x^2 + y^2 on [x, y, 1] (Kasa's algebraic fit) weighs a point by about (|p - c| + r)^2
and is biased on short noisy arcs (measured on 150 seeds of the "two sparse jittered
arcs" scenes: 9 scenes with a circle off by more than 2 px; the geometric fit of the same
points with the same responsibilities 7, the geometric fit of the true points 6). The
curve functions (:func:`pyro_moe.fit_curves`, :func:`pyro_moe.select_curves`) report
each circle expert as the weighted geometric least-squares circle of its points, the
responsibilities r_ik the weights (:func:`pyro_moe.shapes.curves.geometric_circles`),
started from the posterior mean's circle; its covariance is that fit's Laplace
approximation (``circle_uncertainty`` reads it). The core result (``fit.mean``,
``fit.cov``) is the model's posterior, unchanged; a CurveFit built from a core result
(the study) reports the posterior mean's circles.

Saved as the core result's ``.npz`` (:meth:`pyro_moe.result.FitResult.save`) plus the
geometry as the metadata key ``geometry`` (and the refined circles as ``refined``); :meth:`CurveFit.load` reads it back (and the
geometry an older version kept in the core's ``meta``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..result import FitResult, expert_alignment, read_metadata
from ..shapes.curves import (
    Circle,
    circle_parameters,
    conic_from_weights,
    conic_to_pixels,
    geometric_circles,
)
from ..shapes.geometry import Geometry

__all__ = ["CurveFit", "load_fit"]

#: the metadata key of the geometry in a saved result
GEOMETRY_KEY = "geometry"
#: the metadata key of the refined circles in a saved result
REFINED_KEY = "refined"
#: A refined circle replaces the posterior mean's only while it stays within this share
#: of the radius of it (|dc| + |dr|): the geometric fit polishes a circle, it does not move
#: an expert that holds a band of clutter somewhere else. On a short noisy arc the
#: algebraic circle is far off: measured on a 120-degree arc of r = 30 px, jitter 1.5 px,
#: 60 points, shifts up to 0.51 r (``tests/test_uncertainty.py``).
MAX_REFINE_SHIFT = 1.0

_CONIC_VARS = ("xc", "yc", "semi_major", "semi_minor", "angle")


def _np(t) -> np.ndarray:
    return t.detach().cpu().numpy() if hasattr(t, "detach") else np.asarray(t)


@dataclass(eq=False)
class CurveFit:
    """A fit of curves: the core result and the geometry of its experts.

    Attributes:
        result: the core :class:`~pyro_moe.result.FitResult` (weights in standard units).
        geometry: how the design and weights map back to the picture.
        subsample_fit: the in-memory fit of a subsample that started a fit of distributed
            points (:mod:`pyro_moe.curves.distributed`), else None.
        refinement: the geometric refinement of the circle experts (:meth:`refined`): a
            pair (circles (K, 3) of (x0, y0, r) in pixels, covariances (K, 3, 3)), NaN
            rows for the experts reported from the posterior mean; None: none refined.

    Any other attribute is the core result's (see the module docstring).
    """

    result: FitResult
    geometry: Geometry
    subsample_fit: CurveFit | None = field(default=None, repr=False)
    refinement: tuple[np.ndarray, np.ndarray] | None = field(default=None, repr=False)

    def __getattr__(self, name: str) -> Any:
        # called only for names a CurveFit lacks: read the core result's
        if name.startswith("__") or name in ("result", "geometry", "subsample_fit", "refinement"):
            raise AttributeError(name)
        return getattr(self.result, name)

    def to_inference_data(self, *, draws: int = 1000, seed: int = 0):
        """This fit as an :class:`arviz.InferenceData` with the curves' parameters (circles'
        ``x0, y0, r``, the conics' coefficients) beside the weights: the one writer,
        :func:`pyro_moe.inference_data.to_inference_data`, given the curve fit (the core
        result's method would see only the weights)."""
        from ..inference_data import to_inference_data  # arviz: imported on first use

        return to_inference_data(self, draws=draws, seed=seed)

    # ---- curves ------------------------------------------------------------------------
    @property
    def shapes(self) -> dict[str, Any]:
        """The geometry as a plain dict (:meth:`Geometry.as_dict`)."""
        return self.geometry.as_dict()

    @property
    def expert_kinds(self) -> list[str | None]:
        """The kind of curve each expert is ("circle", "conic", "line" or None)."""
        return list(self.geometry.kinds)

    def pixel_points(self) -> np.ndarray:
        """The fitted points (N, 2) in pixel units, read back from the design."""
        return self.geometry.pixel_points(_np(self.result.X), _np(self.result.y))

    def curves(self) -> list:
        """Each expert as its own kind of curve, in pixel units, from E_q[w_k]: a Circle for
        a circle expert, a Conic for a conic (ellipse) expert, a Line for a line expert, the
        weights for an expert without a kind (:mod:`pyro_moe.experts`); a circle expert
        refined by :meth:`refined` as its geometric circle."""
        curves = self.geometry.curves(_np(self.result.mean))
        for k in self.refined_experts():
            curves[k] = Circle(*(float(v) for v in self.refinement[0][k]), True)
        return curves

    def refined_experts(self) -> list[int]:
        """The experts reported as their geometric circle (:meth:`refined`)."""
        if self.refinement is None:
            return []
        return [int(k) for k in np.flatnonzero(np.isfinite(self.refinement[0]).all(1))]

    def refined(self) -> CurveFit:
        """This fit with each circle expert refined to the weighted geometric least-squares
        circle of its points, the responsibilities the weights
        (:func:`pyro_moe.shapes.curves.geometric_circles`, started from the posterior
        mean's circle; see the module docstring): :meth:`curves` then reports it, and
        :func:`pyro_moe.circle_uncertainty` its covariance
        $\\hat\\sigma_k^2 (J^\\top R_k J)^{-1}$, the Laplace approximation of the
        posterior of (x0, y0, r) under Gaussian radial noise and a flat prior, the
        responsibilities held fixed (their uncertainty, and that of which points are
        clutter, is not in it). The radius is less its first-order bias
        $\\hat\\sigma_k^2 / (2\\hat r)$ (the geometric fit's, as the Kasa fit's is
        $\\sigma^2/r$; measured on 150 seeds of "jitter 2.5 px, apart 3", 450 circles:
        coverage of r 0.88 without it, z mean +0.73). An expert keeps its posterior mean's circle where that
        circle is no real one, its points weigh less than 4, the fit fails, or it moves
        by more than :data:`MAX_REFINE_SHIFT` of the radius."""
        kinds = self.geometry.kinds
        K = self.result.experts
        ks = [k for k in range(K) if kinds[k] == "circle"]
        out = np.full((K, 3), np.nan)
        cov = np.full((K, 3, 3), np.nan)
        if ks:
            start = circle_parameters(
                _np(self.result.mean)[ks][:, :3], self.geometry.standardization
            )
            R = _np(self.result.responsibilities)[:, ks].astype(np.float64)
            use = np.isfinite(start).all(1)
            start = np.where(use[:, None], start, 1.0)
            theta, c, sigma, ok = geometric_circles(self.pixel_points(), R, start)
            # the geometric radius's first-order bias, E r-hat = r + sigma^2 / (2 r)
            theta[ok, 2] -= sigma[ok] ** 2 / (2.0 * theta[ok, 2])
            shift = np.hypot(*(theta[:, :2] - start[:, :2]).T) + np.abs(theta[:, 2] - start[:, 2])
            ok &= use & (shift <= MAX_REFINE_SHIFT * start[:, 2])
            for i, k in enumerate(ks):
                if ok[i]:
                    out[k], cov[k] = theta[i], c[i]
        return CurveFit(self.result, self.geometry, self.subsample_fit, (out, cov))

    def _curves_of(self, kind: str) -> list:
        kinds = self.expert_kinds
        if set(kinds) != {kind}:
            plural = {"circle": "circles", "conic": "conics"}[kind]
            raise InputError(f"the experts are {kinds}, not all {plural}; use result.curves()")
        return self.curves()

    def circles(self) -> list:
        """One circle per expert, in pixel units (x = column, y = row), from E_q[w_k]."""
        return self._curves_of("circle")

    def conics(self) -> list:
        """One conic per expert, in pixel units, from E_q[w_k]."""
        return self._curves_of("conic")

    # ---- what the diagnostics read (pyro_moe.diagnostics.to_inference_data) ----------
    @property
    def feature_names(self) -> list[str] | None:
        """The design's column names (monomials), for the diagnostics' coordinates."""
        return list(self.geometry.columns)

    def derived_parameters(self, w: np.ndarray) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Draws of weights (..., K, n) read as curve parameters in pixels, by name, and
        attributes: a circle design's (x0, y0, r), a conic design's (xc, yc, semi_major,
        semi_minor, angle)
        (NaN where a draw is no ellipse or hyperbola; ``conic_kind`` counts the kinds)."""
        design, st = self.geometry.design, self.geometry.standardization
        if design == "circle":
            p = circle_parameters(w, st)
            return {"x0": p[..., 0], "y0": p[..., 1], "r": p[..., 2]}, {}
        if design != "conic":
            return {}, {}
        flat = w.reshape(-1, w.shape[-1])
        vals = np.full((len(flat), len(_CONIC_VARS)), np.nan)
        kinds: dict[str, int] = {}
        for i, row in enumerate(flat):
            c = conic_from_weights(row)
            kinds[c.kind] = kinds.get(c.kind, 0) + 1
            if c.kind in ("ellipse", "hyperbola"):
                p = conic_to_pixels(c, st)
                vals[i] = (*p.center, *p.semi_axes, p.angle)
        shape = w.shape[:-1]
        params = {v: vals[:, j].reshape(shape) for j, v in enumerate(_CONIC_VARS)}
        return params, {"conic_kind": ", ".join(f"{k}: {v}" for k, v in sorted(kinds.items()))}

    # ---- relabelling -------------------------------------------------------------------
    def permuted(self, perm: Sequence[int]) -> CurveFit:
        """A copy with the experts reordered (:meth:`FitResult.permuted`), the geometry's
        kinds with them."""
        perm = list(perm)
        ref = None if self.refinement is None else tuple(a[perm] for a in self.refinement)
        return CurveFit(
            self.result.permuted(perm), self.geometry.permuted(perm), self.subsample_fit, ref
        )

    def aligned_to(self, reference: FitResult | CurveFit) -> CurveFit:
        """This fit with its experts relabelled to match ``reference``'s; itself when
        already aligned."""
        perm = expert_alignment(reference.mean, self.result.mean)
        return self if perm == list(range(len(perm))) else self.permuted(perm)

    # ---- persistence -------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """The core result's ``.npz`` with the geometry as metadata ``geometry`` and the
        refined circles (:meth:`refined`) as ``refined`` (NaN as null)."""
        metadata: dict[str, Any] = {GEOMETRY_KEY: self.geometry.as_dict()}
        if self.refinement is not None:
            metadata[REFINED_KEY] = [
                np.where(np.isfinite(a), a, None).tolist() for a in self.refinement
            ]
        return self.result.save(path, metadata=metadata)

    @classmethod
    def load(cls, path: str | Path, *, model=None) -> CurveFit:
        """Read a curve fit written by :meth:`save`; a result without a geometry, or
        anything else, is an :class:`InputError`. ``model``: as for
        :meth:`FitResult.load` (a saved result never runs a model file it names)."""
        fit = load_fit(path, model=model)
        if not isinstance(fit, CurveFit):
            raise InputError(f"{path} holds a fit without a curve geometry (not a curve fit)")
        return fit


def load_fit(path: str | Path, *, model=None) -> FitResult | CurveFit:
    """A saved result: a :class:`CurveFit` when it has a curve geometry, else the core
    :class:`~pyro_moe.result.FitResult` (``model``: :meth:`FitResult.load`'s)."""
    result = FitResult.load(path, model=model)
    metadata = read_metadata(path)
    legacy = metadata.get("meta", {})
    geometry = metadata.get(GEOMETRY_KEY) or legacy.get("geometry") or legacy.get("shapes")
    if not geometry:
        return result
    try:
        geo = Geometry.from_dict(geometry, result.experts)
    except (InputError, KeyError, TypeError, ValueError) as e:
        raise InputError(f"cannot read the curve geometry saved in {path}: {e}") from e
    refinement = None
    if metadata.get(REFINED_KEY) is not None:
        try:
            circles, cov = (np.array(a, dtype=np.float64) for a in metadata[REFINED_KEY])
        except (TypeError, ValueError) as e:
            raise InputError(f"cannot read the refined circles saved in {path}: {e}") from e
        if circles.shape != (result.experts, 3) or cov.shape != (result.experts, 3, 3):
            raise InputError(
                f"the refined circles saved in {path} have shapes {circles.shape} and "
                f"{cov.shape}, not ({result.experts}, 3) and ({result.experts}, 3, 3)"
            )
        refinement = (circles, cov)
    return CurveFit(result, geo, None, refinement)
