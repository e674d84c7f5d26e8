"""Stochastic variational inference (Pyro SVI) for the model files, with restarts.

Two optimizers (option ``optimizer``):

* ``"natural"`` (the default): natural-gradient SVI on the conjugate sites q(W), q(pi),
  q(beta) (:mod:`pyro_moe.engines.natural`; full batch with rho = 1 is exactly CAVI), Adam
  for the gate. A factorised non-Gaussian prior on w (``dist.Laplace(loc, s).to_event(1)``,
  ``dist.StudentT(df, loc, s).to_event(1)``) takes conjugate-computation VI's step
  (Khan & Lin 2017, :mod:`pyro_moe.closed_form.linearised`): the prior linearised at the
  present q, the rest conjugate; the restart's summary then also holds Pyro's own Monte
  Carlo ELBO of the file at the final q (``pyro_objective`` +- ``pyro_objective_se``,
  :func:`pyro_objective`). Any other non-conjugate site (an added scale tau, a
  multivariate non-Gaussian prior, a learned w0 or A under a non-Gaussian prior) has no
  natural-gradient step here and is fitted with ``"adam"`` below.
* ``"adam"``: plain Pyro SVI, ClippedAdam on every guide parameter (what follows).

The engine maximises the same objective as CAVI, F = ELBO (+ R(w0) for the regularized
model) (+ log p(V) with a gate prior, the observed site ``gate_prior``), over the same mean-field family q(Z) q(W) [q(pi)] [q(beta)] given by the model
file's own ``guide``, with :class:`pyro.infer.TraceEnum_ELBO` (``max_plate_nesting=1``):
z is summed out exactly on the guide side (``infer={"enumerate": "parallel"}``) and the
continuous sites (w, pi, beta) are reparameterized, so one step estimates

    F(phi) = E_{q(W) q(pi) q(beta)} [ sum_i sum_k r_ik (log p(z_i = k | .) + log p(y_i | w_k, beta)
             - log r_ik) + log p(W, pi, beta) - log q(W, pi, beta) ] (+ R(w0)) (+ log p(V))

with one (``num_particles``) draw of the globals, and ClippedAdam takes a step on -F.

Algorithm (one restart):

1. Initial q(Z) from the CAVI strategies (:func:`pyro_moe.closed_form.init.initial_log_responsibilities`,
   schedule "prior" first when the prior means differ, then "subsets"), then the closed-form
   q(W) given it, B_k = (A_k^{-1} + beta S_k)^{-1}, m_k = B_k (A_k^{-1} w0_k + beta s_k),
   and alpha = mu + N_k. Pyro's default init (all experts at the prior median) is a
   symmetric saddle and SVI never leaves it.
2. ClippedAdam with lr_t = lr * lr_decay^(t / max_iter) (``lrd`` per step).
3. Stop rule on the objective's Monte Carlo standard error
   (:func:`pyro_moe.engines.natural.window_test`): every ``eval_every`` steps, the means
   of the last two windows of ``window`` step objectives differ by d with standard error
   se(d); the test passes when |d| + 2 se(d) <= tol * max(|F|, N), and the run has
   converged when it passes ``history`` times in a row. An objective too noisy to tell
   a slow climb from convergence does not count as converged (the result reports the
   last window's standard error as ``stop_se`` in ``restarts``).
4. Final objective: the noise-free closed form (:func:`pyro_moe.closed_form.bridge.closed_form_objective`)
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
import warnings
from dataclasses import fields
from types import MappingProxyType, SimpleNamespace

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.infer import TraceEnum_ELBO
from pyro.optim.clipped_adam import ClippedAdam
from pyro.poutine.util import site_is_subsample

from ..closed_form import updates as U
from ..closed_form.bridge import closed_form_objective, config_at, guide_params
from ..closed_form.init import initial_log_responsibilities
from ..closed_form.sites import read_model, unwrap
from ..config import Config, gate_weights, log_gate
from ..errors import (
    EngineWarning,
    InputError,
    ModelFileError,
    NonConjugateError,
    NumericalError,
    PyroMoeError,
    find_stack_level,
)
from ..likelihood import noise_log_density
from ..model_file import Model, model_file_error
from ..parameters import ENGINE_OPTIONS, SVI_LR, SVI_MAX_ITER, SVI_TOL
from ..result import FitResult, Hyperparameters, Posterior
from .base import Progress, Run, Variational, fresh_gate
from .natural import natural_schedule, natural_summary, window_test
from .options import Options
from .source import DataSource, InMemory
from .sweep import sweep

_HYPERS = ("prior_mean", "prior_cov", "noise_precision")

OPTIONS = ENGINE_OPTIONS["svi"]


class SVI(Variational):
    """Pyro SVI on the model file's own model and guide (``method="svi"``).

    X (N, n) and y (N,) are float64 tensors. The global param store is left untouched:
    each restart runs in its own :meth:`pyro.params.param_store.ParamStoreDict.scope`.
    """

    name = "svi"
    declared = OPTIONS
    aliases = MappingProxyType({"max_steps": "max_iter"})
    unit = "steps"

    @classmethod
    def options(cls, given) -> Options:
        """:meth:`Engine.options`, with ``tol=None`` and ``max_iter=None`` (or absent) the
        optimizer's defaults (:data:`~pyro_moe.parameters.SVI_TOL`,
        :data:`~pyro_moe.parameters.SVI_MAX_ITER`)."""
        given = dict(given)
        opt = given.get("optimizer", "natural")
        defaulted = set()
        if given.get("tol") is None:
            mini = given.get("batch_size") is not None
            key = "natural_minibatch" if opt == "natural" and mini else opt
            given["tol"] = SVI_TOL.get(key, SVI_TOL["adam"])
            defaulted.add("tol")
        if given.get("max_iter") is None and given.get("max_steps") is None:
            given["max_iter"] = SVI_MAX_ITER.get(opt, SVI_MAX_ITER["adam"])
            defaulted.add("max_iter")
        options = super().options(given)
        options.defaulted = frozenset(defaulted)  # Adam's own replace them (fall_back)
        return options

    def prepare(self) -> None:
        """Check that the model's and the guide's latent sites match (a typo is a
        :class:`~pyro_moe.errors.ModelFileError`), take the Dirichlet concentration the
        model actually uses, and, for natural gradient, read the closed form; where it does
        not hold, announce Adam (:meth:`fall_back`)."""
        traced, self.latent = _check_sites(self.model, self.X, self.y, self.config)
        if traced is not None:  # report the prior in use, e.g. an edited Dirichlet([1, 4])
            self.config = copy.copy(self.config)
            self.config.concentration = traced
        self.conj = None
        self.why, self.announced = None, False  # why natural gradient fell back on Adam
        if self.options.optimizer == "natural":
            try:
                self.conj = read_model(self.model, self.X, self.y, self.config, linearise_w=True)
            except NonConjugateError as e:
                self.fall_back(str(e))
        self.check()  # a batch_size above N is an error even where the full batch is used
        opts = self.options
        small = opts.batch_size is not None and self.points() < opts.minibatch_from
        if self.conj is not None and small:  # full batch: exact steps are cheaper here
            tol = SVI_TOL["natural"] if opts.tol == SVI_TOL["natural_minibatch"] else opts.tol
            self.options = Options(self.name, {**opts, "batch_size": None, "tol": tol})

    def fall_back(self, why: str) -> None:
        """Natural gradient has no step for this model file: every latent site is fitted by
        Adam instead (q(W) whitened), with Adam's own defaults of ``tol``, ``max_iter`` and
        ``lr`` where they were left to their defaults (:data:`pyro_moe.parameters.SVI_TOL`,
        :data:`~pyro_moe.parameters.SVI_MAX_ITER`, :data:`~pyro_moe.parameters.SVI_LR`'s
        ``"fallback"``); :meth:`announce` says so."""
        opts = self.options
        defaulted = getattr(opts, "defaulted", frozenset())
        swap = {"tol": SVI_TOL["adam"], "max_iter": SVI_MAX_ITER["adam"]}
        swap = {k: v for k, v in swap.items() if k in defaulted}
        if opts.lr is None and opts.whiten in (None, True):  # SVI_LR's measured fallback
            swap["lr"] = SVI_LR["fallback"]
        self.options = Options(self.name, {**opts, **swap})
        self.why = why

    def announce(self) -> None:
        """Once per fit, before the first Adam step that replaces natural gradient: an
        :class:`~pyro_moe.errors.EngineWarning` at the user's line naming the model file,
        the reason (the site without a natural-gradient step), the latent sites Adam fits
        and its settings."""
        if self.why is None or self.announced:
            return
        self.announced = True
        why, opts = self.why.split(". Fit ")[0], self.options  # not read_model's advice
        whiten = opts.whiten if opts.whiten is not None else True
        lr = opts.lr if opts.lr is not None else (WHITE_LR if whiten else PLAIN_LR)
        warnings.warn(
            f"SVI: natural-gradient steps do not apply to model file {self.model.name!r} "
            f"({why.rstrip('.')}); its latent sites {sorted(self.latent)} are fitted by Adam "
            f"instead (ClippedAdam, {'whitened q(W), ' if whiten else ''}lr={lr:g}, "
            f"tol={opts.tol:g}, max_iter={opts.max_iter}; result.info['steps']). Pass "
            "optimizer='adam' to choose it",
            EngineWarning,
            stacklevel=find_stack_level(),
        )

    def steps(self) -> dict[str, str]:
        """Which step fitted each latent site: ``"natural"`` (a natural-gradient step in
        closed form), ``"cvi"`` (CVI's linearised step of a non-Gaussian prior on w),
        ``"adam"`` (ClippedAdam on the guide's parameters), ``"enumerated"`` (z summed out
        in Pyro's ELBO) or ``"closed form"`` (z's local step given the globals)."""
        if self.conj is None:
            return {n: "enumerated" if n == "z" else "adam" for n in sorted(self.latent)}
        cvi = self.conj.weight_factor is not None
        return {
            n: "closed form" if n == "z" else "cvi" if n == "w" and cvi else "natural"
            for n in sorted(self.latent)
        }

    def run_fit(self) -> FitResult:
        """:meth:`Variational.run_fit`, recording per latent site which step fitted it
        (``result.info["steps"]``, :meth:`steps`)."""
        result = super().run_fit()
        result.info["steps"] = self.steps()
        return result

    def points(self) -> int:
        """N, the points the options are checked against (a distributed fit's X is a head)."""
        return self.X.shape[0]

    def check(self) -> None:
        B, N = self.options.batch_size, self.points()
        if B is not None and B > N:
            raise InputError(f"batch_size = {B} is more than N = {N} points")

    def source(self) -> DataSource:
        """Where natural SVI's passes over the data run: here, in this process."""
        return InMemory(self.X, self.y)

    def monte_carlo_check(self, run: Run, seed: int) -> None:
        """Pyro's own Monte Carlo ELBO of the file at the final q, beside CVI's quadrature
        (:func:`pyro_objective`), into the restart's summary."""
        F, se, S = pyro_objective(self.model, self.X, self.y, self.config, run,
                                  self.options.final_particles, seed)  # fmt: skip
        run.summary.update(pyro_objective=F, pyro_objective_se=se, pyro_particles=S)

    def show_progress(self) -> bool:
        B, N = self.options.batch_size, self.points()
        return sys.stderr.isatty() and self.options.max_iter * min(N, B or N) > 10**6

    def run(self, how: str, seed: int, restart: int, progress: Progress) -> Run:
        if self.conj is not None:
            source = self.source()
            schedule = natural_schedule(self.options, source.N)
            run = sweep(source, self.config, self.conj, self.options, how, seed, restart,
                        progress, schedule)  # fmt: skip
            natural_summary(run, schedule, self.conj)
            if self.conj.weight_factor is not None:  # Pyro's own estimate beside the quadrature
                self.monte_carlo_check(run, seed)
            return run
        self.announce()
        whiten = self.options.whiten
        if whiten is None:  # natural gradient fell back on Adam: in posterior-sd units
            whiten = self.options.optimizer == "natural"
        return _run(self.model, self.X, self.y, self.config, self.options, how, seed, restart,
                    progress, whiten)  # fmt: skip


def _check_sites(model: Model, X, y, config: Config) -> tuple[torch.Tensor | None, set[str]]:
    """Trace guide and model (replayed) on a few rows: every latent site of the model must
    have its q in the guide and every guide site must be a latent site of the model, or
    :class:`~pyro_moe.errors.ModelFileError` names them (Pyro would only warn and fit a
    different model). Returns the concentration of the model's ``pi`` site, if any, and
    the names of the latent sites."""
    rows = min(8, X.shape[0])
    cfg = copy.deepcopy(config)  # pyro.module would rebind the gate's parameters
    with pyro.get_param_store().scope(), torch.no_grad():
        try:
            g_tr = poutine.trace(model.guide).get_trace(X[:rows], y[:rows], cfg)
            m_tr = poutine.trace(poutine.replay(model.model, trace=g_tr)).get_trace(
                X[:rows], y[:rows], cfg
            )
        except Exception as e:  # a user's model file may fail anywhere: name its line
            raise model_file_error(model, e, "under SVI") or ModelFileError(
                f"model {model.name!r} failed when run: {type(e).__name__}: {e}"
            ) from e

    def latent(tr):
        return {
            n for n, s in tr.nodes.items()
            if s["type"] == "sample" and not s["is_observed"] and not site_is_subsample(s)
        }  # fmt: skip

    in_model, in_guide = latent(m_tr), latent(g_tr)
    if in_model != in_guide:
        parts = []
        if in_model - in_guide:
            parts.append(f"latent in the model but not in the guide: {sorted(in_model - in_guide)}")
        if in_guide - in_model:
            parts.append(f"in the guide but not in the model: {sorted(in_guide - in_model)}")
        raise ModelFileError(
            f"model {model.name!r}: the sites of its model and guide do not match ("
            + "; ".join(parts)
            + "); each latent site needs one q of the same name"
        )
    pi = m_tr.nodes.get("pi")
    if pi is None or pi["type"] != "sample":
        return None, in_model
    fn = pi["fn"]
    while hasattr(fn, "base_dist") and not hasattr(fn, "concentration"):
        fn = fn.base_dist
    conc = getattr(fn, "concentration", None)
    return (None if conc is None else conc.detach().to(X.dtype).clone()), in_model


#: points x particles x components per vectorised block of :func:`pyro_objective`
_PARTICLE_BLOCK = 2**21


def pyro_objective(
    model: Model, X, y, config: Config, run: Run, particles: int, seed: int
) -> tuple[float, float, int]:
    """Pyro's Monte Carlo estimate of F at a run's final q, the model file's own
    ``TraceEnum_ELBO`` (z summed out, ``particles`` draws of the globals in vectorised
    blocks): its mean, standard error sd / sqrt(S) and S. The check, for natural-gradient
    SVI with a linearised prior, that the quadrature objective is the file's ELBO; S is
    capped so the check costs at most ~2e7 point-component evaluations (large N)."""
    post, hyper = run.posterior, run.hyper
    view = SimpleNamespace(**{f.name: getattr(post, f.name) for f in fields(post)},
                           **{f.name: getattr(hyper, f.name) for f in fields(hyper)})  # fmt: skip
    params = guide_params(view)
    cfg = config_at(view, config)
    C = cfg.components
    S = max(2, min(particles, (10 * _PARTICLE_BLOCK) // max(1, X.shape[0] * C)))
    block = max(1, min(-(-S // 20), _PARTICLE_BLOCK // max(1, X.shape[0] * C)))  # >= 20 blocks
    values = []
    with pyro.get_param_store().scope(), torch.no_grad(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        poutine.trace(model.guide).get_trace(X, y, cfg)
        poutine.trace(model.model).get_trace(X, y, cfg)
        store = pyro.get_param_store()
        for name, value in params.items():
            if name in store and value is not None:
                store[name] = value.detach().clone()  # the store marks its tensors requires_grad
        done = 0
        while done < S:
            b = min(block, S - done)
            loss = TraceEnum_ELBO(max_plate_nesting=1, num_particles=b, vectorize_particles=True)
            # one call's loss is the mean of b particles: its variance is sd^2 / b
            values.append((-loss.loss(model.model, model.guide, X, y, cfg), b))
            done += b
    total = sum(b for _, b in values)
    mean = sum(v * b for v, b in values) / total
    if len(values) > 1:
        var = sum(b * (v - mean) ** 2 for v, b in values) / (len(values) - 1)  # sd^2 estimate
        se = math.sqrt(var / total)
    else:
        se = math.nan
    return mean, se, total


def _fresh_config(config: Config, seed: int, restart: int) -> Config:
    cfg = copy.copy(config)
    cfg.gate = fresh_gate(config.gate, seed, restart)  # a copy: pyro.module rebinds its params
    return cfg


def _initialise(model: Model, X, y, cfg: Config, options: Options, how: str, seed: int):
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
        noise_log_density=noise_log_density(cfg.noise_bounds), maps=cfg.maps,
    )  # fmt: skip
    r = log_r.exp()
    with torch.no_grad():
        store["assignment_probs"] = r.clamp_min(1e-12) / r.clamp_min(1e-12).sum(-1, keepdim=True)
    priors = "prior_regularization" in sites, _gate_prior_fn(model_tr)
    if options.start == "guide":
        return priors
    stats = U.sufficient_stats(X, y, r[:, : cfg.experts], cfg.maps)
    prior = U.weight_prior(cfg.prior_mean, cfg.prior_cov)

    def weights_at(b):
        return U.update_weights(stats, prior, b)

    q = weights_at(beta)
    # beta from its closed-form M-step too: from 1/Var(y), Adam's ~lr-sized steps in log beta
    # needed thousands of steps (measured: Synthetic 2 stopped at F = -391 vs CAVI's -225)
    # q(W) and beta alternate to their joint fixed point given q(Z) (per-expert work only):
    # one round had left beta 39x too small on a 500-point circle (2485 against 96804), and
    # Adam then spent its steps climbing in log beta (668 nats short after one step)
    if "noise_precision" in store:  # learned point estimate (not latent, not fixed)
        beta_max = 1e10 / max(float(y.var()), 1e-300)

        def beta_of(q_):
            total_sq, n_k = U.summed_sq_residuals(stats, q_), stats.Nk
            if not cfg.per_expert_noise:
                total_sq, n_k = total_sq.sum(), n_k.sum()
            return U.update_noise_precision(total_sq, n_k, beta_max, previous=beta)

        q, beta = _joint_start(weights_at, beta_of, beta)
    qbeta = None
    if "noise_shape" in store:  # latent beta: q(beta) in closed form too, not from 1/Var(y)

        def e_beta_of(q_):
            a, b = _closed_form_qbeta(model_tr, stats, prior, q_, cfg)
            return a / b

        q, _ = _joint_start(weights_at, e_beta_of, beta)
        qbeta = _closed_form_qbeta(model_tr, stats, prior, q, cfg)
    with torch.no_grad():
        store["weight_mean"] = q.mean
        store["weight_scale_tril"] = torch.linalg.cholesky(q.cov)
        if "mixing_concentration" in store:
            store["mixing_concentration"] = cfg.concentration + r.sum(0)
        if "noise_precision" in store:
            store["noise_precision"] = beta
        if "noise_weight" in store:
            store["noise_weight"] = r[:, cfg.experts].mean().clamp(1e-6, 1 - 1e-6)
        if qbeta is not None:
            store["noise_shape"], store["noise_rate"] = qbeta
    return priors


#: rounds of (q(W), beta) at most in the closed-form start
START_ROUNDS = 200


def _joint_start(weights_at, beta_of, beta):
    """q(W) and beta (or E[beta]) alternated to their joint fixed point given q(Z):
    q = weights_at(beta), beta = beta_of(q), until beta repeats to 1e-10 relative
    (START_ROUNDS at most). Returns (q, beta), q that of the last beta."""
    for _ in range(START_ROUNDS):
        new = beta_of(weights_at(beta))
        done = bool(((new - beta).abs() <= 1e-10 * new.abs()).all())
        beta = new
        if done:
            break
    return weights_at(beta), beta


def _closed_form_qbeta(model_tr, stats: U.Stats, prior, q, cfg: Config):
    """q(beta) = Gamma(a0 + N_k/2, b0 + 1/2 sum_i r_ik E(y_i - w_k^T x_i)^2) given q(W) and
    the initial q(Z) (:func:`~pyro_moe.closed_form.updates.update_noise_gamma`), with
    (a0, b0) of the model's Gamma prior on ``noise_precision``; a prior of another family
    starts from the likelihood's part alone (a0 = 1, b0 = 0)."""
    g = unwrap(model_tr.nodes["noise_precision"]["fn"])
    like = cfg.noise_precision
    if isinstance(g, dist.Gamma):
        a0, b0 = (p.detach().to(like).expand(like.shape) for p in (g.concentration, g.rate))
    else:
        a0, b0 = torch.ones_like(like), torch.zeros_like(like)
    total, n_k = U.summed_sq_residuals(stats, q), stats.Nk
    if not cfg.per_expert_noise:
        total, n_k = total.sum(), n_k.sum()
    a, b = U.update_noise_gamma(total, n_k, a0, b0)
    return a.detach().clone(), b.clamp_min(1e-300).detach().clone()


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


def _objective_at(
    model: Model, X, y, cfg: Config, options: Options, gate_prior=None
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


def _store_finite(store) -> bool:
    """Whether every parameter in the store is finite (constrained values, as the model reads)."""
    with torch.no_grad():
        return all(bool(torch.isfinite(store[k]).all()) for k in store.keys())


def _diverged(step: int, lr: float) -> NumericalError:
    return NumericalError(
        f"SVI diverged at step {step} (the loss or a parameter became inf or NaN); lower lr "
        f"(now {lr:g})"
    )


def _run(
    model: Model,
    X: torch.Tensor,
    y: torch.Tensor,
    config: Config,
    options: Options,
    how: str,
    seed: int,
    restart: int,
    progress: Progress,
    whiten: bool = False,
) -> Run:
    """One SVI restart: closed-form start, Adam steps until the stop rule or max_iter,
    then the final objective (closed form where the model allows it). ``whiten``: q(W) in
    the coordinates of :class:`Whitening`."""
    N = X.shape[0]
    run = Run()
    pyro.set_rng_seed(seed)
    cfg = _fresh_config(config, seed, restart)
    xi = cfg.regularization_cov
    with pyro.get_param_store().scope():
        has_reg, gate_prior = _initialise(model, X, y, cfg, options, how, seed)
        store = pyro.get_param_store()
        white = Whitening.of(store) if whiten else None
        guide = model.guide if white is None else white.guide(model.guide)
        elbo = TraceEnum_ELBO(max_plate_nesting=1, num_particles=options.num_particles)
        lr = options.lr if options.lr is not None else (WHITE_LR if white else PLAIN_LR)
        # built on the first step, from the parameters that step registers
        optim = average = params = None
        B = options.batch_size
        gen = torch.Generator(device="cpu").manual_seed(seed)
        batches: list[torch.Tensor] = []
        passes, stop_se = 0, math.inf
        t0 = time.perf_counter()
        for step in range(1, options.max_iter + 1):
            kw = {}
            if B is not None:
                if not batches:
                    perm = torch.randperm(N, generator=gen, device="cpu").to(X.device)
                    batches = list(perm.split(B))[::-1]
                kw["subsample"] = batches.pop()
            try:
                with poutine.trace(param_only=True) as capture:
                    surrogate = elbo.differentiable_loss(model.model, guide, X, y, cfg, **kw)
            except Exception as e:  # a step that made a parameter inf or NaN: a divergence
                if step > 1 and not isinstance(e, PyroMoeError) and not _store_finite(store):
                    raise _diverged(step, lr) from e
                raise
            if optim is None:  # every unconstrained leaf the step read (not substituted ones)
                leaves = {id(v.unconstrained()): v.unconstrained()
                          for v in (n["value"] for n in capture.trace.nodes.values())
                          if hasattr(v, "unconstrained")}  # fmt: skip
                params = list(leaves.values())
                average = [p.detach().clone() for p in params]
                optim = ClippedAdam(
                    params, lr=lr, clip_norm=options.clip_norm,
                    lrd=options.lr_decay ** (1.0 / options.max_iter),
                )  # fmt: skip
            loss = float(surrogate.detach())
            if not math.isfinite(loss):
                raise _diverged(step, lr)
            optim.zero_grad()
            surrogate.backward()
            optim.step()
            # the iterates' mean, exponentially weighted over the last ~window steps
            c = max(1.0 / step, 1.0 / options.window)
            with torch.no_grad():
                for a, p in zip(average, params, strict=True):
                    a.lerp_(p, c)
            F = -loss
            prior_terms = _regularizer_at(xi, has_reg, cfg) + _gate_log_prior(gate_prior, cfg)
            run.record(F, F - prior_terms, time.perf_counter() - t0)
            progress.update()
            if step % options.eval_every == 0:
                ok, stop_se = window_test(run.objective, options.window, options.tol, N)
                passes = passes + 1 if ok else 0
                if passes >= options.history:
                    run.converged = True
                    break
        run.iterations = len(run.objective)
        if average is not None:  # the final q is the iterates' mean (Polyak-Ruppert)
            with torch.no_grad():
                for a, p in zip(average, params, strict=True):
                    p.copy_(a)
        if white is not None:
            white.write_back(store)
        elbo_f, F_f, se = _objective_at(model, X, y, cfg, options, gate_prior)
        run.record(F_f, elbo_f, time.perf_counter() - t0)
        run.summary["objective_se"] = se
        run.summary["stop_se"] = stop_se
        run.summary["optimizer"] = "adam"
        run.summary["whitened"] = white is not None
        _fitted(run, {k: store[k].detach().clone() for k in store.keys()},
                _config_from_store(cfg), config)  # fmt: skip
        run.posterior.site_draws = _site_draws(model, X, y, cfg, SITE_DRAWS)
    return run


#: Adam's default learning rates (:data:`pyro_moe.parameters.SVI_LR`): on the guide's own
#: parameters (the weights' posterior sd on the study's circles is ~1e-3 in their units, see
#: OPTIONS) and in whitened coordinates (units of the start's posterior sd, :class:`Whitening`)
PLAIN_LR, WHITE_LR = SVI_LR["adam"], SVI_LR["whitened"]


class Whitening:
    """q(W) = N(m, L L^T) in coordinates whitened by a Gaussian approximation N(m0, L0 L0^T)
    of it (the closed-form start: the conjugate q(W) given the initial q(Z) under the
    config's Gaussian N(w0, A)):

        m = m0 + L0 u,    L = L0 T,    T lower triangular, positive diagonal,

    u = 0 and T = I at the start. Adam moves each coordinate by about lr per step, so in
    these coordinates a step is ~lr posterior sds whatever the weights' units (on the
    guide's own (m, L) it is lr in the weights' units: 100 sds where the sd is 1e-5).
    The guide's ``weight_mean`` and ``weight_scale_tril`` are substituted by m and L
    (:func:`pyro.poutine.substitute`), so the model file's guide is run as written."""

    def __init__(self, m0: torch.Tensor, L0: torch.Tensor):
        self.m0, self.L0 = m0, L0

    @classmethod
    def of(cls, store) -> Whitening | None:
        """From the start values in the param store (None: the guide has no such q(W))."""
        if "weight_mean" not in store or "weight_scale_tril" not in store:
            return None
        return cls(
            store["weight_mean"].detach().clone(), store["weight_scale_tril"].detach().clone()
        )

    def _at(self) -> tuple[torch.Tensor, torch.Tensor]:
        m0, L0 = self.m0, self.L0
        u = pyro.param("weight_white_mean", lambda: torch.zeros_like(m0))
        eye = torch.eye(L0.shape[-1], dtype=L0.dtype, device=L0.device).expand_as(L0)
        T = pyro.param("weight_white_scale_tril", lambda: eye.clone(),
                       constraint=dist.constraints.lower_cholesky)  # fmt: skip
        return m0 + (L0 @ u.unsqueeze(-1)).squeeze(-1), L0 @ T

    def guide(self, guide):
        """The model file's guide with q(W) read from the whitened coordinates."""

        def whitened(*args, **kwargs):
            m, L = self._at()
            return poutine.substitute(guide, data={"weight_mean": m, "weight_scale_tril": L})(
                *args, **kwargs
            )

        return whitened

    def write_back(self, store) -> None:
        """Put the final (m, L) into the guide's own parameters; drop (u, T)."""
        with torch.no_grad():
            m, L = self._at()
            store["weight_mean"], store["weight_scale_tril"] = m.detach(), L.detach()
        for name in ("weight_white_mean", "weight_white_scale_tril"):
            del store[name]


#: the sites the Posterior holds in closed form; every other latent site is drawn
KNOWN_SITES = frozenset({"pi", "w", "z", "noise_precision"})
SITE_DRAWS = 1000  # draws kept of each other latent site's q (ArviZ's default per chain)


def _site_draws(model: Model, X, y, cfg: Config, S: int) -> dict[str, torch.Tensor] | None:
    """S draws from the final guide of every latent site outside :data:`KNOWN_SITES` (an
    added scale tau, a latent hyperparameter), (S, *site shape), or None without any. The
    guide runs on one data row (``subsample``), so a draw costs the globals only."""
    idx = torch.zeros(1, dtype=torch.long, device=X.device)
    draws: dict[str, list[torch.Tensor]] = {}
    with torch.no_grad():
        for i in range(S):
            tr = poutine.trace(model.guide).get_trace(X, y, cfg, subsample=idx)
            for name, site in tr.nodes.items():
                if (site["type"] == "sample" and not site["is_observed"]
                        and not site_is_subsample(site) and name not in KNOWN_SITES):  # fmt: skip
                    draws.setdefault(name, []).append(site["value"].detach().clone())
            if i == 0 and not draws:
                return None
    return {name: torch.stack(v) for name, v in draws.items()}


def _regularizer_at(xi, has_reg: bool, cfg: Config) -> float:
    if xi is None or not has_reg or cfg.experts < 2:
        return 0.0
    return float(U.regularizer(_current_prior_mean(cfg), xi))


def _fitted(run: Run, p: dict[str, torch.Tensor], cfg: Config, config: Config) -> None:
    """The run's posterior and hyperparameters from the final guide parameters ``p`` and
    the final config ``cfg`` (learned hyperparameters and gate of the store)."""
    like = cfg.prior_mean  # the dtype and device of the fit
    L = p["weight_scale_tril"]
    if "noise_shape" in p:
        noise = p["noise_shape"] / p["noise_rate"]
    else:
        noise = cfg.noise_precision.detach()
    gate_state = None
    if cfg.gate is not None:
        gate_state = {k: v.detach().clone() for k, v in cfg.gate.state_dict().items()}
        run.gate = cfg.gate
    run.posterior = Posterior(
        responsibilities=p["assignment_probs"],
        mean=p["weight_mean"],
        cov=L @ L.transpose(-1, -2),
        alpha=p.get("mixing_concentration"),
        noise_shape=p.get("noise_shape"),
        noise_rate=p.get("noise_rate"),
    )
    run.hyper = Hyperparameters(
        prior_mean=cfg.prior_mean.detach().clone(),
        prior_cov=cfg.prior_cov.detach().clone(),
        noise_precision=torch.as_tensor(noise, dtype=like.dtype, device=like.device).reshape(
            cfg.noise_precision.shape
        ),
        concentration=config.concentration,
        regularization_cov=config.regularization_cov,
        noise_bounds=config.noise_bounds,
        noise_weight=cfg.noise_weight if cfg.gate is not None and cfg.noise_expert else None,
        gate_state=gate_state,
        gate_hidden=config.gate_hidden,
        maps=config.maps,
    )
