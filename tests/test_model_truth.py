"""Issue 26, "the model file is the whole truth": every engine, diagnostic and prediction
reads the file's own sites and likelihood, or refuses it by site name; never another
model's answer. The files are copies of ``models/mixture_of_experts.py`` with the
observation written out (:func:`conftest.observed_model`) or one site added."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import observed_model

import pyro_moe
from pyro_moe.closed_form.bridge import closed_form_objective, guide_params
from pyro_moe.closed_form.sites import read_model
from pyro_moe.fitting import as_data


def two_lines(N: int = 60, seed: int = 0):
    """Two linear regimes in x (X = [x, 1]): the gate splits them at x = 0."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, N)
    y = np.where(x < 0, 1 + 2 * x, -1 + 0.5 * x) + 0.1 * rng.normal(size=N)
    return np.c_[x, np.ones(N)], y


def _load(path):
    return pyro_moe.load_model(str(path))


# ---- 1. engines prove what they assume --------------------------------------------------
@pytest.mark.parametrize(
    "edit",
    [
        "dist.Normal(mean**3, scale)",  # an edited mean
        "dist.Normal(mean, scale * (1 + X[idx, 0].abs()))",  # a scale that depends on x
        "dist.Normal(mean + 0.1 * mean**2, scale)",
    ],
)
def test_closed_form_engines_refuse_an_edited_gaussian_likelihood_by_site(tmp_path, edit):
    """Today CAVI and natural SVI checked only the family of y: an edited mean or scale got
        the linear model's answer. Now the trace's density of y is checked against the closed
        form's at random draws of the latents, and CAVI refuses naming 'y' (beta held fixed, so
    the refusal is not the learned hyperparameter's)."""
    path = observed_model(tmp_path, edit)
    X, y = two_lines()
    with pytest.raises(pyro_moe.NonConjugateError, match=r"site 'y'.*optimizer='adam'.*nuts"):
        pyro_moe.fit(path, X, y, experts=2, n_init=1, learn=("gate",))
    model = _load(path)
    Xt, yt = as_data(X, y)
    cfg = model.config(Xt, yt, 2, learn=("gate",))
    with pytest.raises(pyro_moe.NonConjugateError, match="site 'y'"):
        read_model(model, Xt, yt, cfg, linearise_w=True)  # natural SVI's reading


def test_the_written_out_gaussian_file_is_still_the_closed_form(tmp_path):
    """The same file with the likelihood unedited is accepted and fits as the built-in."""
    X, y = two_lines()
    ours = pyro_moe.fit(observed_model(tmp_path), X, y, experts=2, n_init=1, seed=1)
    builtin = pyro_moe.fit(  # the written-out file shares one beta (conftest.observed_model)
        "mixture_of_experts", X, y, experts=2, n_init=1, seed=1, per_expert_noise=False
    )
    assert ours.objective == pytest.approx(builtin.objective, abs=1e-8)


def test_adam_reports_the_files_own_elbo_not_the_closed_forms(tmp_path):
    """Adam on a file that is not the closed form's reports Pyro's Monte Carlo ELBO of the
    file (with its standard error), not the linear model's closed form at its parameters."""
    path = observed_model(tmp_path, "dist.Normal(mean**3, scale)")
    X, y = two_lines()
    fit = pyro_moe.fit(path, X, y, experts=2, method="svi", optimizer="adam", n_init=1,
                       max_iter=100)  # fmt: skip
    assert fit.restarts[0]["objective_se"] > 0  # a Monte Carlo estimate
    model = _load(path)
    Xt, yt = as_data(X, y)
    cfg = model.config(Xt, yt, 2)
    with pytest.raises(pyro_moe.NonConjugateError, match="site 'y'"):
        closed_form_objective(model, Xt, yt, cfg, guide_params(fit))
    same = pyro_moe.fit("mixture_of_experts", X, y, experts=2, method="svi", optimizer="adam",
                        n_init=1, max_iter=100)  # fmt: skip
    assert same.restarts[0]["objective_se"] == 0.0  # the closed form where it holds


# ---- 2. diagnostics and predict read the file's own likelihood ---------------------------
STUDENT_T = "dist.StudentT(3.0, mean, scale)"
BERNOULLI = "dist.Bernoulli(logits=mean)"


@pytest.fixture(scope="module")
def file_fits(tmp_path_factory):
    """Adam fits (short: the numbers are compared with hand computations at the fit, not
    with an optimum) of a Student-t and a Bernoulli file, by likelihood."""
    import warnings

    d = tmp_path_factory.mktemp("files")
    X, y = two_lines()
    out = {}
    for lik, yy in ((STUDENT_T, y), (BERNOULLI, (y > 0).astype(float))):
        path = observed_model(d, lik, name=lik.split("(")[0].split(".")[1])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out[lik] = pyro_moe.fit(path, X, yy, experts=2, method="svi", optimizer="adam",
                                    n_init=1, max_iter=100)  # fmt: skip
    return out


def _hand_component_log_density(lik, X, y, w, beta):
    """log p(y_i | z_i = k, w) (S, N, K) written out by hand (torch.distributions)."""
    loc = X @ w.transpose(-1, -2)  # (S, N, K)
    if lik == STUDENT_T:
        scale = beta.rsqrt()
        return torch.distributions.StudentT(3.0, loc, scale).log_prob(y.unsqueeze(-1))
    return torch.distributions.Bernoulli(logits=loc).log_prob(y.unsqueeze(-1))


def _hand_log_lik(fit, lik, w):
    """log p(y_i | w) (S, N) by hand: log sum_k g_k(x_i) p(y_i | z_i = k, w)."""
    dens = _hand_component_log_density(lik, fit.X, fit.y, w, fit.noise_precision)
    return torch.logsumexp(fit.log_gate + dens, -1)


@pytest.mark.parametrize("lik", [STUDENT_T, BERNOULLI])
def test_khat_is_the_files_own_by_hand(file_fits, lik):
    """k-hat's importance ratios use the file's likelihood (was: the Gaussian's, k-hat 3.56
    on Student-t, inf on Bernoulli): equal to a hand computation to 1e-8."""
    import arviz as az

    from pyro_moe.diagnostics import psis_khat
    from pyro_moe.joint import q_draws

    fit = file_fits[lik]
    S = 200
    theta = q_draws(fit, ["w"], S, torch.Generator().manual_seed(0))
    w = theta["w"]
    prior = torch.distributions.MultivariateNormal(fit.prior_mean, fit.prior_cov)
    q = torch.distributions.MultivariateNormal(fit.mean, 0.5 * (fit.cov + fit.cov.mT))
    log_p = prior.log_prob(w).sum(-1) + _hand_log_lik(fit, lik, w).sum(-1)
    log_ratio = (log_p - q.log_prob(w).sum(-1)).numpy()
    _, k_hand = az.psislw(log_ratio - log_ratio.max())
    k = psis_khat(fit, draws=S, seed=0)
    assert np.isfinite(k)
    assert k == pytest.approx(float(k_hand), abs=1e-8)


@pytest.mark.parametrize("lik", [STUDENT_T, BERNOULLI])
def test_loo_is_the_files_own_by_hand(file_fits, lik):
    """The pointwise log-likelihood behind LOO is the file's own at the same draws (1e-8),
    and elpd_loo follows."""
    import arviz as az

    from pyro_moe.diagnostics import loo, to_inference_data

    fit = file_fits[lik]
    idata = to_inference_data(fit, draws=200, seed=0)
    w = torch.from_numpy(idata.posterior["w"].values[0])
    hand = _hand_log_lik(fit, lik, w).numpy()
    np.testing.assert_allclose(idata.log_likelihood["y"].values[0], hand, rtol=0, atol=1e-8)
    elpd = loo(idata).elpd_loo
    by_hand = idata.copy()
    by_hand.log_likelihood["y"].values[0] = hand
    assert elpd == pytest.approx(float(loo(by_hand).elpd_loo), abs=1e-8)
    assert elpd == pytest.approx(float(az.loo(by_hand, reff=1.0).elpd_loo), abs=1e-8)


def test_the_files_own_log_likelihood_equals_the_closed_form_on_the_built_in_files():
    """Pyro's pointwise log-likelihood of a built-in file (z enumerated, through the trace)
    equals the closed-form fast path to 1e-8, noise expert on and off."""
    from conftest import two_circles

    from pyro_moe.joint import file_joint, q_draws

    X, y = two_circles(40)
    # the Gaussian files; robust_experts and logistic_experts have no fast path (a
    # per-point latent, a Bernoulli y): tests/test_closed_form_robust.py and _logistic.py
    gaussian = set(pyro_moe.builtin_models()) - {"robust_experts", "logistic_experts"}
    assert len(gaussian) == 3
    for name in sorted(gaussian):
        for noise in (False, True):
            fit = pyro_moe.fit(name, X, y, experts=2, n_init=1, noise_expert=noise)
            joint = file_joint(fit)
            assert joint.fast
            theta = q_draws(fit, joint.sites, 4, torch.Generator().manual_seed(0))
            torch.testing.assert_close(
                joint.file_log_likelihood(theta), joint.log_likelihood(theta), rtol=0, atol=1e-8
            )


def test_prediction_log_prob_of_the_built_in_file_by_hand():
    """Prediction.log_prob on the built-in Gaussian file: log sum_k g_k(x) N(y | m_k^T x,
    1/beta + x^T B_k x), by hand (1e-8)."""
    X, y = two_lines()
    fit = pyro_moe.fit("mixture_of_experts", X, y, experts=2, n_init=1)
    Xn, yn = two_lines(20, seed=5)
    pred = fit.predict(Xn)
    Xt = torch.as_tensor(Xn, dtype=fit.X.dtype)
    mu = Xt @ fit.mean.T
    var = 1 / fit.noise_precision + torch.einsum("ni,kij,nj->nk", Xt, fit.cov, Xt)
    hand = torch.logsumexp(
        fit.expert_weights(Xt).log()
        + torch.distributions.Normal(mu, var.sqrt()).log_prob(torch.as_tensor(yn).unsqueeze(-1)),
        -1,
    )
    torch.testing.assert_close(pred.log_prob(yn), hand, rtol=0, atol=1e-8)


@pytest.mark.parametrize("lik", [STUDENT_T, BERNOULLI])
def test_prediction_reads_the_files_likelihood(file_fits, lik):
    """predict on a Student-t or Bernoulli file: the file's own moments (Bernoulli: a
    probability, never logits) and log_prob = log (1/S) sum_s sum_k g_k p(y | k, w_s),
    by hand at the same draws (1e-8); the Gaussian-only interval is refused."""
    from pyro_moe.joint import q_draws

    fit = file_fits[lik]
    Xn, yn = two_lines(15, seed=7)
    if lik == BERNOULLI:
        yn = (yn > 0).astype(float)
    S = 100
    pred = fit.predict(Xn, draws=S, seed=3)
    assert pred.likelihood == lik.split("(")[0].split(".")[1]
    w = q_draws(fit, ["w"], S, torch.Generator().manual_seed(3))["w"]
    Xt, yt = (torch.as_tensor(a, dtype=fit.X.dtype) for a in (Xn, yn))
    terms = fit.expert_weights(Xt).log() + _hand_component_log_density(
        lik, Xt, yt, w, fit.noise_precision
    )
    hand = torch.logsumexp(torch.logsumexp(terms, -1), 0) - np.log(S)
    torch.testing.assert_close(pred.log_prob(yn), hand, rtol=0, atol=1e-8)
    if lik == BERNOULLI:
        p = torch.sigmoid(Xt @ w.transpose(-1, -2))  # (S, N, K)
        mean = (fit.expert_weights(Xt) * p).sum(-1).mean(0)
        torch.testing.assert_close(pred.mean, mean, rtol=0, atol=1e-10)
        assert bool(((pred.mean > 0) & (pred.mean < 1)).all())
    with pytest.raises(pyro_moe.InputError, match="interval needs the mixture of Gaussians"):
        pred.interval()


# ---- 3. and 4. files with an added latent site ------------------------------------------
@pytest.fixture(scope="module")
def ard_fit(tmp_path_factory):
    """A short Adam fit of a file with an ARD precision alpha (K, n) per expert and
    feature (its guide puts q(alpha) beside q(w) in one experts plate)."""
    import warnings

    from conftest import added_site_model

    path = added_site_model(tmp_path_factory.mktemp("ard"), "ard")
    X, y = two_lines()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pyro_moe.fit(path, X, y, experts=2, method="svi", optimizer="adam", n_init=1,
                            max_iter=100)  # fmt: skip


def test_nuts_samples_an_added_site(ard_fit):
    """Was: a raw KeyError after a long SVI fit, then a refusal by name. Now NUTS samples
    the added site (short chains here; tests/test_nuts_any_file.py checks convergence)."""
    import warnings

    X, y = two_lines()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", pyro_moe.ConvergenceWarning)
        nuts = pyro_moe.fit(ard_fit.model.path, X, y, experts=2, method="nuts",
                            hyper_from=ard_fit, chains=2, warmup=20, max_iter=10)  # fmt: skip
    assert nuts.draws.info["sites"] == ["alpha", "w"]
    assert nuts.posterior.site_draws["alpha"].shape == (20, 2, 2)
    assert bool((nuts.posterior.site_draws["alpha"] > 0).all())


def test_khat_refuses_an_added_site_by_name(ard_fit):
    from pyro_moe.diagnostics import psis_khat

    with pytest.raises(pyro_moe.InputError, match=r"\['alpha'\]"):
        psis_khat(ard_fit, draws=50)


def test_an_added_per_expert_site_moves_with_its_expert(ard_fit):
    """alpha (K, n) is relabelled by permuted / aligned_to (its expert axis read from the
    experts plate), and named (expert, feature) in ArviZ (was alpha_dim_0/1)."""
    alpha = ard_fit.posterior.site_draws["alpha"]
    assert alpha.shape[1:] == (2, 2)
    swapped = ard_fit.permuted([1, 0])
    torch.testing.assert_close(swapped.posterior.site_draws["alpha"], alpha[:, [1, 0]])
    torch.testing.assert_close(swapped.mean, ard_fit.mean[[1, 0]])
    back = swapped.aligned_to(ard_fit)
    torch.testing.assert_close(back.posterior.site_draws["alpha"], alpha)
    idata = pyro_moe.diagnostics.to_inference_data(ard_fit, draws=50)
    assert idata.posterior["alpha"].dims == ("chain", "draw", "expert", "feature")
    assert list(idata.posterior["alpha"].coords["feature"].values) == ["w0", "w1"]
    np.testing.assert_allclose(idata.posterior["alpha"].values[0], alpha[:50].numpy())
    # the pointwise log-likelihood reads the file (alpha is a prior site: the Gaussian's)
    assert np.isfinite(idata.log_likelihood["y"].values).all()


def test_the_ard_guide_composes_with_parts_weights_guide_in_one_plate(ard_fit):
    """parts.weights_guide(config, plate=...) samples w inside the caller's plate, so an
    added per-expert site sits beside it (was: "Multiple sample sites named 'experts'")."""
    assert ard_fit.posterior.site_draws["alpha"].shape == (1000, 2, 2)
    assert ard_fit.mean.shape == (2, 2)


def test_diagnostics_is_an_attribute_of_the_package():
    import subprocess
    import sys

    code = "import pyro_moe; print(pyro_moe.diagnostics.to_inference_data.__name__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "to_inference_data"


def test_the_log_joint_of_a_student_t_file_enumerates_the_file(file_fits):
    """NUTS's target on a Student-t file is the file's own (Pyro's enumeration), never the
    Gaussian log-sum-exp; "auto" says which it chose."""
    from pyro_moe.joint import file_joint

    joint = file_joint(file_fits[STUDENT_T])
    assert not joint.fast and joint.marginalize == "enumerate"
    assert "not the closed form's Gaussian" in joint.mismatch or "StudentT" in joint.mismatch
