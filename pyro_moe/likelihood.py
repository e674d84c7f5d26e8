"""The mixture likelihood, written once: each component's log-density of a point, the
noise expert's, and the predictive moments of y under each expert.

Notation (``docs/derivation.md``): z_i = [x_i, y_i]; expert k models its target
t_ik = T_k[n] z_i on its features phi_ik = T_k[:n] z_i (T_k = I for the shared design:
t = y, phi = x), so its residual is t_ik - w_k^T phi_ik = z_i^T a_k(w_k)
(:func:`residual_map`). With the noise expert, component K is Uniform(lo, hi) over the
targets: log u = -log(hi - lo).

* :func:`component_log_densities`: log N(t_ik | w_k^T phi_ik, 1/beta) for given weights
  (point estimates or a stack of posterior draws), the noise column appended: the
  pointwise log-likelihood is ``logsumexp(log_weights + that)`` (diagnostics, LOO).
* :func:`expected_log_densities`: its expectation under q(W) q(beta),
  E log N = 1/2 E log beta - 1/2 log 2 pi - E beta / 2 e_ik with
  e_ik = E_q (t_ik - w_k^T phi_ik)^2: the q(Z) update's logits less the prior, and the
  likelihood term of the closed-form ELBO (:mod:`pyro_moe.closed_form.updates`, whose fused
  E-step is tied to these by ``tests/test_likelihood.py``).
* :func:`expert_predictive`: mean and variance of y under expert k at new rows x.
"""

from __future__ import annotations

import math

import torch

from .errors import InputError

LOG_2PI = math.log(2 * math.pi)

__all__ = [
    "component_log_densities",
    "expected_log_densities",
    "expert_predictive",
    "noise_log_density",
    "residual_map",
]


def noise_log_density(bounds: torch.Tensor | None) -> torch.Tensor | None:
    """log u = -log(hi - lo) of the noise expert's uniform density over [lo, hi], or None
    without a noise expert."""
    if bounds is None:
        return None
    lo, hi = bounds.unbind(-1)
    return -torch.log(hi - lo)


def residual_map(W: torch.Tensor, maps: torch.Tensor | None = None) -> torch.Tensor:
    """a_k (..., K, d) with t_ik - w_k^T phi_ik = z_i^T a_k: a_k = T_k[n]^T - T_k[:n]^T w_k,
    for weights W (..., K, n) (e.g. a stack of posterior draws); [-w_k, 1] for the shared
    design."""
    n = W.shape[-1]
    if maps is None:
        return torch.cat([-W, W.new_ones(*W.shape[:-1], 1)], -1)
    return maps[:, n] - (W.unsqueeze(-1) * maps[:, :n]).sum(-2)


def _with_noise(log_dens: torch.Tensor, log_u: torch.Tensor | None) -> torch.Tensor:
    if log_u is None:
        return log_dens
    return torch.cat([log_dens, log_u.to(log_dens).expand(*log_dens.shape[:-1], 1)], -1)


def expected_log_densities(
    e: torch.Tensor, e_log_beta, e_beta, log_u: torch.Tensor | None = None
) -> torch.Tensor:
    """E_q log p(y_i | z_i = k) (..., N, C): 1/2 E log beta - 1/2 log 2 pi - E beta/2 e_ik
    for the K experts (e (..., N, K) the expected squared residuals), and log u for the
    noise expert (column K) when ``log_u`` is given."""
    return _with_noise(0.5 * e_log_beta - 0.5 * LOG_2PI - 0.5 * e_beta * e, log_u)


def component_log_densities(
    X: torch.Tensor,
    y: torch.Tensor,
    W: torch.Tensor,
    beta: torch.Tensor,
    maps: torch.Tensor | None = None,
    log_u: torch.Tensor | None = None,
) -> torch.Tensor:
    """log p(y_i | z_i = k, w, beta) (..., N, C) at weights W (..., K, n) and precision
    ``beta``: shared by the experts (shape W.shape[:-2], e.g. one per draw) or one per
    expert (shape W.shape[:-1]): log N(t_ik | w_k^T phi_ik, 1/beta_k), then log u for the
    noise expert."""
    Z = torch.cat([X, y.unsqueeze(-1)], -1)  # (N, d)
    resid = Z @ residual_map(W, maps).transpose(-1, -2)  # (..., N, K)
    beta = torch.as_tensor(beta, dtype=resid.dtype, device=resid.device)
    if beta.shape == W.shape[:-1]:  # one per expert: (..., 1, K) against (..., N, K)
        b = beta.unsqueeze(-2)
    else:
        b = beta.reshape(*beta.shape, 1, 1)
    return expected_log_densities(resid * resid, torch.log(b), b, log_u)


def expert_predictive(
    X: torch.Tensor,
    mean: torch.Tensor,
    cov: torch.Tensor,
    beta: torch.Tensor,
    maps: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and variance (N, K) of y under each expert at rows X, q(w_k) = N(m_k, B_k):
    N(m_k^T phi_k(x) - (t_k - y), 1/beta + phi^T B_k phi).

    For the shared design phi = x, t = y. With expert maps the experts must model y
    itself up to a shift that does not depend on y (T_k[n] has coefficient 1 on y and
    phi_k none), else there is no predictive density of one y.
    """
    if maps is None:
        mu = X @ mean.T
        var = 1.0 / beta + ((X @ cov) * X).sum(-1).T
        return mu, var
    if bool((maps[:, -1, -1] != 1).any()) or bool((maps[:, :-1, -1] != 0).any()):
        raise InputError(
            "these experts model different targets (mixed targets), so there is no "
            "predictive density of one y; predict with experts that share the response"
        )
    phi = torch.einsum("nd,kjd->nkj", X, maps[:, :-1, :-1])
    mu = (phi * mean).sum(-1) - X @ maps[:, -1, :-1].T
    quad = torch.einsum("nkj,kjl,nkl->nk", phi, cov, phi)
    return mu, 1.0 / beta + quad
