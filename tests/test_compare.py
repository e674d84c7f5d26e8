"""Tests of pyro_moe.comparison: CAVI vs SVI on the study's synthetic 1."""

from __future__ import annotations

import warnings

import matplotlib

matplotlib.use("Agg")

import pytest
import torch

import pyro_moe
from pyro_moe.comparison import align, compare, time_to_within
from pyro_moe.shapes import circle_design, circle_error, synthetic_1
from pyro_moe.shapes.geometry import Geometry
from pyro_moe.study import STUDY_PRIOR_MEAN as STUDY_PRIOR


@pytest.fixture(scope="module")
def comparison():
    d = synthetic_1()
    X, t = circle_design(d.xy)
    geometry = Geometry.of("circle", 2)  # already standard units
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", pyro_moe.ConvergenceWarning)
        c = compare(
            "mixture_of_models", X, t, experts=2, geometry=geometry, prior_mean=STUDY_PRIOR,
            learn="none", noise_precision=1e3, svi_options={"n_init": 1},
        )  # fmt: skip
    return d, c


def test_compare_reports_agreement(comparison):
    d, c = comparison
    assert c.relative_gap < 5e-3
    assert c.objective_gap == pytest.approx(abs(c.svi.objective - c.cavi.objective))
    assert c.max_mean_distance < 0.05
    assert sorted(c.perm) == [0, 1]
    assert circle_error(d.circles, c.cavi.circles()) < 1e-2
    assert circle_error(d.circles, c.svi.circles()) < 1e-2
    rows = c.table()
    assert [r["method"] for r in rows] == ["cavi", "svi"]
    assert rows[1]["rel_gap"] == c.relative_gap
    for r in rows:
        assert 0 <= r["time_to_0.1%_s"] <= r["wall_time_s"] + 1e-6
        assert len(r["circles"]) == 2
    # aligned circles agree
    for a, b in zip(rows[0]["circles"], rows[1]["circles"], strict=True):
        assert max(abs(u - v) for u, v in zip(a, b, strict=True)) < 1e-2
    md = c.to_markdown()
    assert md.startswith("| method") and str(c) == md and md.count("\n") == 3


def test_plot_writes_a_figure(comparison, tmp_path):
    _, c = comparison
    fig = c.plot(tmp_path / "cmp.png")
    assert (tmp_path / "cmp.png").stat().st_size > 0
    assert len(fig.axes) == 2


def test_align_and_time_to_within():
    ref = torch.tensor([[0.0, 0.0], [5.0, 5.0], [9.0, 0.0]])
    other = ref[[2, 0, 1]] + 0.01
    perm = align(ref, other)
    assert torch.allclose(other[perm], ref + 0.01)
    d = synthetic_1()
    X, t = circle_design(d.xy)
    r = pyro_moe.fit("mixture_of_models", X, t, prior_mean=STUDY_PRIOR, n_init=1)
    F, T = r.objective_history.tolist(), r.time_history.tolist()
    first = next(i for i, f in enumerate(F) if abs(f - F[-1]) <= 1e-3 * abs(F[-1]))
    assert time_to_within(r) == T[first]


def test_compare_refuses_method():
    d = synthetic_1()
    X, t = circle_design(d.xy)
    with pytest.raises(pyro_moe.InputError):
        compare("mixture_of_models", X, t, method="svi")


def test_compare_adds_adam_svi_as_a_third_row():
    """adam=True: CAVI, natural-gradient SVI (the default, at CAVI's optimum on the full
    batch) and Adam SVI, each with its gap to CAVI."""
    d = synthetic_1()
    X, t = circle_design(d.xy)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", pyro_moe.ConvergenceWarning)
        c = compare(
            "mixture_of_models", X, t, experts=2, prior_mean=STUDY_PRIOR, learn="none",
            noise_precision=1e3, svi_options={"n_init": 1, "max_iter": 100}, adam=True,
        )  # fmt: skip
    rows = c.table()
    assert [r["method"] for r in rows] == ["cavi", "svi", "svi_adam"]
    assert c.relative_gap < 1e-8  # natural gradient, full batch: CAVI's optimum
    assert rows[2]["abs_gap"] == pytest.approx(abs(c.adam.objective - c.cavi.objective))
    assert c.adam.restarts[0]["optimizer"] == "adam"
    c.plot()
