"""Output files of the commands (:mod:`pyro_moe.cli.base`): checked before fitting,
written all-or-nothing through :mod:`pyro_moe.files`."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from cli_helpers import circles_png as make_circles_png
from cli_helpers import expect_failure, run_cli

import pyro_moe


@pytest.fixture
def circles_png(tmp_path: Path) -> Path:
    return make_circles_png(tmp_path)


def test_missing_output_directory_is_a_usage_error(capsys, tmp_path, circles_png):
    err = expect_failure(
        capsys, tmp_path, 2, "circles", circles_png, "--save", tmp_path / "no/x.npz"
    )
    assert "does not exist" in err


def test_a_directory_or_fifo_as_output_is_a_usage_error(capsys, tmp_path, circles_png):
    (tmp_path / "out").mkdir()
    err = expect_failure(capsys, tmp_path, 2, "circles", circles_png, "--plot", tmp_path / "out")
    assert "directory" in err
    fifo = tmp_path / "out" / "pipe"
    os.mkfifo(fifo)
    err = expect_failure(capsys, tmp_path, 2, "circles", circles_png, "--save", fifo)
    assert "not a regular file" in err
    assert fifo.exists()


def test_failure_while_writing_leaves_no_file(capsys, tmp_path, circles_png, monkeypatch):
    """The plot is staged first; a failing save must remove it too."""

    def broken_save(self, path, **options):  # a CurveFit saves with metadata=
        Path(path).write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(pyro_moe.FitResult, "save", broken_save)
    out = tmp_path / "out"
    expect_failure(
        capsys,
        tmp_path,
        1,
        "circles",
        circles_png,
        "--plot",
        out / "p.png",
        "--save",
        out / "r.npz",
    )


def test_an_existing_output_is_replaced(capsys, tmp_path, circles_png):
    save = tmp_path / "fit.npz"
    save.write_bytes(b"old")
    code, _, err = run_cli(capsys, "circles", circles_png, "--restarts", "1", "--save", save)
    assert code == 0, err
    assert pyro_moe.FitResult.load(save).experts == 2
