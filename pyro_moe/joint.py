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

import copy
from collections.abc import Mapping

import pyro
import torch
from pyro import poutine
from pyro.distributions.transforms import biject_to
from pyro.infer import config_enumerate
from pyro.infer.mcmc.util import initialize_model
from pyro.poutine.util import site_is_subsample

from .closed_form.sites import likelihood_mismatch
from .config import Config, log_gate
from .errors import InputError, ModelFileError
from .likelihood import component_log_densities, noise_log_density
from .model_file import Model
from .parts import DATA_PLATE, EXPERTS_PLATE
from .result import FitResult

__all__ = [
    "FAST_LATENTS",
    "LogJoint",
    "cholesky",
    "expert_axes",
    "file_joint",
    "fixed_config",
    "pointwise_log_likelihood",
    "predictive_components",
    "q_draws",
]

#: Latent sites the log-sum-exp path knows (the rest need enumeration).
FAST_LATENTS = ("w", "pi", "noise_precision")
#: Observed sites of :mod:`pyro_moe.parts`: the targets (``y``, ``y_noise``) and constants.
_TARGETS = ("y", "y_noise")
_CONSTANTS = ("prior_regularization", "gate_prior")


def fixed_config(model: Model, result: FitResult) -> Config:
    """The :class:`Config` of ``result``'s hyperparameters, every one held fixed
    (``learn = {}``): w0, A, beta (E_q[beta] as the start of a latent beta), mu, Xi, the
    expert maps and the fitted gate with its noise share rho."""
    hyper = result.hyper
    X, y = result.X, result.y
    cfg = model.config(
        X,
        y,
        result.experts,
        prior_mean=hyper.prior_mean,
        prior_cov=hyper.prior_cov,
        noise_precision=hyper.noise_precision,
        concentration=hyper.concentration,
        regularization_cov=hyper.regularization_cov,
        gate_hidden=hyper.gate_hidden,
        noise_expert=result.noise_expert,
        learn="none",
        maps=hyper.maps,
        per_expert_noise=hyper.noise_precision.dim() == 1,
        noise_range=hyper.noise_bounds,
    )
    if cfg.gate is not None:
        cfg.gate = copy.deepcopy(result.gate_network())
        for p in cfg.gate.parameters():
            p.requires_grad_(False)
        cfg.noise_weight = hyper.noise_weight
    return cfg


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
        fast = set(latent) <= set(FAST_LATENTS) and "w" in latent and "z" in nodes
        fast = fast and set(observed) <= set(_TARGETS + _CONSTANTS)
        fast = fast and ("pi" in latent or config.gate is not None)
        if marginalize == "sum" and not fast:
            raise ModelFileError(
                f"model file {model.name!r} has latent sites {latent} and observed sites "
                f"{observed}: z can be summed in closed form only for latents among "
                f"{list(FAST_LATENTS)} and the observations of pyro_moe.parts; use "
                "marginalize='enumerate'"
            )
        if fast:  # the observation must be the closed form's, not just of its family
            beta = None if "noise_precision" in latent else config.noise_precision
            shape = nodes["noise_precision"]["value"].shape if beta is None else None
            self.mismatch = likelihood_mismatch(model, X, y, config, beta, latent_beta=shape)
            fast = self.mismatch is None
        else:
            self.mismatch = "its sites are not those of pyro_moe.parts"
        self.fast = fast
        if marginalize == "sum" and not fast:
            raise ModelFileError(
                f"model file {model.name!r}: z can be summed in closed form only when its "
                f"site 'y' is the closed form's Gaussian ({self.mismatch}); use "
                "marginalize='enumerate'"
            )
        self.marginalize = "sum" if marginalize == "auto" and fast else marginalize
        self._constant = sum(
            (nodes[n]["fn"].log_prob(nodes[n]["value"]).sum() for n in observed if n in _CONSTANTS),
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
        leading dim S: the terms whose log-sum-exp over c is log p(y_i | theta)."""
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
            with pyro.get_param_store().scope():
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
    ``log_likelihood`` reads the file otherwise."""
    model = result.model
    return LogJoint(model, result.X, result.y, fixed_config(model, result))


def expert_axes(result: FitResult) -> dict[str, int]:
    """For each latent site of ``result``'s model file outside :data:`FAST_LATENTS` that
    lies in the ``experts`` plate (an ARD precision alpha (K, n)), the axis of its value
    that indexes the experts, read from the plate: relabelling moves it with them."""
    model = result.model
    cfg = fixed_config(model, result)
    with pyro.get_param_store().scope(), torch.no_grad():
        trace = poutine.trace(model.model).get_trace(result.X, result.y, cfg)
    out = {}
    for name, node in trace.nodes.items():
        if node["type"] != "sample" or node["is_observed"] or name in (*FAST_LATENTS, "z"):
            continue
        for frame in node["cond_indep_stack"]:
            if frame.name == EXPERTS_PLATE and frame.dim is not None:
                out[name] = len(node["fn"].batch_shape) + frame.dim
    return out


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


def pointwise_log_likelihood(
    model: Model, X: torch.Tensor, y: torch.Tensor, config: Config, latents: Mapping
) -> torch.Tensor:
    """log p(y_i | latents) (N,) of the model file itself, z summed out: one trace of the
    file with ``latents`` conditioned and z enumerated (``poutine.enum``), the observed
    sites of the data plate (``y``, ``y_noise``, a Bernoulli or Student-t ``y`` alike)
    summed with log p(z_i = c), then log-sum-exp over c. ``y`` may be new targets at new
    rows ``X`` (a held-out score)."""
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
    total = total.reshape(-1, X.shape[0]) if total.dim() > 1 else total.reshape(1, -1)
    return torch.logsumexp(total, 0)


def cholesky(cov: torch.Tensor) -> torch.Tensor:
    """L with L L^T = cov (symmetrised; a relative jitter of 1e-12 if it is not PD)."""
    cov = 0.5 * (cov + cov.transpose(-1, -2))
    L, info = torch.linalg.cholesky_ex(cov)
    if bool((info != 0).any()):
        eye = torch.eye(cov.shape[-1], dtype=cov.dtype, device=cov.device)
        scale = cov.diagonal(dim1=-2, dim2=-1).mean(-1).clamp_min(1e-300)
        L = torch.linalg.cholesky(cov + 1e-12 * scale[..., None, None] * eye)
    return L


def q_draws(result: FitResult, sites, S: int, gen: torch.Generator) -> dict[str, torch.Tensor]:
    """S draws of each latent site from a variational fit's q: w_k ~ N(m_k, B_k),
    pi ~ Dir(alpha), beta ~ Gamma(a, b) (its point estimate where q(beta) is absent)."""
    X = result.X
    out = {}
    L = cholesky(result.cov)
    eps = torch.randn((S, *result.mean.shape), generator=gen, dtype=torch.float64).to(X)
    out["w"] = result.mean + (L @ eps.unsqueeze(-1)).squeeze(-1)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(torch.randint(2**31, (), generator=gen)))
        if "pi" in sites:
            out["pi"] = torch.distributions.Dirichlet(result.alpha).sample((S,))
        if "noise_precision" in sites:
            if result.noise_shape is not None:
                g = torch.distributions.Gamma(result.noise_shape, result.noise_rate)
                out["noise_precision"] = g.sample((S,))
            else:
                out["noise_precision"] = result.noise_precision.expand(S)
    for name in sites:  # a site the file adds (an ARD precision, tau): the fit's own draws
        if name in out:
            continue
        drawn = (result.posterior.site_draws or {}).get(name)
        if drawn is None:
            raise InputError(
                f"the fit has no draws of the model file's latent site {name!r} (only SVI "
                "keeps draws of an added site, posterior.site_draws)"
            )
        take = (
            torch.arange(S) if len(drawn) >= S else torch.randint(len(drawn), (S,), generator=gen)
        )
        out[name] = drawn[take].to(X)
    return out
