"""Choosing the number of experts K by the ELBO.

Criterion. For each K in ``min_experts..max_experts`` the model is fitted with restarts
(:func:`pyro_moe.fit`, the best final objective kept) and scored by

$$S(K) = \\mathcal{L}_K + \\log K!,$$

where $\\mathcal{L}_K$ is the final objective (the ELBO, plus R(w0) for the
regularized model and log p(V) for a gate prior). The ELBO is a lower bound of the log evidence
$\\log p(y \\mid X, K, \\hat\\theta)$ at point-estimated hyperparameters
$\\hat\\theta$ (type-II ML), so it is an *approximate* Bayesian model choice:

* The bound is not tight and its gap differs between K (mean-field q(Z) q(W) ...), and
  $\\hat\\theta$ is fitted to the same data (no Occam factor for it).
* Label symmetry: the exact posterior of a K-expert mixture has K! equivalent modes
  (expert relabellings); a variational q that sits in one of them recovers at most
  $1/K!$ of the evidence, so $\\log p \\approx \\mathcal{L}_K + \\log K!$ when
  the modes are well separated. That is the $\\log K!$ term (``symmetry_correction``;
  it is wrong, an over-count, for fits whose experts coincide, which are not admissible).
* An extra expert left empty costs only a few nats (its Dirichlet share and q(w) = prior),
  so the ELBO of K + 1 with an empty expert ≈ the ELBO of K: a larger K must beat the best
  score by more than ``margin`` nats (default 3), else the smaller K is kept.
* Misspecification: when the noise model is wrong the ELBO rewards splitting one
  structure between several experts. Measured on rasterized circles: with one noise
  precision β shared by all experts, the residual of t = x² + y² is ≈ 2 r δ (δ the
  radial pixel error, roughly uniform in ±0.5 px), so the largest ring is better described
  by 2–3 coinciding rings of radii within ~0.6 px, and the ELBO grew by 10–40 nats at
  K > K_true in 14 of 20 images with 2 or 4 circles. Such fits are not admissible (below).

Admissibility. A fit at K counts only when its K experts are *distinct and used*:

* every expert's weight share (``result.weights``, the noise expert excluded) is at least
  ``min_share`` (default 1%);
* no two experts coincide: two experts coincide when their mean predictions differ by
  less than ``duplicate_sd`` noise standard deviations,
  $\\sqrt{\\overline{(x_i^\\top (m_j - m_k))^2}} < \\text{duplicate\\_sd}/\\sqrt{\\beta}$
  (the symmetric solution where experts share one line).

A layer above the core counts its own fits' distinct experts (``select_experts``'s
``distinct``): the curve application counts the curves its reports call valid (a circle
within ``min_separation`` pixels of another is a duplicate, an invalid circle is not a
curve; :func:`pyro_moe.curves.selection.select_curves`).

The choice is the smallest admissible K whose score is within ``margin`` nats of the best
admissible score. If no K is admissible, the best score wins (and ``Selection.admissible``
says so).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import InputError
from .fitting import fit
from .model_file import Model
from .result import FitResult

__all__ = ["Selection", "distinct_experts", "select_experts"]


@dataclass
class Selection:
    """Fits for K = min..max experts and the chosen K.

    Attributes:
        experts: the chosen K.
        result: the fit at the chosen K (a :class:`~pyro_moe.result.FitResult`, or a
            layer's wrapping of it: a :class:`~pyro_moe.curves.CurveFit` for curves).
        results: every fit, by K.
        table: one row per K: ``experts``, ``objective``, ``elbo``, ``score``
            (objective + log K! when corrected), ``converged``, ``distinct`` (number of
            distinct used experts), ``admissible``, ``note`` (why not admissible).
        criterion: a one-line description of the rule that chose K.
        admissible: False when no K was admissible (the best score was taken).
    """

    experts: int
    result: Any
    results: dict[int, Any]
    table: list[dict[str, Any]]
    criterion: str
    admissible: bool = True
    settings: dict[str, Any] = field(default_factory=dict)

    def to_markdown(self) -> str:
        """The table as Markdown, the chosen K marked with ``*``."""
        lines = [
            "| K | objective | score | converged | distinct | admissible | note |",
            "| --- | --- | --- | --- | --- | --- | --- |",
        ]
        for row in self.table:
            mark = "*" if row["experts"] == self.experts else ""
            lines.append(
                f"| {row['experts']}{mark} | {row['objective']:.2f} | {row['score']:.2f} | "
                f"{'yes' if row['converged'] else 'no'} | {row['distinct']} | "
                f"{'yes' if row['admissible'] else 'no'} | {row['note']} |"
            )
        return "\n".join(lines)


def _expert_shares(result: FitResult) -> np.ndarray:
    """Weight share of each of the K experts among all points (the noise expert excluded)."""
    w = result.weights.detach().cpu().numpy().astype(float)
    return w[: result.experts]


def _mean_noise_precision(result: FitResult) -> float:
    beta = result.noise_precision.detach().cpu().numpy().reshape(-1)
    return float(beta.mean())


def distinct_experts(
    result: FitResult, *, min_share: float = 0.01, duplicate_sd: float = 1.0
) -> tuple[int, str]:
    """Number of distinct, used experts of a fit and a note on the rest.

    Experts with share < ``min_share`` are unused; of a group of coinciding experts (see
    the module docstring) one is counted. Returns ``(count, note)``; ``count ==
    result.experts`` means the fit is admissible.
    """
    K = result.experts
    share = _expert_shares(result)
    used = [k for k in range(K) if share[k] >= min_share]
    notes = []
    if len(used) < K:
        notes.append(f"{K - len(used)} empty (share < {min_share:g})")
    same = np.zeros((K, K), dtype=bool)
    X = result.X.detach().cpu().numpy()
    m = result.mean.detach().cpu().numpy()
    sd = 1.0 / math.sqrt(max(_mean_noise_precision(result), 1e-300))
    for a in used:
        for b in used:
            if b <= a:
                continue
            rms = float(np.sqrt(np.mean((X @ (m[a] - m[b])) ** 2)))
            if rms < duplicate_sd * sd:
                same[a, b] = same[b, a] = True
    # count connected groups of coinciding experts among the used, valid ones
    remaining = used
    groups = 0
    seen: set[int] = set()
    for k in remaining:
        if k in seen:
            continue
        groups += 1
        stack = [k]
        while stack:
            j = stack.pop()
            if j in seen:
                continue
            seen.add(j)
            stack.extend(i for i in remaining if same[j, i] and i not in seen)
    if groups < len(remaining):
        notes.append(f"{len(remaining) - groups} duplicate(s)")
    return groups, "; ".join(notes)


def select_experts(
    model: str | Path | Model,
    X,
    y,
    *,
    max_experts: int = 5,
    min_experts: int = 1,
    n_init: int = 5,
    margin: float = 3.0,
    symmetry_correction: bool = True,
    min_share: float = 0.01,
    duplicate_sd: float = 1.0,
    start: Callable[[int], dict] | None = None,
    wrap: Callable[[int, FitResult], Any] | None = None,
    distinct: Callable[[Any], tuple[int, str]] | None = None,
    **fit_kwargs: Any,
) -> Selection:
    """Fit K = ``min_experts`` .. ``max_experts`` and choose K by the ELBO.

    Score $S(K) = \\mathcal{L}_K + \\log K!$ (without $\\log K!$ when
    ``symmetry_correction=False``); the choice is the smallest *admissible* K (distinct,
    used experts: :func:`distinct_experts`) with $S(K) \\ge \\max S - \\text{margin}$.
    See the module docstring for the biases of this criterion.

    ``fit_kwargs`` go to :func:`pyro_moe.fit` for every K (method, seed, learn,
    noise_expert, priors, ...). ``experts`` may not be among them. ``start``: K -> extra
    options of the fit with K experts (its starting point). A layer above the core plugs
    in with ``wrap(K, result)``, what each fit becomes (the curve application's
    :class:`~pyro_moe.curves.CurveFit`), and ``distinct(fit) -> (count, note)``, how its
    fits count distinct experts (default :func:`distinct_experts`); see
    :func:`pyro_moe.curves.selection.select_curves`.
    """
    if "experts" in fit_kwargs:
        raise InputError("select_experts chooses the number of experts; do not pass experts=")
    for name, v in (("min_experts", min_experts), ("max_experts", max_experts)):
        if not isinstance(v, int | np.integer) or isinstance(v, bool) or v < 1:
            raise InputError(f"{name} must be an integer >= 1, got {v!r}")
    if max_experts < min_experts:
        raise InputError(f"max_experts ({max_experts}) is less than min_experts ({min_experts})")
    if not margin >= 0:
        raise InputError(f"margin must be >= 0 nats, got {margin}")
    try:
        shape = tuple(X.shape) if torch.is_tensor(X) else np.shape(X)
    except (TypeError, ValueError):  # ragged: fit() says what is wrong
        shape = ()
    n_rows = len(y) if not torch.is_tensor(y) else int(y.shape[0])
    # each expert needs as many points as it has weights: K <= N // n
    per_expert = int(shape[1]) if len(shape) == 2 and shape[1] > 0 else 1
    max_experts = min(int(max_experts), max(1, n_rows // per_expert))
    if max_experts < min_experts:
        raise InputError(
            f"min_experts = {min_experts} is more than {n_rows} points can determine "
            f"({per_expert} weights per expert)"
        )
    if distinct is None:

        def distinct(res: FitResult) -> tuple[int, str]:
            return distinct_experts(res, min_share=min_share, duplicate_sd=duplicate_sd)

    results: dict[int, Any] = {}
    table: list[dict[str, Any]] = []
    for K in range(int(min_experts), max_experts + 1):
        extra = start(K) if start is not None else {}
        res = fit(model, X, y, experts=K, n_init=n_init, **fit_kwargs, **extra)
        if wrap is not None:
            res = wrap(K, res)
        results[K] = res
        count, note = distinct(res)
        correction = math.lgamma(K + 1) if symmetry_correction else 0.0
        table.append(
            {
                "experts": K,
                "objective": res.objective,
                "elbo": res.elbo,
                "score": res.objective + correction,
                "converged": bool(res.converged),
                "distinct": count,
                "admissible": count == K,
                "note": note,
            }
        )
    ok = [row for row in table if row["admissible"] and math.isfinite(row["score"])]
    pool = ok or [row for row in table if math.isfinite(row["score"])] or table
    best = max(row["score"] for row in pool)
    chosen = min(row["experts"] for row in pool if row["score"] >= best - margin)
    corr = " + log K!" if symmetry_correction else ""
    criterion = (
        f"smallest admissible K with objective{corr} within {margin:g} nats of the best "
        f"(admissible: every expert's share >= {min_share:g}, no coinciding experts)"
    )
    return Selection(
        experts=chosen,
        result=results[chosen],
        results=results,
        table=table,
        criterion=criterion,
        admissible=bool(ok),
        settings={
            "max_experts": max_experts,
            "min_experts": int(min_experts),
            "n_init": n_init,
            "margin": margin,
            "symmetry_correction": symmetry_correction,
            "min_share": min_share,
            "duplicate_sd": duplicate_sd,
        },
    )
