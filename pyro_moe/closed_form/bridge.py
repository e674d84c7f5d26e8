"""Between Pyro's guide parameters and the closed form.

* :func:`guide_params` turns a :class:`~pyro_moe.result.FitResult` into the values of the
  model file's guide parameters (and hyperparameters), so Pyro's own ELBO can be
  evaluated at the CAVI posterior (the test that ties each model file to the closed form).
* :func:`closed_form_objective` evaluates the closed-form ELBO and F at any guide
  parameters, e.g. at the end of SVI: a noise-free objective on the same scale as CAVI's.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping

import torch

from ..config import Config, gate_weights, log_gate
from ..errors import NonConjugateError
from ..model_file import Model
from ..result import FitResult
from . import updates as U
from .sites import read_model


def guide_params(result: FitResult) -> dict[str, torch.Tensor]:
    """Guide parameters (Pyro names, constrained values) and fitted hyperparameters."""
    out = {
        "assignment_probs": result.responsibilities,
        "weight_mean": result.mean,
        "weight_scale_tril": torch.linalg.cholesky(result.cov),
        "prior_mean": result.prior_mean,
        "prior_cov": result.prior_cov,
        "noise_precision": result.noise_precision,
    }
    if result.alpha is not None:
        out["mixing_concentration"] = result.alpha
    if result.noise_weight is not None:
        out["noise_weight"] = result.noise_weight
    if result.noise_shape is not None:
        out["noise_shape"] = result.noise_shape
        out["noise_rate"] = result.noise_rate
    # a FitResult holds them in its posterior; a flat view of a run's parts (SVI) directly
    site = getattr(getattr(result, "posterior", result), "site_params", None)
    out.update(hyperprior_guide_params(site or {}))
    return out


def hyperprior_guide_params(site_params) -> dict[str, torch.Tensor]:
    """The guide parameters of the conjugate hyperprior sites (the names a model file's
    guide gives them, by convention): a Gamma site ``s``: ``s_shape``, ``s_rate``; a
    Gaussian site of shape (n,) or (K, n): ``s_loc`` and ``s_scale_tril`` ((n, n) or
    (K, n, n), the Cholesky factors of the diagonal blocks of its q)."""
    out = {}
    for name, p in site_params.items():
        if "shape" in p:
            out[f"{name}_shape"], out[f"{name}_rate"] = p["shape"], p["rate"]
            continue
        loc = p["loc"]
        n = loc.shape[-1]
        blocks = p["cov"].reshape(-1, n, loc.numel() // n, n).diagonal(dim1=0, dim2=2)
        blocks = blocks.permute(2, 0, 1).reshape(*loc.shape[:-1], n, n)
        out[f"{name}_loc"], out[f"{name}_scale_tril"] = loc, torch.linalg.cholesky(blocks)
    return out


def hyperprior_state(hyper, params: Mapping[str, torch.Tensor]):
    """q of the hyperprior sites of ``hyper`` (:class:`~.conjugacy.WeightHyperprior`)
    from guide parameters named as :func:`hyperprior_guide_params` names them."""
    want = [f"{nm}_{p}" for nm in hyper.gamma_names for p in ("shape", "rate")]
    want += [f"{nm}_{p}" for nm in hyper.gauss_names for p in ("loc", "scale_tril")]
    missing = [k for k in want if k not in params]
    if missing:  # the guide's q is not the closed form's (or not named as it expects)
        raise NonConjugateError(
            f"the guide has no parameters {missing} of the conjugate hyperprior sites "
            f"{list(hyper.names)} (q = Gamma(<site>_shape, <site>_rate) or "
            "N(<site>_loc, <site>_scale_tril)): no closed-form objective at its parameters"
        )
    st = hyper.start()
    gamma = {nm: (params[f"{nm}_shape"], params[f"{nm}_rate"]) for nm in hyper.gamma_names}
    mean = cov = None
    if hyper.gauss_names:
        mean = torch.cat([params[f"{nm}_loc"].reshape(-1) for nm in hyper.gauss_names])
        covs = []
        for nm in hyper.gauss_names:
            L = params[f"{nm}_scale_tril"]
            covs.extend((L @ L.transpose(-1, -2)).reshape(-1, *L.shape[-2:]))
        cov = torch.block_diag(*covs)
    return type(st)(gamma, st.h, st.J, mean, cov, st.w0)


def config_at(result: FitResult, config: Config) -> Config:
    """``config`` with its hyperparameters (and gate) set to the fitted point estimates."""
    new = copy.deepcopy(config)
    new.prior_mean = result.prior_mean.clone()
    new.prior_cov = result.prior_cov.clone()
    new.noise_precision = result.noise_precision.clone()
    if new.gate is not None and result.gate_state is not None:
        new.gate.load_state_dict(result.gate_state)
    if result.noise_weight is not None:
        new.noise_weight = result.noise_weight.clone().reshape(())
    return new


def closed_form_objective(
    model: Model,
    X: torch.Tensor,
    y: torch.Tensor,
    config: Config,
    params: Mapping[str, torch.Tensor],
    *,
    bound: bool = False,
) -> tuple[float, float]:
    """(ELBO, F) in nats at guide parameters ``params`` and the hyperparameters in ``config``.

    F = ELBO + R(w0) (regularized model) + log p(V) (a gate prior, at ``config.gate``).
    Robust experts: at the guide's q(lambda | z) (``robust_shape``,
    ``robust_rate``; the optimal ones when absent). Logistic experts: the Jaakkola-Jordan
    bound, a lower bound of the ELBO, returned only with ``bound=True`` (else
    :class:`~pyro_moe.errors.NonConjugateError`: it is not the ELBO).

    Raises :class:`~pyro_moe.errors.NonConjugateError` for a model without a closed form.
    """
    conj = read_model(model, X, y, config)
    obs = conj.observation
    if obs is not None and not obs.has_noise and not bound:
        raise NonConjugateError(
            "the closed form of logistic experts is the Jaakkola-Jordan lower bound, not the ELBO"
        )
    with torch.no_grad():
        probs = params["assignment_probs"].clamp_min(0)
        log_r = torch.log(probs / probs.sum(-1, keepdim=True))
        L = params["weight_scale_tril"]
        q = U.WeightPosterior(
            params["weight_mean"],
            L @ L.transpose(-1, -2),
            U.cholesky_logdet(L),
        )
        if conj.noise_prior is not None:
            if "noise_shape" not in params:  # a latent beta whose q is named otherwise
                raise NonConjugateError("the guide has no q(beta) = Gamma(noise_shape, noise_rate)")
            a, b = params["noise_shape"], params["noise_rate"]
            (e_beta, e_log_beta), qbeta = U.gamma_moments(a, b), (a, b)
        else:
            e_beta, e_log_beta, qbeta = conj.noise_precision, torch.log(conj.noise_precision), None
        alpha = params.get("mixing_concentration") if conj.mixture else None
        if conj.mixture:
            log_prior = U.dirichlet_expected_log(alpha).expand(X.shape[0], -1)
        else:
            log_prior = log_gate(
                config.gate, X, config.noise_weight if config.noise_expert else None
            )
        if obs is not None:  # robust / logistic experts' data term
            data = obs.data_term(X, y, q, log_r, log_prior, e_log_beta, e_beta, params)
            elbo, F = U.elbo_from_lse(
                data, q, prior=U.weight_prior(conj.prior_mean, conj.prior_cov), alpha=alpha,
                mu=conj.concentration if conj.mixture else None, qbeta=qbeta,
                beta_prior=conj.noise_prior, xi=conj.regularization_cov,
            )  # fmt: skip
            if conj.gate_prior_scale is not None:
                F = F + U.gate_log_prior(gate_weights(config.gate), conj.gate_prior_scale)
            return float(elbo), float(F)
        e = U.expected_sq_residuals(X, y, q, config.maps)
        elbo, F = U.objective(
            log_r, e, q, log_prior=log_prior, e_beta=e_beta, e_log_beta=e_log_beta,
            w0=conj.prior_mean, A=conj.prior_cov, alpha=alpha,
            mu=conj.concentration if conj.mixture else None,
            qbeta=qbeta, beta_prior=conj.noise_prior, xi=conj.regularization_cov,
            noise_log_density=conj.noise_log_density,
        )  # fmt: skip
        if conj.hyperprior is not None:  # the hyperpriors' KLs in place of p(w)'s
            st = hyperprior_state(conj.hyperprior, params)
            fixed = U.weights_kl(q, U.weight_prior(conj.prior_mean, conj.prior_cov))
            shift = fixed - conj.hyperprior.kl(q, st)
            elbo, F = elbo + shift, F + shift
        if conj.gate_prior_scale is not None:  # F = ELBO [+ R(w0)] + log p(V)
            F = F + U.gate_log_prior(gate_weights(config.gate), conj.gate_prior_scale)
    return float(elbo), float(F)
