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

import time
from types import MappingProxyType

import torch

from ..closed_form import updates as U
from ..closed_form.init import initial_log_responsibilities
from ..closed_form.sites import Conjugate, read_model
from ..config import Config, gate_weights
from ..errors import NumericalError
from .base import Engine, Progress, Run, closed_form_fit, fresh_gate
from .gate import GATE_MAX_BACKOFF, GATE_WARM_START_N, GateFitter
from .options import Option, Options, boolean, integer, number, one_of

#: CAVI's own options (the shared ones are :data:`pyro_moe.engines.options.COMMON`).
#:
#: gate_steps: L-BFGS iterations of the gate per CAVI iteration. gate_dtype: "auto" (the
#: data's dtype), "float32" or "float64"; the accept test is always in the data's dtype.
#: gate_warm_start: keep the L-BFGS history across CAVI iterations (None: from
#: GATE_WARM_START_N points). Measured (benchmarks/results/cavi.md, and 15 iterations at
#: 1e6 points: float64 warm 8.8 s, float32 warm 16.6 s, same objective): float32 does not
#: pay here, because converged float32 L-BFGS never meets its tolerance and spends every
#: step; below 1e5 points the float64 cold start is cheap. gate_skip_tol: a gate step that
#: gained at most min(gate_skip_tol, tol) * max(|F|, N) nats is skipped for the next 1, 2,
#: 4, ... GATE_MAX_BACKOFF iterations (the gate is the costliest block), never after the
#: first step, and the fit is not declared converged on an iteration that held the gate.
#: With the warm start, while the last gate step gained > GATE_PRESAMPLE_GAIN nats per
#: point, L-BFGS first runs on a subsample of GATE_PRESAMPLE rows (docs/cavi_notes.md
#: section 6). Converged when
#: |F_t - F_{t-1}| <= tol * max(|F_t|, N): a relative change, measured against N when F is
#: near zero (F is a sum over N points).
OPTIONS = MappingProxyType(
    {
        "tol": Option(1e-8, number(0.0), "relative change of F that counts as converged"),
        "max_iter": Option(1000, integer(1), "CAVI iterations (full sweeps)"),
        "prior_var_min": Option(1e-10, number(0.0, strict=True), "floor of A_k's eigenvalues"),
        "noise_precision_max": Option(
            None, number(0.0, strict=True, none=True), "ceiling of beta (None: 1e10 / Var y)"
        ),
        "gate_steps": Option(10, integer(1), "L-BFGS iterations of the gate per iteration"),
        "gate_dtype": Option("auto", one_of("auto", "float32", "float64"), "the gate's dtype"),
        "gate_warm_start": Option(None, boolean(none=True), "keep L-BFGS history"),
        "gate_tolerance": Option(
            None, number(0.0, strict=True, none=True), "L-BFGS tolerance_change"
        ),
        "gate_skip_tol": Option(1e-7, number(0.0), "skip gate steps that gain less"),
    }
)


class CAVI(Engine):
    """Closed-form variational EM on a conjugate model file (``method="cavi"``).

    :meth:`prepare` reads the model file's sites (:func:`pyro_moe.closed_form.sites.read_model`),
    which refuses a non-conjugate site by name; every restart then runs the closed-form
    iteration of the module docstring. X (N, n) and y (N,) are float64 tensors on the
    device to compute on.
    """

    name = "cavi"
    declared = OPTIONS

    def prepare(self) -> None:
        self.conj = read_model(self.model, self.X, self.y, self.config)

    def schedule_prior_mean(self) -> torch.Tensor:
        return self.conj.prior_mean

    def run(self, how: str, seed: int, restart: int, progress: Progress) -> Run:
        return _run(self.X, self.y, self.config, self.conj, self.options, how, seed, restart,
                    progress, self.source())  # fmt: skip

    def source(self) -> InMemory:
        """Where the iteration's passes over the data run: here, in this process."""
        return InMemory(self.X, self.y)


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


def target_variance(var: float, mean_sq: float) -> float:
    """Var(y), or for constant targets their mean square, else 1: the scale of the
    targets that beta's ceiling and default are measured in."""
    if var > 0:
        return var
    return mean_sq or 1.0


class InMemory:
    """The data in this process's memory: the passes of one CAVI iteration over all N rows
    at once (the one-chunk case of :class:`pyro_moe.distributed.DaskSource`, which holds
    the data on a cluster and sums the same per-chunk statistics over its chunks).

    It keeps log q(Z) (N, C) point-last between the passes (:func:`_point_last`), and the
    gate's log softmax (N, K) for the E-step's log prior.
    """

    def __init__(self, X: torch.Tensor, y: torch.Tensor):
        self.X, self.y = X, y
        self.N = X.shape[0]
        self.log_r: torch.Tensor | None = None

    def target_variance(self) -> float:
        N, y = self.N, self.y
        return target_variance(float(y.var()) if N > 1 else 0.0, float(y.square().mean()))

    def gate_fitter(self, gate, steps, dtype, warm, tolerance, prior_scale) -> GateFitter:
        return GateFitter(gate, self.X, steps, dtype, warm, tolerance, prior_scale)

    def gate_layout(self, log_softmax: torch.Tensor) -> torch.Tensor:
        """The gate's log softmax in the e-step's layout."""
        return _point_last(log_softmax)

    def log_prior(self, row: torch.Tensor | None, gate_log_softmax, rho) -> torch.Tensor:
        """The E-step's log prior (N, C): a mixture's row l_k broadcast over the points, or
        the gate's log g_ik with the noise share rho."""
        if row is not None:
            return row.expand(self.N, row.shape[-1])
        return _log_gate(gate_log_softmax, rho)

    def initial(self, how: str, K: int, seed: int, **kw) -> tuple[U.Stats, torch.Tensor]:
        """Initial q(Z) (:func:`~pyro_moe.closed_form.init.initial_log_responsibilities`),
        kept; returns its statistics over the K Gaussian experts and sum_i r_ik."""
        log_r = initial_log_responsibilities(how, self.X, self.y, K, seed, **kw)
        r = log_r.exp()
        # the noise expert has no weights
        stats, r_sum = U.sufficient_stats(self.X, self.y, r[:, :K], kw.get("maps")), r.sum(0)
        del r
        self.log_r = _point_last(log_r)  # the e-step's layout: (N, C) view of a (C, N) buffer
        return stats, r_sum

    def gate_responsibilities(self, K: int) -> torch.Tensor:
        """r (N, K) of the Gaussian experts, row-major for the gate."""
        assert self.log_r is not None
        return self.log_r[:, :K].contiguous().exp_()

    def e_step(self, q, log_prior, e_log_beta, e_beta, noise, maps) -> U.EStep:
        """q(Z) fused with its statistics and sum_i lse_i (:func:`U.e_step`); log r is
        written in place (no second (N, C) buffer)."""
        est = U.e_step(
            self.X, self.y, q, log_prior, e_log_beta, e_beta, noise, out=self.log_r, maps=maps
        )
        self.log_r = est.log_r
        return est

    def log_responsibilities(self) -> torch.Tensor:
        assert self.log_r is not None
        return self.log_r


def _run(
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
    """One CAVI restart from initialisation ``how``: iterate to convergence or max_iter.

    ``source`` runs the passes over the data (:class:`InMemory` over X and y by default);
    everything else here works on per-expert quantities only.
    """
    source = InMemory(X, y) if source is None else source
    N = source.N
    K = config.experts
    maps = config.maps  # each expert's own features and target (None: the shared design)
    noise = conj.noise_log_density
    learn = config.learn
    w0, A = conj.prior_mean.clone(), conj.prior_cov.clone()
    xi = conj.regularization_cov
    mu = conj.concentration
    var_y = source.target_variance()  # constant targets: the scale of y itself, else 1
    beta_max = options.noise_precision_max or 1e10 / max(var_y, 1e-300)
    latent_beta = conj.noise_prior is not None
    per_expert = config.per_expert_noise  # beta_k, one per expert: sums over k are not taken
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
    rho = gate_prior = gate_log_softmax = None
    if gate is not None:
        for p in gate.parameters():
            p.requires_grad_(learn_gate)
        rho = config.noise_weight
        # "auto": None, the data's dtype
        gate_dtype = {"float32": torch.float32, "float64": torch.float64}.get(options.gate_dtype)
        warm = options.gate_warm_start
        warm = N >= GATE_WARM_START_N if warm is None else warm
        fitter = source.gate_fitter(
            gate, options.gate_steps, gate_dtype, warm, options.gate_tolerance,
            conj.gate_prior_scale if learn_gate else None,
        )  # fmt: skip
        gate_log_softmax = source.gate_layout(fitter.log_softmax())
        # log p(V): a constant when the gate is held fixed, updated with each gate step
        gate_prior = (
            U.gate_log_prior(gate_weights(gate), conj.gate_prior_scale).detach().to(fitter.X.dtype)
            if conj.gate_prior_scale is not None
            else None
        )
    alpha = None

    def log_prior_of(alpha_):
        row = U.dirichlet_expected_log(alpha_).unsqueeze(0) if conj.mixture else None
        return source.log_prior(row, gate_log_softmax, rho)

    stats, r_sum = source.initial(
        how, K, seed,
        prior=U.prior_from(w0, A), log_prior=log_prior_of(mu),
        e_beta=e_beta, e_log_beta=e_log_beta, given=options.responsibilities,
        noise_log_density=noise, maps=maps,
    )  # fmt: skip

    # A^{-1}, log|A|, A^{-1} w0 and log B(mu): rebuilt only when the M-step moves w0 or A
    prior = U.weight_prior(w0, A)
    log_norm_mu = U.dirichlet_log_norm(mu) if conj.mixture else None
    run = Run()
    gate_wait, gate_backoff = 0, 1
    # a skipped gate step gains at most what counts as converged: with a larger threshold
    # the fit held the gate on gains it could not stop on, and crawled (the study's f1 on
    # Synthetic 3 at tol 1e-8: not converged after 3000 iterations; with it, 1161)
    skip_tol = min(options.gate_skip_tol, options.tol)
    t0 = time.perf_counter()
    for _ in range(options.max_iter):
        gate_skipped = False
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
        total_sq = U.summed_sq_residuals(stats, q)  # (K,): sum_i r_ik e_ik
        n_gauss = stats.Nk  # points explained by each Gaussian expert
        if not per_expert:
            total_sq, n_gauss = total_sq.sum(), n_gauss.sum()
        if latent_beta:
            a, b = U.update_noise_gamma(total_sq, n_gauss, a0, b0)
            e_beta, e_log_beta = a / b, torch.digamma(a) - torch.log(b)
        elif "noise_precision" in learn:
            beta = U.update_noise_precision(total_sq, n_gauss, beta_max, previous=beta)
            e_beta, e_log_beta = beta, torch.log(beta)
        if learn_gate:
            # a gate step whose gain was negligible is skipped for 1, 2, 4, ... iterations
            # (a partial M-step: skipping never lowers the objective)
            if gate_wait == 0:
                r_k = source.gate_responsibilities(K)  # (N, K), row-major for the gate
                before = fitter.expected(r_k, gate_log_softmax) + fitter.log_prior()
                gate_log_softmax = source.gate_layout(fitter.step(r_k, gate_log_softmax))
                gain = float(fitter.expected(r_k, gate_log_softmax) + fitter.log_prior() - before)
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
            if rho is not None:  # M-step for the noise share: rho = (1/N) sum_i r_iK
                rho = (r_sum[K] / N).clamp(1e-12, 1 - 1e-12)
        log_prior = log_prior_of(alpha)
        # q(Z), fused with the next iteration's sufficient statistics and the ELBO's
        # data term sum_i lse_i; log r is written in place (no second (N, C) buffer)
        est = source.e_step(q, log_prior, e_log_beta, e_beta, noise, maps)
        stats, r_sum = est.stats, est.r_sum
        elbo, F = U.elbo_from_lse(
            est.lse, q, prior=prior, alpha=alpha, mu=mu if conj.mixture else None,
            log_norm_mu=log_norm_mu,
            qbeta=(a, b) if latent_beta else None, beta_prior=conj.noise_prior, xi=xi,
        )  # fmt: skip
        if gate_prior is not None:
            F = F + gate_prior  # log p(V): MAP for the gate (docs/cavi_notes.md section 7)
        if not torch.isfinite(F):
            raise NumericalError(
                "CAVI produced a non-finite objective; the data may be degenerate (duplicated "
                "or collinear rows, extreme values); please report this data set"
            )
        run.record(F, elbo, time.perf_counter() - t0)
        progress.update(run.objective[-1])
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
    run.iterations = len(run.objective)
    return closed_form_fit(
        run, config, source.log_responsibilities(), q, alpha=alpha, qbeta=(a, b) if latent_beta else None,
        e_beta=e_beta, w0=w0, A=A, mu=mu, xi=xi, rho=rho, gate=gate,
    )  # fmt: skip
