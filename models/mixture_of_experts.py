"""Mixture of linear experts with a neural gate (the study's "mixture of experts").

    w_k           ~ N(w0_k, A_k)                                  k = 1..K
    z_i | x_i     ~ Cat(g(x_i)),  g(x) = softmax(V1^T sigma(V2^T x))
    y_i | z_i = k ~ N(w_k^T x_i, 1/beta_k)                         (one beta per expert)

A Gaussian prior on the gate's weights W (V without its biases, see ``gate_prior``):
    log p(V)      = sum_j log N(W_j | 0, s^2)

With ``noise_expert`` on, one more component K+1 ("noise expert") with a constant share rho beside the gate:
y_i | z_i = K+1 ~ Uniform(lo, hi) over the observed target range (stray points), and
s = noise_gate_prior_scale (0.1: a near-constant gate, docs/cavi_notes.md section 7); without
it s = gate_prior_scale (3: a gate that can switch regimes but does not saturate,
docs/regression.md); fit(gate_prior_scale=False) drops the prior (the study's gate).

Hyperparameters w0_k, A_k, beta and the gate V = (V1, V2) are point estimates
(type-II maximum likelihood), learned or held fixed as the fit's ``learn`` setting says;
V is a MAP estimate and the objective is F = ELBO + log p(V).
"""

import pyro
import pyro.distributions as dist
from torch import nn

from pyro_moe import parts

SETTINGS = {
    "noise_expert": False,  # a uniform background component for stray points (outliers)
    # one noise precision beta_k per expert: regimes differ in noise (docs/regression.md)
    "per_expert_noise": True,
    # point-estimated hyperparameters unless fit(learn=...) says otherwise
    "learn": ("noise_precision", "gate"),
    "gate_hidden": 8,  # width of the gate's hidden layer
    # s of p(V) = N(0, s^2 I) on the gate's weights (see gate_prior): 3 (docs/regression.md),
    # 0.1 with the noise expert (docs/cavi_notes.md section 7); fit(gate_prior_scale=...)
    "gate_prior_scale": 3.0,
    "noise_gate_prior_scale": 0.1,
    # the gate's M-step: one damped Gauss-Newton step per sweep ("auto"; L-BFGS from 1e5
    # points): on the regression data as good or better optima than L-BFGS, 1.7-8.7x faster
    # (docs/cavi_notes.md section 6); fit(gate_method="lbfgs") for L-BFGS
    "gate_method": "auto",
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
    """p(V): N(0, s^2) on each of the gate's weights (biases flat), s = the config's
    ``gate_prior_scale``: SETTINGS["gate_prior_scale"] = 3 (a gate that can switch regimes
    but does not saturate, measured on real regression data: docs/regression.md), with the
    noise expert SETTINGS["noise_gate_prior_scale"] = 0.1 (a near-constant gate: why in
    ``models/regularized_experts.py``' ``gate_prior`` and docs/cavi_notes.md section 7), or
    fit(gate_prior_scale=s). None (a maximum-likelihood gate, the study's:
    fit(gate_prior_scale=False)) when the scale in use is None."""
    s = config.gate_prior_scale
    return None if s is None else dist.Normal(config.const(0.0), config.const(s))


def make_gate(features, experts, hidden):
    """Gate logits V1^T sigma(V2^T x) (both layers with a bias); softmax gives g(x)."""
    return nn.Sequential(nn.Linear(features, hidden), nn.Sigmoid(), nn.Linear(hidden, experts))


# ---- Model and mean-field guide q(Z) q(W) [q(beta)] -----------------------------------
def model(X, y, config, subsample=None):
    beta = parts.noise_precision(config, noise_prior(config))
    with pyro.plate(parts.EXPERTS_PLATE, config.experts):
        w = pyro.sample("w", weight_prior(config.hyper("prior_mean"), config.hyper("prior_cov")))
    gate = config.gate_logits
    parts.gate_prior(config, gate_prior(config))
    parts.observe_targets(
        X, y, w, beta, lambda x: dist.Categorical(logits=gate(x)), config, subsample
    )


def guide(X, y, config, subsample=None):
    parts.noise_guide(config, noise_prior(config))
    parts.weights_guide(config)
    parts.assignments_guide(X, config, subsample)
