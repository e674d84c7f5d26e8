"""Natural-gradient SVI for the conjugate sites (Hoffman, Blei, Wang & Paisley 2013).

The SVI engine's default (``method="svi"``, ``optimizer="natural"``) on a model file whose
sites are conjugate (:func:`pyro_moe.closed_form.sites.read_model` accepts it). The latent
global sites are held in their natural parameters,

    q(w_k) = N(m_k, B_k):      eta_w  = (h_k, J_k) = (B_k^{-1} m_k, B_k^{-1})
    q(pi)  = Dir(alpha):       eta_pi = alpha - 1
    q(beta) = Gamma(a, b):     eta_b  = (a - 1, -b)

and every step is

    eta <- (1 - rho_t) eta + rho_t eta_hat,

(a non-Gaussian factorised prior on w, e.g. Laplace or Student-t: conjugate-computation VI,
Khan & Lin 2017, the prior's term of eta_hat_w linearised at the present q,
J_hat = beta S_k - E_q[hess log p(w)], h_hat = beta s_k + E_q[grad log p(w)] - J_prior m_k,
:mod:`pyro_moe.closed_form.linearised`; the first step is the conjugate one with the
Gaussian N(w0, A) of the config, and the objective's KL of q(W) is -E_q log p(w) - H[q] by
quadrature)

with eta_hat the optimal natural parameters given the minibatch's expected sufficient
statistics rescaled by N/B (:func:`pyro_moe.closed_form.updates.weights_natural`,
``mu + (N/B) sum_i r_i``, :func:`~pyro_moe.closed_form.updates.update_noise_gamma`). For an
exponential family, eta_hat - eta is the natural gradient of the ELBO in eta: the
Euclidean gradient preconditioned by the inverse Fisher information of q,
F(eta)^{-1} grad_eta ELBO (``tests/test_engines_natural.py`` checks it against Pyro's own
gradient). The local step is the closed-form q(z_i) of the minibatch given the globals
(:func:`~pyro_moe.closed_form.updates.e_step`).

Step sizes: rho_t = 1 with the full batch (each step is then exactly one CAVI iteration,
in CAVI's order: q(W), q(pi), [w0], [A], [beta or q(beta)], [gate], q(Z)); with minibatches
Robbins-Monro rho_t = (t + tau)^(-kappa), kappa = 0.7, tau = 10 (scikit-learn's online
LDA; a smaller tau was faster but less robust, see :data:`pyro_moe.engines.svi.OPTIONS`),
t the minibatch step. The first step is always taken with rho = 1 from the full-data
statistics of the initial q(Z) (the closed-form start).

Point estimates: w0 and A have exact M-steps from q(W) (no data); a learned beta and the
noise expert's share follow online EM (Cappe & Moulines 2009): their M-steps read running
averages S_bar <- (1 - rho_t) S_bar + rho_t (N/B) S_batch of the statistics. The gate
(a neural network, no conjugate form) takes, on the full batch, CAVI's own M-step
(:class:`~pyro_moe.engines.gate.GateFitter`: L-BFGS on sum_ik r_ik log g_k(x_i)
[+ log p(V)], accepted only if it does not lower it; Adam's small steps left SVI 0.06-64
nats short of CAVI after 3000 steps on the study's rows, all gated), and on minibatches
Adam steps on (N/B) sum_{i in batch} sum_k r_ik log g_k(x_i) [+ log p(V)], a separate
parameter group.

Objective: per step, the minibatch estimate F_hat = (N/B) sum_{i in batch} lse_i - KL terms
(:func:`~pyro_moe.closed_form.updates.elbo_from_lse`), unbiased for F at the step's globals
with their optimal q(Z); exact with the full batch. The final entry is the closed form on
all points after a last local step (so the reported F is the model file's ELBO under its
guide, evaluated exactly, as Pyro's TraceEnum_ELBO estimates it).

Data: every pass over the data goes through a *source* (:class:`Rows` here, the data in
memory; :class:`pyro_moe.distributed.DaskSource` for row chunks on a Dask cluster): the
full-data passes (the initial q(Z)'s statistics, a full-batch local step, the gate's
L-BFGS M-step, the stop rule's subsample, the final closed form) run where the data are,
and only a minibatch's rows (:meth:`Rows.batch`) come to the client, whose local step and
global step are the same code for both.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass

import torch

from ..closed_form import updates as U
from ..closed_form.sites import Conjugate
from ..config import Config, gate_weights, log_gate
from .base import Progress, Run, closed_form_fit, fresh_gate
from .cavi import OPTIONS as CAVI_OPTIONS
from .cavi import InMemory
from .gate import GATE_WARM_START_N
from .options import Options

__all__ = ["LogPrior", "Rows", "held_out_sums", "natural_run", "robbins_monro", "window_test"]


#: The minibatch stop rule evaluates F on all rows up to this many (exactly: no Monte Carlo
#: error), else on a fixed subsample of this many. Measured with stray points and the noise
#: expert (benchmarks/natural_scaling.py's "stray" scene, B = 1000): on a 4B-row subsample
#: the change's standard error (0.07, 2.8, 3.0 nats at N = 1e4, 1e5, 1e6) kept the rule
#: from passing in 3000 steps at every N although F had converged; evaluated on all rows
#: (one pass costs ~50 ns a row, against ~3 ms for each of the eval_every steps between
#: two evaluations) it passed after 200, 1600 and 2800 steps at tol = 1e-6.
EVAL_ROWS = 1_000_000


def robbins_monro(t: int, kappa: float, tau: float) -> float:
    """rho_t = (t + tau)^(-kappa): sum rho_t = inf and sum rho_t^2 < inf for kappa in (0.5, 1]."""
    return (t + tau) ** (-kappa)


def window_test(values: list[float], window: int, tol: float, N: int) -> tuple[bool, float]:
    """The stop rule on noisy objective estimates, with their Monte Carlo standard error.

    With the last two windows of ``window`` per-step estimates, means F1 (older) and F2,
    d = F2 - F1 and se(d) = sqrt(s1^2 / w + s2^2 / w) (s the windows' standard deviations):
    converged when |d| + 2 se(d) <= tol * max(|F2|, N), i.e. the change per window is
    below tolerance with ~97.5 % confidence; an estimate too noisy to tell does not count
    as converged. Returns (converged, se of F2).
    """
    if len(values) < 2 * window:
        return False, math.inf
    old, new = values[-2 * window : -window], values[-window:]
    if window > 1:
        s1, s2 = statistics.variance(old), statistics.variance(new)
    else:
        s1 = s2 = 0.0
    f1, f2 = statistics.fmean(old), statistics.fmean(new)
    se_new = math.sqrt(s2 / window)
    se_d = math.sqrt((s1 + s2) / window)
    return abs(f2 - f1) + 2.0 * se_d <= tol * max(abs(f2), N), se_new


def _scaled(stats: U.Stats, c: float) -> U.Stats:
    return U.Stats(stats.Nk * c, stats.S * c, stats.s * c, stats.yy * c)


def _mixed(old: U.Stats, new: U.Stats, rho: float) -> U.Stats:
    """(1 - rho) old + rho new, field by field (exactly ``new`` for rho = 1)."""
    return U.Stats(*((1 - rho) * a + rho * b for a, b in zip(
        (old.Nk, old.S, old.s, old.yy), (new.Nk, new.S, new.s, new.yy), strict=True)))  # fmt: skip


@dataclass
class LogPrior:
    """The E-step's log prior of any rows: the mixture's row E[log pi] broadcast over them
    (``row`` (1, C)), or the gate's log g(x) with the noise share (``gate`` at its present
    parameters, :func:`pyro_moe.config.log_gate`). Evaluated where the rows are (this
    process, or a Dask worker for its chunk)."""

    row: torch.Tensor | None = None
    gate: torch.nn.Module | None = None
    share: torch.Tensor | None = None

    def __call__(self, X: torch.Tensor) -> torch.Tensor:
        if self.row is not None:
            return self.row.expand(X.shape[0], self.row.shape[-1])
        with torch.no_grad():
            return log_gate(self.gate, X, self.share)


class Rows(InMemory):
    """The data in this process's memory, as natural SVI reads it: CAVI's
    :class:`~pyro_moe.engines.cavi.InMemory` passes (initial q(Z), the E-step over all
    rows, the gate's fitter) and a minibatch's rows."""

    def target_variance_raw(self) -> float:
        """Var(y) as ``y.var()`` gives it (0 for one point)."""
        return float(self.y.var()) if self.N > 1 else 0.0

    def full_log_prior(self, lp: LogPrior) -> torch.Tensor:
        """The log prior (N, C) of all rows, as :meth:`e_step` takes it."""
        return lp(self.X)

    def batch(self, rows: torch.Tensor, upcoming: torch.Tensor | None = None):
        """X[rows], y[rows]: the minibatch, on the client (``upcoming``, the next batch's
        rows, is for a source that fetches them ahead)."""
        return self.X[rows], self.y[rows]

    def all_rows(self, K: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        """X and the present r (N, K) of all rows (the gate's Adam step before any batch),
        or None where the data are not in this process."""
        return self.X, self.gate_responsibilities(K)

    def held_out(self, groups, q, lp: LogPrior, e_log_beta, e_beta, noise, maps) -> torch.Tensor:
        """:func:`held_out_sums` over the evaluation subsample's groups (row indices)."""
        return held_out_sums(self.X, self.y, groups, q, lp, e_log_beta, e_beta, noise, maps)


def held_out_sums(X, y, groups, q, lp: LogPrior, e_log_beta, e_beta, noise, maps) -> torch.Tensor:
    """Per group g of row indices into X, the data term sum_{i in g} lse_i of the ELBO with
    q(z_i) optimal given the globals (:func:`~pyro_moe.closed_form.updates.e_step`); 0 for
    a group with no rows here. Shape (G,). A distributed source sums it over its chunks,
    each with the groups' rows that it holds."""
    sums = []
    for rows in groups:
        if rows.numel() == 0:
            sums.append(X.new_zeros(()))
            continue
        x_g = X[rows]
        est = U.e_step(x_g, y[rows], q, lp(x_g), e_log_beta, e_beta, noise, maps=maps)
        sums.append(est.lse)
    return torch.stack(sums)


def natural_run(
    X: torch.Tensor,
    y: torch.Tensor,
    config: Config,
    conj: Conjugate,
    options: Options,
    how: str,
    seed: int,
    restart: int,
    progress: Progress,
    source=None,
) -> Run:
    """One natural-gradient SVI restart from initialisation ``how`` (module docstring).

    ``source`` runs the passes over the data (:class:`Rows` of X and y by default; a
    :class:`pyro_moe.distributed.DaskSource`, with X and y the first rows the model file
    was traced on); everything else here works on per-expert quantities and on the
    minibatch's rows."""
    source = Rows(X, y) if source is None else source
    N = source.N
    K = config.experts
    maps, noise, learn = config.maps, conj.noise_log_density, config.learn
    w0, A = conj.prior_mean.clone(), conj.prior_cov.clone()
    xi, mu = conj.regularization_cov, conj.concentration
    var_y = source.target_variance_raw() if N > 1 else 1.0
    beta_max = 1e10 / max(var_y, 1e-300)
    latent_beta = conj.noise_prior is not None
    a = b = None
    per_expert = config.per_expert_noise  # beta_k, one per expert: no sums over k

    def over_experts(t: torch.Tensor) -> torch.Tensor:
        return t if per_expert else t.sum()

    if latent_beta:
        a0, b0 = conj.noise_prior
        n0 = N / K if per_expert else N
        a, b = a0 + 0.5 * n0, b0 + 0.5 * n0 / config.noise_precision
        e_beta, e_log_beta = a / b, torch.digamma(a) - torch.log(b)
    else:
        beta = conj.noise_precision.clamp(max=beta_max)
        e_beta, e_log_beta = beta, torch.log(beta)
    gate = fresh_gate(config.gate, seed, restart)
    learn_gate = gate is not None and "gate" in learn
    share = config.noise_weight if gate is not None else None
    scale_v = conj.gate_prior_scale
    B = options.batch_size
    full = B is None or B == N
    gate_opt = fitter = gate_ls = None
    if gate is not None:
        for p in gate.parameters():
            p.requires_grad_(learn_gate)
        if learn_gate and full:  # CAVI's gate M-step (L-BFGS, accepted only if G rises)
            fitter = source.gate_fitter(
                gate, CAVI_OPTIONS["gate_steps"].default, X.dtype, N >= GATE_WARM_START_N,
                None, scale_v,
            )  # fmt: skip
            gate_ls = fitter.log_softmax()
        elif learn_gate:
            gate_opt = torch.optim.Adam(gate.parameters(), lr=options.gate_lr)

    def gate_log_prior() -> torch.Tensor:
        if scale_v is None or gate is None:
            return X.new_zeros(())
        return U.gate_log_prior(gate_weights(gate), scale_v).to(X.dtype)

    def log_prior_at(alpha_) -> LogPrior:
        if conj.mixture:
            return LogPrior(row=U.dirichlet_expected_log(alpha_).unsqueeze(0))
        return LogPrior(gate=gate, share=share)

    stats_hat, r_sum_hat = source.initial(
        how, K, seed,
        prior=U.prior_from(w0, A), log_prior=source.full_log_prior(log_prior_at(mu)),
        e_beta=e_beta, e_log_beta=e_log_beta, given=options.responsibilities,
        noise_log_density=noise, maps=maps,
    )  # fmt: skip
    # the rows and log q(Z) of the last minibatch's local step (None: all rows, in the source)
    last: tuple[torch.Tensor, torch.Tensor] | None = None

    scale = 1.0 if full else N / B
    gen = torch.Generator(device="cpu").manual_seed(seed)
    batches: list[torch.Tensor] = []
    prior = U.weight_prior(w0, A)
    log_norm_mu = U.dirichlet_log_norm(mu) if conj.mixture else None
    h = J = alpha = q = None
    factor = conj.weight_factor  # a non-Gaussian prior on w: CVI's linearised step
    stats_bar, r_sum_bar = stats_hat, r_sum_hat
    run = Run()
    stop_se = 0.0 if full else math.inf
    held, passes, groups, m = None, 0, None, N
    if not full:  # a fixed evaluation subsample in G groups, for the stop rule
        m = min(N, max(4 * B, 1024, EVAL_ROWS))  # all rows up to EVAL_ROWS: exact
        gen_sub = torch.Generator(device="cpu").manual_seed(seed + 1)
        sub = torch.randperm(N, generator=gen_sub, device="cpu")
        groups = list(sub[:m].to(X.device).tensor_split(min(16, m)))

    def objective(lse, kl_prior) -> tuple[float, float]:
        """F_hat = lse - KLs [+ R(w0)] [+ log p(V)] and the ELBO, at the present globals."""
        elbo, F = U.elbo_from_lse(
            lse, q, prior=kl_prior, alpha=alpha, mu=mu if conj.mixture else None,
            log_norm_mu=log_norm_mu, qbeta=(a, b) if latent_beta else None,
            beta_prior=conj.noise_prior, xi=xi,
        )  # fmt: skip
        return float(F + gate_log_prior().detach()), float(elbo)

    t0 = time.perf_counter()
    for step in range(1, options.max_iter + 1):
        # ---- global step: eta <- (1 - rho) eta + rho eta_hat ----------------------------
        if step == 1:
            rho = 1.0  # the initial statistics are the full data's: the closed-form start
        elif options.step_size is not None:
            rho = options.step_size
        elif full:
            rho = 1.0
        else:
            rho = robbins_monro(step - 1, options.kappa, options.tau)
        stats_bar = _mixed(stats_bar, stats_hat, rho)
        r_sum_bar = (1 - rho) * r_sum_bar + rho * r_sum_hat
        h, J, q = _weights_step(stats_hat, prior, factor, q, h, J, rho, e_beta)
        if conj.mixture:
            alpha_hat = mu + r_sum_hat
            alpha = alpha_hat if alpha is None else (1 - rho) * alpha + rho * alpha_hat
        if "prior_mean" in learn:
            w0 = U.update_prior_mean(q, prior.precision, xi)
        if "prior_cov" in learn:
            A = U.update_prior_cov(q, w0, options.prior_var_min)
        if "prior_mean" in learn or "prior_cov" in learn:
            prior = U.weight_prior(w0, A)
        kl_prior = prior if factor is None else factor  # the prior the objective's KL is of
        if latent_beta:
            total_hat = over_experts(U.summed_sq_residuals(stats_hat, q))
            a_hat, b_hat = U.update_noise_gamma(total_hat, over_experts(stats_hat.Nk), a0, b0)
            a, b = (1 - rho) * a + rho * a_hat, (1 - rho) * b + rho * b_hat
            e_beta, e_log_beta = a / b, torch.digamma(a) - torch.log(b)
        elif "noise_precision" in learn:  # online EM: the M-step on the averaged statistics
            total_bar = over_experts(U.summed_sq_residuals(stats_bar, q))
            beta = U.update_noise_precision(
                total_bar, over_experts(stats_bar.Nk), beta_max, previous=beta
            )
            e_beta, e_log_beta = beta, torch.log(beta)
        if fitter is not None:  # full batch: the gate's M-step, as in CAVI
            gate_ls = fitter.step(source.gate_responsibilities(K), gate_ls)
            if share is not None:  # M-step of the noise share, mean_i r_iK
                share = (r_sum_bar[K] / N).clamp(1e-12, 1 - 1e-12)
        if gate_opt is not None:  # Adam on (N/B) sum_batch r log g [+ log p(V)]
            # before the first batch: all rows where they are in memory (a distributed
            # source has no batch yet, and its first Adam step waits for one)
            batch = source.all_rows(K) if last is None else (last[0], last[1][:, :K].exp())
            if batch is not None:
                x_b, r_b = batch
                for _ in range(options.gate_steps):
                    gate_opt.zero_grad()
                    loss = -(r_b * torch.log_softmax(gate(x_b), -1)).sum() * scale
                    if scale_v is not None:
                        loss = loss - U.gate_log_prior(gate_weights(gate), scale_v)
                    loss.backward()
                    gate_opt.step()
            if share is not None:  # online M-step of the noise share, mean_i r_iK
                share = (r_sum_bar[K] / N).clamp(1e-12, 1 - 1e-12)
        # ---- local step: q(z_i) of the next batch given the globals ----------------------
        lp = log_prior_at(alpha)
        if full:  # all rows, where they are; the source keeps q(Z)
            est = source.e_step(q, source.full_log_prior(lp), e_log_beta, e_beta, noise, maps)
            F, elbo = objective(est.lse, kl_prior)
            stats_hat, r_sum_hat = est.stats, est.r_sum
        else:
            if not batches:
                perm = torch.randperm(N, generator=gen, device="cpu").to(X.device)
                batches = list(perm.split(B))[::-1]
            rows = batches.pop()  # only the minibatch comes to the client; the next one is
            x_b, y_b = source.batch(rows, batches[-1] if batches else None)  # told, to prefetch
            est = U.e_step(x_b, y_b, q, lp(x_b), e_log_beta, e_beta, noise, maps=maps)
            F, elbo = objective(est.lse * scale, kl_prior)
            stats_hat, r_sum_hat = _scaled(est.stats, scale), est.r_sum * scale
            last = (x_b, est.log_r)
        if not math.isfinite(F):
            raise FloatingPointError(
                f"natural-gradient SVI produced a non-finite objective at step {step}"
            )
        run.record(F, elbo, time.perf_counter() - t0)
        progress.update(F)
        if full:
            if step > 1 and abs(F - run.objective[-2]) <= options.tol * max(abs(F), N):
                run.converged = True
                break
        elif step % options.eval_every == 0:
            sums = source.held_out(groups, q, log_prior_at(alpha), e_log_beta, e_beta, noise, maps)
            cur = (sums, objective(sums.new_zeros(()), kl_prior)[0])  # the exact global part
            if held is not None:
                ok, stop_se = _change_test(held, cur, N, m, options.tol, F)
                passes = passes + 1 if ok else 0
                if passes >= options.history:
                    run.converged = True
                    break
            held = cur
    run.iterations = len(run.objective)
    # the final objective, appended as SVI's histories are (iterations + 1 entries): a local
    # step on every point, then the closed form (the last step's own F on the full batch)
    if full:
        run.record(run.objective[-1], run.elbo[-1], time.perf_counter() - t0)
    else:
        lp = source.full_log_prior(log_prior_at(alpha))
        est = source.e_step(q, lp, e_log_beta, e_beta, noise, maps)
        F, elbo = objective(est.lse, kl_prior)
        run.record(F, elbo, time.perf_counter() - t0)
    run.summary["objective_se"] = 0.0  # the final objective is exact (closed form)
    run.summary["stop_se"] = stop_se
    run.summary["optimizer"] = "natural"
    run.summary["batch_size"] = None if full else B
    if factor is not None:
        run.summary["weight_prior"] = f"{factor.name} (CVI, Gauss-Hermite {factor.x.shape[0]})"
    if gate is not None:
        for p in gate.parameters():
            p.requires_grad_(False)
    return closed_form_fit(
        run, config, source.log_responsibilities(), q, alpha=alpha,
        qbeta=(a, b) if latent_beta else None,
        e_beta=e_beta, w0=w0, A=A, mu=mu, xi=xi, rho=share, gate=gate,
    )  # fmt: skip


def _weights_step(stats_hat, prior, factor, q, h, J, rho, e_beta):
    """eta <- (1 - rho) eta + rho eta_hat for q(W): eta_hat = (h_hat, J_hat) of
    :func:`~pyro_moe.closed_form.updates.weights_natural` with the Gaussian prior, or with
    a non-Gaussian one linearised at the present q (CVI, Khan & Lin 2017:
    J_hat = beta S_k - H, h_hat = beta s_k + g - H m, g and H the expected gradient and
    Hessian of log p(w) under q, :class:`~pyro_moe.closed_form.linearised.FactorisedPrior`;
    the first step, q = None, is the conjugate one with N(w0, A)). A step whose precision
    is not positive definite (a Student-t prior's convex tail, H > 0) is retaken with -H
    floored at 0. Returns (h, J, q)."""

    def mixed(lin):
        h_hat, J_hat = U.weights_natural(stats_hat, lin, e_beta)
        if h is None:
            return h_hat, J_hat
        return (1 - rho) * h + rho * h_hat, (1 - rho) * J + rho * J_hat

    if factor is None or q is None:
        h_new, J_new = mixed(prior)
    else:
        lin = factor.linearised(q)
        h_new, J_new = mixed(lin)
        if not bool((torch.linalg.cholesky_ex(J_new)[1] == 0).all()):
            h_new, J_new = mixed(factor.clamped(lin, q))
    return h_new, J_new, U.weights_from_natural(h_new, J_new)


def _change_test(old, new, N: int, m: int, tol: float, F: float) -> tuple[bool, float]:
    """The minibatch stop rule: the change of F between two evaluations on the same
    subsample of m points in G groups (common points, so its Monte Carlo error is that of
    the change, not of F), D = (N/m) sum_g (new_g - old_g) + (change of the global part),
    with standard error se = (N/m) sqrt(G) sd_g(new_g - old_g) (0 when m = N: D is then
    the exact change of F); converged when |D| + 2 se <= tol * max(|F|, N). Returns
    (passed, se)."""
    (g_old, c_old), (g_new, c_new) = old, new
    diff = g_new - g_old
    G = diff.shape[0]
    D = float(diff.sum()) * N / m + (c_new - c_old)
    se = float(diff.std()) * math.sqrt(G) * N / m if G > 1 and m < N else 0.0  # m = N: exact
    return abs(D) + 2.0 * se <= tol * max(abs(F), N), se
