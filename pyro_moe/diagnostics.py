"""Posterior diagnostics with ArviZ: R-hat across restarts, PSIS-LOO, PSIS k-hat, plots.

A fit becomes an :class:`arviz.InferenceData` by :meth:`pyro_moe.result.FitResult.to_inference_data`
(the same writer as :func:`to_inference_data` here, :mod:`pyro_moe.inference_data`, whose
docstring lists the groups: ``posterior``, ``log_likelihood`` from the model file's own
likelihood, ``sample_stats`` for NUTS, ``observed_data``, ``constant_data`` with X and the
point estimates). For a variational result the draws are independent (not MCMC), so
:func:`loo` passes ``reff=1``. Several results (restarts with different seeds) become chains
after aligning their experts to the first result's (:func:`align_experts`), and
:func:`rhat_across_restarts` then flags restarts that found different optima (R-hat >> 1).
Note that q is a variational approximation: its spread is usually narrower than the exact
posterior's; :func:`psis_khat` says how far.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import xarray as xr

from .errors import InputError
from .inference_data import align_experts, to_inference_data
from .joint import FAST_LATENTS, file_joint
from .result import FitResult, q_draws

with warnings.catch_warnings():
    # arviz 0.23 announces its 1.0 refactor with a FutureWarning at import; we pin <1.
    warnings.filterwarnings("ignore", message="ArviZ is undergoing", category=FutureWarning)
    import arviz as az

__all__ = [
    "align_experts",
    "compare_models",
    "k_high",
    "loo",
    "plot_forest",
    "plot_posterior",
    "psis_khat",
    "restarts_as_chains",
    "rhat_across_restarts",
    "to_inference_data",
]

_CONIC_VARS = ("xc", "yc", "semi_major", "semi_minor", "angle")


def _np(t: Any) -> np.ndarray:
    return t.detach().cpu().numpy() if torch.is_tensor(t) else np.asarray(t)


def restarts_as_chains(
    results: Sequence[FitResult], *, draws: int = 1000, seed: int = 0
) -> az.InferenceData:
    """Several fits of the same data (e.g. different seeds) as chains of one InferenceData,
    experts aligned to the first fit (:func:`align_experts`)."""
    results = list(results)
    if len(results) < 2:
        raise InputError(f"need at least 2 results to make chains, got {len(results)}")
    return to_inference_data(results, draws=draws, seed=seed)


def rhat_across_restarts(
    results: Sequence[FitResult] | az.InferenceData,
    *,
    var_names: Sequence[str] | None = None,
    draws: int = 1000,
    seed: int = 0,
) -> xr.Dataset:
    """Rank-normalized R-hat (:func:`arviz.rhat`) with one chain per restart.

    Values near 1 (below ~1.01) say the restarts found the same posterior; values >> 1 flag
    restarts that converged to different optima. ``var_names`` defaults to the curve
    parameters of shape fits (x0, y0, r or the conic's) and to ``w`` otherwise.
    """
    idata = (
        results
        if isinstance(results, az.InferenceData)
        else restarts_as_chains(results, draws=draws, seed=seed)
    )
    if var_names is None:
        names = list(idata.posterior.data_vars)
        curve = [v for v in ("x0", "y0", "r", *_CONIC_VARS) if v in names]
        var_names = curve or ["w"]
    return az.rhat(idata, var_names=list(var_names))


# ---------------------------------------------------------------- model comparison
def loo(result: FitResult | az.InferenceData, *, draws: int = 1000, seed: int = 0) -> az.ELPDData:
    """PSIS-LOO (:func:`arviz.loo`, pointwise) of one fit, with ``reff=1`` (independent draws).

    ArviZ's UserWarning about large Pareto k is not raised; it is kept in the returned
    ELPDData (``warning`` is True and ``pareto_k`` holds the values; see :func:`k_high`).
    """
    idata = (
        result
        if isinstance(result, az.InferenceData)
        else to_inference_data(result, draws=draws, seed=seed)
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        # MCMC draws (a NUTS result): ArviZ's relative efficiency from the chains
        reff = None if "sample_stats" in idata.groups() else 1.0
        out = az.loo(idata, pointwise=True, reff=reff)
    _reraise_others(caught)
    return out


# Warnings from arviz 0.23 that say nothing about the user's data: deprecations of pandas 3
# and matplotlib 3.11 triggered inside arviz (harmless with the pinned versions). Pareto-k
# warnings are about the data, and are kept in the returned objects instead.
_THIRD_PARTY = ("The inplace keyword", "Passing a dict or None as alias_mapping")
_PARETO = ("Estimated shape parameter of Pareto",)


def _reraise_others(caught: list) -> None:
    """Re-issue caught warnings other than the Pareto-k and known third-party ones."""
    for w in caught:
        text = str(w.message)
        if any(text.startswith(m) for m in _THIRD_PARTY + _PARETO):
            continue
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)


def compare_models(
    results: Mapping[str, FitResult | az.InferenceData],
    *,
    draws: int = 1000,
    seed: int = 0,
    method: str = "stacking",
) -> Any:
    """Rank fits of the same data by PSIS-LOO (:func:`arviz.compare`); a pandas DataFrame.

    Every result must be fitted to the same targets y (e.g. the same points with the same
    circle design): the log-likelihoods are compared point by point. Pareto-k warnings are
    kept in the ``warning`` column instead of being raised.
    """
    if len(results) < 2:
        raise InputError(f"need at least 2 models to compare, got {len(results)}")
    idatas = {}
    y0 = None
    for name, r in results.items():
        idata = (
            r if isinstance(r, az.InferenceData) else to_inference_data(r, draws=draws, seed=seed)
        )
        y = idata.observed_data["y"].values
        if y0 is None:
            y0 = y
        elif y.shape != y0.shape or not np.allclose(y, y0):
            raise InputError(f"model {name!r} was fitted to other targets y than the first one")
        idatas[name] = idata
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        table = az.compare(idatas, ic="loo", method=method)
    _reraise_others(caught)
    return table


def k_high(elpd: az.ELPDData, threshold: float = 0.7) -> int:
    """Number of points whose Pareto k exceeds ``threshold`` (PSIS-LOO unreliable there)."""
    return int((np.asarray(elpd.pareto_k) > threshold).sum())


# ---------------------------------------------------------------- how good is q
#: Thresholds of the PSIS shape k-hat (Yao, Vehtari, Simpson & Gelman 2018).
KHAT_GOOD, KHAT_BAD = 0.5, 0.7


def psis_khat(result: FitResult, *, draws: int = 1000, seed: int = 0) -> float:
    """PSIS k-hat of a variational fit: how far q is from the exact posterior.

    Yao, Vehtari, Simpson & Gelman (2018), "Yes, but did it work?": with theta_s ~ q
    (S = ``draws``) and importance ratios

        log rho_s = log p(y, theta_s | h) - log q(theta_s),

    theta = (W, [pi], [beta]) with z summed out (:class:`pyro_moe.joint.LogJoint`, the
    model file's priors at the fit's hyperparameters h), q(theta) = prod_k N(w_k | m_k, B_k)
    [Dir(pi | alpha)] [Gamma(beta | a, b)], k-hat is the shape of the generalised Pareto
    distribution fitted to the largest ratios (:func:`arviz.psislw`). It estimates how
    heavy the tail of p / q is under q: the ratios have finite variance for k < 0.5.

    * k-hat < 0.5 (:data:`KHAT_GOOD`): q is close to the posterior; its means and
      uncertainties can be trusted (and importance sampling from q would correct them);
    * 0.5 to 0.7: q is usable for means, its spread is questionable;
    * k-hat > 0.7 (:data:`KHAT_BAD`): q is far from the posterior, typically too narrow
      (a mean-field q under-disperses); do not trust its uncertainties, use
      ``method="nuts"``.

    For a Gaussian target and q its own mean with the covariance scaled by c, the ratios'
    tail index gives k = 1 - c for c < 1: c = 0.25 (sds halved) is k = 0.75.
    """
    if result.draws is not None:
        raise InputError("k-hat grades a variational fit; a NUTS result has no q")
    if int(draws) < 10:
        raise InputError(f"draws must be at least 10, got {draws}")
    joint = file_joint(result)
    added = [n for n in joint.sites if n not in FAST_LATENTS]
    if added:
        raise InputError(
            f"k-hat needs q's density of every latent site, and the model file's site(s) "
            f"{added} have only draws (or none) in this fit; k-hat covers the sites "
            f"{list(FAST_LATENTS)}"
        )
    gen = torch.Generator(device="cpu").manual_seed(seed)
    theta = q_draws(result, joint.sites, int(draws), gen)
    log_q = _log_q(result, theta)
    N, C = result.responsibilities.shape
    size = max(1, 2**21 // max(1, N * C))
    with torch.no_grad():
        log_p = torch.cat(
            [
                joint.log_prob({n: v[i : i + size] for n, v in theta.items()})
                for i in range(0, int(draws), size)
            ]
        )
    log_ratio = _np(log_p - log_q).astype(float)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _, k = az.psislw(log_ratio - log_ratio.max())
    _reraise_others(caught)
    return float(k)


def _log_q(result: FitResult, theta: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """log q(theta_s) (S,) of the variational posterior."""
    cov = 0.5 * (result.cov + result.cov.transpose(-1, -2))
    out = torch.distributions.MultivariateNormal(result.mean, covariance_matrix=cov)
    lq = out.log_prob(theta["w"]).sum(-1)
    if "pi" in theta:
        lq = lq + torch.distributions.Dirichlet(result.alpha).log_prob(theta["pi"])
    if "noise_precision" in theta and result.noise_shape is not None:
        g = torch.distributions.Gamma(result.noise_shape, result.noise_rate)
        lq = lq + g.log_prob(theta["noise_precision"])
    return lq


# ---------------------------------------------------------------- plots
@contextlib.contextmanager
def _quiet_arviz_plotting() -> Iterator[None]:
    """Silence the known third-party deprecations raised inside arviz 0.23's plots."""
    with warnings.catch_warnings():
        for message in _THIRD_PARTY:
            warnings.filterwarnings("ignore", message=message)
        yield


def _figure(axes: Any):
    arr = np.atleast_1d(np.asarray(axes, dtype=object)).ravel()
    return arr[0].get_figure()


def plot_posterior(idata: az.InferenceData, var_names: Sequence[str] = ("r",), **kwargs: Any):
    """Posterior densities (:func:`arviz.plot_posterior`), one panel per variable and expert;
    returns the matplotlib Figure (never shows it)."""
    with _quiet_arviz_plotting():
        axes = az.plot_posterior(idata, var_names=list(var_names), show=False, **kwargs)
    return _figure(axes)


def plot_forest(
    idata: az.InferenceData | Sequence[az.InferenceData],
    var_names: Sequence[str] = ("r",),
    **kwargs: Any,
):
    """Forest plot (:func:`arviz.plot_forest`) of ``var_names``, all chains drawn; returns
    the matplotlib Figure."""
    with _quiet_arviz_plotting():
        axes = az.plot_forest(idata, var_names=list(var_names), show=False, **kwargs)
    return _figure(axes)
