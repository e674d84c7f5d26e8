"""The search over CAVI's fixed points (pyro_moe.search): it escapes the fixed point that
spends two experts on one ring, and it never lowers the objective."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

import pyro_moe
from pyro_moe.curves import CurveFit
from pyro_moe.curves.fitting import curve_data
from pyro_moe.search import search
from pyro_moe.shapes import circle_image, match_circles


def _errors(truth, found) -> list[float]:
    pairs = match_circles(truth, found)
    return [
        max(abs(truth[i].x0 - found[j].x0), abs(truth[i].y0 - found[j].y0),
            abs(truth[i].r - found[j].r))
        for i, j in pairs
    ]  # fmt: skip


@pytest.fixture(scope="module")
def rings():
    """Three concentric rings r = 30 / 66 / 104: without the search CAVI gives the outer
    ring two experts and the inner one to the noise expert (measured)."""
    return circle_image([(110.2, 108.7)] * 3, [30, 66, 104], (220, 220))


@pytest.mark.slow
def test_the_search_finds_every_ring_that_plain_cavi_misses(rings):
    img, truth = rings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", pyro_moe.ConvergenceWarning)
        # the engine's own restarts (no sequential-RANSAC start), with and without the search
        kw = dict(experts=3, noise_expert=True, per_expert_noise=False, seeded=False)
        plain = pyro_moe.fit_circles(img, search=False, **kw)
        found = pyro_moe.fit_circles(img, **kw)
        seeded = pyro_moe.fit_circles(img, experts=3, noise_expert=True, search=False)
    assert max(_errors(truth, plain.circles()), default=np.inf) > 10  # the trap is real
    assert max(_errors(truth, found.circles())) < 0.5
    assert found.search["accepted"] >= 1
    assert found.objective > plain.objective + 100
    assert found.search["objective_before"] == pytest.approx(plain.objective)
    assert max(_errors(truth, seeded.circles())) < 0.5  # the seeded start alone is right


def test_the_search_keeps_a_fit_it_cannot_improve_and_never_lowers_the_objective():
    img, truth = circle_image([(40.0, 45.0), (110.0, 60.0)], [20.0, 30.0], (140, 160))
    data = curve_data(img, 2)
    fit = dict(experts=2, prior_units="unit", noise_expert=True, n_init=1)
    start = pyro_moe.fit("mixture_of_models", data.X, data.y, **fit)
    calls = []

    def refit(R, max_iter=None):
        calls.append(R)
        return pyro_moe.fit("mixture_of_models", data.X, data.y, responsibilities=R, **fit)

    best, report = search(start, refit)
    assert report.accepted == 0 and best is start  # already right: nothing to gain
    assert report.tried == len(calls) > 0
    for R in calls:  # every proposal is a valid q(Z) with the noise column
        assert R.shape == start.responsibilities.shape
        torch.testing.assert_close(R.sum(-1), torch.ones(len(R), dtype=R.dtype))
    assert max(_errors(truth, CurveFit(best, data.geometry).circles())) < 0.5


def test_a_single_expert_is_never_searched():
    img, _ = circle_image([(40.0, 45.0)], [20.0], (100, 100))
    r = pyro_moe.fit_circles(img, experts=1)
    assert r.search is None


def test_the_search_prefers_fewer_implausible_experts_to_a_higher_objective():
    """With ``admissible``, the order is (implausible experts, F): a rule that calls every
    circle of r < 15 px implausible makes the search trade the true small ring for any
    fit without one, though F drops."""
    centres = [(40.0, 45.0), (110.0, 60.0), (60.0, 110.0)]
    img, _ = circle_image(centres, [10.0, 25.0, 30.0], (150, 160), outlier_fraction=0.3)
    data = curve_data(img, 3)
    fit = dict(experts=3, prior_units="unit", noise_expert=True, n_init=1,
               noise_range=data.noise_range)  # fmt: skip
    start = pyro_moe.fit_circles(img, experts=3, search=False, noise_expert=True)
    assert min(c.r for c in start.circles()) < 15

    def refit(R, max_iter=None):
        opts = {} if max_iter is None else {"max_iter": max_iter}
        return pyro_moe.fit("mixture_of_models", data.X, data.y, responsibilities=R, **fit,
                            **opts)  # fmt: skip

    def plausible(W):
        st = data.geometry.standardization
        r2 = W[:, 2] + 0.25 * (W[:, 0] ** 2 + W[:, 1] ** 2)
        return r2.clamp_min(0).sqrt() * st.scale >= 15.0

    best, report = search(start.result, refit, admissible=plausible)
    assert report.accepted >= 1 and bool(plausible(best.mean).all())
    assert best.objective < start.objective  # a lower F, bought with plausibility
    unchanged, _ = search(start.result, refit)  # without the rule: nothing to gain
    assert unchanged.objective >= start.objective
