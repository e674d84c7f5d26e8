"""The result type: prediction, shapes in pixel units, and the .npz round trip."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from conftest import STUDY_PRIOR_MEAN, two_circles

import pyro_moe
from pyro_moe.shapes import circle_error, circle_image


@pytest.mark.parametrize("name", ["mixture_of_models", "mixture_of_experts"])
def test_predictive_moments_match_sampling(name):
    X, y = two_circles(80, seed=2)
    res = pyro_moe.fit(name, X, y, experts=2, prior_mean=STUDY_PRIOR_MEAN, learn="noise_precision")
    Xn = torch.as_tensor(X[:5])
    pred = res.predict(Xn)
    g = torch.Generator().manual_seed(0)
    S = 200_000
    k = torch.multinomial(pred.expert_weights, S, replacement=True, generator=g)  # (5, S)
    L = torch.linalg.cholesky(res.cov)
    w = res.mean[k] + (L[k] @ torch.randn(5, S, 3, 1, generator=g, dtype=torch.float64)).squeeze(-1)
    ys = (w * Xn.unsqueeze(1)).sum(-1) + torch.randn(
        5, S, generator=g, dtype=torch.float64
    ) / res.noise_precision.sqrt()
    torch.testing.assert_close(
        ys.mean(1), pred.mean, atol=4 * float(pred.variance.max().sqrt()) / S**0.5, rtol=0
    )
    torch.testing.assert_close(ys.var(1), pred.variance, rtol=0.02, atol=0)
    lo, hi = pred.interval(0.9).unbind(-1)
    cover = ((ys >= lo[:, None]) & (ys <= hi[:, None])).double().mean(1)
    torch.testing.assert_close(cover, torch.full_like(cover, 0.9), atol=0.005, rtol=0)


def test_predict_rejects_wrong_width():
    X, y = two_circles(20)
    res = pyro_moe.fit("mixture_of_models", X, y, experts=2)
    with pytest.raises(pyro_moe.InputError, match="shape"):
        res.predict(np.zeros((3, 2)))


def test_circles_come_back_in_pixel_units_from_an_image():
    img, true = circle_image([(40.0, 70.0), (40.0, 70.0)], [12.0, 30.0], shape=(100, 120))
    res = pyro_moe.fit_circles(img, experts=2, learn="noise_precision")
    assert circle_error(true, res.circles()) < 0.5
    for c in res.circles():
        assert c.valid


@pytest.mark.parametrize("name", ["mixture_of_models", "regularized_experts"])
def test_save_load_round_trip(tmp_path, name):
    img, _ = circle_image([(40.0, 50.0)], [20.0], shape=(90, 90))
    res = pyro_moe.fit_circles(img, experts=1, model=name)
    path = res.save(tmp_path / "fit.npz")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fit.npz"]  # no temp left
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask
    back = pyro_moe.FitResult.load(path)
    with np.load(path) as data:
        for key in ["X", "y", "responsibilities", "alpha" if name == "mixture_of_models" else "log_gate",
                    "mean", "cov", "prior_mean", "prior_cov", "noise_precision", "objective_history"]:  # fmt: skip
            assert key in data.files
    for key in ["mean", "cov", "responsibilities", "objective_history", "prior_cov"]:
        torch.testing.assert_close(getattr(back, key), getattr(res, key))
    assert back.circles() == res.circles()
    assert (back.method, back.iterations, back.converged) == (
        res.method,
        res.iterations,
        res.converged,
    )
    torch.testing.assert_close(back.predict(res.X[:4]).mean, res.predict(res.X[:4]).mean)


def test_load_rejects_a_non_result(tmp_path):
    bad = tmp_path / "x.npz"
    bad.write_text("not a zip")
    with pytest.raises(pyro_moe.InputError, match="cannot read a saved result"):
        pyro_moe.FitResult.load(bad)
