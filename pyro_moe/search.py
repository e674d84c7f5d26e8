"""A search over the fixed points of CAVI: re-seed experts that the data do not need.

Coordinate ascent converges to a local optimum of the objective F. On images of concentric
rings it typically spends two experts on the largest ring (which holds most points) and
leaves a small ring to the noise expert: measured on three rings r = 30 / 66 / 104, that
fixed point has F = 1613 nats, while the run started from the true assignment converges to
F = 2487. The search below moves between fixed points and keeps a move only when the
*converged* objective improves, so every result is still a CAVI fixed point and F never
decreases (split-and-merge EM, Ueda, Nakano, Ghahramani & Hinton 2000; greedy mixture
learning, Verbeek, Vlassis & Kröse 2003).

One move re-seeds a *victim* expert v on the points that the other experts explain worst:

1. victims, in order: an expert that duplicates another (their fitted targets differ by
   less than the noise level on the points either holds), an expert with a share below
   ``min_share``, then every other expert by increasing share;
2. the worst-explained points: with a noise expert, those its density u explains better
   than every expert but v, E log N(t_i | w_k) < log u; without one, the 25 % of points
   with the lowest best expected log-density over the experts but v;
3. RANSAC on them (Fischler & Bolles 1981): ``candidates`` random minimal subsets of the
   victim's form (n_v rows) are solved exactly; the candidate with the most points within
   ``threshold`` robust standard deviations of the current fit's residuals wins;
4. the victim's responsibilities become those inliers (the rest of its mass goes to the
   other components in proportion), and the fit restarts from there for at most
   ``trial_iter`` iterations; a move that beats the current objective by more than
   ``min_gain`` nats by then runs on to convergence and replaces the current fit.

Moves repeat until a pass over every victim finds no gain, or ``max_moves`` refits.

The search is asked for by ``pyro_moe.fit(search=True)`` or a :class:`SearchPolicy`, which
also carries its settings and, optionally, an *admissibility rule* of the layer above: a map
``admissible(W)`` from the posterior-mean weights (K, n) to (K,) booleans, True where an
expert is acceptable (the curve application's rule: a plausible curve of its kind,
:func:`pyro_moe.curves.fitting.plausible_experts`). With one, the search maximizes F over
the fits whose experts are all admissible: an inadmissible expert is the first victim, and
a move is kept when it leaves fewer inadmissible experts, or as many and a higher F (the
lexicographic order (inadmissible count, F)). The objective alone cannot always do this:
for conics, the double line that a thin ellipse or a hyperbola degenerates into fits a
straight edge to second order, so F prefers the table's edges to a cup's rims (measured
on ``skimage.data.coffee``, K = 3: F = -1737 on thin ellipses and hyperbolas along the
table's edges against F = -5363 with both rims).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from .closed_form.init import batched_least_squares
from .errors import InputError
from .likelihood import LOG_2PI, noise_log_density, residual_map
from .result import FitResult

__all__ = ["TRIAL_ITER", "SearchPolicy", "SearchReport", "as_search_policy", "search"]

#: Iterations a move gets to overtake the current fit before it is dropped. Measured on
#: ``skimage.data.coins`` (K = 24): a full refit per move made the search 75 s of a 78 s
#: fit; see :func:`search`.
TRIAL_ITER = 25


@dataclass
class SearchReport:
    """What the search did: refits tried, moves kept, the objective before and after."""

    tried: int = 0
    accepted: int = 0
    objective_before: float = float("nan")
    objective_after: float = float("nan")


#: an admissibility rule: posterior-mean weights (K, n) -> (K,) booleans
Admissible = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class SearchPolicy:
    """How ``pyro_moe.fit(search=...)`` searches the fixed points after the restarts
    (:func:`search`; ``search=True`` is ``SearchPolicy()``).

    Attributes:
        admissible: the layer above's rule, posterior-mean weights (K, n) -> (K,) booleans,
            True where an expert is acceptable (None: all are); see the module docstring.
        candidates, threshold, min_share, max_moves, min_gain, trial_iter: :func:`search`'s.
    """

    admissible: Admissible | None = None
    candidates: int = 256
    threshold: float = 3.0
    min_share: float = 0.01
    max_moves: int | None = None
    min_gain: float | None = None
    trial_iter: int | None = TRIAL_ITER

    def run(
        self, result: FitResult, refit: Callable[..., FitResult], *, seed: int = 0
    ) -> tuple[FitResult, SearchReport]:
        """:func:`search` from ``result`` with this policy."""
        return search(
            result, refit, seed=seed, candidates=self.candidates, threshold=self.threshold,
            min_share=self.min_share, max_moves=self.max_moves, min_gain=self.min_gain,
            trial_iter=self.trial_iter, admissible=self.admissible,
        )  # fmt: skip


def as_search_policy(search: bool | SearchPolicy | None) -> SearchPolicy | None:
    """``fit``'s ``search=``: True -> :class:`SearchPolicy` (), False/None -> None (no
    search), a policy as given; anything else is an :class:`InputError`."""
    if search is None or search is False:
        return None
    if search is True:
        return SearchPolicy()
    if isinstance(search, SearchPolicy):
        return search
    raise InputError(
        f"search must be True, False or a pyro_moe.search.SearchPolicy, got {search!r}"
    )


def _residuals(result: FitResult) -> torch.Tensor:
    """t_ik - m_k^T phi_ik (N, K) at the posterior means."""
    Z = torch.cat([result.X, result.y.unsqueeze(-1)], -1)
    return Z @ residual_map(result.mean, result.maps).T


def _expert_designs(result: FitResult, k: int) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(phi_k (N, n_k), t_k (N,), n_k): expert k's own features and target."""
    if result.maps is None:
        return result.X, result.y, result.X.shape[1]
    Zk = torch.cat([result.X, result.y.unsqueeze(-1)], -1) @ result.maps[k].T
    n_k = int((result.maps[k, :-1].abs().sum(-1) > 0).sum())
    return Zk[:, :n_k], Zk[:, -1], n_k


def _victims(
    result: FitResult,
    res: torch.Tensor,
    sd: torch.Tensor,
    min_share: float,
    bad: torch.Tensor | None = None,
) -> list[int]:
    K = result.experts
    r = result.responsibilities[:, :K]
    share = r.mean(0)
    hard = r.argmax(-1)
    dup: list[int] = []
    for a in range(K):
        for b in range(a + 1, K):
            held = (hard == a) | (hard == b)
            if int(held.sum()) == 0:
                continue
            gap = (res[held, a] - res[held, b]).abs().mean()
            if gap < float(sd):
                dup.append(a if share[a] <= share[b] else b)
    small = [k for k in range(K) if float(share[k]) < min_share]
    rest = [int(k) for k in share.argsort().tolist()]
    order: list[int] = []
    first = [] if bad is None else bad.nonzero().flatten().tolist()
    for k in first + dup + small + rest:
        if k not in order:
            order.append(k)
    return order


def _propose(
    result: FitResult,
    v: int,
    res: torch.Tensor,
    sd: torch.Tensor,
    gen: torch.Generator,
    candidates: int,
    threshold: float,
) -> torch.Tensor | None:
    """Responsibilities (N, C) with expert v re-seeded on the worst-explained points, or
    None when there are too few of them."""
    K = result.experts
    others = [k for k in range(K) if k != v]
    beta = result.noise_precision
    beta = beta[others] if beta.dim() == 1 else beta  # each expert's own, or the shared one
    log_dens = 0.5 * torch.log(beta) - 0.5 * LOG_2PI - 0.5 * beta * res[:, others] ** 2
    best = log_dens.max(-1).values if others else torch.full_like(res[:, 0], -torch.inf)
    log_u = noise_log_density(result.noise_bounds)
    if log_u is not None:
        worst = best < log_u
    else:
        worst = best <= best.quantile(0.25)
    pool = worst.nonzero().squeeze(-1)
    phi, t, n = _expert_designs(result, v)
    if len(pool) < n + 2:
        return None
    pick = torch.randint(len(pool), (candidates, n), generator=gen, device="cpu")
    idx = pool[pick.to(pool.device)]
    W = batched_least_squares(phi[idx], t[idx])  # (candidates, n)
    e = (t[pool].unsqueeze(0) - W @ phi[pool].T).abs()  # (candidates, |pool|)
    tau = threshold * sd
    count = (e <= tau).sum(-1)
    w = W[int(count.argmax())]
    inlier = (t[pool] - phi[pool] @ w).abs() <= tau
    if int(inlier.sum()) < n + 2:
        return None
    R = result.responsibilities.clone()
    R[:, v] = 0.0
    mass = R.sum(-1, keepdim=True)
    empty = mass.squeeze(-1) <= 1e-12  # points v held alone: spread over the others
    R[empty] = 1.0
    R[empty, v] = 0.0
    R = R / R.sum(-1, keepdim=True)
    chosen = pool[inlier]
    R[chosen] = 0.0
    R[chosen, v] = 1.0
    C = R.shape[-1]
    return 0.98 * R + 0.02 / C


def search(
    result: FitResult,
    refit: Callable[[torch.Tensor], FitResult],
    *,
    seed: int = 0,
    candidates: int = 256,
    threshold: float = 3.0,
    min_share: float = 0.01,
    max_moves: int | None = None,
    min_gain: float | None = None,
    trial_iter: int | None = TRIAL_ITER,
    admissible: Admissible | None = None,
) -> tuple[FitResult, SearchReport]:
    """Improve a converged fit by re-seeding experts (module docstring).

    ``refit(R, max_iter)`` fits the same model and data from responsibilities ``R`` (N, C)
    in at most ``max_iter`` iterations (None: the fit's own limit) and returns the result.
    A move is tried with ``trial_iter`` iterations (None: to convergence); one that already
    beats the current objective then runs to convergence. The objective never decreases
    along a run, so a move rejected after ``trial_iter`` iterations is one that had not
    overtaken the current fit by then. ``admissible(W)`` maps the posterior-mean weights
    (K, n) to (K,) booleans, True where an expert is acceptable (None: all are); see the
    module docstring. Returns the best result found and a report.
    """

    def implausible(fit: FitResult) -> int:
        return 0 if admissible is None else int((~admissible(fit.mean)).sum())

    def better(trial: FitResult, cur: FitResult, gain: float) -> bool:
        """(inadmissible count, F) in lexicographic order."""
        bad_t, bad_c = implausible(trial), implausible(cur)
        return bad_t < bad_c or (bad_t == bad_c and trial.objective > cur.objective + gain)

    K = result.experts
    report = SearchReport(objective_before=result.objective)
    budget = max_moves if max_moves is not None else 4 * K + 8
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    current = result
    improved = K > 1
    while improved and report.tried < budget:
        improved = False
        res = _residuals(current)
        hard = current.responsibilities[:, :K].argmax(-1)
        own = res.gather(1, hard.unsqueeze(-1)).squeeze(-1)
        sd = 1.4826 * own.abs().median().clamp_min(1e-12)  # robust residual scale
        bad = None if admissible is None else ~admissible(current.mean)
        for v in _victims(current, res, sd, min_share, bad):
            if report.tried >= budget:
                break
            R = _propose(current, v, res, sd, gen, candidates, threshold)
            if R is None:
                continue
            report.tried += 1
            trial = refit(R, trial_iter)
            gain_needed = (
                min_gain if min_gain is not None else 1e-6 * max(abs(current.objective), 1.0)
            )
            if better(trial, current, gain_needed) and not trial.converged:
                more = refit(trial.responsibilities)  # finish the move from where it stands
                if implausible(more) <= implausible(trial) and more.objective >= trial.objective:
                    trial = more
            if better(trial, current, gain_needed):
                trial.restarts = [*current.restarts, *trial.restarts[-1:]]
                current = trial
                report.accepted += 1
                improved = True
                break
    report.objective_after = current.objective
    return current, report
