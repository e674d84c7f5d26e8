"""The site registry (pyro_moe.closed_form.sites.SITES): what it says is true."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pyro
import pytest
from conftest import edited_model, two_circles
from pyro import poutine
from pyro.poutine.util import site_is_subsample

import pyro_moe
from pyro_moe.closed_form import updates as U
from pyro_moe.closed_form.sites import SITES
from pyro_moe.fitting import as_data
from pyro_moe.parts import ROBUST_WEIGHT

ROOT = Path(__file__).resolve().parent.parent


def _test_names(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}


@pytest.mark.parametrize("name", sorted(SITES))
def test_every_site_cites_tests_that_exist_and_updates_that_are_closed_form(name):
    site = SITES[name]
    assert site.name == name and site.tests and site.update
    for cited in site.tests:
        file, _, test = cited.partition("::")
        assert test in _test_names(ROOT / file), f"{cited} does not exist"
    for fn in site.update:
        assert getattr(U, fn.__name__) is fn


def test_the_built_in_models_use_only_registered_sites():
    """Every sample site of every built-in model (noise expert and gate prior on) is in
    the registry, so the registry is the whole of what CAVI needs to know."""
    X, y = two_circles(30)
    for model_name in pyro_moe.builtin_models():
        model = pyro_moe.load_model(model_name)
        # robust and logistic experts refuse the noise expert; a 0/1 target
        plain = model_name not in ("robust_experts", "logistic_experts")
        Xt, yt = as_data(X, y if model_name != "logistic_experts" else (y > np.median(y)) * 1.0)
        config = model.config(Xt, yt, 2, noise_expert=plain)
        with pyro.get_param_store().scope():
            tr = poutine.trace(model.model).get_trace(Xt, yt, config)
        sites = {
            n for n, s in tr.nodes.items() if s["type"] == "sample" and not site_is_subsample(s)
        }
        # the robust experts' per-point weight is read by closed_form.observations (its
        # update in closed_form/robust.py), not by the registry
        known = set(SITES) | {ROBUST_WEIGHT}
        assert sites <= known, (model_name, sites - known)


def test_the_refusal_names_the_site_and_the_family_the_registry_expects(tmp_path):
    bad = edited_model(
        tmp_path, "mixture_of_models",
        "return dist.MultivariateNormal(prior_mean, covariance_matrix=prior_cov)",
        "return dist.Laplace(prior_mean, 1.0).to_event(1)",
    )  # fmt: skip
    X, y = two_circles(30)
    with pytest.raises(pyro_moe.NonConjugateError, match="site 'w'.*Laplace.*CAVI needs "
                       + SITES["w"].family.__name__):  # fmt: skip
        pyro_moe.fit(bad, X, y, experts=2, n_init=1)
