"""The study's circle error S and the matching."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyro_moe.errors import InputError
from pyro_moe.shapes import Circle, circle_error, match_circles

TRUE = [Circle(0.0, 0.0, 0.5), Circle(0.0, 0.0, 1.5), Circle(2.0, -1.0, 0.3)]
PRED = [Circle(0.01, -0.02, 0.52), Circle(0.03, 0.0, 1.45), Circle(1.9, -1.1, 0.35)]
S_EXPECTED = sum(
    (t.x0 - p.x0) ** 2 + (t.y0 - p.y0) ** 2 + (t.r - p.r) ** 2
    for t, p in zip(TRUE, PRED, strict=True)
)


def test_exact_is_zero() -> None:
    assert circle_error(TRUE, TRUE) == 0.0
    assert match_circles(TRUE, TRUE) == [(0, 0), (1, 1), (2, 2)]


@settings(max_examples=30, deadline=None)
@given(st.permutations(range(3)))
def test_invariant_to_order(perm) -> None:
    pred = [PRED[i] for i in perm]
    assert circle_error(TRUE, pred) == pytest.approx(S_EXPECTED, rel=1e-12)
    pairs = match_circles(TRUE, pred)
    assert [perm[j] for _, j in pairs] == [0, 1, 2]


def test_invalid_prediction_is_inf() -> None:
    pred = [*PRED[:2], Circle(2.0, -1.0, 0.0, False)]
    assert circle_error(TRUE, pred) == math.inf
    assert circle_error(TRUE, PRED[:2]) == math.inf  # too few predictions


def test_rectangular_uses_best_subset() -> None:
    extra = [Circle(5.0, 5.0, 1.0), *PRED, Circle(2.0, -1.0, 0.0, False)]
    assert circle_error(TRUE, extra) == pytest.approx(S_EXPECTED)
    pairs = match_circles(TRUE, extra)
    assert pairs == [(0, 1), (1, 2), (2, 3)]
    assert np.isfinite(circle_error(TRUE[:1], PRED))


def test_bad_true() -> None:
    with pytest.raises(InputError, match="invalid"):
        circle_error([Circle(0, 0, 0, False)], PRED)
    assert circle_error([], PRED) == 0.0
