"""Initial responsibilities q(Z) for CAVI (and, through it, SVI).

Strategies (``init=``):

* ``"prior"``: q(W) set to the prior N(w0_k, A_k), then the q(Z) update. Breaks the
  symmetry when the prior means differ (the study's w0_1 = [0, 0, 0.1], w0_2 = [0, 0, 2]).
* ``"subsets"``: RANSAC-like least quantile of squares. For each expert in turn, many
  random minimal subsets (n rows) are solved exactly; the candidate whose
  1/(2K)-quantile of |residual| over the still unclaimed rows is smallest wins, claims
  the rows within 2.5 times that quantile, and is refitted on them. Initial
  responsibilities are softmax_k(-beta0/2 res_ik^2) with 1/beta0 the mean smallest
  squared residual. Does not depend on the prior.
* ``"random"``: soft random responsibilities r_i ~ Dir(1). Measured to stall in the
  symmetric solution (every expert the same average curve); never the default.
* ``"given"``: user-given responsibilities (N, K), rows summing to one.
"""

from __future__ import annotations

import torch

from ..config import robust_variance
from ..errors import InputError
from . import updates as U

CANDIDATES = 256
SCORING_ROWS = 2000


def initial_log_responsibilities(
    how: str,
    X: torch.Tensor,
    y: torch.Tensor,
    K: int,
    seed: int,
    *,
    prior: U.WeightPosterior,
    log_prior: torch.Tensor,
    e_beta,
    e_log_beta,
    given: torch.Tensor | None = None,
    noise_log_density=None,
    maps: torch.Tensor | None = None,
) -> torch.Tensor:
    """log r (N, C) for strategy ``how``; C = K, or K + 1 with a noise expert (last column).

    With a noise expert, "subsets" compares each point's Gaussian density under the
    subset fits (precision beta0) with the uniform density u: stray points start in it.
    With expert ``maps`` (heterogeneous experts) each expert's subsets are solved in its own
    features and target.
    """
    # draws come from a CPU generator and are then moved: a seed starts the same on every device
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    C = K + int(noise_log_density is not None)
    if how == "prior":
        e = U.expected_sq_residuals(X, y, prior, maps)
        return U.responsibilities(log_prior, e, e_log_beta, e_beta, noise_log_density)
    if how == "subsets":
        W = subset_weights(X, y, K, gen, maps)
        res2 = subset_residuals(X, y, W, maps)
        beta0 = subset_precision(res2.min(-1).values.median(), y)
        return subset_responsibilities(res2, beta0, C, noise_log_density)
    if how == "random":
        # normalised Exp(1) draws are Dir(1) rows
        g = torch.empty(X.shape[0], C, dtype=X.dtype, device="cpu").exponential_(generator=gen)
        g = g.to(X.device)
        return torch.log(g / g.sum(-1, keepdim=True))
    if how == "given":
        return _given(given, X.shape[0], C, X)
    raise InputError(
        f"unknown init {how!r}; use 'prior', 'subsets', 'random' or given responsibilities"
    )


def _given(r, N: int, K: int, X: torch.Tensor) -> torch.Tensor:
    r = torch.as_tensor(r, dtype=X.dtype, device=X.device)
    if tuple(r.shape) != (N, K):
        raise InputError(f"responsibilities must have shape ({N}, {K}), got {tuple(r.shape)}")
    if not torch.isfinite(r).all() or (r < 0).any():
        raise InputError("responsibilities must be finite and non-negative")
    if not torch.allclose(r.sum(-1), torch.ones(N, dtype=X.dtype, device=X.device), atol=1e-6):
        raise InputError("each row of the responsibilities must sum to one")
    return torch.log(r)


def subset_residuals(
    X: torch.Tensor, y: torch.Tensor, W: torch.Tensor, maps: torch.Tensor | None = None
) -> torch.Tensor:
    """res_ik^2 = (t_ik - w_k^T phi_ik)^2 of the subset fits W (K, n), shape (N, K)."""
    if maps is None:
        return (y.unsqueeze(-1) - X @ W.T) ** 2
    return (torch.cat([X, y.unsqueeze(-1)], -1) @ U.residual_map(W, maps).T) ** 2


def subset_precision(median_sq: torch.Tensor, y_or_var) -> torch.Tensor:
    """beta0 = 0.455 / median_i min_k res_ik^2 (the median of chi^2_1 is 0.455, so
    sigma^2 ~ median / 0.455), floored at 1e-12 Var(y) (of the targets: robust to a few
    extreme ones, :func:`~pyro_moe.config.robust_variance`); ``y_or_var``: the
    targets or Var(y)."""
    if torch.is_tensor(y_or_var) and y_or_var.dim() > 0:
        var_y = robust_variance(y_or_var)  # (one point: no spread)
    else:
        var_y = float(y_or_var)
    return 0.455 / median_sq.clamp_min(1e-12 * var_y + 1e-300)


def subset_responsibilities(
    res2: torch.Tensor, beta0: torch.Tensor, C: int, noise_log_density=None
) -> torch.Tensor:
    """log r (N, C) = log softmax_k(-beta0/2 res_ik^2) [with the noise expert's log u]."""
    flat = res2.new_zeros(res2.shape[0], C)
    return U.responsibilities(flat, res2, torch.log(beta0), beta0, noise_log_density)


def batched_least_squares(Xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
    """Ridge-stabilised least squares for a batch: (C, m, n), (C, m) -> (C, n),

        w_c = (X_c^T X_c + eps_c I)^{-1} X_c^T y_c,   eps_c = 1e-10 (mean diag(X_c^T X_c) + 1e-12),

    and w_c = 0 where X_c^T X_c + eps_c I is not positive definite."""
    n = Xs.shape[-1]
    G = Xs.transpose(-1, -2) @ Xs
    G = G + 1e-10 * (
        G.diagonal(dim1=-2, dim2=-1).mean(-1, keepdim=True).unsqueeze(-1) + 1e-12
    ) * torch.eye(n, dtype=Xs.dtype, device=Xs.device)
    L, info = torch.linalg.cholesky_ex(G)
    rhs = Xs.transpose(-1, -2) @ ys.unsqueeze(-1)
    w = torch.cholesky_solve(rhs, L).squeeze(-1)
    return torch.where((info == 0).unsqueeze(-1), w, torch.zeros_like(w))


def subset_weights(
    X: torch.Tensor,
    y: torch.Tensor,
    K: int,
    gen: torch.Generator,
    maps: torch.Tensor | None = None,
) -> torch.Tensor:
    """Greedy least-quantile-of-squares experts from random minimal subsets, (K, n).

    ``gen`` is a CPU generator (the draws are moved to the data's device). Expert k is solved
    in its own features phi_k and target t_k when ``maps`` are given
    (its padded weights come out zero: the ridge term decides columns that are all zero).
    """
    rows = scoring_rows(X.shape[0], gen).to(X.device)
    return subset_fit(X[rows], y[rows], K, gen, maps)


def scoring_rows(N: int, gen: torch.Generator) -> torch.Tensor:
    """The rows (CPU indices) the subset fits are drawn from and scored on: the first
    SCORING_ROWS of a random permutation of 0..N-1 under ``gen``."""
    return torch.randperm(N, generator=gen, device="cpu")[: min(N, SCORING_ROWS)]


def subset_fit(
    Xr: torch.Tensor,
    yr: torch.Tensor,
    K: int,
    gen: torch.Generator,
    maps: torch.Tensor | None = None,
) -> torch.Tensor:
    """:func:`subset_weights` on its scoring rows Xr (m, n), yr (m,) (:func:`scoring_rows`),
    drawing the minimal subsets from ``gen``."""
    dev = Xr.device
    rows = torch.arange(Xr.shape[0], device=dev)
    X, y = Xr, yr
    if maps is None:
        designs = [(X, y, X.shape[1])] * K
    else:
        Zs = torch.cat([X, y.unsqueeze(-1)], -1) @ maps.transpose(-1, -2)
        used = (maps[:, :-1].abs().sum(-1) > 0).sum(-1).tolist()  # n_k
        designs = [(Zk[:, :-1], Zk[:, -1], nk) for Zk, nk in zip(Zs, used, strict=True)]
    free = torch.ones(len(rows), dtype=torch.bool, device=dev)
    quantile = 1.0 / (2 * K)
    out = []
    for Xs, ys, n in designs:  # K is small; each pass is vectorised over candidates and rows
        pool = free.nonzero().squeeze(-1)
        if len(pool) < n:
            pool = torch.arange(len(rows), device=dev)
        pick = torch.randint(len(pool), (CANDIDATES, n), generator=gen, device="cpu").to(dev)
        idx = pool[pick]
        W = batched_least_squares(Xs[idx], ys[idx])  # (C, n)
        res = (ys[pool].unsqueeze(0) - W @ Xs[pool].T).abs()  # (C, |pool|)
        k = max(1, int(quantile * len(rows)))
        k = min(k, res.shape[1])
        score = res.kthvalue(k, dim=-1).values
        best = int(score.argmin())
        thresh = 2.5 * score[best]
        inliers = pool[res[best] <= thresh]
        w = W[best]
        if len(inliers) >= n:
            w = batched_least_squares(Xs[inliers].unsqueeze(0), ys[inliers].unsqueeze(0))[0]
        free[inliers] = False
        out.append(w)
    return torch.stack(out)
