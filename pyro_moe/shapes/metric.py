"""The study's circle-recovery error and the matching of predicted to true circles."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.optimize import linear_sum_assignment

from pyro_moe.errors import InputError
from pyro_moe.shapes.curves import Circle

__all__ = ["circle_error", "match_circles"]


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
