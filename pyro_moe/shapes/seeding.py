"""Where to start a fit of many curves: sequential RANSAC with local minimal subsets.

Coordinate ascent from random or subset starts finds 24 coins hopelessly: a random minimal
subset of 3 edge points lies on one coin with probability about 1 / 24^2, and the fit
converges to circles through several coins (measured on ``skimage.data.coins``: 0 of 24).
The start below finds the curves one at a time (sequential RANSAC, Fischler & Bolles 1981;
Zuliani, Kenney & Manjunath 2005), and the mixture then refines them all jointly, so the
result is still the fixed point that the model defines, only reached from a better start.

For each curve, ``candidates`` minimal subsets of the form (n points for n features) are
drawn *locally* (Myatt et al. 2002, NAPSAC): an anchor point at random among the points not
yet explained, the other n - 1 at random among its k nearest neighbours, k cycling over
:data:`NEIGHBOURS` (so the scale follows the points' density, and a small curve among
many is drawn as often as a large one). Each subset is solved exactly, and scored by its
inliers (weighted by the share of :data:`ARCS` arcs about the curve's centre
that they cover, for circles and ellipses: a circle tangent to several coins has many
inliers on few arcs): the points within ``tau`` of the curve in the Sampson (first-order geometric)
distance

$$ d_i = \\frac{|f(p_i)|}{\\lVert\\nabla f(p_i)\\rVert}, \\qquad
   f(p) = t(p) - w^\\top \\phi(p), $$

where t and phi are the form's target and features (monomials of p). Candidates that are
not their kind of curve inside the picture (a circle of r^2 <= 0 or wider than the points'
extent; a conic that is not an ellipse) are dropped. The best one is refitted by least
squares on its inliers (twice, inliers recomputed each time), its inliers are removed,
and the next curve is drawn from what is left. ``tau`` is 2 x the median distance from a
point to its nearest neighbour (2 px on an edge map of 1-px spacing).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from .geometry import monomials

__all__ = ["NEIGHBOURS", "seed_curves"]

#: The sizes (nearest neighbours of the anchor) of the neighbourhoods the minimal subsets
#: are drawn from; larger than the point set: the whole set.
NEIGHBOURS = (16, 64, 256, 1024, 4096)
#: The arcs (equal angles about the centre) whose coverage weighs a candidate's inliers.
ARCS = 36

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


def _plausible(kind: str | None, W: np.ndarray, extent: float) -> np.ndarray:
    """(C,) True where a candidate's weights are a real curve of its kind in the picture."""
    if kind == "circle":  # w = (2 x0, 2 y0, r^2 - x0^2 - y0^2)
        r2 = W[:, 2] + 0.25 * (W[:, 0] ** 2 + W[:, 1] ** 2)
        return (r2 > 0) & (r2 <= extent**2)
    if kind == "conic":  # x^2 - B'xy - C'y^2 - ... = 0 is an ellipse iff B'^2 + 4 C' < 0
        return W[:, 0] ** 2 + 4.0 * W[:, 1] < 0
    return np.isfinite(W).all(-1)


def _centres(kind: str | None, W: np.ndarray) -> np.ndarray | None:
    """(C, 2) centres of circles or central conics; None for other kinds."""
    if kind == "circle":
        return 0.5 * W[:, :2]
    if kind == "conic":  # grad of x^2 - B'xy - C'y^2 - D'x - E'y = 0 at the centre
        B, Cc, D, E = W[:, 0], W[:, 1], W[:, 2], W[:, 3]
        det = -4.0 * Cc - B * B
        det = np.where(np.abs(det) > 1e-300, det, 1e-300)
        return np.column_stack([(-2.0 * Cc * D - B * E) / det, (2.0 * E + B * D) / det])
    return None


def _score(kind: str | None, W: np.ndarray, P: np.ndarray, inlier: np.ndarray) -> np.ndarray:
    """(C,) inliers x the share of the :data:`ARCS` arcs about the centre they cover
    (closed curves; the count alone for others). A circle through the rims of several
    coins collects many inliers, but only on a few short arcs."""
    count = inlier.sum(-1).astype(np.float64)
    centre = _centres(kind, W)
    if centre is None:
        return count
    ang = np.arctan2(P[None, :, 1] - centre[:, 1:2], P[None, :, 0] - centre[:, 0:1])
    arc = np.clip(((ang + np.pi) / (2 * np.pi) * ARCS).astype(np.int64), 0, ARCS - 1)
    flat = (np.arange(len(W))[:, None] * ARCS + arc)[inlier]
    covered = np.zeros(len(W) * ARCS, dtype=bool)
    covered[flat] = True
    return count * covered.reshape(len(W), ARCS).mean(-1)


def seed_curves(
    points: np.ndarray,
    experts: int,
    form: tuple[Sequence[str], str, Mapping[str, float]],
    kind: str | None,
    *,
    seed: int = 0,
    candidates: int = 256,
    tau: float | None = None,
) -> np.ndarray:
    """Labels (N,) of a sequential-RANSAC start: the curve 0..K-1 each point starts on, or
    -1 for a point no curve explains (module docstring). ``points`` (N, 2) in the units
    the fit uses; ``form`` = (features, response, offset) of the experts' shared form."""
    from scipy.spatial import cKDTree

    features, response, offset = form
    P = np.asarray(points, dtype=np.float64)
    N, n = len(P), len(features)
    labels = np.full(N, -1)
    if N < n + 2:
        return labels
    rng = np.random.default_rng(seed)
    m = monomials(P)
    phi, t = _columns(m, features, None), _target(m, response, offset, None)
    phx, tx = _columns(m, features, _DX), _target(m, response, offset, _DX)
    phy, ty = _columns(m, features, _DY), _target(m, response, offset, _DY)
    extent = float(np.linalg.norm(P.max(0) - P.min(0)))
    tree = cKDTree(P)
    if tau is None:
        nn = tree.query(P, k=2)[0][:, 1]
        tau = 2.0 * float(np.median(nn))
    hood = np.resize(np.array(NEIGHBOURS), candidates)

    def distance(W: np.ndarray, idx: np.ndarray) -> np.ndarray:
        f = t[idx] - W @ phi[idx].T
        gx = tx[idx] - W @ phx[idx].T
        gy = ty[idx] - W @ phy[idx].T
        return np.abs(f) / np.sqrt(gx * gx + gy * gy + 1e-300)

    def lsq(idx: np.ndarray) -> np.ndarray:
        w, *_ = np.linalg.lstsq(phi[idx], t[idx], rcond=None)
        return w[None]

    for k in range(experts):
        left = np.flatnonzero(labels < 0)
        if len(left) < n + 2:
            break
        anchors = rng.integers(len(left), size=candidates)
        picks = np.empty((candidates, n), dtype=np.int64)
        picks[:, 0] = anchors
        sub = cKDTree(P[left])
        for size in np.unique(hood):  # one k-nearest query per neighbourhood size
            rows = np.flatnonzero(hood == size)
            m = int(min(size, len(left)))
            # n - 1 distinct draws among the m nearest (the anchor itself excluded): the
            # smallest n - 1 of m - 1 random keys
            keys = rng.random((len(rows), m - 1)).argsort(-1)[:, : n - 1] + 1
            if m >= len(left):  # the whole set: no tree query
                order = np.argsort(np.linalg.norm(P[left][None] - P[left[anchors[rows]]][:, None],
                                                  axis=-1), -1)  # fmt: skip
            else:
                order = sub.query(P[left[anchors[rows]]], k=m)[1]
            picks[rows, 1:] = np.take_along_axis(order, keys, -1)
        idx = left[picks]
        A, b = phi[idx], t[idx]
        ok = np.abs(np.linalg.det(A)) > 1e-12
        W = np.zeros((candidates, n))
        W[ok] = np.linalg.solve(A[ok], b[ok][..., None])[..., 0]
        ok &= _plausible(kind, W, extent)
        if not ok.any():
            break
        score = _score(kind, W[ok], P[left], distance(W[ok], left) <= tau)
        w = W[ok][int(score.argmax())][None]
        for _ in range(2):  # least squares on the inliers, inliers again
            inl = left[distance(w, left)[0] <= tau]
            if len(inl) < n + 2:
                break
            w_new = lsq(inl)
            if not _plausible(kind, w_new, extent)[0]:
                break
            w = w_new
        inl = left[distance(w, left)[0] <= tau]
        if len(inl) < n + 2:
            break
        labels[inl] = k
    return labels
