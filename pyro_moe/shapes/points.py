"""Point sets in pixel coordinates and their isotropic standardization.

Pixel convention (as scikit-image and OpenCV): ``x`` is the column, ``y`` the row, the
origin is the top-left pixel centre, so ``y`` grows downwards.

The models are fitted on *standardized* coordinates

$$s = (p - c) / \\sigma,$$

with one centre $c \\in \\mathbb{R}^2$ and ONE scale $\\sigma > 0$ for both
axes, so a circle stays a circle: a circle $(x_0, y_0, r)$ in pixels is the circle
$((x_0 - c_x)/\\sigma, (y_0 - c_y)/\\sigma, r/\\sigma)$ in standard units.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pyro_moe.errors import InputError
from pyro_moe.tables import read_numeric

__all__ = ["POINT_SUFFIXES", "PointSet", "Standardization", "read_points", "validate_points"]

#: File name endings read as point sets (not images) by :func:`read_points`.
POINT_SUFFIXES = (".csv", ".txt", ".npy")


def validate_points(xy: object, min_points: int = 1, *, what: str = "points") -> np.ndarray:
    """Check and convert a point array to float64 of shape (N, 2).

    A table with named columns (a pandas DataFrame) gives the columns named ``x`` and ``y``
    (any case, in any order) when it has them, as a CSV point file does; else its two
    columns in order. A tensor is read as data (detached, on the CPU).

    Raises :class:`~pyro_moe.errors.InputError` (never a raw numpy error) when the array is
    not (N, 2), is complex (the imaginary part is never dropped), holds dates or time spans,
    is a masked array with masked entries (never ignored: drop or fill them yourself), holds
    NaN or infinite values (the message says how many rows), or has fewer than
    ``min_points`` rows.
    """
    arr = _point_array(xy, what)
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise InputError(
            f"{what} must have shape (N, 2) (one row per point: x, y), got shape {arr.shape}"
        )
    bad = ~np.isfinite(arr).all(axis=1)
    n_bad = int(bad.sum())
    if n_bad:
        first = np.flatnonzero(bad)[:5].tolist()
        raise InputError(
            f"{what} contain NaN or infinite values in {n_bad} of {arr.shape[0]} rows "
            f"(first rows: {first}); drop or fix them first"
        )
    if arr.shape[0] < min_points:
        raise InputError(f"need at least {min_points} {what}, got {arr.shape[0]}")
    return arr


def _point_array(xy: object, what: str) -> np.ndarray:
    """``xy`` as float64 (unchecked shape): column names honoured, masks, complex values,
    dates and meta tensors refused (:func:`validate_points`)."""
    from pyro_moe.checks import numeric_array

    if xy is None:
        raise InputError(f"{what} is None: give an (N, 2) array of (x, y)")
    columns = getattr(xy, "columns", None)
    if columns is not None and hasattr(xy, "iloc") and hasattr(xy, "to_numpy"):
        names = [str(c).strip().lower() for c in columns]
        if names.count("x") == 1 and names.count("y") == 1:
            xy = xy.iloc[:, [names.index("x"), names.index("y")]]
        xy = xy.to_numpy()
    if hasattr(xy, "detach") and hasattr(xy, "is_complex"):  # a torch tensor
        if xy.device.type == "meta":
            raise InputError(f"{what} are a tensor on the meta device: it holds no values")
        if xy.is_complex():
            raise InputError(f"{what} are complex: {_COMPLEX}")
        import torch

        xy = xy.detach().cpu()
        xy = (xy if xy.layout == torch.strided else xy.to_dense()).numpy()
    raw = numeric_array(what, xy)  # masks, dates, objects, long double: one rule, in checks
    if raw.dtype.kind == "c":
        raise InputError(f"{what} are complex: {_COMPLEX}")
    with np.errstate(over="ignore"):  # a long double beyond float64: inf, refused after
        return raw.astype(np.float64)


_COMPLEX = (
    "points are real (x, y); pass the real part, or the real and imaginary parts as the "
    "two columns (np.column_stack([z.real, z.imag])), yourself"
)


def is_point_file(path: str | Path) -> bool:
    """Whether ``path`` names a point set (its ending is one of :data:`POINT_SUFFIXES`)."""
    return Path(path).suffix.lower() in POINT_SUFFIXES


def read_points(path: str | Path) -> np.ndarray:
    """The (N, 2) points (x, y) of a CSV or ``.npy`` file, as float64.

    * CSV (``.csv``, ``.txt``; read by :func:`pyro_moe.tables.read_numeric`, with or
      without a header row): the columns named ``x`` and ``y`` (any case) when the header
      has them, else the file must have exactly two columns (x first);
    * ``.npy``: an (N, 2) numeric array (no pickles).

    Raises :class:`~pyro_moe.errors.InputError` naming the file: missing or unreadable,
    a bad cell (its line and column), the wrong number of columns (an (N, 3) table is
    refused, not cut), NaN or infinite points, or no points.
    """
    from pyro_moe.files import check_source

    path = check_source(path, "file")  # a FIFO would block, /dev/zero never end
    what = f"points of {path}"
    if path.suffix.lower() == ".npy":
        try:
            arr = np.load(path, allow_pickle=False)
        except FileNotFoundError:
            raise InputError(f"no such file: {path}") from None
        except (OSError, ValueError) as e:
            raise InputError(f"cannot read {path} as a .npy array of points: {e}") from None
        if arr.ndim != 2 or arr.shape[1] != 2 or not np.issubdtype(arr.dtype, np.number):
            raise InputError(
                f"{path}: a point set is an (N, 2) numeric array of (x, y), got shape "
                f"{arr.shape} and dtype {arr.dtype}"
            )
        return validate_points(arr, 1, what=what)
    names, values = read_numeric(path)
    if names is not None:
        lower = [n.lower() for n in names]
        if "x" in lower and "y" in lower:
            return validate_points(values[:, [lower.index("x"), lower.index("y")]], 1, what=what)
    if values.shape[1] != 2:
        cols = "" if names is None else f" ({', '.join(names)})"
        raise InputError(
            f"{path}: a point set has two columns, x and y (or columns named x and y), got "
            f"{values.shape[1]} columns{cols}, shape {values.shape}"
        )
    return validate_points(values, 1, what=what)


@dataclass(frozen=True, eq=False)
class Standardization:
    """Isotropic affine map between pixel and standard coordinates.

    ``to_standard``: $s = (p - c)/\\sigma$; ``to_pixels``: $p = c + \\sigma s$.
    """

    center: np.ndarray
    scale: float

    def __post_init__(self) -> None:
        center = np.asarray(self.center, dtype=np.float64).reshape(-1)
        if center.shape != (2,) or not np.isfinite(center).all():
            raise InputError(f"standardization centre must be 2 finite numbers, got {center}")
        scale = float(self.scale)
        if not np.isfinite(scale) or scale <= 0.0:
            raise InputError(f"standardization scale must be a positive number, got {scale}")
        center.setflags(write=False)
        object.__setattr__(self, "center", center)
        object.__setattr__(self, "scale", scale)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Standardization):
            return NotImplemented
        return bool(np.array_equal(self.center, other.center)) and self.scale == other.scale

    def __hash__(self) -> int:
        return hash((float(self.center[0]), float(self.center[1]), self.scale))

    def __repr__(self) -> str:
        return (
            f"Standardization(center=({self.center[0]:.6g}, {self.center[1]:.6g}), "
            f"scale={self.scale:.6g})"
        )

    @classmethod
    def fit(cls, xy: object) -> Standardization:
        """Centre = mean point; scale $\\sigma = \\sqrt{(\\mathrm{var}\\,x +
        \\mathrm{var}\\,y)/2}$ (population variances).

        Raises InputError when all points coincide (zero scale), or when they are so large
        that their variance overflows (the message says to rescale).
        """
        pts = validate_points(xy, 1)
        with np.errstate(over="ignore", invalid="ignore"):
            center = pts.mean(axis=0)
            scale = float(np.sqrt(0.5 * (pts[:, 0].var() + pts[:, 1].var())))
        if not (np.isfinite(scale) and np.isfinite(center).all()):
            raise InputError(
                f"points up to {float(np.abs(pts).max()):.3g} in magnitude are too large to "
                "standardize (their variance overflows float64); rescale them (divide by a "
                "common factor; the circles scale with them)"
            )
        if not scale > 0.0:
            raise InputError(
                f"cannot standardize {pts.shape[0]} point(s) that all coincide (zero spread)"
            )
        return cls(center=center, scale=scale)

    @classmethod
    def identity(cls) -> Standardization:
        """The identity map: centre (0, 0), scale 1."""
        return cls(center=np.zeros(2), scale=1.0)

    def to_standard(self, xy: object) -> np.ndarray:
        """Map (N, 2) pixel coordinates to standard ones: $(p - c)/\\sigma$."""
        pts = validate_points(xy, 0)
        return (pts - self.center) / self.scale

    def to_pixels(self, xy: object) -> np.ndarray:
        """Map (N, 2) standard coordinates to pixels: $c + \\sigma s$."""
        pts = validate_points(xy, 0)
        return pts * self.scale + self.center

    def circle_to_pixels(self, x0: float, y0: float, r: float) -> tuple[float, float, float]:
        """Circle in standard units → pixels: $(c_x + \\sigma x_0, c_y + \\sigma y_0,
        \\sigma r)$."""
        return (
            float(self.center[0] + self.scale * x0),
            float(self.center[1] + self.scale * y0),
            float(self.scale * r),
        )

    def circle_to_standard(self, x0: float, y0: float, r: float) -> tuple[float, float, float]:
        """Circle in pixels → standard units: $((x_0 - c_x)/\\sigma, (y_0 - c_y)/\\sigma,
        r/\\sigma)$."""
        return (
            float((x0 - self.center[0]) / self.scale),
            float((y0 - self.center[1]) / self.scale),
            float(r / self.scale),
        )


@dataclass(eq=False)
class PointSet:
    """Points in pixel coordinates (x = column, y = row, origin top-left) with the
    standardization fitted to them and, when they came from an image, its (H, W) shape."""

    xy: np.ndarray
    standardization: Standardization
    image_shape: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        self.xy = validate_points(self.xy, 0)

    @property
    def standard(self) -> np.ndarray:
        """The points in standard coordinates, $(p - c)/\\sigma$."""
        return self.standardization.to_standard(self.xy)

    def __len__(self) -> int:
        return int(self.xy.shape[0])
