"""One result type for every engine (CAVI, SVI, NUTS): posteriors, hyperparameters, history.

The objective is the total ELBO in nats (plus the prior regularizer R(w0) for the
regularized model and the gate prior log p(V) where the model has one, reported together as
``regularizer``), so curves from CAVI and SVI on the same model and data overlay.

Saved as ``.npz`` (:meth:`FitResult.save`) with these arrays:

``X`` (N, n), ``y`` (N,), ``responsibilities`` (N, K), ``log_gate`` (N, K; gated models),
``alpha`` (K,; mixtures of models), ``mean`` (K, n), ``cov`` (K, n, n), ``prior_mean`` (K, n),
``prior_cov`` (K, n, n), ``noise_precision`` () (E[beta] when beta has a Gamma posterior,
whose ``noise_shape``/``noise_rate`` are saved too), ``concentration`` (K,),
``regularization_cov`` (n, n; regularized model), ``objective_history``, ``elbo_history``,
``time_history`` (seconds), ``maps`` (K, n+1, d; experts with their own feature maps,
:mod:`pyro_moe.experts`), ``gate/<name>`` (gate parameters), ``site_draws/<name>`` (draws
from q of a model file's other latent sites, :attr:`Posterior.site_draws`), ``draws/<name>`` (a NUTS fit's :class:`Draws`) and a JSON ``meta`` string
(method, model, iterations, wall time, converged, learn, search, ``feature_names``: the
columns' names or null, ``info``: how the engine fitted each site; a format-3 file written
before them has neither, and loads with none). A layer above the core
stores its own metadata beside it as JSON strings ``metadata/<key>``
(:meth:`FitResult.save`'s ``metadata``, read back by :func:`read_metadata`; the curve
application keeps its geometry there, :class:`pyro_moe.curves.CurveFit`).
"""

from __future__ import annotations

import copy
import json
import math
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from .checks import as_array
from .config import Config, log_gate
from .errors import InputError, ModelFileError
from .files import atomic_write, check_source
from .gate_sites import GATE_SITES, sampled_gate_model
from .likelihood import (
    FAST_LATENTS,
    closed_form_observation,
    component_log_densities,
    expert_predictive,
    noise_log_density,
    pointwise_log_likelihood,
    predictive_components,
    trace_model,
)
from .model_file import Model, ModelText, model_for_result
from .parts import DATA_PLATE, EXPERTS_PLATE


@dataclass
class Prediction:
    """Posterior predictive of y at new rows x (a mixture of Gaussians over experts).

    Expert k predicts N(m_k^T x, 1/beta + x^T B_k x); with weights g_k(x) the mixture has
    mean sum_k g_k mu_k and variance sum_k g_k (s_k^2 + mu_k^2) - mean^2. A noise expert adds
    a component Uniform(lo, hi) with its weight g_0(x) (mean (lo+hi)/2, second moment
    (lo^2 + lo hi + hi^2)/3).
    """

    mean: torch.Tensor  # (N,)
    variance: torch.Tensor  # (N,)
    expert_weights: torch.Tensor  # (N, K)
    expert_means: torch.Tensor  # (N, K)
    expert_variances: torch.Tensor  # (N, K)
    noise_weight: torch.Tensor | None = None  # (N,) weight of the noise expert
    noise_bounds: torch.Tensor | None = None  # (lo, hi) of its uniform density
    #: the model file's likelihood when it is not the closed form's Gaussian (e.g.
    #: "StudentT", "Bernoulli"): mean and variance are then Monte Carlo moments over draws
    #: of the posterior, and :meth:`log_prob` reads the file (``log_density``)
    likelihood: str = "Normal"
    log_density: Callable[[torch.Tensor], torch.Tensor] | None = field(default=None, repr=False)

    def log_prob(self, y) -> torch.Tensor:
        """log p(y_i | x_i, data) (N,): the posterior predictive log density of held-out
        targets, from the model file's own likelihood, mixed over the experts by the gate
        (or E[pi]) and over the posterior.

        For the closed-form Gaussian, log sum_k g_k N(y_i | mu_ik, s_ik^2) (+ g_0 / (hi - lo)
        inside the noise expert's range) with the experts' predictive moments; otherwise
        log (1/S) sum_s sum_c g_c(x_i) p(y_i | z_i = c, theta_s) over S draws theta_s of the
        posterior, the file's own density of y (``FitResult.predict(draws=, seed=)``)."""
        y = torch.as_tensor(y, dtype=self.mean.dtype, device=self.mean.device)
        if y.shape != self.mean.shape:
            raise InputError(f"y must have shape {tuple(self.mean.shape)}, got {tuple(y.shape)}")
        if self.log_density is not None:
            return self.log_density(y)
        var = self.expert_variances
        log_n = -0.5 * (
            math.log(2 * math.pi) + var.log() + (y.unsqueeze(-1) - self.expert_means) ** 2 / var
        )
        terms = torch.log(self.expert_weights) + log_n
        if self.noise_weight is not None:
            lo, hi = self.noise_bounds.unbind(-1)
            inside = (y >= lo) & (y <= hi)
            log_u = torch.where(inside, -torch.log(hi - lo), -torch.inf)
            terms = torch.cat([terms, (torch.log(self.noise_weight) + log_u).unsqueeze(-1)], -1)
        return torch.logsumexp(terms, -1)

    def _gaussian(self, what: str) -> None:
        if self.likelihood != "Normal":
            raise InputError(
                f"{what} needs the mixture of Gaussians of the closed form; this model file's "
                f"'y' is {self.likelihood}: use mean, variance and log_prob"
            )

    def interval(self, level: float = 0.95) -> torch.Tensor:
        """Central prediction interval of the mixture, (N, 2), from mixture quantiles.

        Quantiles are found by bisection on the mixture CDF (exact up to 1e-10 in y).
        """
        self._gaussian("interval")
        if not 0 < level < 1:
            raise InputError(f"level must be in (0, 1), got {level}")
        sd = self.expert_variances.sqrt()
        lo_q, hi_q = (1 - level) / 2, (1 + level) / 2
        lo = (self.expert_means - 10 * sd).min(-1).values
        hi = (self.expert_means + 10 * sd).max(-1).values
        if self.noise_weight is not None:
            lo = lo.clamp(max=float(self.noise_bounds[0]))
            hi = hi.clamp(min=float(self.noise_bounds[1]))
        out = []
        for q in (lo_q, hi_q):
            a, b = lo.clone(), hi.clone()
            for _ in range(80):
                mid = 0.5 * (a + b)
                cdf = self.cdf(mid)
                below = cdf < q
                a = torch.where(below, mid, a)
                b = torch.where(below, b, mid)
            out.append(0.5 * (a + b))
        return torch.stack(out, -1)

    def cdf(self, y: torch.Tensor) -> torch.Tensor:
        """The predictive CDF at y (one value per row)."""
        self._gaussian("cdf")
        z = (y.unsqueeze(-1) - self.expert_means) / self.expert_variances.sqrt()
        out = (self.expert_weights * _normal_cdf(z)).sum(-1)
        if self.noise_weight is not None:
            lo, hi = self.noise_bounds.unbind(-1)
            out = out + self.noise_weight * ((y - lo) / (hi - lo)).clamp(0, 1)
        return out


def _unwrap(fn):
    """The distribution inside ``.to_event``, ``.expand``, ``.mask`` wrappers."""
    while hasattr(fn, "base_dist"):
        fn = fn.base_dist
    return fn


def _normal_cdf(z: torch.Tensor) -> torch.Tensor:
    return 0.5 * (1 + torch.erf(z / math.sqrt(2)))


# ---------------------------------------------------------------- the parts of a result
def _permute_site_params(p: dict[str, torch.Tensor], idx: torch.Tensor, K: int, axis: int):
    """q's parameters of a per-expert site reordered with the experts: those shaped like
    the site along ``axis``; a flattened covariance 'cov' of a site (K, ...) (axis 0) by
    blocks of its K equal parts."""
    out = {k: _permute_rows(v, idx, K, axis) for k, v in p.items() if k != "cov"}
    if "cov" in p:
        cov = p["cov"]
        if axis == 0 and cov.shape[0] % K == 0:
            size = cov.shape[0] // K
            full = idx.to(cov.device)[:, None] * size + torch.arange(size, device=cov.device)
            full = full.reshape(-1)
            cov = cov.index_select(0, full).index_select(1, full)
        out["cov"] = cov
    return out


def _permute_rows(t: torch.Tensor | None, idx: torch.Tensor, K: int, dim: int = 0):
    """``t`` with its K expert entries along ``dim`` reordered by ``idx``; an entry past K
    along that dim (the noise expert, last) stays last. Tensors without K (or K + 1)
    entries there (a prior shared by all experts) are returned unchanged."""
    if t is None or t.dim() <= dim or t.shape[dim] not in (K, K + 1):
        return t
    full = idx if t.shape[dim] == K else torch.cat([idx, idx.new_tensor([K])])
    return t.index_select(dim, full.to(t.device))


@dataclass
class Posterior:
    """The variational posterior q(Z) q(W) [q(pi)] [q(beta)].

    Attributes:
        responsibilities: r (N, C), q(z_i = k); C = K, or K + 1 with the noise expert last.
        mean, cov: m (K, n) and B (K, n, n) of q(w_k) = N(m_k, B_k).
        alpha: (C,) of q(pi) = Dir(alpha) (mixtures of models), else None.
        noise_shape, noise_rate: (a, b) of q(beta) = Gamma(a, b) when beta is latent.
        site_draws: draws (S, *site shape) from the guide's q of every other latent site
            of a model file (an added scale tau, ...), by site name, else None (SVI; saved
            as ``site_draws/<name>``); a site in the ``experts`` plate (an ARD precision
            per expert) is relabelled with the experts by :meth:`FitResult.permuted`.
    """

    responsibilities: torch.Tensor
    mean: torch.Tensor
    cov: torch.Tensor
    alpha: torch.Tensor | None = None
    noise_shape: torch.Tensor | None = None
    noise_rate: torch.Tensor | None = None
    site_draws: dict[str, torch.Tensor] | None = field(default=None, repr=False)
    #: q of each conjugate hyperprior site a closed-form fit derived (an ARD precision:
    #: {'shape', 'rate'}; a Gaussian prior mean: {'loc', 'cov'}), by site name, else None
    #: (in memory only: a saved result keeps its draws)
    site_params: dict[str, dict[str, torch.Tensor]] | None = field(default=None, repr=False)

    def permuted(self, idx: torch.Tensor, site_axes: dict[str, int] | None = None) -> Posterior:
        """The experts reordered by ``idx``; ``site_axes``: the expert axis of each
        per-expert site of ``site_draws`` (of its value, the draws' axis not counted)."""
        K = self.mean.shape[0]
        sites = self.site_draws
        if sites and site_axes:
            sites = {
                n: _permute_rows(v, idx, K, site_axes[n] + 1) if n in site_axes else v
                for n, v in sites.items()
            }
        params = self.site_params
        if params and site_axes:
            params = {
                n: _permute_site_params(p, idx, K, site_axes[n]) if n in site_axes else p
                for n, p in params.items()
            }
        return replace(
            self,
            site_draws=sites,
            site_params=params,
            responsibilities=_permute_rows(self.responsibilities, idx, K, 1),
            mean=_permute_rows(self.mean, idx, K),
            cov=_permute_rows(self.cov, idx, K),
            alpha=_permute_rows(self.alpha, idx, K),
            noise_shape=_permute_rows(self.noise_shape, idx, K),
            noise_rate=_permute_rows(self.noise_rate, idx, K),
        )


@dataclass
class Hyperparameters:
    """Point estimates and fixed values of the fit's hyperparameters and settings.

    Attributes:
        prior_mean, prior_cov: w0 (K, n) and A (K, n, n).
        noise_precision: beta (), or beta_k (K,) with one per expert (E_q[beta] when beta
            has a Gamma posterior).
        concentration: mu (C,) of the Dirichlet prior.
        regularization_cov: Xi (n, n) of the regularized model, else None.
        noise_bounds: (lo, hi) of the noise expert's uniform density, or None.
        noise_weight: rho, the noise share of a gated model with the noise expert.
        gate_state: the gate's fitted parameters (``state_dict``), gated models only.
        gate_hidden: the hidden width the gate is rebuilt with from the model file.
        gate_prior_scale: s of the gate prior N(0, s^2) the fit used, None without one.
        maps: (K, n + 1, d) each expert's own features and target, or None.
    """

    prior_mean: torch.Tensor
    prior_cov: torch.Tensor
    noise_precision: torch.Tensor
    concentration: torch.Tensor
    regularization_cov: torch.Tensor | None = None
    noise_bounds: torch.Tensor | None = None
    noise_weight: torch.Tensor | None = None
    gate_state: dict[str, torch.Tensor] | None = None
    gate_hidden: int | None = None
    maps: torch.Tensor | None = None
    gate_prior_scale: float | None = None

    def permuted(self, idx: torch.Tensor) -> Hyperparameters:
        K = self.prior_mean.shape[0]
        gate_state = self.gate_state
        if gate_state is not None:
            # the gate's output layer is the last weight/bias pair with K rows
            names = [n for n, v in gate_state.items() if v.dim() >= 1 and v.shape[0] == K]
            last = {n for n in names if n.rsplit(".", 1)[0] == names[-1].rsplit(".", 1)[0]}
            gate_state = {
                n: v.index_select(0, idx.to(v.device)) if n in last else v.clone()
                for n, v in gate_state.items()
            }
        return replace(
            self,
            prior_mean=_permute_rows(self.prior_mean, idx, K),
            prior_cov=_permute_rows(self.prior_cov, idx, K),
            noise_precision=_permute_rows(self.noise_precision, idx, K),
            concentration=_permute_rows(self.concentration, idx, K),
            maps=_permute_rows(self.maps, idx, K),
            gate_state=gate_state,
        )


@dataclass
class History:
    """The objective F and ELBO (total nats) per iteration, the seconds since the start
    of the kept restart, its iteration count, the whole fit's wall time, convergence."""

    objective: torch.Tensor
    elbo: torch.Tensor
    time: torch.Tensor
    iterations: int
    wall_time: float
    converged: bool


@dataclass
class Draws:
    """Posterior draws of an MCMC engine (``method="nuts"``) and its sampler statistics,
    each (chain, draw, ...), experts aligned to the CAVI fit's.

    Attributes:
        w: (chain, draw, K, n) expert weights.
        pi: (chain, draw, C) mixture weights (mixtures of models), else None.
        beta: (chain, draw) noise precision when beta is latent, else None.
        diverging: (chain, draw) divergent transitions.
        tree_depth, n_steps: (chain, draw) NUTS tree depth and leapfrog steps.
        step_size: (chain,) the adapted step size.
        log_joint: (chain, draw) log p(y, theta | h), z summed out.
        relabelled: draws whose experts were relabelled to match the CAVI fit's.
        info: how they were drawn (hyperparameters, marginalisation, warm-up, ...).
    """

    w: torch.Tensor
    pi: torch.Tensor | None
    beta: torch.Tensor | None
    diverging: torch.Tensor
    tree_depth: torch.Tensor
    n_steps: torch.Tensor
    step_size: torch.Tensor
    log_joint: torch.Tensor
    relabelled: int = 0
    info: dict[str, Any] = field(default_factory=dict)

    def permuted(self, idx: torch.Tensor) -> Draws:
        K = self.w.shape[2]
        return replace(
            self, w=_permute_rows(self.w, idx, K, 2), pi=_permute_rows(self.pi, idx, K, 2)
        )


#: the arrays of :class:`Draws`, saved as ``draws/<name>``
_DRAWS = ("w", "pi", "beta", "diverging", "tree_depth", "n_steps", "step_size", "log_joint")


def expert_alignment(reference: torch.Tensor, other: torch.Tensor) -> list[int]:
    """perm with other[perm[k]] matched to reference[k]: the permutation minimising
    sum_k ||reference_k - other_perm(k)||^2 (Hungarian algorithm,
    :func:`scipy.optimize.linear_sum_assignment`), for means of the same shape (K, n)."""
    a = _np(reference).astype(float)
    b = _np(other).astype(float)
    if a.shape != b.shape:
        raise InputError(
            f"cannot align experts of results with shapes {a.shape} and {b.shape} "
            "(same K and features needed)"
        )
    cost = ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)
    rows, cols = linear_sum_assignment(cost)
    return [int(c) for _, c in sorted(zip(rows, cols, strict=True))]


def _forward(part: str, name: str, doc: str = ""):
    """A read-only attribute of the result that reads ``result.<part>.<name>``."""

    def get(self):
        return getattr(getattr(self, part), name)

    return property(get, doc=doc or f"``{part}.{name}``")


@dataclass(eq=False)
class FitResult:
    """The result of every engine: the posterior, the hyperparameters, the history.

    Attributes:
        method: the engine ("cavi", "svi").
        model_name, model_path: the model file fitted.
        X, y: the design and targets the engines saw.
        posterior: :class:`Posterior`, q(Z) q(W), with q(pi) and q(beta) where the model has them.
        hyper: :class:`Hyperparameters`, point estimates and fixed values.
        history: :class:`History` of the kept restart.
        learn: the point-estimated hyperparameters.
        restarts: one summary per restart (init, seed, objective, iterations, converged).
        search: what the search over fixed points did (:mod:`pyro_moe.search`: refits
            tried, moves accepted, the objective before and after), or None.
        draws: :class:`Draws` of an MCMC engine (NUTS), else None.
        feature_names: the names of the n columns of X (a DataFrame's columns, a CSV
            header), else None; the summary, the saved file and ArviZ's ``feature``
            coordinate carry them.
        info: how the fit was made, by the engine: ``info["steps"]`` (SVI) maps each latent
            site to the step that fitted it (``"natural"``, ``"cvi"``, ``"adam"``,
            ``"enumerated"`` or ``"closed form"`` for z).

    The posterior's and hyperparameters' fields read directly too (``result.mean``,
    ``result.noise_precision``, ...). The gate of a gated model is rebuilt from the model
    file once, when first needed (or handed over by the engine), and cached.
    """

    method: str
    model_name: str
    model_path: str
    X: torch.Tensor
    y: torch.Tensor
    posterior: Posterior
    hyper: Hyperparameters
    history: History
    learn: tuple[str, ...] = ()
    restarts: list[dict[str, Any]] = field(default_factory=list)
    search: dict[str, Any] | None = None
    gate: torch.nn.Module | None = field(default=None, repr=False)
    draws: Draws | None = field(default=None, repr=False)
    model_text: ModelText | None = field(default=None, repr=False)
    feature_names: tuple[str, ...] | None = None
    info: dict[str, Any] = field(default_factory=dict)

    responsibilities = _forward("posterior", "responsibilities")
    mean = _forward("posterior", "mean")
    cov = _forward("posterior", "cov")
    alpha = _forward("posterior", "alpha")
    noise_shape = _forward("posterior", "noise_shape")
    noise_rate = _forward("posterior", "noise_rate")
    prior_mean = _forward("hyper", "prior_mean")
    prior_cov = _forward("hyper", "prior_cov")
    noise_precision = _forward("hyper", "noise_precision")
    concentration = _forward("hyper", "concentration")
    regularization_cov = _forward("hyper", "regularization_cov")
    noise_bounds = _forward("hyper", "noise_bounds")
    noise_weight = _forward("hyper", "noise_weight")
    gate_state = _forward("hyper", "gate_state")
    gate_hidden = _forward("hyper", "gate_hidden")
    maps = _forward("hyper", "maps")
    objective_history = _forward("history", "objective")
    elbo_history = _forward("history", "elbo")
    time_history = _forward("history", "time")
    iterations = _forward("history", "iterations")
    wall_time = _forward("history", "wall_time")
    converged = _forward("history", "converged")

    def __post_init__(self) -> None:
        self._log_gate: torch.Tensor | None = None
        self._model: Model | None = None
        self._fast: bool | None = None  # the file's likelihood is the closed form's
        self._sites: list[str] = []  # its continuous latent sites
        self._local: list[str] = []  # those of them in the data plate (one per point)

    # ---- the model file ----------------------------------------------------------------
    def attach_model(self, model: Model) -> FitResult:
        """Carry the loaded model file this result was fitted with (``fit`` does it): the
        gate, predictions and k-hat use it, never the file on disk again."""
        self._model = model
        self.model_text = model.text
        return self

    @property
    def model(self) -> Model:
        """The model file fitted: the one loaded for the fit, or for a loaded result the
        file given to :meth:`load` (checked against the recorded digest) or the built-in
        model of that name and digest (:func:`pyro_moe.model_file.model_for_result`: a
        saved result never makes pyro_moe run a file it names)."""
        if self._model is None:
            self._model = model_for_result(self.model_text, self.model_name, self.model_path)
        return self._model

    # ---- summaries ---------------------------------------------------------------------
    @property
    def experts(self) -> int:
        return self.mean.shape[0]

    @property
    def objective(self) -> float:
        """Final objective F = ELBO (+ R(w0) for the regularized model) (+ log p(V) with a
        gate prior), in nats."""
        return float(self.objective_history[-1])

    @property
    def elbo(self) -> float:
        """Final ELBO in nats (without the regularizer and the gate prior)."""
        return float(self.elbo_history[-1])

    @property
    def regularizer(self) -> float:
        """F - ELBO: R(w0) (regularized model) plus log p(V) (gate prior), in nats."""
        return self.objective - self.elbo

    @property
    def noise_expert(self) -> bool:
        return self.noise_bounds is not None

    @property
    def outliers(self) -> torch.Tensor:
        """Boolean mask (N,): points most responsibly explained by the noise expert."""
        if not self.noise_expert:
            return torch.zeros(len(self.y), dtype=torch.bool, device=self.y.device)
        return self.responsibilities.argmax(-1) == self.experts

    @property
    def weights(self) -> torch.Tensor:
        """Mixture weights (C,): E_q[pi] or the average responsibility; noise expert last."""
        if self.alpha is not None:
            return self.alpha / self.alpha.sum()
        return self.responsibilities.mean(0)

    def summary(self) -> str:
        """The fit in a few lines: the engine, the objective (a NUTS fit's log joint, not an
        ELBO, and the fit that set its hyperparameters), the step that fitted each latent
        site (``info["steps"]``), and each expert's posterior mean weights by feature name
        (:attr:`feature_names`, else ``w0, w1, ...``)."""
        lines = [
            f"{self.method.upper()} fit of {self.model_name!r}: K={self.experts}, N={len(self.y)}",
            f"  objective {self.objective:.6g} nats (ELBO {self.elbo:.6g}), "
            f"{self.iterations} iterations, {self.wall_time:.3g} s, converged={self.converged}",
        ]
        if self.draws is not None:  # a sampler: its history is the log joint, not an ELBO
            lp = self.draws.log_joint
            lines[1] = (
                f"  log joint log p(y, theta | h) {float(lp.mean()):.6g} nats (mean over "
                f"{lp.numel()} draws; not an ELBO), {self.wall_time:.3g} s, "
                f"converged={self.converged}"
            )
            source = self.draws.info.get("hyper_method")
            if source is not None:
                lines.append(
                    f"  hyperparameters fixed at the {source} fit's values (objective "
                    f"{self.draws.info.get('hyper_objective', float('nan')):.6g} nats)"
                )
        steps = self.info.get("steps")
        if steps:
            lines.append("  steps: " + ", ".join(f"{n} {how}" for n, how in steps.items()))
        names = self.weight_names()
        for k in range(self.experts):
            lines.append(
                f"  expert {k}: "
                + ", ".join(f"{n} {float(v):.4g}" for n, v in zip(names, self.mean[k], strict=True))
            )
        return "\n".join(lines)

    def weight_names(self, names: Sequence[str] | None = None) -> list[str]:
        """The names of each expert's n weights: ``names`` (default :attr:`feature_names`;
        a layer's own, such as a curve design's monomials) when they are n, else ``w0, w1,
        ...`` (ArviZ's ``feature`` coordinate, the summary)."""
        n = self.mean.shape[-1]
        names = list((self.feature_names if names is None else names) or ())
        return names if len(names) == n else [f"w{j}" for j in range(n)]

    def to_inference_data(self, *, draws: int = 1000, seed: int = 0):
        """This fit as an :class:`arviz.InferenceData`: ``draws`` draws from q (a NUTS fit:
        its own draws) under ``seed``, the pointwise log-likelihood of the model file, the
        data and the point estimates (:mod:`pyro_moe.inference_data`, the one writer; the
        same as :func:`pyro_moe.diagnostics.to_inference_data`)."""
        from .inference_data import to_inference_data  # arviz: imported on first use

        return to_inference_data(self, draws=draws, seed=seed)

    # ---- relabelling -------------------------------------------------------------------
    def permuted(self, perm: Sequence[int]) -> FitResult:
        """A copy with the experts reordered: new expert k = old expert perm[k].

        Every per-expert quantity moves with its expert: the responsibilities (the noise
        expert's column stays last), q(W), q(pi), the priors, the expert maps, the gate's
        output layer, the draws of a site the model file adds in the ``experts`` plate.
        """
        K = self.experts
        perm = [int(p) for p in perm]
        if sorted(perm) != list(range(K)):
            raise InputError(f"{perm} is not a permutation of the {K} experts")
        idx = torch.as_tensor(perm, dtype=torch.long, device="cpu")
        axes = None
        if self.posterior.site_draws:  # an added per-expert site moves with its expert
            axes = expert_axes(self)
        out = replace(
            self,
            posterior=self.posterior.permuted(idx, axes),
            hyper=self.hyper.permuted(idx),
            gate=None,
            draws=self.draws.permuted(idx) if self.draws is not None else None,
        )
        out._model = self._model
        if self.gate is not None and out.gate_state is not None:
            out.gate = copy.deepcopy(self.gate)
            out.gate.load_state_dict(out.gate_state)
        return out

    def aligned_to(self, reference: FitResult) -> FitResult:
        """This result with its experts relabelled to match ``reference``'s
        (:func:`expert_alignment` of the posterior means); itself when already aligned."""
        perm = expert_alignment(reference.mean, self.mean)
        return self if perm == list(range(len(perm))) else self.permuted(perm)

    # ---- the gate and prediction -------------------------------------------------------
    def gate_network(self) -> torch.nn.Module | None:
        """The gate with its fitted parameters (gated models): the engine's own, or rebuilt
        from the model file once (after :meth:`load`), then cached."""
        if self.gate_state is None:
            return None
        if self.gate is None:
            try:
                model = self.model
            except ModelFileError as e:
                raise InputError(f"cannot rebuild the gate: {e}") from e
            with torch.device(self.X.device):  # built where the data are, then overwritten
                gate = model.make_gate(self.X.shape[1], self.experts, self.gate_hidden)
            gate = gate.to(dtype=self.X.dtype)
            try:
                gate.load_state_dict({k: v.to(self.X.dtype) for k, v in self.gate_state.items()})
            except RuntimeError as e:
                raise InputError(
                    f"the saved gate does not fit the gate of model file {model.path}: "
                    + " ".join(str(e).split())[:300]
                ) from e
            self.gate = gate
        return self.gate

    @property
    def log_gate(self) -> torch.Tensor | None:
        """log g(x_i) (N, C) at the fitted points (gated models; noise expert last)."""
        if self.gate_state is None:
            return None
        if self._log_gate is None:
            self._log_gate = self._log_expert_weights(self.X)
        return self._log_gate

    def _log_expert_weights(self, X: torch.Tensor) -> torch.Tensor:
        gate = self.gate_network()
        with torch.no_grad():
            return log_gate(gate, X, self.noise_weight)

    def expert_weights(self, X: torch.Tensor) -> torch.Tensor:
        """g_k(x) (N, C) for rows of X: the gate's softmax, or E_q[pi]; noise expert last."""
        if self.gate_state is None:
            return self.weights.expand(X.shape[0], -1)
        return self._log_expert_weights(X).exp()

    def predict(self, X, *, draws: int = 1000, seed: int = 0) -> Prediction:
        """Posterior predictive mean and variance at the rows of X (a mixture over experts),
        from the model file's own likelihood.

        For the closed form's Gaussian likelihood (the built-in files), in closed form.
        For any other likelihood the file writes (Student-t, Bernoulli, an edited mean),
        by Monte Carlo over ``draws`` draws of the posterior (q's, or a NUTS fit's draws;
        ``seed``): each expert's mean and variance of y are the file's own distribution's
        (``.mean``, ``.variance``: probabilities for Bernoulli experts, not logits), and
        :meth:`Prediction.log_prob` the file's density. X must be real and finite
        (:func:`pyro_moe.checks.as_array`), shape (N, n)."""
        X = as_array("X", X, dtype=self.X.dtype, device=self.X.device)
        if X.dim() != 2 or X.shape[1] != self.X.shape[1]:
            raise InputError(f"X must have shape (N, {self.X.shape[1]}), got {tuple(X.shape)}")
        if not self._closed_form_likelihood():
            return self._predict_from_file(X, int(draws), int(seed))
        g = self.expert_weights(X)
        K = self.experts
        mu, var = expert_predictive(X, self.mean, self.cov, self.noise_precision, self.maps)
        mean = (g[:, :K] * mu).sum(-1)
        second = (g[:, :K] * (var + mu * mu)).sum(-1)
        g0 = None
        if self.noise_expert:
            g0 = g[:, K]
            lo, hi = self.noise_bounds.unbind(-1)
            mean = mean + g0 * (lo + hi) / 2
            second = second + g0 * (lo * lo + lo * hi + hi * hi) / 3
        variance = (second - mean * mean).clamp_min(0)
        return Prediction(mean, variance, g[:, :K], mu, var, g0, self.noise_bounds)

    def _closed_form_likelihood(self) -> bool:
        """Whether the model file's observation is the closed form's Gaussian
        (:func:`pyro_moe.likelihood.closed_form_observation`), read once per result."""
        if self._fast is None:
            try:
                model = self.model
            except ModelFileError as e:
                raise InputError(f"predict reads the model file's likelihood: {e}") from e
            cfg = fixed_config(model, self)
            self._sites, why = closed_form_observation(model, self.X, self.y, cfg)
            self._fast = why is None
            if not self._fast:  # a per-point latent (a robust file's lambda_i)
                nodes = trace_model(model, self.X, self.y, cfg).nodes
                self._local = [
                    n
                    for n in self._sites
                    if any(f.name == DATA_PLATE for f in nodes[n]["cond_indep_stack"])
                ]
        return self._fast

    def pointwise_log_likelihood(self, theta: Mapping[str, torch.Tensor | None]) -> torch.Tensor:
        """log p(y_i | theta_s) (S, N) at S draws of the latent sites, z summed out, from
        the model file's own likelihood: ``theta`` holds ``w`` (S, K, n), ``pi`` (S, C) or
        None, ``noise_precision`` (S,) or (S, K) (a point estimate repeated where beta is
        not latent) and every site the file adds.

        For the closed form's Gaussian, log sum_c g_ic N(y_i | w_c^T x_i, 1/beta) (+ the
        noise expert's g_i0 / (hi - lo)), g the drawn pi or the fitted gate
        (:func:`pyro_moe.likelihood.component_log_densities`); for any other likelihood the
        file itself through Pyro, one trace per draw with z enumerated
        (:func:`pyro_moe.likelihood.pointwise_log_likelihood`); for a NUTS fit that sampled
        the gate, the file with each draw's gate (:func:`pyro_moe.gate_sites.sampled_gate_model`,
        ``theta`` holding ``gate_weights`` and ``gate_biases``)."""
        X, y = self.X, self.y
        fast = self._closed_form_likelihood()
        gate_sampled = self.draws is not None and self.draws.info.get("gate") == "sampled"
        if gate_sampled or not fast:
            model, sites = self.model, list(self._sites)
            if self._local:
                raise InputError(
                    f"the model file's per-point latent site(s) {self._local} would have to be "
                    "integrated out of each draw's pointwise log-likelihood, which is not "
                    "implemented; predict(X).log_prob(y) draws them from their prior"
                )
            cfg = fixed_config(model, self)
            if gate_sampled:  # each draw's own gate: its parameters are latent sites
                model, _ = sampled_gate_model(model, X, y, cfg)
                sites += [n for n in GATE_SITES if n not in sites]
            missing = [n for n in sites if theta.get(n) is None]
            if missing:
                raise InputError(
                    f"the fit has no draws of the model file's latent site(s) {missing}, so "
                    "its pointwise log-likelihood cannot be evaluated"
                )
            S = theta[sites[0]].shape[0]
            return torch.stack(
                [
                    pointwise_log_likelihood(
                        model, X, y, cfg, {n: theta[n][s].to(X) for n in sites}
                    )
                    for s in range(S)
                ]
            )
        pi = theta.get("pi")
        if pi is not None:
            log_g = torch.log(pi.to(X).clamp_min(1e-300)).unsqueeze(-2)  # (S, 1, C)
        elif self.log_gate is not None:
            log_g = self.log_gate.to(X)
        else:
            log_g = torch.log(self.expert_weights(X).clamp_min(1e-300))
        log_dens = component_log_densities(
            X, y, theta["w"].to(X), theta["noise_precision"].to(X), self.maps,
            noise_log_density(self.noise_bounds),
        )  # (S, N, C)  # fmt: skip
        return torch.logsumexp(log_g + log_dens, -1)

    def site_expert_axes(self) -> dict[str, int]:
        """The expert axis of each per-expert site the model file adds
        (:func:`expert_axes`)."""
        return expert_axes(self)

    def _posterior_draws(self, sites, S: int, seed: int) -> dict[str, torch.Tensor]:
        """S draws of the latent sites: a NUTS fit's own draws, else q's."""
        gen = torch.Generator(device="cpu").manual_seed(seed)
        if self.draws is None:
            return q_draws(self, sites, S, gen)
        d = self.draws
        have = {"w": d.w, "pi": d.pi, "noise_precision": d.beta}
        out = {}
        for name in sites:
            if have.get(name) is None:
                raise InputError(f"the NUTS fit has no draws of the model file's site {name!r}")
            flat = have[name].reshape(-1, *have[name].shape[2:])
            take = torch.randint(len(flat), (S,), generator=gen)
            out[name] = flat[take].to(self.X)
        return out

    def _predict_from_file(self, X: torch.Tensor, S: int, seed: int) -> Prediction:
        """:meth:`predict` by Monte Carlo from the model file (its docstring)."""
        if S < 1:
            raise InputError(f"draws must be at least 1, got {S}")
        model = self.model
        cfg = fixed_config(model, self)
        # a per-point latent (a robust file's lambda_i) is drawn from its prior at the new
        # rows by the trace, fresh in each of the S draws: the predictive integrates it out
        sites = [n for n in self._sites if n not in self._local]
        theta = self._posterior_draws(sites, S, seed)
        fill = self.y[:1].expand(X.shape[0])  # a value in the support of y
        K = self.experts
        log_gs, fns = [], []
        for s in range(S):
            log_g, fn = predictive_components(model, X, fill, cfg, {n: theta[n][s] for n in sites})
            log_gs.append(log_g[:K].transpose(0, 1))  # (N, K)
            fns.append(fn)
        log_g = torch.stack(log_gs)  # (S, N, K)
        mu = torch.stack([fn.mean.expand(K, X.shape[0]).transpose(0, 1) for fn in fns])
        second = torch.stack(
            [(fn.variance + fn.mean**2).expand(K, X.shape[0]).transpose(0, 1) for fn in fns]
        )
        g = log_g.exp()
        mean = (g * mu).sum(-1).mean(0)
        variance = ((g * second).sum(-1).mean(0) - mean**2).clamp_min(0)
        gk = g.mean(0)
        e_mu = (g * mu).mean(0) / gk
        e_var = ((g * second).mean(0) / gk - e_mu**2).clamp_min(0)

        def log_density(y: torch.Tensor) -> torch.Tensor:
            terms = torch.stack(
                [
                    torch.logsumexp(log_gs[s] + fn.log_prob(y).transpose(0, 1)[:, :K], -1)
                    for s, fn in enumerate(fns)
                ]
            )
            return torch.logsumexp(terms, 0) - math.log(S)

        name = type(_unwrap(fns[0])).__name__
        if self._local:  # not the Gaussian: interval and cdf refuse it
            name = f"{name} mixed over {', '.join(self._local)}"
        return Prediction(mean, variance, gk, e_mu, e_var, likelihood=name, log_density=log_density)

    # ---- persistence -------------------------------------------------------------------
    def save(self, path: str | Path, *, metadata: dict[str, Any] | None = None) -> Path:
        """Write a ``.npz`` (see the module docstring), atomically
        (:func:`pyro_moe.files.atomic_write`). ``metadata``: key -> a JSON-able value that a
        layer above the core keeps with the result (saved as ``metadata/<key>``, read back by
        :func:`read_metadata`; :meth:`load` leaves them alone)."""
        arrays: dict[str, np.ndarray] = {"X": _np(self.X), "y": _np(self.y)}
        for part, names in _PARTS.items():
            for name in names:
                value = getattr(getattr(self, part), name)
                if value is not None:
                    arrays[name] = _np(value)
        for key, name in _HISTORY.items():
            arrays[key] = _np(getattr(self.history, name))
        if self.log_gate is not None:
            arrays["log_gate"] = _np(self.log_gate)
        for name, value in (self.gate_state or {}).items():
            arrays[f"gate/{name}"] = _np(value)
        for name, value in (self.posterior.site_draws or {}).items():
            arrays[f"site_draws/{name}"] = _np(value)
        if self.draws is not None:
            for name in _DRAWS:
                if getattr(self.draws, name) is not None:
                    arrays[f"draws/{name}"] = _np(getattr(self.draws, name))
        meta = {
            "format": FORMAT,
            "method": self.method,
            "model_name": self.model_name,
            "model_path": self.model_path,
            "model_text": None if self.model_text is None else self.model_text.text,
            "model_sha256": None if self.model_text is None else self.model_text.sha256,
            "iterations": self.iterations,
            "wall_time": self.wall_time,
            "converged": self.converged,
            "learn": list(self.learn),
            "gate_hidden": self.gate_hidden,
            "gate_prior_scale": self.hyper.gate_prior_scale,
            "restarts": self.restarts,
            "search": self.search,
            "feature_names": None if self.feature_names is None else list(self.feature_names),
            "info": self.info,
        }
        if self.draws is not None:
            meta["draws"] = {"relabelled": self.draws.relabelled, "info": self.draws.info}
        arrays["meta"] = np.array(json.dumps(meta, default=_jsonable))
        for key, value in (metadata or {}).items():
            arrays[f"{_METADATA}{key}"] = np.array(json.dumps(value, default=_jsonable))

        def write(tmp: Path) -> None:
            with open(tmp, "wb") as fh:
                np.savez(fh, **arrays)

        return atomic_write(path, write)

    @classmethod
    def load(cls, path: str | Path, *, model: str | Path | Model | None = None) -> FitResult:
        """Read a result written by :meth:`save`; anything else is an :class:`InputError`.

        Loading never runs code. The result carries the text and SHA-256 of the model file
        it was fitted with; what needs the file (a gated result's gate, k-hat) uses
        ``model`` (a name, a path or a loaded :class:`~pyro_moe.model_file.Model`) when its
        text has that digest (else a :class:`~pyro_moe.errors.ModelFileError`, and the file
        is not run), or the built-in model file of that name and digest; never a file the
        archive itself names.
        """
        try:
            if isinstance(path, str | Path):  # a FIFO would block np.load forever
                check_source(path, "file")
            with np.load(path, allow_pickle=False) as data:
                meta = json.loads(str(data["meta"]))
                if not isinstance(meta, dict):
                    raise InputError(f"its metadata is a JSON {type(meta).__name__}, not an object")
                if meta.get("format") not in (2, FORMAT):
                    raise InputError(
                        f"unknown format {meta.get('format')!r} (this version reads 2 and {FORMAT})"
                    )
                arrays = {
                    k: _loaded(data[k])
                    for k in data.files
                    if k != "meta" and not k.startswith(_METADATA)
                }
            written = _text_of(meta)
            # the design and targets as floats (an integer X saved by hand, too)
            kw = {k: arrays[k].to(torch.float64) if not arrays[k].is_floating_point()
                  else arrays[k] for k in ("X", "y")}  # fmt: skip
            parts = {
                part: {n: arrays[n] for n in names if n in arrays} for part, names in _PARTS.items()
            }
            gate = {k[5:]: v for k, v in arrays.items() if k.startswith("gate/")} or None
            sites = {k[11:]: v for k, v in arrays.items() if k.startswith("site_draws/")}
            draws = None
            if "draws" in meta:
                draws = Draws(**{n: arrays.get(f"draws/{n}") for n in _DRAWS}, **meta["draws"])
            result = cls(
                **kw,
                method=meta["method"],
                model_name=meta["model_name"],
                model_path=meta["model_path"],
                posterior=Posterior(**parts["posterior"], site_draws=sites or None),
                hyper=Hyperparameters(
                    **parts["hyper"],
                    gate_state=gate,
                    gate_hidden=meta["gate_hidden"],
                    gate_prior_scale=meta.get("gate_prior_scale"),
                ),
                history=History(
                    **{name: arrays[key] for key, name in _HISTORY.items()},
                    iterations=int(meta["iterations"]),
                    wall_time=float(meta["wall_time"]),
                    converged=bool(meta["converged"]),
                ),
                learn=tuple(meta["learn"]),
                restarts=list(meta["restarts"]),
                search=meta.get("search"),
                draws=draws,
                model_text=written,
                feature_names=_names_of(meta.get("feature_names")),
                info=dict(meta.get("info") or {}),
            )
        except InputError as e:
            raise InputError(f"cannot read a saved result from {path}: {e}") from e
        except (
            OSError, ValueError, KeyError, TypeError, IndexError, AttributeError, EOFError,
            zipfile.BadZipFile,
        ) as e:  # fmt: skip
            raise InputError(
                f"cannot read a saved result from {path}: {type(e).__name__}: {e}"
            ) from e
        try:
            result.check_shapes()
            result.check_values()
        except InputError as e:
            raise InputError(f"cannot read a saved result from {path}: {e}") from e
        if model is not None:
            result.attach_model(
                model_for_result(written, result.model_name, result.model_path, given=model)
            )
        return result

    def check_values(self) -> None:
        """Raise :class:`InputError` unless the posterior is a posterior: finite means and
        responsibilities in [0, 1], symmetric positive definite covariances, positive
        noise precisions and Dirichlet/Gamma parameters, an ordered noise range."""
        bad = []
        for name in ("X", "y", "mean", "cov", "noise_precision", "responsibilities"):
            if not bool(torch.isfinite(getattr(self, name)).all()):
                bad.append(f"{name} has NaN or inf")
        r = self.responsibilities
        if r.numel() and not bool(((r >= 0) & (r <= 1 + 1e-9)).all()):
            bad.append("responsibilities outside [0, 1]")
        if self.cov.numel() and not bad:
            sym = torch.allclose(self.cov, self.cov.transpose(-1, -2), rtol=1e-8, atol=0.0)
            pd = bool((torch.linalg.cholesky_ex(self.cov)[1] == 0).all())
            if not (sym and pd):
                bad.append("cov is not symmetric positive definite")
        if not bool((self.noise_precision > 0).all()):
            bad.append("noise_precision is not positive")
        for name in ("alpha", "noise_shape", "noise_rate"):
            t = getattr(self, name)
            if t is not None and not bool((torch.isfinite(t) & (t > 0)).all()):
                bad.append(f"{name} is not positive and finite")
        nb = self.noise_bounds
        if nb is not None and not (bool(torch.isfinite(nb).all()) and float(nb[1]) > float(nb[0])):
            bad.append("noise_bounds is not an interval lo < hi")
        if bad:
            raise InputError("invalid result values: " + ", ".join(bad))

    def check_shapes(self) -> None:
        """Raise :class:`InputError` unless every array has the shape its role needs."""
        N, n = self.X.shape if self.X.dim() == 2 else (-1, -1)
        K, d = self.mean.shape if self.mean.dim() == 2 else (-1, -1)
        C = K + int(self.noise_expert)
        want = {
            "X": (self.X, (N, n)),
            "y": (self.y, (N,)),
            "responsibilities": (self.responsibilities, (N, C)),
            "mean": (self.mean, (K, n) if self.maps is None else (K, d)),
            "cov": (self.cov, (K, d, d)),
            "noise_precision": (self.noise_precision, (K,) if self.noise_precision.dim() else ()),
        }
        if self.alpha is not None:
            want["alpha"] = (self.alpha, (C,))
        if self.noise_bounds is not None:
            want["noise_bounds"] = (self.noise_bounds, (2,))
        bad = [
            f"{name} {tuple(t.shape)} (expected {shape})"
            for name, (t, shape) in want.items()
            if tuple(t.shape) != shape or min(shape, default=0) < 0
        ]
        if len(self.objective_history) == 0:
            bad.append("an empty objective history")
        if self.feature_names is not None and len(self.feature_names) != n:
            bad.append(f"{len(self.feature_names)} feature names for {n} columns of X")
        if bad:
            raise InputError("inconsistent result arrays: " + ", ".join(bad))


#: the ``.npz`` format written: 3 carries the model file's text and digest (2 read too)
FORMAT = 3


def _names_of(names) -> tuple[str, ...] | None:
    """Saved feature names (a JSON list of strings), or None for a file without them."""
    if names is None:
        return None
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise InputError("its feature_names metadata is not a list of strings")
    return tuple(names)


def _loaded(a: np.ndarray) -> torch.Tensor:
    """A saved array as a tensor: numbers only (strings, objects, complex are refused)."""
    if a.dtype.kind not in "biuf":
        raise InputError(f"an array of dtype {a.dtype} is not a result array")
    return torch.from_numpy(a.copy())


def _text_of(meta: dict) -> ModelText | None:
    """The model file's text and digest recorded in ``meta`` (format 3), checked: a text
    that does not have its recorded digest was altered."""
    text, sha = meta.get("model_text"), meta.get("model_sha256")
    if text is None and sha is None:
        return None
    if not isinstance(text, str) or not isinstance(sha, str):
        raise InputError("its model_text / model_sha256 metadata is not text")
    written = ModelText.of(str(meta.get("model_name")), str(meta.get("model_path")), text)
    if written.sha256 != sha:
        raise InputError("its model file text does not match its recorded sha256 (altered)")
    return written


#: the prefix of the saved metadata of a layer above the core (:func:`read_metadata`)
_METADATA = "metadata/"


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The metadata a layer above the core saved with a result (:meth:`FitResult.save`'s
    ``metadata``), key -> value, and the core's own ``meta`` as ``"meta"`` (a layer reads
    what an older version kept there). An unreadable file is an :class:`InputError`."""
    try:
        with np.load(path, allow_pickle=False) as data:
            out = {
                k[len(_METADATA) :]: json.loads(str(data[k]))
                for k in data.files
                if k.startswith(_METADATA)
            }
            if "meta" in data.files:
                out["meta"] = json.loads(str(data["meta"]))
    except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile) as e:
        raise InputError(f"cannot read a saved result from {path}: {type(e).__name__}: {e}") from e
    return out


#: the saved arrays of each part, by name (gate parameters are saved as ``gate/<name>``)
_PARTS = {
    "posterior": sorted(f.name for f in fields(Posterior) if f.name != "site_draws"),
    "hyper": sorted(
        {f.name for f in fields(Hyperparameters)}
        - {"gate_state", "gate_hidden", "gate_prior_scale"}
    ),
}
_HISTORY = {"objective_history": "objective", "elbo_history": "elbo", "time_history": "time"}


def _np(t) -> np.ndarray:
    return t.detach().cpu().numpy() if torch.is_tensor(t) else np.asarray(t)


def _jsonable(o):
    if isinstance(o, np.ndarray | torch.Tensor):
        return _np(o).tolist()
    if isinstance(o, np.generic):
        return o.item()
    raise TypeError(f"not JSON serialisable: {type(o)}")


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
        gate_prior_scale=False if hyper.gate_prior_scale is None else hyper.gate_prior_scale,
    )
    if cfg.gate is not None:
        cfg.gate = copy.deepcopy(result.gate_network())
        for p in cfg.gate.parameters():
            p.requires_grad_(False)
        cfg.noise_weight = hyper.noise_weight
    return cfg


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


def expert_axes(result: FitResult) -> dict[str, int]:
    """For each latent site of ``result``'s model file outside :data:`FAST_LATENTS` that
    lies in the ``experts`` plate (an ARD precision alpha (K, n)), the axis of its value
    that indexes the experts, read from the plate: relabelling moves it with them."""
    model = result.model
    cfg = fixed_config(model, result)
    trace = trace_model(model, result.X, result.y, cfg)
    out = {}
    for name, node in trace.nodes.items():
        if node["type"] != "sample" or node["is_observed"] or name in (*FAST_LATENTS, "z"):
            continue
        for frame in node["cond_indep_stack"]:
            if frame.name == EXPERTS_PLATE and frame.dim is not None:
                out[name] = len(node["fn"].batch_shape) + frame.dim
    return out
