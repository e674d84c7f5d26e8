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

import functools
import math
from collections.abc import Mapping

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.infer import config_enumerate
from pyro.poutine.util import site_is_subsample
from torch.distributions import Independent

from .config import Config
from .errors import InputError, ModelFileError, PyroMoeError
from .model_file import Model, model_file_error
from .parts import DATA_PLATE

LOG_2PI = math.log(2 * math.pi)

__all__ = [
    "FAST_LATENTS",
    "batched_draws",
    "closed_form_observation",
    "component_log_densities",
    "density_mismatch",
    "expected_log_densities",
    "expert_predictive",
    "latent_draws",
    "likelihood_mismatch",
    "noise_log_density",
    "pointwise_component_log_likelihood",
    "pointwise_log_likelihood",
    "predictive_components",
    "residual_map",
    "trace_model",
    "unwrap",
]

#: Latent sites the closed-form likelihood knows (the rest need the file itself).
FAST_LATENTS = ("w", "pi", "noise_precision")
#: Observed sites of :mod:`pyro_moe.parts`: the targets (``y``, ``y_noise``) and constants.
TARGETS = ("y", "y_noise")
CONSTANTS = ("prior_regularization", "gate_prior")


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
    *,
    at: torch.Tensor | None = None,
) -> torch.Tensor:
    """log p(y_i | z_i = k, w, beta) (..., N, C) at weights W (..., K, n) and precision
    ``beta``: shared by the experts (shape W.shape[:-2], e.g. one per draw) or one per
    expert (shape W.shape[:-1]): log N(t_ik | w_k^T phi_ik, 1/beta_k), then log u for the
    noise expert.

    ``at`` (..., N), expert indices < K: each point's density under its own expert k = at_i
    only, (..., N) (``log_u`` not read): O(N d) per draw instead of O(N K)."""
    Z = torch.cat([X, y.unsqueeze(-1)], -1)  # (N, d)
    a = residual_map(W, maps)  # (..., K, d)
    beta = torch.as_tensor(beta, dtype=Z.dtype, device=Z.device)
    per_expert = beta.shape == W.shape[:-1]
    if at is not None:  # z_i^T a_{at_i}, (..., N)
        resid = (Z * torch.take_along_dim(a, at.unsqueeze(-1), dim=-2)).sum(-1)
        b = torch.take_along_dim(beta, at, dim=-1) if per_expert else beta.unsqueeze(-1)
        return expected_log_densities(resid * resid, torch.log(b), b)
    resid = Z @ a.transpose(-1, -2)  # (..., N, K)
    if per_expert:  # one per expert: (..., 1, K) against (..., N, K)
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


def unwrap(fn):
    """The distribution inside ``fn``'s wrappers (``.to_event``, ``.expand``, ``.mask``)."""
    while True:
        if isinstance(fn, Independent):
            fn = fn.base_dist
        elif isinstance(fn, dist.ExpandedDistribution | dist.MaskedDistribution):
            fn = fn.base_dist
        else:
            return fn


def trace_model(
    model: Model,
    X,
    y,
    config: Config,
    data: Mapping | None = None,
    *,
    replay: Mapping | None = None,
):
    """One trace of ``model.model`` on (X, y), its sites conditioned on ``data``; a
    failure inside the file is a :class:`ModelFileError` naming it.

    ``replay``: values of latent sites to run the file at, kept latent in the trace (a
    conditioned site is marked observed; a replayed one is not, so the trace reads as the
    file's own). Their values may carry a leading batch dimension of draws
    (:func:`batched_draws`); an observed site is never replaced."""
    fn = model.model if data is None else poutine.condition(model.model, data=dict(data))
    if replay is not None:
        given = poutine.Trace()
        for name, value in replay.items():
            given.add_node(name, type="sample", value=value, is_observed=False, infer={})
        fn = poutine.replay(fn, trace=given)
    with pyro.get_param_store().scope(), torch.no_grad():
        try:
            return poutine.trace(fn).get_trace(X, y, config)
        except Exception as e:  # a user's model file may fail anywhere
            if isinstance(e, PyroMoeError):
                raise
            raise model_file_error(
                model, e, "while tracing the model (reading its sites)"
            ) or ModelFileError(
                f"model {model.name!r} ({model.path}) failed when run: {type(e).__name__}: {e}"
            ) from e


#: random draws of the latent sites at which :func:`check_likelihood` compares densities
LIKELIHOOD_DRAWS = 3


def latent_draws(
    config: Config, X: torch.Tensor, draws: int, latent_beta: torch.Size | None
) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]]:
    """``draws`` random draws (W (K, n), z (N,), beta) of the latents at which
    :func:`likelihood_mismatch` compares densities: w around ``config.prior_mean`` (plus a
    standard normal), z uniform over the K experts, beta = exp(N(0, 1/4)) of shape
    ``latent_beta`` when it is latent (else None); from one fixed seed, on the CPU
    generator, so the draws are the same on every device."""
    W, z, beta = _stacked_draws(config, X, draws, latent_beta)
    return [(W[i], z[i], None if beta is None else beta[i]) for i in range(draws)]


#: the standard draws of :func:`_standard_draws` are kept for up to this many rows (their
#: z is D x N integers): a pure function of the shapes, drawn again for every new data set
#: of the same shapes otherwise (a fifth of the reading of new data at N = 1000)
DRAWS_KEPT_ROWS = 1 << 16


def _draw_standard(K: int, n: int, N: int, draws: int, latent_beta: tuple | None):
    """The draws of :func:`latent_draws` before they are placed: per draw a standard normal
    (K, n), z uniform over the K experts (N,) and a standard normal of shape ``latent_beta``
    (drawn in this order from the fixed seed), stacked: (D, K, n), (D, N), (D, *latent_beta)
    or None; float64 and int64 on the CPU."""
    gen = torch.Generator(device="cpu").manual_seed(20260)
    noise, zs, betas = [], [], []
    for _ in range(draws):
        noise.append(torch.randn((K, n), generator=gen, dtype=torch.float64, device="cpu"))
        zs.append(torch.randint(K, (N,), generator=gen, device="cpu"))
        if latent_beta is not None:
            betas.append(torch.randn(latent_beta, generator=gen, dtype=torch.float64, device="cpu"))
    return torch.stack(noise), torch.stack(zs), torch.stack(betas) if betas else None


_kept_standard_draws = functools.lru_cache(maxsize=8)(_draw_standard)


def _stacked_draws(config: Config, X: torch.Tensor, draws: int, latent_beta):
    """W (D, K, n), z (D, N) and beta (D, *latent_beta) or None of :func:`latent_draws`,
    on X's dtype and device; the standard draws kept for small data
    (:data:`DRAWS_KEPT_ROWS`), every tensor returned a new one."""
    K, n, N = config.experts, config.features, X.shape[0]
    shape = None if latent_beta is None else tuple(latent_beta)
    if N <= DRAWS_KEPT_ROWS:
        noise, z, beta = _kept_standard_draws(K, n, N, draws, shape)
    else:
        noise, z, beta = _draw_standard(K, n, N, draws, shape)
    dt = dict(dtype=X.dtype, device=X.device)
    W = config.prior_mean.detach().to(**dt).expand(K, n) + noise.to(**dt)
    z = z.to(X.device, copy=True)
    beta = None if beta is None else torch.exp(0.5 * beta.to(**dt))
    return W, z, beta


#: :func:`density_mismatch` evaluates each point's own expert alone from this many experts
#: on, all K densities and a gather below it (N = 1000, three draws, one beta per expert:
#: 86 against 125 us at K = 2, 116 against 127 at K = 8, 130 against 125 at K = 16, 999
#: against 122 at K = 24)
OWN_EXPERT_FROM = 16


def density_mismatch(
    node, X, y, W: torch.Tensor, z: torch.Tensor, beta: torch.Tensor, maps=None, *,
    pointwise: bool = False,
) -> str | None:  # fmt: skip
    """None when the traced site ``node`` is an observed Normal whose log-density of each
    y_i is log N(t_ik | w_k^T phi_ik, 1/beta_k) of :func:`component_log_densities` at
    z_i = k (relative and absolute tolerance sqrt(eps) of the dtype), else why not.

    W (..., K, n), z (..., N) and beta (shaped for :func:`component_log_densities`) may
    carry a leading batch of draws, as the trace's latents did; a point of the noise expert
    (z_i = K) has y's Gaussian masked (log-density 0). ``pointwise``: a density not of shape
    (..., N) is a mismatch (else its sum is compared)."""
    if node is None or node["type"] != "sample" or not node["is_observed"]:
        return "the model has no observed sample site 'y'"
    if not isinstance(unwrap(node["fn"]), dist.Normal):
        return f"its distribution is {type(unwrap(node['fn'])).__name__}, not Normal"
    got = node["fn"].log_prob(node["value"]).detach()
    K = W.shape[-2]
    noise = z >= K  # the noise expert's points (a site trace's own z): y's Gaussian masked
    own = z.clamp(max=K - 1)
    if K >= OWN_EXPERT_FROM:  # each point's own expert only (1 ms -> 0.12 ms at K = 24)
        want = component_log_densities(X, y, W, beta, maps, at=own)
    else:
        want = component_log_densities(X, y, W, beta, maps)
        want = want.gather(-1, own.unsqueeze(-1)).squeeze(-1)
    if bool(noise.any()):
        want = torch.where(noise, torch.zeros_like(want), want)
    if got.shape != want.shape:
        if pointwise:
            return f"its log-density has shape {tuple(got.shape)}, not {tuple(want.shape)}"
        got, want = got.sum(), want.sum()
    got = got.to(want)
    tol = float(torch.finfo(X.dtype).eps) ** 0.5
    if not torch.allclose(got, want, rtol=tol, atol=tol):
        i = int((got - want).abs().reshape(-1).argmax())
        return (
            "its log-density at random draws of the latent sites is not the closed "
            f"form's Gaussian N(w_k^T x_i, 1/beta) (at point {i % X.shape[0]}: "
            f"{float(got.reshape(-1)[i]):.6g} against {float(want.reshape(-1)[i]):.6g})"
        )
    return None


def likelihood_mismatch(
    model: Model,
    X,
    y,
    config: Config,
    noise_precision: torch.Tensor | None,
    *,
    latent_beta: torch.Size | None = None,
    draws: int = LIKELIHOOD_DRAWS,
    beta_site: str = "noise_precision",
) -> str | None:
    """None when the file's observed ``y`` is the closed form's Gaussian, else why not.

    At ``draws`` random draws of the latents (:func:`latent_draws`: w around
    ``config.prior_mean``, z uniform over the K experts, beta of shape ``latent_beta`` when
    it is latent, else ``noise_precision``), one trace each, the trace's log-density of
    each y_i must equal log N(t_ik | w_k^T phi_ik, 1/beta_k) of
    :func:`pyro_moe.component_log_densities` at z_i = k (:func:`density_mismatch`). The
    family alone proves nothing: ``Normal((w^T x)**3, s)`` is a Normal."""
    for W, z, beta in latent_draws(config, X, draws, latent_beta):
        data = {"w": W, "z": z}
        if beta is not None:
            data[beta_site] = beta  # the latent beta's site (another name: conjugacy rule)
        else:
            beta = noise_precision.detach().to(dtype=X.dtype, device=X.device)
        node = trace_model(model, X, y, config, data).nodes.get("y")
        why = density_mismatch(node, X, y, W, z, beta, config.maps)
        if why is not None:
            return why
    return None


def batched_draws(
    config: Config, X: torch.Tensor, draws: int = LIKELIHOOD_DRAWS
) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
    """The draws of :func:`latent_draws` stacked along a leading dimension of ``draws``, as
    the values of one trace (:func:`trace_model` ``replay=``; Pyro's vectorised particles
    do the same): w (D, K, n), z (D, N) and a latent noise precision (D, 1) shared or
    (D, K) one per expert, then that precision as :func:`density_mismatch` reads it
    ((D,) or (D, K)). A file written for broadcasting runs once for all the draws."""
    per_expert = config.per_expert_noise
    shape = torch.Size((config.experts,) if per_expert else ())
    W, z, beta = _stacked_draws(config, X, draws, shape)
    site = beta if per_expert else beta.reshape(draws, 1)
    return {"w": W, "z": z, "noise_precision": site}, beta


def closed_form_observation(
    model: Model, X: torch.Tensor, y: torch.Tensor, config: Config
) -> tuple[list[str], str | None]:
    """(the file's continuous latent sites, None when its observation is the closed
    form's -- latents among :data:`FAST_LATENTS`, the observed sites of
    :mod:`pyro_moe.parts`, y the closed form's Gaussian (:func:`likelihood_mismatch`) --
    else why not). ``config`` holds every hyperparameter fixed."""
    trace = trace_model(model, X, y, config)
    nodes = {
        n: s for n, s in trace.nodes.items() if s["type"] == "sample" and not site_is_subsample(s)
    }
    latent = [n for n, s in nodes.items() if not s["is_observed"] and n != "z"]
    observed = [n for n, s in nodes.items() if s["is_observed"]]
    fast = set(latent) <= set(FAST_LATENTS) and "w" in latent and "z" in nodes
    fast = fast and set(observed) <= set(TARGETS + CONSTANTS)
    fast = fast and ("pi" in latent or config.gate is not None)
    if not fast:
        return latent, (
            f"latent sites {latent} and observed sites {observed}, not only the sites "
            f"{list(FAST_LATENTS)} and the observations of pyro_moe.parts"
        )
    beta = None if "noise_precision" in latent else config.noise_precision
    shape = nodes["noise_precision"]["value"].shape if beta is None else None
    return latent, likelihood_mismatch(model, X, y, config, beta, latent_beta=shape)


def _enumerated_trace(model: Model, X, y, config: Config, latents: Mapping):
    """One trace of the model file with ``latents`` conditioned and z enumerated."""
    fn = poutine.enum(config_enumerate(model.model, "parallel"), first_available_dim=-2)
    fn = poutine.condition(fn, data=dict(latents))
    with pyro.get_param_store().scope(), torch.no_grad():
        return poutine.trace(fn).get_trace(X, y, config)


def _pointwise_sites(trace) -> dict:
    """The sample sites of the data plate (z and the observations), by name."""
    return {
        name: node
        for name, node in trace.nodes.items()
        if node["type"] == "sample"
        and not site_is_subsample(node)
        and any(f.name == DATA_PLATE for f in node["cond_indep_stack"])
    }


def predictive_components(
    model: Model, X: torch.Tensor, y: torch.Tensor, config: Config, latents: Mapping
):
    """(log g (C, N), the distribution of y under each component, batch (C, N)) of the
    model file at ``latents``, z enumerated; ``y`` only fills the observed site (any value
    in its support). A file with more than one observed site per point (the noise
    expert's ``y_noise`` beside ``y``) is refused by name."""
    sites = _pointwise_sites(_enumerated_trace(model, X, y, config, latents))
    observed = [n for n, s in sites.items() if s["is_observed"]]
    if observed != ["y"] or "z" not in sites:
        raise InputError(
            f"model file {model.name!r} observes {observed} per point (with z "
            f"{'enumerated' if 'z' in sites else 'absent'}): the Monte Carlo predictive "
            "handles one observed site 'y' per point and a discrete z"
        )
    N = X.shape[0]
    log_g = sites["z"]["fn"].log_prob(sites["z"]["value"])
    return log_g.expand(-1, N) if log_g.dim() == 2 else log_g.reshape(-1, N), sites["y"]["fn"]


def pointwise_component_log_likelihood(
    model: Model, X: torch.Tensor, y: torch.Tensor, config: Config, latents: Mapping
) -> torch.Tensor:
    """log p(z_i = c | latents) + log p(y_i | z_i = c, latents) (C, N) of the model file
    itself: one trace of the file with ``latents`` conditioned and z enumerated
    (``poutine.enum``), the observed sites of the data plate (``y``, ``y_noise``, a
    Bernoulli or Student-t ``y`` alike) summed with log p(z_i = c). Its log-sum-exp over c
    is :func:`pointwise_log_likelihood`; its softmax over c the posterior probabilities of
    the components at ``latents``."""
    total = torch.zeros((), dtype=X.dtype, device=X.device)
    pointwise = False
    for name, node in _pointwise_sites(_enumerated_trace(model, X, y, config, latents)).items():
        if not (node["is_observed"] or name == "z"):
            continue
        total = total + node["fn"].log_prob(node["value"])
        pointwise = pointwise or node["is_observed"]
    if not pointwise:
        raise ModelFileError(
            f"model file {model.name!r} has no observed site in plate {DATA_PLATE!r}: no "
            "pointwise log-likelihood"
        )
    return total.reshape(-1, X.shape[0]) if total.dim() > 1 else total.reshape(1, -1)


def pointwise_log_likelihood(
    model: Model, X: torch.Tensor, y: torch.Tensor, config: Config, latents: Mapping
) -> torch.Tensor:
    """log p(y_i | latents) (N,) of the model file itself, z summed out: the log-sum-exp
    over the components c of :func:`pointwise_component_log_likelihood`. ``y`` may be new
    targets at new rows ``X`` (a held-out score)."""
    return torch.logsumexp(pointwise_component_log_likelihood(model, X, y, config, latents), 0)
