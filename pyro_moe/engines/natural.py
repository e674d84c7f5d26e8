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

The iteration itself is the closed-form sweep (:func:`pyro_moe.engines.sweep.sweep`), the
same code as CAVI's; this module gives it natural SVI's :class:`~pyro_moe.engines.sweep.Schedule`.

Step sizes: rho_t = 1 with the full batch (each step is then exactly one CAVI iteration,
in CAVI's order: q(W), q(pi), [w0], [A], [beta or q(beta)], [gate], q(Z), with CAVI's
safeguards: the ceiling of beta ``noise_precision_max``, the floor ``prior_var_min``, the
gate's skip and back-off, and the gate options of :data:`pyro_moe.engines.options.CLOSED_FORM`); with minibatches
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

Data: every pass over the data goes through a *source*
(:class:`~pyro_moe.engines.source.DataSource`: :class:`~pyro_moe.engines.source.InMemory`,
the data in memory; :class:`pyro_moe.distributed.DaskSource` for row chunks on a Dask cluster): the
full-data passes (the initial q(Z)'s statistics, a full-batch local step, the gate's
L-BFGS M-step, the stop rule's subsample, the final closed form) run where the data are,
and only a minibatch's rows (``source.batch``) come to the client, whose local step and
global step are the same code for both.
"""

from __future__ import annotations

import math
import statistics

from ..closed_form.sites import Conjugate
from .base import Run
from .options import Options
from .sweep import EVAL_ROWS, Schedule, robbins_monro

__all__ = ["EVAL_ROWS", "natural_schedule", "natural_summary", "robbins_monro", "window_test"]


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


def natural_schedule(options: Options, N: int) -> Schedule:
    """Natural SVI's :class:`~pyro_moe.engines.sweep.Schedule` for N rows (module
    docstring): the full batch (``batch_size`` None or N) or minibatches of B rows, rho from
    ``step_size`` or Robbins-Monro (``kappa``, ``tau``), the minibatch stop rule's
    ``eval_every`` and ``history``, Adam's ``gate_lr``, and the final entry of SVI's
    histories."""
    B = options.batch_size
    return Schedule(
        batch_size=None if B is None or B == N else B, step_size=options.step_size,
        kappa=options.kappa, tau=options.tau, eval_every=options.eval_every,
        history=options.history, gate_lr=options.gate_lr, final_entry=True,
        name="natural-gradient SVI",
    )  # fmt: skip


def natural_summary(run: Run, schedule: Schedule, conj: Conjugate) -> Run:
    """The restart's summary of a natural SVI run (the optimizer, the batch size, the stop
    rule's standard error, a linearised weight prior); the fitted gate's parameters are
    handed back without gradients."""
    stop_se = run.summary.pop("stop_se")
    run.summary["objective_se"] = 0.0  # the final objective is exact (closed form)
    run.summary["stop_se"] = stop_se
    run.summary["optimizer"] = "natural"
    run.summary["batch_size"] = schedule.batch_size
    factor = conj.weight_factor
    if factor is not None:
        run.summary["weight_prior"] = f"{factor.name} (CVI, Gauss-Hermite {factor.x.shape[0]})"
    if run.gate is not None:
        for p in run.gate.parameters():
            p.requires_grad_(False)
    return run
