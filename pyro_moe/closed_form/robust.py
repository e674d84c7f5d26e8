"""Student-t (robust) experts in closed form, by the Gamma scale mixture.

Model (``models/robust_experts.py``): a latent weight lambda_i per point,

    lambda_i          ~ Gamma(nu/2, nu/2)                       (shape-rate)
    y_i | z_i = k, .. ~ N(w_k^T x_i, 1 / (beta_k lambda_i)),

so that y_i | z_i = k ~ StudentT(nu, w_k^T x_i, beta_k^{-1/2}) once lambda_i is integrated
out. The guide is structured: q(Z) q(W) [q(beta)] prod_i q(lambda_i | z_i) with
q(lambda_i | z_i = k) = Gamma(a_ik, b_ik) -- one Gamma per point and expert, a weight
lambda_ik as the issue writes it (Pyro enumerates z_i in the guide and draws lambda_i from
the factor of its value). Given the globals, the optimal factors are (E = E_q)

    a_ik = (nu + 1) / 2,        b_ik = nu/2 + E[beta_k] e_ik / 2,
    E[lambda_ik] = a_ik / b_ik, E[log lambda_ik] = psi(a_ik) - log b_ik,

e_ik = E_q (y_i - w_k^T x_i)^2 (:func:`~pyro_moe.closed_form.updates.expected_sq_residuals`),
and the part of the ELBO that q(z_i = k) weighs, E log N(y_i | w_k^T x_i, 1/(beta_k
lambda)) - KL(q(lambda_i | k) || p(lambda)), is at that optimum the log normaliser

    L_ik = 1/2 E log beta_k - 1/2 log 2 pi + log Gamma(a) - log Gamma(nu/2)
           + (nu/2) log(nu/2) - a log b_ik                       (:func:`local_log_densities`)

(at any other Gamma(a, b): :func:`bound_at`). The q(Z) update is log r_ik = log prior_ik +
L_ik - lse_i, and the ELBO's data term sum_ik r_ik (log prior_ik + L_ik - log r_ik) =
sum_i lse_i, as for Gaussian experts. The global step is the Gaussian one with every
point's statistics weighted by E[lambda_ik] (:func:`weighted_stats`):

    S_k = sum_i r_ik E[lambda_ik] x_i x_i^T,   s_k = sum_i r_ik E[lambda_ik] y_i x_i,
    q(w_k): B_k = (A_k^{-1} + E[beta_k] S_k)^{-1},  m_k = B_k (A_k^{-1} w0_k + E[beta_k] s_k),
    beta_k (M-step): 1/beta_k = sum_i r_ik E[lambda_ik] e_ik / sum_i r_ik,
    q(beta_k) = Gamma(a0 + N_k/2, b0 + 1/2 sum_i r_ik E[lambda_ik] e_ik),

with N_k = sum_i r_ik unweighted (``Stats.Nk``). Each step is the exact maximiser of the
ELBO over its block (q(W), beta given q(Z) q(lambda); q(lambda) and q(Z) jointly given the
globals), so CAVI's objective never decreases. Equations: ``docs/derivation.md``, section
"Robust and classification experts".
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pyro.distributions as dist
import torch

from ..config import Config
from ..likelihood import LOG_2PI, trace_model, unwrap
from ..model_file import Model
from . import updates as U
from .init import initial_log_responsibilities

__all__ = [
    "RobustExperts",
    "bound_at",
    "local_factors",
    "local_log_densities",
    "robust_mismatch",
    "weighted_stats",
]


def local_factors(e: torch.Tensor, e_beta, nu: float) -> tuple[float, torch.Tensor]:
    """The optimal q(lambda_i | z_i = k) = Gamma(a, b_ik): a = (nu + 1)/2 and
    b_ik = nu/2 + E[beta_k] e_ik / 2, for e (N, K) and E[beta] () or (K,)."""
    return 0.5 * (nu + 1.0), 0.5 * nu + 0.5 * e * e_beta


def local_log_densities(e: torch.Tensor, e_log_beta, e_beta, nu: float) -> torch.Tensor:
    """L_ik (N, K): E log N(y_i | w_k^T x_i, 1/(beta_k lambda)) - KL(q(lambda|k) || p(lambda))
    at the optimal q(lambda_i | z_i = k) (module docstring): 1/2 E log beta - 1/2 log 2 pi
    + log Gamma(a) - log Gamma(nu/2) + (nu/2) log(nu/2) - a log b_ik."""
    a, b = local_factors(e, e_beta, nu)
    const = math.lgamma(a) - math.lgamma(0.5 * nu) + 0.5 * nu * math.log(0.5 * nu) - 0.5 * LOG_2PI
    return 0.5 * e_log_beta + const - a * torch.log(b)


def bound_at(e: torch.Tensor, e_log_beta, e_beta, nu: float, a, b) -> torch.Tensor:
    """The same term at any q(lambda_i | z_i = k) = Gamma(a_ik, b_ik) (N, K):
    1/2 (E log beta + E log lambda - log 2 pi - E beta E lambda e_ik)
    - KL(Gamma(a, b) || Gamma(nu/2, nu/2)); equal to :func:`local_log_densities` at the
    optimum."""
    e_lam, e_log_lam = U.gamma_moments(a, b)
    half = torch.full_like(e, 0.5 * nu)
    kl = U.gamma_kl(a, b, half, half)
    return 0.5 * (e_log_beta + e_log_lam - LOG_2PI - e_beta * e_lam * e) - kl


def weighted_stats(
    X: torch.Tensor, y: torch.Tensor, r: torch.Tensor, e_lam: torch.Tensor, maps=None
) -> U.Stats:
    """The statistics of the weights' update: S_k, s_k and sum r E[lambda] y^2 weighted by
    r_ik E[lambda_ik]; N_k = sum_i r_ik unweighted (the beta update's count)."""
    stats = U.sufficient_stats(X, y, r * e_lam, maps)
    return U.Stats(Nk=r.sum(0), S=stats.S, s=stats.s, yy=stats.yy)


@dataclass(frozen=True)
class RobustExperts:
    """The robust observation model read from a file: ``nu`` and the name of its latent
    weight site (what :func:`pyro_moe.closed_form.observations.read_observation` found)."""

    nu: float
    site: str
    kind: str = "robust"
    #: beta is a parameter of this likelihood (point estimate or q(beta))
    has_noise: bool = True

    def e_step(
        self, X, y, q, log_prior, e_log_beta, e_beta, noise_log_density=None, maps=None, **_
    ) -> U.EStep:
        """The local step: q(lambda) and q(Z) given the globals (module docstring), with
        the statistics of the next global step and sum_i lse_i."""
        K = q.mean.shape[0]
        e = U.expected_sq_residuals(X, y, q, maps)
        a, b = local_factors(e, e_beta, self.nu)
        logits = log_prior[:, :K] + local_log_densities(e, e_log_beta, e_beta, self.nu)
        if noise_log_density is not None:
            logits = torch.cat([logits, log_prior[:, K:] + noise_log_density], -1)
        lse = torch.logsumexp(logits, -1)
        log_r = logits - lse.unsqueeze(-1)
        r = log_r.exp()
        stats = weighted_stats(X, y, r[:, :K], a / b, maps)
        return U.EStep(log_r, lse.sum(), stats, r.sum(0))

    def initial(self, how: str, X, y, K: int, seed: int, **kw) -> torch.Tensor:
        """log q(Z) to start from: ``"prior"`` the local step at q(W) = the prior, the
        others the Gaussian experts' starts (least-squares subsets suit a real target)."""
        if how == "prior":
            return self.e_step(
                X, y, kw["prior"], kw["log_prior"], kw["e_log_beta"], kw["e_beta"],
                kw.get("noise_log_density"), kw.get("maps"),
            ).log_r  # fmt: skip
        return initial_log_responsibilities(how, X, y, K, seed, **kw)

    def start_stats(self, X, y, r, maps=None) -> U.Stats:
        """The statistics of a start q(Z) with no q(lambda) yet: E[lambda] = 1 (the
        prior's mean)."""
        return weighted_stats(X, y, r, torch.ones_like(r), maps)

    def guide_factors(self, X, y, q, e_beta, maps=None) -> dict[str, torch.Tensor]:
        """The optimal q(lambda_i | z_i = k) as the guide's parameters ``robust_shape``,
        ``robust_rate`` (N, K) (:mod:`pyro_moe.parts`)."""
        e = U.expected_sq_residuals(X, y, q, maps)
        a, b = local_factors(e, e_beta, self.nu)
        return {"robust_shape": torch.full_like(b, a), "robust_rate": b}

    def data_term(self, X, y, q, log_r, log_prior, e_log_beta, e_beta, params, maps=None):
        """sum_ik r_ik (log prior_ik + bound_ik - log r_ik) at the guide's q(Z) and
        q(lambda) (``params``' ``robust_shape``/``robust_rate``, else the optimal ones)."""
        K = q.mean.shape[0]
        e = U.expected_sq_residuals(X, y, q, maps)
        if "robust_shape" in params and "robust_rate" in params:
            term = bound_at(
                e, e_log_beta, e_beta, self.nu, params["robust_shape"], params["robust_rate"]
            )
        else:
            term = local_log_densities(e, e_log_beta, e_beta, self.nu)
        r = log_r.exp()
        like = torch.where(r[:, :K] > 0, r[:, :K] * (log_prior[:, :K] + term), 0.0).sum()
        return like - torch.special.xlogy(r, r).sum()


def robust_mismatch(
    model: Model, X, y, config: Config, site: str, nu: float, latent_beta, draws: int = 3
) -> str | None:
    """None when the file's observed ``y`` is N(w_k^T x_i, 1/(beta_k lambda_i)) at z_i = k,
    else why not: at ``draws`` random draws of w, z, lambda (and beta when latent, shape
    ``latent_beta``), the trace's log-density of each y_i is compared with that Gaussian
    (relative tolerance sqrt(eps)), as :func:`pyro_moe.likelihood.likelihood_mismatch` does
    for the Gaussian experts."""
    K, n, N = config.experts, config.features, X.shape[0]
    dt = dict(dtype=X.dtype, device=X.device)
    gen = torch.Generator(device="cpu").manual_seed(20261)
    tol = float(torch.finfo(X.dtype).eps) ** 0.5

    def randn(*shape):
        return torch.randn(shape, generator=gen, dtype=torch.float64).to(**dt)

    for _ in range(draws):
        W = config.prior_mean.detach().to(**dt).expand(K, n) + randn(K, n)
        z = torch.randint(K, (N,), generator=gen).to(X.device)
        lam = torch.exp(0.5 * randn(N))
        data = {"w": W, "z": z, site: lam}
        if latent_beta is not None:
            beta = torch.exp(0.5 * randn(*latent_beta))
            data["noise_precision"] = beta
        else:
            beta = config.noise_precision.detach().to(**dt)
        node = trace_model(model, X, y, config, data).nodes.get("y")
        if node is None or not isinstance(unwrap(node["fn"]), dist.Normal):
            return "its 'y' is not a Normal site"
        got = node["fn"].log_prob(node["value"]).detach().reshape(-1)
        b = beta[z] if beta.dim() == 1 else beta
        mean = (X * W[z]).sum(-1)
        want = dist.Normal(mean, (b * lam).rsqrt()).log_prob(y).reshape(-1)
        if got.shape != want.shape or not torch.allclose(got.to(want), want, rtol=tol, atol=tol):
            return (
                f"its log-density at random draws is not N(w_k^T x_i, 1/(beta_k {site}_i)) "
                "of the Gamma scale mixture"
            )
    return None
