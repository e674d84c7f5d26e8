"""The result type: prediction, shapes in pixel units, and the .npz round trip."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from conftest import STUDY_PRIOR_MEAN, two_circles

import pyro_moe
from pyro_moe.shapes import (
    circle_design,
    circle_error,
    circle_image,
    circle_points,
    ellipse_points,
    synthetic_3,
)


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
    beta = res.noise_precision  # one per expert (the default of mixture_of_experts) or shared
    beta = beta[k] if beta.dim() else beta
    ys = (w * Xn.unsqueeze(1)).sum(-1) + torch.randn(
        5, S, generator=g, dtype=torch.float64
    ) / beta.sqrt()
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
    back = pyro_moe.CurveFit.load(path)
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
    # the core reads the same file as a plain result: it knows no geometry
    core = pyro_moe.FitResult.load(path)
    assert isinstance(core, pyro_moe.FitResult) and not hasattr(core, "circles")
    torch.testing.assert_close(core.mean, res.mean)


def test_the_curve_geometry_is_a_layer_over_the_core_result(tmp_path):
    """A CurveFit saves the core .npz plus its own metadata key; a core result loaded as a
    curve fit is refused; a file whose core ``meta`` holds the geometry (as saved before
    the curve application was layered) still loads as a curve fit."""
    import json

    from pyro_moe.curves import load_fit
    from pyro_moe.result import read_metadata

    img, _ = circle_image([(40.0, 50.0)], [20.0], shape=(90, 90))
    res = pyro_moe.fit_circles(img, experts=1)
    assert isinstance(res.result, pyro_moe.FitResult) and not hasattr(res.result, "geometry")
    path = res.save(tmp_path / "fit.npz")
    with np.load(path) as data:
        meta = json.loads(str(data["meta"]))
        arrays = {k: data[k] for k in data.files}
    assert "geometry" not in meta and "metadata/geometry" in arrays
    assert read_metadata(path)["geometry"] == res.geometry.as_dict()
    plain = res.result.save(tmp_path / "plain.npz")
    assert isinstance(load_fit(plain), pyro_moe.FitResult)
    with pytest.raises(pyro_moe.InputError, match="not a curve fit"):
        pyro_moe.CurveFit.load(plain)
    legacy = {k: v for k, v in arrays.items() if not k.startswith("metadata/")}
    legacy["meta"] = np.array(json.dumps({**meta, "geometry": res.geometry.as_dict()}))
    np.savez(tmp_path / "legacy.npz", **legacy)
    # a legacy file holds no geometric refinement (CurveFit.refined): the posterior mean's
    legacy_fit = pyro_moe.CurveFit.load(tmp_path / "legacy.npz")
    assert legacy_fit.circles() == pyro_moe.CurveFit(res.result, res.geometry).circles()


def test_load_rejects_a_non_result(tmp_path):
    bad = tmp_path / "x.npz"
    bad.write_text("not a zip")
    with pytest.raises(pyro_moe.InputError, match="cannot read a saved result"):
        pyro_moe.FitResult.load(bad)


# ---- relabelling: every per-expert quantity moves with its expert -------------------------
def test_permuted_keeps_the_noise_expert_last():
    """Regression: the relabelled copy dropped the noise column, and its predict raised."""
    d = synthetic_3(0)
    X, t = circle_design(d.xy)
    res = pyro_moe.fit("mixture_of_models", X, t, experts=2, noise_expert=True, n_init=2)
    p = res.permuted([1, 0])
    assert p.responsibilities.shape == res.responsibilities.shape == (len(t), 3)
    torch.testing.assert_close(p.responsibilities, res.responsibilities[:, [1, 0, 2]])
    torch.testing.assert_close(p.alpha, res.alpha[[1, 0, 2]])
    torch.testing.assert_close(p.concentration, res.concentration[[1, 0, 2]])
    torch.testing.assert_close(p.outliers, res.outliers)
    Xn = torch.as_tensor(X[:7])
    a, b = p.predict(Xn), res.predict(Xn)
    torch.testing.assert_close(a.mean, b.mean)
    torch.testing.assert_close(a.expert_means, b.expert_means[:, [1, 0]])
    torch.testing.assert_close(a.noise_weight, b.noise_weight)


def test_permuted_moves_the_maps_and_kinds_of_mixed_experts():
    """Regression: with experts of different kinds the maps stayed put, so an ellipse's
    weights were read as a circle's."""
    xy = np.vstack(
        [
            circle_points([(40.0, 40.0)], [15.0], 120, jitter=0.2, seed=0)[0],
            ellipse_points((90.0, 60.0), (30.0, 12.0), 0.4, 160, jitter=0.2, seed=1),
        ]
    )
    res = pyro_moe.fit_curves(xy, experts=["circle", "ellipse"])
    p = res.permuted([1, 0])
    assert p.expert_kinds == ["conic", "circle"]
    torch.testing.assert_close(p.maps, res.maps[[1, 0]])
    assert [c.as_dict() for c in p.curves()] == [c.as_dict() for c in res.curves()[::-1]]
    assert p.objective == res.objective
    torch.testing.assert_close(p.predict(res.X[:5]).mean, res.predict(res.X[:5]).mean)


def test_permuted_twice_back_is_the_original_and_bad_permutations_are_refused():
    X, y = two_circles(80, seed=2)
    res = pyro_moe.fit("mixture_of_experts", X, y, experts=2, n_init=1)
    back = res.permuted([1, 0]).permuted([1, 0])
    for key in ["mean", "cov", "responsibilities", "prior_mean", "log_gate"]:
        torch.testing.assert_close(getattr(back, key), getattr(res, key))
    with pytest.raises(pyro_moe.InputError, match="not a permutation"):
        res.permuted([0, 0])


def test_the_gate_is_built_once_not_per_predict(monkeypatch, tmp_path):
    """Regression: every predict of a gated result re-executed the model file."""
    import pyro_moe.model_file as M

    calls = []
    real = M._execute
    monkeypatch.setattr(M, "_execute", lambda *a, **k: calls.append(a) or real(*a, **k))
    X, y = two_circles(80, seed=2)
    res = pyro_moe.fit("mixture_of_experts", X, y, experts=2, n_init=1)
    assert len(calls) == 1  # the fit's one load
    first = res.predict(X[:4]).mean
    for _ in range(20):
        res.predict(X[:4])
    assert len(calls) == 1  # the engine's own gate, cached on the result
    back = pyro_moe.FitResult.load(res.save(tmp_path / "gated.npz"))
    for _ in range(20):
        torch.testing.assert_close(back.predict(X[:4]).mean, first)
    assert len(calls) == 2  # the built-in file, checked by digest and run once after loading


def test_load_refuses_inconsistent_arrays(tmp_path):
    X, y = two_circles(40)
    res = pyro_moe.fit("mixture_of_models", X, y, experts=2, n_init=1)
    path = res.save(tmp_path / "fit.npz")
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files}
    arrays["responsibilities"] = arrays["responsibilities"][:10]
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(pyro_moe.InputError, match="inconsistent result arrays.*responsibilities"):
        pyro_moe.FitResult.load(tmp_path / "bad.npz")
    np.savez(tmp_path / "other.npz", a=np.zeros(3))
    with pytest.raises(pyro_moe.InputError, match="cannot read a saved result"):
        pyro_moe.FitResult.load(tmp_path / "other.npz")


def test_save_refuses_to_replace_what_is_not_a_regular_file(tmp_path):
    X, y = two_circles(40)
    res = pyro_moe.fit("mixture_of_models", X, y, experts=2, n_init=1)
    target = tmp_path / "real.npz"
    target.write_bytes(b"keep me")
    link = tmp_path / "link.npz"
    link.symlink_to(target)
    with pytest.raises(pyro_moe.InputError, match="not a regular file"):
        res.save(link)
    assert link.is_symlink() and target.read_bytes() == b"keep me"
    with pytest.raises(pyro_moe.InputError, match="does not exist"):
        res.save(tmp_path / "missing" / "fit.npz")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.npz", "real.npz"]
