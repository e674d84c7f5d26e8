"""Every help of ``pyro-moe`` renders clean, ``--help``/``--version`` import no heavy library,
``pyro_moe`` exposes its names lazily (PEP 562), and ``compare`` takes ``fit``'s options."""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

import pytest
from cli_helpers import circles_png, run_cli

import pyro_moe
from pyro_moe.cli import build_parser, main

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("torch", "pyro", "matplotlib", "arviz", "numpy", "scipy")


def _commands() -> list[str]:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return list(sub.choices)


COMMANDS = _commands()


@pytest.mark.parametrize("command", ["", *COMMANDS])
def test_help_renders_without_format_artefacts(capsys, command):
    assert main([command, "--help"] if command else ["--help"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("usage: pyro-moe")
    flat = " ".join(text.split())
    assert "%%" not in text and "%(" not in text, "an unexpanded or doubled % in the help"
    assert "==SUPPRESS==" not in text and "(default: None)" not in flat
    for line in re.split(r"\n  (?=-)", text):  # one option's help: at most one default
        assert line.count("(default:") <= 1, line


def test_compare_help_prints_one_percent_sign(capsys):
    main(["compare", "--help"])
    flat = " ".join(capsys.readouterr().out.split())
    assert "0.1 % of each final objective" in flat


def test_compare_has_the_fitting_options(capsys):
    main(["compare", "--help"])
    text = capsys.readouterr().out
    for option in ("--noise-expert", "--no-noise-expert", "--lr", "--restarts", "--learn"):
        assert option in text, option
    assert "--method" not in text  # compare runs every method


def test_compare_passes_its_options_on(capsys, tmp_path, monkeypatch):
    seen = {}

    def spy(source, **kwargs):
        seen.update(kwargs)
        raise pyro_moe.InputError("stopped by the test")

    monkeypatch.setattr(pyro_moe, "compare_circles", spy)
    argv = ["compare", circles_png(tmp_path), "--noise-expert", "--lr", "0.01", "--restarts", "3"]
    code, _, err = run_cli(capsys, *argv, "--learn", "none", "--max-iter", "50", "--seed", "4")
    assert code == 1 and "stopped by the test" in err
    assert seen["noise_expert"] is True and seen["svi_options"] == {"lr": 0.01}
    assert (seen["n_init"], seen["seed"], seen["learn"], seen["max_iter"]) == (3, 4, "none", 50)
    assert "method" not in seen and "lr" not in seen  # lr goes to SVI alone


def test_lr_with_an_engine_without_one_is_a_usage_error(capsys, tmp_path):
    code, _, err = run_cli(capsys, "circles", circles_png(tmp_path), "--lr", "0.01")
    assert code == 2 and "--lr" in err, err


def _heavy_after(code: str) -> list[str]:
    probe = f"import sys\n{code}\nprint(sorted({{m.split('.')[0] for m in sys.modules}} & {set(HEAVY)!r}))"
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, check=True
    ).stdout
    return eval(out.strip().splitlines()[-1])


@pytest.mark.parametrize("argv", [["--version"], ["--help"], ["circles", "--help"]])
def test_help_and_version_import_no_heavy_library(argv):
    code = f"""
import runpy
sys.argv = ["pyro-moe", *{argv!r}]
try:
    runpy.run_module("pyro_moe", run_name="__main__")
except SystemExit:
    pass
"""
    assert _heavy_after(code) == []


def test_public_names_are_lazy():
    assert _heavy_after("import pyro_moe; pyro_moe.__version__; pyro_moe.InputError") == []
    assert "torch" in _heavy_after("from pyro_moe import fit")


def test_every_public_name_resolves_where_it_lives():
    for name in pyro_moe.__all__:
        obj = getattr(pyro_moe, name)
        assert obj.__name__ == name and obj.__module__.startswith("pyro_moe."), name
        assert name in dir(pyro_moe)
    with pytest.raises(AttributeError, match="no_such_name"):
        pyro_moe.no_such_name  # noqa: B018


def test_no_module_of_the_package_shares_a_name_with_a_public_function():
    """``pyro_moe.compare`` is the function; its module is ``pyro_moe.comparison`` (a
    submodule named like a function would replace it on import)."""
    from test_imports import modules

    import pyro_moe.comparison

    names = {m.split(".")[1] for m in modules() if m.count(".") == 1}  # pyro_moe.<name>
    clash = [n for n in pyro_moe.__all__ if n in names and callable(getattr(pyro_moe, n))]
    assert clash == []
    assert not isinstance(pyro_moe.compare, type(sys))
