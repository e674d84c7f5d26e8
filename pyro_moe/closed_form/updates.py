"""Closed-form coordinate-ascent updates and the ELBO (``docs/derivation.md``).

Every function is vectorised over points (N) and experts (K); nothing is N x N. Shapes:
X (N, n), y (N,), r (N, K), m (K, n), B and A (K, n, n).

Heterogeneous experts (:mod:`pyro_moe.experts`): with ``maps`` T (K, n+1, d), expert k
sees phi_ik = T_k[:n] z_i and t_ik = T_k[n] z_i of z_i = [x_i, y_i]; every pass runs in
z-space (sums of r_ik z_i z_i^T, :func:`z_space`) and :func:`expert_gram` maps the sums to
each expert's own statistics. ``maps=None`` is the shared design, T_k = I.

Notation: r_ik = q(z_i = k); N_k = sum_i r_ik; S_k = sum_i r_ik x_i x_i^T;
s_k = sum_i r_ik y_i x_i; e_ik = E_q (y_i - w_k^T x_i)^2 = (y_i - m_k^T x_i)^2 + x_i^T B_k x_i;
D_k = B_k + (m_k - w0_k)(m_k - w0_k)^T.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch

from ..likelihood import LOG_2PI, expected_log_densities, residual_map


@dataclass
class Stats:
    """Sufficient statistics of q(Z): N_k, S_k, s_k and sum_i r_ik y_i^2."""

    Nk: torch.Tensor  # (K,)
    S: torch.Tensor  # (K, n, n)
    s: torch.Tensor  # (K, n)
    yy: torch.Tensor  # (K,)


CHUNK_ELEMENTS = 1 << 18  # elements of the largest per-chunk temporary (2 MiB in float64)


def _column(v):
    """A per-expert value (K,) as a (K, 1) column for the point-last pass; others as is."""
    return v.reshape(-1, 1) if torch.is_tensor(v) and v.dim() == 1 else v


def chunk_rows(N: int, width: int) -> int:
    """Rows per chunk so that a (rows, width) temporary stays near CHUNK_ELEMENTS (in cache)."""
    return max(1024, CHUNK_ELEMENTS // max(1, width))


def chunks(N: int, rows: int):
    """Slices covering 0..N in blocks of ``rows``."""
    for i in range(0, N, rows):
        yield slice(i, min(i + rows, N))


def _stats_chunk(X: torch.Tensor, y: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """G_k = Z^T diag(r_k) Z with Z = [X, y] (K, n+1, n+1): S_k, s_k and sum r y^2 at once."""
    Z = torch.cat([X, y.unsqueeze(-1)], -1)
    # r_k z_i formed (K, rows, d) from a contiguous r^T: from r's (rows, K) layout the
    # broadcast took the slow strided path (30 of the 80 us at N = 1000, K = 2)
    return (r.T.contiguous().unsqueeze(-1) * Z).transpose(-1, -2) @ Z


def expert_gram(G: torch.Tensor, maps: torch.Tensor | None) -> torch.Tensor:
    """G'_k = T_k G_k T_k^T: sums of r_ik [phi_ik, t_ik][phi_ik, t_ik]^T from z-space sums."""
    if maps is None:
        return G
    return maps @ G @ maps.transpose(-1, -2)


def _stats_from_gram(G: torch.Tensor, Nk: torch.Tensor, maps: torch.Tensor | None = None) -> Stats:
    G = expert_gram(G, maps)
    n = G.shape[-1] - 1
    return Stats(Nk=Nk, S=G[:, :n, :n].contiguous(), s=G[:, :n, n].contiguous(), yy=G[:, n, n])


def sufficient_stats(
    X: torch.Tensor, y: torch.Tensor, r: torch.Tensor, maps: torch.Tensor | None = None
) -> Stats:
    """N_k = sum_i r_ik, S_k = sum_i r_ik x_i x_i^T, s_k = sum_i r_ik y_i x_i (O(N K n^2)),
    in each expert's own features and target when ``maps`` are given.

    Summed over row chunks (the statistics are sums): no (K, N, n) temporary.
    """
    K, d = r.shape[-1], X.shape[-1] + 1
    rows = chunk_rows(X.shape[0], K * d)
    if X.shape[0] <= rows:  # one chunk: its sums are the statistics
        return _stats_from_gram(_stats_chunk(X, y, r), r.sum(0), maps)
    G = X.new_zeros(K, d, d)
    for sl in chunks(X.shape[0], rows):
        G += _stats_chunk(X[sl], y[sl], r[sl])
    return _stats_from_gram(G, r.sum(0), maps)


@dataclass
class EStep:
    """Result of :func:`e_step`: log r (N, C), sum_i logsumexp_k(logits_ik), the
    sufficient statistics of the new q(Z) over the K Gaussian experts, and sum_i r_ik
    over all C components."""

    log_r: torch.Tensor
    lse: torch.Tensor
    stats: Stats
    r_sum: torch.Tensor


@functools.lru_cache(maxsize=32)
def _triangle(d: int, device: torch.device, dtype: torch.dtype):
    """Upper-triangle indices (I, J) of a d x d matrix (i <= j), the weights c_ij (1 on the
    diagonal, 2 off it) with z^T Q z = sum_{i<=j} c_ij Q_ij z_i z_j for symmetric Q, the
    index that rebuilds the full symmetric matrix from its triangle (d*d,), and the
    ((d-1)^2, T) matrix P with vec(B) P = (c_ij B_ij) over the triangle for an (d-1) x (d-1)
    B padded with zeros to d x d (the shared design's Q_k, one GEMM: each entry is
    c_ij B_ij plus exact zeros)."""
    I, J = torch.triu_indices(d, d, device=device)
    coef = torch.where(I == J, 1.0, 2.0).to(dtype)
    pos = torch.empty(d, d, dtype=torch.long, device=device)
    pos[I, J] = torch.arange(I.shape[0], device=device)
    pos[J, I] = pos[I, J]
    n = d - 1
    inner = (I < n) & (J < n)
    P = torch.zeros(n * n, I.shape[0], dtype=dtype, device=device)
    t = torch.arange(I.shape[0], device=device)[inner]
    P[I[inner] * n + J[inner], t] = coef[inner]
    return I, J, coef, pos.reshape(-1), P


def z_products(X: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """z = [x, y] point-last (d, N) and its upper-triangle products z_I z_J (T, N), what
    every pass of :func:`e_step` forms from the data alone: a source whose rows fit in one
    chunk keeps them across iterations (``products=``)."""
    I, J = _triangle(X.shape[1] + 1, X.device, X.dtype)[:2]
    z = torch.cat([X.T, y.unsqueeze(0)], 0)
    return z, z[I] * z[J]


def point_last_rows(X: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, None]:
    """z = [x, y] point-last (d, N), without the products: what :func:`e_step` reads over
    several chunks (``products=``) instead of copying each chunk's rows into that layout
    (a transposing copy, ~20 % of the pass at 1e6 points); one more copy of the data."""
    return torch.cat([X.T, y.unsqueeze(0)], 0), None


def single_chunk(N: int, d: int, C: int) -> bool:
    """Whether :func:`e_step` on N rows of width d - 1 with C components makes one chunk."""
    return N <= chunk_rows(N, d * (d + 1) // 2 + 2 * C)


class _Workspace:
    """The per-chunk buffers of one :func:`e_step` call over several chunks, allocated once:
    z (d, m), its triangle of products (T, m), the residuals (K, m), the logits (C, m, whose
    first K rows hold e), and the unnormalised responsibilities (C, m); each chunk of m <=
    ``rows`` points takes contiguous views of their first d*m, T*m, ... elements."""

    def __init__(self, d: int, T: int, K: int, C: int, rows: int, like: torch.Tensor):
        self.d, self.T, self.K, self.C = d, T, K, C
        new = functools.partial(like.new_empty, dtype=like.dtype)
        self.z, self.zz, self.resid = new(d * rows), new(T * rows), new(K * rows)
        self.lg, self.pr = new(C * rows), new(C * rows)

    def chunk(self, X: torch.Tensor, y: torch.Tensor, z: torch.Tensor | None = None):
        """z = [x, y] point-last and z_i z_j (i <= j, :func:`_triangle`'s order) of a chunk's
        rows (``z``: the chunk's columns of the caller's point-last copy, else copied here),
        and the (K, m) buffers for the residuals and e, the latter the logits' first K rows."""
        m, d = X.shape[0], self.d
        if z is None:
            z = self.z[: d * m].view(d, m)
            z[: d - 1].copy_(X.T)
            z[d - 1].copy_(y)
        zz = self.zz[: self.T * m].view(self.T, m)
        at = 0
        for i in range(d):  # rows (i, i..d-1) of the upper triangle, row-major
            torch.mul(z[i : i + 1], z[i:], out=zz[at : at + d - i])
            at += d - i
        return z, zz, self.resid[: self.K * m].view(self.K, m), self.logits(m)[: self.K]

    def logits(self, m: int) -> torch.Tensor:
        return self.lg[: self.C * m].view(self.C, m)

    def p(self, m: int) -> torch.Tensor:
        return self.pr[: self.C * m].view(self.C, m)


def e_step(
    X: torch.Tensor,
    y: torch.Tensor,
    q: WeightPosterior,
    log_prior: torch.Tensor,
    e_log_beta,
    e_beta,
    noise_log_density=None,
    out: torch.Tensor | None = None,
    maps: torch.Tensor | None = None,
    products: tuple[torch.Tensor, torch.Tensor | None] | None = None,
) -> EStep:
    """The q(Z) update fused with what the next iteration needs, in one chunked pass.

    Per chunk: e_ik (:func:`expected_sq_residuals`), log r (:func:`responsibilities`),
    the log-sum-exp of the logits, and the sufficient statistics of r. With
    log r_ik = logit_ik - lse_i, sum_k r_ik (logit_ik - log r_ik) = lse_i, so the
    likelihood-plus-entropy part of the ELBO is sum_i lse_i (see :func:`elbo_from_lse`).

    Layout: each chunk is held point-last, z (d, rows), so that every elementwise op runs
    along contiguous points (on a CPU, broadcasting over a short last axis is several
    times slower), and only the d(d+1)/2 upper-triangle products z_i z_j are formed
    (``products``: :func:`z_products` of all rows, kept by a caller whose rows make one
    chunk, :func:`single_chunk`; over several chunks only its z is read, and its products
    part may be None: :func:`point_last_rows`). ``log_r`` is returned as the (N, C) view of a (C, N)
    buffer; pass that view back as ``out`` to reuse the buffer (any (N, C) tensor is
    accepted).
    """
    N, d = X.shape[0], X.shape[1] + 1
    K = q.mean.shape[0]
    C = log_prior.shape[-1]
    log_rt = out.T if out is not None else X.new_empty(C, N)  # (C, N)
    # with z = [x, y]: y - m_k^T x = a_k^T z and x^T B_k x = z^T Q_k z (z_space), and
    # G_k = sum_i r_ik z_i z_i^T; all are GEMMs against z or its triangle of products
    I, J, coef, full, P = _triangle(d, X.device, X.dtype)
    if maps is None:  # Q_k = B_k padded: its weighted triangle in one GEMM
        a = residual_map(q.mean)
        Qv = q.cov.reshape(K, -1) @ P  # (K, T): z^T Q_k z = Qv_k . (z_I z_J)
    else:
        a, Q = z_space(q, maps)
        Qv = Q[:, I, J] * coef
    G = lse = r_sum = None
    half_beta = _column(0.5 * e_beta)  # beta_k of each expert as a (K, 1) column
    const = _column(0.5 * e_log_beta - 0.5 * LOG_2PI)
    # a mixture's log prior is one row broadcast over the points: use it as a column
    row = log_prior.dim() == 2 and log_prior.stride(0) == 0
    prior_t = log_prior[0].unsqueeze(-1) if row else log_prior.T
    rows = chunk_rows(N, I.shape[0] + 2 * C)
    # several chunks: every per-chunk temporary is written into buffers allocated once per
    # call (fresh ~1 MB tensors in every chunk cost as much as the arithmetic: at 1e6 points
    # the triangle's product alone took 440 us a chunk against ~90 us into a kept buffer)
    ws = _Workspace(d, I.shape[0], K, C, rows, X) if N > rows else None
    for sl in chunks(N, rows):
        if ws is None:
            if products is not None and products[1] is not None:
                z, zz = products
            else:
                z = torch.cat([X[sl].T, y[sl].unsqueeze(0)], 0)  # (d, rows)
                zz = z[I] * z[J]  # (T, rows)
            resid = a @ z
            e = torch.addcmul(Qv @ zz, resid, resid)  # (t - m^T phi)^2 + phi^T B phi
        else:
            z, zz, resid, e = ws.chunk(
                X[sl], y[sl], None if products is None else products[0][:, sl]
            )
            torch.mm(a, z, out=resid)
            torch.mm(Qv, zz, out=e).addcmul_(resid, resid)  # the same op, in place
        lp = prior_t if row else prior_t[:, sl]
        # lp - (beta/2) e + const, written into e's buffer
        logits = torch.sub(lp[:K], e.mul_(half_beta), out=e).add_(const)
        if noise_log_density is not None:
            noise = (lp[K:] + noise_log_density).expand(-1, logits.shape[1])
            if ws is None:
                logits = torch.cat([logits, noise], 0)
            else:  # e is the first K rows of the (C, rows) buffer
                logits = ws.logits(logits.shape[1])
                logits[K:].copy_(noise)
        top = logits.amax(0, keepdim=True).nan_to_num_(0.0, 0.0, 0.0)
        logits = logits.sub_(top)
        p = logits.exp() if ws is None else torch.exp(logits, out=ws.p(logits.shape[1]))
        tot = p.sum(0, keepdim=True)
        log_tot = tot.log()
        torch.sub(logits, log_tot, out=log_rt[:, sl])
        part = (top + log_tot).sum()
        r = p.div_(tot)
        if G is None:  # the first chunk's sums (a single chunk: no accumulators)
            lse, r_sum, G = part, r.sum(1), zz @ r[:K].T
        else:
            lse += part
            r_sum += r.sum(1)
            G.addmm_(zz, r[:K].T)
    assert G is not None and lse is not None and r_sum is not None
    G = G[full].T.reshape(K, d, d)
    return EStep(log_rt.T, lse, _stats_from_gram(G, r_sum[:K].clone(), maps), r_sum)


@dataclass
class WeightPosterior:
    """q(w_k) = N(m_k, B_k), with log|B_k| from the Cholesky factor of the precision."""

    mean: torch.Tensor  # (K, n)
    cov: torch.Tensor  # (K, n, n)
    logdet: torch.Tensor  # (K,)


def cholesky_logdet(L: torch.Tensor) -> torch.Tensor:
    """log|M| = 2 sum_i log L_ii from the Cholesky factor L of M (batched over leading dims)."""
    return 2.0 * torch.log(torch.diagonal(L, dim1=-2, dim2=-1)).sum(-1)


def precision_of(A: torch.Tensor) -> torch.Tensor:
    """A^{-1} through A's Cholesky factor (A is n x n per expert)."""
    return torch.cholesky_inverse(torch.linalg.cholesky(A))


@dataclass
class WeightPrior:
    """p(w_k) = N(w0_k, A_k) with the factors every iteration reads: A_k^{-1}, log|A_k| and
    A_k^{-1} w0_k, from one Cholesky factorisation of A (:func:`weight_prior`). The engine
    builds it once, and again only when the M-step moves w0 or A."""

    mean: torch.Tensor  # w0 (K, n)
    cov: torch.Tensor  # A (K, n, n)
    precision: torch.Tensor  # A^{-1} (K, n, n)
    logdet: torch.Tensor  # log|A_k| (K,)
    precision_mean: torch.Tensor  # A_k^{-1} w0_k (K, n)

    def as_posterior(self) -> WeightPosterior:
        """:func:`prior_from` of this prior, from the factorisation it holds."""
        return WeightPosterior(self.mean.clone(), self.cov.clone(), self.logdet)


def weight_prior(w0: torch.Tensor, A: torch.Tensor) -> WeightPrior:
    """:class:`WeightPrior` of N(w0_k, A_k) through the Cholesky factor L_k of A_k."""
    L = torch.linalg.cholesky(A)
    return WeightPrior(
        mean=w0,
        cov=A,
        precision=torch.cholesky_inverse(L),
        logdet=cholesky_logdet(L),
        precision_mean=torch.cholesky_solve(w0.unsqueeze(-1), L).squeeze(-1),
    )


def weights_natural(
    stats: Stats, prior: WeightPrior, beta: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The natural parameters of the optimal q(w_k) given q(Z) (the CAVI update in
    natural form): precision J_k = A_k^{-1} + beta_k S_k and h_k = A_k^{-1} w0_k + beta_k s_k
    (beta_k = beta when the experts share one), q(w_k) proportional to
    exp(h_k^T w - 1/2 w^T J_k w). Linear in the statistics, so a step
    (1 - rho) eta + rho eta_hat of natural-gradient SVI is a step in (h, J). ``prior``
    is read for its ``precision`` and ``precision_mean`` only: a non-Gaussian prior's
    linearisation (:class:`~pyro_moe.closed_form.linearised.LinearisedPrior`, CVI) fits."""
    if torch.is_tensor(beta) and beta.dim() == 1:  # one noise precision per expert
        return (
            prior.precision_mean + beta[:, None] * stats.s,
            prior.precision + beta[:, None, None] * stats.S,
        )
    return (
        torch.add(prior.precision_mean, stats.s, alpha=beta),
        torch.add(prior.precision, stats.S, alpha=beta),
    )


def weights_from_natural(h: torch.Tensor, J: torch.Tensor) -> WeightPosterior:
    """q(w_k) = N(m_k, B_k) from its natural parameters: B_k = J_k^{-1}, m_k = J_k^{-1} h_k,
    log|B_k| = -log|J_k|, through the Cholesky factor of J_k."""
    L = torch.linalg.cholesky(J)
    mean = torch.cholesky_solve(h.unsqueeze(-1), L).squeeze(-1)
    return WeightPosterior(mean, torch.cholesky_inverse(L), -cholesky_logdet(L))


def update_weights(stats: Stats, prior: WeightPrior, beta: torch.Tensor) -> WeightPosterior:
    """q(w_k): B_k = (A_k^{-1} + beta_k S_k)^{-1}, m_k = B_k (A_k^{-1} w0_k + beta_k s_k).

    ``beta`` is E_q[beta] when beta has a Gamma posterior; one for every expert, or one per
    expert (shape (K,)). Solved through the Cholesky factor of the precision
    A_k^{-1} + beta_k S_k (:func:`weights_natural`, :func:`weights_from_natural`).
    """
    return weights_from_natural(*weights_natural(stats, prior, beta))


def prior_from(w0: torch.Tensor, A: torch.Tensor) -> WeightPosterior:
    """q(w_k) set to the prior N(w0_k, A_k) (the "prior" initialisation)."""
    L = torch.linalg.cholesky(A)
    return WeightPosterior(w0.clone(), A.clone(), cholesky_logdet(L))


def z_space(
    q: WeightPosterior, maps: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """q(W) seen from z = [x, y]: a_k (K, d) and Q_k (K, d, d) with
    t_ik - m_k^T phi_ik = z_i^T a_k and phi_ik^T B_k phi_ik = z_i^T Q_k z_i.

    a_k = T_k[n]^T - T_k[:n]^T m_k and Q_k = T_k[:n]^T B_k T_k[:n]; for the shared design
    (T_k = I) a_k = [-m_k, 1] and Q_k is B_k padded with zeros.
    """
    K, n = q.mean.shape
    a = residual_map(q.mean, maps)
    if maps is None:
        Q = q.mean.new_zeros(K, n + 1, n + 1)
        Q[:, :n, :n] = q.cov
        return a, Q
    F = maps[:, :n]
    return a, F.transpose(-1, -2) @ q.cov @ F


def expected_sq_residuals(
    X: torch.Tensor, y: torch.Tensor, q: WeightPosterior, maps: torch.Tensor | None = None
) -> torch.Tensor:
    """e_ik = (t_ik - m_k^T phi_ik)^2 + phi_ik^T B_k phi_ik, shape (N, K); phi = x, t = y
    for the shared design."""
    if maps is None:
        resid = y.unsqueeze(-1) - X @ q.mean.T
        quad = ((X @ q.cov) * X).sum(-1).T  # (K, N, n) -> (N, K)
        return resid * resid + quad
    a, Q = z_space(q, maps)
    Z = torch.cat([X, y.unsqueeze(-1)], -1)
    resid = Z @ a.T
    return resid * resid + ((Z @ Q) * Z).sum(-1).T


def summed_sq_residuals(stats: Stats, q: WeightPosterior) -> torch.Tensor:
    """sum_i r_ik e_ik = sum_i r_ik y_i^2 - 2 m_k^T s_k + tr(E[w_k w_k^T] S_k), shape (K,)."""
    Eww = q.cov + q.mean.unsqueeze(-1) * q.mean.unsqueeze(-2)
    return stats.yy - 2.0 * (q.mean * stats.s).sum(-1) + (Eww * stats.S).sum((-1, -2))


def scatter_about_prior(q: WeightPosterior, w0: torch.Tensor) -> torch.Tensor:
    """D_k = B_k + (m_k - w0_k)(m_k - w0_k)^T."""
    d = q.mean - w0
    return q.cov + d.unsqueeze(-1) * d.unsqueeze(-2)


def update_prior_cov(q: WeightPosterior, w0: torch.Tensor, min_var: float) -> torch.Tensor:
    """M-step A_k = argmax_{A >= min_var I} E_q log N(w_k | w0_k, A) = U max(Lambda, min_var) U^T.

    With D_k = U Lambda U^T, the objective -1/2 log|A| - 1/2 tr(A^{-1} D) separates over
    eigenvalues a of A in D's eigenbasis as -1/2 (log a + lambda/a), maximised at
    a = max(lambda, min_var) on [min_var, inf): the exact constrained maximiser, so the
    floor keeps the ascent monotone while noise-free data drive A_k -> 0.
    """
    D = scatter_about_prior(q, w0)
    D = 0.5 * (D + D.transpose(-1, -2))
    lam, U = torch.linalg.eigh(D)
    return (U * lam.clamp_min(min_var).unsqueeze(-2)) @ U.transpose(-1, -2)


def update_noise_precision(
    total_sq: torch.Tensor, N, max_precision: float, previous: torch.Tensor | None = None
) -> torch.Tensor:
    """M-step 1/beta = (1/N) sum_ik r_ik e_ik, capped at ``max_precision``.

    N = sum over the Gaussian experts of N_k (all points, unless a noise expert takes some).
    Per expert (``total_sq`` and ``N`` of shape (K,): sum_i r_ik e_ik and N_k),
    1/beta_k = (1/N_k) sum_i r_ik e_ik; an expert that holds no point (N_k = 0) leaves its
    term constant in beta_k, so keeping ``previous`` is an exact maximiser too.

    The objective N/2 log beta - beta/2 sum r e is concave in beta, so the cap gives the
    exact maximiser over (0, max_precision]. The sum of squared residuals is >= 0 exactly
    but, summed from moments, can cancel to a tiny negative number on an exact fit: it is
    floored at N / max_precision (the cap itself), so beta is never negative.
    """
    beta = (N / total_sq.clamp_min(1e-300)).clamp(max=max_precision)
    if previous is not None and beta.dim() == 1:
        beta = torch.where(torch.as_tensor(N) > 1e-12, beta, previous)
    return beta


def update_noise_gamma(total_sq: torch.Tensor, N, a0: torch.Tensor, b0: torch.Tensor):
    """q(beta) = Gamma(a, b): a = a0 + N/2, b = b0 + 1/2 sum_ik r_ik e_ik (repo docs/derivation.md).

    The sum (>= 0, but computed from moments it can cancel below zero) is floored at 0.
    """
    return a0 + 0.5 * N, b0 + 0.5 * total_sq.clamp_min(0)


def dirichlet_expected_log(alpha: torch.Tensor) -> torch.Tensor:
    """l_k = E log pi_k = psi(alpha_k) - psi(alpha_0)."""
    return torch.digamma(alpha) - torch.digamma(alpha.sum())


def update_prior_mean(
    q: WeightPosterior, A_inv: torch.Tensor, xi: torch.Tensor | None
) -> torch.Tensor:
    """M-step for w0.

    Without a regulariser: w0_k = m_k. With R(w0) = sum_{k != k'} log N(w0_k - w0_k' | 0, Xi)
    and P = Xi^{-1}: the joint maximiser of the concave quadratic L + R, solving
    (A_k^{-1} + 2(K-1) P) w0_k - 2 P sum_{j != k} w0_j = A_k^{-1} m_k for all k at once
    (``A_inv`` holds the A_k^{-1}),
    i.e. [blockdiag(A_k^{-1}) + 2 (K I - 1 1^T) kron P] w0 = [A_k^{-1} m_k] (a Kn x Kn
    Cholesky solve; section 5.3 of the derivation).
    """
    if xi is None:
        return q.mean.clone()
    K, n = q.mean.shape
    P = precision_of(xi)
    lap = K * torch.eye(K, dtype=P.dtype, device=P.device) - 1.0
    H = 2.0 * torch.kron(lap, P.contiguous())
    H = H + torch.block_diag(*A_inv)
    rhs = (A_inv @ q.mean.unsqueeze(-1)).reshape(K * n, 1)
    return torch.cholesky_solve(rhs, torch.linalg.cholesky(H)).reshape(K, n)


def regularizer(w0: torch.Tensor, xi: torch.Tensor) -> torch.Tensor:
    """R(w0) = -K(K-1)/2 [n log 2pi + log|Xi|] - (K sum_k w0_k^T P w0_k - wbar^T P wbar)."""
    K, n = w0.shape
    if K < 2:
        return w0.new_zeros(())
    L = torch.linalg.cholesky(xi)
    logdet = cholesky_logdet(L)
    P = torch.cholesky_inverse(L)
    wbar = w0.sum(0)
    quad = K * torch.einsum("ki,ij,kj->", w0, P, w0) - wbar @ P @ wbar
    return -0.5 * K * (K - 1) * (n * LOG_2PI + logdet) - quad


def gate_log_prior(weights, scale: float) -> torch.Tensor:
    """log p(V) = sum_j log N(v_j | 0, s^2) = -P/2 log(2 pi s^2) - |V|^2 / (2 s^2) over the
    P entries of the gate's weight tensors ``weights`` (the gate prior; biases are flat)."""
    P = sum(w.numel() for w in weights)
    sq = sum((w * w).sum() for w in weights)
    return -0.5 * P * (LOG_2PI + 2.0 * math.log(scale)) - 0.5 * sq / scale**2


def responsibilities(
    log_prior: torch.Tensor, e: torch.Tensor, e_log_beta, e_beta, noise_log_density=None
) -> torch.Tensor:
    """log r_ik = log_prior_ik + 1/2 E log beta - 1/2 log 2pi - E beta/2 e_ik + const_i.

    ``log_prior`` is l_k = E log pi_k (mixture of models) or log g_ik (mixture of experts),
    shape (N, C). With the noise expert (C = K + 1) its column is
    log r_iK = log_prior_iK + log u, u = 1/(hi - lo) the uniform density over the targets.
    Normalised by log-sum-exp; returns log r (N, C).
    """
    return torch.log_softmax(
        log_prior + expected_log_densities(e, e_log_beta, e_beta, noise_log_density), dim=-1
    )


def weights_kl(q: WeightPosterior, prior: WeightPrior) -> torch.Tensor:
    """sum_k KL(q(w_k) || p(w_k)) = sum_k 1/2 [tr(A^{-1} D_k) - n + log|A_k| - log|B_k|].

    A non-Gaussian prior (:class:`~pyro_moe.closed_form.linearised.FactorisedPrior`, for
    natural-gradient SVI) brings its own ``kl``: -E_q log p(w) - H[q] by quadrature."""
    if not isinstance(prior, WeightPrior):
        return prior.kl(q)
    n = prior.mean.shape[-1]
    D = scatter_about_prior(q, prior.mean)
    tr = (prior.precision * D).sum()  # sum_k tr(A_k^{-1} D_k), both symmetric
    return 0.5 * (tr + (prior.logdet - q.logdet).sum() - n * q.mean.shape[0])


def dirichlet_log_norm(mu: torch.Tensor) -> torch.Tensor:
    """log B(mu) = sum_k lgamma(mu_k) - lgamma(sum_k mu_k), the Dirichlet's log normaliser."""
    return torch.lgamma(mu).sum() - torch.lgamma(mu.sum())


def dirichlet_kl(
    alpha: torch.Tensor,
    mu: torch.Tensor,
    log_norm_mu: torch.Tensor | None = None,
    expected_log: torch.Tensor | None = None,
) -> torch.Tensor:
    """KL(Dir(alpha) || Dir(mu)) = -(E log p(pi) + H[q(pi)])
    = log B(mu) - log B(alpha) + sum_k (alpha_k - mu_k) (psi(alpha_k) - psi(alpha_0)),
    general alpha (section 3); ``log_norm_mu`` = log B(mu) and ``expected_log`` =
    :func:`dirichlet_expected_log` of ``alpha`` when the caller has them."""
    if log_norm_mu is None:
        log_norm_mu = dirichlet_log_norm(mu)
    if expected_log is None:
        expected_log = dirichlet_expected_log(alpha)
    return log_norm_mu - dirichlet_log_norm(alpha) + torch.dot(alpha - mu, expected_log)


def gamma_moments(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """E[theta] = a / b and E[log theta] = psi(a) - log b of theta ~ Gamma(a, b)
    (shape-rate)."""
    return a / b, torch.digamma(a) - torch.log(b)


def blend(old, new, rho: float):
    """A natural-gradient step of size rho on natural parameters, eta <- (1 - rho) eta +
    rho eta_hat (derivation section 6): exactly ``new`` for rho = 1 or no ``old``."""
    if old is None or rho == 1.0:
        return new
    return (1 - rho) * old + rho * new


def gamma_kl(a, b, a0, b0) -> torch.Tensor:
    """KL(Gamma(a, b) || Gamma(a0, b0)) (shape-rate)."""
    return (
        (a - a0) * torch.digamma(a)
        - torch.lgamma(a)
        + torch.lgamma(a0)
        + a0 * (torch.log(b) - torch.log(b0))
        + a * (b0 - b) / b
    )


def elbo_from_lse(
    lse: torch.Tensor,
    q: WeightPosterior,
    *,
    prior: WeightPrior,
    alpha: torch.Tensor | None = None,
    mu: torch.Tensor | None = None,
    log_norm_mu: torch.Tensor | None = None,
    qbeta=None,
    beta_prior=None,
    xi: torch.Tensor | None = None,
    expected_log: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`objective` right after the q(Z) update, from ``lse = sum_i logsumexp_k
    logit_ik`` (:func:`e_step`): the same ELBO and F, without another pass over the data.
    ``log_norm_mu`` is :func:`dirichlet_log_norm` of ``mu`` and ``expected_log``
    :func:`dirichlet_expected_log` of ``alpha``, when the caller holds them."""
    return _minus_kls(lse, q, prior, alpha, mu, qbeta, beta_prior, xi, log_norm_mu, expected_log)


def _minus_kls(
    data_term, q, prior, alpha, mu, qbeta, beta_prior, xi, log_norm_mu=None, expected_log=None
):
    """(ELBO, F) from the data term (likelihood + entropy of q(Z)): subtract the KLs of
    q(W), q(pi), q(beta) from their priors, and add R(w0) for F."""
    elbo = data_term - weights_kl(q, prior)
    if alpha is not None and mu is not None:
        elbo = elbo - dirichlet_kl(alpha, mu, log_norm_mu, expected_log)
    if qbeta is not None:  # summed over the experts when each has its own q(beta_k)
        elbo = elbo - gamma_kl(qbeta[0], qbeta[1], beta_prior[0], beta_prior[1]).sum()
    F = elbo + regularizer(prior.mean, xi) if xi is not None else elbo
    return elbo, F


def objective(
    log_r: torch.Tensor,
    e: torch.Tensor,
    q: WeightPosterior,
    *,
    log_prior: torch.Tensor,
    e_beta,
    e_log_beta,
    w0: torch.Tensor,
    A: torch.Tensor,
    alpha: torch.Tensor | None = None,
    mu: torch.Tensor | None = None,
    qbeta=None,
    beta_prior=None,
    xi: torch.Tensor | None = None,
    noise_log_density=None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The closed-form ELBO and objective F = ELBO + R(w0), in nats (derivation sections 3-5).

        ELBO = sum_ik r_ik [log_prior_ik + 1/2 E log beta - 1/2 log 2pi - E beta/2 e_ik]
               - sum_ik r_ik log r_ik - sum_k KL(q(w_k) || p(w_k))
               [- KL(q(pi) || p(pi))] [- KL(q(beta) || p(beta))]

    ``log_prior`` is l_k = psi(alpha_k) - psi(alpha_0) (mixture of models, with ``alpha``
    and ``mu`` given) or log g_ik (experts); r_ik log g_ik counts as 0 where r_ik = 0.
    With the noise expert (column K of r), its likelihood term is sum_i r_iK log u.
    """
    r = log_r.exp()
    log_dens = expected_log_densities(e, e_log_beta, e_beta, noise_log_density)
    like = torch.where(r > 0, r * (log_prior + log_dens), 0.0).sum()
    entropy = -torch.special.xlogy(r, r).sum()
    return _minus_kls(like + entropy, q, weight_prior(w0, A), alpha, mu, qbeta, beta_prior, xi)
