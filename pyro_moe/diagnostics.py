"""Posterior diagnostics with ArviZ: the one module of pyro_moe that calls :mod:`arviz`.

A :class:`~pyro_moe.result.FitResult` holds the variational posterior
q(W) q(pi) [q(beta)] in closed form; :func:`to_inference_data` draws from it and builds an
:class:`arviz.InferenceData` (arviz 0.23 API) with these groups:

``posterior``
    ``w`` (chain, draw, expert, feature): draws from q(w_k) = N(m_k, B_k);
    ``pi`` (chain, draw, expert): draws from q(pi) = Dir(alpha) (mixtures of models only);
    ``beta`` (chain, draw) or (chain, draw, expert) with one noise precision per expert:
    draws from q(beta) = Gamma(shape, rate) when beta is latent, else the point estimate
    repeated; every other latent site of a swapped model file (an added scale tau), by
    its site name: the fit's draws from its q (``result.posterior.site_draws``, SVI); and,
    for curve fits (:class:`pyro_moe.curves.CurveFit`), the curve parameters of every
    draw in pixel units: circles ``x0, y0, r`` (chain, draw, expert) with
    x0 = c_x + sigma w_1/2, y0 = c_y + sigma w_2/2, r = sigma sqrt(w_3 + (w_1/2)^2 + (w_2/2)^2)
    (NaN for a draw whose r^2 < 0), or conics ``xc, yc, semi_major, semi_minor, angle``
    (NaN for a draw that is not an ellipse or a hyperbola; ``conic_kind`` in the attrs
    counts the kinds).
``log_likelihood``
    ``y`` (chain, draw, point): log p(y_i | draw) = log sum_k g_ik N(y_i | w_k^T x_i, 1/beta)
    with g_ik = the drawn pi_k (mixture of models) or the fitted gate's g_k(x_i) (gated
    models; the gate is a point estimate). PSIS-LOO (:func:`loo`, :func:`compare_models`)
    uses it to rank models fitted to the same targets y.
``sample_stats`` (NUTS results only)
    ``diverging``, ``tree_depth``, ``n_steps``, ``lp`` (the log joint with z summed out),
    ``step_size`` (chain, draw).
``observed_data``
    ``y`` (point,).
``constant_data``
    ``X`` (point, feature).

For a NUTS result (``result.draws``, :mod:`pyro_moe.engines.nuts`) the posterior group
holds its MCMC draws of the exact posterior instead, its chains as chains (experts aligned
to the CAVI fit's), with ``sample_stats``. For a variational result the draws are
independent (not MCMC), so :func:`loo` passes ``reff=1``. Several results
(restarts with different seeds) become chains after aligning their experts to the first
result's (:func:`align_experts`), and :func:`rhat_across_restarts` then flags restarts that
found different optima (R-hat >> 1). Note that q is a variational approximation: its
spread is usually narrower than the exact posterior's.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import xarray as xr
from scipy.special import logsumexp

from .errors import InputError
from .joint import FAST_LATENTS, file_joint
from .likelihood import component_log_densities, noise_log_density
from .result import FitResult, expert_axes, q_draws

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


# ---------------------------------------------------------------- alignment of restarts
def _np(t: Any) -> np.ndarray:
    return t.detach().cpu().numpy() if torch.is_tensor(t) else np.asarray(t)


def align_experts(results: Sequence[FitResult]) -> list[FitResult]:
    """Relabel the experts of every result to match the first result's.

    The permutation minimises sum_k ||m_k^(first) - m_perm(k)||^2 over the posterior means
    (Hungarian algorithm, :func:`scipy.optimize.linear_sum_assignment`). Returns copies; the
    first result is returned unchanged. All results must have the same K and features.
    """
    results = list(results)
    if not results:
        raise InputError("need at least one FitResult")
    return [results[0], *(r.aligned_to(results[0]) for r in results[1:])]


# ---------------------------------------------------------------- draws from q
def _mvn_draws(rng: np.random.Generator, mean: np.ndarray, cov: np.ndarray, n: int) -> np.ndarray:
    """(n, K, d) draws of N(mean_k, cov_k); a symmetric square root, so a (near-)singular
    covariance (noise-free data at the floors) is fine."""
    K, d = mean.shape
    out = np.empty((n, K, d))
    for k in range(K):
        c = 0.5 * (cov[k] + cov[k].T)
        lam, V = np.linalg.eigh(c)
        root = V * np.sqrt(np.clip(lam, 0.0, None))
        out[:, k] = mean[k] + rng.standard_normal((n, d)) @ root.T
    return out


def _single(result: FitResult, rng: np.random.Generator, draws: int) -> dict[str, np.ndarray]:
    """Posterior variables (draw, ...) and the pointwise log-likelihood (draw, point)."""
    w = _mvn_draws(rng, _np(result.mean).astype(float), _np(result.cov).astype(float), draws)
    out: dict[str, np.ndarray] = {"w": w}
    pi = None
    if result.alpha is not None:
        pi = rng.dirichlet(_np(result.alpha).astype(float), size=draws)
        out["pi"] = pi
    if result.noise_shape is not None and result.noise_rate is not None:
        shape = _np(result.noise_shape).astype(float)
        rate = _np(result.noise_rate).astype(float)
        beta = rng.gamma(shape, 1.0 / rate, size=(draws, *shape.shape))
    else:  # the point estimate, shared or one per expert, repeated
        b0 = _np(result.noise_precision).astype(float)
        beta = np.broadcast_to(b0, (draws, *b0.shape)).copy()
    out["beta"] = beta
    added = {}
    for name, values in (result.posterior.site_draws or {}).items():
        # the fit's own draws from q of an added site: the first `draws`, else resampled
        v = _np(values).astype(float)
        added[name] = v[:draws] if len(v) >= draws else v[rng.integers(0, len(v), draws)]
    out.update(added)
    out["log_lik"] = _log_lik(result, w, pi, beta, added)
    return out


def _log_lik(
    result: FitResult,
    w: np.ndarray,
    pi: np.ndarray | None,
    beta: np.ndarray,
    added: Mapping[str, np.ndarray] | None = None,
) -> np.ndarray:
    """log p(y_i | draw) (draw, point): the model file's own likelihood, z summed out.

    In closed form, log sum_k g_ik N(y_i | w_k^T x_i, 1/beta) (g the drawn pi or the fitted
    gate), when the file's observation is the closed form's Gaussian; otherwise (a Student-t,
    Bernoulli, edited-mean file) through Pyro from the file itself
    (:meth:`pyro_moe.joint.LogJoint.file_log_likelihood`), at the same draws."""
    joint = file_joint(result)
    if not joint.fast:
        given = {"w": w, "pi": pi, "noise_precision": beta, **(added or {})}
        missing = [n for n in joint.sites if given.get(n) is None]
        if missing:
            raise InputError(
                f"the fit has no draws of the model file's latent site(s) {missing}, so its "
                "pointwise log-likelihood cannot be evaluated"
            )
        theta = {n: torch.from_numpy(np.asarray(given[n])).to(result.X) for n in joint.sites}
        return _np(joint.file_log_likelihood(theta)).astype(float)
    X, y = _np(result.X).astype(float), _np(result.y).astype(float)
    if pi is not None:
        log_g = np.log(np.clip(pi, 1e-300, None))[:, None, :]  # (draw, 1, K)
    else:
        if result.log_gate is not None:
            lg = _np(result.log_gate).astype(float)
        else:
            lg = np.log(np.clip(_np(result.expert_weights(result.X)).astype(float), 1e-300, None))
        log_g = lg[None, :, :]  # (1, N, K)
    maps = None if result.maps is None else result.maps.detach().cpu().double()
    log_dens = component_log_densities(
        torch.from_numpy(X), torch.from_numpy(y), torch.from_numpy(w), torch.from_numpy(beta),
        maps, noise_log_density(result.noise_bounds),
    ).numpy()  # (draw, N, C)  # fmt: skip
    return logsumexp(log_g + log_dens, axis=-1)


def _mcmc(result: FitResult) -> tuple[dict[str, np.ndarray], np.ndarray, dict[str, np.ndarray]]:
    """A NUTS result's draws (chain, draw, ...), pointwise log-likelihood and sampler
    statistics (ArviZ's names: diverging, tree_depth, n_steps, lp, step_size)."""
    d = result.draws
    w = _np(d.w).astype(float)
    C, S = w.shape[:2]
    out: dict[str, np.ndarray] = {"w": w}
    pi = None if d.pi is None else _np(d.pi).astype(float)
    if pi is not None:
        out["pi"] = pi
    b0 = _np(result.noise_precision).astype(float)  # () or (K,): one per expert
    beta = (
        np.broadcast_to(b0, (C, S, *b0.shape)).copy()
        if d.beta is None
        else _np(d.beta).astype(float)
    )
    out["beta"] = beta
    flat_pi = None if pi is None else pi.reshape(C * S, -1)
    # the other sites NUTS sampled (an ARD precision, tau, a sampled gate), chain after chain
    added = {n: _np(v).astype(float) for n, v in (result.posterior.site_draws or {}).items()}
    out.update({n: v.reshape(C, S, *v.shape[1:]) for n, v in added.items()})
    log_lik = _log_lik(
        result,
        w.reshape(C * S, *w.shape[2:]),
        flat_pi,
        beta.reshape(C * S, *beta.shape[2:]),
        added,
    )
    stats = {
        "diverging": _np(d.diverging).astype(bool),
        "tree_depth": _np(d.tree_depth).astype(int),
        "n_steps": _np(d.n_steps).astype(int),
        "lp": _np(d.log_joint).astype(float),
        "step_size": np.repeat(_np(d.step_size).astype(float)[:, None], S, 1),
    }
    return out, log_lik.reshape(C, S, -1), stats


def _site_dims(result: FitResult, n: int) -> dict[str, list[str]]:
    """Named dims of the draws of a site the model file adds: its axis in the ``experts``
    plate is ``expert`` (:func:`pyro_moe.joint.expert_axes`), an axis of the n features
    beside it ``feature``, any other ``<site>_dim_<j>`` (ArviZ's default names)."""
    sites = result.posterior.site_draws or {}
    if not sites:
        return {}
    axes = expert_axes(result)
    out = {}
    for name, values in sites.items():
        shape = tuple(values.shape[1:])
        if name not in axes or not shape:
            continue
        names = [f"{name}_dim_{j}" for j in range(len(shape))]
        names[axes[name]] = "expert"
        for j, size in enumerate(shape):
            if j != axes[name] and size == n and "feature" not in names:
                names[j] = "feature"
        out[name] = names
    return out


def to_inference_data(
    results: FitResult | Sequence[FitResult], *, draws: int = 1000, seed: int = 0
) -> az.InferenceData:
    """Draws from q as an :class:`arviz.InferenceData` (groups described in the module doc).

    Args:
        results: one FitResult (one chain) or several fitted to the same data (one chain
            each, experts aligned to the first result's, see :func:`align_experts`).
        draws: draws per chain.
        seed: seed of the ``numpy.random.default_rng`` that draws every chain in turn.

    Raises:
        InputError: for no results, draws < 1, or results on different data.
    """
    if not isinstance(results, Sequence):  # one result (a FitResult, or a layer's)
        results = [results]
    results = list(results)
    sample_stats = None
    if any(r.draws is not None for r in results):
        if len(results) != 1:
            raise InputError("give one NUTS result (its chains are the chains), not a list")
        stacked, log_lik, sample_stats = _mcmc(results[0])
    else:
        results = align_experts(results)
        if int(draws) < 1:
            raise InputError(f"draws must be at least 1, got {draws}")
        for r in results[1:]:
            if r.y.shape != results[0].y.shape or not torch.equal(r.y.cpu(), results[0].y.cpu()):
                raise InputError("results for chains must be fitted to the same targets y")
        rng = np.random.default_rng(seed)
        chains = [_single(r, rng, int(draws)) for r in results]
        stacked = {k: np.stack([c[k] for c in chains]) for k in chains[0]}
        log_lik = stacked.pop("log_lik")
    first = results[0]
    K, n = first.mean.shape
    # a layer above the core (a curve fit, pyro_moe.curves.CurveFit) names the design's
    # columns and reads the weights' draws as its own parameters; the core result does not
    names = getattr(first, "feature_names", None)
    derived = getattr(first, "derived_parameters", None)
    features = list(names or [])
    if len(features) != n:
        features = [f"w{j}" for j in range(n)]
    posterior = dict(stacked)
    dims: dict[str, list[str]] = {
        "w": ["expert", "feature"],
        "pi": ["expert"],
        "y": ["point"],
        "X": ["point", "feature"],
    }
    if first.noise_precision.dim() == 1:  # one noise precision per expert
        dims["beta"] = ["expert"]
    dims.update(_site_dims(first, n))
    attrs: dict[str, Any] = {
        "inference_library": "pyro_moe",
        "method": first.method,
        "model_name": first.model_name,
        "approximation": "mean-field variational posterior q (independent draws)",
    }
    if sample_stats is not None:
        attrs["approximation"] = (
            "exact posterior at fixed hyperparameters (NUTS draws; hyperparameters "
            "and gate fixed at the CAVI fit's values)"
        )
    if derived is not None:
        params, extra = derived(stacked["w"])
        posterior.update(params)
        dims.update({v: ["expert"] for v in params})
        attrs.update(extra)
    coords = {
        "expert": np.arange(K),
        "feature": features,
        "point": np.arange(first.y.shape[0]),
    }
    if first.noise_expert and "pi" in posterior:  # pi has K + 1 shares: the noise expert last
        dims["pi"] = ["component"]
        coords["component"] = [*(str(k) for k in range(K)), "noise"]
    if first.maps is not None:  # experts with their own maps: X holds the layout's columns
        dims["X"] = ["point", "column"]
        coords["column"] = list(names) if names else list(range(first.X.shape[1]))
    idata = az.from_dict(
        posterior=posterior,
        sample_stats=sample_stats,
        log_likelihood={"y": log_lik},
        observed_data={"y": _np(first.y).astype(float)},
        constant_data={"X": _np(first.X).astype(float)},
        coords=coords,
        dims=dims,
    )
    idata.posterior.attrs.update(attrs)
    return idata


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
