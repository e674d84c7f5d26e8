"""The exact posterior by NUTS (Pyro's :class:`pyro.infer.MCMC`) on the same model file.

``fit(..., method="nuts")`` samples every continuous latent site theta the model file
declares -- W, [pi], [beta], and any site an edited file adds (an ARD precision alpha per
expert and feature, a horseshoe's global tau and local scales) -- from p(theta | y, h), the
posterior at fixed hyperparameters h, under the file's own likelihood (Gaussian, Student-t,
Bernoulli, an edited mean: any family Pyro has), with the assignments z summed out
(:class:`pyro_moe.joint.LogJoint`). It is the reference the variational engines are graded
against (README, "The exact posterior"). ``draws.info["sites"]`` lists the sites sampled;
the draws of those beyond W, pi, beta are in ``result.posterior.site_draws`` (chain after
chain) and in :func:`pyro_moe.diagnostics.to_inference_data`'s posterior group, relabelled
with the experts when they lie in the ``experts`` plate.

Algorithm:

1. **CAVI first** (or the fit given as ``hyper_from``, a variational fit of the same X, y
   and K; or, for a model file CAVI refuses -- a Laplace or Student-t prior on w, an added
   site, a likelihood other than the closed form's Gaussian -- an SVI
   fit of the file with the same ``n_init``, ``init``, ``seed``, ``responsibilities`` and
   ``search``: natural-gradient SVI with CVI's linearised prior step, whose q then
   preconditions NUTS; ``draws.info["hyper"]`` names the fit). A CAVI fit chooses the hyperparameters h: w0, A, beta (unless beta is
   latent), Xi, and for gated models the gate V and the noise share rho. It is the fit a
   user's ``fit(..., method="cavi")`` with the same arguments makes: the shared options
   ``n_init``, ``init``, ``seed``, ``responsibilities``, ``tol``, ``cavi_max_iter`` as its
   ``max_iter``, CAVI's own options from ``cavi_options``, and the search over fixed
   points when ``fit(search=True)`` (the curve functions' default) -- so NUTS samples at
   the optimum the user's CAVI reports, not at a worse fixed point of a plain restart
   (issue 18's "132 NUTS sd" on three circles with one shared beta was that: the CAVI
   inside NUTS, without the search, stopped at a worse fixed point, F = -68.6 against
   535.6 nats and beta = 72 against 924, which NUTS then left; benchmarks/results/nuts.md).
   NUTS holds h **fixed at CAVI's values** (``result.draws.info["hyper"]``
   says so): a ``pyro.param`` left in the model would be silently frozen at its initial
   value by NUTS (beta at 1 / Var(y), the experts merging), so the model is traced with
   every hyperparameter a constant, and a model file that still registers a
   ``pyro.param`` is refused. **The gate** of a gated model is by default a point estimate
   too (``gate="fixed"``, ``draws.info["gate"] == "fixed"``): the posterior is that of the
   experts given the variational fit's gate. ``gate="sampled"`` makes the gate's
   parameters latent sites ``gate_weights`` and ``gate_biases``
   (:func:`pyro_moe.gate_sites.sampled_gate_model`): the weights under the file's own gate
   prior where it has one (its ``gate_prior`` site, e.g. N(0, s^2) of the built-in files
   with the noise expert), the biases -- which such a prior leaves flat, improper -- and
   the weights of a file without a gate prior under N(0, 2.5^2) each (weakly informative
   for a logistic regression on inputs of unit scale, Gelman et al. 2008; the gate sees
   x / rms(x)); ``draws.info["gate_prior"]`` says which. The noise expert's share rho
   stays fixed. A neural gate's posterior has the hidden units' symmetries (relabelling
   them changes nothing), which short chains do not mix over; a linear gate's has none.
2. **z summed out**: by log-sum-exp over the components (``marginalize="sum"``, the
   model file's priors from its trace; checked against Pyro's enumeration at the start
   point of every fit) or by Pyro's parallel enumeration of the model file
   (``"enumerate"``, any edit; 7-10x slower per potential evaluation measured at N = 400).
3. **Preconditioned by CAVI's posterior** (``precondition="cavi"``): NUTS moves in
   eps with w_k = m_k + L_k eps_k (L_k L_k^T = B_k, q(w_k) = N(m_k, B_k)), the
   additive log-ratios of pi a = mu + sigma eps, and log beta = mu + sigma eps for a
   latent beta (mu, sigma the moments of draws from q), all as one flat site; the
   target is then close to N(0, I). The posterior sd of a circle's weights is ~1e-3 of a
   prior sd of 1–10, so without it the trajectories are thousands of leapfrog steps long
   (issue 18 measured 3.9 s against 0.09 s per iteration on three circles, N = 1000);
   NUTS's diagonal mass matrix then adapts to what is left. ``"none"`` samples those
   unconstrained coordinates themselves (mu = 0, sigma = 1, L = I).
   **The built-in path** (``draws.info["target"] == "built-in"``) is the fast case: latent
   sites among w, pi, beta, the map above, and -- for the priors of :mod:`pyro_moe.parts`
   and the closed form's Gaussian likelihood -- a closed-form gradient (below).
   **The generic path** (``"generic"``, :class:`_Generic`), for a file that declares any
   other latent site or samples its gate: every site in Pyro's unconstrained coordinates
   u (``biject_to`` of its support: log of a Gamma or HalfCauchy scale, stick-breaking of a
   simplex), u = mu + sigma eps with mu, sigma the mean and sd of u over draws of the
   variational fit's q (the fit's own draws of an added site, ``site_draws``; w through
   L_k as above), the sites q does not cover (a sampled gate's parameters) by a Laplace
   approximation at their fitted values; U(eps) is Pyro's potential energy of the file with z enumerated
   (:meth:`pyro_moe.joint.LogJoint.potential`), its gradient by autograd. About 12 ms a
   gradient at N = 150 on a loaded core (a trace of the file per evaluation), so ~10x the
   built-in path's cost per leapfrog step; benchmarks/results/nuts.md has the times. For the priors of
   :mod:`pyro_moe.parts` the potential energy and its gradient are evaluated in closed
   form (:class:`_Target`; no autograd graph, about 40 tensor operations per leapfrog
   step), checked against :class:`~pyro_moe.joint.LogJoint` with autograd at the start
   of every fit; an edited prior uses that autograd path (``draws.info["gradient"]``).
4. ``chains`` chains (4), one after another on one core, each started at its own draw
   from q (seed ``seed + c``); ``warmup`` adaptation iterations (200: the preconditioned
   target is close to N(0, I), so little is left to adapt; measured on the study's 2.csv
   and three circles, benchmarks/results/nuts.md: R-hat < 1.01, bulk ESS > 4000 of 4000
   draws; raise it for ``precondition="none"``), then ``max_iter`` draws per chain are
   kept.
5. **Labels**: each draw's experts are relabelled to match CAVI's
   (:func:`pyro_moe.result.expert_alignment`, Hungarian on the weights; pi moves with
   them, the noise expert stays last, an added site of the ``experts`` plate and a sampled
   gate's output layer too); ``draws.relabelled`` counts the draws that moved.

The result is a :class:`~pyro_moe.result.FitResult` like every engine's, with
``result.draws`` (:class:`~pyro_moe.result.Draws`: the draws, divergences, tree depths,
step sizes). Its ``posterior`` holds the draws' moments: m_k and B_k their mean and
covariance, alpha the Dirichlet and (a, b) the Gamma with the draws' means and variances,
r_ik the posterior mean of p(z_i = k | y_i, theta); its ``hyper`` is CAVI's. Its
objective history is log p(y, theta_s | h) at each draw (chain after chain), not an
ELBO: do not rank NUTS results against variational objectives. ``converged`` is split
R-hat < 1.01 for every coordinate of every sampled site
(:func:`pyro.ops.stats.split_gelman_rubin`, constrained values; per site in
``draws.info["split_rhat"]``) with no divergent transition; otherwise a
:class:`~pyro_moe.errors.ConvergenceWarning` says which. PSIS-LOO and its Pareto k-hats
of a NUTS result (:func:`pyro_moe.diagnostics.loo`) use the file's own pointwise
likelihood at each draw, all sampled sites included.
"""

from __future__ import annotations

import copy
import math
import sys
import time
import warnings
from dataclasses import replace

import pyro.distributions as dist
import torch
from pyro.infer import MCMC
from pyro.infer import NUTS as PyroNUTS
from pyro.ops.stats import split_gelman_rubin

from ..errors import ConvergenceWarning, InputError, ModelFileError, NonConjugateError
from ..gate_sites import GATE_SITES, gate_flat, gate_values, sampled_gate_model
from ..joint import FAST_LATENTS, LogJoint, cholesky, fixed_config, q_draws
from ..likelihood import expected_log_densities, residual_map
from ..parameters import ENGINE_OPTIONS
from ..result import Draws, FitResult, History, Posterior, expert_alignment, expert_axes
from .base import Engine, Progress, find_stack_level
from .cavi import CAVI
from .svi import SVI

__all__ = ["NUTS", "OPTIONS"]

OPTIONS = ENGINE_OPTIONS["nuts"]

#: draws per block when the posterior's moments over the N points are formed
_BLOCK = 2**21


class NUTS(Engine):
    """NUTS on the model file's log joint with z summed out (``method="nuts"``); the
    module docstring has the algorithm. A sampler, not a :class:`~pyro_moe.engines.base.Variational`
    engine: its own :meth:`run_fit` (one CAVI fit, then the chains; no restarts of its
    own) under the shared :meth:`Engine.fit` (options, progress, errors, the result)."""

    name = "nuts"
    declared = OPTIONS
    unit = "draws"
    variational = False  # the search over fixed points is for the variational engines

    def show_progress(self) -> bool:
        return sys.stderr.isatty()

    def run_fit(self) -> FitResult:
        """The variational fit that fixes the hyperparameters, the chains, the result."""
        opts = self.options
        start = time.perf_counter()
        if opts.gate == "sampled" and self.config.gate is None:
            raise InputError(
                f"gate='sampled': model file {self.model.name!r} has no gate (a mixture of "
                "models); its mixing weights pi are sampled as a latent site already"
            )
        cavi = self._cavi()
        source = "given" if opts.hyper_from is not None else cavi.method.upper()
        config = fixed_config(self.model, cavi)
        model, gate_prior = self.model, None
        if opts.gate == "sampled":
            model, gate_prior = sampled_gate_model(self.model, self.X, self.y, config)
        joint = LogJoint(model, self.X, self.y, config, marginalize=opts.marginalize)
        generic = not set(joint.sites) <= set(FAST_LATENTS)
        if generic:
            pre = _Generic(joint, cavi, opts.precondition)
        else:
            pre = _Target(joint, cavi, opts.precondition, opts.seed)
        if joint.marginalize == "sum":
            _check(self.model, self.X, self.y, config, joint, pre)
        show = opts.progress if opts.progress is not None else self.show_progress()
        chains = [
            self._chain(joint, pre, c, show) for c in range(opts.chains)
        ]  # each: (eps dict (draws, ...), stats)
        eps = {n: torch.stack([c[0][n] for c in chains]) for n in pre.names}
        theta = pre.theta(eps)  # (chains, draws, ...) constrained
        relabelled = 0
        added = [n for n in joint.sites if n not in FAST_LATENTS]
        if cavi.experts > 1:
            axes = expert_axes(copy.copy(cavi).attach_model(self.model)) if added else {}
            gate = config.gate if opts.gate == "sampled" else None
            theta, relabelled = _align(theta, cavi.mean, cavi.experts, axes, gate)
        C, D = opts.chains, opts.max_iter
        flat = {n: v.reshape(C * D, *v.shape[2:]) for n, v in theta.items()}
        log_joint = _blocks(lambda t: joint.log_prob(t), flat, self.X.shape[0], cavi)
        stats = {k: torch.stack([c[1][k] for c in chains]) for k in chains[0][1]}
        w = theta["w"]
        rhats = {
            n: float(split_gelman_rubin(v.detach()).max()) if C > 1 else math.nan
            for n, v in theta.items()
        }  # every sampled site's, constrained
        worst = max(rhats.values()) if C > 1 else math.nan
        divergent = int(stats["diverging"].sum())
        converged = C > 1 and worst < 1.01 and divergent == 0
        if not converged:
            why = []
            if C == 1:
                why.append("one chain (R-hat needs two or more)")
            elif not worst < 1.01:
                site = max(rhats, key=rhats.get)
                why.append(f"split R-hat up to {worst:.3g} (>= 1.01; site {site!r})")
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
                "hyper": f"fixed at the {source} fit's values (point estimates, "
                + ("the gate sampled)" if gate_prior else "gate included)"),
                "gate": (
                    "sampled"
                    if gate_prior
                    else ("fixed" if config.gate is not None else "none (pi is sampled)")
                ),
                **({"gate_prior": gate_prior} if gate_prior else {}),
                "sites": list(joint.sites),
                "target": "generic" if generic else "built-in",
                "marginalize": joint.marginalize,
                "precondition": opts.precondition,
                "gradient": "closed form" if pre.closed else "autograd",
                "chains": C,
                "warmup": opts.warmup,
                "draws": D,
                "split_rhat_max": worst,
                "split_rhat": rhats,
                "hyper_method": source,  # the fit that fixed h: CAVI, SVI or given
                "hyper_objective": cavi.objective,
                "hyper_seconds": cavi.wall_time,
                **({"cavi_objective": cavi.objective} if source == "CAVI" else {}),
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
        posterior = _moments(joint, flat, cavi)
        if added:  # the draws of every other site, (chains x draws, ...), chain after chain
            posterior = replace(posterior, site_draws={n: flat[n].detach() for n in added})
        return self.result(posterior, hyper, history, (), restarts, config.gate, draws=draws)

    # ---- parts ------------------------------------------------------------------------
    def _cavi(self) -> FitResult:
        """The fit that fixes the hyperparameters and preconditions NUTS: ``hyper_from``
        when given, else CAVI's, else (a non-conjugate model file) SVI's (module docstring,
        step 1)."""
        opts = self.options
        if opts.hyper_from is not None:
            given = opts.hyper_from
            if given.X.shape != self.X.shape or not (
                torch.equal(given.X.to(self.X), self.X) and torch.equal(given.y.to(self.y), self.y)
            ):
                raise InputError(
                    "hyper_from: the fit given was made on other data than X, y "
                    f"(X {tuple(given.X.shape)} against {tuple(self.X.shape)})"
                )
            if given.experts != self.config.experts:
                raise InputError(
                    f"hyper_from: the fit given has {given.experts} experts, not "
                    f"{self.config.experts}"
                )
            return given
        cavi_opts = CAVI.options(
            {
                "n_init": opts.n_init,
                "init": opts.init,
                "seed": opts.seed,
                "responsibilities": opts.responsibilities,
                "progress": opts.progress,
                "tol": opts.tol,
                "max_iter": opts.cavi_max_iter,
                **(opts.cavi_options or {}),
            }
        )
        try:  # with the search a user's fit makes (fit_curves turns it on)
            return CAVI(
                self.model,
                self.X,
                self.y,
                self.config,
                cavi_opts,
                search=self.search,
            ).fit()
        except NonConjugateError:
            pass  # a non-conjugate prior (Laplace, Student-t on w): SVI's fit instead
        svi_opts = SVI.options(
            {
                "n_init": opts.n_init,
                "init": opts.init,
                "seed": opts.seed,
                "responsibilities": opts.responsibilities,
                "progress": opts.progress,
            }
        )
        return SVI(self.model, self.X, self.y, self.config, svi_opts, search=self.search).fit()

    def _chain(self, joint: LogJoint, pre: _Target | _Generic, c: int, show: bool):
        """One chain: its draws of eps (draws, ...) and its sampler statistics."""
        opts = self.options
        calls = [0]

        def potential(z):  # one flat site: Pyro's per-site work once per step
            calls[0] += 1
            return pre.potential(z["eps"])

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
            init = {"eps": pre.flatten(pre.initial(seed))}
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
        eps = pre.unflatten(samples["eps"].to(self.X.dtype))
        return eps, stats


class _FlatSites:
    """The sites' eps (``names``, each shaped as ``loc[name]``) as one flat vector, the one
    site NUTS moves, and back."""

    names: list[str]
    loc: dict[str, torch.Tensor]

    def flatten(self, eps: dict[str, torch.Tensor]) -> torch.Tensor:
        """The sites' eps as one vector (the site NUTS moves)."""
        return torch.cat([eps[n].reshape(-1) for n in self.names])

    def unflatten(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        """:meth:`flatten`'s inverse, for leading batch dims too."""
        shapes = [self.loc[n].shape for n in self.names]
        parts = torch.split(flat, [math.prod(s) for s in shapes], -1)
        lead = flat.shape[:-1]
        return {
            n: p.reshape((*lead, *s)) for n, p, s in zip(self.names, parts, shapes, strict=True)
        }


class _Target(_FlatSites):
    """NUTS's coordinates eps and its potential energy U(eps) (module docstring, step 3).

    The map theta(eps): w_k = m_k + L_k eps_k; pi = softmax([a, 0]) with
    a = mu + sigma eps (the additive log-ratio a_c = log pi_c / pi_C, c < C); beta =
    exp(mu + sigma eps). Its log-Jacobian (:meth:`log_det`) is
    sum_k log |L_k| + sum_c log pi_c + sum log sigma (pi) + sum log beta + sum log sigma
    (beta), and U(eps) = -log p(y, theta(eps) | h) - log |det d theta / d eps|.

    :meth:`energy` evaluates U and its gradient in closed form (no autograd) when the
    priors are the ones of :mod:`pyro_moe.parts` (w_k ~ N(w0_k, A_k), pi ~ Dir(alpha0),
    beta ~ Gamma(a0, b0)) and z is summed by log-sum-exp. With r_ic the posterior
    probabilities of the components at theta, res_ik = t_ik - w_k^T phi_ik and
    s_ik = r_ik beta_k res_ik:

        dU/d eps_w,k = -L_k^T (sum_i s_ik phi_ik - A_k^{-1} (w_k - w0_k))
        dU/d a_c     = -(n_c + alpha0_c - pi_c sum_c' (n_c' + alpha0_c')),  n_c = sum_i r_ic
        dU/d log beta_k = -(a0 - b0 beta_k + sum_i r_ik (1 - beta_k res_ik^2) / 2)

    (summed over k for a shared beta), times sigma for pi and beta. Otherwise (an edited
    prior, or ``marginalize="enumerate"``) U is :class:`pyro_moe.joint.LogJoint`'s with
    autograd (:meth:`reference`); the closed form is checked against it, value and
    gradient, at the start of every fit.
    """

    def __init__(self, joint: LogJoint, cavi: FitResult, how: str, seed: int):
        self.joint = joint
        X = joint.X
        dt = dict(dtype=X.dtype, device=X.device)
        cfg = joint.config
        self.K, self.C = cfg.experts, cfg.components
        gen = torch.Generator(device="cpu").manual_seed(seed)
        q = q_draws(cavi, joint.sites, 1000, gen)
        self.loc: dict[str, torch.Tensor] = {}
        self.scale: dict[str, torch.Tensor] = {}
        self.fixed: dict[str, torch.Tensor] = {}  # pi of a single component
        n = cavi.mean.shape[-1]
        if how == "none":
            self.loc["w"] = torch.zeros(self.K, n, **dt)
            self.tril = torch.eye(n, **dt).expand(self.K, n, n)
        else:
            self.loc["w"] = cavi.mean.to(**dt)
            self.tril = cholesky(cavi.cov.to(**dt))
        for name, coords in (("pi", _alr), ("noise_precision", torch.log)):
            if name not in joint.sites:
                continue
            if name == "pi" and q[name].shape[-1] == 1:
                self.fixed[name] = torch.ones(1, **dt)
                continue
            c = coords(q[name].to(**dt))
            self.loc[name] = torch.zeros_like(c[0]) if how == "none" else c.mean(0)
            self.scale[name] = torch.ones_like(c[0]) if how == "none" else c.std(0).clamp_min(1e-12)
        self.names = [n for n in joint.sites if n not in self.fixed]
        self._log_det_const = torch.log(self.tril.diagonal(dim1=-2, dim2=-1)).sum() + sum(
            torch.log(s).sum() for s in self.scale.values()
        )
        self.closed = joint.marginalize == "sum" and self._read_priors()
        self._offset = 0.0
        if self.closed:  # the dropped normalising constants, from one reference value
            zero = {n: torch.zeros_like(self.loc[n]) for n in self.names}
            self._offset = float(self.reference(zero)) - float(self.energy(zero)[0])

    # ---- the map ------------------------------------------------------------------------
    def theta(self, eps: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Constrained values from eps with leading batch dims (..., site shape)."""
        w = eps["w"]
        out = {"w": self.loc["w"] + (self.tril @ w.unsqueeze(-1)).squeeze(-1)}
        lead = w.shape[:-2]
        if "pi" in self.fixed:
            out["pi"] = self.fixed["pi"].expand(*lead, 1)
        elif "pi" in self.names:
            a = self.loc["pi"] + self.scale["pi"] * eps["pi"]
            out["pi"] = torch.softmax(torch.cat([a, torch.zeros_like(a[..., :1])], -1), -1)
        if "noise_precision" in self.names:
            out["noise_precision"] = torch.exp(
                self.loc["noise_precision"] + self.scale["noise_precision"] * eps["noise_precision"]
            )
        return out

    def log_det(self, eps: dict[str, torch.Tensor], theta: dict[str, torch.Tensor]) -> torch.Tensor:
        """log |det d theta / d eps| (leading batch dims)."""
        out = self._log_det_const.expand(eps["w"].shape[:-2])
        if "pi" in self.names:
            out = out + torch.log(theta["pi"]).sum(-1)
        if "noise_precision" in self.names:
            lb = torch.log(theta["noise_precision"])
            out = out + lb.reshape(*eps["w"].shape[:-2], -1).sum(-1)
        return out

    def initial(self, seed: int) -> dict[str, torch.Tensor]:
        """A chain's start: eps ~ N(0, I), a draw from (the moments of) q."""
        gen = torch.Generator(device="cpu").manual_seed(seed)
        return {
            n: torch.randn(self.loc[n].shape, generator=gen, dtype=torch.float64).to(self.loc[n])
            for n in self.names
        }

    # ---- the energy -----------------------------------------------------------------------
    def reference(self, eps: dict[str, torch.Tensor]) -> torch.Tensor:
        """U(eps) through :class:`LogJoint` (any model file; autograd gives its gradient)."""
        batched = {n: v.unsqueeze(0) for n, v in eps.items()}
        theta = self.theta(batched)
        ld = self.log_det(batched, theta)[0]
        joint = self.joint
        if joint.marginalize == "enumerate":
            u = joint.unconstrain(theta)
            _, ld_u = joint.constrain(u)
            return joint.potential({n: v[0] for n, v in u.items()}) + ld_u[0] - ld
        return -(joint.log_prob(theta)[0] + ld)

    def potential(self, flat: torch.Tensor) -> torch.Tensor:
        """U at the flat eps, for Pyro's NUTS; its gradient the closed form's where there
        is one, else autograd's through :meth:`reference`."""
        if not self.closed:
            return self.reference(self.unflatten(flat))
        return _Energy.apply(self, flat)

    def _read_priors(self) -> bool:
        """The priors' parameters when they are those of pyro_moe.parts (else False)."""
        priors = self.joint.priors
        w = priors["w"]
        if type(w) not in (dist.MultivariateNormal, torch.distributions.MultivariateNormal):
            return False
        self.w0 = w.loc.expand(self.loc["w"].shape)
        self.precision = torch.cholesky_inverse(w.scale_tril).expand(*self.tril.shape)
        if "pi" in self.names:
            p = priors["pi"]
            if type(p) not in (dist.Dirichlet, torch.distributions.Dirichlet):
                return False
            self.alpha0 = p.concentration
        if "noise_precision" in self.names:
            g = priors["noise_precision"]
            if type(g) not in (dist.Gamma, torch.distributions.Gamma):
                return False
            self.a0, self.b0 = g.concentration, g.rate
        return True

    def energy(self, eps: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """U(eps) and dU/d eps in closed form (class docstring), at one point."""
        joint, K = self.joint, self.K
        cfg = joint.config
        theta = self.theta(eps)
        w = theta["w"]
        if "noise_precision" in theta:
            beta = theta["noise_precision"]
        else:
            beta = cfg.noise_precision
        if "pi" in theta:
            log_pi = torch.log(theta["pi"])
            log_g = log_pi
        else:
            log_g = joint.log_gate
        Z = joint.Z
        res = Z @ residual_map(w, cfg.maps).T  # (N, K)
        b = beta if beta.dim() == 1 else beta.reshape(1)
        logits = log_g + expected_log_densities(res * res, torch.log(b), b, joint.log_u)
        lse = torch.logsumexp(logits, -1)
        r = torch.softmax(logits, -1)  # (N, C)
        rk = r[:, :K]
        d = w - self.w0
        pd = (self.precision @ d.unsqueeze(-1)).squeeze(-1)
        log_p = lse.sum() - 0.5 * (d * pd).sum()
        s = rk * b * res  # (N, K)
        sZ = s.T @ Z  # (K, d)
        n = w.shape[-1]
        if cfg.maps is None:
            g_w = sZ[:, :n]
        else:
            g_w = torch.einsum("kd,kjd->kj", sZ, cfg.maps[:, :n])
        g_w = g_w - pd
        grads = {"w": -(self.tril.transpose(-1, -2) @ g_w.unsqueeze(-1)).squeeze(-1)}
        if "pi" in self.names:
            c = r.sum(0) + self.alpha0
            log_p = log_p + (self.alpha0 * log_pi).sum()  # prior (alpha0 - 1) + Jacobian 1
            g_a = c[:-1] - theta["pi"][:-1] * c.sum()
            grads["pi"] = -g_a * self.scale["pi"]
        if "noise_precision" in self.names:
            lb = torch.log(beta)
            half = 0.5 * (rk * (1 - b * res * res)).sum(0)  # (K,)
            if beta.dim() == 0:
                half = half.sum()
            log_p = log_p + (self.a0 * lb - self.b0 * beta).sum()  # (a0 - 1) + Jacobian 1
            g_b = self.a0 - self.b0 * beta + half
            grads["noise_precision"] = -g_b * self.scale["noise_precision"]
        return -log_p + self._offset, grads


class _Generic(_FlatSites):
    """NUTS's coordinates on any model file (module docstring, step 3, the generic path):
    every latent site the file declares, each in Pyro's unconstrained coordinates u
    (``biject_to`` of its support: log for a positive site, stick-breaking for a simplex),
    u = mu + sigma eps with mu, sigma the mean and sd of u over 1000 draws of the
    variational fit's q (w: u_k = m_k + L_k eps_k, L_k L_k^T = B_k). The sites q does not
    cover (the gate's parameters of ``gate="sampled"``) form one block v, preconditioned by
    a Laplace approximation at the fitted values v0 (the other sites at q's centre):
    v = v0 + L eps with L L^T = H^{-1}, H the Hessian of U in v there (autograd); sigma = 1
    where H is not positive definite. A softmax gate's logits are defined up to a common
    shift, so its rows are correlated: a full L there, which NUTS's diagonal mass matrix
    could not learn. ``precondition="none"``: mu = 0, sigma = 1. U(eps) is Pyro's potential energy of the file with z enumerated
    (:meth:`pyro_moe.joint.LogJoint.potential`: -log p(y, T(u) | h) - log |det dT/du|, the
    constant log |det d u / d eps| left out), its gradient by autograd."""

    closed = False

    def __init__(self, joint: LogJoint, fit: FitResult, how: str):
        self.joint = joint
        X = joint.X
        dt = dict(dtype=X.dtype, device=X.device)
        gen = torch.Generator(device="cpu").manual_seed(0)
        drawn = fit.posterior.site_draws or {}
        known = [n for n in joint.sites if n in FAST_LATENTS or n in drawn]
        q = q_draws(fit, known, 1000, gen)
        gate = joint.config.gate
        fitted = {} if gate is None else {n: v.to(**dt) for n, v in gate_flat(gate).items()}
        self.names = list(joint.sites)
        self.loc: dict[str, torch.Tensor] = {}
        self.scale: dict[str, torch.Tensor] = {}
        self.tril = None
        for n in self.names:
            t = joint.transforms[n]
            if n in q:
                u = t.inv(q[n].to(**dt))
                loc, sd = u.mean(0), u.std(0)
                sd = torch.where(sd > 0, sd, torch.ones_like(sd))
            else:
                value = fitted[n] if n in fitted else torch.zeros(joint.shapes[n], **dt)
                loc = t.inv(value) if n in fitted else value
                sd = torch.ones_like(loc)
            if how == "none":
                loc, sd = torch.zeros_like(loc), torch.ones_like(loc)
            self.loc[n], self.scale[n] = loc, sd
        if how != "none" and "w" in self.names and self.loc["w"].shape == fit.mean.shape:
            self.loc["w"] = fit.mean.to(**dt)
            self.tril = cholesky(fit.cov.to(**dt))
        self.rest: list[str] = []
        self.rest_tril = None
        rest = [n for n in self.names if n not in q] if how != "none" else []
        if rest:
            self.rest_tril = self._laplace(rest)
            self.rest = rest if self.rest_tril is not None else []

    def _laplace(self, rest: list[str]) -> torch.Tensor | None:
        """L with L L^T = H^{-1} for the block of the sites ``rest`` q does not cover
        (class docstring), or None where H is not positive definite."""
        zero = {n: torch.zeros_like(self.loc[n]) for n in self.names}
        centre = {n: v.detach() for n, v in self.unconstrained(zero).items()}
        sizes = [self.loc[n].numel() for n in rest]

        def U(v: torch.Tensor) -> torch.Tensor:
            u = dict(centre)
            for n, part in zip(rest, torch.split(v, sizes), strict=True):
                u[n] = part.reshape(self.loc[n].shape)
            return self.joint.potential(u)

        v0 = torch.cat([centre[n].reshape(-1) for n in rest])
        H = torch.autograd.functional.hessian(U, v0)
        L, info = torch.linalg.cholesky_ex(0.5 * (H + H.T))
        if int(info) != 0:
            return None
        return cholesky(torch.cholesky_inverse(L))

    def unconstrained(self, eps: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """u(eps), leading batch dims allowed."""
        u = {}
        for n in self.names:
            if n == "w" and self.tril is not None:
                u[n] = self.loc[n] + (self.tril @ eps[n].unsqueeze(-1)).squeeze(-1)
            else:
                u[n] = self.loc[n] + self.scale[n] * eps[n]
        if self.rest:  # the Laplace block, jointly
            first = self.rest[0]
            lead = eps[first].shape[: eps[first].dim() - self.loc[first].dim()]
            e = torch.cat([eps[n].reshape(*lead, -1) for n in self.rest], -1)
            v = (self.rest_tril @ e.unsqueeze(-1)).squeeze(-1)
            sizes = [self.loc[n].numel() for n in self.rest]
            for n, part in zip(self.rest, torch.split(v, sizes, -1), strict=True):
                u[n] = self.loc[n] + part.reshape((*lead, *self.loc[n].shape))
        return u

    def theta(self, eps: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Constrained values from eps with leading batch dims (..., site shape)."""
        u = self.unconstrained(eps)
        return {n: self.joint.transforms[n](u[n]) for n in self.names}

    def initial(self, seed: int) -> dict[str, torch.Tensor]:
        """A chain's start: eps ~ N(0, I), a draw from (the moments of) q."""
        gen = torch.Generator(device="cpu").manual_seed(seed)
        return {
            n: torch.randn(self.loc[n].shape, generator=gen, dtype=torch.float64).to(self.loc[n])
            for n in self.names
        }

    def potential(self, flat: torch.Tensor) -> torch.Tensor:
        """U at the flat eps (class docstring)."""
        return self.joint.potential(self.unconstrained(self.unflatten(flat)))


class _Energy(torch.autograd.Function):
    """U(eps) as an autograd node whose backward is the closed-form gradient."""

    @staticmethod
    def forward(ctx, target: _Target, flat: torch.Tensor):
        with torch.no_grad():
            U, grads = target.energy(target.unflatten(flat))
        ctx.save_for_backward(target.flatten(grads))
        return U

    @staticmethod
    def backward(ctx, g):
        return None, g * ctx.saved_tensors[0]


def _alr(pi: torch.Tensor) -> torch.Tensor:
    """a_c = log pi_c - log pi_C (c < C), the additive log-ratio."""
    log = torch.log(pi)
    return log[..., :-1] - log[..., -1:]


def _check(model, X, y, config, joint: LogJoint, target: _Target) -> None:
    """The log-sum-exp log joint against Pyro's enumeration of the model file at the centre
    of q and one draw from it (a mismatch is a ModelFileError); the closed-form energy
    against :meth:`_Target.reference` there, value and gradient (a mismatch, which no model
    file of pyro_moe.parts gives, falls back to the reference)."""
    enum = LogJoint(model, X, y, config, marginalize="enumerate")
    for seed in (None, 0):
        eps = (
            target.initial(seed)
            if seed is not None
            else {n: torch.zeros_like(target.loc[n]) for n in target.names}
        )
        theta = target.theta({n: v.unsqueeze(0) for n, v in eps.items()})
        a, b = float(joint.log_prob(theta)[0]), float(enum.log_prob(theta)[0])
        if not abs(a - b) <= 1e-8 * max(1.0, abs(b)):
            raise ModelFileError(
                f"the closed-form sum over z gives a log joint of {a:.10g} and Pyro's "
                f"enumeration of model file {model.name!r} {b:.10g}: the file's likelihood is "
                "not the one of pyro_moe.parts; fit with marginalize='enumerate'"
            )
        if not target.closed:
            continue
        leaves = {n: v.clone().requires_grad_(True) for n, v in eps.items()}
        ref = target.reference(leaves)
        g_ref = torch.autograd.grad(ref, list(leaves.values()))
        U, grads = target.energy(eps)
        scale = max(1.0, abs(float(ref.detach())))
        close = abs(float(U) - float(ref.detach())) <= 1e-8 * scale and all(
            torch.allclose(grads[n], g, rtol=1e-6, atol=1e-8 * scale)
            for n, g in zip(target.names, g_ref, strict=True)
        )
        if not close:
            target.closed = False


def _align(
    theta: dict,
    reference: torch.Tensor,
    K: int,
    axes: dict[str, int] | None = None,
    gate: torch.nn.Module | None = None,
) -> tuple[dict, int]:
    """Each draw's experts relabelled to match ``reference`` (K, n); the count moved. The
    sites of ``axes`` (an added per-expert site: the axis of its value that indexes the
    experts, :func:`pyro_moe.result.expert_axes`) move with them, and a sampled gate's
    output layer (its last weight and bias, one row per expert) too."""
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
    S = flat.shape[0]
    rows = torch.arange(S, device=idx.device)[:, None]

    def permute(v: torch.Tensor, axis: int) -> torch.Tensor:  # v (S, ...), experts at axis
        return v.movedim(axis, 1)[rows, idx].movedim(1, axis)

    for name, axis in (axes or {}).items():
        v = theta[name].reshape(S, *theta[name].shape[2:])
        out[name] = permute(v, axis + 1).reshape(theta[name].shape)
    if gate is not None and moved:  # the output layer: its last weight (K, .) and bias (K,)
        vals = gate_values(gate, {n: theta[n].reshape(S, -1) for n in GATE_SITES})
        last = [n for n in vals if vals[n].dim() == 3][-1:] + [
            n for n in vals if vals[n].dim() == 2
        ][-1:]
        for name in last:
            if vals[name].shape[1] == K:
                vals[name] = permute(vals[name], 1)
        for site, v in gate_flat(gate, vals).items():
            out[site] = v.reshape(theta[site].shape)
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
