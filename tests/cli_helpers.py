"""Helpers of the command-line tests (tests/test_cli_*.py): images and tables on disk,
``main(argv)`` in-process, and the error contract (one stderr line, no partial file)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import pyro_moe
from pyro_moe.cli import main
from pyro_moe.model_file import MODELS_DIR
from pyro_moe.shapes import circle_image, match_circles

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
TRUE_CENTERS = [(40.0, 40.0), (90.0, 85.0)]
TRUE_RADII = [18.0, 25.0]


def save_png(path: Path, mask: np.ndarray) -> Path:
    """Save a boolean mask as an 8-bit gray PNG (foreground white)."""
    Image.fromarray((np.asarray(mask) * 255).astype(np.uint8)).save(path)
    return path


def circles_png(directory: Path) -> Path:
    """A 128x128 PNG with two rasterized circles (TRUE_CENTERS, TRUE_RADII)."""
    img, _ = circle_image(TRUE_CENTERS, TRUE_RADII, (128, 128))
    return save_png(directory / "circles.png", img)


def table_csv(directory: Path) -> Path:
    """A CSV with two linear regimes: y = 1 + 2 a (first half) and y = -1 - 3 b."""
    rng = np.random.default_rng(0)
    n = 120
    a, b = rng.normal(size=n), rng.normal(size=n)
    first = np.arange(n) < n // 2
    y = np.where(first, 1 + 2 * a, -1 - 3 * b) + 0.05 * rng.normal(size=n)
    path = directory / "table.csv"
    lines = ["a,b,y", *(f"{ai:.6f},{bi:.6f},{yi:.6f}" for ai, bi, yi in zip(a, b, y, strict=True))]
    path.write_text("\n".join(lines) + "\n")
    return path


def run_cli(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str, str]:
    """``main(argv)`` in-process; returns (exit status, stdout, stderr)."""
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def help_text(capsys: pytest.CaptureFixture[str], command: str) -> str:
    main([command, "--help"])
    return capsys.readouterr().out


def assert_one_error_line(err: str, status: int, code: int, *, internal: bool = False) -> None:
    """Exactly one stderr line of the expected kind, no traceback, the expected status."""
    lines = err.splitlines()
    assert code == status, err
    assert len(lines) == 1, err
    prefix = "pyro-moe: internal error: " if internal else "pyro-moe: error: "
    assert lines[0].startswith(prefix), err
    assert "Traceback" not in err


def leftovers(directory: Path, before: set[str]) -> set[str]:
    """Files that appeared in ``directory`` (outputs or temporaries)."""
    return {p.name for p in directory.iterdir()} - before


def expect_failure(capsys, tmp_path: Path, status: int, *argv: object, internal=False) -> str:
    """Run (outputs going to tmp_path/out) and check the error contract; returns stderr."""
    outdir = tmp_path / "out"
    outdir.mkdir(exist_ok=True)
    before = {p.name for p in outdir.iterdir()}
    code, out, err = run_cli(capsys, *argv)
    assert_one_error_line(err, status, code, internal=internal)
    assert out == ""
    assert leftovers(outdir, before) == set()
    return err


def image_outputs(tmp_path: Path) -> list[object]:
    """``--save`` and ``--plot`` into tmp_path/out (created)."""
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    return ["--save", out / "r.npz", "--plot", out / "r.png"]


def check_recovered(found) -> None:
    """The two TRUE circles, each within one pixel in x0, y0 and r."""
    true = [
        pyro_moe.shapes.Circle(x, y, r) for (x, y), r in zip(TRUE_CENTERS, TRUE_RADII, strict=True)
    ]
    pairs = match_circles(true, found)
    assert len(pairs) == len(true)
    for i, j in pairs:
        assert abs(found[j].x0 - true[i].x0) < 1
        assert abs(found[j].y0 - true[i].y0) < 1
        assert abs(found[j].r - true[i].r) < 1


def non_conjugate_model(tmp_path: Path) -> Path:
    """mixture_of_models with a Laplace prior on the weights: SVI only."""
    text = (MODELS_DIR / "mixture_of_models.py").read_text()
    old = "dist.MultivariateNormal(prior_mean, covariance_matrix=prior_cov)"
    assert old in text
    path = tmp_path / "laplace_model.py"
    path.write_text(text.replace(old, "dist.Laplace(prior_mean, 1.0).to_event(1)"))
    return path
