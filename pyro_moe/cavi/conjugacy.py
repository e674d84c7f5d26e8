"""Reading a model file for CAVI: which sites it has, whether each is conjugate, and the
prior values it uses.

The model file is the single source of truth. CAVI traces the model once on a few rows
and checks every sample site against the closed forms it implements:

=========================  ==============================  ===========================
site                       distribution CAVI can update    closed form
=========================  ==============================  ===========================
``w``                      MultivariateNormal              q(w_k) Gaussian
``pi``                     Dirichlet                       q(pi) Dirichlet
``z``                      Categorical                     q(z_i) categorical
``y`` (observed)           Normal                          Gaussian likelihood
``noise_precision``        Gamma                           q(beta) Gamma
``prior_regularization``   MultivariateNormal(0, Xi), obs  exact w0 M-step
``y_noise`` (observed)     Uniform(lo, hi)                 constant log-density (noise expert)
``gate_prior`` (observed)  Normal(0, s) on the gate's      MAP gate step (penalised
                           weights                         L-BFGS)
=========================  ==============================  ===========================

Anything else raises :class:`~pyro_moe.errors.NonConjugateError`, which names the site and
its distribution and suggests ``method="svi"``: an edit is never silently ignored.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.poutine.util import site_is_subsample
from torch.distributions import Independent

from ..config import Config, gate_weights
from ..errors import ModelFileError, NonConjugateError
from ..model_file import Model

SUPPORTED = {
    "w": dist.MultivariateNormal,
    "pi": dist.Dirichlet,
    "z": dist.Categorical,
    "y": dist.Normal,
    "noise_precision": dist.Gamma,
    "prior_regularization": dist.MultivariateNormal,
    "y_noise": dist.Uniform,
    "gate_prior": dist.Normal,
}


@dataclass
class Conjugate:
    """What CAVI read from the model: structure and the prior values in the trace."""

    mixture: bool  # has pi ~ Dirichlet (mixture of models)
    gated: bool
    prior_mean: torch.Tensor  # (K, n) loc of w
    prior_cov: torch.Tensor  # (K, n, n) covariance of w
    concentration: torch.Tensor | None  # (K,)
    noise_precision: torch.Tensor | None  # beta used by y when it is not latent
    noise_prior: tuple[torch.Tensor, torch.Tensor] | None  # (a0, b0) of Gamma
    regularization_cov: torch.Tensor | None
    noise_log_density: torch.Tensor | None = None  # -log(hi - lo) of the noise expert
    gate_prior_scale: float | None = None  # s of p(V) = N(0, s^2 I) on the gate's weights


def _unwrap(fn):
    while True:
        if isinstance(fn, Independent):
            fn = fn.base_dist
        elif isinstance(fn, dist.ExpandedDistribution | dist.MaskedDistribution):
            fn = fn.base_dist
        else:
            return fn


def _refuse(site: str, fn, why: str) -> NonConjugateError:
    return NonConjugateError(
        f"CAVI cannot fit site {site!r}: its distribution is {type(fn).__name__}, {why}. "
        f"Fit this model with method='svi' (SVI handles any prior)."
    )


def read_model(model: Model, X: torch.Tensor, y: torch.Tensor, config: Config) -> Conjugate:
    """Trace ``model.model`` on a few rows and check every site against the closed forms."""
    rows = min(8, X.shape[0])
    config = copy.deepcopy(config)  # pyro.module would rebind the gate's parameters
    with pyro.get_param_store().scope(), torch.no_grad():
        try:
            trace = poutine.trace(model.model).get_trace(X[:rows], y[:rows], config)
        except Exception as e:  # a user's model file may fail anywhere
            raise ModelFileError(
                f"model {model.name!r} failed when run: {type(e).__name__}: {e}"
            ) from e
    sites = {
        n: s for n, s in trace.nodes.items() if s["type"] == "sample" and not site_is_subsample(s)
    }
    for name, site in sites.items():
        fn = _unwrap(site["fn"])
        if name not in SUPPORTED:
            raise NonConjugateError(
                f"CAVI cannot fit site {name!r} ({type(fn).__name__}): it knows only the sites "
                f"{', '.join(SUPPORTED)} of the built-in models. Fit this model with method='svi'."
            )
        if not isinstance(fn, SUPPORTED[name]):
            raise _refuse(
                name,
                fn,
                f"which has no closed-form (conjugate) update; CAVI needs {SUPPORTED[name].__name__}",
            )
    for required in ("w", "z", "y"):
        if required not in sites:
            raise ModelFileError(f"model {model.name!r} has no sample site {required!r}")
    if not sites["y"]["is_observed"]:
        raise ModelFileError(f"site 'y' of model {model.name!r} is not observed")
    if "prior_regularization" in sites and not sites["prior_regularization"]["is_observed"]:
        raise _refuse(
            "prior_regularization", sites["prior_regularization"]["fn"], "but it is not observed"
        )

    K, n = config.experts, config.features
    w = _unwrap(sites["w"]["fn"])
    prior_mean = w.loc.expand(K, n).detach().clone()
    prior_cov = w.covariance_matrix.expand(K, n, n).detach().clone()
    _check_learned(config, "prior_mean", prior_mean)
    _check_learned(config, "prior_cov", prior_cov)

    concentration = None
    if "pi" in sites:
        concentration = _unwrap(sites["pi"]["fn"]).concentration.detach().to(X.dtype).clone()
    noise_prior = noise_precision = None
    if "noise_precision" in sites:
        g = _unwrap(sites["noise_precision"]["fn"])
        noise_prior = (
            g.concentration.detach().clone().reshape(()),
            g.rate.detach().clone().reshape(()),
        )
    else:
        scale = _unwrap(sites["y"]["fn"]).scale
        noise_precision = (1.0 / scale.reshape(-1)[0] ** 2).detach().clone()
        _check_learned(config, "noise_precision", noise_precision)
    xi = None
    if "prior_regularization" in sites:
        reg = _unwrap(sites["prior_regularization"]["fn"])
        if not torch.all(reg.loc == 0):
            raise _refuse(
                "prior_regularization", reg, "with a non-zero mean, which CAVI does not implement"
            )
        xi = reg.covariance_matrix.reshape(-1, n, n)[0].detach().clone()
    elif config.regularization_cov is not None and K > 1:
        raise ModelFileError(
            f"model {model.name!r} was given Xi but has no 'prior_regularization' site"
        )
    gate_prior_scale = (
        _gate_prior_scale(sites["gate_prior"], config) if "gate_prior" in sites else None
    )
    noise_log_density = None
    if "y_noise" in sites:
        u = _unwrap(sites["y_noise"]["fn"])
        noise_log_density = -torch.log(u.high - u.low).detach().to(X.dtype).reshape(-1)[0]
    return Conjugate(
        noise_log_density=noise_log_density,
        gate_prior_scale=gate_prior_scale,
        mixture="pi" in sites,
        gated=config.gate is not None,
        prior_mean=prior_mean,
        prior_cov=prior_cov,
        concentration=concentration,
        noise_precision=noise_precision,
        noise_prior=noise_prior,
        regularization_cov=xi if xi is not None else config.regularization_cov,
    )


def _gate_prior_scale(site, config: Config) -> float:
    """s of the ``gate_prior`` site: Normal(0, s), one s for every entry, observed at the
    gate's weights (:func:`pyro_moe.config.gate_weights`) as they are."""
    fn = _unwrap(site["fn"])
    if not site["is_observed"]:
        raise _refuse("gate_prior", fn, "but it is not observed")
    if config.gate is None:
        raise ModelFileError("the model has a 'gate_prior' site but no gate network")
    V = torch.cat([p.detach().reshape(-1) for p in gate_weights(config.gate)])
    loc, scale = torch.broadcast_tensors(fn.loc, fn.scale)
    value = site["value"].detach()
    if value.shape != V.shape or not torch.allclose(value.to(V.dtype), V, rtol=1e-10, atol=1e-12):
        raise _refuse(
            "gate_prior", fn, "but it is not observed at the gate's weights (parts.gate_prior)"
        )
    if not torch.all(loc == 0) or not torch.all(scale == scale.reshape(-1)[0]):
        raise _refuse(
            "gate_prior",
            fn,
            "with a non-zero mean or unequal scales, which CAVI does not implement",
        )
    return float(scale.reshape(-1)[0])


def _check_learned(config: Config, name: str, traced: torch.Tensor) -> None:
    """A learned hyperparameter must reach its distribution unchanged for CAVI's M-step."""
    if config.learns(name) and not torch.allclose(
        traced, getattr(config, name), rtol=1e-10, atol=1e-12
    ):
        raise NonConjugateError(
            f"the model transforms the learned hyperparameter {name!r} before using it, so CAVI's "
            f"closed-form M-step does not apply; hold it fixed (learn=...) or use method='svi'"
        )
