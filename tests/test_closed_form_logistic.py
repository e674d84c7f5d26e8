"""Logistic (Bernoulli) experts in closed form by the Jaakkola-Jordan bound:
``pyro_moe/closed_form/logistic.py`` on ``models/logistic_experts.py``."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from conftest import edited_model
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_pyro_elbo import pyro_elbo

import pyro_moe
from pyro_moe.closed_form.bridge import closed_form_objective, config_at, guide_params
from pyro_moe.closed_form.logistic import jj_lambda, local_bound
from pyro_moe.closed_form.sites import read_model
from pyro_moe.datasets import gated_logistic
from pyro_moe.errors import InputError, NonConjugateError
from pyro_moe.fitting import weight_scale

MODEL = "logistic_experts"
#: the bound's gap to Pyro's ELBO per point at CAVI's optimum xi, measured 0.0017 nat per
#: point at N = 600 and 0.015 at N = 60 (gated_logistic); allowed: 0.03
GAP_PER_POINT = 0.03


def _fit(X, y, model=MODEL, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", pyro_moe.ConvergenceWarning)
        return pyro_moe.fit(model, X, y, **{"experts": 2, **kw})


def test_jj_bound_holds_and_is_tight_at_xi():
    """log sigmoid((2y - 1) s) >= l(xi) for every xi, with equality at xi = |s| (q(w) a
    point mass: E s^2 = s^2); lambda(xi) -> 1/8 at 0."""
    s = torch.linspace(-6, 6, 49, dtype=torch.float64).unsqueeze(-1)
    for y in (0.0, 1.0):
        yy = torch.full((49,), y, dtype=torch.float64)
        exact = torch.nn.functional.logsigmoid((2 * y - 1) * s)
        for xi in (0.0, 0.5, 3.0):
            assert bool((local_bound(yy, s, s * s, torch.full_like(s, xi)) <= exact + 1e-12).all())
        torch.testing.assert_close(local_bound(yy, s, s * s), exact, rtol=1e-12, atol=1e-12)
    assert float(jj_lambda(torch.zeros(1, dtype=torch.float64))) == 0.125


def test_read_model_finds_logistic_experts(tmp_path):
    X, y, _ = gated_logistic(40, seed=1)
    X, y = torch.as_tensor(X), torch.as_tensor(y)
    model = pyro_moe.load_model(MODEL)
    assert read_model(model, X, y, model.config(X, y, 2)).observation.kind == "logistic"
    doubled = pyro_moe.load_model(
        edited_model(tmp_path, MODEL, "Bernoulli(logits=logits)", "Bernoulli(logits=2 * logits)")
    )
    with pytest.raises(NonConjugateError, match="'y'"):
        read_model(doubled, X, y, doubled.config(X, y, 2))
    with pytest.raises(InputError, match="0s and 1s"):
        read_model(model, X, y + 0.5, model.config(X, y + 0.5, 2))


def test_objective_is_a_tight_lower_bound_of_pyros_elbo():
    """CAVI's objective (the JJ bound) is at most Pyro's Monte Carlo ELBO of the file's
    guide q(Z) q(W), and within GAP_PER_POINT nat per point of it at the optimum xi; the
    exact ELBO is never claimed (closed_form_objective refuses without bound=True)."""
    X, y, _ = gated_logistic(60, seed=1)
    model = pyro_moe.load_model(MODEL)
    res = _fit(X, y, model=model, n_init=1, max_iter=40)
    config = config_at(
        res, model.config(res.X, res.y, 2, weight_scale=weight_scale(res.X, res.y, 2.5))
    )
    params = guide_params(res)
    mean, se = pyro_elbo(model, res.X, res.y, config, params)
    assert res.objective <= mean + 4 * se
    assert mean - res.objective <= GAP_PER_POINT * 60, (mean, res.objective)
    bound = closed_form_objective(model, res.X, res.y, config, params, bound=True)[1]
    assert bound == pytest.approx(res.objective, rel=1e-12)
    with pytest.raises(NonConjugateError, match="Jaakkola-Jordan"):
        closed_form_objective(model, res.X, res.y, config, params)


LEARN = ["all", "none", ["gate"], ["prior_mean", "prior_cov"], ["prior_mean", "gate"]]


@settings(
    max_examples=25, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
@given(
    N=st.integers(6, 40),
    K=st.integers(1, 3),
    learn=st.sampled_from(LEARN),
    init=st.sampled_from(["prior", "subsets", "random"]),
    seed=st.integers(0, 2**16),
)
def test_objective_never_decreases(N, K, learn, init, seed):
    rng = np.random.default_rng(seed)
    X, y, _ = gated_logistic(N, seed=seed)
    res = _fit(
        X, y, experts=min(K, N), n_init=1, init=init, max_iter=30, learn=learn, seed=seed,
        prior_mean=rng.normal(size=(min(K, N), 2)),
    )  # fmt: skip
    h = res.objective_history.numpy()
    assert np.isfinite(h).all()
    assert (h[:-1] - h[1:]).max(initial=0.0) <= 1e-9 * (np.abs(h).max() + N), h


def test_natural_svi_reaches_cavi():
    X, y, _ = gated_logistic(150, seed=2)
    cavi = _fit(X, y, n_init=1, seed=0)
    svi = _fit(X, y, n_init=1, seed=0, method="svi")
    assert abs(svi.objective - cavi.objective) < 0.1, (svi.objective, cavi.objective)


def test_predict_gives_bernoulli_probabilities():
    """predict reads the file's Bernoulli: means are P(y = 1 | x) in [0, 1] and
    log_prob(1) = log of that mean (the same draws), log_prob(0) = log(1 - mean)."""
    X, y, _ = gated_logistic(100, seed=1)
    res = _fit(X, y, n_init=1, max_iter=50)
    p = res.predict(X[:20], draws=300, seed=1)
    assert p.likelihood == "Bernoulli"
    assert bool(((p.mean >= 0) & (p.mean <= 1)).all())
    one, zero = torch.ones(20, dtype=torch.float64), torch.zeros(20, dtype=torch.float64)
    torch.testing.assert_close(p.log_prob(one), p.mean.log(), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(p.log_prob(zero), torch.log1p(-p.mean), rtol=1e-10, atol=1e-12)


def _held_out(p, y):
    return float(np.mean(y * np.log(p) + (1 - y) * np.log1p(-p)))


@pytest.mark.slow
def test_beats_the_null_model_and_one_logistic_regression():
    """Held-out log-likelihood per point on data from two gated logistic experts."""
    from sklearn.linear_model import LogisticRegression

    X, y, _ = gated_logistic(300, seed=0)
    Xt, yt, _ = gated_logistic(600, seed=1)
    res = _fit(X, y, seed=0, n_init=1, tol=1e-6)
    ours = float(res.predict(Xt, draws=500).log_prob(yt).mean())
    lr = LogisticRegression().fit(X, y).predict_proba(Xt)[:, 1]
    null = _held_out(np.full(len(yt), y.mean()), yt)
    assert ours > _held_out(lr, yt) + 0.1 and ours > null + 0.1, (ours, _held_out(lr, yt), null)


@pytest.mark.slow
def test_agrees_with_nuts():
    """CAVI's means within 0.35 NUTS sd of NUTS's (hyperparameters and gate fixed at
    CAVI's, the file's own Bernoulli likelihood sampled). The mean-field gap itself,
    measured with 2 x 1500 draws: 0.26 (the gate step's hand-written gradient) and 0.28
    (autograd's, the same F to 1e-6 nats); this test's 2 x 300 draws put it at 0.20-0.28
    over NUTS seeds and the two gradients, so the earlier bound of 0.25, below the gap,
    passed by the luck of the draw."""
    X, y, _ = gated_logistic(300, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cavi = _fit(X, y, seed=0)
        nuts = pyro_moe.fit(
            MODEL, X, y, experts=2, seed=0, method="nuts", max_iter=300, warmup=200, chains=2
        )
    sd = nuts.cov.diagonal(dim1=-2, dim2=-1).sqrt()
    err = ((cavi.mean - nuts.mean) / sd).abs()
    assert float(err.max()) < 0.35, err
