"""Conjugacy found from the traced model file, and the closed-form updates of the conjugate
hyperprior sites it finds (derivation section 9).

**The rule** (:func:`natural_parameters`, :func:`complete_conditional`). A latent site theta
whose prior is of an exponential family F with sufficient statistics T(theta) --

* Gamma: T = (log theta, theta) elementwise, eta = (a - 1, -b);
* Normal (any batch, ``.to_event``) or MultivariateNormal: T = (theta, theta theta^T) over
  the flattened value, eta = (h, -J/2), read as (h, J);
* Dirichlet (one simplex): T = log theta, eta = mu - 1 --

is *conjugate* when the log joint restricted to the factors that touch it (its own prior
and its children in the trace: the sites whose log-density moves when theta moves, every
other site held at a value by ``poutine.condition``) is exactly eta . T(theta) + c. Then
its complete conditional is F with natural parameters eta. Pyro evaluates the log joint;
eta is read by automatic differentiation (as Autoconj does, Hoffman, Johnson & Tran 2018):
for a Gamma, dL/dtheta = eta_1 / theta + eta_2 at two random points gives eta elementwise;
for a Gaussian, J = -Hessian and h = grad + J theta; for a Dirichlet, a least-squares fit
of L at K + 1 points of the simplex. The identity is then *verified* at a third random point
(all elements moved at once, so a cross term between elements or a term outside the span
of T fails), to ``RULE_RTOL`` relative in both the gradient and the change of L. A site
that fails is not conjugate, and keeps today's behaviour (CAVI refuses it by name).

**Expectations** (:class:`WeightHyperprior`). CAVI needs E_q[eta], not eta at a value. eta
is an expectation-friendly function of the other sites exactly when it is multilinear in
their sufficient statistics: then E_q[eta] is eta at the expected statistics. The
hyperprior sites found here are those whose only child is the weights ``w``, with
p(w_k | theta, phi) = N(w0_k(phi), Lambda_k(theta)^{-1}); :func:`read_hyperprior` reads, by
differentiating the traced prior of w, and verifies at a second random point, that

* the precision is linear in the Gamma sites: vec Lambda(theta) = Lambda_0 + P theta;
* its log-determinant is affine in their log: log|Lambda_k| = c_k + C_k . log theta;
* the mean is affine in the Gaussian sites: w0(phi) = c_0 + M phi;
* the precision does not move with phi, nor the mean with theta;

which is the multilinearity in (log theta, theta) and (phi, phi phi^T) that makes every
expectation below exact. With D_k = E[(w_k - w0_k)(w_k - w0_k)^T]
= B_k + Cov(w0_k) + (m_k - E w0_k)(m_k - E w0_k)^T:

* q(theta_e) = Gamma(a0_e + 1/2 sum_k C_ke, b0_e + 1/2 (P^T vec D)_e);
* q(phi) = N(J^{-1} h, J^{-1}), J = J0 + M^T blockdiag(E Lambda_k) M,
  h = h0 + M^T [E Lambda_k (m_k - c_0k)]_k;
* q(w_k) takes E[Lambda_k] and E[Lambda_k] E[w0_k] in place of A_k^{-1}, A_k^{-1} w0_k;
* the objective's term of the weights and their hyperpriors is
  -sum_k 1/2 [tr(E Lambda_k D_k) - E log|Lambda_k| - n - log|B_k|]
  - sum_e KL(q(theta_e) || p(theta_e)) - KL(q(phi) || p(phi)),
  E log|Lambda_k| = c_k + C_k . (psi(a) - log b).

Each is the exact maximiser of the objective over its block given the others, so the
sweep q(W) -> q(theta) -> q(phi) never lowers it; natural-gradient SVI moves (a, b) and
(h, J), the natural parameters, by (1 - rho) eta + rho eta_hat.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.poutine.util import site_is_subsample

from ..errors import NonConjugateError
from ..likelihood import unwrap
from ..model_file import Model
from . import updates as U

__all__ = [
    "RULE_RTOL",
    "Natural",
    "WeightHyperprior",
    "complete_conditional",
    "family_of",
    "natural_parameters",
    "read_hyperprior",
]

#: relative tolerance of the rule's verification (the log joint is evaluated in float64)
RULE_RTOL = 1e-9


def family_of(fn) -> str | None:
    """'gamma', 'gaussian' or 'dirichlet' for a site's distribution (through ``.to_event``),
    None for a family the rule does not read."""
    base = unwrap(fn)
    if isinstance(base, dist.Gamma):
        return "gamma"
    if isinstance(base, dist.Normal | dist.MultivariateNormal):
        return "gaussian"
    if isinstance(base, dist.Dirichlet) and fn.batch_shape == torch.Size():
        return "dirichlet"
    return None


@dataclass
class Natural:
    """The natural parameters of a conjugate site's complete conditional: Gamma (eta_1,
    eta_2) = (a - 1, -b) elementwise in the site's shape; Gaussian (h, J) over the flattened
    value; Dirichlet (eta,) = (alpha - 1,)."""

    family: str
    eta: tuple[torch.Tensor, ...]


def _close(got: torch.Tensor, want: torch.Tensor, scale: torch.Tensor) -> bool:
    return bool(((got - want).abs() <= RULE_RTOL * scale + 1e-300).all())


def natural_parameters(
    log_joint: Callable[[torch.Tensor], torch.Tensor],
    family: str,
    value: torch.Tensor,
    gen: torch.Generator,
) -> Natural | None:
    """The rule: eta with ``log_joint(theta) = eta . T(theta) + c`` exactly, read by autodiff
    near ``value`` (a point in the support) and verified at a third random point, or None
    when the log joint is not of that form (not conjugate)."""
    v0 = value.detach().to(torch.float64)

    def rand(shape):
        return torch.rand(shape, generator=gen, dtype=torch.float64).to(v0.device)

    def grad_at(t):
        t = t.detach().clone().requires_grad_(True)
        L = log_joint(t)
        (g,) = torch.autograd.grad(L, t, allow_unused=True)
        return L.detach(), (torch.zeros_like(t) if g is None else g.detach())

    if family == "gamma":
        pts = [v0 * torch.exp(rand(v0.shape) - 0.5) for _ in range(3)]
        (La, ga), (_, gb), (Lc, gc) = (grad_at(p) for p in pts)
        ia, ib, ic = (1.0 / p for p in pts)
        eta1 = (ga - gb) / (ia - ib)
        eta2 = ga - eta1 * ia
        scale = eta1.abs() * ic + eta2.abs() + gc.abs()
        if not _close(gc, eta1 * ic + eta2, scale):
            return None
        dT = eta1 * (torch.log(pts[2]) - torch.log(pts[0])) + eta2 * (pts[2] - pts[0])
        if not _close(Lc - La, dT.sum(), dT.abs().sum() + La.abs() * 1e-6):
            return None
        return Natural("gamma", (eta1, eta2))
    if family == "gaussian":
        p = v0.numel()
        flat = v0.reshape(-1)

        def f(u):
            return log_joint(u.reshape(v0.shape))

        a = flat + rand(p) - 0.5
        J = -torch.autograd.functional.hessian(f, a).reshape(p, p)
        La, ga = grad_at(a.reshape(v0.shape))
        h = ga.reshape(-1) + J @ a
        c = flat + 2.0 * (rand(p) - 0.5)
        Lc, gc = grad_at(c.reshape(v0.shape))
        want = h - J @ c
        if not _close(gc.reshape(-1), want, h.abs() + (J.abs() @ c.abs()) + 1.0):
            return None
        dL = h @ (c - a) - 0.5 * (c @ J @ c - a @ J @ a)
        if not _close(Lc - La, dL, dL.abs() + La.abs() * 1e-6 + 1.0):
            return None
        return Natural("gaussian", (h, 0.5 * (J + J.T)))
    if family == "dirichlet":
        K = v0.numel()
        conc = torch.ones(K, dtype=torch.float64)
        pts = torch.distributions.Dirichlet(conc).sample((K + 3,)).clamp_min(1e-3)
        pts = (pts / pts.sum(-1, keepdim=True)).to(v0.device)
        with torch.no_grad():
            L = torch.stack([log_joint(pt) for pt in pts])
        design = torch.cat([torch.log(pts), torch.ones(K + 3, 1, dtype=pts.dtype)], -1)
        sol = torch.linalg.lstsq(design[: K + 1], L[: K + 1].unsqueeze(-1)).solution
        fitted = (design @ sol).squeeze(-1)
        if not _close(fitted, L, L.abs() + 1.0):
            return None
        return Natural("dirichlet", (sol[:K, 0],))
    return None


def _trace(model: Model, X, y, config, data: Mapping[str, torch.Tensor]):
    with pyro.get_param_store().scope():
        return poutine.trace(poutine.condition(model.model, data=dict(data))).get_trace(
            X, y, config
        )


def _log_probs(tr) -> dict[str, torch.Tensor]:
    return {
        n: s["fn"].log_prob(s["value"]).sum()
        for n, s in tr.nodes.items()
        if s["type"] == "sample" and not site_is_subsample(s)
    }


def _latent_values(tr) -> dict[str, torch.Tensor]:
    return {
        n: s["value"].detach()
        for n, s in tr.nodes.items()
        if s["type"] == "sample" and not s["is_observed"] and not site_is_subsample(s)
    }


def children(
    model: Model, X, y, config, values: Mapping[str, torch.Tensor], name: str, gen,
    fam: str | None = None, before: Mapping[str, torch.Tensor] | None = None,
) -> tuple[str, ...]:  # fmt: skip
    """The sites whose log-density moves when ``name`` moves (every other site held at
    ``values``): ``name``'s children in the trace (its Markov blanket's factors).
    ``fam`` (:func:`family_of` its distribution) and ``before`` (the sites' log-densities
    at ``values``) when the caller holds them."""
    if fam is None or before is None:
        with torch.no_grad():
            tr = _trace(model, X, y, config, values)
        fam, before = family_of(tr.nodes[name]["fn"]), _log_probs(tr)
    v = values[name].to(torch.float64)
    if fam == "gamma":
        moved = v * torch.exp(torch.rand(v.shape, generator=gen, dtype=v.dtype) - 0.5)
    elif fam == "dirichlet":
        moved = torch.distributions.Dirichlet(torch.ones_like(v)).sample()
    else:
        moved = v + torch.rand(v.shape, generator=gen, dtype=v.dtype) - 0.5
    with torch.no_grad():
        after = _log_probs(_trace(model, X, y, config, {**values, name: moved.to(values[name])}))
    return tuple(
        n
        for n in before
        if n != name and not torch.allclose(before[n], after[n], rtol=1e-13, atol=0.0)
    )


def complete_conditional(
    model: Model,
    X,
    y,
    config,
    name: str,
    values: Mapping[str, torch.Tensor] | None = None,
    seed: int = 0,
) -> tuple[Natural | None, tuple[str, ...]]:
    """The rule applied to site ``name`` of the traced file: (its complete conditional's
    natural parameters at ``values`` of the other sites -- a prior draw of every latent site
    when None -- or None when it is not conjugate, and its children)."""
    gen = torch.Generator().manual_seed(seed)
    if values is None:
        with torch.no_grad():
            values = _latent_values(_trace(model, X, y, config, {}))
    with torch.no_grad():
        tr = _trace(model, X, y, config, values)
    fam = family_of(tr.nodes[name]["fn"])
    if fam is None:
        return None, ()
    kids = children(model, X, y, config, values, name, gen, fam, _log_probs(tr))
    factors = (name, *kids)

    def log_joint(t):
        lp = _log_probs(_trace(model, X, y, config, {**values, name: t.to(values[name].dtype)}))
        return sum(lp[f] for f in factors).to(torch.float64)

    return natural_parameters(log_joint, fam, values[name], gen), kids


# ---- hyperpriors of the weights -------------------------------------------------------------
@dataclass
class HyperState:
    """q of the hyperprior sites: (a, b) of each Gamma site, (h, J) and the mean and
    covariance of the Gaussian block phi (all Gaussian sites, flattened together)."""

    gamma: dict[str, tuple[torch.Tensor, torch.Tensor]]
    h: torch.Tensor | None
    J: torch.Tensor | None
    mean: torch.Tensor | None
    cov: torch.Tensor | None
    #: w0 point-estimated by the M-step (``learn`` has "prior_mean"; Gamma sites only) in
    #: place of the traced constant c_0, else None
    w0: torch.Tensor | None = None


@dataclass
class ExpectedPrior:
    """E_q of p(w_k | theta, phi), what the q(W) update and the objective read: E[Lambda_k]
    (``precision``), E[Lambda_k] E[w0_k] (``precision_mean``), E[w0_k] (``mean``), and
    ``kl(q)``: the weights' KL plus the hyperpriors' (module docstring)."""

    mean: torch.Tensor
    precision: torch.Tensor
    precision_mean: torch.Tensor
    hyper: WeightHyperprior
    state: HyperState

    def kl(self, q: U.WeightPosterior) -> torch.Tensor:
        return self.hyper.kl(q, self.state)


def _gamma_prior(fn, shape) -> tuple[torch.Tensor, torch.Tensor]:
    g = unwrap(fn)
    return (
        g.concentration.detach().to(torch.float64).expand(shape).clone(),
        g.rate.detach().to(torch.float64).expand(shape).clone(),
    )


@dataclass
class WeightHyperprior:
    """Conjugate hyperprior sites of p(w_k) = N(w0_k(phi), Lambda_k(theta)^{-1}) found in
    the file (module docstring): Gamma sites theta (flattened together, ``gamma_sizes``)
    entering the precision linearly, Gaussian sites phi entering the mean affinely."""

    K: int
    n: int
    gamma_names: tuple[str, ...]
    gamma_shapes: tuple[torch.Size, ...]
    gamma_prior: tuple[tuple[torch.Tensor, torch.Tensor], ...]  # (a0, b0), each site's shape
    gauss_names: tuple[str, ...]
    gauss_shapes: tuple[torch.Size, ...]
    prior_h: torch.Tensor | None  # (q,) h0 of phi's prior
    prior_J: torch.Tensor | None  # (q, q) J0
    lam0: torch.Tensor  # (K, n, n) Lambda_0
    P: torch.Tensor  # (K n n, p) d vec Lambda / d theta
    logdet0: torch.Tensor  # (K,) c_k
    C: torch.Tensor  # (K, p) d log|Lambda_k| / d log theta
    mean0: torch.Tensor  # (K, n) c_0
    M: torch.Tensor  # (K n, q) d w0 / d phi

    @property
    def names(self) -> tuple[str, ...]:
        return self.gamma_names + self.gauss_names

    # ---- q of the hyperpriors --------------------------------------------------------
    def start(self) -> HyperState:
        """q of every site at its prior."""
        gamma = {
            nm: (a0.clone(), b0.clone())
            for nm, (a0, b0) in zip(self.gamma_names, self.gamma_prior, strict=True)
        }
        h = J = mean = cov = None
        if self.prior_J is not None:
            h, J = self.prior_h.clone(), self.prior_J.clone()
            cov = torch.cholesky_inverse(torch.linalg.cholesky(J))
            mean = cov @ h
        return HyperState(gamma, h, J, mean, cov)

    def _theta(self, st: HyperState) -> tuple[torch.Tensor, torch.Tensor]:
        """E[theta] and E[log theta], flattened over the Gamma sites."""
        if not self.gamma_names:
            z = self.lam0.new_zeros(0)
            return z, z
        a = torch.cat([st.gamma[nm][0].reshape(-1) for nm in self.gamma_names])
        b = torch.cat([st.gamma[nm][1].reshape(-1) for nm in self.gamma_names])
        return U.gamma_moments(a, b)

    def expected_precision(self, st: HyperState) -> torch.Tensor:
        e_theta, _ = self._theta(st)
        return self.lam0 + (self.P @ e_theta).reshape(self.K, self.n, self.n)

    def expected_logdet(self, st: HyperState) -> torch.Tensor:
        _, e_log = self._theta(st)
        return self.logdet0 + self.C @ e_log

    def mean_moments(self, st: HyperState) -> tuple[torch.Tensor, torch.Tensor]:
        """E[w0_k] (K, n) and Cov(w0_k) (K, n, n)."""
        K, n = self.K, self.n
        if st.mean is None:
            base = self.mean0 if st.w0 is None else st.w0
            return base, self.mean0.new_zeros(K, n, n)
        Ew0 = self.mean0 + (self.M @ st.mean).reshape(K, n)
        full = self.M @ st.cov @ self.M.T
        idx = torch.arange(K, device=full.device)
        blocks = full.reshape(K, n, K, n)[idx, :, idx, :]
        return Ew0, blocks

    def scatter(self, q: U.WeightPosterior, st: HyperState) -> torch.Tensor:
        """D_k = B_k + Cov(w0_k) + (m_k - E w0_k)(m_k - E w0_k)^T."""
        Ew0, cov0 = self.mean_moments(st)
        return U.scatter_about_prior(q, Ew0) + cov0

    def prior(self, st: HyperState) -> ExpectedPrior:
        lam = self.expected_precision(st)
        Ew0, _ = self.mean_moments(st)
        return ExpectedPrior(Ew0, lam, (lam @ Ew0.unsqueeze(-1)).squeeze(-1), self, st)

    def step(self, st: HyperState, q: U.WeightPosterior, rho: float = 1.0) -> HyperState:
        """q(theta) then q(phi) given q(W) (each the exact maximiser given the others; a
        step (1 - rho) eta + rho eta_hat in natural parameters)."""
        gamma = dict(st.gamma)
        if self.gamma_names:
            D = self.scatter(q, st)
            grad_b = 0.5 * (self.P.T @ D.reshape(-1))
            grad_a = 0.5 * self.C.sum(0)
            off = 0
            for nm, shape, (a0, b0) in zip(
                self.gamma_names, self.gamma_shapes, self.gamma_prior, strict=True
            ):
                size = int(torch.Size(shape).numel())
                a_hat = a0 + grad_a[off : off + size].reshape(shape)
                b_hat = b0 + grad_b[off : off + size].reshape(shape)
                a, b = gamma[nm]
                gamma[nm] = (U.blend(a, a_hat, rho), U.blend(b, b_hat, rho))
                off += size
        st = HyperState(gamma, st.h, st.J, st.mean, st.cov, st.w0)
        if self.prior_J is not None:
            lam = self.expected_precision(st)
            Lb = torch.block_diag(*lam)
            J_hat = self.prior_J + self.M.T @ Lb @ self.M
            resid = (q.mean - self.mean0).reshape(-1)
            h_hat = self.prior_h + self.M.T @ (Lb @ resid)
            h, J = U.blend(st.h, h_hat, rho), U.blend(st.J, J_hat, rho)
            L = torch.linalg.cholesky(0.5 * (J + J.T))
            cov = torch.cholesky_inverse(L)
            mean = torch.cholesky_solve(h.unsqueeze(-1), L)[:, 0]
            st = HyperState(gamma, h, J, mean, cov, st.w0)
        return st

    def with_prior_mean(
        self, st: HyperState, q: U.WeightPosterior, xi: torch.Tensor | None
    ) -> HyperState:
        """The M-step of a learned w0 (Gamma sites only: w0 is then the traced constant
        c_0): :func:`~pyro_moe.closed_form.updates.update_prior_mean` at A_k^{-1} =
        E[Lambda_k], the exact maximiser of E log p(W | theta, w0) [+ R(w0)] over w0."""
        w0 = U.update_prior_mean(q, self.expected_precision(st), xi)
        return HyperState(st.gamma, st.h, st.J, st.mean, st.cov, w0)

    # ---- the objective ----------------------------------------------------------------
    def kl(self, q: U.WeightPosterior, st: HyperState) -> torch.Tensor:
        """-E log p(W | theta, phi) - H[q(W)] + KL(q(theta) || p) + KL(q(phi) || p)."""
        lam = self.expected_precision(st)
        D = self.scatter(q, st)
        tr = (lam * D).sum()
        out = 0.5 * (tr - self.expected_logdet(st).sum() - q.logdet.sum() - self.n * self.K)
        for nm, (a0, b0) in zip(self.gamma_names, self.gamma_prior, strict=True):
            a, b = st.gamma[nm]
            out = out + U.gamma_kl(a, b, a0, b0).sum()
        if self.prior_J is not None:
            out = out + gaussian_kl(st.mean, st.cov, self.prior_h, self.prior_J)
        return out

    # ---- what the result keeps -------------------------------------------------------
    def params(self, st: HyperState) -> dict[str, dict[str, torch.Tensor]]:
        """q of each site by name: Gamma {'shape', 'rate'}; Gaussian {'loc', 'cov'} of the
        site's flattened value (block of the joint q(phi))."""
        out: dict[str, dict[str, torch.Tensor]] = {
            nm: {"shape": a.clone(), "rate": b.clone()} for nm, (a, b) in st.gamma.items()
        }
        off = 0
        for nm, shape in zip(self.gauss_names, self.gauss_shapes, strict=True):
            size = int(torch.Size(shape).numel())
            sl = slice(off, off + size)
            out[nm] = {"loc": st.mean[sl].reshape(shape).clone(), "cov": st.cov[sl, sl].clone()}
            off += size
        return out

    def draws(self, st: HyperState, S: int, seed: int = 0) -> dict[str, torch.Tensor]:
        """S draws (S, *site shape) of each site from its q."""
        gen = torch.Generator(device="cpu").manual_seed(seed)
        out = {}
        for nm, (a, b) in st.gamma.items():
            g = torch._standard_gamma(a.cpu().expand(S, *a.shape).contiguous(), generator=gen)
            out[nm] = (g / b.cpu()).to(a.device)
        if st.mean is not None:
            L = torch.linalg.cholesky(st.cov).cpu()
            eps = torch.randn(S, st.mean.shape[0], generator=gen, dtype=st.mean.dtype)
            flat = (st.mean.cpu() + eps @ L.T).to(st.mean.device)
            off = 0
            for nm, shape in zip(self.gauss_names, self.gauss_shapes, strict=True):
                size = int(torch.Size(shape).numel())
                out[nm] = flat[:, off : off + size].reshape(S, *shape)
                off += size
        return out


def gaussian_kl(m: torch.Tensor, S: torch.Tensor, h0: torch.Tensor, J0: torch.Tensor):
    """KL(N(m, S) || N(J0^{-1} h0, J0^{-1})) = 1/2 [tr(J0 S) + (m - m0)^T J0 (m - m0) - q
    - log|S| - log|J0|]."""
    L0 = torch.linalg.cholesky(J0)
    m0 = torch.cholesky_solve(h0.unsqueeze(-1), L0)[:, 0]
    d = m - m0
    logdet_S = U.cholesky_logdet(torch.linalg.cholesky(S))
    return 0.5 * ((J0 * S).sum() + d @ J0 @ d - m.shape[0] - logdet_S - U.cholesky_logdet(L0))


def _weight_prior_of(fn, K: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(loc (K, n), precision (K, n, n)) of w's prior: a MultivariateNormal, or a
    Normal(loc, scale).to_event(1) (diagonal)."""
    base = unwrap(fn)
    if isinstance(base, dist.MultivariateNormal):
        return base.loc.expand(K, n), base.precision_matrix.expand(K, n, n)
    loc, scale = torch.broadcast_tensors(base.loc, base.scale)
    return loc.expand(K, n), torch.diag_embed(scale.expand(K, n) ** -2)


def read_hyperprior(
    model: Model, X, y, config, trace, names: tuple[str, ...], weights: str = "w"
) -> WeightHyperprior:
    """The conjugate hyperprior sites ``names`` of the weights (every latent site the site
    registry does not name), found and checked by the rule; a site that is not conjugate,
    or whose complete conditional's parameters are not multilinear in the others' statistics
    (module docstring), raises :class:`~pyro_moe.errors.NonConjugateError` naming it."""
    K, n = config.experts, config.features
    gen = torch.Generator().manual_seed(2027)
    nodes = trace.nodes
    values = _latent_values(trace)
    fams = {}
    for nm in names:
        fn = nodes[nm]["fn"]
        fam = family_of(fn)
        if fam not in ("gamma", "gaussian"):
            raise _refuse(nm, fn, "the rule reads Gamma and Gaussian hyperpriors only")
        eta, kids = complete_conditional(model, X, y, config, nm, values)
        if tuple(kids) != (weights,):
            raise _refuse(
                nm, fn, f"its children are {list(kids)}; CAVI derives updates for hyperpriors "
                f"whose only child is the weights {weights!r}",
            )  # fmt: skip
        if eta is None:
            raise _refuse(
                nm, fn, "its complete conditional is not in its prior's exponential family "
                "(the log joint is not linear in its sufficient statistics)",
            )  # fmt: skip
        fams[nm] = fam
    gamma_names = tuple(nm for nm in names if fams[nm] == "gamma")
    gauss_names = tuple(nm for nm in names if fams[nm] == "gaussian")
    dt = X.dtype

    def flat(nms):
        if not nms:
            return values[weights].new_zeros(0).to(torch.float64)
        return torch.cat([values[nm].reshape(-1).to(torch.float64) for nm in nms])

    def split(v, nms):
        out, off = {}, 0
        for nm in nms:
            size = values[nm].numel()
            out[nm] = v[off : off + size].reshape(values[nm].shape).to(values[nm].dtype)
            off += size
        return out

    def w_prior(theta, phi):
        data = {**values, **split(theta, gamma_names), **split(phi, gauss_names)}
        loc, lam = _weight_prior_of(_trace(model, X, y, config, data).nodes[weights]["fn"], K, n)
        return loc.reshape(-1).to(torch.float64), lam.reshape(-1).to(torch.float64)

    theta_a, phi_a = flat(gamma_names), flat(gauss_names)
    p, qd = theta_a.numel(), phi_a.numel()
    theta_a = theta_a * torch.exp(torch.rand(p, generator=gen, dtype=torch.float64) - 0.5)
    phi_a = phi_a + torch.rand(qd, generator=gen, dtype=torch.float64) - 0.5
    Jl_t, Jl_p = torch.autograd.functional.jacobian(lambda t, f: w_prior(t, f)[1], (theta_a, phi_a))
    Jm_t, Jm_p = torch.autograd.functional.jacobian(lambda t, f: w_prior(t, f)[0], (theta_a, phi_a))
    with torch.no_grad():
        loc_a, lam_a = w_prior(theta_a, phi_a)
    lam0 = lam_a - Jl_t @ theta_a
    mean0 = loc_a - Jm_p @ phi_a
    # verify at a second point: linear precision, affine mean, no cross dependence
    theta_b = theta_a * torch.exp(torch.rand(p, generator=gen, dtype=torch.float64) - 0.5)
    phi_b = phi_a + torch.rand(qd, generator=gen, dtype=torch.float64) - 0.5
    with torch.no_grad():
        loc_b, lam_b = w_prior(theta_b, phi_b)
    bad = None
    if bool((Jl_p != 0).any()) or bool((Jm_t != 0).any()):
        bad = "the prior precision of the weights moves with a Gaussian site or their mean with a Gamma site"
    elif not _close(lam_b, lam0 + Jl_t @ theta_b, lam_b.abs() + 1e-12):
        bad = "the prior precision of the weights is not linear in the Gamma sites"
    elif not _close(loc_b, mean0 + Jm_p @ phi_b, loc_b.abs() + 1.0):
        bad = "the prior mean of the weights is not affine in the Gaussian sites"
    C = lam_a.new_zeros(K, p)
    logdet0 = torch.zeros(K, dtype=torch.float64)
    if bad is None and p:

        def logdet(u):
            lam = (lam0 + Jl_t @ torch.exp(u)).reshape(K, n, n)
            return U.cholesky_logdet(torch.linalg.cholesky(lam))

        C = torch.autograd.functional.jacobian(logdet, torch.log(theta_a))
        logdet0 = logdet(torch.log(theta_a)) - C @ torch.log(theta_a)
        if not _close(
            logdet(torch.log(theta_b)), logdet0 + C @ torch.log(theta_b), 1.0 + logdet0.abs()
        ):
            bad = "the log-determinant of the weights' prior precision is not affine in the log of the Gamma sites"
    elif bad is None:
        logdet0 = U.cholesky_logdet(torch.linalg.cholesky(lam0.reshape(K, n, n)))
    if bad is not None:
        nm = names[0]
        raise _refuse(nm, nodes[nm]["fn"], bad + " (not multilinear: no closed-form expectation)")
    prior_h = prior_J = None
    if gauss_names:
        hs, Js = [], []
        for nm in gauss_names:
            own = natural_parameters(
                lambda t, nm=nm: nodes[nm]["fn"].log_prob(t).sum().to(torch.float64),
                "gaussian", values[nm], gen,
            )  # fmt: skip
            assert own is not None  # a Gaussian's own log-density is quadratic
            hs.append(own.eta[0])
            Js.append(own.eta[1])
        prior_h, prior_J = torch.cat(hs), torch.block_diag(*Js)
    to = {"dtype": dt, "device": X.device}
    # a learned hyperparameter in the traces (config.hyper: a pyro.param) leaves graphs
    lam0, Jl_t, logdet0, C, mean0, Jm_p = (
        t.detach() for t in (lam0, Jl_t, logdet0, C, mean0, Jm_p)
    )
    return WeightHyperprior(
        K=K, n=n, gamma_names=gamma_names,
        gamma_shapes=tuple(values[nm].shape for nm in gamma_names),
        gamma_prior=tuple(
            tuple(t.to(**to) for t in _gamma_prior(nodes[nm]["fn"], values[nm].shape))
            for nm in gamma_names
        ),
        gauss_names=gauss_names, gauss_shapes=tuple(values[nm].shape for nm in gauss_names),
        prior_h=None if prior_h is None else prior_h.to(**to),
        prior_J=None if prior_J is None else prior_J.to(**to),
        lam0=lam0.reshape(K, n, n).to(**to), P=Jl_t.to(**to), logdet0=logdet0.to(**to),
        C=C.to(**to), mean0=mean0.reshape(K, n).to(**to), M=Jm_p.to(**to),
    )  # fmt: skip


def _refuse(site: str, fn, why: str) -> NonConjugateError:
    return NonConjugateError(
        f"CAVI cannot fit site {site!r} ({type(unwrap(fn)).__name__}): {why}. "
        "Fit this model with method='svi'."
    )
