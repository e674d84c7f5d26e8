"""Where to start a fit of many curves: sequential RANSAC with local minimal subsets.

Coordinate ascent from random or subset starts finds 24 coins hopelessly: a random minimal
subset of 3 edge points lies on one coin with probability about 1 / 24^2, and the fit
converges to circles through several coins (measured on ``skimage.data.coins``: 0 of 24).
The start below finds the curves one at a time (sequential RANSAC, Fischler & Bolles 1981;
Zuliani, Kenney & Manjunath 2005), and the mixture then refines them all jointly, so the
result is still the fixed point that the model defines, only reached from a better start.

For each curve, ``candidates`` (:func:`default_candidates`) minimal subsets of the form
(n points for n features) are drawn *locally* (Myatt et al. 2002, NAPSAC): an anchor point
at random among the points not yet explained, the other n - 1 at random among its k nearest
neighbours, k cycling over :data:`NEIGHBOURS` (so the scale follows the points' density,
and a small curve among many is drawn as often as a large one; the sizes that reach every
point left are one neighbourhood, drawn from once, so a small point set draws fewer
subsets: 154 of 256 for 108 points). Each subset is solved
exactly, refitted by least squares on its inliers in shrinking bands (:data:`LOCAL_BANDS`,
LO-RANSAC; and in a narrow band, :data:`NARROW_BANDS`, which keeps small curves; the better
scoring of the two), and scored by its inliers beyond
chance (those that points spread evenly over the picture would put in its band, counted at
the narrower band of :data:`SCALES` where it stands out most) times the share of the arcs
about the curve's centre that they cover (circles and ellipses, :func:`_score`: a circle
tangent to several coins has many inliers on few arcs; a large circle through clutter
holds only its chance count). The inliers are the points within ``tau`` of the curve in
the Sampson (first-order geometric) distance

$$ d_i = \\frac{|f(p_i)|}{\\lVert\\nabla f(p_i)\\rVert}, \\qquad
   f(p) = t(p) - w^\\top \\phi(p), $$

where t and phi are the form's target and features (monomials of p). Candidates that are
not their kind of curve inside the picture (:func:`plausible`: a circle of r^2 <= 0 or wider
than the points' extent; a conic that is not a real ellipse of axis ratio at least
:data:`MIN_AXIS_RATIO` centred in the points' box) are dropped. The best one is refitted by
least squares on its inliers (twice, inliers recomputed each time), its inliers are removed,
and the next curve is drawn from what is left. ``tau`` is 2 x the median distance from a
point to its nearest neighbour (2 px on an edge map of 1-px spacing).

The candidates are refitted in the order drawn, :data:`FIRST_BATCH` first, and the rest
only while RANSAC's stopping rule asks for them: with a share q of the points left within
``tau`` of the best curve so far, D subsets drawn all missed its inliers with probability
(1 - q^n)^D, and the draw stops once that is below 1 - :data:`STOP_PROBABILITY` (for
global subsets; local ones hit more often, so the rule is conservative). Candidates ranked
by a raw score first (more than :data:`LOCAL_TOP`: a conic's) are all refitted. Measured on
the sparse scene set (``benchmarks/scenes.py --set sparse``, seeds 0-66, 469 scenes): the
same scenes solved (464 with K given, 464 with auto, the right K on all 469) with the same
K, the median CPU per image 35.8 -> 32.2 ms with K given and 48.5 -> 43.8 ms with auto;
the seeding alone on "sparse 2 apart" 5.4 -> 4.2 ms and on "jitter 1.5-2.5 px, concentric
2" 24.5 -> 11.8 ms (medians of six seeds); the 43 clean scenes and the study's eye the
same circles.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Mapping, Sequence

import numpy as np

from .geometry import monomials

__all__ = [
    "ARCS",
    "MAX_ARCS",
    "MIN_AXIS_RATIO",
    "MIN_COVERAGE",
    "NEIGHBOURS",
    "SCALES",
    "coverage",
    "default_candidates",
    "plausible",
    "point_box",
    "sampson_distance",
    "seed_curves",
    "sequential_curves",
]

#: The sizes (nearest neighbours of the anchor) of the neighbourhoods the minimal subsets
#: are drawn from; larger than the point set: the whole set.
NEIGHBOURS = (16, 64, 256, 1024, 4096)
#: The fewest arcs (equal angles about the centre) a closed curve's coverage is counted on
#: (:func:`_arc_counts`: arcs one band width long, at least these many). It was 36: a small
#: sparse ring (r = 19.7 px, 20 % of its pixels, tau 7.2 px) was cut into 36 arcs of 3.4 px,
#: shorter than the spacing of its points, and covered half of them, so a circle through
#: clutter outscored it and the plausibility rule (:data:`MIN_COVERAGE`) nearly refused it
#: ("sparse concentric 3 + 30-50 % clutter", seed 56: the ring lost, 18.8 px off).
ARCS = 8

# d monomial / dx and d monomial / dy, as (monomial coefficient) pairs
_DX = {"xx": (2.0, "x"), "xy": (1.0, "y"), "yy": (0.0, "1"), "x": (1.0, "1"), "y": (0.0, "1")}
_DY = {"xx": (0.0, "1"), "xy": (1.0, "x"), "yy": (2.0, "y"), "x": (0.0, "1"), "y": (1.0, "1")}


def _columns(m: Mapping[str, np.ndarray], names: Sequence[str], d: dict | None) -> np.ndarray:
    """The monomials ``names`` (or their derivative by ``d``) as columns (N, len(names))."""
    if d is None:
        return np.column_stack([m[c] for c in names])
    zero = np.zeros_like(m["1"])
    return np.column_stack([zero if c == "1" else d[c][0] * m[d[c][1]] for c in names])


def _target(m, response: str, offset: Mapping[str, float], d: dict | None) -> np.ndarray:
    cols = _columns(m, [response, *offset], d)
    return cols @ np.array([1.0, *offset.values()])


#: The least minor / major semi-axis ratio of a plausible ellipse: a round rim seen up to
#: arccos(1/4) = 75.5 degrees from its normal. Below it, the algebraic target cannot tell an
#: ellipse from the double line it degenerates into (:func:`plausible`).
MIN_AXIS_RATIO = 0.25


def plausible(kind: str | None, W: np.ndarray, extent: float, box=None) -> np.ndarray:
    """(C,) True where a candidate's weights W (C, n) are a real curve of its kind in the
    picture (``extent``: the diagonal of the points' box; ``box``: its corners ((x, y) lo,
    (x, y) hi), or None).

    A circle, w = (2 x0, 2 y0, r^2 - x0^2 - y0^2): r^2 > 0 and r <= extent. A conic,
    x^2 = B'xy + C'y^2 + D'x + E'y + F', i.e. f(p) = p^T Q p + ... = 0 with
    Q = [[1, -B'/2], [-B'/2, -C']]: an ellipse (Q positive definite, B'^2 + 4 C' < 0), real
    (f(c) < 0 at its centre c), with semi-axes a >= b, a^2 = -f(c) / lambda_min(Q),
    b / a = sqrt(lambda_min / lambda_max) >= :data:`MIN_AXIS_RATIO`, a <= extent, and its
    centre inside ``box``. Why the ratio: the noise of the target x^2 about a conic is
    |grad f| times the distance in pixels, and on an ellipse |grad f| spans the factor a / b;
    as b / a -> 0 the ellipse becomes the double line (x - a y - c)^2 = 0, which fits any
    straight edge to second order (|grad f| = 0 on it), so a straight table edge "explains"
    its points far better than any rim (measured on ``skimage.data.coffee``: the search
    moved from the rims, F = -5363, to thin ellipses and hyperbolas along the table's
    edges, F = -1737).
    """
    a, b = _semi_axes(kind, W)
    if a is None:
        return np.isfinite(W).all(-1)
    with np.errstate(invalid="ignore"):
        ok = (b > 0) & (a <= extent)
        if kind == "conic":
            ok &= b >= MIN_AXIS_RATIO * a
    if kind == "conic" and box is not None:
        c = _centres(kind, W)
        lo, hi = np.asarray(box[0]), np.asarray(box[1])
        ok &= (c >= lo).all(-1) & (c <= hi).all(-1)
    return ok


def _semi_axes(kind: str | None, W: np.ndarray) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(a, b) (C,) each: the semi-axes a >= b of circles (a = b = r) and ellipses (see
    :func:`plausible`), NaN where a candidate is not a real one; (None, None) for other
    kinds."""
    if kind == "circle":
        r2 = W[:, 2] + 0.25 * (W[:, 0] ** 2 + W[:, 1] ** 2)
        r = np.sqrt(np.where(r2 > 0, r2, np.nan))
        return r, r
    if kind != "conic":
        return None, None
    B, Cc = W[:, 0], W[:, 1]
    centre = _centres(kind, W)
    x, y = centre[:, 0], centre[:, 1]
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        f_c = x * x - B * x * y - Cc * y * y - W[:, 2] * x - W[:, 3] * y - W[:, 4]
        half = np.sqrt(0.25 * (1.0 + Cc) ** 2 + 0.25 * B**2)  # eigenvalues of Q: m +- half
        lam_min, lam_max = 0.5 * (1.0 - Cc) - half, 0.5 * (1.0 - Cc) + half
        real = (lam_min > 0) & (f_c < 0)
        a = np.sqrt(np.where(real, -f_c / lam_min, np.nan))
        b = np.sqrt(np.where(real, -f_c / lam_max, np.nan))
    return a, b


def _centres(kind: str | None, W: np.ndarray) -> np.ndarray | None:
    """(C, 2) centres of circles or central conics; None for other kinds."""
    if kind == "circle":
        return 0.5 * W[:, :2]
    if kind == "conic":  # grad of x^2 - B'xy - C'y^2 - D'x - E'y = 0 at the centre
        B, Cc, D, E = W[:, 0], W[:, 1], W[:, 2], W[:, 3]
        det = -4.0 * Cc - B * B
        det = np.where(np.abs(det) > 1e-300, det, 1e-300)
        return np.column_stack([(B * E - 2.0 * Cc * D) / det, (2.0 * E + B * D) / det])
    return None


#: The most arcs a candidate's coverage is counted on (see :func:`_score`).
MAX_ARCS = 1024


def _perimeters(kind: str | None, W: np.ndarray) -> np.ndarray:
    """(C,) the perimeters of closed curves (Ramanujan's, for an ellipse; 2 pi r for a
    circle), NaN where a candidate is not a real one."""
    a, b = _semi_axes(kind, W)
    with np.errstate(invalid="ignore"):
        return np.pi * (3.0 * (a + b) - np.sqrt((3.0 * a + b) * (a + 3.0 * b)))


def point_box(P: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The corners ((x, y) lo, (x, y) hi) of points P (N, 2), one column at a time (numpy
    reduces an (N, 2) array over its rows several times slower; min and max are exact)."""
    x, y = P[:, 0], P[:, 1]
    return np.array([x.min(), y.min()]), np.array([x.max(), y.max()])


def _arc_counts(
    kind: str | None, W: np.ndarray, tau: float, L: np.ndarray | None = None
) -> np.ndarray:
    """(C,) arcs of a closed curve: L / (2 tau) for a perimeter L (:func:`_perimeters`,
    unless given), arcs one band width long, at least :data:`ARCS` and at most
    :data:`MAX_ARCS`."""
    arcs = (_perimeters(kind, W) if L is None else L) / (2.0 * tau)
    # NaN (no real curve) -> ARCS: np.where, several times faster than np.nan_to_num
    return np.clip(np.where(np.isnan(arcs), ARCS, arcs), ARCS, MAX_ARCS).astype(np.int64)


def _covered(
    kind: str | None,
    W: np.ndarray,
    P: np.ndarray,
    inlier: np.ndarray,
    tau: float,
    L: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(covered (C, A) booleans, arcs (C,)): which of each closed curve's arcs (equal
    angles about its centre, :func:`_arc_counts`; ``L``: the perimeters, when known) hold
    one of its inliers; A = the most arcs of any of them (at most :data:`MAX_ARCS`)."""
    centre = _centres(kind, W)
    arcs = _arc_counts(kind, W, tau, L)
    width = int(arcs.max()) if len(arcs) else 1
    # the angles of the inliers only, the same values as over all (C, N) pairs (measured,
    # the sequential draw of 4 curves on "jitter 1.5-2.5 px, concentric 2" and "apart 2 +
    # 20-50 % clutter", seeds 3-14: 11-16 % less CPU, the same labels; "sparse 2 apart",
    # about 100 points, unchanged)
    c, i = np.nonzero(inlier)
    ang = np.arctan2(P[i, 1] - centre[c, 1], P[i, 0] - centre[c, 0])
    arc = np.minimum(((ang + np.pi) / (2 * np.pi) * arcs[c]).astype(np.int64), arcs[c] - 1)
    flat = c * width + arc
    covered = np.zeros(len(W) * width, dtype=bool)
    covered[flat] = True
    return covered.reshape(len(W), width), arcs


#: The bands (x tau) at which a candidate's inliers beyond chance are counted
#: (:func:`_score`): tau follows the spacing of the points, which on sparse rings is their
#: spacing along the curve, not their spread across it.
SCALES = (1.0, 0.5, 0.25)
#: The power of the band's width that a count beyond chance at band c tau is divided by
#: (:func:`_score`): 1/2 ranks an excess as its significance, so the same excess in a
#: narrower band counts more.
BAND_POWER = 0.5


def _score(
    kind: str | None,
    W: np.ndarray,
    P: np.ndarray,
    dist: np.ndarray,
    tau: float,
    density: float = 0.0,
) -> np.ndarray:
    """(C,) inliers beyond chance x the share of the arcs about the centre that they cover
    (closed curves; the inliers within ``tau`` alone for others), from the distances
    ``dist`` (C, N) of the points P to the curves W:

    $$ s = \\max_{c \\in \\text{SCALES}} \\frac{\\max(n_{c\\tau} - \\rho \\, 2 c \\tau L, 0)}
       {c^{1/2}} \\; \\frac{\\text{arcs covered}}{\\text{arcs}}, $$

    with $n_{c\\tau}$ the points within $c\\tau$ of the curve, L its perimeter
    (:func:`_perimeters`) and ``density`` rho the points per unit area of the picture, so
    rho 2 c tau L is the count that points spread evenly would put in the curve's band (an
    a-contrario count, as EDCircles' number of false alarms), each curve counted at the band
    (:data:`SCALES`) where it stands out most, an excess in the band c tau divided by
    c^(1/2) (:data:`BAND_POWER`; the excess over its Poisson sd, the chance count being
    proportional to c): a circle between two close sparse rings, tangent to one and inside
    the other, held as many points in the wide band as the outer ring (41 against 39 on
    "sparse concentric 3 + 30-50 % clutter", seed 46, rings 19.6 px apart, tau 7.2 px) but
    spread across it, where the ring's lie on it and count in every band; divided, the ring
    wins. A circle through the rims of several coins
    collects many inliers, but only on a few short arcs. A curve of perimeter L is cut into
    L / (2 tau) equal angles (at least :data:`ARCS`, at most :data:`MAX_ARCS`): arcs one
    band width long, so a large ellipse that crosses many edges of the clutter, touching
    each of 36 wide arcs somewhere, covers only the short stretches where it runs along
    them, while a real curve, traced all round, covers nearly all. On sparse rings (15 % of
    a ring's pixels) tau follows the spacing along the rings and the band 2 tau is wide:
    a large circle through uniform clutter held as many points as a small ring, and a
    circle between two close rings, in the band of each on opposite sides, more than
    either; less the chance count and at the narrower bands neither does (measured on
    three sparse concentric rings in 50 % clutter, :func:`seed_curves`)."""
    inlier = dist <= tau
    count = inlier.sum(-1).astype(np.float64)
    if _centres(kind, W) is None:
        return count
    L = _perimeters(kind, W)  # NaN where a candidate is no real curve
    if density > 0:
        L0 = np.where(np.isnan(L), 0.0, L)
        count = np.max(
            [((dist <= c * tau).sum(-1) - density * 2.0 * c * tau * L0) / c**BAND_POWER
             for c in SCALES], axis=0,
        ).clip(min=0.0)  # fmt: skip
    covered, arcs = _covered(kind, W, P, inlier, tau, L)
    return count * covered.sum(-1) / arcs


#: The least share of the visible arcs of its curve that an expert's points must cover
#: (:func:`coverage`) for the curve to be one that the picture shows.
MIN_COVERAGE = 0.5


def coverage(
    points: np.ndarray,
    W: np.ndarray,
    form: tuple[Sequence[str], str, Mapping[str, float]],
    kind: str | None,
    tau: float | None = None,
) -> np.ndarray:
    """(C,) the share of each closed curve's *visible* arcs (those whose midpoint lies in
    the points' box, widened by ``tau``) that hold a point within ``tau`` of it (Sampson
    distance; None: 2 x the median nearest-neighbour spacing, as the seed's). 1 for other
    kinds. The arcs are those of :func:`_score`, about one band width long, so a circle
    through an iris's texture, which only crosses its fibres, covers a small share, and a
    ring cut by the frame is judged on the part inside it."""
    P = np.asarray(points, dtype=np.float64)
    W = np.atleast_2d(np.asarray(W, dtype=np.float64))
    centre = _centres(kind, W)
    if centre is None:
        return np.ones(len(W))
    if tau is None:
        from scipy.spatial import cKDTree

        tau = 2.0 * float(np.median(cKDTree(P).query(P, k=2)[0][:, 1]))
    inlier = sampson_distance(W, P, form) <= tau
    covered, arcs = _covered(kind, W, P, inlier, tau)
    j = np.arange(covered.shape[1])[None, :]
    theta = (j + 0.5) / arcs[:, None] * 2.0 * np.pi - np.pi
    u = np.stack([np.cos(theta), np.sin(theta)], -1)  # (C, MAX_ARCS, 2)
    if kind == "circle":
        rho = _semi_axes(kind, W)[0][:, None]
    else:  # rho^2 u^T Q u = -f(c), Q = [[1, -B'/2], [-B'/2, -C']]
        B, Cc = W[:, 0:1], W[:, 1:2]
        quad = u[..., 0] ** 2 - B * u[..., 0] * u[..., 1] - Cc * u[..., 1] ** 2
        x, y = centre[:, 0], centre[:, 1]
        f_c = x * x - W[:, 0] * x * y - W[:, 1] * y * y - W[:, 2] * x - W[:, 3] * y - W[:, 4]
        with np.errstate(invalid="ignore", divide="ignore"):
            rho = np.sqrt(-f_c[:, None] / quad)
    mid = centre[:, None, :] + rho[..., None] * u
    lo, hi = point_box(P)
    lo, hi = lo - tau, hi + tau
    seen = (mid >= lo).all(-1) & (mid <= hi).all(-1) & (j < arcs[:, None])
    n_seen = seen.sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        share = (covered & seen).sum(-1) / n_seen
    return np.where(n_seen > 0, share, 0.0)


def sampson_distance(
    W: np.ndarray, P: np.ndarray, form: tuple[Sequence[str], str, Mapping[str, float]]
) -> np.ndarray:
    """(C, N) Sampson distances |f(p_i)| / ||grad f(p_i)|| of the points P (N, 2) to the
    curves W (C, n) of a form (module docstring)."""
    features, response, offset = form
    m = monomials(P)
    f = _target(m, response, offset, None) - W @ _columns(m, features, None).T
    gx = _target(m, response, offset, _DX) - W @ _columns(m, features, _DX).T
    gy = _target(m, response, offset, _DY) - W @ _columns(m, features, _DY).T
    return np.abs(f) / np.sqrt(gx * gx + gy * gy + 1e-300)


def default_candidates(n: int) -> int:
    """Minimal subsets drawn per curve for a form of n features: 256 x 8^(n - 3) (256 for a
    circle, 16384 for a conic). A subset is good when all n points lie on one curve, which
    grows rarer about geometrically in n. Measured on ``skimage.data.coffee`` (K = 3
    conics; both rims within 4 px, on the photo, the photo scaled by 0.75 and by 0.5, and
    cropped by 100 columns): 4096 subsets solved 1 of those 4, 8192 2, 16384 3 (the crop's
    outer rim stays 10 px off), at about 20 s a fit against 5 s (2 noisy cores); the
    mirrored photo is solved by 4096 and by 16384."""
    return 256 * 8 ** max(n - 3, 0)


#: Elements of the largest (candidates, points) array the seed makes at once: the
#: candidates are scored in chunks of CHUNK // points (32 MB of float64 per array).
CHUNK = 1 << 22


#: The candidates of the best raw scores that are refitted (:data:`LOCAL_BANDS`) before
#: the best is chosen.
LOCAL_TOP = 512


#: The bands (x tau) of the least-squares refits of every candidate on its own inliers
#: before it is scored (LO-RANSAC, Chum, Matas & Kittler 2003, with a shrinking threshold):
#: a minimal subset on a short arc gives a curve that only touches the rest of its curve;
#: refitted on the points of a wide band it moves onto it.
LOCAL_BANDS = (4.0, 2.0, 1.0)
#: The bands (x tau) of the second, narrow chain of refits (see :func:`seed_curves`).
NARROW_BANDS = (1.0,)


#: The candidates of a curve refitted first (in the order drawn), before RANSAC's stopping
#: rule (:data:`STOP_PROBABILITY`) decides whether the rest are needed.
FIRST_BATCH = 64
#: The probability with which the candidates refitted must have held one subset of the
#: best curve's inliers for the draw to stop early (RANSAC's usual 0.99; 1: never).
STOP_PROBABILITY = 0.99


def _batches(total: int, first: int, step: int):
    """(lo, hi) bounds over range(total): the first ``first``, then ``step`` at a time."""
    lo = 0
    size = first
    while lo < total:
        hi = min(lo + size, total)
        yield lo, hi
        lo, size = hi, step


def _inlier_lsq(phi: np.ndarray, t: np.ndarray, inlier: np.ndarray) -> np.ndarray:
    """(C, n): for each candidate c, the least-squares w of t ~ phi w on its inliers
    (``inlier`` (C, N)): (phi^T D_c phi) w = phi^T D_c t, all candidates at once; NaN where
    the system is singular."""
    N, n = phi.shape
    D = inlier.astype(np.float64)
    G = (D @ (phi[:, :, None] * phi[:, None, :]).reshape(N, n * n)).reshape(-1, n, n)
    h = D @ (phi * t[:, None])
    out = np.full((len(D), n), np.nan)
    # G is symmetric positive semi-definite: its condition number is the ratio of its
    # extreme eigenvalues (eigvalsh, a third of np.linalg.cond's SVD time: measured 16 of
    # 33 ms of a sparse scene's seeding went to the SVD). It is at most tr(G)^n / det(G)
    # (lambda_max <= tr, lambda_min >= det / tr^(n - 1)), a fifth of eigvalsh's time: the
    # rows that bound clears are well conditioned, eigvalsh decides the rest
    tr, det = np.trace(G, axis1=1, axis2=2), np.linalg.det(G)
    good = (det > 0) & (tr**n < 1e12 * det)
    if not good.all():
        rest = ~good
        ev = np.abs(np.linalg.eigvalsh(G[rest]))
        good[rest] = ev[:, -1] < 1e12 * ev[:, 0]
    if good.any():
        out[good] = np.linalg.solve(G[good], h[good][..., None])[..., 0]
    return out


def _distances(P: np.ndarray, A: np.ndarray) -> np.ndarray:
    """(len(A), len(P)): |p - a| for every anchor a (rows) and point p, as
    np.linalg.norm(P[None] - A[:, None], axis=-1) computes it (sqrt(dx^2 + dy^2), the same
    bits) without its (len(A), len(P), 2) temporaries (measured on skimage.data.coffee's
    3416 points left by its two rims: 0.84 s of the first conic's 2.5 s draw went to them)."""
    d = np.subtract.outer(A[:, 0], P[:, 0])
    np.multiply(d, d, out=d)
    dy = np.subtract.outer(A[:, 1], P[:, 1])
    np.multiply(dy, dy, out=dy)
    d += dy
    return np.sqrt(d, out=d)


def _first_of_equal_rows(W: np.ndarray) -> np.ndarray:
    """The indices (ascending) of the first of each set of equal rows of W (a stable
    lexicographic sort, equal neighbours dropped; np.unique(axis=0) took 5 times as long
    on 256 rows)."""
    order = np.lexsort(W.T[::-1])
    ranked = W[order]
    first = np.ones(len(W), dtype=bool)
    first[1:] = (ranked[1:] != ranked[:-1]).any(1)
    return np.sort(order[first])


def seed_curves(
    points: np.ndarray,
    experts: int,
    form: tuple[Sequence[str], str, Mapping[str, float]],
    kind: str | None,
    *,
    seed: int = 0,
    candidates: int | None = None,
    tau: float | None = None,
) -> np.ndarray:
    """Labels (N,) of a sequential-RANSAC start: the curve 0..K-1 each point starts on, or
    -1 for a point no curve explains (module docstring). ``points`` (N, 2) in the units
    the fit uses; ``form`` = (features, response, offset) of the experts' shared form.
    ``candidates`` per curve (None: :func:`default_candidates`). The first K curves of
    K + 1 are those of K (:func:`sequential_curves`, whose labels after K curves these
    are)."""
    steps = sequential_curves(points, form, kind, seed=seed, candidates=candidates, tau=tau)
    drawn = list(itertools.islice(steps, max(experts, 0)))
    return drawn[-1] if drawn else np.full(len(points), -1)


def sequential_curves(
    points: np.ndarray,
    form: tuple[Sequence[str], str, Mapping[str, float]],
    kind: str | None,
    *,
    seed: int = 0,
    candidates: int | None = None,
    tau: float | None = None,
) -> Iterator[np.ndarray]:
    """The labels (N,) after each curve of :func:`seed_curves`' sequential draw, one
    curve more each (a new array each time; it ends when no further curve is found): one
    draw serves every K (``--experts auto`` takes K = 1, 2, ... from it, and K + 1 costs
    one curve more, not K + 1)."""
    from scipy.spatial import cKDTree

    features, response, offset = form
    P = np.asarray(points, dtype=np.float64)
    N, n = len(P), len(features)
    labels = np.full(N, -1)
    if N < n + 2:
        return
    if candidates is None:
        candidates = default_candidates(n)
    rng = np.random.default_rng(seed)
    m = monomials(P)
    phi, t = _columns(m, features, None), _target(m, response, offset, None)
    phx, tx = _columns(m, features, _DX), _target(m, response, offset, _DX)
    phy, ty = _columns(m, features, _DY), _target(m, response, offset, _DY)
    box = point_box(P)
    extent = float(np.linalg.norm(box[1] - box[0]))
    area = max(float(np.prod(box[1] - box[0])), 1e-300)
    tree = cKDTree(P)
    if tau is None:
        nn = tree.query(P, k=2)[0][:, 1]
        tau = 2.0 * float(np.median(nn))
    hood = np.resize(np.array(NEIGHBOURS), candidates)

    def distance(W: np.ndarray, idx: np.ndarray) -> np.ndarray:
        # |f| / sqrt(gx^2 + gy^2 + 1e-300), f = t - W phi^T (and its x, y derivatives),
        # in place: three (C, |idx|) arrays instead of ten (half of the seeding's time on
        # a photo's edge points went to the temporaries)
        # take: the rows of a narrow array (numpy 2.4's phi[idx] is several times slower)
        f = W @ phi.take(idx, axis=0).T
        np.subtract(t[idx], f, out=f)
        np.abs(f, out=f)
        gx = W @ phx.take(idx, axis=0).T
        np.subtract(tx[idx], gx, out=gx)
        np.square(gx, out=gx)
        gy = W @ phy.take(idx, axis=0).T
        np.subtract(ty[idx], gy, out=gy)
        np.square(gy, out=gy)
        gx += gy
        gx += 1e-300
        np.sqrt(gx, out=gx)
        f /= gx
        return f

    def enough(w: np.ndarray, drawn: int) -> bool:
        # RANSAC's stopping rule (Fischler & Bolles 1981): with a share q of the points
        # left within tau of the best curve, `drawn` subsets all missed its inliers with
        # probability (1 - q^n)^drawn; stop once that is below 1 - STOP_PROBABILITY
        if STOP_PROBABILITY >= 1.0:  # the rule off: every candidate is refitted
            return False
        q = float((distance(w, left)[0] <= tau).sum()) / len(left)
        return q >= 1.0 or drawn * math.log1p(-(q**n)) <= math.log1p(-STOP_PROBABILITY)

    def lsq(idx: np.ndarray) -> np.ndarray:
        w, *_ = np.linalg.lstsq(phi.take(idx, axis=0), t[idx], rcond=None)
        return w[None]

    for k in itertools.count():
        left = np.flatnonzero(labels < 0)
        if len(left) < n + 2:
            break
        # the neighbourhood sizes that reach every point left are one neighbourhood: its
        # candidates are drawn once, not once per size (measured on "sparse 2 apart",
        # 108 points: 154 candidates instead of 256, the same scenes solved; see
        # benchmarks/results/scenes_sparse_seeds3-14.md)
        whole = np.array(NEIGHBOURS)[np.array(NEIGHBOURS) >= len(left)]
        hood_k = hood[(hood < len(left)) | (hood == (whole.min() if len(whole) else 0))]
        C = len(hood_k)
        anchors = rng.integers(len(left), size=C)
        picks = np.empty((C, n), dtype=np.int64)
        picks[:, 0] = anchors
        P_left = P.take(left, axis=0)  # the points left, gathered once per curve
        phi_left = phi.take(left, axis=0)
        sub = cKDTree(P_left)
        for size in np.unique(hood_k):  # one k-nearest query per neighbourhood size
            rows = np.flatnonzero(hood_k == size)
            m = int(min(size, len(left)))
            # n - 1 distinct draws among the m nearest (the anchor itself excluded): the
            # smallest n - 1 of m - 1 random keys (argpartition: their order does not
            # matter, and a full argsort of (candidates, m - 1) keys was a tenth of the draw)
            draw = rng.random((len(rows), m - 1))
            keys = np.argpartition(draw, min(n - 1, m - 1) - 1, axis=-1)[:, : n - 1] + 1
            if m >= len(left):  # the whole set: no tree query
                order = np.argsort(_distances(P_left, P_left.take(anchors[rows], axis=0)), -1)
            else:
                order = sub.query(P_left.take(anchors[rows], axis=0), k=m)[1]
            picks[rows, 1:] = np.take_along_axis(order, keys, -1)
        idx = left[picks]
        A, b = phi.take(idx, axis=0), t[idx]
        ok = np.abs(np.linalg.det(A)) > 1e-12
        W = np.zeros((C, n))
        W[ok] = np.linalg.solve(A[ok], b[ok][..., None])[..., 0]
        ok &= plausible(kind, W, extent, box)
        if not ok.any():
            break
        Wok = W[ok]
        step = max(1, CHUNK // len(left))  # candidates at once: (step, |left|) arrays
        rho = len(left) / area  # the points left, per unit area of the picture
        top = Wok  # every candidate is refitted: no need to rank them first
        if len(Wok) > LOCAL_TOP:
            raw = np.concatenate([
                _score(kind, Wok[lo : lo + step], P_left, distance(Wok[lo : lo + step], left),
                       tau, rho)
                for lo in range(0, len(Wok), step)
            ])  # fmt: skip
            top = Wok[np.argsort(-raw, kind="stable")[:LOCAL_TOP]]
        best, w = -np.inf, None
        # unranked candidates (in the order drawn) are refitted a first batch at a time,
        # then the rest, until the best curve's inliers make more draws needless (enough)
        first = min(step, FIRST_BATCH) if top is Wok else step
        for lo, hi in _batches(len(top), first, step):
            if w is not None and top is Wok and enough(w, lo):
                break
            W0 = top[lo:hi]
            # two LO-RANSAC chains from each minimal subset's curve, each stage a least
            # squares refit on the inliers within its band: the wide one (LOCAL_BANDS)
            # moves a curve drawn from a short arc onto the rest of it; the narrow one
            # (NARROW_BANDS) keeps a small curve, which a band wider than it (4 tau about a
            # sparse ring of r = 2 tau) refits onto the clutter around it
            d0 = distance(W0, left)  # both chains start from it
            for bands in (LOCAL_BANDS, NARROW_BANDS):
                Wc, d = W0, d0
                for wide in bands:
                    inl = d <= wide * tau
                    Wn = _inlier_lsq(phi_left, t[left], inl)
                    keep = (inl.sum(-1) >= n + 2) & np.isfinite(Wn).all(-1)
                    keep &= plausible(kind, np.where(keep[:, None], Wn, Wc), extent, box)
                    Wc = np.where(keep[:, None], Wn, Wc)
                    # candidates refitted on the same inliers are one curve from here on:
                    # each is refitted and scored once (the first of them kept, so the best
                    # is the one it was; measured on "sparse 2 apart" seed 0, 108 points:
                    # the first curve's 229 candidates were 131 curves after the wide
                    # chain's first band, 101 after its third; the second's 250 were 26, 1)
                    Wc = Wc[_first_of_equal_rows(Wc)]
                    d = distance(Wc, left)  # for the next band, or the score
                score = _score(kind, Wc, P_left, d, tau, rho)
                if float(score.max()) > best:
                    best, w = float(score.max()), Wc[int(score.argmax())][None]
        for _ in range(2):  # least squares on the inliers, inliers again
            inl = left[distance(w, left)[0] <= tau]
            if len(inl) < n + 2:
                break
            w_new = lsq(inl)
            if not plausible(kind, w_new, extent, box)[0]:
                break
            w = w_new
        inl = left[distance(w, left)[0] <= tau]
        if len(inl) < n + 2:
            break
        labels = labels.copy()
        labels[inl] = k
        yield labels
