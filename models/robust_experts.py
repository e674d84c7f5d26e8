"""Mixture of robust (Student-t) linear experts with a neural gate.

    w_k           ~ N(w0_k, A_k)                                  k = 1..K
    z_i | x_i     ~ Cat(g(x_i)),  g(x) = softmax(V1^T sigma(V2^T x))
    lambda_i      ~ Gamma(nu/2, nu/2)                             (a scale weight per point)
    y_i | z_i = k ~ N(w_k^T x_i, 1/(beta_k lambda_i))

With lambda_i integrated out, y_i | z_i = k ~ StudentT(nu, w_k^T x_i, 1/sqrt(beta_k)):
gross outliers get a small lambda_i and little say in w_k, without a noise expert.
nu = DOF below (4: tails heavy enough for 10-30 % gross outliers, a finite variance).

The guide is q(Z) q(W) [q(beta)] prod_i q(lambda_i | z_i): given its expert k, each point's
weight has its own Gamma(a_ik, b_ik) (``parts.robust_weights_guide``). CAVI and natural-
gradient SVI fit it in closed form (``pyro_moe/closed_form/robust.py``: q(lambda) Gamma,
the weights' update with weights r_ik E[lambda_ik]); NUTS samples lambda with the rest.
A gate prior p(V) = N(0, s^2) on the gate's weights as in ``mixture_of_experts`` (s = 3).
Hyperparameters w0_k, A_k, beta and the gate V are point estimates as ``learn`` says.
"""

import pyro
import pyro.distributions as dist
from pyro.ops.indexing import Vindex
from torch import nn

from pyro_moe import parts
from pyro_moe.errors import InputError

#: nu, the Student-t's degrees of freedom (edit here: CAVI reads it from the Gamma site)
DOF = 4.0

SETTINGS = {
    "noise_expert": False,  # the heavy tails take the outliers (a noise expert is refused)
    # one beta shared by the experts: with one beta_k per expert, one expert widened into a
    # background for 20 % gross outliers (beta 0.12 against 15) and its line was lost, at a
    # higher ELBO (-881.2 against -929.0, benchmarks/robust_logistic.py's data)
    "per_expert_noise": False,
    "learn": ("noise_precision", "gate"),
    "gate_hidden": 8,
    "gate_prior_scale": 3.0,  # s of p(V) = N(0, s^2 I) on the gate's weights
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
    """p(V): N(0, s^2) on each of the gate's weights (biases flat), s = gate_prior_scale;
    None without one (fit(gate_prior_scale=False))."""
    s = config.gate_prior_scale
    return None if s is None else dist.Normal(config.const(0.0), config.const(s))


def make_gate(features, experts, hidden):
    """Gate logits V1^T sigma(V2^T x) (both layers with a bias); softmax gives g(x)."""
    return nn.Sequential(nn.Linear(features, hidden), nn.Sigmoid(), nn.Linear(hidden, experts))


# ---- Model and guide q(Z) q(W) [q(beta)] q(lambda | Z) ---------------------------------
def model(X, y, config, subsample=None):
    if config.noise_expert:
        raise InputError("robust_experts has no noise expert: its Student-t tails take outliers")
    beta = parts.noise_precision(config, noise_prior(config))
    with pyro.plate(parts.EXPERTS_PLATE, config.experts):
        w = pyro.sample("w", weight_prior(config.hyper("prior_mean"), config.hyper("prior_cov")))
    gate = config.gate_logits
    parts.gate_prior(config, gate_prior(config))
    with pyro.plate(parts.DATA_PLATE, X.shape[0], subsample=subsample) as idx:
        z = pyro.sample("z", dist.Categorical(logits=gate(X[idx])))
        lam = parts.robust_weight(DOF, config)
        mean = Vindex(X[idx] @ w.transpose(-1, -2))[..., z]
        precision = parts.expert_precision(beta, z, config) * lam
        pyro.sample("y", dist.Normal(mean, precision.rsqrt()), obs=y[idx])


def guide(X, y, config, subsample=None):
    parts.noise_guide(config, noise_prior(config))
    parts.weights_guide(config)
    parts.assignments_guide(X, config, subsample, local=parts.robust_weights_guide(X, config))
