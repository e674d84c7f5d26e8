"""NUTS on the same model file (pyro_moe/engines/nuts.py), the log joint with z summed out
(pyro_moe/joint.py), and PSIS k-hat of the variational fits (pyro_moe/diagnostics.py)."""

from __future__ import annotations

import dataclasses
import warnings

import arviz as az
import numpy as np
import pytest
import torch
from conftest import GAUSSIAN_PRIOR, SWAPS, edited_model

import pyro_moe
from pyro_moe import diagnostics as D
from pyro_moe.joint import LogJoint, fixed_config
from pyro_moe.result import FitResult
from pyro_moe.shapes import circle_image, synthetic_2, synthetic_3

BETA = 4.0  # the noise precision of the K = 1 problems, held fixed


def linear_problem(n: int, N: int = 40, seed: int = 0):
    """y = x^T w + N(0, 1/BETA) with x = [N(0, I_{n-1}), 1]."""
    rng = np.random.default_rng(seed)
    X = np.c_[rng.standard_normal((N, n - 1)), np.ones(N)]
    return X, X @ rng.standard_normal(n) + rng.standard_normal(N) / np.sqrt(BETA)


def exact_posterior(X, y):
    """B = (I + beta X^T X)^{-1}, m = B beta X^T y: the prior N(0, I), beta fixed."""
    B = np.linalg.inv(np.eye(X.shape[1]) + BETA * X.T @ X)
    return B @ (BETA * X.T @ y), B


def k1_fit(n: int, **options) -> FitResult:
    X, y = linear_problem(n)
    return pyro_moe.fit(
        "mixture_of_models", X, y, experts=1, learn="none", noise_precision=BETA, **options
    )


@pytest.mark.parametrize(
    "model, options",
    [
        ("mixture_of_models", {"noise_expert": True}),
        ("mixture_of_experts", {"noise_expert": True}),
        ("regularized_experts", {}),
    ],
)
def test_closed_form_sum_over_z_is_pyros_enumeration(model, options):
    """The log-sum-exp potential equals Pyro's enumeration of the model file itself
    (priors, noise expert, gate, regulariser, Jacobians), at CAVI's mean and off it."""
    data = synthetic_3(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", pyro_moe.ConvergenceWarning)  # any h will do
        fit = pyro_moe.fit_circles(
            data.xy, experts=2, model=model, n_init=1, max_iter=30, **options
        )
    m = fit.model
    cfg = fixed_config(m, fit)
    fast = LogJoint(m, fit.X, fit.y, cfg)
    enum = LogJoint(m, fit.X, fit.y, cfg, marginalize="enumerate")
    assert fast.marginalize == "sum" and enum.marginalize == "enumerate"
    gen = torch.Generator().manual_seed(0)
    for scale in (0.0, 0.05):
        theta = {"w": fit.mean + scale * torch.randn(fit.mean.shape, generator=gen).double()}
        if "pi" in fast.sites:
            theta["pi"] = torch.distributions.Dirichlet(fit.alpha).sample()
        u = fast.unconstrain(theta)
        a, b = float(fast.potential(u)), float(enum.potential(u))
        assert abs(a - b) < 1e-9 * abs(b)


def test_learned_hyperparameters_and_model_params_are_refused(tmp_path):
    """The trap: a hyperparameter left learned is a pyro.param NUTS would freeze."""
    fit = pyro_moe.fit_circles(synthetic_2(0).xy, experts=2, n_init=1)
    m = fit.model
    cfg = fixed_config(m, fit)
    assert cfg.learn == frozenset()
    assert torch.equal(cfg.noise_precision, fit.noise_precision)  # CAVI's beta, not 1/Var y
    learned = dataclasses.replace(cfg, learn=frozenset({"noise_precision"}))
    with pytest.raises(pyro_moe.InputError, match="frozen"):
        LogJoint(m, fit.X, fit.y, learned)
    path = edited_model(
        tmp_path,
        "mixture_of_models",
        "    pi = pyro.sample(",
        '    pyro.param("scale", config.const(1.0))\n    pi = pyro.sample(',
    )
    edited = pyro_moe.load_model(path)
    with pytest.raises(pyro_moe.ModelFileError, match="pyro.param scale"):
        LogJoint(edited, fit.X, fit.y, fixed_config(edited, fit))


@pytest.mark.slow
def test_nuts_recovers_the_exact_gaussian_posterior():
    """K = 1, beta fixed: the posterior is N(m, B) in closed form; NUTS's mean and sd of
    every weight are within 3 Monte Carlo standard errors of it."""
    X, y = linear_problem(3)
    m, B = exact_posterior(X, y)
    result = k1_fit(3, method="nuts", chains=2, warmup=100, max_iter=300, seed=3)
    assert result.method == "nuts" and result.draws.w.shape == (2, 300, 1, 3)
    idata = D.to_inference_data(result)
    assert idata.posterior["w"].dims == ("chain", "draw", "expert", "feature")
    assert {"diverging", "tree_depth", "lp"} <= set(idata.sample_stats.data_vars)
    assert idata.log_likelihood["y"].shape == (2, 300, len(y))
    mean_se = az.mcse(idata, var_names=["w"], method="mean")["w"].values[0]
    sd_se = az.mcse(idata, var_names=["w"], method="sd")["w"].values[0]
    w = idata.posterior["w"].values[:, :, 0].reshape(-1, 3)
    assert np.all(np.abs(w.mean(0) - m) < 3 * mean_se)
    assert np.all(np.abs(w.std(0, ddof=1) - np.sqrt(np.diag(B))) < 3 * sd_se)
    assert float(az.rhat(idata, var_names=["w"])["w"].max()) < 1.01
    assert int(result.draws.diverging.sum()) == 0


def test_khat_of_the_exact_q_and_of_a_shrunk_q():
    """CAVI's q is exact for K = 1 with beta fixed: k-hat < 0.5; the same q with its
    covariance shrunk 4x (sds halved) has heavy-tailed ratios: k-hat > 0.7."""
    exact = k1_fit(6)
    assert D.psis_khat(exact, draws=4000) < 0.5
    shrunk = dataclasses.replace(
        exact, posterior=dataclasses.replace(exact.posterior, cov=exact.cov / 4)
    )
    for seed in range(3):
        assert D.psis_khat(shrunk, draws=4000, seed=seed) > 0.7


@pytest.mark.slow
def test_nuts_on_two_circles_aligns_saves_and_reads_back(tmp_path):
    """Two experts: the draws sit on CAVI's experts (means within 3 sd), permuting the
    result permutes its draws, and save/load keeps them."""
    data = synthetic_2(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", pyro_moe.ConvergenceWarning)  # 2 x 60 draws
        result = pyro_moe.fit_circles(
            data.xy, experts=2, method="nuts", chains=2, warmup=60, max_iter=60,
            noise_expert=False,
        )  # fmt: skip
    cavi = pyro_moe.fit_circles(data.xy, experts=2, noise_expert=False)
    sd = result.cov.diagonal(dim1=-2, dim2=-1).sqrt()
    assert torch.all((result.mean - cavi.mean).abs() < 3 * sd)
    assert torch.equal(result.noise_precision, cavi.noise_precision)  # fixed at CAVI's
    assert result.draws.pi.shape == (2, 60, 2)
    swapped = result.permuted([1, 0])
    assert torch.equal(swapped.draws.w[:, :, 0], result.draws.w[:, :, 1])
    assert torch.equal(swapped.draws.pi[..., 0], result.draws.pi[..., 1])
    back = pyro_moe.CurveFit.load(result.save(tmp_path / "nuts.npz"))
    assert torch.equal(back.draws.w, result.draws.w)
    assert back.draws.info["marginalize"] == "sum"
    idata = D.to_inference_data(back)
    assert set(idata.posterior["r"].dims) == {"chain", "draw", "expert"}
    assert isinstance(D.loo(idata), az.ELPDData)


LATENT_BETA = (
    "    return None\n\n\n# ---- Model",
    "    return dist.Gamma(config.const(2.0), config.const(0.1))\n\n\n# ---- Model",
)


@pytest.mark.parametrize(
    "model, options, edit",
    [
        ("mixture_of_models", {"noise_expert": True}, None),
        ("mixture_of_models", {"per_expert_noise": False}, None),
        ("mixture_of_models", {"noise_expert": True}, LATENT_BETA),
        ("mixture_of_models", {"per_expert_noise": False}, LATENT_BETA),
        ("mixture_of_experts", {"noise_expert": True}, None),
        ("regularized_experts", {}, None),
    ],
)
def test_the_closed_form_energy_and_gradient_are_the_log_joints(tmp_path, model, options, edit):
    """NUTS's closed-form U(eps) and dU/d eps (no autograd) equal -log p(y, theta(eps)) -
    log |det d theta / d eps| through LogJoint and its autograd gradient, off q's centre,
    for every site the model files have (pi, a shared or per-expert beta, latent or fixed,
    a gate, the noise expert, the regulariser)."""
    from pyro_moe.engines.nuts import _Target

    if edit is not None:
        model = edited_model(tmp_path, model, *edit)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", pyro_moe.ConvergenceWarning)
        fit = pyro_moe.fit_circles(
            synthetic_3(0).xy, experts=2, model=model, n_init=1, max_iter=30, **options
        )
    m = fit.model
    joint = LogJoint(m, fit.X, fit.y, fixed_config(m, fit))
    target = _Target(joint, fit, "cavi", 0)
    assert target.closed
    assert ("noise_precision" in target.names) == (edit is not None)
    for seed in (1, 2):
        eps = {n: 3.0 * v for n, v in target.initial(seed).items()}  # well off the centre
        leaves = {n: v.clone().requires_grad_(True) for n, v in eps.items()}
        ref = target.reference(leaves)
        grads = torch.autograd.grad(ref, list(leaves.values()))
        theta = target.theta({n: v.unsqueeze(0) for n, v in eps.items()})
        direct = -(joint.log_prob(theta) + target.log_det(eps, theta))[0]
        U, closed = target.energy(eps)
        assert float(U) == pytest.approx(float(ref.detach()), rel=1e-10, abs=1e-8)
        assert float(direct) == pytest.approx(float(ref.detach()), rel=1e-12)
        for n, g in zip(target.names, grads, strict=True):
            torch.testing.assert_close(closed[n], g, rtol=1e-7, atol=1e-9)


def test_an_edited_prior_falls_back_to_autograd(tmp_path):
    """A weight prior that is not N(w0, A) has no closed form here: the energy is
    LogJoint's with autograd, the same map theta(eps)."""
    from pyro_moe.engines.nuts import _Target

    path = edited_model(
        tmp_path,
        "mixture_of_models",
        "return dist.MultivariateNormal(prior_mean, covariance_matrix=prior_cov)",
        "return dist.Laplace(prior_mean, 3.0).to_event(1)",
    )
    fit = pyro_moe.fit_circles(synthetic_2(0).xy, experts=2, n_init=1)
    m = pyro_moe.load_model(path)
    joint = LogJoint(m, fit.X, fit.y, fixed_config(m, fit))
    target = _Target(joint, fit, "cavi", 0)
    assert not target.closed
    eps = {n: v.clone().requires_grad_(True) for n, v in target.initial(0).items()}
    U = target.potential(target.flatten(eps))
    theta = target.theta({n: v.detach().unsqueeze(0) for n, v in eps.items()})
    assert float(U.detach()) == pytest.approx(
        -float(joint.log_prob(theta)[0] + target.log_det(eps, theta)[0])
    )
    assert all(g.abs().sum() > 0 for g in torch.autograd.grad(U, list(eps.values())))


@pytest.mark.slow
def test_nuts_fixes_h_at_the_optimum_a_users_fit_reaches():
    """NUTS's CAVI runs with the user's search: on three rings with one shared beta, where
    plain CAVI stops at a worse fixed point and the search escapes it (measured), NUTS's
    hyperparameters are those of fit_circles(...)'s CAVI, not of the worse one. From the
    engine's restarts (``seeded=False``): the sequential-RANSAC seed starts at the optimum
    already, and the search then has nothing to do."""
    image, _ = circle_image([(64, 64), (64, 64), (40, 90)], [20, 45, 12], (128, 128))
    common = dict(experts=3, max_points=1000, per_expert_noise=False, seeded=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", pyro_moe.ConvergenceWarning)
        cavi = pyro_moe.fit_circles(image, **common)
        plain = pyro_moe.fit_circles(image, search=False, **common)
        nuts = pyro_moe.fit_circles(image, method="nuts", chains=1, warmup=5, max_iter=5, **common)
    assert cavi.search["accepted"] >= 1 and cavi.objective > plain.objective + 10
    assert nuts.draws.info["cavi_objective"] == pytest.approx(cavi.objective)
    assert torch.allclose(nuts.noise_precision, cavi.noise_precision)


def test_cavi_options_are_checked_as_cavis_own():
    """``cavi_options`` go to the CAVI fit and are validated there, by name."""
    X, y = linear_problem(3)
    with pytest.raises(pyro_moe.InputError, match="cavi_options"):
        pyro_moe.fit("mixture_of_models", X, y, experts=1, method="nuts", cavi_options=3)
    with pytest.raises(pyro_moe.InputError, match="bogus"):
        pyro_moe.fit("mixture_of_models", X, y, experts=1, method="nuts", cavi_options={"bogus": 1})


@pytest.mark.parametrize("prior", sorted(SWAPS))
def test_a_swapped_prior_nuts_agrees_with_natural_svi(tmp_path, prior):
    """A Laplace or Student-t prior on w: CAVI refuses the file, so NUTS takes its
    hyperparameters and preconditioning from SVI (natural gradient, CVI's linearised prior
    step) and samples the file's own posterior (autograd energy). On two noisy circles
    (N = 200) SVI's posterior means agree with NUTS's within 0.25 NUTS sd (measured, 2 x
    500 draws: 0.036 Laplace, 0.052 Student-t) and its sds within 15 % (1-4 %; the sd of
    an sd from ~500 effective draws is ~3 %)."""
    from conftest import two_circles

    path = edited_model(tmp_path, "mixture_of_models", GAUSSIAN_PRIOR, SWAPS[prior])
    X, y = two_circles(200, 0.1, 0)
    with pytest.raises(pyro_moe.NonConjugateError, match=rf"'w'.*{prior}"):
        pyro_moe.fit(path, X, y, experts=2, n_init=1)
    svi = pyro_moe.fit(path, X, y, experts=2, method="svi", n_init=1, final_particles=20)
    nuts = pyro_moe.fit(path, X, y, experts=2, method="nuts", n_init=1, chains=2, max_iter=500)
    assert nuts.draws.info["hyper"].startswith("fixed at the SVI fit's")
    assert nuts.draws.info["gradient"] == "autograd"
    assert nuts.draws.info["hyper_objective"] == pytest.approx(svi.objective)
    assert nuts.draws.info["hyper_method"] == "SVI" and "cavi_objective" not in nuts.draws.info
    assert torch.equal(nuts.noise_precision, svi.noise_precision)
    sd = nuts.cov.diagonal(dim1=-2, dim2=-1).sqrt()
    assert float(((svi.mean - nuts.mean).abs() / sd).max()) < 0.25
    ratio = svi.cov.diagonal(dim1=-2, dim2=-1).sqrt() / sd
    assert float((ratio - 1).abs().max()) < 0.15


def test_hyper_from_takes_a_given_fit_and_checks_its_data():
    """``hyper_from``: NUTS samples at a given fit's hyperparameters, preconditioned by its
    q (here SVI's on a conjugate file); a fit of other data, or of another K, is refused."""
    X, y = linear_problem(2)
    given = pyro_moe.fit("mixture_of_models", X, y, experts=1, method="svi", noise_precision=BETA,
                         learn="none")  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", pyro_moe.ConvergenceWarning)
        nuts = pyro_moe.fit("mixture_of_models", X, y, experts=1, method="nuts", chains=1,
                            warmup=20, max_iter=20, hyper_from=given)  # fmt: skip
    assert nuts.draws.info["hyper"].startswith("fixed at the given fit's")
    assert nuts.draws.info["hyper_objective"] == given.objective
    assert nuts.draws.info["hyper_method"] == "given" and "cavi_objective" not in nuts.draws.info
    assert "not an ELBO" in nuts.summary() and "(ELBO" not in nuts.summary()
    with pytest.raises(pyro_moe.InputError, match="hyper_from.*other data"):
        pyro_moe.fit("mixture_of_models", X[:-1], y[:-1], experts=1, method="nuts",
                     hyper_from=given)  # fmt: skip
    with pytest.raises(pyro_moe.InputError, match="hyper_from.*experts"):
        pyro_moe.fit("mixture_of_models", X, y, experts=2, method="nuts", hyper_from=given)
    with pytest.raises(pyro_moe.InputError, match="hyper_from"):
        pyro_moe.fit("mixture_of_models", X, y, experts=1, method="nuts", hyper_from=3)
