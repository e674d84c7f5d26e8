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
"""

from __future__ import annotations

import math
import statistics
import time

import torch

from ..closed_form import updates as U
from ..closed_form.init import initial_log_responsibilities
from ..closed_form.sites import Conjugate
from ..config import Config, gate_weights, log_gate
from .base import Progress, Run, closed_form_fit, fresh_gate
from .cavi import OPTIONS as CAVI_OPTIONS
from .gate import GATE_WARM_START_N, GateFitter
from .options import Options

__all__ = ["natural_run", "robbins_monro", "window_test"]


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
) -> Run:
    """One natural-gradient SVI restart from initialisation ``how`` (module docstring)."""
    N = X.shape[0]
    K = config.experts
    maps, noise, learn = config.maps, conj.noise_log_density, config.learn
    w0, A = conj.prior_mean.clone(), conj.prior_cov.clone()
    xi, mu = conj.regularization_cov, conj.concentration
    var_y = float(y.var()) if N > 1 else 1.0
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
            fitter = GateFitter(
                gate, X, CAVI_OPTIONS["gate_steps"].default, X.dtype, N >= GATE_WARM_START_N,
                None, scale_v,
            )  # fmt: skip
            gate_ls = fitter.log_softmax()
        elif learn_gate:
            gate_opt = torch.optim.Adam(gate.parameters(), lr=options.gate_lr)

    def gate_log_prior() -> torch.Tensor:
        if scale_v is None or gate is None:
            return X.new_zeros(())
        return U.gate_log_prior(gate_weights(gate), scale_v).to(X.dtype)

    def log_prior_at(rows: torch.Tensor | None, alpha_) -> torch.Tensor:
        n_rows = N if rows is None else rows.shape[0]
        if conj.mixture:
            return U.dirichlet_expected_log(alpha_).expand(n_rows, config.components)
        with torch.no_grad():
            return log_gate(gate, X if rows is None else X[rows], share)

    log_r = initial_log_responsibilities(
        how, X, y, K, seed,
        prior=U.prior_from(w0, A), log_prior=log_prior_at(None, mu),
        e_beta=e_beta, e_log_beta=e_log_beta, given=options.responsibilities,
        noise_log_density=noise, maps=maps,
    )  # fmt: skip
    r = log_r.exp()
    stats_hat, r_sum_hat = U.sufficient_stats(X, y, r[:, :K], maps), r.sum(0)
    last_rows: torch.Tensor | None = None  # the rows of the last local step (None: all)
    del r

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
        m = min(N, max(4 * B, 1024))
        gen_sub = torch.Generator(device="cpu").manual_seed(seed + 1)
        sub = torch.randperm(N, generator=gen_sub, device="cpu")
        groups = list(sub[:m].to(X.device).tensor_split(min(16, m)))
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
            gate_ls = fitter.step(log_r[:, :K].exp(), gate_ls)
            if share is not None:  # M-step of the noise share, mean_i r_iK
                share = (r_sum_bar[K] / N).clamp(1e-12, 1 - 1e-12)
        if gate_opt is not None:  # Adam on (N/B) sum_batch r log g [+ log p(V)]
            rows = last_rows
            x_b = X if rows is None else X[rows]
            r_b = (log_r if rows is None else log_r[rows])[:, :K].exp()
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
        if full:
            rows = None
        else:
            if not batches:
                perm = torch.randperm(N, generator=gen, device="cpu").to(X.device)
                batches = list(perm.split(B))[::-1]
            rows = batches.pop()
        F, elbo, est_stats, est_r_sum = _local(X, y, rows, q, log_prior_at(rows, alpha), e_beta, e_log_beta, noise,
                         maps, log_r, kl_prior, alpha, mu, log_norm_mu, (a, b), conj, xi,
                         scale, gate_log_prior().detach())  # fmt: skip
        stats_hat = _scaled(est_stats, scale) if not full else est_stats
        r_sum_hat = est_r_sum * scale if not full else est_r_sum
        last_rows = rows
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
            cur = _held_out(X, y, groups, q, alpha, share, gate, conj, config, e_beta, e_log_beta,
                            kl_prior, mu, log_norm_mu, (a, b), xi, gate_log_prior().detach())  # fmt: skip
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
        F, elbo, _, _ = _local(X, y, None, q, log_prior_at(None, alpha), e_beta, e_log_beta, noise,
                         maps, log_r, kl_prior, alpha, mu, log_norm_mu, (a, b), conj, xi, 1.0,
                         gate_log_prior().detach())  # fmt: skip
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
        run, config, log_r, q, alpha=alpha, qbeta=(a, b) if latent_beta else None,
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


def _held_out(X, y, groups, q, alpha, share, gate, conj, config, e_beta, e_log_beta, prior, mu,
              log_norm_mu, qbeta, xi, gate_lp):  # fmt: skip
    """The stop rule's evaluation at the present globals on the fixed subsample: per group
    g the data term sum_{i in g} lse_i (local q(z_i) optimal), and the exact global part
    -KL [+ R(w0)] [+ log p(V)] (:func:`~pyro_moe.closed_form.updates.elbo_from_lse` of 0)."""
    sums = []
    for rows in groups:
        if conj.mixture:
            lp = U.dirichlet_expected_log(alpha).expand(rows.shape[0], config.components)
        else:
            with torch.no_grad():
                lp = log_gate(gate, X[rows], share)
        est = U.e_step(X[rows], y[rows], q, lp, e_log_beta, e_beta, conj.noise_log_density,
                       maps=config.maps)  # fmt: skip
        sums.append(est.lse)
    _, glob = U.elbo_from_lse(
        X.new_zeros(()), q, prior=prior, alpha=alpha, mu=mu if conj.mixture else None,
        log_norm_mu=log_norm_mu, qbeta=qbeta if conj.noise_prior is not None else None,
        beta_prior=conj.noise_prior, xi=xi,
    )  # fmt: skip
    return torch.stack(sums), float(glob + gate_lp)


def _change_test(old, new, N: int, m: int, tol: float, F: float) -> tuple[bool, float]:
    """The minibatch stop rule: the change of F between two evaluations on the same
    subsample of m points in G groups (common points, so its Monte Carlo error is that of
    the change, not of F), D = (N/m) sum_g (new_g - old_g) + (change of the global part),
    with standard error se = (N/m) sqrt(G) sd_g(new_g - old_g); converged when
    |D| + 2 se <= tol * max(|F|, N). Returns (passed, se)."""
    (g_old, c_old), (g_new, c_new) = old, new
    diff = g_new - g_old
    G = diff.shape[0]
    D = float(diff.sum()) * N / m + (c_new - c_old)
    se = float(diff.std()) * math.sqrt(G) * N / m if G > 1 else 0.0
    return abs(D) + 2.0 * se <= tol * max(abs(F), N), se


def _local(X, y, rows, q, log_prior, e_beta, e_log_beta, noise, maps, log_r, prior, alpha, mu,
           log_norm_mu, qbeta, conj, xi, scale, gate_lp):  # fmt: skip
    """The local step on ``rows`` (None: all points): q(z_i) in closed form, written into
    ``log_r``; returns F_hat = (N/B) sum_batch lse_i - KLs [+ R(w0)] [+ log p(V)], the
    ELBO's estimate, and the batch's statistics and sum_i r_i (not rescaled)."""
    x_b, y_b = (X, y) if rows is None else (X[rows], y[rows])
    est = U.e_step(x_b, y_b, q, log_prior, e_log_beta, e_beta, noise, maps=maps)
    if rows is None:
        log_r.copy_(est.log_r)
    else:
        log_r[rows] = est.log_r
    elbo, F = U.elbo_from_lse(
        est.lse * scale, q, prior=prior, alpha=alpha, mu=mu if conj.mixture else None,
        log_norm_mu=log_norm_mu, qbeta=qbeta if conj.noise_prior is not None else None,
        beta_prior=conj.noise_prior, xi=xi,
    )  # fmt: skip
    return float(F + gate_lp), float(elbo), est.stats, est.r_sum
