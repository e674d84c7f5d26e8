"""A fit as an :class:`arviz.InferenceData`: the one writer, behind
:meth:`pyro_moe.result.FitResult.to_inference_data` and
:func:`pyro_moe.diagnostics.to_inference_data` alike.

It reads a result by its attributes only (the core :class:`~pyro_moe.result.FitResult` or a
layer's, such as :class:`pyro_moe.curves.CurveFit`) and imports no module of pyro_moe that
knows the result type, so ``result.py`` can call it (``tests/test_imports.py``: no cycle).

:func:`to_inference_data` draws from the variational posterior q(W) q(pi) [q(beta)] held in
closed form (arviz 0.23 API), with these groups:

``posterior``
    ``w`` (chain, draw, expert, feature): draws from q(w_k) = N(m_k, B_k), the feature
    coordinates the result's ``feature_names`` (a DataFrame's columns, a CSV header, a
    curve design's monomials; else ``w0, w1, ...``);
    ``pi`` (chain, draw, expert): draws from q(pi) = Dir(alpha) (mixtures of models only);
    ``beta`` (chain, draw) or (chain, draw, expert) with one noise precision per expert:
    draws from q(beta) = Gamma(shape, rate), only when beta is latent; every other latent
    site of a swapped model file (an added scale tau, an ARD precision), by its site name:
    the fit's draws from its q (``result.posterior.site_draws``, SVI), its expert axis
    named ``expert`` and a feature axis ``feature``; and, for curve fits
    (:class:`pyro_moe.curves.CurveFit`), the curve parameters of every draw in pixel units:
    circles ``x0, y0, r`` (chain, draw, expert) with x0 = c_x + sigma w_1/2,
    y0 = c_y + sigma w_2/2, r = sigma sqrt(w_3 + (w_1/2)^2 + (w_2/2)^2) (NaN for a draw whose
    r^2 < 0), or conics ``xc, yc, semi_major, semi_minor, angle`` (NaN for a draw that is
    not an ellipse or a hyperbola; ``conic_kind`` in the attrs counts the kinds).
``log_likelihood``
    ``y`` (chain, draw, point): log p(y_i | draw), z summed out, from the model file's own
    likelihood (:meth:`pyro_moe.result.FitResult.pointwise_log_likelihood`: in closed form
    log sum_k g_ik N(y_i | w_k^T x_i, 1/beta), g_ik the drawn pi_k or the fitted gate's
    g_k(x_i), for the closed form's Gaussian). PSIS-LOO
    (:func:`pyro_moe.diagnostics.loo`, :func:`~pyro_moe.diagnostics.compare_models`) uses it.
``sample_stats`` (NUTS results only)
    ``diverging``, ``tree_depth``, ``n_steps``, ``lp`` (the log joint with z summed out, not
    an ELBO), ``step_size`` (chain, draw).
``observed_data``
    ``y`` (point,).
``constant_data``
    ``X`` (point, feature); and the point estimates, which are not draws of a posterior:
    ``beta`` () or (expert,) when the noise precision is a point estimate or held fixed
    (learned by the fit's M-step, or given), so ``az.summary`` never shows it as a
    posterior with sd 0. The posterior group's attrs say so: ``point_estimates`` lists the
    variables put there, ``hyper_method`` names the fit that set them (a NUTS fit's
    hyperparameters come from CAVI's or SVI's fit, ``draws.info["hyper_method"]``).

For a NUTS result (``result.draws``, :mod:`pyro_moe.engines.nuts`) the posterior group holds
its MCMC draws of the exact posterior at fixed hyperparameters, its chains as chains
(experts aligned to the variational fit's), with ``sample_stats``. For a variational result
the draws are independent (not MCMC). Several results (restarts with different seeds)
become chains after aligning their experts to the first result's (:func:`align_experts`).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from .errors import InputError

with warnings.catch_warnings():
    # arviz 0.23 announces its 1.0 refactor with a FutureWarning at import; we pin <1.
    warnings.filterwarnings("ignore", message="ArviZ is undergoing", category=FutureWarning)
    import arviz as az

__all__ = ["align_experts", "to_inference_data"]


def _np(t: Any) -> np.ndarray:
    return t.detach().cpu().numpy() if torch.is_tensor(t) else np.asarray(t)


def align_experts(results: Sequence[Any]) -> list[Any]:
    """Relabel the experts of every result to match the first result's.

    The permutation minimises sum_k ||m_k^(first) - m_perm(k)||^2 over the posterior means
    (Hungarian algorithm, :func:`pyro_moe.result.expert_alignment`, through each result's
    ``aligned_to``). Returns copies; the first result is returned unchanged. All results
    must have the same K and features.
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


def _log_lik(result: Any, theta: dict[str, np.ndarray | None]) -> np.ndarray:
    """log p(y_i | draw) (draw, point): the result's model file's own likelihood."""
    X = result.X
    given = {
        n: None if v is None else torch.from_numpy(np.asarray(v)).to(X) for n, v in theta.items()
    }
    return _np(result.pointwise_log_likelihood(given)).astype(float)


def _single(result: Any, rng: np.random.Generator, draws: int) -> dict[str, np.ndarray]:
    """Posterior variables (draw, ...) and the pointwise log-likelihood (draw, point); a
    point-estimated beta is not drawn (it goes to ``constant_data``)."""
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
        out["beta"] = beta
    else:  # the point estimate, shared or one per expert, for the likelihood only
        b0 = _np(result.noise_precision).astype(float)
        beta = np.broadcast_to(b0, (draws, *b0.shape)).copy()
    added = {}
    for name, values in (result.posterior.site_draws or {}).items():
        # the fit's own draws from q of an added site: the first `draws`, else resampled
        v = _np(values).astype(float)
        added[name] = v[:draws] if len(v) >= draws else v[rng.integers(0, len(v), draws)]
    out.update(added)
    out["log_lik"] = _log_lik(result, {"w": w, "pi": pi, "noise_precision": beta, **added})
    return out


def _mcmc(result: Any) -> tuple[dict[str, np.ndarray], np.ndarray, dict[str, np.ndarray]]:
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
    if d.beta is None:  # a point estimate: for the likelihood only
        beta = np.broadcast_to(b0, (C, S, *b0.shape)).copy()
    else:
        beta = _np(d.beta).astype(float)
        out["beta"] = beta
    # the other sites NUTS sampled (an ARD precision, tau, a sampled gate), chain after chain
    added = {n: _np(v).astype(float) for n, v in (result.posterior.site_draws or {}).items()}
    out.update({n: v.reshape(C, S, *v.shape[1:]) for n, v in added.items()})
    theta = {
        "w": w.reshape(C * S, *w.shape[2:]),
        "pi": None if pi is None else pi.reshape(C * S, -1),
        "noise_precision": beta.reshape(C * S, *beta.shape[2:]),
        **added,
    }
    log_lik = _log_lik(result, theta)
    stats = {
        "diverging": _np(d.diverging).astype(bool),
        "tree_depth": _np(d.tree_depth).astype(int),
        "n_steps": _np(d.n_steps).astype(int),
        "lp": _np(d.log_joint).astype(float),
        "step_size": np.repeat(_np(d.step_size).astype(float)[:, None], S, 1),
    }
    return out, log_lik.reshape(C, S, -1), stats


def _site_dims(result: Any, n: int) -> dict[str, list[str]]:
    """Named dims of the draws of a site the model file adds: its axis in the ``experts``
    plate is ``expert`` (:meth:`pyro_moe.result.FitResult.site_expert_axes`), an axis of
    the n features beside it ``feature``, any other ``<site>_dim_<j>`` (ArviZ's names)."""
    sites = result.posterior.site_draws or {}
    if not sites:
        return {}
    axes = result.site_expert_axes()
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
    results: Any | Sequence[Any], *, draws: int = 1000, seed: int = 0
) -> az.InferenceData:
    """Draws from q (or a NUTS fit's draws) as an :class:`arviz.InferenceData` (groups in
    the module docstring).

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
    # a layer above the core (a curve fit, pyro_moe.curves.CurveFit) reads the weights'
    # draws as its own parameters; the core result does not
    derived = getattr(first, "derived_parameters", None)
    names = getattr(first, "feature_names", None)
    features = first.weight_names(names)  # the names' one rule (else w0, w1, ...)
    posterior = dict(stacked)
    dims: dict[str, list[str]] = {
        "w": ["expert", "feature"],
        "pi": ["expert"],
        "y": ["point"],
        "X": ["point", "feature"],
    }
    per_expert = first.noise_precision.dim() == 1  # one noise precision per expert
    if per_expert:
        dims["beta"] = ["expert"]
    dims.update(_site_dims(first, n))
    constant = {"X": _np(first.X).astype(float)}
    point = [] if "beta" in posterior else ["beta"]
    if point:  # a point estimate (or a fixed value) of beta: data, not draws
        constant["beta"] = _np(first.noise_precision).astype(float)
    attrs: dict[str, Any] = {
        "inference_library": "pyro_moe",
        "method": first.method,
        "model_name": first.model_name,
        "approximation": "mean-field variational posterior q (independent draws)",
        "point_estimates": ", ".join(point) + (" (in constant_data)" if point else ""),
        "hyper_method": first.method,
    }
    if sample_stats is not None:
        source = first.draws.info.get("hyper_method", "CAVI")
        attrs["hyper_method"] = str(source)
        gate = first.draws.info.get("gate", "fixed")
        held = "hyperparameters" if gate == "sampled" else "hyperparameters and gate"
        attrs["approximation"] = (
            f"exact posterior at fixed hyperparameters (NUTS draws; {held} fixed at the "
            f"{source} fit's values" + ("; the gate sampled)" if gate == "sampled" else ")")
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
        constant_data=constant,
        coords=coords,
        dims=dims,
    )
    idata.posterior.attrs.update(attrs)
    return idata
