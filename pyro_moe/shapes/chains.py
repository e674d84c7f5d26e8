"""Edge chains → arcs → candidate curves: the front end of a curve fit on edge pixels.

What EDCircles (Akinlar & Topal 2013) and AAMED (Meng et al. 2020) do before any curve is
fitted, written with numpy, scipy and scikit-image (no Pyro):

1. **Chains** (:func:`edge_chains`): the edge pixels are thinned to one pixel
   (:func:`skimage.morphology.skeletonize`), pixels with more than two 8-neighbours
   (junctions, where clutter branches) are removed, and each connected run of the rest is
   ordered by a depth-first walk from one of its ends (:func:`scipy.sparse.csgraph.
   depth_first_order`), a closed loop from any of its pixels.
2. **Arcs** (:func:`chain_arcs`): a chain is cut where it turns by more than
   :data:`MAX_TURN` within :data:`CORNER_SPAN` pixels (a corner) and where its curvature
   changes sign (an inflection: a curve's arc bends one way), the curvature read from the
   tangent's direction over :data:`TANGENT_SPAN` pixels either side, and only taken as
   signed where \\|kappa\\| > :data:`MIN_CURVATURE` (below it an arc is as good as straight,
   and raster noise decides the sign). Arcs shorter than :data:`MIN_ARC` pixels are
   dropped.
3. **Curves** (:func:`chain_curves`): each arc gets an algebraic fit of its kind (a
   circle: Kasa's least squares of x^2 + y^2 on [x, y, 1]; a conic: the fit's own form
   x^2 = B'xy + C'y^2 + D'x + E'y + F' on centred, scaled points); starting from the
   longest arc, every other arc whose pixels lie within ``tau`` of its curve (at least
   :data:`JOIN_SHARE` of them) joins it, the curve is refitted on the union and the join
   repeated once; the joined arcs are used up. A group is a candidate when its curve is a
   real curve of its kind in the picture (:func:`pyro_moe.shapes.seeding.plausible`), its
   pixels lie on it (RMS geometric distance <= ``tau``), and it covers at least
   :data:`MIN_SWEEP` of its own perimeter (about 60 degrees of a circle: a short, nearly
   straight arc pins no curve). Candidates are sorted by
   points x covered share, the score of :mod:`pyro_moe.shapes.seeding`.

Straight edges never become candidates: a straight run has no significant curvature, so
its circle is wider than the picture, or its conic a thin one that ``plausible`` refuses;
branching clutter is cut at its junctions, so its arcs are short and each covers little.
The curve fit (:func:`pyro_moe.curves.fitting.seed_responsibilities`) starts from the
candidates' pixels (one expert per candidate, the best first) when the chains give every
expert but at most one a *closed* candidate (:data:`CLOSED` of its perimeter covered), and
the Bayesian fit only polishes, attaches posterior uncertainty, and judges validity; the
minimal-subset search (:func:`pyro_moe.shapes.seeding.seed_curves`) then runs only for the
one expert beyond the candidates, on the points they leave unexplained. Measured on
``skimage.data.coins``: 24 closed candidates, each within 2 px of its coin's reference,
in 0.04 to 0.18 s (loaded 2-core machine); on ``skimage.data.coffee`` (conics) both cup
rims, the outer within 0.1 px, the inner within 0.3 px.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import sparse
from scipy.sparse.csgraph import connected_components, depth_first_order

from ..errors import InputError
from .geometry import FORMS
from .seeding import plausible, point_box, sampson_distance

__all__ = [
    "CLOSED",
    "CORNER_SPAN",
    "JOIN_SHARE",
    "MAX_TURN",
    "MIN_ARC",
    "MIN_CURVATURE",
    "MIN_SWEEP",
    "MIN_VISIBLE",
    "TANGENT_SPAN",
    "Candidate",
    "arc_cover",
    "chain_arcs",
    "chain_curves",
    "curve_distance",
    "edge_chains",
    "grid_mask",
    "longest_arc",
    "sweep_share",
]

#: Pixels either side of a point over which its tangent is read (the chord p_{i+h} - p_{i-h}).
TANGENT_SPAN = 4
#: Pixels over which a turn of more than :data:`MAX_TURN` is a corner.
CORNER_SPAN = 8
#: The largest turn (radians) of an arc within :data:`CORNER_SPAN` pixels: 60 degrees, a
#: circle of radius 7.6 px turns so much; anything sharper is a corner.
MAX_TURN = np.pi / 3
#: |curvature| (1 / px) below which an arc is as good as straight and its sign is not read:
#: a circle of radius 150 px. The raster's own noise on the curvature over 2 x 4 px is
#: about 0.01 to 0.02 / px, so the sign is read from a mean over 2 x TANGENT_SPAN points.
MIN_CURVATURE = 1.0 / 150.0
#: The shortest arc kept, in pixels.
MIN_ARC = 10
#: The least share of an arc's pixels within ``tau`` of a curve for the arc to join it.
JOIN_SHARE = 0.8
#: The least share of its own perimeter a candidate's pixels cover (1/6: 60 degrees).
MIN_SWEEP = 1.0 / 6.0
#: The least share of its perimeter a closed curve covers: traced (nearly) all round. A
#: chain candidate seeds a fit only when closed (:func:`pyro_moe.curves.fitting.chains_seed`).
CLOSED = 0.9
#: Arcs a perimeter is cut into for the swept share (at least; one per 2 tau beyond).
SWEEP_BINS = 72


def grid_mask(xy: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """The pixels of points on the integer grid as a mask: (mask (H, W) of the points'
    box, index (N,) of each point's flat position in it); None when the points are not
    all integers (a point set, not an edge map: there are no chains to follow)."""
    P = np.asarray(xy, dtype=np.float64)
    if P.ndim != 2 or P.shape[1] != 2 or len(P) == 0 or not np.all(P == np.round(P)):
        return None
    # one column at a time: numpy reduces an (N, 2) array over its rows several times slower
    row, col = P[:, 1].astype(np.int64), P[:, 0].astype(np.int64)
    row, col = row - row.min(), col - col.min()
    shape = (int(row.max()) + 1, int(col.max()) + 1)
    if shape[0] * shape[1] > 64 * max(len(P), 1) ** 1.5:  # far too sparse to be an edge map
        return None
    flat = row * shape[1] + col
    mask = np.zeros(shape, dtype=bool)
    mask.ravel()[flat] = True
    return mask, flat


#: A pixel's 8 neighbours as (row, column) offsets in raster order: a pixel's neighbours
#: come out in the order of their raster index (the order of a CSR row's sorted columns).
_RASTER_NEIGHBOURS = ((-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1))


def _neighbours(shape: tuple[int, int], rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """(n, 8) for each of n pixels (``rows``, ``cols``, in raster order, in a picture of
    ``shape``) the position in that list of each of its 8 neighbours, -1 where the
    neighbour is not one of the n; columns in :data:`_RASTER_NEIGHBOURS` order. One lookup
    per pixel and neighbour in a flat index of the picture padded by one pixel, instead of
    a convolution of the whole picture."""
    H, W = shape
    stride = W + 2
    flat = (rows + 1) * stride + (cols + 1)
    index = np.full((H + 2) * stride, -1, dtype=np.int64)
    index[flat] = np.arange(rows.size)
    offsets = np.array([dr * stride + dc for dr, dc in _RASTER_NEIGHBOURS])
    return index[flat[:, None] + offsets]


def _count8(has: np.ndarray) -> np.ndarray:
    """(n,) int64 how many of each row of an (n, 8) boolean array are True: the set bits of
    the row's 8 bytes read as one 64-bit word (a True byte is 1), 15x faster than
    ``has.sum(1)`` in numpy 2.4 (numpy < 2 has no bitwise_count: the sum there)."""
    if not hasattr(np, "bitwise_count"):
        return has.sum(1)
    return np.bitwise_count(np.ascontiguousarray(has).view(np.uint64)[:, 0]).astype(np.int64)


def edge_chains(mask: np.ndarray, *, min_length: int = MIN_ARC) -> list[np.ndarray]:
    """Ordered chains of an edge map: a list of (M, 2) int arrays of (row, column), each a
    run of 8-connected pixels without junctions, in order along the run (module
    docstring, step 1); runs shorter than ``min_length`` are dropped.

    The graph of the runs (an edge between 8-neighbours) is built as a CSR matrix straight
    from each pixel's neighbours (:func:`_neighbours`; at most two once the junctions are
    out, in raster order as the CSR rows keep them), its components are
    :func:`~scipy.sparse.csgraph.connected_components`', and each run is one
    :func:`~scipy.sparse.csgraph.depth_first_order` walk from its first end in raster
    order (a closed loop: from its first pixel)."""
    from skimage.morphology import skeletonize

    m = np.asarray(mask, dtype=bool)
    if m.ndim != 2:
        raise InputError(f"an edge map must be 2-D, got shape {m.shape}")
    m = skeletonize(m)
    rows, cols = np.divmod(np.flatnonzero(m), m.shape[1])  # raster order, as np.nonzero
    if rows.size == 0:
        return []
    keep = _count8(_neighbours(m.shape, rows, cols) >= 0) <= 2  # junctions out
    rows, cols = rows[keep], cols[keep]
    n = rows.size
    if n == 0:
        return []
    nb = _neighbours(m.shape, rows, cols)
    has = nb >= 0
    deg = _count8(has)
    indptr = np.concatenate([[0], np.cumsum(deg)])
    G = sparse.csr_matrix((np.ones(int(indptr[-1])), nb[has], indptr), shape=(n, n))
    count, comp = connected_components(G, directed=False)
    sizes = np.bincount(comp, minlength=count)
    # the start of each run: an end (degree <= 1) when it has one, else any of its pixels
    start = np.full(count, -1)
    ends = np.flatnonzero(deg <= 1)
    start[comp[ends[::-1]]] = ends[::-1]  # the first end of each run in raster order
    none = start < 0
    first = np.full(count, -1)
    first[comp[::-1]] = np.arange(n)[::-1]
    start[none] = first[none]
    chains = []
    for c in np.flatnonzero(sizes >= min_length):  # one walk per run (not per pixel)
        # G is symmetric already: directed=False would add its transpose again every walk
        order = depth_first_order(G, int(start[c]), directed=True, return_predecessors=False)
        chains.append(np.column_stack([rows[order], cols[order]]))
    return chains


def chain_arcs(chain: np.ndarray, *, min_length: int = MIN_ARC) -> list[np.ndarray]:
    """The arcs of one ordered chain (module docstring, step 2): a list of index arrays
    into ``chain``, each a run that bends one way without a corner (:func:`_arcs`)."""
    return _arcs([chain], min_length=min_length)[0]


def _arcs(chains: list[np.ndarray], *, min_length: int = MIN_ARC) -> list[list[np.ndarray]]:
    """The arcs of each chain (module docstring, step 2), all chains in one vectorised
    pass over their concatenation (each index clipped to its own chain's ends).

    Along a chain of M points p_i: the tangent's direction theta_i = atan2 of the chord
    p_{i+h} - p_{i-h} (h = :data:`TANGENT_SPAN`, indices clipped to [0, M - 1]),
    unwrapped; a corner where |theta_{i+s} - theta_{i-s}| > :data:`MAX_TURN`
    (s = :data:`CORNER_SPAN` / 2); the curvature kappa = d theta / di (central
    differences, one-sided at the ends), averaged over 2h + 1 points (zero beyond the
    chain's ends), its sign read where |kappa| > :data:`MIN_CURVATURE`, and an inflection
    cut at the first point of a new sign. Arcs are the runs of uncut points of at least
    ``min_length``, as index arrays into their chain. A chain's unwrapped directions differ
    from its own unwrap by a constant (the turns of the chains before it), which cancels in
    every difference above."""
    out: list[list[np.ndarray]] = [[] for _ in chains]
    use = [j for j, ch in enumerate(chains) if len(ch) >= min_length]
    if not use:
        return out
    lengths = np.array([len(chains[j]) for j in use])
    X = np.concatenate([np.asarray(chains[j]) for j in use])
    T = len(X)
    cid = np.repeat(np.arange(len(use)), lengths)
    first = np.repeat(np.cumsum(lengths) - lengths, lengths)
    last = first + np.repeat(lengths, lengths) - 1
    i = np.arange(T)
    clipped: dict[int, np.ndarray] = {}

    def at(shift: int) -> np.ndarray:  # i + shift, clipped to its chain (each shift once)
        if shift not in clipped:
            clipped[shift] = np.minimum(np.maximum(i + shift, first), last)
        return clipped[shift]

    h = TANGENT_SPAN
    rows, cols = X[:, 0].copy(), X[:, 1].copy()  # 1-D gathers: 4x faster than X[...] rows
    a, b = at(h), at(-h)
    theta = np.unwrap(np.arctan2((rows[a] - rows[b]).astype(np.float64),
                                 (cols[a] - cols[b]).astype(np.float64)))  # fmt: skip
    half = CORNER_SPAN // 2
    cut = np.abs(theta[at(half)] - theta[at(-half)]) > MAX_TURN
    nxt, prv = at(1), at(-1)
    kappa = (theta[nxt] - theta[prv]) / (nxt - prv)  # np.gradient's differences
    # the mean over 2h + 1 points, zero beyond a chain's ends: one convolution of the
    # chains laid out with h zeros between them
    pos = i + h * (cid + 1)
    buf = np.zeros(T + h * (len(use) + 1))
    buf[pos] = kappa
    kappa = np.convolve(buf, np.ones(2 * h + 1) / (2 * h + 1), mode="same")[pos]
    sign = np.where(kappa > MIN_CURVATURE, 1, np.where(kappa < -MIN_CURVATURE, -1, 0))
    nz = np.flatnonzero(sign)
    if len(nz) > 1:
        flip = (sign[nz[1:]] != sign[nz[:-1]]) & (cid[nz[1:]] == cid[nz[:-1]])
        cut[nz[1:][flip]] = True  # first point of the new sign
    keep = ~cut
    step = np.diff(keep.astype(np.int8), prepend=0, append=0)  # +1: a run starts, -1: ends
    begins = np.flatnonzero(keep & ((i == first) | (step[:-1] == 1)))
    ends = np.flatnonzero(keep & ((i == last) | (step[1:] == -1))) + 1
    for a, b in zip(begins, ends, strict=True):
        if b - a >= min_length:
            out[use[cid[a]]].append(np.arange(a - first[a], b - first[a]))
    return out


@dataclass(frozen=True)
class Candidate:
    """A candidate curve from the chains: its ``points`` (indices into the point set),
    ``weights`` of its kind's form in pixel units (a circle's (2 x0, 2 y0, r^2 - x0^2 -
    y0^2); a conic's (B', C', D', E', F') of x^2 = B'xy + C'y^2 + D'x + E'y + F'), the
    ``sweep`` (share of its perimeter its points cover; of a circle cut by the picture's
    box, of the part inside, :func:`sweep_share`), its ``rms`` geometric distance in
    pixels and its ``score`` (points x sweep)."""

    points: np.ndarray
    weights: np.ndarray
    sweep: float
    rms: float
    score: float


def _design(P: np.ndarray, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """(phi (N, n), t (N,)) of a kind's algebraic form (pixel units)."""
    x, y = P[:, 0], P[:, 1]
    one = np.ones_like(x)
    if kind == "circle":
        return np.column_stack([x, y, one]), x * x + y * y
    return np.column_stack([x * y, y * y, x, y, one]), x * x


def _normalise(P: np.ndarray) -> tuple[np.ndarray, float]:
    c = P.mean(0)
    s = float(np.sqrt(((P - c) ** 2).sum(1).mean())) or 1.0
    return c, s


def _fit(P: np.ndarray, kind: str) -> np.ndarray | None:
    """Least-squares weights of a kind's form on points P (pixel units; conics fitted on
    centred, scaled points and mapped back); None when the system is singular."""
    if kind == "circle":
        phi, t = _design(P, kind)
        w, _, rank, _ = np.linalg.lstsq(phi, t, rcond=None)
        return w if rank == 3 else None
    c, s = _normalise(P)
    phi, t = _design((P - c) / s, kind)
    v, _, rank, _ = np.linalg.lstsq(phi, t, rcond=None)
    if rank < 5:
        return None
    return _unscale_conic(v, c, s)


def _unscale_conic(v: np.ndarray, c: np.ndarray, s: float) -> np.ndarray:
    """The conic x^2 = B'xy + C'y^2 + D'x + E'y + F' in pixels from its weights v on
    u = (p - c) / s: substitute u = (p - c) / s, multiply by s^2, collect monomials."""
    B, C, D, E, F = v
    cx, cy = c
    # s^2 u_x^2 = (x - cx)^2, etc.: x^2 - 2 cx x + cx^2 = B (x - cx)(y - cy) + C (y - cy)^2
    #   + D s (x - cx) + E s (y - cy) + F s^2
    Bp, Cp = B, C
    Dp = 2 * cx - B * cy + D * s
    Ep = -B * cx - 2 * C * cy + E * s
    Fp = -(cx**2) + B * cx * cy + C * cy**2 - D * s * cx - E * s * cy + F * s * s
    return np.array([Bp, Cp, Dp, Ep, Fp])


def curve_distance(P: np.ndarray, w: np.ndarray, kind: str) -> np.ndarray:
    """(N,) distances of points to a curve in pixels: a circle's exact |‖p - c‖ - r|; a
    conic's first-order (Sampson) |f(p)| / ‖∇f(p)‖ with f(p) = x^2 - w^T phi(p), the
    seed's :func:`~pyro_moe.shapes.seeding.sampson_distance` of the conic form."""
    x, y = P[:, 0], P[:, 1]
    if kind == "circle":
        c = 0.5 * w[:2]
        r2 = w[2] + c @ c
        dx, dy = x - c[0], y - c[1]  # sqrt of the square sum: np.hypot is 3x slower
        return np.abs(np.sqrt(dx * dx + dy * dy) - np.sqrt(max(r2, 0.0)))
    return sampson_distance(np.asarray(w, float)[None], P, FORMS["conic"])[0]


def arc_cover(P: np.ndarray, w: np.ndarray, kind: str, bins: int | None = None, *,
              step: float = 4.0) -> np.ndarray:  # fmt: skip
    """(bins,) which of a closed curve's arcs (equal angles about its centre) hold one of
    the points P (pixels); ``bins`` None: one per ``step`` pixels of perimeter, at least
    :data:`SWEEP_BINS`, at most 1024. A curve without a centre covers nothing."""
    if kind == "circle":
        c = 0.5 * w[:2]
        r = float(np.sqrt(max(w[2] + c @ c, 0.0)))
    else:
        B, C, D, E, _ = w
        det = -4.0 * C - B * B
        if abs(det) < 1e-300 or not len(P):
            return np.zeros(bins or SWEEP_BINS, dtype=bool)
        c = np.array([(B * E - 2.0 * C * D) / det, (2.0 * E + B * D) / det])
        r = float(np.sqrt(((P - c) ** 2).sum(1).mean()))
    if bins is None:
        bins = int(np.clip(2 * np.pi * r / step, SWEEP_BINS, 1024))
    hit = np.zeros(bins, dtype=bool)
    if len(P):
        ang = np.arctan2(P[:, 1] - c[1], P[:, 0] - c[0])
        hit[np.minimum(((ang + np.pi) / (2 * np.pi) * bins).astype(np.int64), bins - 1)] = True
    return hit


def longest_arc(hit: np.ndarray, *, holes: int = 0) -> float:
    """The longest circular run of covered arcs (:func:`arc_cover`), as a share of all;
    ``holes=1``: a single uncovered arc between two covered ones does not break a run (a
    gap of the points' sampling along a sparse curve, not a break of it)."""
    hit = np.asarray(hit, dtype=bool)
    if holes >= 1 and len(hit) >= 3:
        hit = hit | (np.roll(hit, 1) & np.roll(hit, -1))
    if hit.all():
        return 1.0
    if not hit.any():
        return 0.0
    hit = np.roll(hit, -int(np.argmin(hit)))  # an uncovered arc first: no run wraps
    edges = np.diff(np.concatenate([[0], hit.astype(np.int8), [0]]))
    return float((np.flatnonzero(edges == -1) - np.flatnonzero(edges == 1)).max() / len(hit))


#: The least share of a circle's perimeter inside the picture for its sweep to be read on
#: that part alone (:func:`sweep_share`).
MIN_VISIBLE = 0.5


def sweep_share(
    P: np.ndarray, w: np.ndarray, kind: str, tau: float, box: tuple | None = None
) -> float:
    """The share of a closed curve's perimeter that points P lie on (:func:`arc_cover` in
    arcs of 2 tau pixels). With the picture's ``box`` ((x, y) lo, (x, y) hi), a circle cut
    by it is judged on its arcs inside the box (widened by ``tau``) when they are at least
    :data:`MIN_VISIBLE` of it: a ring cut by the frame, traced all along its visible part,
    is closed (measured on ``circle_scene("cut by the border")``: 0.56 to 0.75 of the whole
    perimeter, the rest outside; without a closed candidate the fit fell back on sequential
    RANSAC, 130 ms of a 160 ms fit)."""
    hit = arc_cover(P, w, kind, step=2 * tau)
    if box is None or kind != "circle":
        return float(hit.mean())
    c = 0.5 * w[:2]
    r = float(np.sqrt(max(w[2] + c @ c, 0.0)))
    th = (np.arange(len(hit)) + 0.5) / len(hit) * 2 * np.pi - np.pi
    mx, my = c[0] + r * np.cos(th), c[1] + r * np.sin(th)  # each arc's midpoint
    lo, hi = np.asarray(box[0]) - tau, np.asarray(box[1]) + tau
    seen = (mx >= lo[0]) & (my >= lo[1]) & (mx <= hi[0]) & (my <= hi[1])
    if seen.all() or seen.mean() < MIN_VISIBLE:
        return float(hit.mean())
    return float((hit & seen).sum() / seen.sum())


#: The most groups :func:`_merge` compares pairwise (the largest).
MAX_MERGE = 64


def _centre_size(P: np.ndarray, w: np.ndarray | None, kind: str) -> tuple[np.ndarray, float]:
    """A curve's centre and size (the RMS distance of its points from the centre); a
    centre at infinity when there is no fit or no centre."""
    far = (np.full(2, np.inf), 1.0)
    if w is None:
        return far
    if kind == "circle":
        c = 0.5 * w[:2]
    else:
        B, C, D, E, _ = w
        det = -4.0 * C - B * B
        if abs(det) < 1e-300:
            return far
        c = np.array([(B * E - 2.0 * C * D) / det, (2.0 * E + B * D) / det])
    dx, dy = P[:, 0] - c[0], P[:, 1] - c[1]
    return c, max(float(np.sqrt((dx * dx + dy * dy).mean())), 1e-9)


def _merge(P, groups, kind, tau, extent, box) -> list[tuple[np.ndarray, np.ndarray | None]]:
    """Groups of arcs that are one curve, merged: the largest groups (at most
    :data:`MAX_MERGE`) in pairs, largest first, a pair merged when the curve fitted to both
    holds :data:`JOIN_SHARE` of each within ``tau`` (two arcs of one rim whose own fits,
    each on a short arc, did not reach each other's points). ``groups``: pairs (points,
    the :func:`_fit` of those points, None where singular); the same pairs are returned,
    a merged group with the fit of its union (each fit made once)."""
    groups = sorted(groups, key=lambda g: len(g[0]), reverse=True)
    head, tail = groups[:MAX_MERGE], groups[MAX_MERGE:]
    # P.take: numpy's P[index] on an (N, 2) array is several times slower, the same rows
    shape = [_centre_size(P.take(g, axis=0), w, kind) for g, w in head]
    i = 0
    while i < len(head):
        j = i + 1
        while j < len(head):
            (ci, si), (cj, sj) = shape[i], shape[j]
            if not (np.hypot(*(ci - cj)) < 0.25 * max(si, sj) and 0.75 < si / sj < 1.0 / 0.75):
                j += 1  # curves of different centres or sizes: not one curve
                continue
            both = np.concatenate([head[i][0], head[j][0]])
            P_both = P.take(both, axis=0)
            w = _fit(P_both, kind)
            if w is not None and plausible(kind, w[None], extent, box)[0]:
                near = curve_distance(P_both, w, kind) <= tau
                n_i = len(head[i][0])
                if near[:n_i].mean() >= JOIN_SHARE and near[n_i:].mean() >= JOIN_SHARE:
                    head[i] = (both, w)
                    head.pop(j)
                    shape.pop(j)
                    continue
            j += 1
        i += 1
    return head + tail


def chain_curves(
    xy: np.ndarray,
    kind: str,
    *,
    tau: float = 2.0,
    chains: list[np.ndarray] | None = None,
) -> list[Candidate]:
    """Candidate curves of ``kind`` ("circle" or "conic") on edge points ``xy`` (N, 2) of
    (x, y) on the integer grid (module docstring, step 3), best first; [] when the points
    are not on the grid. ``tau``: the join and inlier distance in pixels."""
    if kind not in ("circle", "conic"):
        raise InputError(f"chain_curves fits circles or conics, not {kind!r}")
    P = np.asarray(xy, dtype=np.float64)
    grid = grid_mask(P)
    if grid is None:
        return []
    mask, flat = grid
    where = np.full(mask.size, -1, dtype=np.int64)
    where[flat] = np.arange(len(P))
    if chains is None:
        chains = edge_chains(mask)
    arcs: list[np.ndarray] = []
    for ch, ch_arcs in zip(chains, _arcs(chains), strict=True):  # all chains in one pass
        if not ch_arcs:
            continue
        at = where[np.ravel_multi_index((ch[:, 0], ch[:, 1]), mask.shape)]
        for a in ch_arcs:
            idx = at[a]
            idx = idx[idx >= 0]
            if len(idx) >= MIN_ARC:
                arcs.append(idx)
    if not arcs:
        return []
    n_form = 3 if kind == "circle" else 5
    box = point_box(P)
    extent = float(np.linalg.norm(box[1] - box[0]))
    arc_of = np.concatenate([np.full(len(a), j) for j, a in enumerate(arcs)])
    arc_pts = np.concatenate(arcs)
    P_arcs = P.take(arc_pts, axis=0)  # P[index] is several times slower, the same rows
    sizes = np.array([len(a) for a in arcs])
    free = np.ones(len(arcs), dtype=bool)
    # each group with the fit of its own points (None: singular), a plausible curve when
    # not None: each fit and each plausibility check is made once
    groups: list[tuple[np.ndarray, np.ndarray | None]] = []
    out: list[Candidate] = []
    for j in np.argsort(-sizes, kind="stable"):  # the longest free arc starts a group
        if not free[j]:
            continue
        free[j] = False
        members = np.array([j])
        pts = np.concatenate([arcs[j]])
        w = own = _fit(P.take(pts, axis=0), kind)
        checked = False  # w known to be plausible
        for _ in range(2):  # join the arcs that lie on it, refit, once more
            if w is None or not plausible(kind, w[None], extent, box)[0]:
                w = None
                break
            checked = True
            near = curve_distance(P_arcs, w, kind) <= tau
            share = np.bincount(arc_of, weights=near, minlength=len(arcs)) / sizes
            join = np.flatnonzero(free & (share >= JOIN_SHARE))
            if len(join) == 0:
                break
            members = np.union1d(members, join)
            free[join] = False
            pts = np.concatenate([arcs[m] for m in members])
            own = _fit(P.take(pts, axis=0), kind)
            w, checked = (own, False) if own is not None else (w, checked)
        if w is not None and (checked or plausible(kind, w[None], extent, box)[0]):
            groups.append((pts, own))  # own is w, or None (the union's fit is singular)
    for pts, w in _merge(P, groups, kind, tau, extent, box):
        if w is None or len(pts) < n_form + 2:
            continue
        Pp = P.take(pts, axis=0)
        d = curve_distance(Pp, w, kind)
        rms = float(np.sqrt(np.mean(d * d)))
        if not rms <= tau:
            continue
        sweep = sweep_share(Pp, w, kind, tau, box)
        if sweep < MIN_SWEEP:
            continue
        out.append(Candidate(pts, w, sweep, rms, len(pts) * sweep))
    out.sort(key=lambda c: -c.score)
    return out
