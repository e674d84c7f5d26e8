"""The published formulas that derivation.md marks wrong, shown wrong here (section 8).

Each test builds a fitted state, applies the published update and ours to the same block,
and checks that ours gives the higher objective (ours is the exact block maximiser).
"""

from __future__ import annotations

import warnings

import pytest
import torch
from conftest import STUDY_PRIOR_MEAN, STUDY_XI, two_circles

import pyro_moe
from pyro_moe.closed_form import updates as U


def _state(name="regularized_experts"):
    X, y = two_circles(80, seed=5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", pyro_moe.ConvergenceWarning)
        res = pyro_moe.fit(
            name, X, y, experts=2, n_init=1, max_iter=5, prior_mean=STUDY_PRIOR_MEAN,
            regularization_cov=STUDY_XI if name == "regularized_experts" else None,
        )  # fmt: skip
    q = U.WeightPosterior(res.mean, res.cov, torch.logdet(res.cov))
    return res, q


def _F(res, q, log_r, w0=None, A=None):
    e = U.expected_sq_residuals(res.X, res.y, q)
    beta = res.noise_precision
    _, F = U.objective(
        log_r, e, q, log_prior=res.log_gate, e_beta=beta, e_log_beta=torch.log(beta),
        w0=res.prior_mean if w0 is None else w0, A=res.prior_cov if A is None else A,
        xi=res.regularization_cov,
    )  # fmt: skip
    return float(F)


def test_erratum_a_published_qz_update_ignores_y_and_lowers_the_elbo():
    res, q = _state()
    beta = res.noise_precision
    X, y = res.X, res.y
    Eww = q.cov + q.mean.unsqueeze(-1) * q.mean.unsqueeze(-2)
    quad = torch.einsum("ni,kij,nj->nk", X, Eww, X)
    published = torch.log_softmax(res.log_gate - 0.5 * beta * (quad - X @ q.mean.T), -1)
    ours = U.responsibilities(res.log_gate, U.expected_sq_residuals(X, y, q), torch.log(beta), beta)
    assert _F(res, q, ours) > _F(res, q, published) + 1.0


def test_erratum_f_published_regularized_w0_update_lowers_the_objective():
    res, q = _state()
    A, xi = res.prior_cov, res.regularization_cov
    K = A.shape[0]
    A_inv, xi_inv = torch.linalg.inv(A), torch.linalg.inv(xi)
    log_r = torch.log(res.responsibilities)
    ours = U.update_prior_mean(q, U.precision_of(A), xi)
    # published (f): [A^-1 + (K-1) Xi]^-1 (A^-1 m_k + Xi sum_{k' != k} w0_k'), Gauss-Seidel
    pub = res.prior_mean.clone()
    for k in range(K):
        others = pub.sum(0) - pub[k]
        pub[k] = torch.linalg.solve(A_inv[k] + (K - 1) * xi, A_inv[k] @ q.mean[k] + xi @ others)
    # Xi^-1 but without the factor 2: still not the maximiser
    half = res.prior_mean.clone()
    for k in range(K):
        others = half.sum(0) - half[k]
        half[k] = torch.linalg.solve(
            A_inv[k] + (K - 1) * xi_inv, A_inv[k] @ q.mean[k] + xi_inv @ others
        )
    F_ours = _F(res, q, log_r, w0=ours)
    assert F_ours > _F(res, q, log_r, w0=pub) + 1e-6
    assert F_ours > _F(res, q, log_r, w0=half) + 1e-9
    # the corrected conditional update, swept Gauss-Seidel, converges to our joint solve
    gs = res.prior_mean.clone()
    for _ in range(200):
        for k in range(K):
            others = gs.sum(0) - gs[k]
            gs[k] = torch.linalg.solve(
                A_inv[k] + 2 * (K - 1) * xi_inv, A_inv[k] @ q.mean[k] + 2 * xi_inv @ others
            )
    torch.testing.assert_close(gs, ours, rtol=1e-8, atol=1e-10)


def test_erratum_e_prior_cov_as_second_moment_is_wrong_for_nonzero_w0():
    res, q = _state("mixture_of_models")
    log_r = torch.log(res.responsibilities)
    w0 = res.prior_mean
    published = q.cov + q.mean.unsqueeze(-1) * q.mean.unsqueeze(-2)  # E[w w^T]
    ours = U.update_prior_cov(q, w0, 0.0)
    e = U.expected_sq_residuals(res.X, res.y, q)
    kw = dict(log_prior=U.dirichlet_expected_log(res.alpha).expand(len(res.y), -1), e_beta=res.noise_precision,
              e_log_beta=torch.log(res.noise_precision), w0=w0, alpha=res.alpha, mu=res.concentration)  # fmt: skip
    F_ours = float(U.objective(log_r, e, q, A=ours, **kw)[1])
    F_pub = float(U.objective(log_r, e, q, A=published, **kw)[1])
    assert F_ours > F_pub + 1e-3


def test_regularizer_identity_matches_the_sum_over_ordered_pairs():
    g = torch.Generator().manual_seed(0)
    w0 = torch.randn(4, 3, generator=g, dtype=torch.float64)
    M = torch.randn(3, 3, generator=g, dtype=torch.float64)
    xi = M @ M.T + torch.eye(3, dtype=torch.float64)
    mvn = torch.distributions.MultivariateNormal(torch.zeros(3, dtype=torch.float64), xi)
    explicit = sum(mvn.log_prob(w0[k] - w0[j]) for k in range(4) for j in range(4) if k != j)
    assert float(U.regularizer(w0, xi)) == pytest.approx(float(explicit), rel=1e-12)
