"""Readers of the original study's data (skipped when the folder is absent)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pyro_moe.errors import InputError, PyroMoeError
from pyro_moe.shapes import emprior_dir, load_emprior_points, load_eye_mask, study_eye_points
from pyro_moe.shapes.emprior import EMPRIOR_ENV

needs_data = pytest.mark.skipif(emprior_dir() is None, reason="EMprior data folder absent")


@needs_data
@pytest.mark.parametrize(("name", "n"), [(1, 200), ("2", 200), ("3.csv", 400), (7, 100)])
def test_point_files(name, n: int) -> None:
    xy = load_emprior_points(name)
    assert xy.shape == (n, 2) and xy.dtype == np.float64


@needs_data
def test_file_1_is_two_concentric_circles() -> None:
    xy = load_emprior_points(1)
    r = np.hypot(*(xy - xy.mean(axis=0)).T)
    inner, outer = r[r < 1.0], r[r >= 1.0]
    assert len(inner) == 100 and len(outer) == 100
    assert abs(np.median(inner) - 0.5) < 0.02
    assert abs(np.median(outer) - 1.5) < 0.02


@needs_data
def test_eye_mask() -> None:
    pts = load_eye_mask()
    assert pts.image_shape == (255, 255)
    assert 1000 < len(pts) < 0.2 * 255 * 255
    assert pts.xy.min() >= 0 and pts.xy.max() <= 254


@needs_data
def test_study_eye_points() -> None:
    a = study_eye_points(seed=0)
    assert a.shape == (200, 2)
    np.testing.assert_array_equal(a, study_eye_points(seed=0))
    assert not np.array_equal(a, study_eye_points(seed=1))
    full = study_eye_points(seed=0, n=len(load_eye_mask()))
    np.testing.assert_allclose(full.mean(axis=0), 0, atol=1e-9)
    np.testing.assert_allclose(full.std(axis=0), 1, atol=1e-9)


def test_unknown_name() -> None:
    with pytest.raises(InputError, match="available"):
        load_emprior_points(42)


def test_absent_folder(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(EMPRIOR_ENV, str(tmp_path / "does-not-exist"))
    assert emprior_dir() is None
    with pytest.raises(PyroMoeError, match="PYRO_MOE_EMPRIOR"):
        load_emprior_points(1)
    with pytest.raises(PyroMoeError, match="not found"):
        load_eye_mask()


def test_env_override(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "1.csv").write_text("x,y\n0,1\n1,0\n-1,0\n")
    monkeypatch.setenv(EMPRIOR_ENV, str(tmp_path))
    assert emprior_dir() == tmp_path
    np.testing.assert_array_equal(load_emprior_points("1"), [[0, 1], [1, 0], [-1, 0]])
