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

Held-out score (``cv=F``, F >= 2 folds). For prediction the ELBO is the wrong yardstick:
it scores the training data at hyperparameters fitted to them (the gate above all), and a
mixture of experts with a flexible gate keeps gaining ELBO with K. With ``cv`` every K is
also fitted on F - 1 folds and scored on the held-out one by the log predictive density
(:meth:`pyro_moe.result.Prediction.log_prob`), the same folds for every K:

$$\\text{lpd}(K) = \\frac{1}{N} \\sum_f \\sum_{i \\in f} \\log p(y_i \\mid x_i, \\text{data} \\setminus f, K),$$

with its standard error over the points (the sd of the pointwise differences to the best
K, over $\\sqrt N$), and the choice is the smallest admissible K within one standard error
of the best lpd (the one-standard-error rule). ArviZ's PSIS-LOO on the full fit
(``loo=True``: :func:`pyro_moe.diagnostics.loo`, draws of q(W) with the gate and the noise
fixed at their fitted values) is cheaper but leaves out only the experts' weights' share
of each point: the gate and the noise were fitted with the point in, so it is optimistic,
and increasingly so with K (a flexible gate fits each point's regime). It is reported
beside the held-out score, each K marked where the two differ by more than
``LOO_TOLERANCE`` = 0.02 nats per point and two standard errors of their pointwise
difference (``loo_agrees``), and never used to choose
(``benchmarks/results/regression_selection.md``).

Honesty. The choice is reported with what it rests on: ``Selection.converged`` is False
when the chosen fit did not converge, and ``Selection.at_boundary`` is True when the
chosen K is ``max_experts`` (a larger K might be better still); each also warns
(:class:`~pyro_moe.errors.ConvergenceWarning`, :class:`BoundaryWarning`), and
``Selection.notes`` says it in words. Unconverged fits of other K are marked in the table.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import ConvergenceWarning, InputError, find_stack_level
from .fitting import as_data, fit
from .model_file import Model
from .result import FitResult

__all__ = [
    "BoundaryWarning",
    "Selection",
    "cv_log_predictive",
    "distinct_experts",
    "select_experts",
]


class BoundaryWarning(UserWarning):
    """The chosen K is the largest the search tried: a larger K may be better."""


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
            With ``cv``: ``cv_lpd`` (held-out log predictive density per point),
            ``cv_se`` (its standard error against the best K), ``cv_sem`` (its own
            standard error: sd of the pointwise values / sqrt(N)), ``cv_unconverged``
            (folds whose fit did not converge). With ``loo``: ``loo_lpd`` (PSIS-LOO per
            point), ``loo_khat_high`` (points with Pareto k > 0.7) and, with ``cv``,
            ``loo_agrees`` and ``loo_se``. Always ``seconds``: CPU seconds of the K's fit.
        criterion: a one-line description of the rule that chose K.
        admissible: False when no K was admissible (the best score was taken).
        converged: False when the chosen fit did not converge (a warning said so).
        at_boundary: True when the chosen K is the largest tried (a warning said so).
        notes: what the choice rests on, in words (empty when nothing is amiss).
    """

    experts: int
    result: Any
    results: dict[int, Any]
    table: list[dict[str, Any]]
    criterion: str
    admissible: bool = True
    settings: dict[str, Any] = field(default_factory=dict)
    converged: bool = True
    at_boundary: bool = False
    notes: list[str] = field(default_factory=list)

    def to_markdown(self) -> str:
        """The table as Markdown, the chosen K marked with ``*``; with ``cv`` the held-out
        lpd, with ``loo`` PSIS-LOO per point (and whether it agrees with the held-out lpd)."""
        cv = any("cv_lpd" in row for row in self.table)
        loo = any("loo_lpd" in row for row in self.table)
        head = "| K | objective | score | converged | distinct | admissible |"
        head += " held-out lpd |" if cv else ""
        head += " LOO lpd |" if loo else ""
        head += " note |"
        lines = [head, "| --- " * head.count(" |") + "|"]
        for row in self.table:
            mark = "*" if row["experts"] == self.experts else ""
            held = f" {row['cv_lpd']:.3f} ± {row['cv_se']:.3f} |" if cv else ""
            if loo:
                apart = "" if row.get("loo_agrees", True) else " (disagrees)"
                held += f" {row['loo_lpd']:.3f}{apart} |"
            lines.append(
                f"| {row['experts']}{mark} | {row['objective']:.2f} | {row['score']:.2f} | "
                f"{'yes' if row['converged'] else 'no'} | {row['distinct']} | "
                f"{'yes' if row['admissible'] else 'no'} |{held} {row['note']} |"
            )
        return "\n".join(lines + [f"\n{n}" for n in self.notes])


def _expert_shares(result: FitResult) -> np.ndarray:
    """Weight share of each of the K experts among all points (the noise expert excluded)."""
    w = result.weights.detach().cpu().numpy().astype(float)
    return w[: result.experts]


def _mean_noise_precision(result: FitResult) -> float:
    beta = result.noise_precision.detach().cpu().numpy().reshape(-1)
    return float(beta.mean())


def _loo_pointwise(result: FitResult) -> tuple[np.ndarray, int]:
    """PSIS-LOO of one fit, pointwise (N,), and its points with Pareto k > 0.7."""
    from .diagnostics import k_high
    from .diagnostics import loo as psis_loo

    elpd = psis_loo(result)
    return np.asarray(elpd.loo_i, dtype=float), k_high(elpd)


#: LOO agrees with the held-out lpd when they differ by at most this many nats per point
#: (the tolerance asked of two engines' held-out lpd, issue #30) or two standard errors of
#: their pointwise difference
LOO_TOLERANCE = 0.02


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
    cv: int | None = None,
    stop: Callable[[list[dict[str, Any]]], bool] | None = None,
    loo: bool = False,
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

    ``stop(table) -> bool``, asked after each K with the rows so far: True ends the range
    there (the K tried are the table's; a layer that knows when a larger K cannot help,
    such as the curve application's, saves those fits).

    ``cv``: F >= 2 folds of cross-validation: each K is also scored by its held-out log
    predictive density (:func:`cv_log_predictive`), and K is chosen by it (the smallest
    admissible K within one standard error of the best). A chosen fit that did not
    converge, or a chosen K equal to ``max_experts``, warns and is marked in the result
    (``converged``, ``at_boundary``, ``notes``).

    ``loo``: also report each K's PSIS-LOO (:func:`pyro_moe.diagnostics.loo` of the fit on
    all the data, per point: ``loo_lpd``, and ``loo_khat_high``, the points with Pareto
    k > 0.7). It is never used to choose: it holds the gate and the noise at their fitted
    values. With ``cv`` each row says whether it agrees with the held-out score
    (``loo_agrees``: their pointwise difference's mean within :data:`LOO_TOLERANCE`
    nats per point or two of its standard errors, ``loo_se``), and ``notes`` names the
    K where it does not.
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
    if cv is not None and (not isinstance(cv, int | np.integer) or isinstance(cv, bool) or cv < 2):
        raise InputError(f"cv must be None or a number of folds >= 2, got {cv!r}")
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
    loo_i: dict[int, np.ndarray] = {}
    for K in range(int(min_experts), max_experts + 1):
        extra = start(K) if start is not None else {}
        clock = time.process_time()
        res = fit(model, X, y, experts=K, n_init=n_init, **fit_kwargs, **extra)
        seconds = time.process_time() - clock
        elpd = _loo_pointwise(res) if loo else None
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
                "seconds": seconds,
            }
        )
        if elpd is not None:
            loo_i[K] = elpd[0]
            table[-1].update(loo_lpd=float(elpd[0].mean()), loo_khat_high=elpd[1])
        if stop is not None and K < max_experts and stop(table):
            break
    if cv is not None:
        ks = [row["experts"] for row in table]
        pointwise, bad = _cv_pointwise(
            model, X, y, ks, folds=int(cv), seed=0, n_init=n_init, start=start, **fit_kwargs
        )
        lpd, se = _cv_summary(pointwise)
        for row in table:
            K = row["experts"]
            sem = float(pointwise[K].std() / math.sqrt(pointwise[K].shape[0]))
            row.update(cv_lpd=lpd[K], cv_se=se[K], cv_sem=sem, cv_unconverged=bad[K])
            if loo:  # the same points: the paired difference's standard error
                diff = loo_i[K] - pointwise[K].detach().cpu().numpy()
                row["loo_se"] = float(diff.std() / math.sqrt(diff.shape[0]))
                gap = abs(float(diff.mean()))
                row["loo_agrees"] = gap <= max(LOO_TOLERANCE, 2 * row["loo_se"])
    key = "cv_lpd" if cv is not None else "score"
    ok = [row for row in table if row["admissible"] and math.isfinite(row[key])]
    pool = ok or [row for row in table if math.isfinite(row[key])] or table
    best = max(row[key] for row in pool)
    if cv is not None:
        # cv_se is the standard error of each K's difference to the best K
        chosen = min(row["experts"] for row in pool if row[key] >= best - row["cv_se"])
        criterion = (
            f"smallest admissible K whose {int(cv)}-fold held-out log predictive density is "
            "within one standard error of the best"
        )
    else:
        chosen = min(row["experts"] for row in pool if row["score"] >= best - margin)
        corr = " + log K!" if symmetry_correction else ""
        criterion = f"smallest admissible K with objective{corr} within {margin:g} nats of the best"
    criterion += f" (admissible: every expert's share >= {min_share:g}, no coinciding experts)"
    notes = []
    chosen_row = next(row for row in table if row["experts"] == chosen)
    converged = bool(chosen_row["converged"])
    if not converged:
        notes.append(
            f"the chosen fit (K = {chosen}) did not converge: its objective and predictions "
            "may change with more iterations (max_iter) or restarts (n_init)"
        )
        warnings.warn(notes[-1], ConvergenceWarning, stacklevel=find_stack_level())
    apart = [row["experts"] for row in table if not row.get("loo_agrees", True)]
    if apart:
        notes.append(
            f"PSIS-LOO disagrees with the held-out lpd at K = {apart} (by more than "
            f"{LOO_TOLERANCE:g} nats per point and two standard errors): LOO leaves each point "
            "out of the experts' weights only, holding the gate and the noise at the values "
            "fitted with it in, so it is optimistic"
        )
    unconverged = [row["experts"] for row in table if not row["converged"]]
    if unconverged and unconverged != [chosen]:
        notes.append(f"fits that did not converge: K = {unconverged}")
    # a range ended by stop (below max_experts) was judged complete: no boundary there
    at_boundary = chosen == max_experts and max_experts > min_experts
    if at_boundary:
        notes.append(
            f"the chosen K = {chosen} is the largest tried (max_experts): a larger K may "
            "score better still"
        )
        warnings.warn(notes[-1], BoundaryWarning, stacklevel=find_stack_level())
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
            "cv": cv,
            "loo": loo,
        },
        converged=converged,
        at_boundary=at_boundary,
        notes=notes,
    )


def cv_log_predictive(
    model: str | Path | Model,
    X,
    y,
    experts: list[int],
    *,
    folds: int = 5,
    seed: int = 0,
    n_init: int = 5,
    start: Callable[[int], dict] | None = None,
    **fit_kwargs: Any,
) -> tuple[dict[int, float], dict[int, float], dict[int, int]]:
    """F-fold cross-validated log predictive density per point for each K in ``experts``.

    The rows are shuffled once (``seed``) and cut into F folds, the same for every K; each
    K is fitted on F - 1 folds (``fit(..., experts=K, n_init=n_init, seed=seed,
    **fit_kwargs)``) and scored on the held-out one by
    :meth:`~pyro_moe.result.Prediction.log_prob`. Returns, by K, the mean over all N points
    of log p(y_i | x_i, data without i's fold), its standard error against the best K
    (sd of the pointwise differences / sqrt(N); 0 for the best), and the number of folds
    whose fit did not converge.
    """
    pointwise, bad = _cv_pointwise(
        model, X, y, experts, folds=folds, seed=seed, n_init=n_init, start=start, **fit_kwargs
    )
    return (*_cv_summary(pointwise), bad)


def _cv_pointwise(
    model: str | Path | Model,
    X,
    y,
    experts: list[int],
    *,
    folds: int,
    seed: int,
    n_init: int,
    start: Callable[[int], dict] | None,
    **fit_kwargs: Any,
) -> tuple[dict[int, torch.Tensor], dict[int, int]]:
    """By K: log p(y_i | x_i, data without i's fold) for every point i (N,), and the number
    of folds whose fit did not converge (:func:`cv_log_predictive`)."""
    X, y = as_data(X, y)
    N = X.shape[0]
    if not 2 <= folds <= N:
        raise InputError(f"cv needs 2 <= folds <= N = {N}, got {folds}")
    gen = torch.Generator().manual_seed(int(seed))
    order = torch.randperm(N, generator=gen)
    parts = torch.tensor_split(order, folds)
    pointwise: dict[int, torch.Tensor] = {}
    bad: dict[int, int] = {}
    for K in experts:
        extra = start(K) if start is not None else {}
        lp = torch.empty(N, dtype=X.dtype)
        bad[K] = 0
        for held in parts:
            train = torch.ones(N, dtype=torch.bool)
            train[held] = False
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", ConvergenceWarning)
                res = fit(
                    model, X[train], y[train], experts=K, n_init=n_init, seed=seed,
                    **fit_kwargs, **extra,
                )  # fmt: skip
            for w in caught:  # other warnings go on to the caller
                if not issubclass(w.category, ConvergenceWarning):
                    warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
            bad[K] += not res.converged
            lp[held] = res.predict(X[held]).log_prob(y[held])
        pointwise[K] = lp
    return pointwise, bad


def _cv_summary(
    pointwise: dict[int, torch.Tensor],
) -> tuple[dict[int, float], dict[int, float]]:
    """By K: the mean held-out lpd per point and its standard error against the best K."""
    N = next(iter(pointwise.values())).shape[0]
    best = max(pointwise, key=lambda K: float(pointwise[K].mean()))
    lpd = {K: float(v.mean()) for K, v in pointwise.items()}
    se = {
        K: float((v - pointwise[best]).std() / math.sqrt(N)) if K != best else 0.0
        for K, v in pointwise.items()
    }
    return lpd, se
