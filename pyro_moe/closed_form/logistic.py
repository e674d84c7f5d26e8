"""Bernoulli (logistic) experts in closed form, by the Jaakkola-Jordan bound.

Model (``models/logistic_experts.py``): y_i in {0, 1},

    y_i | z_i = k ~ Bernoulli(sigmoid(s_ik)),   s_ik = w_k^T x_i,   w_k ~ N(w0_k, A_k).

Why the Jaakkola-Jordan (JJ) bound and not Polya-Gamma augmentation: both give the same
Gaussian update of q(w_k) (with E[omega_ik] = tanh(c/2)/(2c) of the Polya-Gamma factor
in the place of 2 lambda(xi_ik) below); JJ needs no extra latent site in the model file,
so the file's guide stays q(Z) q(W) and Pyro's ELBO of that guide is what the bound is
compared with, and the bound holds at every xi, so the objective is a true lower bound
of that ELBO (Polya-Gamma's ELBO is that of an augmented model, whose guide would carry
q(omega) too). With

    log sigmoid(t) >= log sigmoid(xi) + (t - xi)/2 - lambda(xi) (t^2 - xi^2),
    lambda(xi) = tanh(xi/2) / (4 xi)   (1/8 at xi = 0),

and log p(y | s) = log sigmoid((2y - 1) s), the expected log-likelihood of point i under
expert k is bounded by

    l_ik(xi) = log sigmoid(xi) + ((2 y_i - 1) m_k^T x_i - xi)/2 - lambda(xi)(E s_ik^2 - xi^2),

E s_ik^2 = (m_k^T x_i)^2 + x_i^T B_k x_i, maximised at xi_ik = sqrt(E s_ik^2), where the
last term vanishes (:func:`local_bound`). The local step sets xi_ik so and
log r_ik = log prior_ik + l_ik - lse_i; the objective's data term is sum_i lse_i, a lower
bound of the ELBO's sum_ik r_ik (log prior_ik + E log p(y_i | s_ik) - log r_ik). The
global step is the exact maximiser of the bound in q(w_k):

    B_k^{-1} = A_k^{-1} + 2 sum_i r_ik lambda(xi_ik) x_i x_i^T,
    m_k = B_k (A_k^{-1} w0_k + sum_i r_ik (y_i - 1/2) x_i),

the Gaussian update of :func:`~pyro_moe.closed_form.updates.weights_natural` with beta = 1,
S_k = sum 2 r lambda x x^T and s_k = sum r (y - 1/2) x (:func:`jj_stats`). There is no
noise precision. Every step maximises the bound over its block, so it never decreases.
Equations: ``docs/derivation.md``, section "Robust and classification experts".
"""

from __future__ import annotations

from dataclasses import dataclass

import pyro.distributions as dist
import torch
import torch.nn.functional as tnf

from ..config import Config
from ..errors import InputError
from ..likelihood import trace_model, unwrap
from ..model_file import Model
from . import updates as U
from .init import initial_log_responsibilities

__all__ = [
    "LogisticExperts",
    "jj_lambda",
    "jj_stats",
    "local_bound",
    "logistic_mismatch",
    "region_log_responsibilities",
]


def jj_lambda(xi: torch.Tensor) -> torch.Tensor:
    """lambda(xi) = tanh(xi/2) / (4 xi), even in xi, 1/8 - xi^2/96 near 0."""
    xi = xi.abs()
    small = xi < 1e-4
    safe = torch.where(small, torch.ones_like(xi), xi)
    return torch.where(small, 0.125 - xi * xi / 96.0, torch.tanh(0.5 * safe) / (4.0 * safe))


def _moments(X: torch.Tensor, q: U.WeightPosterior) -> tuple[torch.Tensor, torch.Tensor]:
    """E s_ik = m_k^T x_i and E s_ik^2 = (m_k^T x_i)^2 + x_i^T B_k x_i, both (N, K)."""
    m = X @ q.mean.T
    return m, m * m + ((X @ q.cov) * X).sum(-1).T


def local_bound(y: torch.Tensor, m: torch.Tensor, s2: torch.Tensor, xi=None) -> torch.Tensor:
    """l_ik(xi) (N, K) (module docstring); at the optimum xi = sqrt(E s^2) when ``xi`` is
    None."""
    sign = (2.0 * y - 1.0).unsqueeze(-1)
    if xi is None:
        xi = s2.clamp_min(0).sqrt()
        return tnf.logsigmoid(xi) + 0.5 * (sign * m - xi)
    return tnf.logsigmoid(xi) + 0.5 * (sign * m - xi) - jj_lambda(xi) * (s2 - xi * xi)


def jj_stats(X: torch.Tensor, y: torch.Tensor, r: torch.Tensor, lam: torch.Tensor) -> U.Stats:
    """S_k = sum_i 2 r_ik lambda(xi_ik) x_i x_i^T, s_k = sum_i r_ik (y_i - 1/2) x_i,
    N_k = sum_i r_ik (the statistics of q(w_k) with beta = 1); no sum of squares."""
    c = 2.0 * r * lam  # (N, K)
    S = (c.T.unsqueeze(-1) * X).transpose(-1, -2) @ X  # (K, n, n)
    s = (r * (y - 0.5).unsqueeze(-1)).T @ X
    return U.Stats(Nk=r.sum(0), S=S, s=s, yy=torch.zeros_like(r[0]))


def region_log_responsibilities(X: torch.Tensor, K: int, seed: int, C: int) -> torch.Tensor:
    """A start for classification experts that does not read y: k-means on the rows of X
    (k-means++ seeding, 20 Lloyd steps), q(z_i) = 0.8 on the row's region and the rest
    spread over the others: each expert starts as the classifier of one region, as a gate
    would route them (least-squares subsets of a 0/1 target, the Gaussian start, split
    the points by their label, not by their place)."""
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    Xc = X.detach().to("cpu", torch.float64)
    N = Xc.shape[0]
    centres = Xc[torch.randint(N, (1,), generator=gen)]
    for _ in range(1, K):
        d2 = torch.cdist(Xc, centres).square().min(-1).values
        p = d2 / d2.sum() if float(d2.sum()) > 0 else torch.full_like(d2, 1.0 / N)
        centres = torch.cat([centres, Xc[torch.multinomial(p, 1, generator=gen)]])
    for _ in range(20):
        label = torch.cdist(Xc, centres).argmin(-1)
        for k in range(K):  # K centres, not N rows
            if bool((label == k).any()):
                centres[k] = Xc[label == k].mean(0)
    label = torch.cdist(Xc, centres).argmin(-1)
    r = torch.full((N, C), 0.2 / max(C - 1, 1), dtype=torch.float64)
    r[torch.arange(N), label] = 0.8 if C > 1 else 1.0
    return torch.log(r / r.sum(-1, keepdim=True)).to(X)


@dataclass(frozen=True)
class LogisticExperts:
    """The logistic observation model read from a file (Bernoulli ``y`` with logits
    w_k^T x_i; :func:`pyro_moe.closed_form.observations.read_observation`)."""

    kind: str = "logistic"
    #: no noise precision in a Bernoulli likelihood: beta = 1 in the Gaussian update
    has_noise: bool = False

    def e_step(self, X, y, q, log_prior, e_log_beta=None, e_beta=None, noise=None, maps=None, **_):
        """The local step: xi_ik = sqrt(E s_ik^2) and q(Z) given q(W) (module docstring),
        with the statistics of the next global step and sum_i lse_i."""
        K = q.mean.shape[0]
        m, s2 = _moments(X, q)
        logits = log_prior[:, :K] + local_bound(y, m, s2)
        lse = torch.logsumexp(logits, -1)
        log_r = logits - lse.unsqueeze(-1)
        r = log_r.exp()
        return U.EStep(log_r, lse.sum(), jj_stats(X, y, r, jj_lambda(s2.sqrt())), r.sum(0))

    def start_stats(self, X, y, r, maps=None) -> U.Stats:
        """The statistics of a start q(Z) before any q(W): xi = 0, lambda = 1/8 (the
        bound's quadratic at the origin)."""
        return jj_stats(X, y, r, torch.full_like(r, 0.125))

    def initial(self, how: str, X, y, K: int, seed: int, **kw) -> torch.Tensor:
        """log q(Z) to start from: ``"subsets"`` the regions of X
        (:func:`region_log_responsibilities`), ``"prior"`` the local step at q(W) = the
        prior; ``"random"`` and ``"given"`` as for Gaussian experts."""
        if how == "subsets":
            return region_log_responsibilities(X, K, seed, kw["log_prior"].shape[-1])
        if how == "prior":
            return self.e_step(X, y, kw["prior"], kw["log_prior"]).log_r
        return initial_log_responsibilities(how, X, y, K, seed, **kw)

    def data_term(self, X, y, q, log_r, log_prior, e_log_beta, e_beta, params, maps=None):
        """sum_ik r_ik (log prior_ik + l_ik - log r_ik) at the guide's q(Z) and q(W), the
        optimal xi: the bound on the ELBO's data term."""
        K = q.mean.shape[0]
        m, s2 = _moments(X, q)
        r = log_r.exp()
        term = log_prior[:, :K] + local_bound(y, m, s2)
        return torch.where(r > 0, r * term, 0.0).sum() - torch.special.xlogy(r, r).sum()


def logistic_mismatch(model: Model, X, y, config: Config, draws: int = 3) -> str | None:
    """None when the file's observed ``y`` is Bernoulli(logits = w_k^T x_i) at z_i = k, else
    why not: compared at ``draws`` random draws of w and z (relative tolerance sqrt(eps));
    y must hold only 0 and 1."""
    if not bool(((y == 0) | (y == 1)).all()):
        raise InputError("logistic experts need a target y of 0s and 1s")
    K, n, N = config.experts, config.features, X.shape[0]
    dt = dict(dtype=X.dtype, device=X.device)
    gen = torch.Generator(device="cpu").manual_seed(20262)
    tol = float(torch.finfo(X.dtype).eps) ** 0.5
    for _ in range(draws):
        W = config.prior_mean.detach().to(**dt).expand(K, n)
        W = W + torch.randn((K, n), generator=gen, dtype=torch.float64).to(**dt)
        z = torch.randint(K, (N,), generator=gen).to(X.device)
        node = trace_model(model, X, y, config, {"w": W, "z": z}).nodes.get("y")
        if node is None or not isinstance(unwrap(node["fn"]), dist.Bernoulli):
            return "its 'y' is not a Bernoulli site"
        got = node["fn"].log_prob(node["value"]).detach().reshape(-1)
        want = dist.Bernoulli(logits=(X * W[z]).sum(-1)).log_prob(y).reshape(-1)
        if got.shape != want.shape or not torch.allclose(got.to(want), want, rtol=tol, atol=tol):
            return "its log-density at random draws is not Bernoulli(logits = w_k^T x_i)"
    return None
