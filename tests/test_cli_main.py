"""The entry point (:func:`pyro_moe.cli.main`, ``python -m pyro_moe``): exit statuses,
warnings as one line each, tracebacks only with ``--debug``, ``--threads``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cli_helpers import circles_png as make_circles_png
from cli_helpers import expect_failure, run_cli

import pyro_moe
from pyro_moe.cli import main


@pytest.fixture
def circles_png(tmp_path: Path) -> Path:
    return make_circles_png(tmp_path)


def test_convergence_warning_is_one_line_and_exit_zero(capsys, circles_png):
    code, out, err = run_cli(capsys, "circles", circles_png, "-k", "2", "--max-iter", "2")
    assert code == 0
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("pyro-moe: warning: "), err
    assert "circle" in out


def test_threads_option(capsys, circles_png):
    import torch

    before = torch.get_num_threads()
    try:
        code, _, err = run_cli(capsys, "--threads", "1", "circles", circles_png, "--restarts", "1")
        assert code == 0, err
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_unexpected_exception_is_an_internal_error(capsys, tmp_path, circles_png, monkeypatch):
    def boom(*args, **kwargs):
        raise RuntimeError("something\nbroke")

    monkeypatch.setattr(pyro_moe, "fit_circles", boom)
    err = expect_failure(capsys, tmp_path, 1, "circles", circles_png, internal=True)
    assert "rerun with --debug" in err and "something broke" in err
    for argv in (
        ["--debug", "circles", str(circles_png)],
        ["circles", str(circles_png), "--debug"],
    ):
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert "Traceback" in err and "RuntimeError" in err
        assert err.splitlines()[-1].startswith("pyro-moe: internal error: ")


def test_version_and_no_command(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"pyro-moe {pyro_moe.__version__}"
    assert main([]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and err.startswith("pyro-moe: error: ")


# --------------------------------------------------------------------------- entry point


def _python_m(*argv: object, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    return subprocess.run(
        [sys.executable, "-m", "pyro_moe", *map(str, argv)],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=120,
        check=False,
    )


@pytest.mark.slow
def test_entry_point_success_and_usage_error(tmp_path, circles_png):
    ok = _python_m("circles", circles_png, "-k", "2", "--json", cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert len(json.loads(ok.stdout)["circles"]) == 2
    bad = _python_m("circles", circles_png, "--experts", "0", cwd=tmp_path)
    assert bad.returncode == 2
    assert len(bad.stderr.splitlines()) == 1 and bad.stderr.startswith("pyro-moe: error: ")


def test_entry_point_failed_run(tmp_path):
    missing = _python_m(
        "circles", tmp_path / "nope.png", "--save", tmp_path / "x.npz", cwd=tmp_path
    )
    assert missing.returncode == 1
    assert missing.stderr.splitlines() == [
        f"pyro-moe: error: no such image file: {tmp_path / 'nope.png'}"
    ]
    assert "Traceback" not in missing.stderr
    assert not (tmp_path / "x.npz").exists()
