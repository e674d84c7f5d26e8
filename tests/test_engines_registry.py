"""Engines as plug-ins: looked up by name, registered by subclassing the template."""

from __future__ import annotations

import pytest
from conftest import two_circles

import pyro_moe
from pyro_moe.engines import ENGINES, Engine, get_engine, register
from pyro_moe.engines.cavi import CAVI


def test_builtin_engines_are_registered():
    assert {"cavi", "svi"} <= set(ENGINES)
    assert get_engine("cavi") is CAVI


def test_unknown_method_lists_the_engines():
    with pytest.raises(pyro_moe.InputError, match="unknown method 'gibbs'.*cavi.*svi"):
        get_engine("gibbs")


def test_a_registered_engine_runs_through_fit(monkeypatch):
    """A new engine needs a name and one restart; the template does restarts and results."""

    runs: list[str] = []

    class Twice(CAVI):  # CAVI under another name, each restart counted
        name = "twice"

        def run(self, how, seed, restart, progress):
            runs.append(how)
            return super().run(how, seed, restart, progress)

    monkeypatch.setitem(ENGINES, "twice", Twice)
    register(Twice)
    X, y = two_circles(60)
    r = pyro_moe.fit("mixture_of_models", X, y, experts=2, method="twice", n_init=3)
    assert r.method == "twice" and runs == ["subsets"] * 3
    assert [s["seed"] for s in r.restarts] == [0, 1, 2]
    assert r.objective == max(s["objective"] for s in r.restarts)


def test_register_refuses_a_non_engine():
    with pytest.raises(TypeError):
        register(object)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        register(Engine)  # no name
