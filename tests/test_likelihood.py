"""One likelihood (pyro_moe.likelihood): the reference the fused E-step, the closed-form
objective, the diagnostics and Pyro's own model all agree with."""

from __future__ import annotations

import math

import numpy as np
import pyro.distributions as dist
import torch
from conftest import two_circles

import pyro_moe
from pyro_moe.closed_form import updates as U
from pyro_moe.diagnostics import to_inference_data
from pyro_moe.likelihood import (
    component_log_densities,
    expected_log_densities,
    noise_log_density,
    residual_map,
)


def _q(K: int, n: int, seed: int = 0) -> U.WeightPosterior:
    g = torch.Generator().manual_seed(seed)
    mean = torch.randn(K, n, generator=g, dtype=torch.float64)
    L = torch.tril(0.1 * torch.randn(K, n, n, generator=g, dtype=torch.float64))
    L = L + torch.diag_embed(0.2 + torch.rand(K, n, generator=g, dtype=torch.float64))
    cov = L @ L.transpose(-1, -2)
    return U.WeightPosterior(mean, cov, torch.logdet(cov))


def test_component_densities_are_normal_and_uniform_log_densities():
    X, y = (torch.as_tensor(a) for a in two_circles(50))
    W = _q(2, 3).mean
    beta = torch.tensor(7.0, dtype=torch.float64)
    bounds = torch.tensor([float(y.min()) - 0.1, float(y.max()) + 0.1], dtype=torch.float64)
    got = component_log_densities(X, y, W, beta, None, noise_log_density(bounds))
    normal = dist.Normal(X @ W.T, beta.rsqrt()).log_prob(y.unsqueeze(-1))
    uniform = dist.Uniform(*bounds).log_prob(y)
    torch.testing.assert_close(got[:, :2], normal)
    torch.testing.assert_close(got[:, 2], uniform)


def test_draws_of_weights_and_precisions_broadcast():
    X, y = (torch.as_tensor(a) for a in two_circles(30))
    W = torch.stack([_q(2, 3, s).mean for s in range(4)])  # (S, K, n)
    beta = torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=torch.float64)
    got = component_log_densities(X, y, W, beta)
    for s in range(4):
        torch.testing.assert_close(got[s], component_log_densities(X, y, W[s], beta[s]))


def test_the_fused_e_step_matches_the_reference_responsibilities_and_objective():
    """The benchmarked fast path (updates.e_step) against the reference formulas."""
    X, y = (torch.as_tensor(a) for a in two_circles(3000, seed=3))  # several chunks
    q = _q(2, 3, seed=1)
    e_beta = torch.tensor(4.0, dtype=torch.float64)
    log_u = torch.tensor(-math.log(5.0), dtype=torch.float64)
    log_prior = torch.log(torch.tensor([0.3, 0.5, 0.2], dtype=torch.float64)).expand(len(y), 3)
    fused = U.e_step(X, y, q, log_prior, torch.log(e_beta), e_beta, log_u)
    e = U.expected_sq_residuals(X, y, q)
    logits = log_prior + expected_log_densities(e, torch.log(e_beta), e_beta, log_u)
    torch.testing.assert_close(fused.log_r, torch.log_softmax(logits, -1))
    torch.testing.assert_close(fused.lse, torch.logsumexp(logits, -1).sum())
    r = fused.log_r.exp()
    torch.testing.assert_close(fused.r_sum, r.sum(0))
    ref = U.sufficient_stats(X, y, r[:, :2])
    torch.testing.assert_close(fused.stats.S, ref.S)
    torch.testing.assert_close(fused.stats.s, ref.s)


def test_residual_map_of_the_shared_design():
    W = _q(3, 2).mean
    a = residual_map(W)
    torch.testing.assert_close(a, torch.cat([-W, torch.ones(3, 1, dtype=W.dtype)], -1))


def test_diagnostics_log_likelihood_is_pyros_mixture_density():
    """The ArviZ pointwise log-likelihood at one draw equals Pyro's mixture log-density."""
    X, y = two_circles(40)
    res = pyro_moe.fit("mixture_of_models", X, y, experts=2, noise_expert=True, n_init=1)
    idata = to_inference_data(res, draws=3, seed=0)
    w = torch.as_tensor(idata.posterior["w"].values[0])  # (draw, K, n)
    pi = torch.as_tensor(idata.posterior["pi"].values[0])  # (draw, C)
    beta = res.noise_precision
    lo, hi = res.noise_bounds.unbind(-1)
    Xt, yt = torch.as_tensor(X), torch.as_tensor(y)
    for s in range(3):
        comps = [dist.Normal(Xt @ w[s, k], beta.rsqrt()) for k in range(2)]
        dens = torch.stack(
            [c.log_prob(yt) for c in comps] + [dist.Uniform(lo, hi).log_prob(yt)], -1
        )
        want = torch.logsumexp(torch.log(pi[s]) + dens, -1).numpy()
        np.testing.assert_allclose(idata.log_likelihood["y"].values[0, s], want, rtol=1e-10)


def test_the_batched_trace_is_the_draws_one_by_one():
    """The file run once at the likelihood check's draws stacked (``batched_draws``) gives,
    draw by draw, y's log-density of the trace conditioned on that draw alone, and
    ``density_mismatch`` accepts it on every row at every draw; an edited mean is refused."""
    from pyro_moe.likelihood import batched_draws, density_mismatch, latent_draws, trace_model

    X, y = (torch.as_tensor(a) for a in two_circles(60))
    model = pyro_moe.load_model("mixture_of_models")
    for settings in ({}, {"per_expert_noise": True, "noise_expert": True}):
        config = model.config(X, y, 2, **settings)
        latents, _ = batched_draws(config, X)
        node = trace_model(model, X, y, config, replay=latents).nodes["y"]
        assert not trace_model(model, X, y, config, replay=latents).nodes["w"]["is_observed"]
        got = node["fn"].log_prob(node["value"])
        assert got.shape == (3, 60)
        shape = torch.Size((2,) if settings else ())  # the latent beta's, drawn too
        for d, (W, z, _) in enumerate(latent_draws(config, X, 3, shape)):
            assert torch.equal(W, latents["w"][d]) and torch.equal(z, latents["z"][d])
            one = trace_model(model, X, y, config, {"w": W, "z": z}).nodes["y"]
            assert torch.allclose(got[d], one["fn"].log_prob(one["value"]), rtol=1e-12)
        fixed = config.noise_precision.expand(latents["w"].shape[:-1]) if settings else (
            config.noise_precision)  # fmt: skip
        args = (X, y, latents["w"], latents["z"], fixed, config.maps)
        assert density_mismatch(node, *args, pointwise=True) is None
        edited = {**node, "fn": dist.Normal(node["fn"].mean ** 3, node["fn"].stddev)}
        assert "not the closed form" in density_mismatch(edited, *args, pointwise=True)


def test_kept_draws_are_fresh_draws_and_never_handed_out(monkeypatch):
    """The likelihood check's standard draws are kept per shape (a pure function of the
    shapes and the fixed seed): kept or drawn afresh (above DRAWS_KEPT_ROWS), the same draws
    on every call, each call's tensors its own (changing them changes no later draw)."""
    from pyro_moe import likelihood

    X, y = (torch.as_tensor(a) for a in two_circles(40))
    model = pyro_moe.load_model("mixture_of_models")
    config = model.config(X, y, 2, per_expert_noise=True)
    shape = torch.Size((2,))
    kept = likelihood.latent_draws(config, X, 3, shape)
    latents, beta = likelihood.batched_draws(config, X)
    for W, z, b in kept:  # handed-out tensors changed in place
        W.add_(1.0), z.zero_(), b.mul_(2.0)
    latents["w"].add_(1.0), latents["z"].zero_(), beta.mul_(2.0)
    monkeypatch.setattr(likelihood, "DRAWS_KEPT_ROWS", 0)  # drawn afresh from here on
    fresh = likelihood.latent_draws(config, X, 3, shape)
    again, beta_again = likelihood.batched_draws(config, X)
    monkeypatch.undo()
    for (W, z, b), (W2, z2, b2) in zip(fresh, likelihood.latent_draws(config, X, 3, shape),
                                       strict=True):  # fmt: skip
        assert torch.equal(W, W2) and torch.equal(z, z2) and torch.equal(b, b2)
        assert bool((z > 0).any())  # not the zeroed copy
    kept_again, kept_beta = likelihood.batched_draws(config, X)
    assert torch.equal(again["w"], kept_again["w"]) and torch.equal(again["z"], kept_again["z"])
    assert torch.equal(beta_again, kept_beta)
    assert torch.equal(again["w"][1], fresh[1][0]) and torch.equal(again["z"][2], fresh[2][1])


def test_each_points_own_expert_is_its_column_of_all_the_densities(monkeypatch):
    """``component_log_densities(at=z)`` is the gathered column z_i of all K densities
    (one draw or a stack, beta shared or per expert, the shared design or expert maps), and
    ``density_mismatch`` reads it from OWN_EXPERT_FROM experts on with the same verdicts."""
    from pyro_moe import likelihood
    from pyro_moe.likelihood import batched_draws, density_mismatch, trace_model

    g = torch.Generator().manual_seed(3)
    N, K, n = 50, 5, 3
    X = torch.randn(N, n, generator=g, dtype=torch.float64)
    y = torch.randn(N, generator=g, dtype=torch.float64)
    maps = torch.eye(n + 1, dtype=torch.float64).repeat(K, 1, 1)
    maps[:, :n] += 0.1 * torch.randn(K, n, n + 1, generator=g, dtype=torch.float64)
    for lead in ((), (3,)):
        W = torch.randn(*lead, K, n, generator=g, dtype=torch.float64)
        z = torch.randint(K, (*lead, N), generator=g)
        for beta in (torch.rand(lead, generator=g, dtype=torch.float64) + 0.5,
                     torch.rand(*lead, K, generator=g, dtype=torch.float64) + 0.5):  # fmt: skip
            for m in (None, maps):
                full = component_log_densities(X, y, W, beta, m)
                want = full.gather(-1, z.unsqueeze(-1)).squeeze(-1)
                got = component_log_densities(X, y, W, beta, m, at=z)
                assert got.shape == want.shape
                assert torch.allclose(got, want, rtol=1e-12, atol=1e-12)
    X, y = (torch.as_tensor(a) for a in two_circles(60))
    model = pyro_moe.load_model("mixture_of_models")
    config = model.config(X, y, 2, per_expert_noise=True, noise_expert=True)
    latents, _ = batched_draws(config, X)
    node = trace_model(model, X, y, config, replay=latents).nodes["y"]
    args = (X, y, latents["w"], latents["z"], config.noise_precision.expand(3, 2), None)
    edited = {**node, "fn": dist.Normal(node["fn"].mean ** 3, node["fn"].stddev)}
    verdicts = [density_mismatch(node, *args, pointwise=True),
                density_mismatch(edited, *args, pointwise=True)]  # fmt: skip
    monkeypatch.setattr(likelihood, "OWN_EXPERT_FROM", 1)
    assert density_mismatch(node, *args, pointwise=True) is None is verdicts[0]
    assert density_mismatch(edited, *args, pointwise=True) == verdicts[1]
    assert "not the closed form" in verdicts[1]
