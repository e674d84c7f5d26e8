"""Mixture of linear models (the study's "mixture of models").

    pi          ~ Dirichlet(mu 1_K)
    w_k         ~ N(w0_k, A_k)                      k = 1..K
    z_i | pi    ~ Cat(pi)                           i = 1..N
    y_i | z_i=k ~ N(w_k^T x_i, 1/beta)

With ``noise_expert`` on, one more component K+1 ("noise expert") with its share of pi:
y_i | z_i = K+1 ~ Uniform(lo, hi) over the observed target range (stray points).

Hyperparameters w0_k, A_k and beta are point estimates (``config.hyper``): learned by the
M-step of variational EM or by SVI, or held fixed, as the fit's ``learn`` setting says.

Experts with their own feature maps (``EXPERTS`` below): expert k then models its own target
t_k(omega_i) ~ N(w_k^T phi_k(omega_i), 1/beta) of the point omega_i = (x_i, y_i), w_k in
R^{n_k} (see :mod:`pyro_moe.experts`). Fit a mix with ``pyro_moe.fit_curves(image,
experts=["circle", "ellipse"])`` or ``pyro-moe curves IMAGE --experts circle,ellipse``; add an
expert by adding an entry. Circle, ellipse and conic experts all model x^2 (the circle's
x^2 + y^2 is x^2 shifted by y^2), so the mixture is a density of x^2; the line expert models
x, and mixing it with them needs ``allow_mixed_targets=True`` and warns.

Copy this file and edit the priors below to try another model: SVI fits any edit; CAVI
fits the conjugate ones and refuses the rest with a message that names the site.
"""

import pyro
import pyro.distributions as dist

from pyro_moe import parts
from pyro_moe.experts import Expert

# ---- Experts by name: feature map, target map (response + offset), how to read them ----
EXPERTS = {
    # (x - x0)^2 + (y - y0)^2 = r^2  <=>  x^2 + y^2 = 2 x0 x + 2 y0 y + (r^2 - x0^2 - y0^2)
    "circle": Expert("circle", features=("x", "y", "1"), response="xx", offset={"yy": 1.0}),
    # x^2 = B'xy + C'y^2 + D'x + E'y + F'  (any conic with a non-zero x^2 term)
    "conic": Expert("conic", features=("xy", "yy", "x", "y", "1"), response="xx"),
    "ellipse": Expert("conic", features=("xy", "yy", "x", "y", "1"), response="xx"),
    # x = a y + c  (not horizontal lines); its target is x, not x^2
    "line": Expert("line", features=("y", "1"), response="x"),
}

# Defaults of this model's settings; ``pyro_moe.fit(..., **settings)`` overrides them.
SETTINGS = {
    "noise_expert": False,  # a uniform background component for stray points (outliers)
    # point-estimated hyperparameters unless fit(learn=...) says otherwise
    "learn": ("noise_precision",),
    "concentration": 1.0,  # mu of Dirichlet(mu 1_K)
}


# ---- Priors: the one place to edit ----------------------------------------------------
def weight_prior(prior_mean, prior_cov):
    """p(w_k) = N(w0_k, A_k) (experts with their own maps: over the n_k weights, padded to
    n; the padding is N(0, 1) by default and never meets the data)."""
    return dist.MultivariateNormal(prior_mean, covariance_matrix=prior_cov)


def mixing_prior(concentration):
    """p(pi) = Dir(mu)."""
    return dist.Dirichlet(concentration)


def noise_prior(config):
    """p(beta): None makes beta a point estimate (type-II ML). For a latent beta with
    q(beta) = Gamma, return e.g. ``dist.Gamma(config.const(1.0), config.const(0.1))``."""
    return None


# ---- Model and mean-field guide q(Z) q(W) q(pi) [q(beta)] -----------------------------
def model(X, y, config, subsample=None):
    beta = parts.noise_precision(config, noise_prior(config))
    pi = pyro.sample("pi", mixing_prior(config.concentration))
    with pyro.plate(parts.EXPERTS_PLATE, config.experts):
        w = pyro.sample("w", weight_prior(config.hyper("prior_mean"), config.hyper("prior_cov")))
    parts.observe_targets(X, y, w, beta, lambda x: dist.Categorical(pi), config, subsample)


def guide(X, y, config, subsample=None):
    parts.noise_guide(config, noise_prior(config))
    parts.mixing_guide(config)
    parts.weights_guide(config)
    parts.assignments_guide(X, config, subsample)
