"""Building blocks the model files share: the mean-field guide factors and the likelihood.

The model files under ``models/`` compose these, so that each file shows its priors and
its structure while the plumbing lives here once. Site and parameter names are the
contract between the model files, the CAVI engine (:mod:`pyro_moe.engines.cavi`) and the SVI
engine; change them in one place only.

Sites: ``pi`` (mixture weights), ``w`` (expert weights, in plate ``experts``), ``z`` and
``y`` (in plate ``data``), ``noise_precision`` (when beta has a prior),
``prior_regularization`` (observed pairwise differences of prior means), ``gate_prior``
(the gate's weights, observed under their prior).

Guide parameters: ``assignment_probs`` (N, K) for q(z_i) = Cat(r_i); ``weight_mean``
(K, n) and ``weight_scale_tril`` (K, n, n) for q(w_k) = N(m_k, L_k L_k^T);
``mixing_concentration`` (K,) for q(pi) = Dir(alpha); ``noise_shape``, ``noise_rate`` for
q(beta) = Gamma(a, b).
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions import constraints
from pyro.ops.indexing import Vindex

from .config import Config, gate_weights

EXPERTS_PLATE = "experts"
NOISE_PLATE = "noise_experts"  # beta_k, one per expert (a plate of its own: w has "experts")
DATA_PLATE = "data"
#: the per-point scale weight lambda_i of robust (Student-t) experts
ROBUST_WEIGHT = "robust_weight"


def noise_precision(config: Config, prior: dist.Distribution | None) -> torch.Tensor:
    """beta: a point estimate (``prior is None``) or a latent site ``noise_precision``;
    one shared by the experts, or beta_k, one per expert (in plate ``noise_experts``) when
    ``config.per_expert_noise``."""
    if prior is None:
        return config.hyper("noise_precision")
    if config.per_expert_noise:
        with pyro.plate(NOISE_PLATE, config.experts):
            return pyro.sample("noise_precision", prior)
    return pyro.sample("noise_precision", prior)


def observe_targets(
    X: torch.Tensor,
    y: torch.Tensor,
    weights: torch.Tensor,
    beta: torch.Tensor,
    assignment_prior,
    config: Config,
    subsample: torch.Tensor | None = None,
) -> None:
    """z_i ~ assignment_prior(x_i), y_i | z_i = k ~ N(w_k^T x_i, 1/beta_k), in plate ``data``
    (beta_k = beta for every k when the experts share one noise precision).

    ``assignment_prior`` maps the rows of X in the (sub)sample to a Categorical
    distribution: constant pi for a mixture of models, the gate for a mixture of experts.
    With the noise expert (component K), y_i | z_i = K ~ Uniform(lo, hi) instead: the two
    observed sites ``y`` and ``y_noise`` are masked by z so each point has one density.
    """
    K = config.experts
    with pyro.plate(DATA_PLATE, X.shape[0], subsample=subsample) as idx:
        x = X[idx]
        z = pyro.sample("z", assignment_prior(x))
        means = expert_locs(x, y[idx], weights, config)
        scale = beta.rsqrt()
        if config.per_expert_noise:  # the scale of each point's own component
            pad = scale.new_ones((*scale.shape[:-1], int(config.noise_expert)))
            scale = Vindex(torch.cat([scale, pad], -1).unsqueeze(-2))[..., z]  # (..., N)
        if not config.noise_expert:
            pyro.sample("y", dist.Normal(Vindex(means)[..., z], scale), obs=y[idx])
            return
        means = torch.cat([means, torch.zeros_like(means[..., :1])], -1)
        noise = z == K
        likelihood = dist.Normal(Vindex(means)[..., z], scale)
        pyro.sample("y", likelihood.mask(~noise), obs=y[idx])
        lo, hi = config.noise_bounds.unbind(-1)
        pyro.sample("y_noise", dist.Uniform(lo, hi).mask(noise), obs=y[idx])


def expert_locs(
    x: torch.Tensor, y: torch.Tensor, weights: torch.Tensor, config: Config
) -> torch.Tensor:
    """Each expert's mean for the observed y, (..., N, K): w_k^T x_i for the shared design.

    With expert maps T (heterogeneous experts, :mod:`pyro_moe.experts`), expert k models
    its own target t_ik = T_k[n] z_i on its own features phi_ik = T_k[:n] z_i, z_i = [x_i, y_i].
    Its density at y is evaluated through the shifted mean
    mu_ik = w_k^T phi_ik - (t_ik - y_i): N(y_i | mu_ik, s^2) = N(t_ik | w_k^T phi_ik, s^2),
    the same number, so one observed site serves experts with different targets.
    """
    if config.maps is None:
        return x @ weights.transpose(-1, -2)
    n = config.features
    zk = torch.cat([x, y.unsqueeze(-1)], -1) @ config.maps.transpose(-1, -2)  # (K, N, n+1)
    fitted = (zk[..., :n] * weights.unsqueeze(-2)).sum(-1)  # (..., K, N)
    return (fitted - zk[..., n] + y).transpose(-1, -2)


def assignments_guide(
    X: torch.Tensor, config: Config, subsample: torch.Tensor | None = None, local=None
):
    """q(z_i) = Cat(r_i) over the C components, each point with its own probabilities;
    enumerated. ``local(z, idx)``: a guide factor of each point that depends on its z,
    sampled in the same data plate (:func:`robust_weights_guide`)."""
    N, K = X.shape[0], config.components
    probs = pyro.param(
        "assignment_probs",
        lambda: torch.full((N, K), 1.0 / K, dtype=X.dtype, device=X.device),
        constraint=constraints.simplex,
    )
    with pyro.plate(DATA_PLATE, N, subsample=subsample) as idx:
        z = pyro.sample("z", dist.Categorical(probs[idx]), infer={"enumerate": "parallel"})
        if local is not None:
            local(z, idx)


def weights_guide(config: Config, plate: pyro.plate | None = None) -> torch.Tensor:
    """q(w_k) = N(m_k, L_k L_k^T), a full-covariance Gaussian per expert.

    ``plate``: the ``experts`` plate the caller has already opened, to put another
    per-expert site of an edited guide beside w (a plate entered twice is two sites of one
    name); the sample is then taken inside it::

        with pyro.plate(parts.EXPERTS_PLATE, config.experts) as experts:
            pyro.sample("alpha", dist.Gamma(a, b).to_event(1))
            parts.weights_guide(config, plate=experts)
    """
    mean = pyro.param("weight_mean", lambda: config.prior_mean.detach().clone())
    scale_tril = pyro.param(
        "weight_scale_tril",
        lambda: 0.1 * torch.linalg.cholesky(config.prior_cov.detach()),
        constraint=constraints.lower_cholesky,
    )
    q = dist.MultivariateNormal(mean, scale_tril=scale_tril)
    if plate is not None:
        return pyro.sample("w", q)
    with pyro.plate(EXPERTS_PLATE, config.experts):
        return pyro.sample("w", q)


def mixing_guide(config: Config) -> torch.Tensor:
    """q(pi) = Dir(alpha)."""
    alpha = pyro.param(
        "mixing_concentration",
        lambda: config.concentration.detach().clone() + 1.0,
        constraint=constraints.positive,
    )
    return pyro.sample("pi", dist.Dirichlet(alpha))


def noise_guide(config: Config, prior: dist.Distribution | None) -> None:
    """q(beta) = Gamma(a, b) when beta has a prior; nothing when it is a point estimate."""
    if prior is None:
        return
    one = torch.ones_like(config.noise_precision)
    shape = pyro.param("noise_shape", lambda: one.clone(), constraint=constraints.positive)
    rate = pyro.param(
        "noise_rate", lambda: 1.0 / config.noise_precision.detach(), constraint=constraints.positive
    )
    if config.per_expert_noise:
        with pyro.plate(NOISE_PLATE, config.experts):
            pyro.sample("noise_precision", dist.Gamma(shape, rate))
        return
    pyro.sample("noise_precision", dist.Gamma(shape, rate))


def pairwise_differences(prior_mean: torch.Tensor) -> torch.Tensor:
    """d_kk' = w0_k - w0_k' over the K(K-1) ordered pairs k != k', shape (K(K-1), n)."""
    K = prior_mean.shape[0]
    i, j = torch.triu_indices(K, K, offset=1, device=prior_mean.device)
    first, second = torch.cat([i, j]), torch.cat([j, i])
    return prior_mean[first] - prior_mean[second]


def gate_prior(config: Config, prior: dist.Distribution | None) -> None:
    """log p(V): the gate's weights (:func:`pyro_moe.config.gate_weights`, flattened to P
    values) as the observed site ``gate_prior`` under ``prior`` (a scalar distribution,
    expanded to P), so both engines maximise F + log p(V): MAP for the gate. Nothing when
    ``prior`` is None (the gate is then a maximum-likelihood estimate)."""
    if prior is None:
        return
    V = torch.cat([p.reshape(-1) for p in gate_weights(config.registered_gate())])
    pyro.sample("gate_prior", prior.expand([V.shape[0]]).to_event(1), obs=V)


def expert_precision(beta: torch.Tensor, z: torch.Tensor, config: Config) -> torch.Tensor:
    """beta_{z_i}: each point's own expert's noise precision (beta itself when the experts
    share one)."""
    if not config.per_expert_noise:
        return beta
    return Vindex(beta.unsqueeze(-2))[..., z]


def robust_weight(nu: float, config: Config) -> torch.Tensor:
    """lambda_i ~ Gamma(nu/2, nu/2), the Student-t's scale weight of point i (site
    ``robust_weight``; call it inside the data plate): y_i ~ N(mu, 1/(beta lambda_i)) is then
    StudentT(nu, mu, 1/sqrt(beta)) with lambda_i integrated out."""
    half = config.const(0.5 * nu)
    return pyro.sample(ROBUST_WEIGHT, dist.Gamma(half, half))


def robust_weights_guide(X: torch.Tensor, config: Config):
    """q(lambda_i | z_i = k) = Gamma(a_ik, b_ik), guide parameters ``robust_shape`` and
    ``robust_rate`` (N, K) (:mod:`pyro_moe.closed_form.robust`): the ``local`` factor of
    :func:`assignments_guide`, drawn given each point's (enumerated) z."""
    N, K = X.shape[0], config.experts
    ones = torch.ones(N, K, dtype=X.dtype, device=X.device)
    shape = pyro.param("robust_shape", lambda: ones.clone(), constraint=constraints.positive)
    rate = pyro.param("robust_rate", lambda: ones.clone(), constraint=constraints.positive)

    def local(z: torch.Tensor, idx: torch.Tensor) -> None:
        pyro.sample(ROBUST_WEIGHT, dist.Gamma(Vindex(shape)[idx, z], Vindex(rate)[idx, z]))

    return local
