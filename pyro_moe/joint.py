"""The log joint density of a model file at fixed hyperparameters, with z summed out.

For hyperparameters h held fixed (w0, A, beta or its prior, mu, Xi, the gate V and rho, all
at the values a fit chose), the continuous latents theta = (W, [pi], [beta]) of a model
file have the density

    log p(y, theta | h) = log p(theta | h) + sum_i log sum_c g_ic exp(log p(y_i | z_i = c, theta))
                          (+ the constant observed sites R(w0), log p(V))

with g_ic = pi_c (mixture of models) or the fixed gate's g_c(x_i) (mixtures of experts),
and the components' densities of :func:`pyro_moe.likelihood.component_log_densities` (the
noise expert's uniform density last). It is NUTS's target
(:mod:`pyro_moe.engines.nuts`) and the numerator of the PSIS importance ratios
p(y, theta) / q(theta) that grade a variational fit (:func:`pyro_moe.diagnostics.psis_khat`).

:class:`LogJoint` reads the priors from one trace of the model file itself (as CAVI does,
:mod:`pyro_moe.closed_form.sites`), so an edited prior is what it evaluates. Two ways to
sum z out, which agree to round-off (``tests/test_nuts.py``):

* ``"sum"``: the closed form above by log-sum-exp over the C components, vectorised over
  a leading batch of draws; for model files whose latent sites are among ``w``, ``pi``,
  ``noise_precision`` and whose observations are the ones :mod:`pyro_moe.parts` writes.
* ``"enumerate"``: Pyro's own parallel enumeration of z on the model file
  (:func:`pyro.infer.mcmc.util.initialize_model`), for any edit, one trace per call.

In unconstrained coordinates u (each site through ``biject_to(support)``, as Pyro's HMC
does: stick-breaking for pi, exp for beta) the potential energy is

    U(u) = -log p(y, T(u) | h) - sum_sites log |det dT/du|.
"""

from __future__ import annotations

from collections.abc import Mapping

import pyro
import torch
from pyro import poutine
from pyro.distributions.transforms import biject_to
from pyro.infer.mcmc.util import initialize_model
from pyro.poutine.util import site_is_subsample

from .config import Config, log_gate
from .errors import InputError, ModelFileError
from .gate_sites import sampled_gate_model
from .likelihood import (
    CONSTANTS,
    FAST_LATENTS,
    closed_form_observation,
    component_log_densities,
    noise_log_density,
    pointwise_component_log_likelihood,
    pointwise_log_likelihood,
)
from .model_file import Model
from .result import FitResult, cholesky, fixed_config, q_draws

__all__ = [
    "FAST_LATENTS",
    "LogJoint",
    "cholesky",
    "file_joint",
    "fixed_config",
    "pointwise_log_likelihood",
    "q_draws",
]


class LogJoint:
    """log p(y, theta | h) of a model file at fixed hyperparameters (module docstring).

    Args:
        model: the model file.
        X, y: the data.
        config: hyperparameters, all fixed (:func:`fixed_config`); a learned one would be
            a ``pyro.param`` silently frozen at its initial value, so it is refused.
        marginalize: ``"sum"``, ``"enumerate"`` or ``"auto"`` (``"sum"`` where the model
            file allows it).

    Attributes:
        sites: the continuous latent sites, in model order, with ``shapes`` (constrained)
            and ``transforms`` (``biject_to`` of each support).
        priors: each latent site's prior, as the model file's trace gives it.
        marginalize: the way z is summed out.
        Z: the rows z_i = [x_i, y_i] (N, n + 1).
        log_gate: the fixed gate's log g_ic (N, C) of a gated model, else None.
        log_u: the noise expert's log density, else None.
    """

    def __init__(
        self,
        model: Model,
        X: torch.Tensor,
        y: torch.Tensor,
        config: Config,
        marginalize: str = "auto",
    ):
        if config.learn:
            raise InputError(
                f"the log joint needs every hyperparameter fixed; {sorted(config.learn)} "
                "would be pyro.params frozen at their initial values"
            )
        self.model, self.X, self.y, self.config = model, X, y, config
        self.Z = torch.cat([X, y.unsqueeze(-1)], -1)  # z_i = [x_i, y_i]
        with pyro.get_param_store().scope(), torch.no_grad():
            trace = poutine.trace(model.model).get_trace(X, y, config)
        params = [n for n, s in trace.nodes.items() if s["type"] == "param"]
        if params:
            raise ModelFileError(
                f"model file {model.name!r} registers pyro.param {', '.join(params)} in its "
                "model: NUTS would freeze it at its initial value; hold it fixed (a constant) "
                "or make it a latent sample site"
            )
        nodes = {
            n: s
            for n, s in trace.nodes.items()
            if s["type"] == "sample" and not site_is_subsample(s)
        }
        latent = [n for n, s in nodes.items() if not s["is_observed"] and n != "z"]
        observed = [n for n, s in nodes.items() if s["is_observed"]]
        self.sites = latent
        self.shapes = {n: tuple(nodes[n]["value"].shape) for n in latent}
        self.transforms = {n: biject_to(nodes[n]["fn"].support) for n in latent}
        self.priors = {n: nodes[n]["fn"] for n in latent}
        _, self.mismatch = closed_form_observation(model, X, y, config)
        fast = self.mismatch is None
        self.fast = fast
        if marginalize == "sum" and not fast:
            raise ModelFileError(
                f"model file {model.name!r}: z can be summed in closed form only when its "
                f"site 'y' is the closed form's Gaussian ({self.mismatch}); use "
                "marginalize='enumerate'"
            )
        if marginalize == "auto":
            marginalize = "sum" if fast else "enumerate"
        self.marginalize = marginalize
        self._constant = sum(
            (nodes[n]["fn"].log_prob(nodes[n]["value"]).sum() for n in observed if n in CONSTANTS),
            torch.zeros((), dtype=X.dtype, device=X.device),
        )
        self.log_u = noise_log_density(config.noise_bounds)
        self.log_gate = None
        if config.gate is not None:
            with torch.no_grad():
                self.log_gate = log_gate(
                    config.gate, X, config.noise_weight if config.noise_expert else None
                )
        self._enumerated = None

    # ---- constrained values -----------------------------------------------------------
    def constrain(
        self, u: Mapping[str, torch.Tensor]
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """theta = T(u) for unconstrained values with a leading batch dim (S, ...), and
        sum_sites log |det dT/du| (S,)."""
        S = next(iter(u.values())).shape[0]
        theta = {}
        log_det = torch.zeros(S, dtype=self.X.dtype, device=self.X.device)
        for n in self.sites:
            t = self.transforms[n]
            x = t(u[n])
            theta[n] = x
            j = t.log_abs_det_jacobian(u[n], x)
            log_det = log_det + j.reshape(S, -1).sum(-1)
        return theta, log_det

    def unconstrain(self, theta: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """u = T^{-1}(theta), site by site."""
        return {n: self.transforms[n].inv(theta[n]) for n in self.sites}

    # ---- the closed form ----------------------------------------------------------------
    def _parts(self, theta: Mapping[str, torch.Tensor]):
        w = theta["w"]
        beta = theta.get("noise_precision")
        if beta is None:  # (S,) shared, or (S, K) with one noise precision per expert
            fixed = self.config.noise_precision
            beta = fixed.expand(w.shape[0], *fixed.shape)
        if "pi" in theta:
            log_g = torch.log(theta["pi"]).unsqueeze(-2)  # (S, 1, C)
        else:
            log_g = self.log_gate.unsqueeze(0)  # (1, N, C)
        return w, beta, log_g

    def component_logits(self, theta: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """log g_ic + log p(y_i | z_i = c, theta), (S, N, C), for draws theta with a
        leading dim S: the terms whose log-sum-exp over c is log p(y_i | theta). In closed
        form for the built-in likelihood (:attr:`fast`), else from the model file's own
        trace, draw by draw (:func:`pyro_moe.likelihood.pointwise_component_log_likelihood`)."""
        if not self.fast:
            S = next(iter(theta.values())).shape[0]
            rows = [
                pointwise_component_log_likelihood(
                    self.model, self.X, self.y, self.config, {n: theta[n][s] for n in self.sites}
                ).T
                for s in range(S)
            ]
            return torch.stack(rows)
        w, beta, log_g = self._parts(theta)
        return log_g + component_log_densities(
            self.X, self.y, w, beta, self.config.maps, self.log_u
        )

    def log_likelihood(self, theta: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """log p(y_i | theta) = log sum_c g_ic p(y_i | z_i = c, theta), (S, N): in closed
        form for the built-in likelihood (:attr:`fast`), else from the model file's own
        observed sites (:meth:`file_log_likelihood`)."""
        if not self.fast:
            return self.file_log_likelihood(theta)
        return torch.logsumexp(self.component_logits(theta), -1)

    def file_log_likelihood(self, theta: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """log p(y_i | theta) (S, N) through Pyro, for any likelihood a model file writes:
        the file traced once per draw with its latent sites conditioned on theta_s and z
        enumerated in parallel; log sum_c exp(log p(z_i = c | .) + sum of the log-densities
        of the observed sites in the data plate), the sum over the components c by
        log-sum-exp (:func:`pointwise_log_likelihood`)."""
        S = next(iter(theta.values())).shape[0]
        rows = [
            pointwise_log_likelihood(
                self.model, self.X, self.y, self.config, {n: theta[n][s] for n in self.sites}
            )
            for s in range(S)
        ]
        return torch.stack(rows)

    def log_prior(self, theta: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """log p(theta | h) (S,): each latent site's prior from the model file's trace."""
        out = 0.0
        for n in self.sites:
            lp = self.priors[n].log_prob(theta[n])
            out = out + lp.reshape(lp.shape[0], -1).sum(-1)
        return out

    def log_prob(self, theta: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """log p(y, theta | h) (S,), z summed out, the constant observed sites included."""
        if self.marginalize == "enumerate":
            u = self.unconstrain(theta)
            _, log_det = self.constrain(u)
            S = log_det.shape[0]
            pe = torch.stack(
                [self._enumerated_potential({n: u[n][s] for n in u}) for s in range(S)]
            )
            return -pe - log_det
        return self.log_prior(theta) + self.log_likelihood(theta).sum(-1) + self._constant

    # ---- potential energy ---------------------------------------------------------------
    def potential(self, u: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """U(u) (module docstring) at one unconstrained point (no batch dim), a scalar."""
        if self.marginalize == "enumerate":
            return self._enumerated_potential(u)
        batched = {n: v.unsqueeze(0) for n, v in u.items()}
        theta, log_det = self.constrain(batched)
        return -(self.log_prob(theta) + log_det)[0]

    def _enumerated_potential(self, u: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Pyro's potential energy of the model file with z enumerated in parallel."""
        if self._enumerated is None:
            with pyro.get_param_store().scope(), torch.enable_grad():  # it checks a gradient
                _, fn, _, _ = initialize_model(
                    self.model.model,
                    model_args=(self.X, self.y, self.config),
                    max_plate_nesting=1,
                )
            self._enumerated = fn
        return self._enumerated(dict(u))


def file_joint(result: FitResult) -> LogJoint:
    """The log joint of ``result``'s own model file at its hyperparameters: its ``fast``
    says whether the file's likelihood is the closed form's Gaussian, and its
    ``log_likelihood`` reads the file otherwise. For a NUTS result that sampled the gate
    (``result.draws.info["gate"] == "sampled"``) the gate's parameters are latent sites of
    it (:func:`pyro_moe.gate_sites.sampled_gate_model`), so the pointwise log-likelihood reads each draw's gate."""
    model = result.model
    config = fixed_config(model, result)
    draws = getattr(result, "draws", None)
    if draws is not None and draws.info.get("gate") == "sampled":
        model, _ = sampled_gate_model(model, result.X, result.y, config)
    return LogJoint(model, result.X, result.y, config)
