"""Tests of natural-gradient SVI (pyro_moe.engines.natural, the default of method="svi"):
CAVI's iterates at rho = 1, the natural gradient against Pyro's Fisher-preconditioned
gradient, monotone ascent, and SVI reaching CAVI's optimum on the kinds of data measured
in the issue (clean rings, stray points with the noise expert, exact circles, the study's
CSVs)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import TraceEnum_ELBO

import pyro_moe
from pyro_moe.closed_form import updates as U
from pyro_moe.config import Config
from pyro_moe.engines.natural import robbins_monro, window_test
from pyro_moe.shapes import circle_design, circle_from_weights, circle_points, synthetic_1
from pyro_moe.study import STUDY_PRIOR_MEAN as STUDY_PRIOR


def _fit(X, t, method, model="mixture_of_models", **kw):
    kw = {"n_init": 1, **kw}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", pyro_moe.ConvergenceWarning)
        return pyro_moe.fit(model, X, t, experts=2, prior_mean=STUDY_PRIOR, method=method, **kw)


@pytest.fixture
def gamma_model(tmp_path: Path):
    """mixture_of_models with a latent beta ~ Gamma(1, 0.1): q(beta) is a third site."""
    src = Path(pyro_moe.load_model("mixture_of_models").path).read_text()
    old = '    """p(beta): None makes beta'
    new = "    return dist.Gamma(config.const(1.0), config.const(0.1))\n" + old
    assert old in src
    path = tmp_path / "gamma_models.py"
    path.write_text(src.replace(old, new, 1))
    return pyro_moe.load_model(path)


@pytest.mark.parametrize(
    "kw", [{}, {"noise_expert": True}, {"gamma": True}], ids=["beta", "noise", "gamma"]
)
def test_full_batch_rho_1_is_cavi_iterate_by_iterate(kw, gamma_model):
    """rho = 1 on the full batch: every step is one CAVI sweep (q(W), q(pi), beta or
    q(beta), q(Z)), so the objective histories agree to 1e-10 (relative), step by step."""
    d = synthetic_1()
    X, t = circle_design(d.xy)
    kw = dict(kw)
    model = gamma_model if kw.pop("gamma", False) else "mixture_of_models"
    cavi = _fit(X, t, "cavi", model, **kw)
    svi = _fit(X, t, "svi", model, step_size=1.0, **kw)
    h_c, h_s = cavi.objective_history, svi.objective_history[:-1]
    assert len(h_c) == len(h_s) > 3
    assert torch.allclose(h_s, h_c, rtol=1e-10, atol=1e-10)
    assert torch.allclose(svi.mean, cavi.mean, rtol=1e-10, atol=1e-12)
    assert torch.allclose(svi.cov, cavi.cov, rtol=1e-10, atol=1e-16)
    assert svi.converged and svi.restarts[0]["optimizer"] == "natural"
    # never decreases (rho = 1 is coordinate ascent)
    steps = torch.diff(h_s)
    assert (steps >= -1e-10 * h_s.abs().max()).all()
    if model is gamma_model:
        assert svi.noise_shape is not None and torch.allclose(svi.noise_rate, cavi.noise_rate)


@pytest.mark.parametrize("prior", ["Gaussian", "Laplace"])
def test_natural_step_is_the_fisher_preconditioned_pyro_gradient(prior, tmp_path):
    """On a small mixture (K = 2, n = 2, N = 30, beta fixed), the natural-gradient step of
    q(w_k) and q(pi), eta_hat - eta, equals F(eta)^{-1} grad_eta ELBO with the gradient from
    Pyro's TraceEnum_ELBO of the model file (guide written in natural parameters) and F the
    exact Fisher information of q, the Hessian of its log normaliser A(eta). With a
    Laplace(0, 0.3) prior on w in the file, the step is CVI's (the prior linearised at q,
    pyro_moe.closed_form.linearised), and the conjugate step with N(0, I) misses it (measured:
    CVI within 0.6-1.5 % of the step's norm, Pyro's noise; the Gaussian step 7-9 % off)."""
    g = torch.Generator().manual_seed(0)
    N, n, K = 30, 2, 2
    X = torch.randn(N, n, generator=g, dtype=torch.float64)
    y = torch.randn(N, generator=g, dtype=torch.float64)
    r = torch.softmax(torch.randn(N, K, generator=g, dtype=torch.float64), -1)
    beta = torch.tensor(2.0, dtype=torch.float64)
    w0 = torch.zeros(K, n, dtype=torch.float64)
    A = torch.eye(n, dtype=torch.float64).expand(K, n, n).clone()
    mu = torch.ones(K, dtype=torch.float64)
    cfg = Config(
        experts=K, features=n, prior_mean=w0, prior_cov=A, noise_precision=beta,
        concentration=mu, learn=(),
    )  # fmt: skip
    model = pyro_moe.load_model("mixture_of_models")
    if prior == "Laplace":
        from conftest import GAUSSIAN_PRIOR, edited_model

        edit = "return dist.Laplace(prior_mean, 0.3).to_event(1)"
        model = pyro_moe.load_model(
            edited_model(tmp_path, "mixture_of_models", GAUSSIAN_PRIOR, edit)
        )
    tri = torch.triu_indices(n, n)

    def lam_of(J):  # eta_2 = -J / 2 as vech, with off-diagonal entries doubled (T = w w^T)
        L = -0.5 * J
        off = (tri[0] != tri[1]).to(J.dtype)
        return L[..., tri[0], tri[1]] * (1 + off)

    # the present q: a point away from the optimum
    m = torch.tensor([[0.3, -0.2], [-0.5, 0.4]], dtype=torch.float64)
    J = torch.tensor([[[4.0, 0.5], [0.5, 3.0]], [[6.0, -1.0], [-1.0, 5.0]]], dtype=torch.float64)
    alpha = torch.tensor([3.0, 5.0], dtype=torch.float64)
    h = (J @ m.unsqueeze(-1)).squeeze(-1)
    eta = torch.cat([h, lam_of(J)], -1).requires_grad_(True)  # (K, n + n(n+1)/2)
    log_alpha = alpha.log().requires_grad_(True)

    def guide(X, y, config, subsample=None):
        h_, lam = eta[:, :n], eta[:, n:]
        Jk = -2.0 * _from_vech(lam, n, tri)
        mean = torch.linalg.solve(Jk, h_.unsqueeze(-1)).squeeze(-1)
        pyro.sample("pi", dist.Dirichlet(log_alpha.exp()))
        with pyro.plate("experts", K):
            pyro.sample("w", dist.MultivariateNormal(mean, precision_matrix=Jk))
        with pyro.plate("data", N):
            pyro.sample("z", dist.Categorical(r), infer={"enumerate": "parallel"})

    pyro.set_rng_seed(0)
    elbo = TraceEnum_ELBO(max_plate_nesting=1, num_particles=40_000, vectorize_particles=True)
    loss = elbo.differentiable_loss(model.model, guide, X, y, cfg)
    g_eta, g_log_alpha = torch.autograd.grad(-loss, [eta, log_alpha])

    def log_norm_gauss(e):  # A(eta) of N in (w, vech-doubled w w^T): 1/2 h^T J^-1 h - 1/2 log|J|
        Jk = -2.0 * _from_vech(e[n:], n, tri)
        return 0.5 * e[:n] @ torch.linalg.solve(Jk, e[:n]) - 0.5 * torch.logdet(Jk)

    stats = U.sufficient_stats(X, y, r)
    gauss = U.weight_prior(w0, A)
    lin = gauss
    if prior == "Laplace":
        from pyro_moe.closed_form.linearised import FactorisedPrior

        cov = torch.linalg.inv(J)
        q = U.WeightPosterior(m, cov, torch.logdet(cov))
        lin = FactorisedPrior(dist.Laplace(w0, 0.3), w0).linearised(q)
    h_hat, J_hat = U.weights_natural(stats, lin, beta)
    h_g, J_g = U.weights_natural(stats, gauss, beta)
    for k in range(K):
        fisher = torch.autograd.functional.hessian(log_norm_gauss, eta[k].detach())
        natural = torch.linalg.solve(fisher, g_eta[k])
        step = torch.cat([h_hat[k] - h[k], lam_of(J_hat[k]) - lam_of(J[k])])
        assert torch.linalg.norm(natural - step) < 0.02 * torch.linalg.norm(step), (natural, step)
        if prior == "Laplace":  # the Gaussian prior's step is not the gradient of this file
            wrong = torch.cat([h_g[k] - h[k], lam_of(J_g[k]) - lam_of(J[k])])
            err = torch.linalg.norm(natural - step)
            assert torch.linalg.norm(natural - wrong) > 3 * err
    # q(pi) = Dir(alpha), eta = alpha - 1: F = diag(psi'(alpha)) - psi'(alpha_0); the
    # gradient in alpha is the one in log alpha divided by alpha
    fisher_pi = torch.diag(torch.polygamma(1, alpha)) - torch.polygamma(1, alpha.sum())
    natural_pi = torch.linalg.solve(fisher_pi, g_log_alpha / alpha)
    step_pi = mu + r.sum(0) - alpha
    assert torch.linalg.norm(natural_pi - step_pi) < 0.02 * torch.linalg.norm(step_pi)


def _from_vech(v, n, tri):
    """The symmetric matrix whose entries (i <= j) carry v, with the off-diagonal entries
    halved and mirrored (the inverse of the doubled vech of a natural parameter)."""
    off = (tri[0] != tri[1]).to(v.dtype)
    M = v.new_zeros((*v.shape[:-1], n, n))
    M[..., tri[0], tri[1]] = v / (1 + off)
    return M + M.transpose(-1, -2) - torch.diag_embed(torch.diagonal(M, dim1=-2, dim2=-1))


def test_robbins_monro_and_the_window_test():
    assert robbins_monro(0, 0.7, 10.0) == pytest.approx(10**-0.7)
    assert robbins_monro(90, 0.7, 10.0) == pytest.approx(100**-0.7)
    flat = [100.0 + 0.01 * (-1) ** i for i in range(100)]
    assert window_test(flat, 50, 1e-3, 10)[0]
    climbing = [100.0 + 0.1 * i for i in range(100)]  # +5 nats per window
    assert not window_test(climbing, 50, 1e-3, 10)[0]
    noisy = [100.0 + 50.0 * (-1) ** (i // 3) for i in range(100)]  # too noisy to tell
    ok, se = window_test(noisy, 50, 1e-3, 10)
    assert not ok and se > 1.0


def _cases():
    rings, _ = circle_points([(0.0, 0.0), (0.0, 0.0)], [0.5, 1.5], 100, jitter=1e-3, seed=1)
    stray, _ = circle_points(
        [(-1.0, 0.0), (1.0, 0.0)], [0.6, 0.6], 70, jitter=0.01, outlier_fraction=0.3, seed=2
    )
    exact, _ = circle_points([(0.0, 0.0), (0.0, 0.0)], [0.5, 1.5], 100, even=True)
    cases = [("rings", rings, False), ("stray", stray, True), ("exact", exact, True)]
    from pyro_moe.shapes import emprior_dir, load_emprior_points

    if emprior_dir() is not None:
        for name in ("1.csv", "2.csv", "3.csv"):
            cases.append((name, load_emprior_points(name), False))
    return cases


def _agree(svi, cavi):
    gap = abs(svi.objective - cavi.objective)
    assert gap <= max(1e-4 * abs(cavi.objective), 0.5), (svi.objective, cavi.objective)
    sd_s = svi.cov.diagonal(dim1=-2, dim2=-1).sqrt()
    sd_c = cavi.cov.diagonal(dim1=-2, dim2=-1).sqrt()
    assert ((sd_s / sd_c - 1).abs() < 0.05).all(), (sd_s, sd_c)


@pytest.mark.slow
def test_svi_reaches_cavi_on_the_measured_kinds_of_data():
    """Default method="svi" (natural gradient, full batch) against CAVI: objective within
    0.01 % (or 0.5 nats), posterior sds within 5 %, and a minibatch run (B = N/4,
    Robbins-Monro, minibatches forced at this small N) the same without the noise expert;
    the study's 1.csv-3.csv join when ../shared/data is there."""
    for name, xy, noise in _cases():
        X, t = circle_design(xy)
        cavi = _fit(X, t, "cavi", noise_expert=noise)
        svi = _fit(X, t, "svi", noise_expert=noise)
        _agree(svi, cavi)
        assert svi.converged, name
        if noise:
            continue
        mini = _fit(X, t, "svi", batch_size=len(t) // 4, max_iter=2000, minibatch_from=0)
        _agree(mini, cavi)


@pytest.mark.slow
@pytest.mark.parametrize("case", ["stray", "exact"])
def test_minibatch_with_the_noise_expert_reaches_cavi(case):
    """Minibatch natural-gradient SVI with the noise expert (q(pi) over K + 1 components,
    its share rescaled by N/B like every statistic) reaches CAVI's objective within 0.01 %
    or 0.5 nats from the same start, on the two kinds the issue measured: two apart
    circles with 30 % stray points and exact concentric circles. Two restarts: the first
    ("prior") ends in the noise-dominated optimum for both engines, the second in the
    circles' one, and both engines must land in each."""
    xy = dict((name, xy) for name, xy, _ in _cases()[:3])[case]
    X, t = circle_design(xy)
    kw = dict(noise_expert=True, n_init=2)
    cavi = _fit(X, t, "cavi", **kw)
    mini = _fit(X, t, "svi", batch_size=len(t) // 4, max_iter=1500, minibatch_from=0, **kw)
    assert mini.restarts[0]["batch_size"] == len(t) // 4
    for c, m in zip(cavi.restarts, mini.restarts, strict=True):
        assert abs(m["objective"] - c["objective"]) <= max(1e-4 * abs(c["objective"]), 0.5)
    assert cavi.objective > cavi.restarts[0]["objective"] + 100  # the second is the circles'
    gap = abs(mini.objective - cavi.objective)
    assert gap <= max(1e-4 * abs(cavi.objective), 0.5), (mini.objective, cavi.objective)


def test_minibatches_only_from_minibatch_from_points():
    """Below ``minibatch_from`` points natural SVI takes the full batch's exact steps
    (CAVI's iterates, CAVI's tolerance) and says so; from it on, the minibatches."""
    xy, _ = circle_points([(0.0, 0.0), (0.3, -0.2)], [0.5, 1.5], 200, jitter=0.005, seed=3)
    X, t = circle_design(xy)
    cavi = _fit(X, t, "cavi")
    small = _fit(X, t, "svi", batch_size=100)
    assert small.restarts[0]["batch_size"] is None
    assert torch.allclose(small.objective_history[:-1], cavi.objective_history, rtol=1e-10)
    forced = _fit(X, t, "svi", batch_size=100, max_iter=5, minibatch_from=400)
    assert forced.restarts[0]["batch_size"] == 100


def test_minibatch_objective_is_exact_at_the_end_and_se_reported():
    xy, _ = circle_points([(0.0, 0.0), (0.3, -0.2)], [0.5, 1.5], 400, jitter=0.005, seed=3)
    X, t = circle_design(xy)
    r = _fit(X, t, "svi", batch_size=200, max_iter=400, minibatch_from=0)
    summary = r.restarts[0]
    assert summary["objective_se"] == 0.0 and np.isfinite(summary["stop_se"])
    cavi = _fit(X, t, "cavi")
    _agree(r, cavi)


def _edited(tmp_path: Path, old: str, new: str, name: str):
    src = Path(pyro_moe.load_model("mixture_of_models").path).read_text()
    assert old in src
    path = tmp_path / f"{name}.py"
    path.write_text(src.replace(old, new, 1))
    return pyro_moe.load_model(path)


def test_diagonal_gaussian_prior_is_conjugate(tmp_path: Path):
    """p(w_k) written Normal(w0, s).to_event(1) is CAVI's N(w0, diag(s^2)): the same fit
    as the MultivariateNormal file with that diagonal A, for CAVI and natural SVI."""
    diag = _edited(
        tmp_path,
        "    return dist.MultivariateNormal(prior_mean, covariance_matrix=prior_cov)\n",
        "    scale = prior_cov.diagonal(dim1=-2, dim2=-1).sqrt()\n"
        "    return dist.Normal(prior_mean, scale).to_event(1)\n",
        "diag_models",
    )
    d = synthetic_1()
    X, t = circle_design(d.xy)
    kw = dict(prior_cov=torch.tensor([2.0, 1.0, 0.5], dtype=torch.float64))
    ref = _fit(X, t, "cavi", **kw)
    for method in ("cavi", "svi"):
        r = _fit(X, t, method, diag, **kw)
        assert r.objective == pytest.approx(ref.objective, rel=1e-10)
        assert torch.allclose(r.mean, ref.mean, rtol=1e-8, atol=1e-12)


def test_site_typo_is_a_model_file_error(tmp_path: Path):
    typo = _edited(
        tmp_path,
        '        w = pyro.sample("w", weight_prior(',
        '        w = pyro.sample("weights", weight_prior(',
        "typo_models",
    )
    d = synthetic_1()
    X, t = circle_design(d.xy)
    for optimizer in ("natural", "adam"):
        with pytest.raises(pyro_moe.ModelFileError, match=r"'weights'.*'w'|'w'.*'weights'"):
            _fit(X, t, "svi", typo, optimizer=optimizer, max_iter=5)


@pytest.mark.parametrize("optimizer", ["natural", "adam"])
def test_result_reports_the_dirichlet_prior_in_use(tmp_path: Path, optimizer):
    asym = _edited(
        tmp_path,
        "    return dist.Dirichlet(concentration)\n",
        "    return dist.Dirichlet(concentration.new_tensor([1.0, 4.0]))\n",
        "asym_models",
    )
    d = synthetic_1()
    X, t = circle_design(d.xy)
    r = _fit(X, t, "svi", asym, optimizer=optimizer, max_iter=20)
    assert r.concentration.tolist() == [1.0, 4.0]


@pytest.mark.parametrize("model", ["mixture_of_experts", "regularized_experts"])
def test_full_batch_gate_takes_cavis_m_step(model):
    """A gated model on the full batch: the gate takes CAVI's L-BFGS M-step (not Adam's
    small steps), so natural SVI reaches CAVI's objective (0.01 % or 0.5 nats), its S
    and its posterior sds (5 %) on Synthetic 2, as fast as CAVI in iterations."""
    from pyro_moe.shapes import circle_error, synthetic_2

    d = synthetic_2(0)
    X, t = circle_design(d.xy)
    kw = dict(model=model, prior_cov=1.0, tol=1e-8)
    cavi = _fit(X, t, "cavi", **kw)
    svi = _fit(X, t, "svi", **kw)
    _agree(svi.aligned_to(cavi), cavi)
    assert svi.converged and svi.iterations <= 2 * cavi.iterations + 5
    S = [circle_error(d.circles, [circle_from_weights(w) for w in r.mean.numpy()])
         for r in (cavi, svi)]  # fmt: skip
    assert S[1] <= max(2 * S[0], 1e-6), S


def test_cvi_step_with_a_gaussian_prior_is_the_conjugate_step(monkeypatch):
    """CVI's linearised prior step (pyro_moe.closed_form.linearised) is exact for a Gaussian
    prior: with N(w0, A) (A = I here, diagonal) handed to natural SVI as a non-Gaussian
    FactorisedPrior, every step's objective is the conjugate run's to 1e-10 (the
    linearisation is the prior's own (A^{-1}, A^{-1} w0) at any q, the quadrature KL the
    closed form), and Pyro's Monte Carlo ELBO at the end confirms it."""
    import dataclasses

    from conftest import two_circles

    from pyro_moe.closed_form.linearised import FactorisedPrior
    from pyro_moe.engines import svi as svi_engine

    X, t = two_circles(200, 0.1, 0)
    kw = dict(prior_cov=0.5)  # beta learned (online EM), a prior that the data feel
    plain = _fit(X, t, "svi", **kw)
    read = svi_engine.read_model

    def as_factor(*args, **kwargs):
        conj = read(*args, **kwargs)
        s = conj.prior_cov.diagonal(dim1=-2, dim2=-1).sqrt()
        base = dist.Normal(conj.prior_mean, s)
        return dataclasses.replace(conj, weight_factor=FactorisedPrior(base, conj.prior_mean))

    monkeypatch.setattr(svi_engine, "read_model", as_factor)
    cvi = _fit(X, t, "svi", final_particles=400, **kw)
    s = cvi.restarts[0]
    assert s["weight_prior"].startswith("Normal (CVI")
    h_p, h_c = plain.objective_history, cvi.objective_history
    assert len(h_p) == len(h_c) > 3
    torch.testing.assert_close(h_c, h_p, rtol=1e-10, atol=1e-8)
    torch.testing.assert_close(cvi.mean, plain.mean, rtol=1e-10, atol=1e-12)
    assert abs(cvi.objective - s["pyro_objective"]) < 4 * s["pyro_objective_se"] + 1e-6


def test_cvi_on_minibatches_reaches_the_full_batch_fit(tmp_path):
    """A Laplace prior on w with minibatches (N = 2000, B = 200, Robbins-Monro rho): the
    linearised prior step at each minibatch's q ends within 0.1 nat of the full batch's F
    and its means within 0.25 posterior sd after 300 steps (measured 0.015 nat and 0.093 sd;
    3e-4 nat and 0.015 sd at N = 5000, B = 500, 3000 steps)."""
    from conftest import GAUSSIAN_PRIOR, SWAPS, edited_model, two_circles

    path = edited_model(tmp_path, "mixture_of_models", GAUSSIAN_PRIOR, SWAPS["Laplace"])
    X, t = two_circles(2000, 0.1, 0)
    kw = dict(experts=2, method="svi", n_init=1, final_particles=20)
    full = pyro_moe.fit(path, X, t, **kw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", pyro_moe.ConvergenceWarning)
        mini = pyro_moe.fit(path, X, t, batch_size=200, minibatch_from=0, max_iter=300, **kw)
    assert mini.restarts[0]["batch_size"] == 200
    assert mini.restarts[0]["weight_prior"].startswith("Laplace (CVI")
    assert abs(mini.objective - full.objective) < 0.1
    sd = full.cov.diagonal(dim1=-2, dim2=-1).sqrt()
    assert float(((mini.aligned_to(full).mean - full.mean).abs() / sd).max()) < 0.25


# ---- conjugate hyperpriors derived from the file -----------------------------
def _ard_data(N=200, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, N)
    y = np.where(x < 0, 1 + 2 * x, -1 + 0.5 * x) + 0.1 * rng.normal(size=N)
    return np.c_[x, np.ones(N)], y


def test_full_batch_rho_1_is_cavi_on_an_ard_file():
    """The ARD file (alpha per expert and feature): natural SVI on the full batch with
    rho = 1 takes CAVI's derived q(alpha) steps, iterate by iterate; every site natural."""
    path = Path(__file__).parent / "model_files" / "ard.py"
    X, y = _ard_data()
    kw = dict(experts=2, n_init=1, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", pyro_moe.ConvergenceWarning)
        cavi = pyro_moe.fit(path, X, y, method="cavi", **kw)
        svi = pyro_moe.fit(path, X, y, method="svi", step_size=1.0, **kw)
    h_c, h_s = cavi.objective_history, svi.objective_history[:-1]
    assert len(h_c) == len(h_s) > 3
    assert torch.allclose(h_s, h_c, rtol=1e-10, atol=1e-10)
    q_c, q_s = cavi.posterior.site_params["alpha"], svi.posterior.site_params["alpha"]
    assert torch.allclose(q_s["rate"], q_c["rate"], rtol=1e-10)
    assert svi.info["steps"] == {"alpha": "natural", "w": "natural", "z": "closed form"}


@pytest.mark.parametrize("file", ["kappa", "hierarchical_mean.py"])
def test_minibatch_svi_reaches_cavi_with_a_derived_hyperprior(tmp_path, file):
    """Minibatches of 500 of 4000 rows: the same derived q(kappa_k) (an inverse scale per
    expert, a site only the test names) or q(w0_k) step, Robbins-Monro weighted, ends within
    0.01 nat of CAVI (measured 0.003; the gated files' minibatch gap is the Adam gate's:
    5.4 nats on the built-in mixture_of_experts itself)."""
    from conftest import kappa_model

    if file == "kappa":
        path = kappa_model(tmp_path, "per_expert")
    else:
        path = Path(__file__).parent / "model_files" / file
    X, y = _ard_data(4000, seed=1)
    kw = dict(experts=2, n_init=1, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", pyro_moe.ConvergenceWarning)
        cavi = pyro_moe.fit(path, X, y, method="cavi", **kw)
        svi = pyro_moe.fit(path, X, y, method="svi", batch_size=500, minibatch_from=1000,
                           max_iter=3000, **kw)  # fmt: skip
    assert svi.restarts[0]["optimizer"] == "natural"
    assert abs(svi.objective - cavi.objective) < 0.01
