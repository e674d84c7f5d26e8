"""One options contract for every engine (pyro_moe.engines.options): the same bad option
is the same InputError, naming the option and what is allowed, under CAVI and SVI."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from conftest import two_circles

import pyro_moe
from pyro_moe.engines import ENGINES, get_engine
from pyro_moe.engines.options import COMMON, Option, integer, number, resolve

METHODS = sorted(ENGINES)

BAD = [
    ({"max_iter": 0}, "max_iter=0 is not allowed.*max_iter must be an integer >= [14]"),
    ({"max_iter": -1}, "max_iter=-1 is not allowed"),
    ({"max_iter": 2.5}, "max_iter=2.5 is not allowed"),
    ({"max_iter": True}, "max_iter=True is not allowed"),
    ({"tol": -1.0}, "tol=-1.0 is not allowed.*finite number >= 0"),
    ({"tol": math.nan}, "tol=nan is not allowed"),
    ({"tol": math.inf}, "tol=inf is not allowed"),
    ({"tol": "abc"}, "tol='abc' is not allowed"),
    ({"n_init": 0}, "n_init=0 is not allowed.*integer >= 1"),
    ({"n_init": 1.5}, "n_init=1.5 is not allowed"),
    ({"seed": -1}, "seed=-1 is not allowed"),
    ({"seed": 1.5}, "seed=1.5 is not allowed"),
    ({"seed": None}, "seed=None is not allowed"),
    ({"seed": 2**64}, "seed=18446744073709551616 is not allowed"),
    ({"init": []}, r"init=\[\] is not allowed"),
    ({"init": "kmeans"}, "init='kmeans' is not allowed"),
    ({"progress": "yes"}, "progress='yes' is not allowed"),
    ({"nonsense_option": 1}, "unknown option.*nonsense_option"),
]


@pytest.fixture(scope="module")
def data():
    return two_circles(60, seed=1)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize(("bad", "match"), BAD, ids=[str(b) for b, _ in BAD])
def test_every_engine_refuses_the_same_bad_option(data, method, bad, match):
    X, y = data
    with pytest.raises(pyro_moe.InputError, match=match) as info:
        pyro_moe.fit("mixture_of_models", X, y, experts=2, method=method, **bad)
    assert f"method={method!r}" in str(info.value) or "unknown option" in str(info.value)


def test_options_are_checked_before_the_data(data):
    """A bad option is reported even when the data are bad too: the options come first."""
    with pytest.raises(pyro_moe.InputError, match="max_iter"):
        pyro_moe.fit("mixture_of_models", np.zeros((3, 3)), np.zeros(2), max_iter=0)


@pytest.mark.parametrize("method", METHODS)
def test_every_engine_takes_the_shared_options(method):
    opts = get_engine(method).options({"max_iter": 7, "tol": 0.0, "n_init": 2, "seed": 3})
    assert (opts.max_iter, opts.tol, opts.n_init, opts.seed) == (7, 0.0, 2, 3)
    assert set(COMMON) <= set(opts)


@pytest.mark.parametrize("method", METHODS)
def test_max_iter_bounds_the_recorded_iterations(data, method):
    X, y = data
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", pyro_moe.ConvergenceWarning)
        r = pyro_moe.fit("mixture_of_models", X, y, experts=2, method=method, n_init=1,
                         max_iter=5, tol=0.0)  # fmt: skip
    assert r.iterations == 5


def test_svi_max_steps_is_max_iter():
    svi = get_engine("svi")
    assert svi.options({"max_steps": 9}).max_iter == 9
    with pytest.raises(pyro_moe.InputError, match="not both"):
        svi.options({"max_steps": 9, "max_iter": 9})


def test_a_convergence_warning_points_at_the_callers_line(data):
    X, y = data
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pyro_moe.fit("mixture_of_models", X, y, experts=2, n_init=1, max_iter=1)  # this line
    (w,) = [w for w in caught if issubclass(w.category, pyro_moe.ConvergenceWarning)]
    assert w.filename == __file__
    assert "max_iter=1" in str(w.message)


def test_resolve_fills_engine_defaults():
    declared = {"tol": Option(0.5, number(0.0)), "max_iter": Option(3, integer(1))}
    opts = resolve("x", declared, {"tol": None})
    assert (opts.tol, opts.max_iter) == (0.5, 3)
    with pytest.raises(pyro_moe.InputError, match="declares no default for max_iter"):
        resolve("x", {}, {})


def test_an_init_list_sets_the_number_of_restarts_or_must_match_it():
    """UE-6 of reliability round 3: init=[3 names] with n_init=2 ran 3 restarts silently."""
    from pyro_moe.engines import get_engine

    cavi = get_engine("cavi")
    assert cavi.options({"init": ["prior", "subsets", "random"]}).n_init == 3
    assert cavi.options({}).n_init == 5
    assert cavi.options({"init": ["random"] * 2, "n_init": 2}).n_init == 2
    with pytest.raises(pyro_moe.InputError, match="init lists 3 starts but n_init=2"):
        cavi.options({"init": ["prior", "subsets", "random"], "n_init": 2})


def test_a_model_file_defaults_the_gate_method_and_a_fit_overrides_it(data, tmp_path):
    """mixture_of_experts' SETTINGS take the Gauss-Newton gate step; gate_method= given to
    the fit wins; a copy of the file naming a method it does not have is refused by name."""
    from pyro_moe.engines.gate import GateFitter

    X, y = data
    seen: list[bool] = []
    original = GateFitter.__init__

    def spy(self, *a, **k):
        original(self, *a, **k)
        seen.append(self.layers is not None)  # a Gauss-Newton step

    kw = dict(experts=2, n_init=1, max_iter=3, seed=0)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(GateFitter, "__init__", spy)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", pyro_moe.ConvergenceWarning)
            pyro_moe.fit("mixture_of_experts", X, y, **kw)
            pyro_moe.fit("mixture_of_experts", X, y, gate_method="lbfgs", **kw)
            pyro_moe.fit("regularized_experts", X, y, **kw)  # names no method: L-BFGS
    assert seen == [True, False, False]
    from pyro_moe.model_file import load_model

    source = load_model("mixture_of_experts").path.read_text()
    edited = tmp_path / "moe_edit.py"
    edited.write_text(source.replace('"gate_method": "auto"', '"gate_method": "bfgs"'))
    with pytest.raises(pyro_moe.InputError, match=r"moe_edit.py: SETTINGS\['gate_method'\]"):
        pyro_moe.fit(str(edited), X, y, **kw)
    with pytest.raises(pyro_moe.InputError, match="gate_method='bfgs' is not allowed"):
        pyro_moe.fit("mixture_of_experts", X, y, gate_method="bfgs", **kw)
