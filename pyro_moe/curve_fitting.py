"""Curves from points or binary images: the showcase application in one call.

Each expert is one curve. A circle (x - x0)^2 + (y - y0)^2 = r^2 is the regression
t = x^2 + y^2 on X = [x, y, 1] with w = (2 x0, 2 y0, r^2 - x0^2 - y0^2); a conic
x^2 = B'xy + C'y^2 + D'x + E'y + F' is the regression t = x^2 on X = [xy, y^2, x, y, 1].
Points are standardized (one centre, one scale) before fitting, and the result maps the
curves back to pixel units (x = column, y = row from the top-left).

Experts of different kinds (``experts=["circle", "ellipse"]``) each get their own feature
map (:mod:`pyro_moe.experts`); ``result.curves()`` reports each as its own kind of curve.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .errors import InputError
from .experts import Layout, layout
from .fitting import fit
from .model_file import load_model
from .result import FitResult
from .shapes import (
    PointSet,
    Standardization,
    circle_design,
    conic_design,
    image_to_points,
    validate_points,
)

DESIGNS = {"circle": (circle_design, 3), "conic": (conic_design, 5)}


def as_points(source, *, max_points: int | None = None, seed: int = 0, **image_options) -> PointSet:
    """A :class:`PointSet` from a PointSet, an (N, 2) array of (x, y), or an image (path/array)."""
    if isinstance(source, PointSet):
        ps = source
    elif isinstance(source, str | Path):
        ps = image_to_points(source, max_points=max_points, seed=seed, **image_options)
    else:
        arr = np.asarray(source)
        if arr.ndim == 2 and arr.shape[1] == 2 and arr.dtype != bool:
            xy = validate_points(arr)
            if max_points is not None and len(xy) > max_points:
                keep = np.sort(
                    np.random.default_rng(seed).choice(len(xy), max_points, replace=False)
                )
                xy = xy[keep]
            ps = PointSet(xy, Standardization.fit(xy), None)
        else:
            ps = image_to_points(arr, max_points=max_points, seed=seed, **image_options)
    return ps


def fit_curves(
    source,
    *,
    design: str = "circle",
    experts: int | Sequence[str] | str = 2,
    model="mixture_of_models",
    max_points: int | None = None,
    seed: int = 0,
    image_options: dict | None = None,
    allow_mixed_targets: bool = False,
    **fit_options,
) -> FitResult:
    """Fit curves to points or an image.

    ``experts`` is a number of curves of kind ``design`` ("circle" or "conic"), or the
    experts' names (a list, or "circle,ellipse"), each with its own feature map as the
    model file declares it (``EXPERTS``; the default model, ``models/mixture_of_models.py``,
    declares circle, ellipse, conic and line). Experts that model different targets (a
    line with conics) need ``allow_mixed_targets=True`` (see :mod:`pyro_moe.experts`).

    ``fit_options`` go to :func:`pyro_moe.fit` (method, n_init, learn, priors, ...).
    Priors are in standardized units. Use ``result.curves()`` (each expert as its kind),
    or ``result.circles()`` / ``result.conics()``.
    """
    if isinstance(experts, str) or (
        isinstance(experts, Sequence) and not isinstance(experts, str | bytes)
    ):
        loaded = load_model(model)
        lay = layout(experts, loaded.expert_catalog, allow_mixed_targets=allow_mixed_targets)
        X, t, shapes = experts_design(
            source, lay, max_points=max_points, seed=seed, image_options=image_options
        )
        return fit(
            loaded, X, t, experts=len(lay.names), seed=seed, shapes=shapes, maps=lay.maps,
            **fit_options,
        )  # fmt: skip
    X, t, shapes = curve_design(
        source, design, max_points=max_points, seed=seed, image_options=image_options
    )
    return fit(model, X, t, experts=experts, seed=seed, shapes=shapes, **fit_options)


def experts_design(
    source,
    lay: Layout,
    *,
    max_points: int | None = None,
    seed: int = 0,
    image_options: dict | None = None,
) -> tuple[np.ndarray, np.ndarray, dict]:
    """(X, y, shapes) of a heterogeneous layout on standardized points of ``source``."""
    ps = as_points(source, max_points=max_points, seed=seed, **(image_options or {}))
    need = max(e.size for e in lay.experts)
    if len(ps) < need:
        raise InputError(f"need at least {need} points to fit these experts, got {len(ps)}")
    X, y = lay.design(ps.standard)
    st = ps.standardization
    shapes = {
        "design": "experts",
        "center": [float(c) for c in st.center],
        "scale": float(st.scale),
        **lay.as_dict(),
    }
    return X, y, shapes


def curve_design(
    source,
    design: str = "circle",
    *,
    max_points: int | None = None,
    seed: int = 0,
    image_options: dict | None = None,
) -> tuple[np.ndarray, np.ndarray, dict]:
    """(X, t, shapes) of a curve design on standardized points of ``source``; ``shapes``
    (design, centre, scale) is what a FitResult needs to map curves back to pixels."""
    if design not in DESIGNS:
        raise InputError(f"unknown design {design!r}; use one of {', '.join(DESIGNS)}")
    ps = as_points(source, max_points=max_points, seed=seed, **(image_options or {}))
    make, unknowns = DESIGNS[design]
    if len(ps) < unknowns:
        raise InputError(f"need at least {unknowns} points to fit a {design}, got {len(ps)}")
    X, t = make(ps.standard)
    st = ps.standardization
    shapes = {"design": design, "center": [float(c) for c in st.center], "scale": float(st.scale)}
    return X, t, shapes


def standardization_of(shapes: dict | None) -> Standardization:
    """The :class:`Standardization` recorded by :func:`curve_design` in a result's ``shapes``."""
    if not shapes or "center" not in shapes:
        raise InputError("this result was not fitted on shape data (no circle/conic design)")
    return Standardization(np.asarray(shapes["center"], float), float(shapes["scale"]))


def fit_circles(source, *, experts: int = 2, **options) -> FitResult:
    """Circles: ``fit_curves(source, design="circle", ...)``."""
    return fit_curves(source, design="circle", experts=experts, **options)


def fit_conics(source, *, experts: int = 2, **options) -> FitResult:
    """Conics: ``fit_curves(source, design="conic", ...)``."""
    return fit_curves(source, design="conic", experts=experts, **options)
