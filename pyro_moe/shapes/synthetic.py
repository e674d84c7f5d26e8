"""Seeded generators of points on circles / conics and of binary images.

Every generator draws from ``np.random.default_rng(seed)``: the same seed gives the same
data. Point coordinates use x = column, y = row when rasterized.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from pyro_moe.errors import InputError
from pyro_moe.shapes.curves import Circle

__all__ = [
    "SCENE_KINDS",
    "SPARSE_KINDS",
    "SyntheticData",
    "circle_image",
    "circle_points",
    "circle_scene",
    "demo_image",
    "ellipse_drawing",
    "ellipse_points",
    "hyperbola_points",
    "noise_sweep",
    "point_scene",
    "rasterize",
    "ring_image",
    "synthetic_1",
    "synthetic_2",
    "synthetic_3",
]

Box = tuple[float, float, float, float]


@dataclass(eq=False)
class SyntheticData:
    """Points ``xy`` (N, 2), ``labels`` (N,) int (circle index, -1 for outliers) and the
    true ``circles``."""

    xy: np.ndarray
    labels: np.ndarray
    circles: list[Circle]
    name: str = ""

    def __len__(self) -> int:
        return int(self.xy.shape[0])


def _centers_radii(centers: object, radii: object) -> tuple[np.ndarray, np.ndarray]:
    c = np.asarray(centers, dtype=np.float64)
    if c.ndim == 1 and c.shape == (2,):
        c = c[None, :]
    r = np.atleast_1d(np.asarray(radii, dtype=np.float64))
    if c.ndim != 2 or c.shape[1] != 2:
        raise InputError(f"centers must have shape (K, 2), got {c.shape}")
    if r.ndim != 1 or r.shape[0] != c.shape[0]:
        raise InputError(f"need one radius per centre: {c.shape[0]} centres, {r.shape} radii")
    if not (np.isfinite(c).all() and np.isfinite(r).all()) or (r <= 0).any():
        raise InputError("centres must be finite and radii finite and positive")
    return c, r


def _uniform_box(rng: np.random.Generator, n: int, box: Box) -> np.ndarray:
    xmin, xmax, ymin, ymax = (float(v) for v in box)
    if not (xmax > xmin and ymax > ymin):
        raise InputError(f"box must be (xmin, xmax, ymin, ymax) with min < max, got {box}")
    return np.column_stack([rng.uniform(xmin, xmax, n), rng.uniform(ymin, ymax, n)])


def circle_points(
    centers: object,
    radii: object,
    n_per_circle: int | Sequence[int],
    *,
    jitter: float = 0.0,
    outlier_fraction: float = 0.0,
    box: Box | None = None,
    even: bool = False,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Points on circles, with jitter and uniform outliers.

    Circle k gets ``n_k`` points $(x_{0k} + r_k\\cos\\phi, y_{0k} + r_k\\sin\\phi)$
    with $\\phi_j = 2\\pi j / n_k$ (``even=True``) or $\\phi \\sim U[0, 2\\pi)$,
    then $\\varepsilon \\sim N(0, \\text{jitter}^2)$ added to x and y. Then
    $n_o = \\mathrm{round}(f\\,n_c/(1 - f))$ outliers uniform on ``box`` so that the
    outliers are a share ``f = outlier_fraction`` of the final set; the default box is the
    circles' bounding box widened by 10% (5% on each side), about its centre.

    Returns ``(xy (N, 2), labels (N,))``: circle points first (label k), outliers last
    (label -1). Random draws are: angles, jitter, outliers, in this order.
    """
    c, r = _centers_radii(centers, radii)
    k = c.shape[0]
    counts = np.broadcast_to(np.asarray(n_per_circle), (k,)).astype(int)
    if (counts < 0).any():
        raise InputError(f"n_per_circle must be >= 0, got {n_per_circle}")
    if not 0.0 <= outlier_fraction < 1.0:
        raise InputError(f"outlier_fraction must be in [0, 1), got {outlier_fraction}")
    if jitter < 0:
        raise InputError(f"jitter must be >= 0, got {jitter}")
    rng = np.random.default_rng(seed)
    pts, labels = [], []
    for i in range(k):
        n = int(counts[i])
        if even:
            phi = 2.0 * np.pi * np.arange(n) / max(n, 1)
        else:
            phi = rng.uniform(0.0, 2.0 * np.pi, n)
        pts.append(c[i] + r[i] * np.column_stack([np.cos(phi), np.sin(phi)]))
        labels.append(np.full(n, i, dtype=np.int64))
    xy = np.concatenate(pts) if pts else np.zeros((0, 2))
    lab = np.concatenate(labels) if labels else np.zeros(0, dtype=np.int64)
    if jitter > 0:
        xy = xy + rng.normal(0.0, jitter, size=xy.shape)
    n_out = round(outlier_fraction * xy.shape[0] / (1.0 - outlier_fraction))
    if n_out > 0:
        if box is None:
            lo = (c - r[:, None]).min(axis=0)
            hi = (c + r[:, None]).max(axis=0)
            mid, half = 0.5 * (lo + hi), 0.55 * (hi - lo)
            box = (mid[0] - half[0], mid[0] + half[0], mid[1] - half[1], mid[1] + half[1])
        xy = np.concatenate([xy, _uniform_box(rng, n_out, box)])
        lab = np.concatenate([lab, np.full(n_out, -1, dtype=np.int64)])
    return xy, lab


_STUDY_CENTERS = ((0.0, 0.0), (0.0, 0.0))
_STUDY_RADII = (0.5, 1.5)
_STUDY_BOX: Box = (-2.0, 2.0, -2.0, 2.0)


def _study(jitter: float, n_noise: int, seed: int, name: str) -> SyntheticData:
    """Two concentric circles r = 0.5, 1.5 at the origin, 100 evenly spaced points each,
    N(0, jitter^2) on x and y, then ``n_noise`` points uniform on [-2, 2]^2 (label -1)."""
    rng = np.random.default_rng(seed)
    phi = 2.0 * np.pi * np.arange(100) / 100
    ring = np.column_stack([np.cos(phi), np.sin(phi)])
    xy = np.concatenate([r * ring for r in _STUDY_RADII])
    labels = np.repeat(np.arange(2, dtype=np.int64), 100)
    if jitter > 0:
        xy = xy + rng.normal(0.0, jitter, size=xy.shape)
    if n_noise > 0:
        xy = np.concatenate([xy, _uniform_box(rng, n_noise, _STUDY_BOX)])
        labels = np.concatenate([labels, np.full(n_noise, -1, dtype=np.int64)])
    circles = [Circle(0.0, 0.0, r, True) for r in _STUDY_RADII]
    return SyntheticData(xy=xy, labels=labels, circles=circles, name=name)


def synthetic_1() -> SyntheticData:
    """Study data set 1: circles r = 0.5 and 1.5 at (0, 0), 100 evenly spaced points each,
    no noise (200 points)."""
    return _study(0.0, 0, 0, "synthetic_1")


def synthetic_2(seed: int = 0) -> SyntheticData:
    """Study data set 2: synthetic 1 with $N(0, 0.1^2)$ jitter on x and y
    (200 points)."""
    return _study(0.1, 0, seed, "synthetic_2")


def synthetic_3(seed: int = 0) -> SyntheticData:
    """Study data set 3: synthetic 2 (same seed → same first 200 points) plus 200 points
    uniform on $[-2, 2]^2$ (400 points, noise labelled -1)."""
    return _study(0.1, 200, seed, "synthetic_3")


def noise_sweep(level: float, seed: int = 0) -> SyntheticData:
    """Synthetic 2 plus $\\mathrm{round}(200\\,\\text{level})$ uniform points on
    $[-2, 2]^2$, level in [0, 1] (level 1 equals :func:`synthetic_3`)."""
    if not 0.0 <= level <= 1.0:
        raise InputError(f"noise level must be in [0, 1], got {level}")
    return _study(0.1, round(level * 200), seed, f"noise_sweep({level:g})")


def _rotate(uv: np.ndarray, center: Sequence[float], angle: float) -> np.ndarray:
    ct, st = math.cos(angle), math.sin(angle)
    R = np.array([[ct, -st], [st, ct]])
    return uv @ R.T + np.asarray(center, dtype=np.float64)


def ellipse_points(
    center: Sequence[float],
    semi_axes: Sequence[float],
    angle: float,
    n: int,
    *,
    jitter: float = 0.0,
    even: bool = False,
    seed: int = 0,
) -> np.ndarray:
    """n points $c + R(\\theta)(a\\cos\\phi, b\\sin\\phi)$ on an ellipse (``a`` along
    the axis at angle θ from +x), φ evenly spaced or uniform, plus N(0, jitter²)."""
    a, b = (float(v) for v in semi_axes)
    if a <= 0 or b <= 0:
        raise InputError(f"semi-axes must be positive, got {semi_axes}")
    rng = np.random.default_rng(seed)
    phi = 2 * np.pi * np.arange(n) / max(n, 1) if even else rng.uniform(0, 2 * np.pi, n)
    xy = _rotate(np.column_stack([a * np.cos(phi), b * np.sin(phi)]), center, angle)
    if jitter > 0:
        xy = xy + rng.normal(0.0, jitter, size=xy.shape)
    return xy


def ellipse_drawing(
    seed: int = 0, *, dashed: int = 5, size: int = 360, scale: float = 1.0
) -> tuple[np.ndarray, list[tuple[float, float, float, float, float]]]:
    """A ``size`` x ``size`` binary drawing of nine ellipses on a 3 x 3 grid and their
    true (cx, cy, a, b, angle) (x = column, y = row; angle in radians from +x to the major
    axis, turning clockwise on screen): centres within 6 px of the cells' centres,
    semi-major axes a = ``scale`` x U(25, 50) px, b = a x U(0.45, 0.9), angles U(0, pi);
    the first ``dashed`` drawn in dashes of 3 px with gaps of 3 px along the curve (their
    edge chains do not close)."""
    if not 0 <= dashed <= 9:
        raise InputError(f"dashed must be 0..9, got {dashed}")
    rng = np.random.default_rng(seed)
    img, truth = np.zeros((size, size), bool), []
    cell = size / 3
    for k in range(9):
        i, j = divmod(k, 3)
        cx = cell / 2 + cell * j + rng.uniform(-6, 6)
        cy = cell / 2 + cell * i + rng.uniform(-6, 6)
        a = scale * rng.uniform(25, 50)
        b, angle = a * rng.uniform(0.45, 0.9), rng.uniform(0, np.pi)
        if a + 8 > cell / 2:
            raise InputError(f"a {size}^2 drawing has no room for semi-axes of {a:.0f} px")
        phi = np.linspace(0, 2 * np.pi, int(40 * a), endpoint=False)
        uv = np.column_stack([a * np.cos(phi), b * np.sin(phi)])
        if k < dashed:  # by arc length along the curve
            s = np.concatenate([[0.0], np.cumsum(np.hypot(*np.diff(uv, axis=0).T))])
            uv = uv[s % 6.0 < 3.0]
        img |= rasterize(_rotate(uv, (cx, cy), angle), (size, size))
        truth.append((float(cx), float(cy), float(a), float(b), float(angle)))
    return img, truth


def hyperbola_points(
    center: Sequence[float],
    semi_axes: Sequence[float],
    angle: float,
    n: int,
    *,
    t_max: float = 2.0,
    jitter: float = 0.0,
    seed: int = 0,
) -> np.ndarray:
    """n points $c + R(\\theta)(\\pm a\\cosh u, b\\sinh u)$, u ~ U[-t_max, t_max],
    alternating between the two branches (``a`` transverse, along angle θ), plus
    N(0, jitter²)."""
    a, b = (float(v) for v in semi_axes)
    if a <= 0 or b <= 0:
        raise InputError(f"semi-axes must be positive, got {semi_axes}")
    rng = np.random.default_rng(seed)
    u = rng.uniform(-t_max, t_max, n)
    sign = np.where(np.arange(n) % 2 == 0, 1.0, -1.0)
    xy = _rotate(np.column_stack([sign * a * np.cosh(u), b * np.sinh(u)]), center, angle)
    if jitter > 0:
        xy = xy + rng.normal(0.0, jitter, size=xy.shape)
    return xy


def _disk_offsets(thickness: int) -> np.ndarray:
    rad = thickness / 2.0
    k = math.ceil(rad)
    dy, dx = np.mgrid[-k : k + 1, -k : k + 1]
    keep = dx * dx + dy * dy <= rad * rad
    return np.column_stack([dy[keep], dx[keep]])


def rasterize(xy: object, shape: tuple[int, int], *, thickness: int = 1) -> np.ndarray:
    """Boolean (H, W) image with pixel (row = round(y), col = round(x)) set for each point
    (points outside are dropped). ``thickness`` t > 1 stamps a disk of radius t/2 (in
    pixels, offsets with $d_x^2 + d_y^2 \\le (t/2)^2$) at each point."""
    from pyro_moe.shapes.points import validate_points

    pts = validate_points(xy, 0)
    h, w = (int(s) for s in shape)
    if h <= 0 or w <= 0:
        raise InputError(f"shape must be positive (H, W), got {shape}")
    if int(thickness) != thickness or thickness < 1:
        raise InputError(f"thickness must be an integer >= 1, got {thickness}")
    img = np.zeros((h, w), dtype=bool)
    rc = np.floor(pts[:, ::-1] + 0.5).astype(np.int64)
    for dr, dc in _disk_offsets(int(thickness)):
        rr, cc = rc[:, 0] + dr, rc[:, 1] + dc
        ok = (rr >= 0) & (rr < h) & (cc >= 0) & (cc < w)
        img[rr[ok], cc[ok]] = True
    return img


def circle_image(
    centers: object,
    radii: object,
    shape: tuple[int, int] = (128, 128),
    *,
    thickness: int = 1,
    outlier_fraction: float = 0.0,
    seed: int = 0,
) -> tuple[np.ndarray, list[Circle]]:
    """Boolean image of full circles (pixel units, x = column, y = row) drawn with
    $\\lceil 8\\pi r\\rceil + 16$ angular samples each (so the curve is 8-connected),
    plus $\\mathrm{round}(f\\,n_{fg})$ outlier pixels drawn uniformly without
    replacement among the background pixels, $n_{fg}$ = number of curve pixels.

    Returns ``(image, circles)`` with the true circles in pixel units.
    """
    c, r = _centers_radii(centers, radii)
    if outlier_fraction < 0:
        raise InputError(f"outlier_fraction must be >= 0, got {outlier_fraction}")
    pts = []
    for ci, ri in zip(c, r, strict=True):
        m = math.ceil(8 * math.pi * ri) + 16
        phi = 2 * np.pi * np.arange(m) / m
        pts.append(ci + ri * np.column_stack([np.cos(phi), np.sin(phi)]))
    img = rasterize(np.concatenate(pts), shape, thickness=thickness)
    n_out = round(outlier_fraction * int(img.sum()))
    if n_out > 0:
        rng = np.random.default_rng(seed)
        bg = np.flatnonzero(~img.ravel())
        n_out = min(n_out, bg.size)
        img.flat[rng.choice(bg, size=n_out, replace=False)] = True
    return img, [
        Circle(float(ci[0]), float(ci[1]), float(ri), True) for ci, ri in zip(c, r, strict=True)
    ]


DEMO_SHAPE = (160, 160)
DEMO_CIRCLES = ((62.0, 64.0, 20.0), (62.0, 64.0, 42.0), (124.0, 122.0, 22.0))


def demo_image() -> tuple[np.ndarray, list[Circle]]:
    """The built-in demo: a 160×160 boolean image with two concentric circles
    (centre (62, 64), r = 20 and 42) and a separate circle (centre (124, 122), r = 22),
    1 px thick, no outliers. Returns ``(image, true circles in pixel units)``."""
    centers = [(x, y) for x, y, _ in DEMO_CIRCLES]
    radii = [r for _, _, r in DEMO_CIRCLES]
    return circle_image(centers, radii, DEMO_SHAPE)


def ring_image(
    centers: object,
    radii: object,
    shape: tuple[int, int],
    *,
    thickness: int = 1,
    outlier_fraction: float = 0.0,
    jitter: float = 0.0,
    seed: int = 0,
) -> tuple[np.ndarray, list[Circle]]:
    """:func:`circle_image` with an optional radial ``jitter`` (sd in pixels, Gaussian)
    of each angular sample before rasterizing; ``jitter=0`` is :func:`circle_image`."""
    if jitter == 0.0:
        return circle_image(centers, radii, shape, thickness=thickness,
                            outlier_fraction=outlier_fraction, seed=seed)  # fmt: skip
    c, r = _centers_radii(centers, radii)
    rng = np.random.default_rng(seed)
    pts = []
    for ci, ri in zip(c, r, strict=True):
        m = math.ceil(8 * math.pi * ri) + 16
        phi = 2 * np.pi * np.arange(m) / m
        rr = ri + rng.normal(0.0, jitter, m)
        pts.append(ci + rr[:, None] * np.column_stack([np.cos(phi), np.sin(phi)]))
    img = rasterize(np.concatenate(pts), shape, thickness=thickness)
    n_out = round(outlier_fraction * int(img.sum()))
    if n_out > 0:
        bg = np.flatnonzero(~img.ravel())
        img.flat[rng.choice(bg, size=min(n_out, bg.size), replace=False)] = True
    return img, [Circle(float(a), float(b), float(q), True) for (a, b), q in zip(c, r, strict=True)]


def _radii(rng: np.random.Generator, n: int, lo: float, hi: float, gap: float) -> list[float]:
    """n sorted radii in [lo, hi], consecutive ones at least ``gap`` apart."""
    for _ in range(10000):
        r = np.sort(rng.uniform(lo, hi, n))
        if n == 1 or np.diff(r).min() >= gap:
            return [float(v) for v in r]
    raise InputError(f"cannot draw {n} radii in [{lo}, {hi}] {gap} apart")


def _apart(
    rng: np.random.Generator, radii: Sequence[float], shape: tuple[int, int], gap: float = 6.0
) -> list[tuple[float, float]]:
    """Centres for circles of ``radii`` inside the image, none touching another (their
    rings at least ``gap`` px apart), by rejection."""
    h, w = shape
    for _ in range(10000):
        c = [(rng.uniform(r + 3, w - r - 3), rng.uniform(r + 3, h - r - 3)) for r in radii]
        ok = all(
            math.dist(c[i], c[j]) >= radii[i] + radii[j] + gap
            for i in range(len(c)) for j in range(i)
        )  # fmt: skip
        if ok:
            return c
    raise InputError(f"cannot place circles of radii {list(radii)} in {shape}")


#: The kinds of :func:`circle_scene`: the scenes users bring (issue 15).
SCENE_KINDS = (
    "concentric 2",
    "concentric 3",
    "concentric 4",
    "apart 2 (small and large)",
    "overlapping 2",
    "small (r 8-15)",
    "cut by the border",
    "5 apart",
    "two concentric pairs",
    "concentric 2 + 5% stray",
    "concentric 2 + 30% stray",
    "apart 3 + 15% stray",
    "jitter 0.7 px",
    "2-px-thick rings",
    "1024^2, 3 concentric",
)


def circle_scene(kind: str, seed: int = 0) -> tuple[np.ndarray, list[Circle]]:
    """A random binary image of one of :data:`SCENE_KINDS` or :data:`SPARSE_KINDS`, and its
    true circles.

    Each seed draws new centres and radii of the same kind (concentric rings at least
    15 px apart, separate circles not touching, ...), so a method tuned on some seeds can
    be checked on others.
    """
    if kind in SPARSE_KINDS:
        return _sparse_scene(kind, seed)
    if kind not in SCENE_KINDS:
        raise InputError(
            f"unknown scene kind {kind!r}; use one of {', '.join(SCENE_KINDS + SPARSE_KINDS)}"
        )
    rng = np.random.default_rng(seed)

    def mid(size: float, wobble: float = 3.0) -> float:
        return size / 2 + rng.uniform(-wobble, wobble)

    if kind.startswith("concentric ") and kind[11:].isdigit():
        n = int(kind[11:])
        S = 160 if n == 2 else 220
        radii = _radii(rng, n, 18, S / 2 - 8, 18)
        return ring_image([(mid(S), mid(S))] * n, radii, (S, S), seed=seed)
    if kind == "apart 2 (small and large)":
        radii = [rng.uniform(20, 30), rng.uniform(60, 80)]
        return ring_image(_apart(rng, radii, (220, 240)), radii, (220, 240), seed=seed)
    if kind == "overlapping 2":
        radii = [rng.uniform(32, 45), rng.uniform(32, 45)]
        angle, d = rng.uniform(0, 2 * math.pi), rng.uniform(20, 40)
        cx, cy = mid(160), mid(160)
        centers = [(cx - d / 2 * math.cos(angle), cy - d / 2 * math.sin(angle)),
                   (cx + d / 2 * math.cos(angle), cy + d / 2 * math.sin(angle))]  # fmt: skip
        return ring_image(centers, radii, (160, 160), seed=seed)
    if kind == "small (r 8-15)":
        radii = list(rng.uniform(8, 15, 3))
        return ring_image(_apart(rng, radii, (140, 140)), radii, (140, 140), seed=seed)
    if kind == "cut by the border":
        radii = [rng.uniform(30, 42), rng.uniform(30, 42)]
        f = rng.uniform(0.3, 0.6, 2)  # the share of the radius by which each pokes out
        centers = [(radii[0] * (1 - f[0]), mid(70, 10)), (mid(120, 8), 160 - radii[1] * (1 - f[1]))]
        return ring_image(centers, radii, (160, 160), seed=seed)
    if kind == "5 apart":
        radii = list(rng.uniform(15, 25, 5))
        return ring_image(_apart(rng, radii, (160, 160), gap=4), radii, (160, 160), seed=seed)
    if kind == "two concentric pairs":
        a, b = _radii(rng, 2, 15, 42, 15), _radii(rng, 2, 12, 36, 15)
        ca, cb = (mid(110, 5), mid(120, 5)), (mid(300, 5), mid(280, 5))
        return ring_image([ca, ca, cb, cb], [*a, *b], (200, 200), seed=seed)
    if kind.startswith("concentric 2 + "):
        f = 0.05 if "5%" in kind else 0.3
        radii = _radii(rng, 2, 18, 72, 18)
        return ring_image([(mid(160), mid(160))] * 2, radii, (160, 160), outlier_fraction=f,
                          seed=seed)  # fmt: skip
    if kind == "apart 3 + 15% stray":
        radii = list(rng.uniform(22, 30, 3))
        return ring_image(_apart(rng, radii, (160, 160)), radii, (160, 160),
                          outlier_fraction=0.15, seed=seed)  # fmt: skip
    if kind == "jitter 0.7 px":
        big = _radii(rng, 2, 25, 62, 20)
        small = rng.uniform(10, 14)
        c = (mid(160), mid(160))
        return ring_image([c, c, (mid(36), mid(36))], [*big, small], (160, 160), jitter=0.7,
                          seed=seed)  # fmt: skip
    if kind == "2-px-thick rings":
        radii = _radii(rng, 2, 22, 66, 20)
        return ring_image([(mid(160), mid(160))] * 2, radii, (160, 160), thickness=2, seed=seed)
    radii = [rng.uniform(100, 140), rng.uniform(230, 290), rng.uniform(380, 420)]
    return ring_image([(mid(1024), mid(1024))] * 3, radii, (1024, 1024), seed=seed)


def point_scene(
    centers: object,
    radii: object,
    shape: tuple[int, int],
    *,
    keep: float | Sequence[float] = 1.0,
    jitter: float = 0.0,
    clutter: float = 0.0,
    arcs: Sequence[tuple[float, float]] | None = None,
    seed: int = 0,
) -> tuple[np.ndarray, list[Circle]]:
    """A point set on circles rendered as a binary image: sparse, jittered, cluttered.

    Circle k of radius r_k has P_k pixels when drawn whole (those of
    :func:`circle_image`); it gets $n_k = \\mathrm{round}(\\text{keep}_k\\,P_k\\,s_k)$
    points at angles $\\phi \\sim U[\\phi_{0k}, \\phi_{0k} + \\Delta_k)$ (``arcs``: one
    (start, sweep) in radians per circle, default the whole ring, $s_k = \\Delta_k / 2\\pi$),
    $(x_{0k} + r_k\\cos\\phi, y_{0k} + r_k\\sin\\phi) + \\varepsilon$,
    $\\varepsilon \\sim N(0, \\text{jitter}^2 I_2)$, rasterized (:func:`rasterize`; points
    on one pixel merge). Then clutter: $\\mathrm{round}(f\\,n_{fg} / (1 - f))$ pixels drawn
    uniformly without replacement among the background pixels, so that they are a share
    ``f = clutter`` of the image's set pixels ($n_{fg}$: the curve pixels). Random draws:
    angles, jitter, clutter, in this order.
    """
    c, r = _centers_radii(centers, radii)
    k = c.shape[0]
    keeps = np.broadcast_to(np.asarray(keep, dtype=np.float64), (k,))
    if not ((keeps > 0) & (keeps <= 1)).all():
        raise InputError(f"keep must be in (0, 1], got {keep}")
    if jitter < 0 or not 0.0 <= clutter < 1.0:
        raise InputError(f"jitter must be >= 0 and clutter in [0, 1), got {jitter}, {clutter}")
    spans = [(0.0, 2 * math.pi)] * k if arcs is None else [tuple(a) for a in arcs]
    if len(spans) != k:
        raise InputError(f"need one arc per circle: {k} circles, {len(spans)} arcs")
    rng = np.random.default_rng(seed)
    pts = []
    for ci, ri, kp, (a0, sweep) in zip(c, r, keeps, spans, strict=True):
        side = int(2 * ri) + 8  # the whole ring drawn alone, to count its pixels
        whole = int(circle_image([(ri + 4, ri + 4)], [ri], (side, side))[0].sum())
        n = max(round(kp * whole * sweep / (2 * math.pi)), 3)
        phi = a0 + rng.uniform(0.0, sweep, n)
        pts.append(ci + ri * np.column_stack([np.cos(phi), np.sin(phi)]))
    xy = np.concatenate(pts)
    if jitter > 0:
        xy = xy + rng.normal(0.0, jitter, size=xy.shape)
    img = rasterize(xy, shape)
    n_out = round(clutter * int(img.sum()) / (1.0 - clutter))
    if n_out > 0:
        bg = np.flatnonzero(~img.ravel())
        img.flat[rng.choice(bg, size=min(n_out, bg.size), replace=False)] = True
    return img, [Circle(float(a), float(b), float(q), True) for (a, b), q in zip(c, r, strict=True)]


#: The kinds of sparse, jittered and cluttered point sets of :func:`circle_scene` (issue
#: 28): where RANSAC's fixed threshold or an edge-chain detector struggles.
SPARSE_KINDS = (
    "sparse 2 apart (15-30 % of pixels)",
    "sparse concentric 3 + 30-50 % clutter",
    "jitter 1.5-2.5 px, concentric 2",
    "jitter 2.5 px, apart 3",
    "apart 2 + 20-50 % clutter",
    "two sparse jittered arcs",
    "concentric 3 + 50 % clutter",
)


def _sparse_scene(kind: str, seed: int) -> tuple[np.ndarray, list[Circle]]:
    """The scenes of :data:`SPARSE_KINDS` (:func:`point_scene`; the clutter a share of the
    set pixels). Sparse rings keep 15-30 % of their pixels (the three concentric ones
    15-20 %), jitter is isotropic with sd
    1.5-2.5 px, arcs sweep 180-270 degrees."""
    rng = np.random.default_rng(seed)

    def mid(size: float, wobble: float = 3.0) -> float:
        return size / 2 + rng.uniform(-wobble, wobble)

    def sparse(n: int) -> list[float]:
        return [float(v) for v in rng.uniform(0.15, 0.30, n)]

    S, W = (160, 160), (180, 180)  # W: two circles apart
    if kind == "sparse 2 apart (15-30 % of pixels)":
        radii = [float(v) for v in rng.uniform(20, 45, 2)]
        centers, keep = _apart(rng, radii, W), sparse(2)
        return point_scene(centers, radii, W, keep=keep, seed=seed)
    if kind == "sparse concentric 3 + 30-50 % clutter":
        radii, f = _radii(rng, 3, 18, 118, 18), float(rng.uniform(0.3, 0.5))
        keep = [float(v) for v in rng.uniform(0.15, 0.2, 3)]
        return point_scene([(mid(256), mid(256))] * 3, radii, (256, 256), keep=keep,
                           clutter=f, seed=seed)  # fmt: skip
    if kind == "jitter 1.5-2.5 px, concentric 2":
        radii, jitter = _radii(rng, 2, 20, 72, 20), float(rng.uniform(1.5, 2.5))
        return point_scene([(mid(160), mid(160))] * 2, radii, S, jitter=jitter, seed=seed)
    if kind == "jitter 2.5 px, apart 3":
        radii = [float(v) for v in rng.uniform(18, 32, 3)]
        return point_scene(_apart(rng, radii, S, gap=10), radii, S, jitter=2.5, seed=seed)
    if kind == "apart 2 + 20-50 % clutter":
        radii = [float(v) for v in rng.uniform(22, 45, 2)]
        centers, f = _apart(rng, radii, W), float(rng.uniform(0.2, 0.5))
        return point_scene(centers, radii, W, clutter=f, seed=seed)
    if kind == "two sparse jittered arcs":
        radii = [float(v) for v in rng.uniform(25, 45, 2)]
        centers = _apart(rng, radii, W, gap=10)
        arcs = [(float(a), float(s)) for a, s in
                zip(rng.uniform(0, 2 * math.pi, 2), rng.uniform(math.pi, 1.5 * math.pi, 2),
                    strict=True)]  # fmt: skip
        return point_scene(centers, radii, W, keep=sparse(2), jitter=1.5, arcs=arcs,
                           seed=seed)  # fmt: skip
    S3 = (220, 220)
    radii = _radii(rng, 3, 18, 102, 20)
    return point_scene([(mid(220), mid(220))] * 3, radii, S3, clutter=0.5, seed=seed)
