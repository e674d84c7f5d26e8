"""The closed-form sweep, written once: CAVI's iteration and natural-gradient SVI's step.

One sweep (derivation section 6) over a data source (:class:`~pyro_moe.engines.source.DataSource`):

    q(W) -> q(pi) -> [w0] -> [A] -> [beta or q(beta)] -> [gate V, noise share] -> q(Z) -> F

with each global block held in its natural parameters eta and moved by

    eta <- (1 - rho_t) eta + rho_t eta_hat,

eta_hat the block's optimum given the statistics of the present q(Z) (:class:`Schedule`):

* CAVI (``method="cavi"``): rho_t = 1 over the full batch, each step the exact maximiser of
  F over its block, so F never decreases;
* natural-gradient SVI (``method="svi"``, Hoffman et al. 2013): rho_t = 1 on the full batch
  (then exactly CAVI's iterates), Robbins-Monro rho_t = (t + tau)^(-kappa) over
  minibatches of B rows, their statistics rescaled by N/B (the first step, from the full
  data's initial statistics, has rho = 1);
* Dask: either of them over :class:`pyro_moe.distributed.DaskSource`'s chunks.

F = ELBO (+ R(w0) for the regularized model) (+ log p(V) with a gate prior), total nats.

The site updates are those the model file's traced sites name
(:func:`pyro_moe.closed_form.sites.read_model` -> :class:`~pyro_moe.closed_form.sites.Conjugate`),
and, right after q(W), those of the conjugate hyperpriors of w the conjugacy rule found in
the file (``conj.hyperprior``, :mod:`pyro_moe.closed_form.conjugacy`: q(theta), q(phi)).
The safeguards, the same for every engine and source:

* a non-finite F is a :class:`~pyro_moe.errors.NumericalError`;
* beta <= ``noise_precision_max`` (default 1e10 / Var(y), Var(y) the mean square for
  constant targets) and every eigenvalue of A_k >= ``prior_var_min``: both exact
  constrained maximisers, so monotonicity holds with them (noise-free data drive
  beta -> inf and A_k -> 0, where an unguarded Cholesky fails);
* the gate's M-step (full batch: :class:`~pyro_moe.engines.gate.GateFitter`, L-BFGS on
  sum_ik r_ik log g_ik(V) [+ log p(V)], rejected unless it does not lower that term) is
  skipped for the next 1, 2, 4, ... GATE_MAX_BACKOFF sweeps after a step that gained at
  most min(gate_skip_tol, tol) * max(|F|, N) nats (never after the first step), and a sweep
  that held the gate does not count as converged;
* a non-Gaussian factorised prior on w takes conjugate-computation VI's linearised step
  (Khan & Lin 2017, :func:`weights_step`).

Minibatch-only pieces are branches of the same loop: online EM for point estimates (beta
and the noise share read averaged statistics S_bar <- (1 - rho) S_bar + rho S_hat), Adam
steps of the gate on the batch, the stop rule on a fixed evaluation subsample
(:func:`change_test`), and a final closed-form evaluation on all rows, which SVI's
histories carry as their last entry (iterations + 1 entries; on the full batch the last
step's F repeated).

Full batch: converged when |F_t - F_{t-1}| <= tol * max(|F_t|, N), a relative change
measured against N when F is near zero (F is a sum over N points).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch

from ..closed_form import updates as U
from ..closed_form.sites import Conjugate
from ..config import Config, gate_weights
from ..errors import NumericalError
from .base import Progress, Run, closed_form_fit, fresh_gate
from .gate import GATE_MAX_BACKOFF, GATE_WARM_START_N
from .observed import observed_source
from .options import Options
from .source import DataSource, LogPrior

__all__ = ["EVAL_ROWS", "Schedule", "change_test", "robbins_monro", "sweep", "weights_step"]

#: The minibatch stop rule evaluates F on all rows up to this many (exactly: no Monte Carlo
#: error), else on a fixed subsample of this many. Measured with stray points and the noise
#: expert (benchmarks/natural_scaling.py's "stray" scene, B = 1000): on a 4B-row subsample
#: the change's standard error (0.07, 2.8, 3.0 nats at N = 1e4, 1e5, 1e6) kept the rule
#: from passing in 3000 steps at every N although F had converged; evaluated on all rows
#: (one pass costs ~50 ns a row, against ~3 ms for each of the eval_every steps between
#: two evaluations) it passed after 200, 1600 and 2800 steps at tol = 1e-6.
EVAL_ROWS = 1_000_000
#: the gate's iterations per step when ``gate_steps`` is None: L-BFGS iterations of the
#: closed-form M-step (full batch), Adam steps on a minibatch
GATE_LBFGS_STEPS, GATE_ADAM_STEPS = 10, 1
#: draws kept from q of each conjugate hyperprior site (as SVI keeps of its added sites)
HYPER_DRAWS = 1000


def robbins_monro(t: int, kappa: float, tau: float) -> float:
    """rho_t = (t + tau)^(-kappa): sum rho_t = inf and sum rho_t^2 < inf for kappa in (0.5, 1]."""
    return (t + tau) ** (-kappa)


@dataclass(frozen=True)
class Schedule:
    """The step sizes and batches of a sweep. The default is CAVI's: rho = 1 over the full
    batch, history one entry per sweep.

    ``batch_size``: B rows per step (None: the full batch); ``step_size``: a constant rho
    after the first step (None: 1 on the full batch, Robbins-Monro with ``kappa``, ``tau``
    on minibatches); ``eval_every``, ``history``: the minibatch stop rule's period and the
    passes in a row it needs; ``gate_lr``: Adam's learning rate of the gate on minibatches;
    ``final_entry``: append the final objective (SVI's histories); ``name``: for messages.
    """

    batch_size: int | None = None
    step_size: float | None = None
    kappa: float = 0.7
    tau: float = 10.0
    eval_every: int = 50
    history: int = 2
    gate_lr: float = 0.01
    final_entry: bool = False
    name: str = "CAVI"

    def rho(self, step: int, full: bool) -> float:
        """rho_t of step t = 1, 2, ... (the first step is always 1: the full data's start)."""
        if step == 1:
            return 1.0
        if self.step_size is not None:
            return self.step_size
        return 1.0 if full else robbins_monro(step - 1, self.kappa, self.tau)


def _blend_stats(old: U.Stats, new: U.Stats, rho: float) -> U.Stats:
    if rho == 1.0:
        return new
    parts = zip((old.Nk, old.S, old.s, old.yy), (new.Nk, new.S, new.s, new.yy), strict=True)
    return U.Stats(*(U.blend(a, b, rho) for a, b in parts))


def _scaled(stats: U.Stats, c: float) -> U.Stats:
    return U.Stats(stats.Nk * c, stats.S * c, stats.s * c, stats.yy * c)


def weights_step(stats_hat, prior, factor, q, h, J, rho, e_beta):
    """eta <- (1 - rho) eta + rho eta_hat for q(W): eta_hat = (h_hat, J_hat) of
    :func:`~pyro_moe.closed_form.updates.weights_natural` with the Gaussian prior (rho = 1:
    :func:`~pyro_moe.closed_form.updates.update_weights`, CAVI's step), or with a
    non-Gaussian one linearised at the present q (CVI, Khan & Lin 2017:
    J_hat = beta S_k - H, h_hat = beta s_k + g - H m, g and H the expected gradient and
    Hessian of log p(w) under q, :class:`~pyro_moe.closed_form.linearised.FactorisedPrior`;
    the first step, q = None, is the conjugate one with N(w0, A)). A step whose precision
    is not positive definite (a Student-t prior's convex tail, H > 0) is retaken with -H
    floored at 0. Returns (h, J, q)."""

    def mixed(lin):
        h_hat, J_hat = U.weights_natural(stats_hat, lin, e_beta)
        return U.blend(h, h_hat, rho), U.blend(J, J_hat, rho)

    if factor is None or q is None:
        h_new, J_new = mixed(prior)
    else:
        lin = factor.linearised(q)
        h_new, J_new = mixed(lin)
        if not bool((torch.linalg.cholesky_ex(J_new)[1] == 0).all()):
            h_new, J_new = mixed(factor.clamped(lin, q))
    return h_new, J_new, U.weights_from_natural(h_new, J_new)


def change_test(old, new, N: int, m: int, tol: float, F: float) -> tuple[bool, float]:
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


def sweep(
    source: DataSource,
    config: Config,
    conj: Conjugate,
    options: Options,
    how: str,
    seed: int,
    restart: int,
    progress: Progress,
    schedule: Schedule = Schedule(),
) -> Run:
    """One restart of the closed-form sweep (module docstring) from initialisation ``how``:
    iterate to convergence or ``options.max_iter``. ``options`` holds ``tol``,
    ``max_iter``, ``responsibilities`` and the closed-form options
    (:data:`pyro_moe.engines.options.CLOSED_FORM`); ``source`` runs every pass over the
    data, everything here works on per-expert quantities and a minibatch's rows."""
    N = source.N
    K = config.experts
    maps, noise, learn = config.maps, conj.noise_log_density, config.learn
    # ---- robust / logistic experts' local step (None: the Gaussian e-step) ----
    obs = conj.observation
    local_step = U.e_step if obs is None else obs.e_step
    if obs is not None:
        source = observed_source(source, obs)
        learn = learn if obs.has_noise else learn - {"noise_precision"}
    like = conj.prior_mean  # the dtype and device of the fit
    w0, A = conj.prior_mean.clone(), conj.prior_cov.clone()
    xi, mu = conj.regularization_cov, conj.concentration
    var_y = source.target_variance()  # constant targets: the scale of y itself, else 1
    beta_max = options.noise_precision_max or 1e10 / max(var_y, 1e-300)
    latent_beta = conj.noise_prior is not None
    per_expert = config.per_expert_noise  # beta_k, one per expert: sums over k are not taken
    a = b = None
    if latent_beta:
        a0, b0 = conj.noise_prior
        n0 = N / K if per_expert else N
        a, b = a0 + 0.5 * n0, b0 + 0.5 * n0 / config.noise_precision
        e_beta, e_log_beta = U.gamma_moments(a, b)
    else:
        beta = conj.noise_precision.clamp(max=beta_max)
        e_beta, e_log_beta = beta, torch.log(beta)
    B = schedule.batch_size
    full = B is None or B == N
    gate = fresh_gate(config.gate, seed, restart)
    learn_gate = gate is not None and "gate" in learn
    share = gate_prior = gate_ls = fitter = gate_opt = None
    scale_v = conj.gate_prior_scale
    if gate is not None:
        for p in gate.parameters():
            p.requires_grad_(learn_gate)
        share = config.noise_weight
        if full:  # the gate's M-step (L-BFGS) on all rows, where they are
            # "auto": None, the data's dtype
            dtype = {"float32": torch.float32, "float64": torch.float64}.get(options.gate_dtype)
            warm = options.gate_warm_start
            warm = N >= GATE_WARM_START_N if warm is None else warm
            fitter = source.gate_fitter(
                gate, options.gate_steps or GATE_LBFGS_STEPS, dtype, warm,
                options.gate_tolerance, scale_v if learn_gate else None, options.gate_method,
            )  # fmt: skip
            gate_ls = source.gate_layout(fitter.log_softmax())
        elif learn_gate:  # Adam on the minibatch's term
            gate_opt = torch.optim.Adam(gate.parameters(), lr=schedule.gate_lr)
        if scale_v is not None:
            # log p(V): a constant when the gate is held fixed, updated with each gate step
            gate_prior = U.gate_log_prior(gate_weights(gate), scale_v).detach().to(like.dtype)

    def expected_log(alpha_, elog=None):
        """E[log pi] of q(pi) = Dir(alpha) (``elog`` when the caller holds it)."""
        return U.dirichlet_expected_log(alpha_) if elog is None else elog

    def log_prior_at(alpha_, elog=None) -> LogPrior:
        if conj.mixture:
            return LogPrior(row=expected_log(alpha_, elog).unsqueeze(0))
        return LogPrior(gate=gate, share=share)

    def all_rows_prior(alpha_, elog=None):
        """The E-step's log prior of all rows: the fitter's log softmax where it keeps one."""
        if fitter is None:
            return source.full_log_prior(log_prior_at(alpha_, elog))
        row = expected_log(alpha_, elog).unsqueeze(0) if conj.mixture else None
        return source.log_prior(row, gate_ls, share)

    # A^{-1}, log|A|, A^{-1} w0 and log B(mu): rebuilt only when the M-step moves w0 or A
    prior = U.weight_prior(w0, A)
    stats_hat, r_sum_hat = source.initial(
        how, K, seed,
        prior=prior.as_posterior(), log_prior=all_rows_prior(mu),
        e_beta=e_beta, e_log_beta=e_log_beta, given=options.responsibilities,
        noise_log_density=noise, maps=maps,
    )  # fmt: skip
    stats_bar, r_sum_bar = stats_hat, r_sum_hat  # online EM's averages (minibatches)
    log_norm_mu = U.dirichlet_log_norm(mu) if conj.mixture else None
    factor = conj.weight_factor  # a non-Gaussian prior on w: CVI's linearised step
    kl_prior = prior if factor is None else factor  # the prior the objective's KL is of
    # ---- hook: conjugate hyperpriors of w found in the file, q(theta) q(phi) ----
    hyper = conj.hyperprior
    hyper_state = None
    if hyper is not None:
        hyper_state = hyper.start()
        prior = kl_prior = hyper.prior(hyper_state)
    h = J = alpha = q = None
    run = Run()
    gate_wait, gate_backoff = 0, 1
    # a skipped gate step gains at most what counts as converged: with a larger threshold
    # the fit held the gate on gains it could not stop on, and crawled (the study's f1 on
    # Synthetic 3 at tol 1e-8: not converged after 3000 iterations; with it, 1161)
    skip_tol = min(options.gate_skip_tol, options.tol)
    # minibatches: the batches of the epoch, the last batch's rows and log q(Z), the
    # stop rule's fixed evaluation subsample in G groups and its last evaluation
    scale = 1.0 if full else N / B
    gen = None  # the minibatches' generator
    batches: list[torch.Tensor] = []
    last: tuple[torch.Tensor, torch.Tensor] | None = None
    stop_se, held, passes, groups, m = 0.0 if full else math.inf, None, 0, None, N
    if not full:
        gen = torch.Generator(device="cpu").manual_seed(seed)
        m = min(N, max(4 * B, 1024, EVAL_ROWS))  # all rows up to EVAL_ROWS: exact
        gen_sub = torch.Generator(device="cpu").manual_seed(seed + 1)
        sub = torch.randperm(N, generator=gen_sub, device="cpu")
        groups = list(sub[:m].to(like.device).tensor_split(min(16, m)))

    def objective(lse, kl, elog=None) -> tuple[torch.Tensor, torch.Tensor]:
        """F = lse - KLs [+ R(w0)] [+ log p(V)] and the ELBO, at the present globals
        (``elog``: E[log pi] at the present alpha, when held)."""
        elbo, F = U.elbo_from_lse(
            lse, q, prior=kl, alpha=alpha, mu=mu if conj.mixture else None,
            log_norm_mu=log_norm_mu, qbeta=(a, b) if latent_beta else None,
            beta_prior=conj.noise_prior, xi=xi, expected_log=elog,
        )  # fmt: skip
        if gate_prior is not None:
            F = F + gate_prior  # log p(V): MAP for the gate (docs/cavi_notes.md section 7)
        return F, elbo

    t0 = time.perf_counter()
    for step in range(1, options.max_iter + 1):
        # ---- global step: eta <- (1 - rho) eta + rho eta_hat ------------------------------
        rho = schedule.rho(step, full)
        gate_skipped = False
        stats_bar = _blend_stats(stats_bar, stats_hat, rho)
        r_sum_bar = U.blend(r_sum_bar, r_sum_hat, rho)
        h, J, q = weights_step(stats_hat, prior, factor, q, h, J, rho, e_beta)
        if hyper is not None:  # hook: the derived updates of the hyperpriors
            hyper_state = hyper.step(hyper_state, q, rho)
            if "prior_mean" in learn:  # w0's M-step at E[Lambda] (Gamma hyperpriors only)
                hyper_state = hyper.with_prior_mean(hyper_state, q, xi)
        if conj.mixture:
            alpha = U.blend(alpha, mu + r_sum_hat, rho)
        if "prior_mean" in learn:
            w0 = U.update_prior_mean(q, prior.precision, xi)
        if "prior_cov" in learn:
            A = U.update_prior_cov(q, w0, options.prior_var_min)
        if "prior_mean" in learn or "prior_cov" in learn:
            prior = U.weight_prior(w0, A)
            kl_prior = prior if factor is None else factor
        if hyper is not None:  # hook: E_q of p(w | hyperpriors), for q(W) and F
            prior = kl_prior = hyper.prior(hyper_state)
        if latent_beta:  # q(beta) from this step's statistics
            total_sq, n_gauss = U.summed_sq_residuals(stats_hat, q), stats_hat.Nk
            if not per_expert:
                total_sq, n_gauss = total_sq.sum(), n_gauss.sum()
            a_hat, b_hat = U.update_noise_gamma(total_sq, n_gauss, a0, b0)
            a, b = U.blend(a, a_hat, rho), U.blend(b, b_hat, rho)
            e_beta, e_log_beta = U.gamma_moments(a, b)
        elif "noise_precision" in learn:  # the M-step (online EM: on the averaged statistics)
            total_sq, n_gauss = U.summed_sq_residuals(stats_bar, q), stats_bar.Nk
            if not per_expert:
                total_sq, n_gauss = total_sq.sum(), n_gauss.sum()
            beta = U.update_noise_precision(total_sq, n_gauss, beta_max, previous=beta)
            e_beta, e_log_beta = beta, torch.log(beta)
        if learn_gate and fitter is not None:
            # a gate step whose gain was negligible is skipped for 1, 2, 4, ... iterations
            # (a partial M-step: skipping never lowers the objective)
            if gate_wait == 0:
                r_k = source.gate_responsibilities(K)  # (N, K), row-major for the gate
                before = fitter.expected(r_k, gate_ls) + fitter.log_prior()
                gate_ls = source.gate_layout(fitter.step(r_k, gate_ls))
                gain = float(fitter.expected(r_k, gate_ls) + fitter.log_prior() - before)
                if gate_prior is not None:
                    gate_prior = fitter.log_prior()
                del r_k
                # (never after the first step: there is no objective to measure it by)
                if run.objective and gain <= skip_tol * max(abs(run.objective[-1]), N):
                    gate_backoff = min(2 * gate_backoff, GATE_MAX_BACKOFF)
                    gate_wait = gate_backoff
                else:
                    gate_backoff = 1
            else:
                gate_wait -= 1
                gate_skipped = True
        elif gate_opt is not None:  # Adam on (N/B) sum_batch r log g [+ log p(V)]
            # before the first batch: all rows where they are in memory (a distributed
            # source has no batch yet, and its first Adam step waits for one)
            batch = source.all_rows(K) if last is None else (last[0], last[1][:, :K].exp())
            if batch is not None:
                x_b, r_b = batch
                for _ in range(options.gate_steps or GATE_ADAM_STEPS):
                    gate_opt.zero_grad()
                    loss = -(r_b * torch.log_softmax(gate(x_b), -1)).sum() * scale
                    if scale_v is not None:
                        loss = loss - U.gate_log_prior(gate_weights(gate), scale_v)
                    loss.backward()
                    gate_opt.step()
                if gate_prior is not None:
                    gate_prior = (
                        U.gate_log_prior(gate_weights(gate), scale_v).detach().to(like.dtype)
                    )
        if learn_gate and share is not None:  # M-step of the noise share, mean_i r_iK
            share = (r_sum_bar[K] / N).clamp(1e-12, 1 - 1e-12)
        # ---- local step: q(Z) given the globals, and the objective ------------------------
        if full:  # all rows, where they are; the source keeps q(Z), fused with the next
            # step's sufficient statistics and the ELBO's data term sum_i lse_i
            elog = U.dirichlet_expected_log(alpha) if conj.mixture else None
            est = source.e_step(q, all_rows_prior(alpha, elog), e_log_beta, e_beta, noise, maps)
            F, elbo = objective(est.lse, kl_prior, elog)
            stats_hat, r_sum_hat = est.stats, est.r_sum
        else:
            if not batches:
                perm = torch.randperm(N, generator=gen, device="cpu").to(like.device)
                batches = list(perm.split(B))[::-1]
            rows = batches.pop()  # only the minibatch comes to the client; the next one is
            x_b, y_b = source.batch(rows, batches[-1] if batches else None)  # told, to prefetch
            lp = log_prior_at(alpha)
            est = local_step(x_b, y_b, q, lp(x_b), e_log_beta, e_beta, noise, maps=maps)
            F, elbo = objective(est.lse * scale, kl_prior)
            stats_hat, r_sum_hat = _scaled(est.stats, scale), est.r_sum * scale
            last = (x_b, est.log_r)
        F, elbo = float(F), float(elbo)
        if not math.isfinite(F):
            raise NumericalError(
                f"{schedule.name} produced a non-finite objective at step {step}; the data "
                "may be degenerate (duplicated or collinear rows, extreme values); please "
                "report this data set"
            )
        run.record(F, elbo, time.perf_counter() - t0)
        progress.update(run.objective[-1])
        if full:
            if len(run.objective) > 1:
                prev, cur = run.objective[-2], run.objective[-1]
                if abs(cur - prev) <= options.tol * max(abs(cur), N):
                    if gate_skipped:
                        # F stood still with the gate held: converged only if a gate step
                        # does not move it either
                        gate_wait, gate_backoff = 0, 1
                        continue
                    run.converged = True
                    break
        elif step % schedule.eval_every == 0:
            sums = source.held_out(groups, q, log_prior_at(alpha), e_log_beta, e_beta, noise, maps)
            cur = (sums, float(objective(sums.new_zeros(()), kl_prior)[0]))  # the global part
            if held is not None:
                ok, stop_se = change_test(held, cur, N, m, options.tol, run.objective[-1])
                passes = passes + 1 if ok else 0
                if passes >= schedule.history:
                    run.converged = True
                    break
            held = cur
    run.iterations = len(run.objective)
    if schedule.final_entry:
        # the final objective, appended as SVI's histories are (iterations + 1 entries): a
        # local step on every point, then the closed form (the last step's F on the full batch)
        if full:
            run.record(run.objective[-1], run.elbo[-1], time.perf_counter() - t0)
        else:
            lp = source.full_log_prior(log_prior_at(alpha))
            est = source.e_step(q, lp, e_log_beta, e_beta, noise, maps)
            F, elbo = objective(est.lse, kl_prior)
            run.record(F, elbo, time.perf_counter() - t0)
        run.summary["stop_se"] = stop_se
    if hyper is not None:  # hook: w0 (learned, or the config's) and the config's A
        w0 = config.prior_mean.detach().clone() if hyper_state.w0 is None else hyper_state.w0
        A = config.prior_cov.detach().clone()
    run = closed_form_fit(
        run, config, source.log_responsibilities(), q, alpha=alpha,
        qbeta=(a, b) if latent_beta else None,
        e_beta=e_beta, w0=w0, A=A, mu=mu, xi=xi, rho=share, gate=gate,
    )  # fmt: skip
    if hyper is not None:  # hook: q of the hyperprior sites, and draws from it
        run.posterior.site_params = hyper.params(hyper_state)
        run.posterior.site_draws = hyper.draws(hyper_state, HYPER_DRAWS, seed)
    return run
