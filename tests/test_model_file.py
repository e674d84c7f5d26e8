"""Model files: loading by name and path, CAVI's refusals, the Gamma-beta swap, bad input."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from conftest import STUDY_PRIOR_MEAN, STUDY_XI, edited_model

import pyro_moe
from pyro_moe.shapes import circle_design, circle_error, circles_from_weights, synthetic_1

W_PRIOR = "dist.MultivariateNormal(prior_mean, covariance_matrix=prior_cov)"


def _circles():
    return circle_design(synthetic_1().xy)


def test_builtin_models_load_by_name_and_path():
    names = pyro_moe.builtin_models()
    assert names == [
        "logistic_experts",
        "mixture_of_experts",
        "mixture_of_models",
        "regularized_experts",
        "robust_experts",
    ]
    for name in names:
        by_name = pyro_moe.load_model(name)
        by_path = pyro_moe.load_model(by_name.path)
        assert by_name.path == by_path.path
        assert callable(by_path.model) and callable(by_path.guide)
    assert pyro_moe.load_model("mixture_of_experts").gated
    assert not pyro_moe.load_model("mixture_of_models").gated
    assert pyro_moe.load_model("regularized_experts").regularized


def test_an_edited_copy_works_everywhere_a_builtin_does(tmp_path):
    path = edited_model(
        tmp_path, "mixture_of_models", '"concentration": 1.0', '"concentration": 3.0'
    )
    X, t = _circles()
    res = pyro_moe.fit(
        str(path), X, t, experts=2, prior_mean=STUDY_PRIOR_MEAN, learn="noise_precision"
    )
    assert res.model_name == "mixture_of_models_edited"
    assert float(res.concentration[0]) == 3.0
    assert circle_error(synthetic_1().circles, circles_from_weights(res.mean.numpy())) < 1e-6


@pytest.mark.parametrize(
    "new, dist_name",
    [
        ("dist.Laplace(prior_mean, 1.0).to_event(1)", "Laplace"),
        ("dist.StudentT(3.0, prior_mean, 1.0).to_event(1)", "StudentT"),
    ],
)
def test_cavi_refuses_a_non_conjugate_weight_prior_by_name(tmp_path, new, dist_name):
    path = edited_model(tmp_path, "mixture_of_experts", W_PRIOR, new)
    X, t = _circles()
    with pytest.raises(pyro_moe.NonConjugateError) as err:
        pyro_moe.fit(path, X, t, experts=2)
    msg = str(err.value)
    assert "'w'" in msg and dist_name in msg and "method='svi'" in msg


def test_cavi_refuses_a_non_gamma_noise_prior(tmp_path):
    path = edited_model(
        tmp_path,
        "mixture_of_models",
        "    return None\n",
        "    return dist.LogNormal(config.const(0.0), config.const(1.0))\n",
    )
    X, t = _circles()
    with pytest.raises(pyro_moe.NonConjugateError, match="'noise_precision'.*LogNormal"):
        pyro_moe.fit(path, X, t, experts=2)


def test_cavi_refuses_an_unknown_site(tmp_path):
    path = edited_model(
        tmp_path,
        "mixture_of_models",
        "    beta = parts.noise_precision",
        "    pyro.sample('scale', dist.HalfCauchy(config.const(1.0)))\n    beta = parts.noise_precision",
    )
    X, t = _circles()
    with pytest.raises(pyro_moe.NonConjugateError, match="'scale'.*HalfCauchy"):
        pyro_moe.fit(path, X, t, experts=2)


def test_cavi_refuses_a_transformed_learned_hyperparameter(tmp_path):
    path = edited_model(
        tmp_path,
        "mixture_of_models",
        "covariance_matrix=prior_cov)",
        "covariance_matrix=10 * prior_cov)",
    )
    X, t = _circles()
    with pytest.raises(pyro_moe.NonConjugateError, match="prior_cov"):
        pyro_moe.fit(path, X, t, experts=2, learn="all")
    # held fixed, the edit is read from the model file and used as written
    res = pyro_moe.fit(
        path, X, t, experts=2, learn="noise_precision", prior_mean=STUDY_PRIOR_MEAN, prior_cov=1.0
    )
    np.testing.assert_allclose(res.prior_cov.numpy(), 10 * np.eye(3)[None].repeat(2, 0))


@pytest.mark.parametrize("name", ["mixture_of_models", "mixture_of_experts", "regularized_experts"])
def test_gamma_noise_prior_fits_with_cavi(tmp_path, name):
    path = edited_model(
        tmp_path,
        name,
        "    return None\n",
        "    return dist.Gamma(config.const(1.0), config.const(0.01))\n",
    )
    X, t = _circles()
    res = pyro_moe.fit(
        path,
        X,
        t,
        experts=2,
        prior_mean=STUDY_PRIOR_MEAN,
        regularization_cov=STUDY_XI if "reg" in name else None,
        per_expert_noise=False,  # one beta, one Gamma posterior (mixture_of_experts: per expert)
    )
    assert res.noise_shape is not None and res.noise_rate is not None
    assert float(res.noise_shape) == pytest.approx(1.0 + 0.5 * len(t))
    assert float(res.noise_precision) == pytest.approx(float(res.noise_shape / res.noise_rate))
    assert circle_error(synthetic_1().circles, circles_from_weights(res.mean.numpy())) < 1e-6
    h = res.objective_history
    assert (h[1:] - h[:-1]).min() > -1e-9 * abs(float(h[-1]))


def test_the_gate_prior_is_on_with_the_noise_expert_only():
    """regularized_experts (the study's circles): a prior on the gate with the noise expert
    only; mixture_of_experts: always, s = 0.1 with the noise expert and 3 without it
    (docs/regression.md), unless the fit says otherwise (gate_prior_scale: a number, or
    False for none: the study's maximum-likelihood gate)."""
    import pyro
    from pyro import poutine

    X, t = (torch.as_tensor(a, dtype=torch.float64) for a in _circles())
    for name in ("mixture_of_experts", "regularized_experts"):
        model = pyro_moe.load_model(name)
        for noise in (False, True):
            config = model.config(X, t, 2, noise_expert=noise)
            with pyro.get_param_store().scope():
                sites = poutine.trace(model.model).get_trace(X, t, config).nodes
            on = noise or name == "mixture_of_experts"
            assert ("gate_prior" in sites) == on
            if on:
                scale = 0.1 if noise else 3.0
                assert torch.all(sites["gate_prior"]["fn"].base_dist.scale == scale)
                # the weights of both layers (3 x 8 and 8 x 2), not the biases
                assert sites["gate_prior"]["value"].shape == (3 * 8 + 8 * 2,)

    model = pyro_moe.load_model("mixture_of_experts")
    for given, scale in ((False, None), (0.5, 0.5), (None, 3.0)):
        config = model.config(X, t, 2, gate_prior_scale=given)
        with pyro.get_param_store().scope():
            sites = poutine.trace(model.model).get_trace(X, t, config).nodes
        assert ("gate_prior" in sites) == (scale is not None)
        if scale is not None:
            assert torch.all(sites["gate_prior"]["fn"].base_dist.scale == scale)
    with pytest.raises(pyro_moe.InputError, match="gate_prior_scale"):
        model.config(X, t, 2, gate_prior_scale=True)


def test_cavi_refuses_a_gate_prior_it_does_not_implement(tmp_path):
    path = edited_model(
        tmp_path,
        "regularized_experts",
        "dist.Normal(config.const(0.0), config.const(s))",
        "dist.Normal(config.const(1.0), config.const(s))",
    )
    X, t = _circles()
    with pytest.raises(pyro_moe.NonConjugateError, match="'gate_prior'.*non-zero mean"):
        pyro_moe.fit(path, X, t, experts=2, noise_expert=True)
    with warnings.catch_warnings():  # the edit is not used without the noise expert
        warnings.simplefilter("ignore", pyro_moe.ConvergenceWarning)
        pyro_moe.fit(path, X, t, experts=2, n_init=1, max_iter=5)


@pytest.mark.parametrize(
    "text, match",
    [
        ("def model(X, y, config\n", "syntax error.*line"),
        ("import not_a_module_xyz\n", "failed to import.*ModuleNotFoundError"),
        ("x = 1\n", "does not define a function model"),
    ],
)
def test_broken_model_files_raise_model_file_error(tmp_path, text, match):
    path = tmp_path / "broken.py"
    path.write_text(text)
    with pytest.raises(pyro_moe.ModelFileError, match=match):
        pyro_moe.load_model(path)


def test_unknown_model_name_lists_the_builtins():
    with pytest.raises(pyro_moe.ModelFileError, match="unknown model 'nope'.*mixture_of_models"):
        pyro_moe.load_model("nope")
    with pytest.raises(pyro_moe.ModelFileError, match="no such model file"):
        pyro_moe.load_model("missing/model.py")


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"y": np.zeros(5)}, "X has 200 rows but y has 5"),
        ({"X": np.zeros(200)}, "2-d array"),
        ({"X": np.full((200, 3), np.nan)}, "NaN or inf in 200 row"),
        ({"y": np.r_[np.inf, np.zeros(199)]}, "y has NaN or inf in 1 row"),
        ({"experts": 0}, "experts must be an integer >= 1"),
        ({"experts": 201}, "more than the number of points"),
        ({"prior_cov": -1.0}, "positive definite"),
        ({"prior_cov": [[1, 2, 0], [2, 1, 0], [0, 0, 1]]}, "positive definite"),
        (
            {"model": "regularized_experts", "regularization_cov": [1.0, -1.0, 1.0]},
            "Xi.*positive definite",
        ),
        ({"model": "mixture_of_models", "regularization_cov": 1.0}, "no prior regularization"),
        ({"method": "gibbs"}, "unknown method"),
        ({"learn": ["beta"]}, "cannot learn"),
        ({"prior_mean": np.zeros((3, 3))}, r"prior_mean must have shape \(2, 3\)"),
        ({"init": "kmeans"}, "init='kmeans' is not allowed.*init must be one of"),
        ({"n_init": 0}, "n_init=0 is not allowed.*n_init must be an integer >= 1"),
        ({"gate_stepz": 3}, "unknown option.*gate_stepz.*method='cavi'"),
        ({"method": "svi", "batch_sise": 3}, "unknown option.*batch_sise.*method='svi'"),
    ],
)
def test_bad_input_raises_clear_errors(kwargs, match):
    X, t = _circles()
    args = {"model": "mixture_of_models", "X": X, "y": t, "experts": 2, **kwargs}
    with pytest.raises(pyro_moe.InputError, match=match):
        pyro_moe.fit(args.pop("model"), args.pop("X"), args.pop("y"), **args)
