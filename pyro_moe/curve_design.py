"""The design of a curve fit: the experts' names, the design X and target y of
standardized points, and the target's range over the points' box (the noise expert's
support). The one home of these, read by :mod:`pyro_moe.curve_fitting` (points in memory)
and :mod:`pyro_moe.distributed_curves` (each chunk of distributed points)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .errors import InputError
from .shapes.geometry import monomials

__all__ = ["RANGE_GRID", "curve_design", "expert_names", "target_range"]

#: grid points per axis over the bounding box when the target's range is found
RANGE_GRID = 129


def target_range(
    points: np.ndarray, response: str, offset: dict | None = None
) -> tuple[float, float]:
    """(lo, hi): the range of the target t = response + sum_m c_m m (monomials of a point,
    :func:`pyro_moe.shapes.geometry.monomials`) over the bounding box of ``points`` (N, 2).

    This is the support of the noise expert of a curve fit. Stray pixels fall anywhere in
    the picture, so their density is uniform over the *box* the points span, mapped to the
    target, not over the range of the targets observed: on a clean ring t = x^2 + y^2 is
    nearly constant, its observed range is tiny, and a uniform density over it
    (1 / range) beats any Gaussian expert, so every point was called an outlier (measured:
    a one-pixel circle of r = 40 came back as r = 1.2 with outliers 1.000). Over the box the
    range of x^2 + y^2 is that of the box's squared radii, and a clean curve keeps its
    points. The range is taken on a RANGE_GRID x RANGE_GRID grid of the box (the targets
    are quadratic, so their extremes lie on it up to (box / RANGE_GRID)^2) joined with the
    observed targets, so every target lies inside it.
    """
    lo_xy, hi_xy = points.min(0), points.max(0)
    gx, gy = np.meshgrid(
        *(np.linspace(a, b, RANGE_GRID) for a, b in zip(lo_xy, hi_xy, strict=True))
    )
    grid = np.column_stack([np.concatenate([gx.ravel(), points[:, 0]]),
                            np.concatenate([gy.ravel(), points[:, 1]])])  # fmt: skip
    m = monomials(grid)
    t = m[response]
    for name, c in (offset or {}).items():
        t = t + c * m[name]
    return float(t.min()), float(t.max())


def expert_names(experts: int | Sequence[str] | str, design: str = "circle") -> tuple[str, ...]:
    """The experts' names: ``design`` repeated for a count, else the names given (a list,
    or a comma-separated string such as ``"circle,ellipse"``)."""
    if isinstance(experts, str):
        return tuple(s.strip() for s in experts.split(",") if s.strip())
    if isinstance(experts, Sequence) and not isinstance(experts, bytes):
        return tuple(experts)
    if not isinstance(experts, int | np.integer) or isinstance(experts, bool) or experts < 1:
        raise InputError(f"experts must be an integer >= 1 or expert names, got {experts!r}")
    if design not in ("circle", "conic"):
        raise InputError(f"unknown design {design!r}; use one of circle, conic")
    return (design,) * int(experts)


def curve_design(lay, standard: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The design X (N, n) and target y (N,) of standardized points (N, 2) for the experts
    of layout ``lay`` (:func:`pyro_moe.experts.layout`): experts of one form share their
    own features phi(x, y) and target t = response + sum_m c_m m (a circle: X = [x, y, 1],
    t = x^2 + y^2); experts of several forms see the layout's common monomials
    (:meth:`~pyro_moe.experts.Layout.design`), each through its map. The one place the
    design is built: in memory, and on each chunk of distributed points."""
    e = lay.experts[0]
    if all(f == e for f in lay.experts):
        m = monomials(standard)
        X = np.column_stack([m[c] for c in e.features])
        y = m[e.response]
        for name, c in e.offset.items():
            y = y + c * m[name]
        return X, y
    return lay.design(standard)
