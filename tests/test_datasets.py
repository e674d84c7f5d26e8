"""pyro_moe.datasets: the shipped data sets load as published (their sizes, ranges and
known summaries), and NPreg is simulated by flexmix's ExNPreg."""

from __future__ import annotations

import numpy as np
import pytest

from pyro_moe import datasets
from pyro_moe.errors import InputError


@pytest.mark.parametrize(
    ("name", "rows", "x_range", "y_mean"),
    [
        # mcycle: times 2.4 .. 57.6 ms, mean acceleration -25.55 g (MASS)
        ("mcycle", 133, (2.4, 57.6), -25.546),
        # faithful: waiting 43 .. 96 min, mean eruption 3.4878 min (R datasets)
        ("faithful", 272, (43.0, 96.0), 3.4878),
        # engel: income 377.06 .. 4957.81, mean food expenditure 624.15 (quantreg)
        ("engel", 235, (377.06, 4957.81), 624.15),
        # GAGurine: Age 0 .. 17.67 years, mean GAG 13.1729 (MASS)
        ("gagurine", 314, (0.0, 17.67), 13.1729),
    ],
)
def test_shipped_data_sets_are_the_published_ones(name, rows, x_range, y_mean):
    data = datasets.load(name)
    X, y = data
    assert X.shape == (rows, 1) and y.shape == (rows,)
    assert X.dtype == np.float64 and y.dtype == np.float64
    assert (X.min(), X.max()) == pytest.approx(x_range, abs=0.01)
    assert y.mean() == pytest.approx(y_mean, abs=1e-3)
    assert data.name == name and len(data.feature_names) == 1
    assert any(f"({c}" in data.description for c in ("18", "19", "20"))  # a citation


def test_npreg_is_flexmix_exnpreg():
    data = datasets.npreg(100, seed=3)
    x, y = data.X[:, 0], data.y
    assert data.X.shape == (200, 1) and (0 <= x).all() and (x <= 10).all()
    # the published means, and the noise recycled as in R: point i and n + i share e_i
    e1 = (y[:100] - 5 * x[:100]) / 3
    e2 = (y[100:] - (40 - (x[100:] - 5) ** 2)) / 3
    np.testing.assert_allclose(e1, e2, atol=1e-12)
    assert abs(e1.mean()) < 0.3 and 0.8 < e1.std() < 1.2
    np.testing.assert_array_equal(datasets.npreg(100, seed=3).y, y)  # seeded
    assert not np.array_equal(datasets.npreg(100, seed=4).y, y)


def test_bad_names_and_sizes_are_refused():
    with pytest.raises(InputError, match="unknown data set"):
        datasets.load("iris")
    with pytest.raises(InputError, match="even"):
        datasets.npreg(7)
