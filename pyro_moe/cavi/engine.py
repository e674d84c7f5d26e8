"""Closed-form variational EM (CAVI) for the model files, with restarts.

One iteration (derivation section 6), each step the exact maximiser of the objective over
its block with the others fixed, so the recorded objective never decreases:

    q(W) -> q(pi) -> [w0] -> [A] -> [beta or q(beta)] -> [gate V] -> q(Z) -> record F

F = ELBO (+ R(w0) for the regularized model) (+ log p(V) with a gate prior) is the total
in nats. The gate step is a few L-BFGS iterations on sum_ik r_ik log g_ik(V) [+ log p(V)],
rejected if it does not increase that term.

Floors for noise-free data (which drive beta -> inf and A_k -> 0, where an unguarded
implementation fails in its Cholesky): beta <= ``noise_precision_max`` (default
1e10 / Var(y)) and every eigenvalue of A_k >= ``prior_var_min`` (default 1e-10). Both are
exact constrained maximisers, so monotonicity holds with them.
"""

from __future__ import annotations

import copy
import math
import sys
import time
from dataclasses import dataclass, field

import torch
from tqdm import tqdm

from ..config import Config, gate_weights
from ..model_file import Model
from ..restarts import best_of_restarts, fresh_gate, init_schedule, warn_not_converged
from ..result import FitResult
from . import updates as U
from .conjugacy import Conjugate, read_model
from .init import initial_log_responsibilities

LOG_2PI = math.log(2 * math.pi)


@dataclass
class Options:
    """Settings of a CAVI fit (see :func:`fit_cavi`)."""

    n_init: int = 5
    init: str | list[str] = "auto"
    tol: float = 1e-8
    max_iter: int = 1000
    seed: int = 0
    responsibilities: torch.Tensor | None = None
    prior_var_min: float = 1e-10
    noise_precision_max: float | None = None
    gate_steps: int = 10
    gate_dtype: str = "auto"
    gate_warm_start: bool | None = None
    gate_tolerance: float | None = None
    gate_skip_tol: float = 1e-7
    progress: bool | None = None

    # gate_steps: L-BFGS iterations of the gate per CAVI iteration. gate_dtype: "auto"
    # (the data's dtype), "float32" or "float64"; the accept test is always in the data's
    # dtype. gate_warm_start: keep the L-BFGS history across CAVI iterations (None: from
    # GATE_WARM_START_N points). Measured (benchmarks/results/cavi.md, and 15 iterations at
    # 1e6 points: float64 warm 8.8 s, float32 warm 16.6 s, same objective): float32 does not
    # pay here, because converged float32 L-BFGS never meets its tolerance and spends every
    # step; below 1e5 points the float64 cold start is cheap. gate_skip_tol: a gate step
    # that gained at most gate_skip_tol * max(|F|, N) nats is skipped for the next 1, 2,
    # 4, ... GATE_MAX_BACKOFF iterations (the gate is the costliest block). With the warm
    # start, while the last gate step gained > GATE_PRESAMPLE_GAIN nats per point, L-BFGS
    # first runs on a subsample of GATE_PRESAMPLE rows (docs/cavi_notes.md section 6).
    # Converged when |F_t - F_{t-1}| <= tol * max(|F_t|, N): a relative change, measured
    # against N when F is near zero (F is a sum over N points).


@dataclass
class _Run:
    objective: list[float] = field(default_factory=list)
    elbo: list[float] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    converged: bool = False
    state: dict = field(default_factory=dict)


def fit_cavi(
    model: Model, X: torch.Tensor, y: torch.Tensor, config: Config, options: Options
) -> FitResult:
    """Fit ``model`` to (X, y) by CAVI, ``options.n_init`` restarts, best objective kept.

    X (N, n) and y (N,) must be float64 tensors on the device to compute on.
    """
    conj = read_model(model, X, y, config)
    inits = init_schedule(options, conj.prior_mean)
    start = time.perf_counter()
    best, summaries = best_of_restarts(
        inits,
        options.seed,
        lambda how, seed, i: _run(X, y, config, conj, options, how, seed, i, len(inits)),
        lambda run: {
            "objective": run.objective[-1],
            "iterations": len(run.objective),
            "converged": run.converged,
        },
    )
    if not best.converged:
        warn_not_converged(
            f"CAVI did not converge in max_iter={options.max_iter} iterations (tol={options.tol}); "
            "raise max_iter or loosen tol"
        )
    return _result(model, X, y, config, conj, best, summaries, time.perf_counter() - start)


GATE_WARM_START_N = 100_000  # the gate's L-BFGS keeps its history from this many points
GATE_MAX_BACKOFF = 16  # at most this many CAVI iterations between gate steps
GATE_PRESAMPLE = 65_536  # rows of the subsample a large gate move is first fitted on
GATE_PRESAMPLE_GAIN = 1e-4  # ... while the last gate step gained more than this many nats/point


class GateFitter:
    """The gate M-step across CAVI iterations: L-BFGS on

        G(V) = sum_ik r_ik log softmax_k(V(x_i))  [+ log p(V)],

    with the gate prior log p(V) = -|W|^2 / (2 s^2) + const on the gate's weights W
    (``prior_scale`` = s; MAP for V, see ``docs/cavi_notes.md`` section 7).

    Objective and gradient are summed over row chunks (bounded temporaries, cache-sized
    blocks). The L-BFGS may run on a float32 copy of the gate (``dtype``) and keep its
    curvature history from one CAVI iteration to the next (``warm``); either way the
    candidate is scored in the data's dtype and rejected unless it does not lower G,
    so the objective never decreases.

    The closure keeps the log softmax it computed (data dtype only) with the parameters it
    was computed at; when L-BFGS ends on the last point it evaluated (as it usually does),
    the accept test reuses it instead of another pass over the data.
    """

    def __init__(
        self,
        gate: torch.nn.Module,
        X: torch.Tensor,
        steps: int,
        dtype: torch.dtype | None = None,
        warm: bool = False,
        tolerance: float | None = None,
        prior_scale: float | None = None,
    ):
        self.gate, self.X, self.steps, self.warm = gate, X, steps, warm
        self.prior_scale = prior_scale
        self.tolerance = tolerance if tolerance is not None else 1e-14
        self.params = [p for p in gate.parameters() if p.requires_grad]
        dtype = dtype or X.dtype
        if dtype == X.dtype:
            self.work, self.Xw = gate, X
        else:
            self.work = copy.deepcopy(gate).to(dtype)
            self.Xw = X.to(dtype)
        self.wparams = [p for p in self.work.parameters() if p.requires_grad]
        self.wweights = [p for p in gate_weights(self.work) if p.requires_grad]
        self.opt: torch.optim.LBFGS | None = None
        N = X.shape[0]
        self.rows = U.chunk_rows(N, 4 * max(8, sum(p.numel() for p in self.params) // 4))
        self._cached: tuple[torch.Tensor, torch.Tensor] | None = None  # (params, log softmax)
        # a large move of the gate is first found on a subsample (see step)
        self.sample = None
        if warm and N > 2 * GATE_PRESAMPLE:
            gen = torch.Generator(device="cpu").manual_seed(0)  # the same rows on every device
            self.sample = torch.randperm(N, generator=gen, device="cpu")[:GATE_PRESAMPLE].to(
                X.device
            )
        self.last_gain = float("inf")

    def _flat_params(self) -> torch.Tensor:
        return torch.cat([p.detach().reshape(-1) for p in self.params])

    def log_softmax(self) -> torch.Tensor:
        """log softmax_k(V(x_i)) (N, K) in the data's dtype, chunked, without gradients."""
        with torch.no_grad():
            parts = [
                torch.log_softmax(self.gate(self.X[sl]), -1)
                for sl in U.chunks(self.X.shape[0], self.rows)
            ]
        return torch.cat(parts) if len(parts) > 1 else parts[0]

    def log_prior(self) -> torch.Tensor:
        """log p(V) at the present parameters (0 without a gate prior), in the data's dtype."""
        if self.prior_scale is None:
            return self.X.new_zeros(())
        with torch.no_grad():
            return U.gate_log_prior(gate_weights(self.gate), self.prior_scale).to(self.X.dtype)

    def _lbfgs(self) -> torch.optim.LBFGS:
        """The gate's L-BFGS (strong Wolfe line search) over the working parameters."""
        return torch.optim.LBFGS(
            self.wparams, max_iter=self.steps, line_search_fn="strong_wolfe",
            tolerance_grad=1e-10, tolerance_change=self.tolerance,
        )  # fmt: skip

    def _penalty(self, N: int) -> torch.Tensor:
        """-log p(V) / N up to a constant: |W|^2 / (2 s^2 N) on the working weights."""
        assert self.prior_scale is not None
        return sum((w * w).sum() for w in self.wweights) / (2 * self.prior_scale**2 * N)

    def _presample(self, r: torch.Tensor) -> None:
        """L-BFGS on the subsample's term, -(1/m) sum_{i in S} r_i . log g(x_i) + |W|^2 /
        (2 s^2 N), an unbiased estimate of the full loss: it moves the parameters most of
        the way at m/N of the cost; the full-data step then polishes and decides."""
        assert self.sample is not None
        Xs, rs = self.Xw[self.sample], r[self.sample]
        N, m = self.Xw.shape[0], len(self.sample)
        opt = self._lbfgs()

        def closure():
            opt.zero_grad()
            loss = -(rs * torch.log_softmax(self.work(Xs), -1)).sum() / m
            if self.prior_scale is not None:
                loss = loss + self._penalty(N)
            loss.backward()
            return loss

        opt.step(closure)

    def _closure(self, r: torch.Tensor):
        N = self.Xw.shape[0]
        keep = self.work is self.gate  # the log softmax is in the data's dtype

        def closure():
            assert self.opt is not None
            self.opt.zero_grad()
            total = self.X.new_zeros(())  # summed in the data's dtype
            if self.prior_scale is not None:
                penalty = self._penalty(N)
                penalty.backward()
                total += penalty.detach().to(total.dtype)
            self._cached = None  # the last evaluation's buffer goes before a new one comes
            out = self.X.new_empty(N, r.shape[-1]) if keep else None
            for sl in U.chunks(N, self.rows):
                log_g = torch.log_softmax(self.work(self.Xw[sl]), -1)
                loss = -(r[sl] * log_g).sum() / N
                loss.backward()
                total += loss.detach().to(total.dtype)
                if out is not None:
                    out[sl] = log_g.detach()
            self._cached = (self._flat_params(), out) if out is not None else None
            return total

        return closure

    def step(self, r: torch.Tensor, current: torch.Tensor) -> torch.Tensor:
        """One gate M-step given r (N, K) and ``current`` = log softmax of V at the present
        parameters (N, K); returns the log softmax at the kept parameters."""
        before = (r * current).sum() + self.log_prior()
        saved = [p.detach().clone() for p in self.params]
        if self.opt is None or not self.warm:
            self.opt = self._lbfgs()
        rw = r if r.dtype == self.Xw.dtype else r.to(self.Xw.dtype)
        if self.sample is not None and self.last_gain > GATE_PRESAMPLE_GAIN * r.shape[0]:
            self._presample(rw)
        self.opt.step(self._closure(rw))
        with torch.no_grad():
            if self.work is not self.gate:
                for p, w in zip(self.params, self.wparams, strict=True):
                    p.copy_(w)
        cached, self._cached = self._cached, None
        if cached is not None and torch.equal(cached[0], self._flat_params()):
            new = cached[1]
        else:
            new = self.log_softmax()
        after = (r * new).sum() + self.log_prior()
        if after >= before:
            self.last_gain = float(after - before)
            return new
        with torch.no_grad():  # rejected: back to the saved parameters, fresh curvature
            for p, s in zip(self.params, saved, strict=True):
                p.copy_(s)
            if self.work is not self.gate:
                for w, s in zip(self.wparams, saved, strict=True):
                    w.copy_(s)
        self.opt = None
        return current


def gate_step(
    gate: torch.nn.Module,
    X: torch.Tensor,
    r: torch.Tensor,
    steps: int,
    prior_scale: float | None = None,
) -> None:
    """Increase sum_ik r_ik log softmax_k(V(x_i)) [+ log p(V)] by L-BFGS (k over the K
    experts; with a noise expert the term separates from rho's, see
    :func:`pyro_moe.config.log_gate`); reject the step if it lowered the term."""
    fitter = GateFitter(gate, X, steps, prior_scale=prior_scale)
    fitter.step(r, fitter.log_softmax())


def _point_last(t: torch.Tensor) -> torch.Tensor:
    """``t`` (N, C) as the (N, C) view of a (C, N) tensor, the layout the e-step reads
    (one transposed copy per gate step, against a strided read in every e-step); no copy
    when it is already so."""
    return t.T.contiguous().T


def _log_gate(log_softmax: torch.Tensor, rho) -> torch.Tensor:
    """:func:`pyro_moe.config.log_gate` from the gate's log softmax (N, K), point-last
    (:func:`_point_last`); ``log_softmax`` itself without a noise expert."""
    if rho is None:
        return log_softmax
    N, K = log_softmax.shape
    out = log_softmax.new_empty(K + 1, N)
    torch.add(log_softmax.T, torch.log1p(-rho), out=out[:K])
    out[K] = torch.log(rho)
    return out.T


def _run(
    X,
    y,
    config: Config,
    conj: Conjugate,
    options: Options,
    how: str,
    seed: int,
    restart: int,
    restarts: int,
) -> _Run:
    N = X.shape[0]
    K, n_comp = config.experts, config.components
    maps = config.maps  # each expert's own features and target (None: the shared design)
    noise = conj.noise_log_density
    learn = config.learn
    w0, A = conj.prior_mean.clone(), conj.prior_cov.clone()
    xi = conj.regularization_cov
    mu = conj.concentration
    var_y = float(y.var()) if N > 1 else 1.0
    beta_max = options.noise_precision_max or 1e10 / max(var_y, 1e-300)
    latent_beta = conj.noise_prior is not None
    if latent_beta:
        a0, b0 = conj.noise_prior
        a, b = a0 + 0.5 * N, b0 + 0.5 * N / config.noise_precision
        e_beta, e_log_beta = a / b, torch.digamma(a) - torch.log(b)
    else:
        beta = conj.noise_precision.clamp(max=beta_max)
        e_beta, e_log_beta = beta, torch.log(beta)
    gate = fresh_gate(config.gate, seed, restart)
    learn_gate = gate is not None and "gate" in learn
    rho = gate_prior = None
    if gate is not None:
        for p in gate.parameters():
            p.requires_grad_(learn_gate)
        rho = config.noise_weight
        gate_dtype = {"float32": torch.float32, "float64": torch.float64}.get(
            options.gate_dtype,
            X.dtype,
        )
        warm = options.gate_warm_start
        warm = N >= GATE_WARM_START_N if warm is None else warm
        fitter = GateFitter(
            gate, X, options.gate_steps, gate_dtype, warm, options.gate_tolerance,
            conj.gate_prior_scale if learn_gate else None,
        )  # fmt: skip
        gate_log_softmax = _point_last(fitter.log_softmax())
        # log p(V): a constant when the gate is held fixed, updated with each gate step
        gate_prior = (
            U.gate_log_prior(gate_weights(gate), conj.gate_prior_scale).detach().to(X.dtype)
            if conj.gate_prior_scale is not None
            else None
        )
        log_gate = _log_gate(gate_log_softmax, rho)
    alpha = None

    def log_prior_of(alpha_):
        return U.dirichlet_expected_log(alpha_).expand(N, n_comp) if conj.mixture else log_gate

    log_r = initial_log_responsibilities(
        how, X, y, K, seed,
        prior=U.prior_from(w0, A),
        log_prior=(U.dirichlet_expected_log(mu).expand(N, n_comp) if conj.mixture else log_gate),
        e_beta=e_beta, e_log_beta=e_log_beta, given=options.responsibilities,
        noise_log_density=noise, maps=maps,
    )  # fmt: skip
    r = log_r.exp()
    # the noise expert has no weights
    stats, r_sum = U.sufficient_stats(X, y, r[:, :K], maps), r.sum(0)
    del r
    log_r = _point_last(log_r)  # the e-step's layout: (N, C) view of a (C, N) buffer

    # A^{-1}, log|A|, A^{-1} w0 and log B(mu): rebuilt only when the M-step moves w0 or A
    prior = U.weight_prior(w0, A)
    log_norm_mu = U.dirichlet_log_norm(mu) if conj.mixture else None
    run = _Run()
    gate_wait, gate_backoff = 0, 1
    t0 = time.perf_counter()
    show = (
        options.progress
        if options.progress is not None
        else (sys.stderr.isatty() and N * K > 10**6)
    )
    bar = tqdm(
        total=options.max_iter, disable=not show, desc=f"CAVI {restart + 1}/{restarts}", leave=False
    )
    for _ in range(options.max_iter):
        # stats and r_sum are those of the current q(Z) (computed in its E-step pass)
        q = U.update_weights(stats, prior, e_beta)
        if conj.mixture:
            alpha = mu + r_sum
        if "prior_mean" in learn:
            w0 = U.update_prior_mean(q, prior.precision, xi)
        if "prior_cov" in learn:
            A = U.update_prior_cov(q, w0, options.prior_var_min)
        if "prior_mean" in learn or "prior_cov" in learn:
            prior = U.weight_prior(w0, A)
        total_sq = U.summed_sq_residuals(stats, q).sum()
        n_gauss = stats.Nk.sum()  # points explained by the Gaussian experts (N without noise)
        if latent_beta:
            a, b = U.update_noise_gamma(total_sq, n_gauss, a0, b0)
            e_beta, e_log_beta = a / b, torch.digamma(a) - torch.log(b)
        elif "noise_precision" in learn:
            beta = U.update_noise_precision(total_sq, n_gauss, beta_max)
            e_beta, e_log_beta = beta, torch.log(beta)
        if learn_gate:
            # a gate step whose gain was negligible is skipped for 1, 2, 4, ... iterations
            # (a partial M-step: skipping never lowers the objective)
            if gate_wait == 0:
                r_k = log_r[:, :K].contiguous().exp_()  # (N, K), row-major for the gate
                before = (r_k * gate_log_softmax).sum() + fitter.log_prior()
                gate_log_softmax = _point_last(fitter.step(r_k, gate_log_softmax))
                gain = float((r_k * gate_log_softmax).sum() + fitter.log_prior() - before)
                if gate_prior is not None:
                    gate_prior = fitter.log_prior()
                del r_k
                scale = max(abs(run.objective[-1]), N) if run.objective else float("inf")
                if gain <= options.gate_skip_tol * scale:
                    gate_backoff = min(2 * gate_backoff, GATE_MAX_BACKOFF)
                    gate_wait = gate_backoff
                else:
                    gate_backoff = 1
            else:
                gate_wait -= 1
            if rho is not None:  # M-step for the noise share: rho = (1/N) sum_i r_iK
                rho = (r_sum[K] / N).clamp(1e-12, 1 - 1e-12)
            log_gate = _log_gate(gate_log_softmax, rho)
        log_prior = log_prior_of(alpha)
        # q(Z), fused with the next iteration's sufficient statistics and the ELBO's
        # data term sum_i lse_i; log r is written in place (no second (N, C) buffer)
        est = U.e_step(X, y, q, log_prior, e_log_beta, e_beta, noise, out=log_r, maps=maps)
        log_r, stats, r_sum = est.log_r, est.stats, est.r_sum
        elbo, F = U.elbo_from_lse(
            est.lse, q, prior=prior, alpha=alpha, mu=mu if conj.mixture else None,
            log_norm_mu=log_norm_mu,
            qbeta=(a, b) if latent_beta else None, beta_prior=conj.noise_prior, xi=xi,
        )  # fmt: skip
        if gate_prior is not None:
            F = F + gate_prior  # log p(V): MAP for the gate (docs/cavi_notes.md section 7)
        if not torch.isfinite(F):
            raise FloatingPointError(
                "CAVI produced a non-finite objective; please report this data set"
            )
        run.elbo.append(float(elbo))
        run.objective.append(float(F))
        run.times.append(time.perf_counter() - t0)
        bar.update()
        if len(run.objective) % 10 == 0:
            bar.set_postfix(objective=f"{run.objective[-1]:.6g}")
        if len(run.objective) > 1:
            prev, cur = run.objective[-2], run.objective[-1]
            if abs(cur - prev) <= options.tol * max(abs(cur), N):
                run.converged = True
                break
    bar.close()
    run.state = dict(
        log_r=log_r, q=q, w0=w0, A=A, alpha=alpha, e_beta=e_beta,
        qbeta=(a, b) if latent_beta else None, gate=gate,
        log_gate=log_gate if gate is not None else None, xi=xi, mu=mu,
        rho=rho if gate is not None else None,
    )  # fmt: skip
    return run


def _result(
    model: Model, X, y, config: Config, conj: Conjugate, run: _Run, summaries, wall: float
) -> FitResult:
    s = run.state
    gate = s["gate"]
    return FitResult(
        method="cavi",
        model_name=model.name,
        model_path=str(model.path),
        X=X,
        y=y,
        responsibilities=s["log_r"].contiguous().exp_(),  # row-major, one (N, C) copy
        mean=s["q"].mean,
        cov=s["q"].cov,
        prior_mean=s["w0"],
        prior_cov=s["A"],
        noise_precision=torch.as_tensor(s["e_beta"], dtype=X.dtype, device=X.device).reshape(()),
        concentration=s["mu"] if s["mu"] is not None else config.concentration,
        objective_history=torch.tensor(run.objective, dtype=torch.float64, device="cpu"),
        elbo_history=torch.tensor(run.elbo, dtype=torch.float64, device="cpu"),
        time_history=torch.tensor(run.times, dtype=torch.float64, device="cpu"),
        iterations=len(run.objective),
        wall_time=wall,
        converged=run.converged,
        learn=tuple(sorted(config.learn)),
        alpha=s["alpha"],
        log_gate=s["log_gate"],
        noise_shape=s["qbeta"][0] if s["qbeta"] else None,
        noise_rate=s["qbeta"][1] if s["qbeta"] else None,
        noise_bounds=config.noise_bounds,
        noise_weight=s["rho"],
        regularization_cov=s["xi"],
        gate_state={k: v.detach().clone() for k, v in gate.state_dict().items()} if gate else None,
        gate_hidden=config.gate_hidden,
        restarts=summaries,
        maps=config.maps,
    )
