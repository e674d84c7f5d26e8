"""The closed-form ELBO equals Pyro's Monte Carlo ELBO for the model file's model and guide.

This ties every model file to the closed-form code: edit a model file without the
matching closed form (or the reverse) and this test fails.
"""

from __future__ import annotations

import warnings

import numpy as np
import pyro
import pytest
import torch
from conftest import STUDY_PRIOR_MEAN, STUDY_XI, edited_model, two_circles
from pyro.infer import TraceEnum_ELBO

import pyro_moe
from pyro_moe.closed_form.bridge import closed_form_objective, config_at, guide_params
from pyro_moe.fitting import weight_scale

GAMMA_EDIT = ("    return None\n", "    return dist.Gamma(config.const(2.0), config.const(0.5))\n")


def pyro_elbo(model, X, y, config, params, repeats=100, particles=100):
    """Mean and standard error of -TraceEnum_ELBO.loss at the given guide parameters."""
    pyro.clear_param_store()
    pyro.poutine.trace(model.guide).get_trace(X, y, config)
    pyro.poutine.trace(model.model).get_trace(X, y, config)
    store = pyro.get_param_store()
    for name, value in params.items():
        if name in store:
            store[name] = value
    elbo = TraceEnum_ELBO(max_plate_nesting=1, num_particles=particles, vectorize_particles=True)
    with torch.no_grad():
        vals = np.array(
            [-elbo.loss(model.model, model.guide, X, y, config) for _ in range(repeats)]
        )
    return vals.mean(), vals.std(ddof=1) / np.sqrt(repeats)


def _check(model, learn="all", data=None, **kw):
    X, y = two_circles(40, seed=3) if data is None else data
    kw.setdefault("prior_mean", STUDY_PRIOR_MEAN)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", pyro_moe.ConvergenceWarning)
        res = pyro_moe.fit(model, X, y, experts=2, n_init=1, max_iter=15, learn=learn, **kw)
    scale = weight_scale(res.X, res.y)  # fit's default prior, in the data's units
    config = config_at(res, model.config(res.X, res.y, 2, learn=learn, weight_scale=scale, **kw))
    params = guide_params(res)
    mean, se = pyro_elbo(model, res.X, res.y, config, params)
    assert abs(mean - res.objective) < 4 * se + 1e-9, (mean, se, res.objective)
    # the same formula evaluated at the guide parameters (what SVI reports) agrees exactly
    assert closed_form_objective(model, res.X, res.y, config, params)[1] == pytest.approx(
        res.objective, rel=1e-12
    )
    # and at parameters CAVI did not choose: perturb q(Z) and q(W)
    rng = torch.Generator().manual_seed(0)
    bent = dict(params)
    bent["assignment_probs"] = torch.softmax(
        torch.randn(params["assignment_probs"].shape, generator=rng, dtype=torch.float64), -1
    )
    bent["weight_mean"] = params["weight_mean"] + 0.05 * torch.randn(
        params["weight_mean"].shape, generator=rng, dtype=torch.float64
    )
    mean, se = pyro_elbo(model, res.X, res.y, config, bent)
    exact = closed_form_objective(model, res.X, res.y, config, bent)[1]
    assert abs(mean - exact) < 4 * se + 1e-9, (mean, se, exact)


@pytest.mark.parametrize("name", ["mixture_of_models", "mixture_of_experts", "regularized_experts"])
def test_closed_form_elbo_matches_pyro(name):
    kw = {"regularization_cov": STUDY_XI} if name == "regularized_experts" else {}
    _check(pyro_moe.load_model(name), **kw)


@pytest.mark.parametrize("name", ["mixture_of_models", "regularized_experts"])
def test_closed_form_elbo_matches_pyro_with_gamma_noise_prior(tmp_path, name):
    model = pyro_moe.load_model(edited_model(tmp_path, name, *GAMMA_EDIT))
    _check(model, learn=["prior_mean", "prior_cov", "gate"])


def test_asymmetric_dirichlet_matches_pyro():
    _check(pyro_moe.load_model("mixture_of_models"), concentration=[0.3, 2.0])


@pytest.mark.parametrize("name", ["mixture_of_models", "mixture_of_experts", "regularized_experts"])
def test_closed_form_elbo_matches_pyro_with_noise_expert(name):
    kw = {"regularization_cov": STUDY_XI} if name == "regularized_experts" else {}
    _check(pyro_moe.load_model(name), noise_expert=True, **kw)


def _circle_and_ellipse(names, n=30):
    """Points on a circle and a rotated ellipse, jittered, in the layout of ``names``."""
    from pyro_moe.experts import layout
    from pyro_moe.shapes import ellipse_points
    from pyro_moe.shapes.geometry import monomials

    xy = np.concatenate(
        [
            ellipse_points((1.0, 0.5), (0.6, 0.6), 0.0, n, jitter=0.02, seed=1),
            ellipse_points((-0.5, -0.3), (0.9, 0.4), 0.6, n, jitter=0.02, seed=2),
        ]
    )
    lay = layout(names, pyro_moe.load_model("mixture_of_models").expert_catalog)
    X, y = lay.design(monomials(xy))
    return (X, y), lay.maps


@pytest.mark.parametrize("noise_expert", [False, True])
def test_closed_form_elbo_matches_pyro_for_heterogeneous_experts(noise_expert):
    """A circle expert (3 weights, target x^2 + y^2) beside a conic expert (5 weights,
    target x^2): the padded closed form equals Pyro's ELBO of the same model file."""
    data, maps = _circle_and_ellipse(["circle", "ellipse"])
    _check(
        pyro_moe.load_model("mixture_of_models"), data=data, maps=maps, prior_mean=None,
        noise_expert=noise_expert,
    )  # fmt: skip


def test_closed_form_elbo_matches_pyro_for_heterogeneous_gated_experts():
    data, maps = _circle_and_ellipse(["circle", "conic"])
    _check(pyro_moe.load_model("mixture_of_experts"), data=data, maps=maps, prior_mean=None)


@pytest.mark.parametrize("name", ["mixture_of_experts", "regularized_experts"])
def test_closed_form_elbo_matches_pyro_with_a_gate_prior(name):
    """F includes log p(V) (the ``gate_prior`` site, on with the noise expert) exactly as
    Pyro counts it; s = 1 leaves the gate's weights far from zero."""
    model = pyro_moe.load_model(name)
    model.settings["gate_prior_scale"] = 1.0
    kw = {"regularization_cov": STUDY_XI} if name == "regularized_experts" else {}
    _check(model, noise_expert=True, **kw)


@pytest.mark.parametrize("gamma", [False, True], ids=["point beta_k", "Gamma q(beta_k)"])
@pytest.mark.parametrize("name", ["mixture_of_models", "mixture_of_experts"])
def test_closed_form_elbo_matches_pyro_with_per_expert_noise(tmp_path, name, gamma):
    """One noise precision per expert, a point estimate or a Gamma q(beta_k) each, with the
    noise expert: the closed form and Pyro's Monte Carlo ELBO of the same file agree."""
    if gamma:
        model = pyro_moe.load_model(edited_model(tmp_path, name, *GAMMA_EDIT))
        learn = ["prior_mean", "prior_cov", "gate"]
    else:
        model, learn = pyro_moe.load_model(name), "all"
    _check(model, learn=learn, per_expert_noise=True, noise_expert=True)


# ---- conjugate hyperpriors found from the file -------------------------------
@pytest.mark.parametrize(
    "file", ["ard.py", "hierarchical_mean.py"], ids=["ARD per expert and feature", "w0 prior"]
)
def test_closed_form_elbo_matches_pyro_with_a_hyperprior(file):
    """q(alpha) (ARD, a Gamma per expert and feature) or q(w0_k) (a Gaussian prior on the
    prior means), derived from the file by the conjugacy rule: its objective term is Pyro's
    Monte Carlo ELBO of the file's own guide."""
    from pathlib import Path

    model = pyro_moe.load_model(Path(__file__).parent / "model_files" / file)
    _check(model, learn=["noise_precision", "gate"] if file == "ard.py" else ["noise_precision"])


@pytest.mark.parametrize("kind", ["shared", "per_expert"])
def test_closed_form_elbo_matches_pyro_with_a_site_no_module_names(tmp_path, kind):
    """kappa ~ Gamma(2, 3), an inverse scale of A written only in the test (conftest)."""
    from conftest import kappa_model

    _check(pyro_moe.load_model(kappa_model(tmp_path, kind)), learn=["noise_precision"])


def test_closed_form_elbo_matches_pyro_with_gamma_beta_per_expert_and_ard(tmp_path):
    """Gamma beta_k with non-default hyperparameters (2, 0.5), one per expert, beside
    the ARD precisions: every derived and hand-written term together."""
    from pathlib import Path

    text = (Path(__file__).parent / "model_files" / "ard.py").read_text()
    assert GAMMA_EDIT[0] in text
    path = tmp_path / "ard_gamma.py"
    path.write_text(text.replace(*GAMMA_EDIT))
    _check(pyro_moe.load_model(path), learn=["gate"], per_expert_noise=True)


@pytest.mark.parametrize("kind", ["shared", "per_expert"])
def test_closed_form_elbo_matches_pyro_with_a_learned_w0_beside_a_hyperprior(tmp_path, kind):
    """kappa in the regularized experts file, whose w0 is learned (the M-step at E[kappa]
    A^{-1}) and regularised (R(w0) in F): the closed form is Pyro's ELBO + R(w0)."""
    from conftest import kappa_model

    model = pyro_moe.load_model(kappa_model(tmp_path, kind, "regularized_experts"))
    _check(model, learn=["prior_mean", "noise_precision", "gate"], regularization_cov=STUDY_XI)
