"""Figures: each returns a Figure with the expected axes and artists and saves as PNG."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.figure import Figure

import pyro_moe
from pyro_moe import plots as P
from pyro_moe.shapes import circle_design, ellipse_points, hyperbola_points, synthetic_2
from pyro_moe.shapes.geometry import Geometry


@pytest.fixture(scope="module")
def circles():
    return pyro_moe.fit_circles(synthetic_2(0).xy, experts=2, seed=0)


@pytest.fixture(autouse=True)
def _close():
    yield
    plt.close("all")


def _save(fig, tmp_path, name):
    path = tmp_path / f"{name}.png"
    fig.savefig(path)
    assert path.stat().st_size > 1000


def test_plot_fit_circles(circles, tmp_path):
    d = synthetic_2(0)
    fig = P.plot_fit(circles, outliers=np.arange(5))
    assert isinstance(fig, Figure) and len(fig.axes) == 1
    ax = fig.axes[0]
    assert sum(len(line.get_xdata()) > 100 for line in ax.lines) == 2  # one circle per expert
    assert len(ax.collections) == 2  # points + outlier crosses
    assert ax.yaxis_inverted()  # image convention
    np.testing.assert_allclose(P.data_points(circles), d.xy, atol=1e-9)
    _save(fig, tmp_path, "fit")


def test_plot_fit_on_given_axes_and_conics(tmp_path):
    xy = np.r_[
        ellipse_points((50, 40), (30, 12), 0.4, 120, jitter=0.2),
        hyperbola_points((60, 80), (10, 6), 0.2, 120, jitter=0.2, seed=1),
    ]
    r = pyro_moe.fit_conics(xy, experts=2)
    fig, (a, b) = plt.subplots(1, 2)
    out = P.plot_fit(r, ax=b)
    assert out is fig and not a.collections and len(b.collections) >= 3  # points + 2 contours
    _save(fig, tmp_path, "conics")


def test_plot_fit_without_shapes(tmp_path):
    X, t = circle_design(synthetic_2(0).xy)
    r = pyro_moe.fit("mixture_of_models", X, t, experts=2)
    fig = P.plot_fit(r)
    assert len(fig.axes[0].lines) == 2
    _save(fig, tmp_path, "plain")


@pytest.mark.parametrize(("x", "panels"), [("iteration", 1), ("time", 1), ("both", 2)])
def test_plot_objective(circles, tmp_path, x, panels):
    other = pyro_moe.fit_circles(synthetic_2(0).xy, experts=2, seed=1)
    fig = P.plot_objective({"a": circles, "b": other}, x=x)
    assert len(fig.axes) == panels
    assert all(len(ax.lines) == 2 and ax.get_xscale() == "log" for ax in fig.axes)
    _save(fig, tmp_path, f"objective_{x}")
    with pytest.raises(pyro_moe.InputError):
        P.plot_objective(circles, x="steps")


def test_trace_parameters_is_deterministic_and_consistent(tmp_path):
    d = synthetic_2(0)
    X, t = circle_design(d.xy)
    kw = dict(experts=2, seed=0, init="subsets", geometry=Geometry.of("circle", 2))
    tr = P.trace_parameters("mixture_of_models", X, t, iterations=(1, 3, 5), **kw)
    assert tr.mean.shape == (3, 2, 3) and tr.objective.shape == (3,)
    assert np.all(np.diff(tr.objective) >= -1e-9)  # CAVI never decreases
    again = P.trace_parameters("mixture_of_models", X, t, iterations=(3,), **kw)
    np.testing.assert_array_equal(again.mean[0], tr.mean[1])
    # iteration 3 of the 5-iteration run is the 3-iteration run
    with pytest.warns(pyro_moe.ConvergenceWarning):  # stopped at 5 on purpose
        fit_kw = {k: v for k, v in kw.items() if k != "geometry"}  # as trace_parameters fits
        full = pyro_moe.fit(
            "mixture_of_models", X, t, n_init=1, max_iter=5, tol=0.0, prior_units="unit", **fit_kw
        )
    assert full.objective_history.numpy()[2] == pytest.approx(tr.objective[1], rel=1e-12)
    assert tr.circles().shape == (3, 2, 3)
    fig = P.plot_trajectories(tr)
    assert len(fig.axes) == 4  # x0, y0, r, objective
    assert all(len(ax.lines) == 2 for ax in fig.axes[:3])
    _save(fig, tmp_path, "trajectories")


@pytest.mark.parametrize("model", ["mixture_of_models", "mixture_of_experts"])
def test_plot_gate_map(tmp_path, model):
    r = pyro_moe.fit_circles(  # without the noise expert: the K maps sum to 1
        synthetic_2(0).xy, experts=2, model=model, n_init=1, max_iter=30, tol=1e-3,
        noise_expert=False,
    )  # fmt: skip
    fig = P.plot_gate_map(r, resolution=40)
    assert len(fig.axes) == 3  # two maps + colour bar
    maps = [ax.images[0].get_array() for ax in fig.axes[:2]]
    np.testing.assert_allclose(maps[0] + maps[1], 1.0, atol=1e-9)
    if model == "mixture_of_models":
        assert np.ptp(maps[0]) < 1e-12  # constant weights
        assert float(maps[0].mean()) == pytest.approx(float(r.weights[0]))
    _save(fig, tmp_path, f"gate_{model}")
    with pytest.raises(pyro_moe.InputError):
        P.plot_gate_map(r, extent=(1, 0, 0, 1))
