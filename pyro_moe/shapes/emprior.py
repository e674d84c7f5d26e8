"""Readers for the original study's data (andriygav/EMprior, folder ``code/``).

The data live OUTSIDE the repository, by default in ``<repo root>/../shared/data/emprior``
(override with the environment variable ``PYRO_MOE_EMPRIOR``); nothing is copied here.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from pyro_moe.errors import InputError, PyroMoeError
from pyro_moe.shapes.image import foreground_mask, image_to_points, read_image
from pyro_moe.shapes.points import PointSet, validate_points

__all__ = [
    "EMPRIOR_ENV",
    "EMPRIOR_POINT_FILES",
    "emprior_dir",
    "load_emprior_points",
    "load_eye_mask",
    "study_eye_points",
]

EMPRIOR_ENV = "PYRO_MOE_EMPRIOR"
EMPRIOR_POINT_FILES = ("1", "2", "3", "7", "8", "9")
EYE_MASKS = ("1_mask.jpg", "1_mask_2.jpg", "1_mask_3.jpg")


def emprior_dir() -> Path | None:
    """The study's data folder, or None when absent.

    ``$PYRO_MOE_EMPRIOR`` when set (None if it is not a directory); otherwise
    ``<repo root>/../shared/data/emprior`` located from this file.
    """
    env = os.environ.get(EMPRIOR_ENV)
    if env:
        p = Path(env).expanduser()
        return p if p.is_dir() else None
    repo_root = Path(__file__).resolve().parents[2]
    p = repo_root.parent / "shared" / "data" / "emprior"
    return p if p.is_dir() else None


def _require_dir() -> Path:
    d = emprior_dir()
    if d is None:
        raise PyroMoeError(
            "the EMprior study data folder was not found: expected "
            "<repo root>/../shared/data/emprior, or set PYRO_MOE_EMPRIOR to its path"
        )
    return d


def load_emprior_points(name: str | int) -> np.ndarray:
    """Points of a study CSV (header ``x,y``) as float64 (N, 2).

    ``name``: 1, "1" or "1.csv" (available: 1, 2, 3, 7, 8, 9). Raises PyroMoeError when
    the folder is absent, InputError for an unknown name.
    """
    stem = str(name).removesuffix(".csv")
    if stem not in EMPRIOR_POINT_FILES:
        raise InputError(
            f"unknown EMprior data set {name!r}; available: {', '.join(EMPRIOR_POINT_FILES)}"
        )
    path = _require_dir() / f"{stem}.csv"
    if not path.is_file():
        raise PyroMoeError(f"EMprior file missing: {path}")
    try:
        arr = np.loadtxt(path, delimiter=",", skiprows=1, dtype=np.float64, ndmin=2)
    except ValueError as exc:
        raise PyroMoeError(f"cannot read {path}: {exc}") from None
    return validate_points(arr, 1, what=f"points of {path.name}")


def _mask_path(which: str) -> Path:
    if which not in EYE_MASKS:
        raise InputError(f"unknown eye mask {which!r}; available: {', '.join(EYE_MASKS)}")
    path = _require_dir() / which
    if not path.is_file():
        raise PyroMoeError(f"EMprior file missing: {path}")
    return path


def load_eye_mask(which: str = "1_mask_2.jpg") -> PointSet:
    """Foreground (white) pixels of a study eye mask as a :class:`PointSet` in the image
    convention (x = column, y = row, top-left origin), isotropically standardized.

    The JPEG masks carry compression noise; foreground = gray > Otsu threshold, no
    inversion.
    """
    return image_to_points(_mask_path(which), threshold="otsu", invert=False)


def study_eye_points(seed: int = 0, n: int = 200, which: str = "1_mask_2.jpg") -> np.ndarray:
    """The study's preprocessing of the eye mask, as float64 (n, 2).

    Foreground pixels (Otsu, white) → $(u, v) = (\\text{column}, 255 - \\text{row})$
    (y up), then EACH coordinate standardized separately,
    $u' = (u - \\bar u)/\\mathrm{sd}(u)$, $v' = (v - \\bar v)/\\mathrm{sd}(v)$
    (population sd), then n points drawn without replacement with
    ``np.random.default_rng(seed)``.

    Unlike :class:`~pyro_moe.shapes.points.Standardization` (one scale for both axes),
    the per-axis scaling can turn circles into slight ellipses, and y points up here.
    """
    gray = read_image(_mask_path(which))
    mask = foreground_mask(gray, "otsu", invert=False)
    rows, cols = np.nonzero(mask)
    uv = np.column_stack([cols, 255.0 - rows]).astype(np.float64)
    uv = (uv - uv.mean(axis=0)) / uv.std(axis=0)
    if not 1 <= n <= uv.shape[0]:
        raise InputError(f"n must be between 1 and {uv.shape[0]}, got {n}")
    rng = np.random.default_rng(seed)
    return uv[rng.choice(uv.shape[0], size=n, replace=False)]
