"""The exact posterior by NUTS (Pyro's :class:`pyro.infer.MCMC`) on the same model file.

``fit(..., method="nuts")`` samples the continuous latents theta = (W, [pi], [beta]) of the
model file from p(theta | y, h), the posterior at fixed hyperparameters h, with the
assignments z summed out (:class:`pyro_moe.joint.LogJoint`). It is the reference the
variational engines are graded against (README, "The exact posterior").

Algorithm:

1. **CAVI first.** A CAVI fit (the shared options ``n_init``, ``init``, ``seed``,
   ``responsibilities``, ``tol``, and ``cavi_max_iter``) chooses the hyperparameters h:
   w0, A, beta (unless beta is latent), Xi, and for gated models the gate V and the noise
   share rho. NUTS holds them **fixed at CAVI's values** (``result.draws.info["hyper"]``
   says so): a ``pyro.param`` left in the model would be silently frozen at its initial
   value by NUTS (beta at 1 / Var(y), the experts merging), so the model is traced with
   every hyperparameter a constant, and a model file that still registers a
   ``pyro.param`` is refused. The gate of a gated model is therefore a point estimate:
   the posterior is that of the experts given CAVI's gate.
2. **z summed out**: by log-sum-exp over the components (``marginalize="sum"``, the
   model file's priors from its trace; checked against Pyro's enumeration at the start
   point of every fit) or by Pyro's parallel enumeration of the model file
   (``"enumerate"``, any edit; 7-10x slower per potential evaluation measured at N = 400).
3. **Preconditioned by CAVI's posterior** (``precondition="cavi"``): NUTS moves in
   eps with w_k = m_k + L_k eps_k (L_k L_k^T = B_k, q(w_k) = N(m_k, B_k)) and, for pi
   and a latent beta, u = mu + sigma eps in their unconstrained coordinates (mu, sigma the
   moments of draws from q); the constant Jacobian is dropped. The posterior sd of a
   circle's weights is ~1e-3 of a prior sd of 1–10, so without it the trajectories are
   thousands of leapfrog steps long (issue 18 measured 3.9 s against 0.09 s per iteration
   on three circles, N = 1000);
   NUTS's diagonal mass matrix then adapts to what is left. ``"none"`` samples the
   unconstrained coordinates themselves.
4. ``chains`` chains (4), one after another on one core, each started at its own draw
   from q (seed ``seed + c``); ``warmup`` adaptation iterations, then ``max_iter`` draws
   per chain are kept.
5. **Labels**: each draw's experts are relabelled to match CAVI's
   (:func:`pyro_moe.result.expert_alignment`, Hungarian on the weights; pi moves with
   them, the noise expert stays last); ``draws.relabelled`` counts the draws that moved.

The result is a :class:`~pyro_moe.result.FitResult` like every engine's, with
``result.draws`` (:class:`~pyro_moe.result.Draws`: the draws, divergences, tree depths,
step sizes). Its ``posterior`` holds the draws' moments: m_k and B_k their mean and
covariance, alpha the Dirichlet and (a, b) the Gamma with the draws' means and variances,
r_ik the posterior mean of p(z_i = k | y_i, theta); its ``hyper`` is CAVI's. Its
objective history is log p(y, theta_s | h) at each draw (chain after chain), not an
ELBO: do not rank NUTS results against variational objectives. ``converged`` is split
R-hat < 1.01 for every weight (:func:`pyro.ops.stats.split_gelman_rubin`) with no
divergent transition; otherwise a :class:`~pyro_moe.errors.ConvergenceWarning` says which.
"""

from __future__ import annotations

import math
import sys
import time
import warnings
from dataclasses import replace
from types import MappingProxyType

import torch
from pyro.infer import MCMC
from pyro.infer import NUTS as PyroNUTS
from pyro.ops.stats import split_gelman_rubin

from ..errors import ConvergenceWarning, ModelFileError, NonConjugateError
from ..joint import LogJoint, cholesky, fixed_config, q_draws
from ..result import Draws, FitResult, History, Posterior, expert_alignment
from .base import Engine, Progress, find_stack_level
from .cavi import CAVI
from .options import Option, integer, number, one_of

__all__ = ["NUTS", "OPTIONS"]

#: NUTS's own options (the shared ones are :data:`pyro_moe.engines.options.COMMON`;
#: ``n_init``, ``init``, ``seed``, ``responsibilities`` and ``tol`` go to the CAVI fit that
#: fixes the hyperparameters, ``seed + c`` also seeds chain c).
OPTIONS = MappingProxyType(
    {
        "max_iter": Option(1000, integer(1), "draws kept per chain, after the warm-up"),
        "tol": Option(1e-8, number(0.0), "tol of the CAVI fit that fixes the hyperparameters"),
        "warmup": Option(500, integer(1), "warm-up (adaptation) iterations per chain"),
        "chains": Option(4, integer(1), "chains, run one after another"),
        "target_accept": Option(
            0.8, number(0.0, strict=True, high=1.0, high_strict=True), "NUTS's target acceptance"
        ),
        "max_tree_depth": Option(10, integer(1, 20), "NUTS's largest tree depth"),
        "marginalize": Option(
            "auto", one_of("auto", "sum", "enumerate"), "how z is summed out (auto: sum)"
        ),
        "precondition": Option("cavi", one_of("cavi", "none"), "affine map from CAVI's q"),
        "cavi_max_iter": Option(1000, integer(1), "max_iter of the CAVI fit"),
    }
)

#: draws per block when the posterior's moments over the N points are formed
_BLOCK = 2**21


class NUTS(Engine):
    """NUTS on the model file's log joint with z summed out (``method="nuts"``); the
    module docstring has the algorithm. Overrides :meth:`Engine.fit`: one CAVI fit, then
    the chains (no restarts of its own)."""

    name = "nuts"
    declared = OPTIONS
    unit = "draws"
    variational = False  # the search over fixed points is for the variational engines

    def show_progress(self) -> bool:
        return sys.stderr.isatty()

    def fit(self) -> FitResult:
        opts = self.options
        start = time.perf_counter()
        cavi = self._cavi()
        config = fixed_config(self.model, cavi)
        joint = LogJoint(self.model, self.X, self.y, config, marginalize=opts.marginalize)
        pre = _Preconditioner(joint, cavi, opts.precondition, opts.seed)
        if joint.marginalize == "sum":
            _check_sum(self.model, self.X, self.y, config, joint, pre)
        show = opts.progress if opts.progress is not None else self.show_progress()
        chains = [
            self._chain(joint, pre, c, show) for c in range(opts.chains)
        ]  # each: (eps dict (draws, ...), stats)
        eps = {n: torch.stack([c[0][n] for c in chains]) for n in pre.names}
        theta = pre.theta(eps)  # (chains, draws, ...) constrained
        relabelled = 0
        if cavi.experts > 1:
            theta, relabelled = _align(theta, cavi.mean, cavi.experts)
        C, D = opts.chains, opts.max_iter
        flat = {n: v.reshape(C * D, *v.shape[2:]) for n, v in theta.items()}
        log_joint = _blocks(lambda t: joint.log_prob(t), flat, self.X.shape[0], cavi)
        stats = {k: torch.stack([c[1][k] for c in chains]) for k in chains[0][1]}
        w = theta["w"]
        rhat = split_gelman_rubin(w.detach()) if C > 1 else torch.full(w.shape[2:], math.nan)
        worst = float(rhat.max()) if C > 1 else math.nan
        divergent = int(stats["diverging"].sum())
        converged = C > 1 and worst < 1.01 and divergent == 0
        if not converged:
            why = []
            if C == 1:
                why.append("one chain (R-hat needs two or more)")
            elif not worst < 1.01:
                why.append(f"split R-hat of the weights up to {worst:.3g} (>= 1.01)")
            if divergent:
                why.append(f"{divergent} divergent transitions")
            warnings.warn(
                f"NUTS: {', '.join(why)}; raise warmup or max_iter (draws), or check the model",
                ConvergenceWarning,
                stacklevel=find_stack_level(),
            )
        wall = time.perf_counter() - start
        draws = Draws(
            w=w.detach(),
            pi=theta["pi"].detach() if "pi" in theta else None,
            beta=theta["noise_precision"].detach() if "noise_precision" in theta else None,
            diverging=stats["diverging"],
            tree_depth=stats["tree_depth"],
            n_steps=stats["n_steps"],
            step_size=stats["step_size"][:, 0],
            log_joint=log_joint.reshape(C, D),
            relabelled=relabelled,
            info={
                "hyper": "fixed at the CAVI fit's values (point estimates, gate included)",
                "marginalize": joint.marginalize,
                "precondition": opts.precondition,
                "chains": C,
                "warmup": opts.warmup,
                "draws": D,
                "split_rhat_max": worst,
                "cavi_objective": cavi.objective,
                "cavi_seconds": cavi.wall_time,
                "sampling_seconds": float(stats["seconds"].sum()),
            },
        )
        hyper = cavi.hyper
        if draws.beta is not None:  # E[beta] over the draws, as CAVI reports E_q[beta]
            hyper = replace(hyper, noise_precision=draws.beta.mean().reshape(()))
        history = History(
            objective=log_joint.cpu(),
            elbo=log_joint.cpu(),
            time=torch.cat([s for s in stats["time"]]).cpu(),
            iterations=D,
            wall_time=wall,
            converged=converged,
        )
        restarts = [
            {
                "chain": c,
                "seed": opts.seed + c,
                "step_size": float(stats["step_size"][c, 0]),
                "divergences": int(stats["diverging"][c].sum()),
                "mean_tree_depth": float(stats["tree_depth"][c].double().mean()),
                "seconds": float(stats["seconds"][c]),
            }
            for c in range(C)
        ]
        return FitResult(
            method=self.name,
            model_name=self.model.name,
            model_path=str(self.model.path),
            X=self.X,
            y=self.y,
            posterior=_moments(joint, flat, cavi),
            hyper=hyper,
            history=history,
            learn=(),
            restarts=restarts,
            gate=config.gate,
            draws=draws,
        )

    # ---- parts ------------------------------------------------------------------------
    def _cavi(self) -> FitResult:
        """The CAVI fit that fixes the hyperparameters and preconditions NUTS."""
        opts = self.options
        cavi_opts = CAVI.options(
            {
                "n_init": opts.n_init,
                "init": opts.init,
                "seed": opts.seed,
                "responsibilities": opts.responsibilities,
                "progress": opts.progress,
                "tol": opts.tol,
                "max_iter": opts.cavi_max_iter,
            }
        )
        try:
            return CAVI(self.model, self.X, self.y, self.config, cavi_opts).fit()
        except NonConjugateError as e:
            raise NonConjugateError(
                "method='nuts' fixes the hyperparameters at a CAVI fit and preconditions by "
                f"its posterior, which this model file does not allow: {e}"
            ) from e

    def _chain(self, joint: LogJoint, pre: _Preconditioner, c: int, show: bool):
        """One chain: its draws of eps (draws, ...) and its sampler statistics."""
        opts = self.options
        calls = [0]

        def potential(eps):
            calls[0] += 1
            return joint.potential(pre.u(eps))

        kernel = PyroNUTS(
            potential_fn=potential,
            target_accept_prob=opts.target_accept,
            max_tree_depth=opts.max_tree_depth,
            adapt_step_size=True,
            adapt_mass_matrix=True,
            full_mass=False,
        )
        bar = Progress(opts.warmup + opts.max_iter, f"NUTS chain {c + 1}/{opts.chains}", show)
        depth, steps, diverging, times = [], [], [], []
        last = {"calls": 0, "div": 0}
        t0 = time.perf_counter()

        def hook(kernel, params, stage, i):
            bar.update()
            n = calls[0] - last["calls"]
            last["calls"] = calls[0]
            div = len(kernel._divergences)
            if stage.startswith("Sample"):
                steps.append(n)
                depth.append(max(n, 1).bit_length())
                diverging.append(div > last["div"])
                times.append(time.perf_counter() - t0)
            last["div"] = div

        seed = opts.seed + c
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            init = pre.initial(seed)
            mcmc = MCMC(
                kernel,
                num_samples=opts.max_iter,
                warmup_steps=opts.warmup,
                initial_params=init,
                num_chains=1,
                disable_progbar=True,
                hook_fn=hook,
            )
            try:
                mcmc.run()
            finally:
                bar.close()
        samples = mcmc.get_samples()
        stats = {
            "diverging": torch.tensor(diverging, dtype=torch.bool),
            "tree_depth": torch.tensor(depth, dtype=torch.int64),
            "n_steps": torch.tensor(steps, dtype=torch.int64),
            "step_size": torch.full((opts.max_iter,), float(kernel.step_size)),
            "time": torch.tensor(times, dtype=torch.float64),
            "seconds": torch.tensor(time.perf_counter() - t0, dtype=torch.float64),
        }
        return {n: samples[n].to(self.X.dtype) for n in pre.names}, stats


class _Preconditioner:
    """The affine map u = mu + S eps from NUTS's coordinates eps to the unconstrained
    coordinates u of each latent site (module docstring, step 3)."""

    def __init__(self, joint: LogJoint, cavi: FitResult, how: str, seed: int):
        self.joint = joint
        X = cavi.X
        dt = dict(dtype=X.dtype, device=X.device)
        gen = torch.Generator(device="cpu").manual_seed(seed)
        q = q_draws(cavi, joint.sites, 1000, gen)
        self.loc, self.scale, self.tril = {}, {}, None
        self.fixed: dict[str, torch.Tensor] = {}  # sites with no free coordinate (pi, K = 1)
        u = joint.unconstrain(q)
        for n in joint.sites:
            if u[n].shape[-1:] == (0,):
                self.fixed[n] = u[n][0]
                continue
            if how == "none":
                self.loc[n] = torch.zeros(u[n].shape[1:], **dt)
                self.scale[n] = torch.ones(u[n].shape[1:], **dt)
            elif n == "w":
                self.loc[n] = cavi.mean.to(**dt)
                self.tril = cholesky(cavi.cov.to(**dt))
            else:
                self.loc[n] = u[n].mean(0)
                self.scale[n] = u[n].std(0).clamp_min(1e-12)
        self.names = [n for n in joint.sites if n not in self.fixed]

    def u(self, eps: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """u(eps) at one point (no batch dim) or a batch (leading dims)."""
        out = dict(self.fixed)
        for n in self.names:
            if n == "w" and self.tril is not None:
                out[n] = self.loc[n] + (self.tril @ eps[n].unsqueeze(-1)).squeeze(-1)
            else:
                out[n] = self.loc[n] + self.scale[n] * eps[n]
        return out

    def theta(self, eps: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Constrained draws (chains, draws, ...) from eps (chains, draws, ...)."""
        lead = next(iter(eps.values())).shape[:2]
        flat = {n: v.reshape(-1, *v.shape[2:]) for n, v in eps.items()}
        u = self.u(flat)
        S = lead[0] * lead[1]
        u = {n: (v.expand(S, *v.shape) if n in self.fixed else v) for n, v in u.items()}
        theta, _ = self.joint.constrain(u)
        return {n: v.reshape(*lead, *v.shape[1:]) for n, v in theta.items()}

    def initial(self, seed: int) -> dict[str, torch.Tensor]:
        """A chain's start: eps ~ N(0, I), a draw from q (a standard normal start for
        ``precondition="none"`` too, around 0 in u)."""
        gen = torch.Generator(device="cpu").manual_seed(seed)
        out = {}
        for n in self.names:
            shape = self.loc[n].shape
            out[n] = torch.randn(shape, generator=gen, dtype=torch.float64).to(self.loc[n])
        return out


def _check_sum(model, X, y, config, joint: LogJoint, pre: _Preconditioner) -> None:
    """The log-sum-exp potential against Pyro's enumeration of the model file at the
    preconditioner's centre and one draw from q; a mismatch is a ModelFileError."""
    enum = LogJoint(model, X, y, config, marginalize="enumerate")
    for seed in (None, 0):
        eps = (
            pre.initial(seed)
            if seed is not None
            else {n: torch.zeros_like(pre.loc[n]) for n in pre.names}
        )
        u = pre.u(eps)
        a, b = float(joint.potential(u)), float(enum.potential(u))
        if not abs(a - b) <= 1e-8 * max(1.0, abs(b)):
            raise ModelFileError(
                f"the closed-form sum over z gives a log joint of {-a:.10g} and Pyro's "
                f"enumeration of model file {model.name!r} {-b:.10g}: the file's likelihood is "
                "not the one of pyro_moe.parts; fit with marginalize='enumerate'"
            )


def _align(theta: dict, reference: torch.Tensor, K: int) -> tuple[dict, int]:
    """Each draw's experts relabelled to match ``reference`` (K, n); the count moved."""
    w = theta["w"]
    flat = w.reshape(-1, *w.shape[2:])
    perms = torch.empty(flat.shape[0], K, dtype=torch.long)
    for s in range(flat.shape[0]):
        perms[s] = torch.as_tensor(expert_alignment(reference, flat[s]))
    moved = int((perms != torch.arange(K)).any(-1).sum())
    out = dict(theta)
    idx = perms.to(w.device)
    out["w"] = torch.take_along_dim(flat, idx[:, :, None], 1).reshape(w.shape)
    if "pi" in theta:
        pi = theta["pi"].reshape(flat.shape[0], -1)
        full = idx
        if pi.shape[-1] == K + 1:  # the noise expert stays last
            full = torch.cat([idx, idx.new_full((idx.shape[0], 1), K)], -1)
        out["pi"] = torch.take_along_dim(pi, full, 1).reshape(theta["pi"].shape)
    return out, moved


def _blocks(fn, flat: dict, N: int, cavi: FitResult) -> torch.Tensor:
    """fn over the draws in blocks of about _BLOCK / (N C) draws, concatenated."""
    S = flat["w"].shape[0]
    C = cavi.responsibilities.shape[1]
    size = max(1, _BLOCK // max(1, N * C))
    with torch.no_grad():
        return torch.cat(
            [fn({n: v[i : i + size] for n, v in flat.items()}) for i in range(0, S, size)]
        )


def _moments(joint: LogJoint, flat: dict, cavi: FitResult) -> Posterior:
    """The draws' moments as a Posterior (module docstring)."""
    w = flat["w"]
    S = w.shape[0]
    mean = w.mean(0)
    d = w - mean
    cov = torch.einsum("ski,skj->kij", d, d) / max(S - 1, 1)
    N = joint.X.shape[0]
    C = cavi.responsibilities.shape[1]
    size = max(1, _BLOCK // max(1, N * C))
    r = torch.zeros(N, C, dtype=joint.X.dtype, device=joint.X.device)
    with torch.no_grad():
        for i in range(0, S, size):
            block = {n: v[i : i + size] for n, v in flat.items()}
            r += torch.softmax(joint.component_logits(block), -1).sum(0)
    r /= S
    alpha = None
    if "pi" in flat and flat["pi"].shape[-1] > 1:
        m, v = flat["pi"].mean(0), flat["pi"].var(0)
        total = (m * (1 - m) / v.clamp_min(1e-300)).mean() - 1
        alpha = m * total
    elif cavi.alpha is not None:
        alpha = cavi.alpha
    shape = rate = None
    if "noise_precision" in flat:
        b = flat["noise_precision"]
        shape, rate = b.mean() ** 2 / b.var(), b.mean() / b.var()
    return Posterior(
        responsibilities=r, mean=mean, cov=cov, alpha=alpha, noise_shape=shape, noise_rate=rate
    )
