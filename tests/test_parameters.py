"""One table of options (pyro_moe.parameters): fit's signature, Model.config's keywords,
the engines' declarations and the command line's names and help are checked against it."""

from __future__ import annotations

import inspect
import subprocess
import sys

import numpy as np
import pytest

import pyro_moe
from pyro_moe import parameters as P
from pyro_moe.cli import main
from pyro_moe.engines import ENGINES
from pyro_moe.model_file import Model


def _keywords(fn) -> dict:
    return {
        n: p.default
        for n, p in inspect.signature(fn).parameters.items()
        if p.kind is inspect.Parameter.KEYWORD_ONLY
    }


def test_fit_names_every_keyword_of_the_table_with_its_default():
    sig = _keywords(pyro_moe.fit)
    table = {**P.COMMON, **P.HYPERPARAMETERS, **P.FIT}
    assert set(sig) == set(table)
    assert {n: sig[n] for n in table} == {n: o.default for n, o in table.items()}
    doc = pyro_moe.fit.__doc__
    undocumented = [n for n in table if f"{n}:" not in doc and f"``{n}``" not in doc]
    assert undocumented == []


def test_model_config_takes_every_hyperparameter():
    assert set(P.HYPERPARAMETERS) <= set(_keywords(Model.config))


def test_each_engine_declares_its_options_in_the_table():
    for name, engine in ENGINES.items():
        if name in P.ENGINE_OPTIONS:
            assert engine.declared is P.ENGINE_OPTIONS[name]
    assert set(P.CLOSED_FORM) <= set(P.ENGINE_OPTIONS["cavi"]) & set(P.ENGINE_OPTIONS["svi"])


def test_the_table_loads_without_torch_or_numpy():
    code = "import sys, pyro_moe.parameters; print([m for m in ('torch', 'numpy') if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "[]", out.stderr


def test_the_cli_uses_the_apis_names_and_the_tables_help(capsys):
    main(["fit", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--n-init N, --restarts N" in text  # the API's name, the old one kept as an alias
    for name in ("n_init", "seed", "max_iter", "tol"):
        assert " ".join(P.COMMON[name].doc.split()) in text, name
    for engine, default in P.engine_defaults("max_iter").items():
        assert f"{engine} {default:g}" in text


def test_the_cli_passes_n_init_on(capsys, tmp_path, monkeypatch):
    from cli_helpers import table_csv

    seen = {}
    real = pyro_moe.fit

    def spy(*a, **k):
        seen.update(k)
        return real(*a, **k)

    monkeypatch.setattr(pyro_moe, "fit", spy)
    for flag in ("--n-init", "--restarts"):
        code = main(["fit", str(table_csv(tmp_path)), "--target", "y", flag, "2", "--json"])
        assert code == 0
        assert seen["n_init"] == 2
        capsys.readouterr()


@pytest.mark.parametrize("name", ["prior_units", "maps", "noise_range"])
def test_a_curve_function_refuses_a_keyword_it_sets_itself(name):
    t = np.linspace(0, 2 * np.pi, 40, endpoint=False)
    pts = np.c_[50 + 20 * np.cos(t), 40 + 20 * np.sin(t)]
    with pytest.raises(pyro_moe.InputError, match=f"sets {name} itself"):
        pyro_moe.fit_circles(pts, experts=1, **{name: None})
    with pytest.raises(pyro_moe.InputError, match="unknown option"):
        pyro_moe.fit_circles(pts, experts=1, geometry=None)
