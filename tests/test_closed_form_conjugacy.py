"""The conjugacy rule (pyro_moe.closed_form.conjugacy): sites are found conjugate from the
traced model file, not by name; its natural parameters equal the hand-written updates on
the built-in files; a site no module names fits by CAVI; a non-conjugate one is refused."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import GAMMA_PRIOR_EDIT, edited_model, kappa_model, two_circles

import pyro_moe
from pyro_moe.closed_form import updates as U
from pyro_moe.closed_form.conjugacy import complete_conditional, natural_parameters
from pyro_moe.fitting import as_data, weight_scale

FILES = Path(__file__).parent / "model_files"


def _config(model, X, y, K=2, **kw):
    return model.config(X, y, K, learn=(), weight_scale=weight_scale(X, y), **kw)


def _one_hot_stats(X, y, z, K):
    r = torch.nn.functional.one_hot(z, K).to(X.dtype)
    return U.sufficient_stats(X, y, r)


@pytest.mark.parametrize("per_expert", [False, True])
def test_the_rule_reads_the_hand_written_updates(tmp_path, per_expert):
    """On the built-in mixture of models with a latent beta ~ Gamma(2, 0.5): the complete
    conditionals the rule reads from Pyro's log joint at a draw of the other sites equal
    the hand-written updates at q = that draw (q(Z) one-hot, q(W) a point): q(beta)
    (update_noise_gamma), q(pi) (mu + N_k) and q(W) (weights_natural), to 1e-12."""
    model = pyro_moe.load_model(edited_model(tmp_path, "mixture_of_models", *GAMMA_PRIOR_EDIT))
    X, y = as_data(*two_circles(30, seed=2))
    config = _config(model, X, y, concentration=[0.7, 2.5], per_expert_noise=per_expert)
    from pyro_moe.closed_form.conjugacy import _latent_values, _trace

    values = _latent_values(_trace(model, X, y, config, {}))
    K, n = 2, X.shape[1]
    z, w, beta = values["z"], values["w"], values["noise_precision"]
    stats = _one_hot_stats(X, y, z, K)
    # beta: (a - 1, -b)
    nat, kids = complete_conditional(model, X, y, config, "noise_precision", values)
    assert kids == ("y",)
    q = U.WeightPosterior(w, torch.zeros(K, n, n, dtype=X.dtype), torch.zeros(K))
    total, count = U.summed_sq_residuals(stats, q), stats.Nk
    if not per_expert:
        total, count = total.sum(), count.sum()
    a0 = torch.tensor(2.0, dtype=X.dtype)
    a, b = U.update_noise_gamma(total, count, a0, torch.tensor(0.5, dtype=X.dtype))
    torch.testing.assert_close(nat.eta[0], (a - 1).expand_as(nat.eta[0]), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(nat.eta[1], (-b).expand_as(nat.eta[1]), rtol=1e-12, atol=1e-12)
    # pi: alpha - 1 = mu + N_k - 1
    nat, kids = complete_conditional(model, X, y, config, "pi", values)
    assert kids == ("z",)
    want = config.concentration + stats.Nk - 1
    torch.testing.assert_close(nat.eta[0], want, rtol=1e-10, atol=1e-10)
    # w: (h, J), block-diagonal over the experts
    nat, kids = complete_conditional(model, X, y, config, "w", values)
    assert kids == ("y",)
    prior = U.weight_prior(config.prior_mean, config.prior_cov)
    h, J = U.weights_natural(stats, prior, beta)
    torch.testing.assert_close(nat.eta[0], h.reshape(-1), rtol=1e-12, atol=1e-10)
    torch.testing.assert_close(nat.eta[1], torch.block_diag(*J), rtol=1e-12, atol=1e-10)


def test_the_rule_refuses_a_log_joint_outside_the_family():
    """A Gamma whose log joint has a term outside (log theta, theta) (here 1/theta, as a
    Gamma-distributed *variance* gives) is not conjugate: the verification fails."""
    gen = torch.Generator().manual_seed(0)
    v = torch.full((3,), 2.0, dtype=torch.float64)

    def conj(t):
        return (1.5 * torch.log(t) - 2.0 * t).sum()

    def not_conj(t):
        return (1.5 * torch.log(t) - 2.0 * t - 0.7 / t).sum()

    assert natural_parameters(conj, "gamma", v, gen) is not None
    assert natural_parameters(not_conj, "gamma", v, gen) is None
    # a cross term between elements breaks the elementwise form too
    assert natural_parameters(lambda t: conj(t) + t[0] * t[1], "gamma", v, gen) is None
    # a Gaussian with a quartic term is not Gaussian
    assert (
        natural_parameters(lambda t: -(t**2).sum() - 0.1 * (t**4).sum(), "gaussian", v, gen) is None
    )
    assert natural_parameters(lambda t: -(t**2).sum() + t.sum(), "gaussian", v, gen) is not None


SCALE_EDIT = (
    'w = pyro.sample("w", dist.Normal(config.hyper("prior_mean"), alpha.rsqrt()).to_event(1))',
    'w = pyro.sample("w", dist.Normal(config.hyper("prior_mean"), alpha).to_event(1))',
)


def test_a_gamma_on_the_scale_is_refused_by_name(tmp_path):
    """alpha ~ Gamma as the *scale* of w (not its precision): its complete conditional is
    not a Gamma, and CAVI refuses it naming the site (today's behaviour for such a site)."""
    text = (FILES / "ard.py").read_text()
    assert SCALE_EDIT[0] in text
    path = tmp_path / "ard_scale.py"
    path.write_text(text.replace(*SCALE_EDIT))
    X, y = two_circles(30, seed=1)
    with pytest.raises(pyro_moe.NonConjugateError, match="site 'alpha'.*exponential family"):
        pyro_moe.fit(path, X, y, experts=2, n_init=1)


def _quiet_fit(path, X, y, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", pyro_moe.ConvergenceWarning)
        return pyro_moe.fit(path, X, y, experts=2, n_init=1, **kw)


@pytest.mark.parametrize("kind", ["shared", "per_expert"])
@pytest.mark.parametrize("base", ["mixture_of_models", "mixture_of_experts"])
def test_a_site_no_module_names_fits_by_cavi(tmp_path, kind, base):
    """The issue's "Done when": kappa, an inverse scale of the prior covariance written in
    the test (no module of pyro_moe names it), fits by CAVI with no refusal, its objective
    never decreases, and q(kappa) is the Gamma of the derived update."""
    path = kappa_model(tmp_path, kind, base)
    X, y = two_circles(60, seed=4)
    fit = _quiet_fit(path, X, y, max_iter=300)
    assert fit.method == "cavi"
    h = fit.objective_history.numpy()
    assert (np.diff(h) >= -1e-9 * np.abs(h).max()).all()
    q = fit.posterior.site_params["kappa"]
    assert q["shape"].shape == (() if kind == "shared" else (2,))
    # shape a0 + n/2 (shared: + K n/2): read from log|kappa A^{-1}| = n log kappa + c
    n, K = fit.mean.shape[1], 2
    want = 2.0 + 0.5 * n * (K if kind == "shared" else 1)
    torch.testing.assert_close(q["shape"], torch.full_like(q["shape"], want), rtol=1e-12, atol=0)
    # rate b0 + 1/2 sum_k tr(A_k^{-1} D_k) at the final q(W)
    D = U.scatter_about_prior(U.WeightPosterior(fit.mean, fit.cov, fit.mean.new_zeros(K)),
                              fit.prior_mean)  # fmt: skip
    tr = (torch.linalg.inv(fit.prior_cov) * D).sum((-1, -2))
    rate = 3.0 + 0.5 * (tr.sum() if kind == "shared" else tr)
    # the fit's last q(kappa) was computed before its last q(W): within the tolerance
    torch.testing.assert_close(q["rate"], rate, rtol=1e-4, atol=0)
    assert fit.posterior.site_draws["kappa"].shape[0] == 1000


def test_ard_fits_by_cavi_and_relabels_its_precisions():
    """The ARD file (alpha per expert and feature) fits by CAVI, and q(alpha) moves with
    its expert when the experts are relabelled."""
    X, y = two_circles(60, seed=5)
    fit = _quiet_fit(FILES / "ard.py", X, y)
    assert fit.method == "cavi"
    q = fit.posterior.site_params["alpha"]
    assert q["shape"].shape == fit.mean.shape
    swapped = fit.permuted([1, 0])
    torch.testing.assert_close(swapped.posterior.site_params["alpha"]["rate"], q["rate"][[1, 0]])


BETA_LINE = "    beta = parts.noise_precision(config, noise_prior(config))\n"
BETA_SITES = {
    False: '    beta = pyro.sample("tau_y", dist.Gamma(config.const(3.0), config.const(2.0)))\n',
    True: '    with pyro.plate("noise_k", config.experts):\n'
    '        beta = pyro.sample("tau_y", dist.Gamma(config.const(3.0), config.const(2.0)))\n',
}


@pytest.mark.parametrize("per_expert", [False, True], ids=["shared", "per expert"])
def test_a_noise_precision_under_another_name_is_the_built_in_q_beta(tmp_path, per_expert):
    """beta ~ Gamma(3, 2) written straight into the file as site 'tau_y' (shared, or one
    per expert in a plate): the rule finds it conjugate with child y, and CAVI's history
    equals the built-in latent-beta path's (noise_prior returning the same Gamma) to 1e-12."""
    text = (pyro_moe.load_model("mixture_of_models").path).read_text()
    assert BETA_LINE in text
    named = tmp_path / "named_beta.py"
    named.write_text(text.replace(BETA_LINE, BETA_SITES[per_expert]))
    builtin = edited_model(
        tmp_path, "mixture_of_models", "    return None\n",
        "    return dist.Gamma(config.const(3.0), config.const(2.0))\n",
    )  # fmt: skip
    X, y = two_circles(60, seed=6)
    a = _quiet_fit(named, X, y, per_expert_noise=per_expert)
    b = _quiet_fit(builtin, X, y, per_expert_noise=per_expert)
    assert a.method == "cavi" and a.noise_shape is not None
    torch.testing.assert_close(a.objective_history, b.objective_history, rtol=1e-12, atol=0)
    torch.testing.assert_close(a.noise_rate, b.noise_rate, rtol=1e-12, atol=0)
