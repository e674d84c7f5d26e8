"""The ArviZ adapter: groups, shapes and dims; R-hat across restarts; LOO; circle draws."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch

import pyro_moe
from pyro_moe import diagnostics as D
from pyro_moe.shapes import circle_design, ellipse_points, synthetic_2


@pytest.fixture(scope="module")
def data():
    return synthetic_2(0)


@pytest.fixture(scope="module")
def fits(data):
    """Two fits that agree (different seeds) and one stuck at a different optimum (one
    shared noise precision and no search, so that the stuck start stays stuck)."""
    kw = dict(experts=2, per_expert_noise=False, search=False, noise_expert=False)
    a = pyro_moe.fit_circles(data.xy, seed=0, **kw)
    b = pyro_moe.fit_circles(data.xy, seed=1, **kw)
    right = (data.xy[:, 0] > data.xy[:, 0].mean()).astype(float)
    bad = pyro_moe.fit_circles(data.xy, responsibilities=np.c_[right, 1 - right], **kw)
    return a, b, bad


def test_per_expert_point_estimates_of_beta_are_data_not_draws(data):
    """A point-estimated beta (one per circle) is in constant_data by expert, not in the
    posterior as draws with sd 0 (az.summary would call it a posterior)."""
    import arviz as az

    r = pyro_moe.fit_circles(data.xy, experts=2)  # one noise precision per circle
    assert r.noise_shape is None  # learned by the M-step: a point estimate
    idata = D.to_inference_data(r, draws=50, seed=0)
    assert "beta" not in idata.posterior
    assert idata.constant_data["beta"].dims == ("expert",)
    np.testing.assert_allclose(idata.constant_data["beta"].values, r.noise_precision.numpy())
    assert idata.posterior.attrs["point_estimates"] == "beta (in constant_data)"
    assert np.isfinite(idata.log_likelihood["y"].values).all()
    assert not any(i.startswith("beta") for i in az.summary(idata).index)


def test_a_latent_beta_is_drawn_from_its_gamma(tmp_path, data):
    """beta with a Gamma prior (q(beta) = Gamma(a, b)) stays a posterior variable."""
    from pathlib import Path

    src = Path(pyro_moe.load_model("mixture_of_models").path).read_text()
    old = '    """p(beta): None makes beta'
    path = tmp_path / "gamma_models.py"
    path.write_text(src.replace(old, "    return dist.Gamma(config.const(1.0), "
                                     "config.const(0.1))\n" + old, 1))  # fmt: skip
    X, t = circle_design(data.xy)[:2]
    r = pyro_moe.fit(str(path), X, t, experts=2, n_init=1, seed=0)
    assert r.noise_shape is not None
    idata = r.to_inference_data(draws=400, seed=0)
    assert idata.posterior["beta"].dims == ("chain", "draw")
    assert "beta" not in idata.constant_data and idata.posterior.attrs["point_estimates"] == ""
    mean = float(r.noise_shape / r.noise_rate)
    assert float(idata.posterior["beta"].mean()) == pytest.approx(mean, rel=0.1)


def test_the_method_is_the_writer(fits):
    """result.to_inference_data() is diagnostics.to_inference_data(result): one writer."""
    a = fits[0].result  # the core FitResult of a curve fit (no curve parameters)
    x = a.to_inference_data(draws=30, seed=4)
    y = D.to_inference_data(a, draws=30, seed=4)
    np.testing.assert_array_equal(x.posterior["w"].values, y.posterior["w"].values)
    np.testing.assert_array_equal(x.log_likelihood["y"].values, y.log_likelihood["y"].values)
    assert list(x.posterior["feature"].values) == ["w0", "w1", "w2"]  # the core has no names


def test_groups_shapes_and_dims(fits, data):
    a = fits[0]
    idata = D.to_inference_data(a, draws=200, seed=3)
    assert set(idata.groups()) == {"posterior", "log_likelihood", "observed_data", "constant_data"}
    post = idata.posterior
    N = len(data.xy)
    assert post["w"].dims == ("chain", "draw", "expert", "feature")
    assert post["w"].shape == (1, 200, 2, 3)
    assert list(post["feature"].values) == ["x", "y", "1"]
    for v in ("x0", "y0", "r", "pi"):
        assert post[v].dims == ("chain", "draw", "expert") and post[v].shape == (1, 200, 2)
    assert "beta" not in post  # a point estimate: data
    np.testing.assert_allclose(idata.constant_data["beta"].values, a.noise_precision.numpy())
    ll = idata.log_likelihood["y"]
    assert ll.dims == ("chain", "draw", "point") and ll.shape == (1, 200, N)
    assert np.isfinite(ll.values).all()
    assert idata.observed_data["y"].dims == ("point",)
    np.testing.assert_allclose(idata.observed_data["y"].values, a.y.numpy())
    assert idata.constant_data["X"].shape == (N, 3)
    assert post.attrs["method"] == "cavi"
    # pi draws follow Dirichlet(alpha): mean alpha / sum(alpha)
    np.testing.assert_allclose(
        post["pi"].mean(("chain", "draw")).values, a.weights.numpy(), atol=0.02
    )


def test_same_seed_gives_same_draws(fits):
    x = D.to_inference_data(fits[0], draws=50, seed=7).posterior["w"].values
    y = D.to_inference_data(fits[0], draws=50, seed=7).posterior["w"].values
    np.testing.assert_array_equal(x, y)


def test_circle_draws_match_result_circles(fits):
    a = fits[0]
    post = D.to_inference_data(a, draws=4000, seed=0).posterior
    # the draws are of the model's posterior q(w): its mean's circles, not the geometric
    # refinement fit_circles reports (CurveFit.refined)
    for k, c in enumerate(type(a)(a.result, a.geometry).circles()):
        for name, value in (("x0", c.x0), ("y0", c.y0), ("r", c.r)):
            draws = post[name].sel(expert=k).values.ravel()
            se = draws.std() / np.sqrt(draws.size)
            # r is non-linear in w: allow the MC error plus a small curvature bias
            assert abs(draws.mean() - value) < 5 * se + 1e-3 * abs(value) + 1e-9, (name, k)


def test_loglik_is_the_mixture_density(fits):
    """At one draw, log_likelihood equals log sum_k pi_k N(y | w_k^T x, 1/beta) by hand."""
    a = fits[0]
    idata = D.to_inference_data(a, draws=3, seed=1)
    w = idata.posterior["w"].values[0, 0]
    pi = idata.posterior["pi"].values[0, 0]
    beta = float(idata.constant_data["beta"].values.item())
    X, y = a.X.numpy(), a.y.numpy()
    dens = (
        pi * np.sqrt(beta / (2 * np.pi)) * np.exp(-0.5 * beta * (y[:, None] - X @ w.T) ** 2)
    ).sum(1)
    np.testing.assert_allclose(idata.log_likelihood["y"].values[0, 0], np.log(dens), rtol=1e-10)


def test_rhat_flags_restarts_at_different_optima(fits):
    a, b, bad = fits
    assert bad.objective < a.objective - 10  # it really is a worse optimum
    agree = D.rhat_across_restarts([a, b])
    assert set(agree.data_vars) == {"x0", "y0", "r"}
    assert float(agree["r"].max()) < 1.02
    differ = D.rhat_across_restarts([a, bad])
    assert float(differ["r"].max()) > 1.5


def test_alignment_permutes_experts():
    d = synthetic_2(0)
    a = pyro_moe.fit_circles(d.xy, experts=2, seed=0)
    swapped = pyro_moe.fit_circles(d.xy, experts=2, seed=0)
    swapped = swapped.permuted([1, 0])  # relabel by hand: expert order reversed
    aligned = D.align_experts([a, swapped])[1]
    torch.testing.assert_close(aligned.mean, a.mean)
    torch.testing.assert_close(aligned.responsibilities, a.responsibilities)
    torch.testing.assert_close(aligned.alpha, a.alpha)
    idata = D.restarts_as_chains([a, swapped], draws=100)
    assert idata.posterior["w"].shape == (2, 100, 2, 3)


def test_gated_model_alignment_keeps_the_gate():
    d = synthetic_2(0)
    X, t = circle_design(d.xy)
    r = pyro_moe.fit("mixture_of_experts", X, t, experts=2, n_init=1, max_iter=20, tol=1e-3)
    p = r.permuted([1, 0])
    Xt = torch.as_tensor(X)
    torch.testing.assert_close(p.expert_weights(Xt), r.expert_weights(Xt)[:, [1, 0]])
    idata = D.to_inference_data(r, draws=20)
    assert "pi" not in idata.posterior
    assert np.isfinite(idata.log_likelihood["y"].values).all()


def test_loo_and_compare(fits):
    a, _, bad = fits
    elpd = D.loo(a, draws=500)
    assert np.isfinite(elpd.elpd_loo) and np.isfinite(elpd.se)
    assert elpd.pareto_k.shape == (len(a.y),)
    assert D.k_high(elpd) >= 0
    table = D.compare_models({"good": a, "stuck": bad}, draws=500)
    assert list(table.index) == ["good", "stuck"]
    assert np.isfinite(table["elpd_loo"]).all()


def test_compare_refuses_other_data(fits):
    other = pyro_moe.fit_circles(synthetic_2(1).xy, experts=2)
    with pytest.raises(pyro_moe.InputError):
        D.compare_models({"a": fits[0], "b": other}, draws=50)


def test_conic_parameters():
    xy = ellipse_points((50, 40), (30, 12), 0.4, 150, jitter=0.2, seed=0)
    r = pyro_moe.fit_conics(xy, experts=1)
    post = D.to_inference_data(r, draws=300).posterior
    for v in ("xc", "yc", "semi_major", "semi_minor", "angle"):
        assert post[v].shape == (1, 300, 1)
    c = r.conics()[0]
    assert float(post["xc"].mean()) == pytest.approx(c.center[0], abs=0.1)
    assert float(post["semi_major"].mean()) == pytest.approx(c.semi_axes[0], abs=0.1)
    assert "ellipse: 300" in post.attrs["conic_kind"]


def test_arviz_plot_wrappers_return_figures(fits, tmp_path):
    idata = D.restarts_as_chains(fits[:2], draws=200)
    fig = D.plot_posterior(idata, var_names=["r"])
    assert len(fig.axes) == 2  # one panel per expert
    fig.savefig(tmp_path / "posterior.png")
    fig2 = D.plot_forest(idata, var_names=["x0", "r"])
    assert len(fig2.axes) >= 1
    fig2.savefig(tmp_path / "forest.png")
    assert (tmp_path / "posterior.png").stat().st_size > 0
    plt.close("all")


def test_input_errors(fits):
    with pytest.raises(pyro_moe.InputError):
        D.to_inference_data([])
    with pytest.raises(pyro_moe.InputError):
        D.to_inference_data(fits[0], draws=0)
    with pytest.raises(pyro_moe.InputError):
        D.restarts_as_chains([fits[0]])


def test_heterogeneous_experts_with_noise_expert():
    """A circle expert beside an ellipse expert, plus the noise expert: pi gets a component
    dim (K + 1 shares), and the pointwise log-likelihood uses each expert's own target."""
    import math

    import torch

    from pyro_moe.closed_form import updates as U
    from pyro_moe.shapes import ellipse_points

    xy = np.r_[
        ellipse_points((0.0, 0.0), (1.0, 1.0), 0.0, 60, jitter=0.01, seed=1),
        ellipse_points((3.0, 0.5), (1.2, 0.5), 0.5, 60, jitter=0.01, seed=2),
        np.random.default_rng(0).uniform(-1, 4, (10, 2)),
    ]
    res = pyro_moe.fit_curves(xy, experts=["circle", "ellipse"], noise_expert=True)
    idata = D.to_inference_data(res, draws=100, seed=0)
    assert idata.posterior["pi"].dims == ("chain", "draw", "component")
    assert list(idata.posterior["component"].values) == ["0", "1", "noise"]
    assert idata.constant_data["X"].dims == ("point", "column")
    ll = idata.log_likelihood["y"].values.mean((0, 1))
    # the plug-in mixture density at E[pi], E[w] (q is tight here: draws barely move it)
    q = U.WeightPosterior(res.mean, res.cov, torch.zeros(2, dtype=torch.float64))
    e = U.expected_sq_residuals(res.X, res.y, q, res.maps)
    beta = res.noise_precision
    lo, hi = res.noise_bounds
    ln = torch.cat(
        [
            0.5 * torch.log(beta) - 0.5 * math.log(2 * math.pi) - 0.5 * beta * e,
            torch.full((len(res.y), 1), -math.log(float(hi - lo)), dtype=torch.float64),
        ],
        -1,
    )
    ref = torch.logsumexp(torch.log(res.weights) + ln, -1).numpy()
    assert np.median(np.abs(ll - ref)) < 0.05


def test_nuts_labels_are_honest():
    """A NUTS fit at beta fixed by CAVI: its beta is in constant_data (not draws with sd 0),
    the posterior's attrs name the fit that fixed it, and neither its summary nor the
    command line's calls its log joint an ELBO."""
    import warnings

    from pyro_moe.cli.render import summary_lines

    rng = np.random.default_rng(0)
    X = np.c_[rng.normal(size=40), np.ones(40)]
    y = X @ np.array([1.0, -0.5]) + 0.2 * rng.normal(size=40)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", pyro_moe.ConvergenceWarning)
        nuts = pyro_moe.fit("mixture_of_models", X, y, experts=1, method="nuts", chains=1,
                            warmup=20, max_iter=20)  # fmt: skip
    idata = nuts.to_inference_data()
    assert "beta" not in idata.posterior and "beta" in idata.constant_data
    assert idata.posterior.attrs["hyper_method"] == "CAVI"
    assert "CAVI fit's values" in idata.posterior.attrs["approximation"]
    lines = "\n".join(summary_lines(nuts))
    assert "not an ELBO" in lines and "ELBO   " not in lines and "hyper from  CAVI" in lines
    assert "hyperparameters fixed at the CAVI fit's values" in nuts.summary()
