"""Stochastic variational inference (Pyro SVI) for the model files, with restarts.

The engine maximises the same objective as CAVI, F = ELBO (+ R(w0) for the regularized
model) (+ log p(V) with a gate prior, the observed site ``gate_prior``), over the same mean-field family q(Z) q(W) [q(pi)] [q(beta)] given by the model
file's own ``guide``, with :class:`pyro.infer.TraceEnum_ELBO` (``max_plate_nesting=1``):
z is summed out exactly on the guide side (``infer={"enumerate": "parallel"}``) and the
continuous sites (w, pi, beta) are reparameterized, so one step estimates

    F(phi) = E_{q(W) q(pi) q(beta)} [ sum_i sum_k r_ik (log p(z_i = k | .) + log p(y_i | w_k, beta)
             - log r_ik) + log p(W, pi, beta) - log q(W, pi, beta) ] (+ R(w0)) (+ log p(V))

with one (``num_particles``) draw of the globals, and ClippedAdam takes a step on -F.

Algorithm (one restart):

1. Initial q(Z) from the CAVI strategies (:func:`pyro_moe.cavi.init.initial_log_responsibilities`,
   schedule "prior" first when the prior means differ, then "subsets"), then the closed-form
   q(W) given it, B_k = (A_k^{-1} + beta S_k)^{-1}, m_k = B_k (A_k^{-1} w0_k + beta s_k),
   and alpha = mu + N_k. Pyro's default init (all experts at the prior median) is a
   symmetric saddle and SVI never leaves it.
2. ClippedAdam with lr_t = lr * lr_decay^(t / max_steps) (``lrd`` per step).
3. Stop rule in the style of Stan ADVI's ``tol_rel_obj``: every ``eval_every`` steps,
   take the rolling mean Fbar of the last ``window`` step objectives and its relative
   change |Fbar_t - Fbar_{t-1}| / max(|Fbar_t|, N); stop when both the mean and the
   median of the last ``history`` relative changes are below ``tol``.
4. Final objective: the noise-free closed form (:func:`pyro_moe.cavi.bridge.closed_form_objective`)
   at the final parameters for conjugate models, else a ``final_particles``-draw Monte
   Carlo estimate of Pyro's ELBO. It is appended to the objective history, so
   ``result.objective`` is comparable with CAVI's.

Minibatches (``batch_size``): one ``torch.randperm(N)`` per epoch, sliced into batches,
passed as ``subsample=idx`` to model and guide. The data plate scales the likelihood by
N/B; the guide's local parameters q(z_i) = Cat(r_i) are kept (indexed by the batch,
``assignment_probs[idx]``), not collapsed or amortised, so the variational family and
the ELBO are exactly CAVI's and the final objectives compare.
"""

from __future__ import annotations

import copy
import math
import statistics
import sys
import time
from collections import deque
from dataclasses import dataclass, field

import pyro
import torch
from pyro import poutine
from pyro.infer import SVI, TraceEnum_ELBO
from pyro.optim import ClippedAdam
from tqdm import tqdm

from .cavi import updates as U
from .cavi.bridge import closed_form_objective
from .cavi.init import initial_log_responsibilities
from .config import Config, gate_weights, log_gate
from .errors import InputError, NonConjugateError
from .model_file import Model
from .restarts import best_of_restarts, fresh_gate, init_schedule, warn_not_converged
from .result import FitResult

_HYPERS = ("prior_mean", "prior_cov", "noise_precision")


@dataclass
class SVIOptions:
    """Settings of an SVI fit (see :func:`fit_svi`).

    Defaults, and why:

    * ``lr=0.002``, ``lr_decay=0.1``: Adam moves every unconstrained parameter by about
      ``lr`` per step even at the optimum (its first steps are ~lr * sign(grad)), and the
      posterior sd of w on the study's circles is ~1e-3, so a large lr throws the
      closed-form start away (lr=0.01 drops F from 333 to 250 nats on synthetic 1 with
      beta = 1e3) and a small one is slow; 0.005 decaying to 5e-4 ended within 0.13 % of
      CAVI there (and stopped early at 0.7 % while climbing back), 0.002 within 0.01 %.
      Raise lr for a start far from the optimum (``start="guide"``, non-conjugate priors).
    * ``start="closed_form"``: q(W), q(pi) [q(beta)] from the initial q(Z) in closed form;
      ``"guide"`` keeps the guide's own initial values (only q(Z) is initialised).
    * ``tol=1e-3`` on the relative change of a ``window=50``-step rolling mean, tested
      every ``eval_every=50`` steps, mean and median of the last ``history=5`` changes:
      the per-step objective's Monte Carlo sd at convergence is a few nats (2.7 nats on
      synthetic 1), so the rolling mean's relative change has a noise floor of about
      0.2 sd / max(|F|, N), measured 5e-4 to 1e-3 at N = 200; a tol of 1e-4 would never
      trigger below N ~ 1e4 and only runs the clock to ``max_steps`` (Stan ADVI's
      default tol_rel_obj is 1e-2, on a 100-draw estimate). The floor falls like 1/N
      (F grows with N, the noise of the global draws does not), so big data stop on drift.
    * ``max_steps=3000``; ``clip_norm=10`` (ClippedAdam's elementwise gradient clip).
    * ``batch_size=None``: full batch; an int B gives minibatch SVI (module docstring).
    """

    n_init: int = 5
    init: str | list[str] = "auto"
    seed: int = 0
    responsibilities: torch.Tensor | None = None
    progress: bool | None = None
    tol: float = 1e-3
    max_steps: int = 3000
    lr: float = 0.002
    lr_decay: float = 0.1
    clip_norm: float = 10.0
    num_particles: int = 1
    batch_size: int | None = None
    eval_every: int = 50
    window: int = 50
    history: int = 5
    final_particles: int = 200
    start: str = "closed_form"  # "closed_form" q(W), q(pi) from q(Z); "guide": its own defaults

    def validate(self, N: int) -> None:
        """Raise :class:`InputError` for an option out of range."""
        checks = [
            ("n_init", self.n_init, 1),
            ("max_steps", self.max_steps, 1),
            ("num_particles", self.num_particles, 1),
            ("eval_every", self.eval_every, 1),
            ("window", self.window, 1),
            ("history", self.history, 1),
            ("final_particles", self.final_particles, 1),
        ]
        if self.batch_size is not None:
            checks.append(("batch_size", self.batch_size, 1))
        for name, value, low in checks:
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise InputError(f"{name} must be an integer >= {low}, got {value!r}")
        for name, value in (("lr", self.lr), ("tol", self.tol), ("clip_norm", self.clip_norm)):
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise InputError(f"{name} must be a positive number, got {value!r}")
        if not (isinstance(self.lr_decay, int | float) and 0 < self.lr_decay <= 1):
            raise InputError(f"lr_decay must be in (0, 1], got {self.lr_decay!r}")
        if self.start not in ("closed_form", "guide"):
            raise InputError(f"start must be 'closed_form' or 'guide', got {self.start!r}")
        if self.batch_size is not None and self.batch_size > N:
            raise InputError(f"batch_size = {self.batch_size} is more than N = {N} points")


@dataclass
class _Run:
    objective: list[float] = field(default_factory=list)
    elbo: list[float] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    converged: bool = False
    steps: int = 0
    final: tuple[float, float] = (math.nan, math.nan)
    final_se: float = 0.0
    params: dict[str, torch.Tensor] = field(default_factory=dict)
    config: Config | None = None


def fit_svi(
    model: Model, X: torch.Tensor, y: torch.Tensor, config: Config, options: SVIOptions
) -> FitResult:
    """Fit ``model`` to (X, y) by Pyro SVI, ``options.n_init`` restarts, best final F kept.

    X (N, n) and y (N,) are float64 tensors. The global param store is left untouched:
    each restart runs in its own :meth:`pyro.params.param_store.ParamStoreDict.scope`.
    """
    options.validate(X.shape[0])
    inits = init_schedule(options, config.prior_mean)
    start = time.perf_counter()
    best, summaries = best_of_restarts(
        inits,
        options.seed,
        lambda how, seed, i: _run(model, X, y, config, options, how, seed, i, len(inits)),
        lambda run: {
            "objective": run.objective[-1],
            "objective_se": run.final_se,
            "iterations": run.steps,
            "converged": run.converged,
        },
    )
    if not best.converged:
        warn_not_converged(
            f"SVI did not converge in max_steps={options.max_steps} steps (tol={options.tol}); "
            "raise max_steps (max_iter in fit) or loosen tol"
        )
    return _result(model, X, y, config, best, summaries, time.perf_counter() - start)


def _fresh_config(config: Config, seed: int, restart: int) -> Config:
    cfg = copy.copy(config)
    cfg.gate = fresh_gate(config.gate, seed, restart)  # a copy: pyro.module rebinds its params
    return cfg


def _initialise(model: Model, X, y, cfg: Config, options: SVIOptions, how: str, seed: int):
    """Register every parameter (one traced pass), then set the closed-form start values.

    Returns whether the model has the regularizer site and the distribution of its
    ``gate_prior`` site (None without one), to report the ELBO beside F.
    """
    N = X.shape[0]
    with torch.no_grad():
        guide_tr = poutine.trace(model.guide).get_trace(X, y, cfg)
        model_tr = poutine.trace(poutine.replay(model.model, trace=guide_tr)).get_trace(X, y, cfg)
    store = pyro.get_param_store()
    sites = set(model_tr.nodes)
    beta = cfg.noise_precision
    if cfg.gate is not None:
        with torch.no_grad():
            log_prior = log_gate(cfg.gate, X, cfg.noise_weight if cfg.noise_expert else None)
    else:
        log_prior = U.dirichlet_expected_log(cfg.concentration).expand(N, cfg.components)
    log_r = initial_log_responsibilities(
        how, X, y, cfg.experts, seed,
        prior=U.prior_from(cfg.prior_mean, cfg.prior_cov), log_prior=log_prior,
        e_beta=beta, e_log_beta=torch.log(beta), given=options.responsibilities,
        noise_log_density=noise_log_density(cfg), maps=cfg.maps,
    )  # fmt: skip
    r = log_r.exp()
    with torch.no_grad():
        store["assignment_probs"] = r.clamp_min(1e-12) / r.clamp_min(1e-12).sum(-1, keepdim=True)
    priors = "prior_regularization" in sites, _gate_prior_fn(model_tr)
    if options.start == "guide":
        return priors
    stats = U.sufficient_stats(X, y, r[:, : cfg.experts], cfg.maps)
    prior = U.weight_prior(cfg.prior_mean, cfg.prior_cov)
    q = U.update_weights(stats, prior, beta)
    # beta from its closed-form M-step too: from 1/Var(y), Adam's ~lr-sized steps in log beta
    # needed thousands of steps (measured: Synthetic 2 stopped at F = -391 vs CAVI's -225)
    if "noise_precision" in store:  # learned point estimate (not latent, not fixed)
        total_sq = U.summed_sq_residuals(stats, q).sum()
        beta_max = 1e10 / max(float(y.var()), 1e-300)
        beta = U.update_noise_precision(total_sq, stats.Nk.sum(), beta_max)
        q = U.update_weights(stats, prior, beta)
    with torch.no_grad():
        store["weight_mean"] = q.mean
        store["weight_scale_tril"] = torch.linalg.cholesky(q.cov)
        if "mixing_concentration" in store:
            store["mixing_concentration"] = cfg.concentration + r.sum(0)
        if "noise_precision" in store:
            store["noise_precision"] = beta
        if "noise_weight" in store:
            store["noise_weight"] = r[:, cfg.experts].mean().clamp(1e-6, 1 - 1e-6)
        if "noise_shape" in store:
            a = 1.0 + 0.5 * N
            store["noise_shape"] = torch.as_tensor(a, dtype=X.dtype, device=X.device)
            store["noise_rate"] = a / beta
    return priors


def _gate_prior_fn(trace):
    """The distribution of the model's ``gate_prior`` site, or None (constant parameters:
    the file builds it from settings, so it can be evaluated at later gate weights)."""
    node = trace.nodes.get("gate_prior")
    return node["fn"] if node is not None and node["type"] == "sample" else None


def _gate_log_prior(gate_prior, cfg: Config) -> float:
    """log p(V) at the present gate weights, 0 without a gate prior."""
    if gate_prior is None or cfg.gate is None:
        return 0.0
    with torch.no_grad():
        V = torch.cat([p.reshape(-1) for p in gate_weights(cfg.gate)])
        return float(gate_prior.log_prob(V).sum())


def noise_log_density(cfg: Config) -> torch.Tensor | None:
    """log u = -log(hi - lo) of the noise expert's uniform density, or None without one."""
    if cfg.noise_bounds is None:
        return None
    lo, hi = cfg.noise_bounds.unbind(-1)
    return -torch.log(hi - lo)


def _objective_at(
    model: Model, X, y, cfg: Config, options: SVIOptions, gate_prior=None
) -> tuple[float, float, float]:
    """(ELBO, F, standard error) at the current param store, on the full data."""
    store = pyro.get_param_store()
    params = {k: store[k].detach() for k in store.keys()}
    final_cfg = _config_from_store(cfg)
    try:
        elbo, F = closed_form_objective(model, X, y, final_cfg, params)
        return elbo, F, 0.0
    except NonConjugateError:
        pass
    loss = TraceEnum_ELBO(max_plate_nesting=1)
    values = []
    with torch.no_grad():
        for _ in range(options.final_particles):
            values.append(-loss.loss(model.model, model.guide, X, y, cfg))
    F = statistics.fmean(values)
    se = statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else 0.0
    reg = _regularizer(final_cfg) if final_cfg.regularization_cov is not None else 0.0
    reg += _gate_log_prior(gate_prior, final_cfg)
    return F - reg, F, se


def _config_from_store(cfg: Config) -> Config:
    """A detached copy of ``cfg`` with the learned hyperparameters and gate of the store."""
    store = pyro.get_param_store()
    out = copy.copy(cfg)
    for name in _HYPERS:
        if cfg.learns(name) and name in store:
            setattr(out, name, store[name].detach().clone())
    if cfg.gate is not None:
        out.gate = copy.deepcopy(cfg.gate)  # evaluated under no_grad by its readers
        if cfg.noise_expert and "noise_weight" in store:
            out.noise_weight = store["noise_weight"].detach().clone()
    return out


def _regularizer(cfg: Config) -> float:
    if cfg.regularization_cov is None or cfg.experts < 2:
        return 0.0
    return float(U.regularizer(cfg.prior_mean.detach(), cfg.regularization_cov))


def _current_prior_mean(cfg: Config) -> torch.Tensor:
    store = pyro.get_param_store()
    if cfg.learns("prior_mean") and "prior_mean" in store:
        return store["prior_mean"].detach()
    return cfg.prior_mean


def _run(
    model: Model,
    X: torch.Tensor,
    y: torch.Tensor,
    config: Config,
    options: SVIOptions,
    how: str,
    seed: int,
    restart: int,
    restarts: int,
) -> _Run:
    N = X.shape[0]
    run = _Run()
    pyro.set_rng_seed(seed)
    cfg = _fresh_config(config, seed, restart)
    xi = cfg.regularization_cov
    with pyro.get_param_store().scope():
        has_reg, gate_prior = _initialise(model, X, y, cfg, options, how, seed)
        optim = ClippedAdam(
            {
                "lr": options.lr,
                "lrd": options.lr_decay ** (1.0 / options.max_steps),
                "clip_norm": options.clip_norm,
            }
        )
        elbo = TraceEnum_ELBO(max_plate_nesting=1, num_particles=options.num_particles)
        svi = SVI(model.model, model.guide, optim, elbo)
        B = options.batch_size
        gen = torch.Generator(device="cpu").manual_seed(seed)
        batches: list[torch.Tensor] = []
        recent: deque[float] = deque(maxlen=options.history)
        prev_mean: float | None = None
        show = (
            options.progress
            if options.progress is not None
            else (sys.stderr.isatty() and options.max_steps * min(N, B or N) > 10**6)
        )
        bar = tqdm(
            total=options.max_steps,
            disable=not show,
            desc=f"SVI {restart + 1}/{restarts}",
            leave=False,
        )
        t0 = time.perf_counter()
        for step in range(1, options.max_steps + 1):
            if B is None:
                loss = svi.step(X, y, cfg)
            else:
                if not batches:
                    perm = torch.randperm(N, generator=gen, device="cpu").to(X.device)
                    batches = list(perm.split(B))[::-1]
                loss = svi.step(X, y, cfg, subsample=batches.pop())
            if not math.isfinite(loss):
                raise FloatingPointError(
                    f"SVI produced a non-finite loss at step {step}; lower lr (now {options.lr})"
                )
            F = -loss
            run.objective.append(F)
            run.elbo.append(
                F - _regularizer_at(xi, has_reg, cfg) - _gate_log_prior(gate_prior, cfg)
            )
            run.times.append(time.perf_counter() - t0)
            bar.update()
            if step % options.eval_every == 0 and step >= options.window:
                mean = statistics.fmean(run.objective[-options.window :])
                bar.set_postfix(objective=f"{mean:.6g}")
                if prev_mean is not None:
                    recent.append(abs(mean - prev_mean) / max(abs(mean), N))
                    if (
                        len(recent) == recent.maxlen
                        and statistics.fmean(recent) < options.tol
                        and statistics.median(recent) < options.tol
                    ):
                        run.converged = True
                        break
                prev_mean = mean
        bar.close()
        run.steps = len(run.objective)
        elbo_f, F_f, se = _objective_at(model, X, y, cfg, options, gate_prior)
        run.objective.append(F_f)
        run.elbo.append(elbo_f)
        run.times.append(time.perf_counter() - t0)
        run.final, run.final_se = (elbo_f, F_f), se
        store = pyro.get_param_store()
        run.params = {k: store[k].detach().clone() for k in store.keys()}
        run.config = _config_from_store(cfg)
    return run


def _regularizer_at(xi, has_reg: bool, cfg: Config) -> float:
    if xi is None or not has_reg or cfg.experts < 2:
        return 0.0
    return float(U.regularizer(_current_prior_mean(cfg), xi))


def _result(model: Model, X, y, config: Config, run: _Run, summaries, wall: float) -> FitResult:
    p, cfg = run.params, run.config
    assert cfg is not None
    L = p["weight_scale_tril"]
    if "noise_shape" in p:
        noise = p["noise_shape"] / p["noise_rate"]
    else:
        noise = cfg.noise_precision.detach()
    log_gate_ = gate_state = None
    if cfg.gate is not None:
        with torch.no_grad():
            log_gate_ = log_gate(cfg.gate, X, cfg.noise_weight if cfg.noise_expert else None)
        gate_state = {k: v.detach().clone() for k, v in cfg.gate.state_dict().items()}
    return FitResult(
        method="svi",
        model_name=model.name,
        model_path=str(model.path),
        X=X,
        y=y,
        responsibilities=p["assignment_probs"],
        mean=p["weight_mean"],
        cov=L @ L.transpose(-1, -2),
        prior_mean=cfg.prior_mean.detach().clone(),
        prior_cov=cfg.prior_cov.detach().clone(),
        noise_precision=torch.as_tensor(noise, dtype=X.dtype, device=X.device).reshape(()),
        concentration=config.concentration,
        objective_history=torch.tensor(run.objective, dtype=torch.float64, device="cpu"),
        elbo_history=torch.tensor(run.elbo, dtype=torch.float64, device="cpu"),
        time_history=torch.tensor(run.times, dtype=torch.float64, device="cpu"),
        iterations=run.steps,
        wall_time=wall,
        converged=run.converged,
        learn=tuple(sorted(config.learn)),
        alpha=p.get("mixing_concentration"),
        log_gate=log_gate_,
        noise_shape=p.get("noise_shape"),
        noise_rate=p.get("noise_rate"),
        noise_bounds=config.noise_bounds,
        noise_weight=cfg.noise_weight if cfg.gate is not None and cfg.noise_expert else None,
        regularization_cov=config.regularization_cov,
        gate_state=gate_state,
        gate_hidden=config.gate_hidden,
        restarts=summaries,
        maps=config.maps,
    )
