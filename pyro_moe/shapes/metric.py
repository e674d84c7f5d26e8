"""The study's circle-recovery error and the matching of predicted to true circles; the
field's overlap of filled ellipses (:func:`ellipse_overlap`, as AAMED's and EDCircles'
evaluations score ellipses on real pictures)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.optimize import linear_sum_assignment

from pyro_moe.errors import InputError
from pyro_moe.shapes.curves import Circle

__all__ = ["circle_error", "ellipse_overlap", "ellipses_found", "match_circles"]

#: Samples per side of the grid :func:`ellipse_overlap` counts on.
OVERLAP_GRID = 400


def _cost(true: Sequence[Circle], pred: Sequence[Circle]) -> np.ndarray:
    t = np.array([[c.x0, c.y0, c.r] for c in true], dtype=np.float64).reshape(-1, 3)
    p = np.array([[c.x0, c.y0, c.r] for c in pred], dtype=np.float64).reshape(-1, 3)
    return ((t[:, None, :] - p[None, :, :]) ** 2).sum(axis=2)


def _check_true(true: Sequence[Circle]) -> None:
    for i, c in enumerate(true):
        if not isinstance(c, Circle):
            raise InputError(f"true circle {i} is not a Circle: {c!r}")
        if not c.valid:
            raise InputError(f"true circle {i} is invalid; the reference must be valid circles")


def match_circles(true: Sequence[Circle], predicted: Sequence[Circle]) -> list[tuple[int, int]]:
    """Best assignment of valid predicted circles to true ones.

    Minimizes $\\sum_{(k, j)} (x_{0k} - \\hat x_{0j})^2 + (y_{0k} - \\hat y_{0j})^2
    + (r_k - \\hat r_j)^2$ with :func:`scipy.optimize.linear_sum_assignment` (rectangular
    when the counts differ). Invalid predictions are never matched. Returns pairs
    ``(true index, predicted index)`` sorted by true index; when there are fewer valid
    predictions than true circles some true circles stay unmatched.
    """
    true, predicted = list(true), list(predicted)
    _check_true(true)
    for j, c in enumerate(predicted):
        if not isinstance(c, Circle):
            raise InputError(f"predicted circle {j} is not a Circle: {c!r}")
    valid = [j for j, c in enumerate(predicted) if c.valid]
    if not true or not valid:
        return []
    cost = _cost(true, [predicted[j] for j in valid])
    rows, cols = linear_sum_assignment(cost)
    return sorted((int(r), valid[int(c)]) for r, c in zip(rows, cols, strict=True))


def circle_error(true: Sequence[Circle], predicted: Sequence[Circle]) -> float:
    """The study's error $S = \\sum_k (x_{0k} - \\hat x_{0k})^2 + (y_{0k} -
    \\hat y_{0k})^2 + (r_k - \\hat r_k)^2$ over the best assignment (:func:`match_circles`).

    An invalid predicted circle is a failure: it is never matched, and when fewer valid
    predictions than true circles remain the error is ``inf``. With MORE valid predictions
    than true circles, the best subset is used (rectangular assignment: extra predictions
    are ignored). Order of the predictions does not matter. Zero true circles → 0.0.
    """
    true, predicted = list(true), list(predicted)
    pairs = match_circles(true, predicted)
    if len(pairs) < len(true):
        return float("inf")
    cost = _cost(true, predicted) if true else np.zeros((0, 0))
    return float(sum(cost[k, j] for k, j in pairs))


def _inside(e: Sequence[float], x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Grid points inside the filled ellipse e = (cx, cy, a, b, angle in radians)."""
    cx, cy, a, b, t = (float(v) for v in e)
    c, s = np.cos(t), np.sin(t)
    u = (x - cx) * c + (y - cy) * s
    v = -(x - cx) * s + (y - cy) * c
    return (u / a) ** 2 + (v / b) ** 2 <= 1.0


def _check_ellipse(e: Sequence[float], what: str) -> np.ndarray:
    arr = np.asarray(e, dtype=np.float64).reshape(-1)
    if arr.shape != (5,) or not np.isfinite(arr).all() or not (arr[2] > 0 and arr[3] > 0):
        raise InputError(
            f"{what} must be (cx, cy, a, b, angle) with finite values and a, b > 0, got {e!r}"
        )
    return arr


def ellipse_overlap(true: Sequence[float], predicted: Sequence[float]) -> float:
    """The overlap of two filled ellipses, each (cx, cy, a, b, angle in radians), as the
    field scores ellipse detection (AAMED, EDCircles, Fornaciari et al.):

    $$ O = \\frac{|E_1 \\cap E_2|}{|E_1 \\cup E_2|}, $$

    counted on a grid of :data:`OVERLAP_GRID` x :data:`OVERLAP_GRID` points over the box of
    both (a relative error of about 1 / OVERLAP_GRID). A detection counts as found at
    O > 0.8 on real pictures, O > 0.95 on synthetic ones. A circle is the ellipse
    (x0, y0, r, r, 0)."""
    e1, e2 = _check_ellipse(true, "true"), _check_ellipse(predicted, "predicted")
    reach = np.array([max(e1[2], e1[3]), max(e2[2], e2[3])])
    lo = np.minimum(e1[:2] - reach[0], e2[:2] - reach[1])
    hi = np.maximum(e1[:2] + reach[0], e2[:2] + reach[1])
    xs = np.linspace(lo[0], hi[0], OVERLAP_GRID)
    ys = np.linspace(lo[1], hi[1], OVERLAP_GRID)
    x, y = np.meshgrid(xs, ys)
    in1, in2 = _inside(e1, x, y), _inside(e2, x, y)
    union = int((in1 | in2).sum())
    return float((in1 & in2).sum() / union) if union else 0.0


def ellipses_found(
    true: Sequence[Sequence[float]], predicted: Sequence[Sequence[float]], min_overlap: float
) -> int:
    """How many true ellipses have a predicted one of overlap > ``min_overlap``
    (:func:`ellipse_overlap`), each prediction matched once (the best assignment,
    :func:`scipy.optimize.linear_sum_assignment` on the overlaps)."""
    if not len(true) or not len(predicted):
        return 0
    O = np.array([[ellipse_overlap(t, p) for p in predicted] for t in true])
    rows, cols = linear_sum_assignment(-O)
    return int((O[rows, cols] > min_overlap).sum())
