"""A curve fit: the core :class:`~pyro_moe.result.FitResult` and the curve geometry.

The core result knows weights, not curves. :class:`CurveFit` holds it (``.result``) with
the :class:`~pyro_moe.shapes.geometry.Geometry` that reads each expert's weights as its
kind of curve in pixel units: :meth:`CurveFit.curves`, :meth:`~CurveFit.circles`,
:meth:`~CurveFit.conics`, :attr:`~CurveFit.expert_kinds`, :meth:`~CurveFit.pixel_points`.

Delegation: every other attribute reads the core result's (``fit.mean``,
``fit.objective``, ``fit.responsibilities``, ``fit.predict(X)``, ``fit.summary()``, ...),
so a curve fit reads like the result it holds; the core result itself is ``fit.result``.

Saved as the core result's ``.npz`` (:meth:`pyro_moe.result.FitResult.save`) plus the
geometry as the metadata key ``geometry``; :meth:`CurveFit.load` reads it back (and the
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
from ..shapes.curves import circle_parameters, conic_from_weights, conic_to_pixels
from ..shapes.geometry import Geometry

__all__ = ["CurveFit", "load_fit"]

#: the metadata key of the geometry in a saved result
GEOMETRY_KEY = "geometry"

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

    Any other attribute is the core result's (see the module docstring).
    """

    result: FitResult
    geometry: Geometry
    subsample_fit: CurveFit | None = field(default=None, repr=False)

    def __getattr__(self, name: str) -> Any:
        # called only for names a CurveFit lacks: read the core result's
        if name.startswith("__") or name in ("result", "geometry", "subsample_fit"):
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
        weights for an expert without a kind (:mod:`pyro_moe.experts`)."""
        return self.geometry.curves(_np(self.result.mean))

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
        return CurveFit(
            self.result.permuted(perm), self.geometry.permuted(list(perm)), self.subsample_fit
        )

    def aligned_to(self, reference: FitResult | CurveFit) -> CurveFit:
        """This fit with its experts relabelled to match ``reference``'s; itself when
        already aligned."""
        perm = expert_alignment(reference.mean, self.result.mean)
        return self if perm == list(range(len(perm))) else self.permuted(perm)

    # ---- persistence -------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """The core result's ``.npz`` with the geometry as metadata ``geometry``."""
        return self.result.save(path, metadata={GEOMETRY_KEY: self.geometry.as_dict()})

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
        return CurveFit(result, Geometry.from_dict(geometry, result.experts))
    except (InputError, KeyError, TypeError, ValueError) as e:
        raise InputError(f"cannot read the curve geometry saved in {path}: {e}") from e
