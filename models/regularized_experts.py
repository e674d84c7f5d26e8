"""Mixture of experts with the study's prior regularization of the experts' prior means.

    w_k           ~ N(w0_k, A_k)                                  k = 1..K
    z_i | x_i     ~ Cat(g(x_i)),  g(x) = softmax(V1^T sigma(V2^T x))
    y_i | z_i = k ~ N(w_k^T x_i, 1/beta)

With ``noise_expert`` on, one more component K+1 ("noise expert") with a constant share rho beside the gate:
y_i | z_i = K+1 ~ Uniform(lo, hi) over the observed target range (stray points).
    R(w0)         = sum over ordered pairs k != k' of log N(w0_k - w0_k' | 0, Xi)

R is an observed site (``prior_regularization``), so the objective both engines maximise is
F = ELBO + R(w0). A small Xi on the centre coordinates of a circle design ties the experts'
centres together: concentric circles.
"""

import pyro
import pyro.distributions as dist
import torch
from torch import nn

from pyro_moe import parts

SETTINGS = {
    "noise_expert": False,  # a uniform background component for stray points (outliers)
    # point-estimated hyperparameters unless fit(learn=...) says otherwise
    "learn": ("prior_mean", "noise_precision", "gate"),
    "gate_hidden": 8,
    "regularization_cov": 1.0,  # Xi: a scalar (times I), a vector (diagonal) or a matrix
}


# ---- Priors, regularizer and gate: the one place to edit ------------------------------
def weight_prior(prior_mean, prior_cov):
    """p(w_k) = N(w0_k, A_k)."""
    return dist.MultivariateNormal(prior_mean, covariance_matrix=prior_cov)


def noise_prior(config):
    """p(beta): None makes beta a point estimate (type-II ML). For a latent beta with
    q(beta) = Gamma, return e.g. ``dist.Gamma(config.const(1.0), config.const(0.1))``."""
    return None


def regularizer(xi):
    """N(0, Xi), the density of each pairwise difference w0_k - w0_k'."""
    return dist.MultivariateNormal(torch.zeros_like(xi[0]), covariance_matrix=xi)


def make_gate(features, experts, hidden):
    """Gate logits V1^T sigma(V2^T x) (both layers with a bias); softmax gives g(x)."""
    return nn.Sequential(nn.Linear(features, hidden), nn.Sigmoid(), nn.Linear(hidden, experts))


# ---- Model and mean-field guide q(Z) q(W) [q(beta)] -----------------------------------
def model(X, y, config, subsample=None):
    beta = parts.noise_precision(config, noise_prior(config))
    prior_mean = config.hyper("prior_mean")
    if config.experts > 1:
        d = parts.pairwise_differences(prior_mean)
        pairs = regularizer(config.regularization_cov).expand([d.shape[0]]).to_event(1)
        pyro.sample("prior_regularization", pairs, obs=d)
    with pyro.plate(parts.EXPERTS_PLATE, config.experts):
        w = pyro.sample("w", weight_prior(prior_mean, config.hyper("prior_cov")))
    gate = config.gate_logits
    parts.observe_targets(
        X, y, w, beta, lambda x: dist.Categorical(logits=gate(x)), config, subsample
    )


def guide(X, y, config, subsample=None):
    parts.noise_guide(config, noise_prior(config))
    parts.weights_guide(config)
    parts.assignments_guide(X, config, subsample)
