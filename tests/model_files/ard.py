"""Mixture of linear experts with a neural gate (the study's "mixture of experts").

    w_k           ~ N(w0_k, A_k)                                  k = 1..K
    z_i | x_i     ~ Cat(g(x_i)),  g(x) = softmax(V1^T sigma(V2^T x))
    y_i | z_i = k ~ N(w_k^T x_i, 1/beta)

With ``noise_expert`` on, one more component K+1 ("noise expert") with a constant share rho beside the gate:
y_i | z_i = K+1 ~ Uniform(lo, hi) over the observed target range (stray points),
and a Gaussian prior on the gate's weights W (V without its biases, see ``gate_prior``):
    log p(V)      = sum_j log N(W_j | 0, s^2)                     s = gate_prior_scale

Hyperparameters w0_k, A_k, beta and the gate V = (V1, V2) are point estimates
(type-II maximum likelihood), learned or held fixed as the fit's ``learn`` setting says;
with the gate prior, V is a MAP estimate and the objective is F = ELBO + log p(V).

EDITED (tests/model_files, issue 26): an ARD precision per expert and feature, alpha_kj ~ Gamma(1, 1), w_kj ~ N(w0_kj, 1/alpha_kj).
"""

import pyro
import pyro.distributions as dist
from torch import nn

from pyro_moe import parts

SETTINGS = {
    "noise_expert": False,  # a uniform background component for stray points (outliers)
    # point-estimated hyperparameters unless fit(learn=...) says otherwise
    "learn": ("noise_precision", "gate"),
    "gate_hidden": 8,  # width of the gate's hidden layer
    "gate_prior_scale": 0.1,  # s of p(V) = N(0, s^2 I) on the gate's weights (see gate_prior)
}


# ---- Priors and gate: the one place to edit -------------------------------------------
def weight_prior(prior_mean, prior_cov):
    """p(w_k) = N(w0_k, A_k)."""
    return dist.MultivariateNormal(prior_mean, covariance_matrix=prior_cov)


def noise_prior(config):
    """p(beta): None makes beta a point estimate (type-II ML). For a latent beta with
    q(beta) = Gamma, return e.g. ``dist.Gamma(config.const(1.0), config.const(0.1))``."""
    return None


def gate_prior(config):
    """p(V): N(0, s^2) on each of the gate's weights (biases flat) with the noise expert,
    None (a maximum-likelihood gate) without it. Why and how much: the same function in
    ``models/regularized_experts.py`` and ``docs/cavi_notes.md`` section 7."""
    s = config.gate_prior_scale
    on = config.noise_expert and s is not None
    return dist.Normal(config.const(0.0), config.const(s)) if on else None


def make_gate(features, experts, hidden):
    """Gate logits V1^T sigma(V2^T x) (both layers with a bias); softmax gives g(x)."""
    return nn.Sequential(nn.Linear(features, hidden), nn.Sigmoid(), nn.Linear(hidden, experts))


# ---- Model and mean-field guide q(Z) q(W) [q(beta)] -----------------------------------
def model(X, y, config, subsample=None):
    beta = parts.noise_precision(config, noise_prior(config))
    with pyro.plate(parts.EXPERTS_PLATE, config.experts):
        ones = config.const(1.0).expand([config.features])
        alpha = pyro.sample("alpha", dist.Gamma(ones, ones).to_event(1))
        w = pyro.sample("w", dist.Normal(config.hyper("prior_mean"), alpha.rsqrt()).to_event(1))
    gate = config.gate_logits
    parts.gate_prior(config, gate_prior(config))
    parts.observe_targets(
        X, y, w, beta, lambda x: dist.Categorical(logits=gate(x)), config, subsample
    )


def guide(X, y, config, subsample=None):
    parts.noise_guide(config, noise_prior(config))
    from pyro.distributions import constraints

    K, n = config.experts, config.features
    a = pyro.param(
        "alpha_shape",
        lambda: config.const(1.0).expand([K, n]).clone(),
        constraint=constraints.positive,
    )
    b = pyro.param(
        "alpha_rate",
        lambda: config.const(1.0).expand([K, n]).clone(),
        constraint=constraints.positive,
    )
    with pyro.plate(parts.EXPERTS_PLATE, K) as experts:
        pyro.sample("alpha", dist.Gamma(a, b).to_event(1))
        parts.weights_guide(config, plate=experts)
    parts.assignments_guide(X, config, subsample)
