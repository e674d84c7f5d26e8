"""Mixture of logistic (classification) experts with a neural gate, for a 0/1 target.

    w_k           ~ N(w0_k, A_k)                                  k = 1..K
    z_i | x_i     ~ Cat(g(x_i)),  g(x) = softmax(V1^T sigma(V2^T x))
    y_i | z_i = k ~ Bernoulli(sigmoid(w_k^T x_i))                 y_i in {0, 1}

Defaults for a 0/1 target: the weights' prior sd is 2.5 / rms(x_j) (``weight_unit``: logit
units, not the target's, whose rms says nothing for 0/1 labels; Gelman et al. 2008's
scale), no noise precision (a Bernoulli has none) and no noise expert; CAVI's "subsets"
start splits the rows of X into regions (k-means), not least-squares subsets of y.

CAVI and natural-gradient SVI fit it in closed form by the Jaakkola-Jordan bound
(``pyro_moe/closed_form/logistic.py``): their objective is a lower bound of the ELBO of
this guide, q(Z) q(W). NUTS samples w with the rest. A gate prior p(V) = N(0, s^2) on the
gate's weights (s = 3). Hyperparameters w0_k, A_k and the gate V are point estimates as
``learn`` says.
"""

import pyro
import pyro.distributions as dist
from pyro.ops.indexing import Vindex
from torch import nn

from pyro_moe import parts
from pyro_moe.errors import InputError

SETTINGS = {
    "noise_expert": False,  # refused: a Bernoulli target has no range to spread noise over
    "learn": ("gate",),
    "gate_hidden": 8,
    "gate_prior_scale": 3.0,  # s of p(V) = N(0, s^2 I) on the gate's weights
    # the default A_k = diag(weight_unit / rms(x_j))^2 (fit's prior_units="data")
    "weight_unit": 2.5,
}


# ---- Priors and gate: the one place to edit -------------------------------------------
def weight_prior(prior_mean, prior_cov):
    """p(w_k) = N(w0_k, A_k)."""
    return dist.MultivariateNormal(prior_mean, covariance_matrix=prior_cov)


def gate_prior(config):
    """p(V): N(0, s^2) on each of the gate's weights (biases flat), s = gate_prior_scale;
    None without one (fit(gate_prior_scale=False))."""
    s = config.gate_prior_scale
    return None if s is None else dist.Normal(config.const(0.0), config.const(s))


def make_gate(features, experts, hidden):
    """Gate logits V1^T sigma(V2^T x) (both layers with a bias); softmax gives g(x)."""
    return nn.Sequential(nn.Linear(features, hidden), nn.Sigmoid(), nn.Linear(hidden, experts))


# ---- Model and mean-field guide q(Z) q(W) ----------------------------------------------
def model(X, y, config, subsample=None):
    if config.noise_expert:
        raise InputError("logistic_experts has no noise expert (a 0/1 target)")
    with pyro.plate(parts.EXPERTS_PLATE, config.experts):
        w = pyro.sample("w", weight_prior(config.hyper("prior_mean"), config.hyper("prior_cov")))
    gate = config.gate_logits
    parts.gate_prior(config, gate_prior(config))
    with pyro.plate(parts.DATA_PLATE, X.shape[0], subsample=subsample) as idx:
        z = pyro.sample("z", dist.Categorical(logits=gate(X[idx])))
        logits = Vindex(X[idx] @ w.transpose(-1, -2))[..., z]
        pyro.sample("y", dist.Bernoulli(logits=logits), obs=y[idx])


def guide(X, y, config, subsample=None):
    parts.weights_guide(config)
    parts.assignments_guide(X, config, subsample)
