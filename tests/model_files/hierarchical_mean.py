"""Mixture of linear models (the study's "mixture of models").

    pi            ~ Dir(mu)
    w0_k          ~ N(m0, s0^2 I)                                 k = 1..K
    w_k           ~ N(w0_k, A_k)
    z_i           ~ Cat(pi)
    y_i | z_i = k ~ N(w_k^T x_i, 1/beta)

EDITED (tests/model_files): a hierarchical Gaussian prior on each expert's prior
mean w0_k (the study's regularization of w0 as a prior instead of a point estimate),
m0 = the fit's prior mean, s0 = 2; its mean-field guide q(w0_k) = N(l_k, L_k L_k^T).
"""

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions import constraints

from pyro_moe import parts

SETTINGS = {
    "noise_expert": False,
    "learn": ("noise_precision",),
    "concentration": 1.0,
}


def model(X, y, config, subsample=None):
    beta = parts.noise_precision(config, None)
    pi = pyro.sample("pi", dist.Dirichlet(config.concentration))
    with pyro.plate(parts.EXPERTS_PLATE, config.experts):
        w0 = pyro.sample("w0", dist.Normal(config.prior_mean, config.const(2.0)).to_event(1))
        w = pyro.sample("w", dist.MultivariateNormal(w0, covariance_matrix=config.prior_cov))
    parts.observe_targets(X, y, w, beta, lambda x: dist.Categorical(pi), config, subsample)


def guide(X, y, config, subsample=None):
    K, n = config.experts, config.features
    parts.mixing_guide(config)
    loc = pyro.param("w0_loc", lambda: config.prior_mean.detach().clone().expand(K, n).clone())
    tril = pyro.param(
        "w0_scale_tril",
        lambda: torch.eye(n, dtype=config.dtype, device=config.device).expand(K, n, n).clone(),
        constraint=constraints.lower_cholesky,
    )
    with pyro.plate(parts.EXPERTS_PLATE, K) as experts:
        pyro.sample("w0", dist.MultivariateNormal(loc, scale_tril=tril))
        parts.weights_guide(config, plate=experts)
    parts.assignments_guide(X, config, subsample)
