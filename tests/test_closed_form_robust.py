"""Robust (Student-t) experts in closed form: ``pyro_moe/closed_form/robust.py`` on
``models/robust_experts.py``."""

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
from pyro_moe.closed_form import updates as U
from pyro_moe.closed_form.bridge import closed_form_objective, config_at, guide_params
from pyro_moe.closed_form.robust import bound_at, local_factors, local_log_densities
from pyro_moe.closed_form.sites import read_model
from pyro_moe.datasets import outlier_lines
from pyro_moe.errors import InputError, NonConjugateError
from pyro_moe.fitting import weight_scale

MODEL = "robust_experts"


def _fit(X, y, model=MODEL, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", pyro_moe.ConvergenceWarning)
        return pyro_moe.fit(model, X, y, **{"experts": 2, **kw})


def _conj(model, X, y, **kw):
    X, y = torch.as_tensor(X), torch.as_tensor(y)
    return read_model(model, X, y, model.config(X, y, 2, **kw))


def test_read_model_finds_the_scale_mixture(tmp_path):
    """nu is read from the file's Gamma(nu/2, nu/2) site, whatever its value."""
    X, y, _, _ = outlier_lines(30, seed=1)
    obs = _conj(pyro_moe.load_model(MODEL), X, y).observation
    assert (obs.kind, obs.nu, obs.site) == ("robust", 4.0, "robust_weight")
    six = pyro_moe.load_model(edited_model(tmp_path, MODEL, "DOF = 4.0", "DOF = 6.5"))
    assert _conj(six, X, y).observation.nu == 6.5


@pytest.mark.parametrize(
    "old, new, site",
    [
        (
            "lam = parts.robust_weight(DOF, config)",
            "lam = pyro.sample('robust_weight', dist.Gamma(config.const(2.0), config.const(3.0)))",
            "robust_weight",
        ),
        ("* lam\n", "* lam.sqrt()\n", "y"),
    ],
    ids=["not Gamma(nu/2, nu/2)", "lambda not the precision's factor"],
)
def test_other_per_point_sites_are_refused_by_name(tmp_path, old, new, site):
    X, y, _, _ = outlier_lines(30, seed=1)
    model = pyro_moe.load_model(edited_model(tmp_path, MODEL, old, new))
    with pytest.raises(NonConjugateError, match=f"'{site}'"):
        _conj(model, X, y)


def test_the_local_factor_is_the_bound_at_its_maximum():
    """L_ik is bound_at at the optimal Gamma(a, b_ik), and any other Gamma gives less."""
    g = torch.Generator().manual_seed(0)
    e = torch.rand(20, 3, generator=g, dtype=torch.float64) * 5
    beta, nu = torch.tensor([0.5, 2.0, 7.0], dtype=torch.float64), 4.0
    a, b = local_factors(e, beta, nu)
    best = local_log_densities(e, beta.log(), beta, nu)
    at = bound_at(e, beta.log(), beta, nu, torch.full_like(b, a), b)
    torch.testing.assert_close(at, best, rtol=1e-12, atol=1e-12)
    other = bound_at(e, beta.log(), beta, nu, torch.full_like(b, a) * 1.3, b * 0.8)
    assert bool((other < best).all())


def test_closed_form_elbo_matches_pyro():
    """The closed-form objective equals Pyro's Monte Carlo ELBO of the file's model and
    guide (q(lambda | z) included), at CAVI's optimum and at perturbed guide parameters."""
    X, y, _, _ = outlier_lines(40, seed=1)
    model = pyro_moe.load_model(MODEL)
    res = _fit(X, y, model=model, n_init=1, max_iter=15)
    config = config_at(res, model.config(res.X, res.y, 2, weight_scale=weight_scale(res.X, res.y)))
    obs = read_model(model, res.X, res.y, config).observation
    params = guide_params(res)
    q = U.WeightPosterior(res.mean, res.cov, U.cholesky_logdet(torch.linalg.cholesky(res.cov)))
    params.update(obs.guide_factors(res.X, res.y, q, res.noise_precision))
    mean, se = pyro_elbo(model, res.X, res.y, config, params)
    assert abs(mean - res.objective) < 4 * se + 1e-9, (mean, se, res.objective)
    exact = closed_form_objective(model, res.X, res.y, config, params)[1]
    assert exact == pytest.approx(res.objective, rel=1e-12)
    rng = torch.Generator().manual_seed(0)
    bent = dict(params)
    shape = params["assignment_probs"].shape
    bent["assignment_probs"] = torch.softmax(torch.randn(shape, generator=rng).double(), -1)
    bent["weight_mean"] = params["weight_mean"] + 0.05 * torch.randn(2, 2, generator=rng).double()
    bent["robust_rate"] = params["robust_rate"] * (0.5 + torch.rand(shape, generator=rng).double())
    mean, se = pyro_elbo(model, res.X, res.y, config, bent)
    exact = closed_form_objective(model, res.X, res.y, config, bent)[1]
    assert abs(mean - exact) < 4 * se + 1e-9, (mean, se, exact)
    assert exact < res.objective  # away from the optimum of q(lambda), q(Z), q(W)


LEARN = [
    "all",
    "none",
    ["noise_precision"],
    ["prior_mean", "prior_cov"],
    ["noise_precision", "gate"],
]


@settings(
    max_examples=25, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
@given(
    N=st.integers(6, 40),
    K=st.integers(1, 3),
    learn=st.sampled_from(LEARN),
    init=st.sampled_from(["prior", "subsets", "random"]),
    seed=st.integers(0, 2**16),
    share=st.floats(0.0, 0.4),
    per_expert=st.booleans(),
)
def test_objective_never_decreases(N, K, learn, init, seed, share, per_expert):
    rng = np.random.default_rng(seed)
    X, y, _, _ = outlier_lines(N, share=share, seed=seed)
    res = _fit(
        X, y, experts=min(K, N), n_init=1, init=init, max_iter=30, learn=learn, seed=seed,
        prior_mean=rng.normal(size=(min(K, N), 2)), per_expert_noise=per_expert,
    )  # fmt: skip
    h = res.objective_history.numpy()
    assert np.isfinite(h).all()
    assert (h[:-1] - h[1:]).max(initial=0.0) <= 1e-9 * (np.abs(h).max() + N), h


def test_objective_never_decreases_with_a_gamma_noise_prior(tmp_path):
    """q(beta) = Gamma: its update reads the E[lambda]-weighted squared residuals."""
    edit = ("    return None\n", "    return dist.Gamma(config.const(2.0), config.const(0.5))\n")
    model = pyro_moe.load_model(edited_model(tmp_path, MODEL, *edit))
    X, y, _, _ = outlier_lines(40, seed=3)
    res = _fit(X, y, model=model, n_init=1, max_iter=40, learn=["gate"])
    h = res.objective_history.numpy()
    assert (h[:-1] - h[1:]).max(initial=0.0) <= 1e-9 * (np.abs(h).max() + 40)
    assert res.noise_shape is not None


def test_natural_svi_reaches_cavi():
    """Natural-gradient SVI runs the same sweep: within 0.1 nat of CAVI."""
    X, y, _, _ = outlier_lines(150, seed=2)
    cavi = _fit(X, y, n_init=1, seed=0)
    svi = _fit(X, y, n_init=1, seed=0, method="svi")
    assert abs(svi.objective - cavi.objective) < 0.1, (svi.objective, cavi.objective)


def _sd_errors(res, W):
    """|m - w| / sd for each expert matched to its true line (by the order of the slopes)."""
    order = np.argsort(res.mean[:, 0].numpy())
    m = res.mean.numpy()[order]
    sd = res.cov.diagonal(dim1=-2, dim2=-1).sqrt().numpy()[order]
    return np.abs(m - W[np.argsort(W[:, 0])]) / sd


@pytest.mark.slow
def test_twenty_percent_gross_outliers():
    """The robust file recovers both true lines within 2 posterior sd; the Gaussian
    mixture of experts does not."""
    X, y, W, _ = outlier_lines(400, share=0.2, seed=0)
    robust = _fit(X, y, seed=0)
    gauss = _fit(X, y, model="mixture_of_experts", seed=0)
    assert _sd_errors(robust, W).max() < 2.0, _sd_errors(robust, W)
    assert _sd_errors(gauss, W).max() > 2.0, _sd_errors(gauss, W)


def test_predict_integrates_the_scale_weights_out():
    """predict draws lambda from its prior at new rows (a Student-t predictive, not the
    Gaussian's): log_prob is the file's; interval and the pointwise log-likelihood of the
    draws, which would need lambda integrated, refuse by name."""
    X, y, _, _ = outlier_lines(60, seed=1)
    res = _fit(X, y, n_init=1, max_iter=30)
    p = res.predict(X[:10], draws=200)
    assert "robust_weight" in p.likelihood
    assert torch.isfinite(p.log_prob(y[:10])).all()
    with pytest.raises(InputError, match="mixture of Gaussians"):
        p.interval()
    with pytest.raises(InputError, match="robust_weight"):
        res.pointwise_log_likelihood({"w": res.mean.unsqueeze(0)})


def test_distributed_data_is_refused():
    from pyro_moe.closed_form.robust import RobustExperts
    from pyro_moe.engines.observed import observed_source

    with pytest.raises(InputError, match="in memory"):
        observed_source(object(), RobustExperts(nu=4.0, site="robust_weight"))


@pytest.mark.slow
def test_nuts_samples_the_file_through_the_generic_path():
    X, y, _, _ = outlier_lines(40, seed=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = pyro_moe.fit(MODEL, X, y, experts=2, method="nuts", max_iter=40, warmup=40, chains=1)
    assert res.draws.info["target"] == "generic"
    assert "robust_weight" in res.draws.info["sites"]
    assert torch.isfinite(res.mean).all()
