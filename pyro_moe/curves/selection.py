"""Choosing the number of curves, and which curves of a fit to report.

:func:`select_curves` is :func:`pyro_moe.selection.select_experts` (the ELBO + log K!
criterion over admissible fits, see :mod:`pyro_moe.selection`) on the curve design of
points or an image: each K is fitted as :func:`pyro_moe.fit_curves` fits it, each fit is a
:class:`~pyro_moe.curves.result.CurveFit`, and a fit at K is admissible when
:func:`curve_reports` calls all its K curves valid (for circle and conic experts: used, a
real curve, a posterior narrow enough, a fit close enough, not two rings in one, no
duplicate: two circles coincide when their Hausdorff distance |c_j - c_k| + |r_j - r_k| is
below ``min_separation`` pixels, default 2: a 1-px raster cannot resolve closer rings);
experts of other kinds are counted by :func:`pyro_moe.selection.distinct_experts`.
"""

from __future__ import annotations

import functools
import itertools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..model_file import Model, load_model
from ..selection import Selection, distinct_experts, select_experts
from ..shapes.chains import (
    CLOSED,
    Candidate,
    arc_cover,
    chain_curves,
    curve_distance,
    longest_arc,
)
from ..shapes.curves import (
    MAX_RELATIVE_NOISE,
    Circle,
    Conic,
    circle_design,
    circle_parameters,
    conic_from_weights,
    conic_weights_from_geometry,
    kasa_corrected_radius,
    radial_noise,
)
from ..shapes.seeding import point_box
from .fitting import (
    CHAIN_TAU,
    chain_candidates,
    chains_start,
    check_fit_options,
    curve_data,
    curve_fit_options,
    drawn_points,
    seeded_start,
    start_labels,
    take_image_options,
    with_curve_defaults,
)
from .result import CurveFit
from .uncertainty import curve_uncertainty

__all__ = [
    "CurveReport",
    "curve_distinct",
    "curve_reports",
    "no_gain",
    "no_new_arc",
    "nothing_found",
    "ring_by_chance",
    "ring_contrast",
    "select_circles",
    "select_curves",
    "two_groups",
]


@dataclass(frozen=True)
class CurveReport:
    """One expert of a curve fit as it should be reported.

    Attributes:
        expert: its index (0-based).
        name: its name (``"circle"``, ``"ellipse"``, ...).
        curve: the curve in pixel units (:meth:`pyro_moe.curves.CurveFit.curves`).
        share: its mean responsibility over the points.
        sd: its delta-method posterior sds (:func:`pyro_moe.curve_uncertainty`), or None.
        valid: whether it is a curve of the data (see :func:`curve_reports`).
        reason: why not, a short phrase (None when valid).
        wide: True when its posterior sds are too wide to mean anything (print none).
        r_corrected: a circle's radius corrected for the Kasa bias from its own noise (a
            circle refined to its geometric fit: its radius)
            (:func:`pyro_moe.shapes.curves.kasa_corrected_radius`), pixels; else None.
        noise_px: a circle's fitted noise sd of the points about it, pixels
            (:func:`pyro_moe.shapes.curves.radial_noise`); else None.
    """

    expert: int
    name: str
    curve: Any
    share: float
    sd: Any
    valid: bool
    reason: str | None
    wide: bool = False
    r_corrected: float | None = None
    noise_px: float | None = None


def _expert_betas(result: CurveFit) -> np.ndarray:
    beta = result.noise_precision.detach().cpu().numpy().astype(float).reshape(-1)
    return np.broadcast_to(beta, (result.experts,)) if beta.size == 1 else beta


def _sd_size(kind: str | None, curve: Any, sd: Any) -> tuple[float, float] | None:
    """(largest sd of the curve's position and size, the curve's size) in pixels, or None
    when there is nothing to compare: a circle's max(sd x0, y0, r) against r, an ellipse's
    max(sd cx, cy, a, b) against its major semi-axis (inf when the delta method fails)."""
    if kind == "circle" and sd is not None and curve.valid:
        return max(sd.sd_x0, sd.sd_y0, sd.sd_r or 0.0), float(curve.r)
    if kind == "conic" and curve.kind == "ellipse" and curve.semi_axes is not None:
        if sd is None or sd.sd is None:
            return math.inf, float(curve.semi_axes[0])
        return max(sd.sd[f] for f in ("cx", "cy", "a", "b")), float(curve.semi_axes[0])
    return None


def _disk_area_in_box(x0: float, y0: float, R: float, lo, hi) -> float:
    """The exact area of the disk |p - (x0, y0)| < R inside the box [lo, hi]: the integral
    over x of the length of [lo_y, hi_y] within the disk's chord, piecewise between the
    x where the chord's ends cross the box's sides, each piece by its antiderivative
    (G(u) = (u s + R^2 asin(u / R)) / 2, s = sqrt(R^2 - u^2), for the chord's half)."""
    if not R > 0:
        return 0.0
    a, b = lo[0] - x0, hi[0] - x0
    c, d = lo[1] - y0, hi[1] - y0
    a, b = max(a, -R), min(b, R)
    if not (b > a and d > c):
        return 0.0
    cuts = {a, b}
    for v in (c, d):
        if abs(v) < R:
            u = math.sqrt(R * R - v * v)
            cuts.update(x for x in (-u, u) if a < x < b)
    xs = sorted(cuts)

    def half(u: float) -> float:  # the antiderivative of sqrt(R^2 - u^2)
        u = min(max(u, -R), R)
        return 0.5 * (u * math.sqrt(max(R * R - u * u, 0.0)) + R * R * math.asin(u / R))

    area = 0.0
    for u0, u1 in itertools.pairwise(xs):
        m = 0.5 * (u0 + u1)
        s = math.sqrt(max(R * R - m * m, 0.0))
        top_in, bottom_in = d < s, c > -s  # which ends of the chord the box cuts
        if d <= -s or c >= s:
            continue  # the box misses the chord here
        chord = half(u1) - half(u0)
        top = d * (u1 - u0) if top_in else chord
        bottom = c * (u1 - u0) if bottom_in else -chord
        area += max(top - bottom, 0.0)
    return area


def _annulus_area_in_box(x0, y0, r_in, r_out, lo, hi) -> float:
    """The exact area of the annulus r_in <= |p - (x0, y0)| < r_out inside the box
    [lo, hi]: the disk of r_out's less the disk of r_in's (:func:`_disk_area_in_box`;
    it replaced a 64 x 512 polar midpoint grid, a third of a sparse scene's reports)."""
    if not r_out > r_in:
        return 0.0
    return max(
        _disk_area_in_box(x0, y0, r_out, lo, hi) - _disk_area_in_box(x0, y0, r_in, lo, hi), 0.0
    )


def _along(k, order, reasons, curves, pts, step) -> int | None:
    """The valid circle j of a larger share (``order``: by share, largest first) that
    circle k runs along: at least half of k's points within ``step`` px of k lie within
    ``step`` px of j too, and the two are not concentric (centres more than ``step`` px
    apart; a thick rim's two edges are concentric, and both are curves). None if none."""
    if reasons[k] is not None:
        return None
    c = curves[k]
    on = pts[np.abs(np.hypot(pts[:, 0] - c.x0, pts[:, 1] - c.y0) - c.r) <= step]
    if not len(on):
        return None
    for j in order[: order.index(k)]:
        d = curves[j]
        if reasons[j] is not None or math.hypot(d.x0 - c.x0, d.y0 - c.y0) <= step:
            continue
        near = np.abs(np.hypot(on[:, 0] - d.x0, on[:, 1] - d.y0) - d.r) <= step
        if near.mean() >= 0.5:
            return j
    return None


def arc_of(P: np.ndarray, w: np.ndarray, kind: str, perimeter: float, step: float):
    """(the share of a curve's perimeter its points P hold, its longest arc), both read on
    arcs of ``step`` pixels, at least 8 of them and at most n / 2 for n points (arcs at
    least twice the points' mean spacing along the curve):
    :func:`~pyro_moe.shapes.chains.arc_cover` and :func:`~pyro_moe.shapes.chains.longest_arc`
    with one-arc holes. The reports' "no arc" rule and :func:`no_new_arc` read a curve's
    arc here. Without the n / 2 bound a sparse ring was no arc: its points' nearest
    neighbours are adjacent pixels (``step`` 5.7 px), while 35 points on a ring of
    r = 30.7 px lie 5.5 px apart on average; on arcs of 5.7 px they covered 0.62 of it with
    a longest arc of 0.24, and ``--experts auto`` chose K = 1 for two rings ("sparse 2
    apart", seed 30; on 11.0 px arcs: 0.88 and 1.0). Points in clumps (a circle crossing
    texture) still cover few of the longer arcs."""
    bins = max(8, min(int(perimeter / step), len(P) // 2))
    hit = arc_cover(P, w, kind, bins)
    return float(hit.mean()), longest_arc(hit, holes=1)


def _spacing(xy: np.ndarray) -> float:
    """The median distance from a point to its nearest neighbour (pixels)."""
    from scipy.spatial import cKDTree

    if len(xy) < 2:
        return 0.0
    return float(np.median(cKDTree(xy).query(xy, k=2)[0][:, 1]))


def _perimeter(curve: Any) -> float:
    """A circle's 2 pi r, an ellipse's perimeter (Ramanujan's approximation)."""
    if isinstance(curve, Circle):
        return 2 * math.pi * float(curve.r)
    a, b = (float(v) for v in curve.semi_axes)
    return math.pi * (3 * (a + b) - math.sqrt((3 * a + b) * (a + 3 * b)))


def _pixel_weights(curve: Any) -> np.ndarray | None:
    """A circle's or an ellipse's weights of its form in pixel units (the form of
    :data:`pyro_moe.shapes.geometry.FORMS`); None for anything else."""
    if isinstance(curve, Circle) and curve.valid:
        return np.array([2 * curve.x0, 2 * curve.y0, curve.r**2 - curve.x0**2 - curve.y0**2])
    if getattr(curve, "kind", None) == "ellipse" and curve.semi_axes is not None:
        return conic_weights_from_geometry(curve.center, curve.semi_axes, curve.angle)
    return None


def _ring_counts(
    xy: np.ndarray, x0: float, y0: float, r: float, width: float
) -> tuple[int, float, int, float]:
    """(n_in, a_in, n_out, a_out): the points within ``width`` of the circle and that
    band's area inside the points' bounding box, the points between ``width`` and
    3 ``width`` from it and that area."""
    lo, hi = point_box(xy)
    dist = np.abs(np.hypot(xy[:, 0] - x0, xy[:, 1] - y0) - r)
    a_in = _annulus_area_in_box(x0, y0, max(r - width, 0.0), r + width, lo, hi)
    a_out = _annulus_area_in_box(
        x0, y0, max(r - 3 * width, 0.0), max(r - width, 0.0), lo, hi
    ) + _annulus_area_in_box(x0, y0, r + width, r + 3 * width, lo, hi)
    n_in = int((dist < width).sum())
    n_out = int(((dist >= width) & (dist < 3 * width)).sum())
    return n_in, a_in, n_out, a_out


def ring_contrast(xy: np.ndarray, x0: float, y0: float, r: float, width: float) -> float:
    """The density of all points (per unit area, inside their bounding box) within
    ``width`` of the circle, over their density between ``width`` and 3 ``width`` from it.

    A ring with Gaussian radial noise of sd ``width`` gives about 4.3 (68% of its points
    within 1 sd, 27% on twice the area between 1 and 3 sds), less over a background, about
    2.2 for a filled annulus; points spread uniformly over the box give 1 whatever circle
    is drawn through them."""
    n_in, a_in, n_out, a_out = _ring_counts(xy, x0, y0, r, width)
    if a_in <= 0 or n_in == 0:
        return 0.0
    if a_out <= 0 or n_out == 0:
        return math.inf
    return (n_in / a_in) / (n_out / a_out)


def ring_by_chance(xy: np.ndarray, x0: float, y0: float, r: float, width: float) -> bool:
    """Whether the points within ``width`` of the circle are no more than chance puts in
    that band of the best of all circles, at the density of the points beside it (between
    ``width`` and 3 ``width``; :func:`ring_contrast`'s counts): with m the count that
    density gives the band, n the count in it, and the circles a fit could choose
    (:func:`_circles_tried`), chance when they times P(Poisson(m) >= n) is at least 1 (an
    a-contrario test, as :func:`by_chance`, on the local density). The contrast alone does
    not weigh how many circles were tried: a fit picks the densest ring of the noise, and
    on 300 points spread uniformly over a 200 px square (seeds 0 and 4) the circle it
    found held 1.5 to 3 times the density beside it and passed ``min_contrast``, where the
    excess is chance (a ring of 100 points jittered by its own width, by far not)."""
    n_in, a_in, n_out, a_out = _ring_counts(xy, x0, y0, r, width)
    if a_in <= 0 or a_out <= 0 or n_out == 0:
        return False
    return _chance(n_in, n_out / a_out * a_in, _circles_tried(xy))


def _band(
    xy: np.ndarray,
    held: np.ndarray,
    c: Circle,
    noise: float,
    min_contrast: float,
    min_fill: float,
) -> str | None:
    """Why a circle of points on the pixel grid is a band of scattered pixels rather than
    a curve, or None: the density of all points within w = max(:data:`~pyro_moe.curves.
    fitting.CHAIN_TAU`, its noise) px of it is less than ``min_contrast`` times their
    density between w and 3 w (:func:`ring_contrast`), and the points it holds fill less
    than ``min_fill`` of the pixels within its noise of it (:func:`_annulus_area_in_box`;
    a filled annulus drawn as a mask is solid, and a curve)."""
    width = max(CHAIN_TAU, noise)
    contrast = ring_contrast(xy, c.x0, c.y0, c.r, width)
    if contrast >= min_contrast:
        return None
    d = np.abs(np.hypot(held[:, 0] - c.x0, held[:, 1] - c.y0) - c.r)
    lo, hi = point_box(xy)
    area = _annulus_area_in_box(c.x0, c.y0, max(c.r - noise, 0.0), c.r + noise, lo, hi)
    fill = float((d <= noise).sum()) / area if area > 0 else 0.0
    if fill >= min_fill:
        return None
    return (
        f"no edge (its points spread evenly across a band {2 * width:.3g} px wide: contrast "
        f"{contrast:.2f}, {fill:.2f} of its pixels set)"
    )


def _systematic(P: np.ndarray, c: Circle) -> float:
    """The sd (pixels) of the smooth part of the radial residuals d_i = |p_i - c| - r of the
    points P about a circle: their variance less the point-to-point part read from
    neighbours along it (von Neumann's ratio v = sum (d_{i+1} - d_i)^2 / (2 sum (d_i -
    mean d)^2) of the points in angle order, about 1 for independent noise, near 0 for a
    smooth departure), the ratio raised by 2 / sqrt(n) for its sampling error:
    sqrt(max(1 - v - 2 / sqrt(n), 0) var d). A rounded rectangle, a pebble or a tuft of
    grass fitted by a circle departs from it smoothly; a ring's jitter and raster noise do
    not. 0 for fewer than 8 points."""
    n = len(P)
    if n < 8:
        return 0.0
    ang = np.arctan2(P[:, 1] - c.y0, P[:, 0] - c.x0)
    d = np.hypot(P[:, 0] - c.x0, P[:, 1] - c.y0)[np.argsort(ang)] - c.r
    var = float(np.mean((d - d.mean()) ** 2))
    if not var > 0:
        return 0.0
    v = float(np.mean(np.diff(np.concatenate([d, d[:1]])) ** 2)) / (2.0 * var)
    return math.sqrt(max(1.0 - v - 2.0 / math.sqrt(n), 0.0) * var)


def _conic_fit(P: np.ndarray, c: Any, max_relative_noise: float) -> str | None:
    """Why a conic is a poor fit to the points P (pixels) it holds, or None: their RMS
    first-order (Sampson) distance to it exceeds ``max_relative_noise`` times its size (the
    smaller semi-axis of an ellipse or a hyperbola; a parabola's, the RMS distance of P from
    their centroid), as a circle's noise beyond that share of its radius is a band of stray
    points ("poor fit"). Measured with ``--experts auto`` on photos with texture and no
    ellipse (``skimage.data.camera``, ``rocket``, ``brick``) and on a rim in branching
    clutter: the conics it had called valid there, long thin ellipses and near-straight
    hyperbolas through texture, lie 55 to 391 px RMS from their points, 0.32 to 14 times
    their size; every real one (coffee's rims and saucer, the 24 coins, drawn ellipses,
    the moon's craters) 0.33 to 0.84 px, at most 0.11 of its size."""
    if len(P) == 0 or c.kind == "degenerate":
        return None
    d = curve_distance(P, c.weights(), "conic")
    noise = float(np.sqrt(np.mean(d * d)))
    if c.semi_axes is not None:
        size = float(min(c.semi_axes))
    else:
        size = float(np.sqrt(np.mean(np.sum((P - P.mean(0)) ** 2, axis=1))))
    if noise > max_relative_noise * size:
        return f"poor fit (noise {noise:.3g} px for size {size:.3g} px)"
    return None


def chain_ellipses(xy: np.ndarray) -> list[tuple[Candidate, Conic]]:
    """The ellipses the points' edge chains trace, each as its chain candidate and its
    geometry (:func:`~pyro_moe.shapes.chains.chain_curves` of kind "conic", at
    :data:`~pyro_moe.curves.fitting.CHAIN_TAU`: arcs joined on one plausible ellipse, each
    covering at least a sixth of it); [] off the pixel grid. Kept for the last four point
    sets (each K of a selection reads them)."""
    return _chain_ellipses(np.round(np.asarray(xy, dtype=np.float64)).tobytes())


@functools.lru_cache(maxsize=4)
def _chain_ellipses(points: bytes) -> list[tuple[Candidate, Conic]]:
    P = np.frombuffer(points, dtype=np.float64).reshape(-1, 2)
    # pixel units: no relative degeneracy test (the chains' ellipses are real ones)
    return [
        (e, conic_from_weights(e.weights, degenerate_rtol=0.0))
        for e in chain_curves(P, "conic", tau=CHAIN_TAU)
    ]


def part_of_ellipse(
    held: np.ndarray,
    c: Circle,
    ellipses: list[tuple[Candidate, Conic]],
    xy: np.ndarray,
    max_on_circle: float,
) -> Conic | None:
    """The chain ellipse (:func:`chain_ellipses`) a circle is a piece of, or None: one that
    holds at least half of the points the circle holds (``held``, within
    :data:`~pyro_moe.curves.fitting.CHAIN_TAU` px of it) while less than ``max_on_circle``
    of its own pixels (``xy[candidate.points]``) lie within that distance of the circle.
    The edge runs on, as one smooth curve, where the circle does not: the picture shows an
    ellipse, and the circle fits only the stretch of it that is nearly round (EDCircles,
    too, reports arcs that join on an ellipse as an ellipse). Measured: on drawn ellipses
    of axis ratios 0.95 to 0.5, every circle of ``--experts auto`` held its points on the
    ellipse, and 0.22 to 0.59 of the ellipse's pixels lay on it; on every real circle of
    the photos and clean scenes (coins, the study's eye, rims in branching clutter,
    concentric, overlapping and cut rings) 0.94 to 1."""
    if len(held) == 0:
        return None
    for e, conic in ellipses:
        if conic.center is None or conic.semi_axes is None:
            continue
        reach = c.r + conic.semi_axes[0] + CHAIN_TAU  # no point of one within it of the other
        if math.hypot(conic.center[0] - c.x0, conic.center[1] - c.y0) > reach:
            continue
        on_ellipse = curve_distance(held, e.weights, "conic") <= CHAIN_TAU
        if on_ellipse.mean() < 0.5:
            continue
        P = xy[e.points]
        on_circle = np.abs(np.hypot(P[:, 0] - c.x0, P[:, 1] - c.y0) - c.r) <= CHAIN_TAU
        if on_circle.mean() < max_on_circle:
            return conic
    return None


def _part_of(e: Conic) -> str:
    a, b = e.semi_axes
    return f"part of an ellipse (semi-axes {a:.3g} x {b:.3g} px; fit conics)"


def two_groups(
    values: np.ndarray, *, max_gap: float = 6.0, min_group: float = 0.2
) -> tuple[float, float] | None:
    """The means of two groups when ``values`` (n,) form two, else None.

    The best split of the sorted values into a lower and an upper group (least
    within-group sum of squares, all n - 1 splits at once by cumulative sums) is accepted
    when each group holds at least ``min_group`` of the values and their means differ by
    more than ``max_gap`` pooled within-group sds, $|\\bar v_2 - \\bar v_1| >
    \\text{max\\_gap}\\,\\sqrt{SS_w / n}$. One Gaussian or uniform group splits at
    about 2.7 and 3.5 sds.
    """
    v = np.sort(np.asarray(values, dtype=np.float64).reshape(-1))
    n = v.size
    lo = max(1, math.ceil(min_group * n))
    if n < 4 or n - lo < lo:
        return None
    c1, c2 = np.cumsum(v), np.cumsum(v * v)
    i = np.arange(lo, n - lo + 1)  # sizes of the lower group
    s1, q1 = c1[i - 1], c2[i - 1]
    s2, q2 = c1[-1] - s1, c2[-1] - q1
    ss = (q1 - s1 * s1 / i) + (q2 - s2 * s2 / (n - i))
    best = int(np.argmin(ss))
    m1, m2 = s1[best] / i[best], s2[best] / (n - i[best])
    sd = math.sqrt(max(float(ss[best]), 0.0) / n)
    if m2 - m1 > max_gap * max(sd, 1e-12 * max(abs(m1), abs(m2), 1.0)):
        return float(m1), float(m2)
    return None


def curve_reports(
    result: CurveFit,
    *,
    min_share: float = 0.01,
    max_relative_sd: float = 0.25,
    max_relative_noise: float = MAX_RELATIVE_NOISE,
    max_noise_ratio: float = 5.0,
    max_gap: float = 6.0,
    min_group: float = 0.2,
    min_separation: float = 2.0,
    noisy_ring: float = 0.1,
    min_contrast: float = 1.5,
    min_edge_contrast: float = 2.8,
    min_fill: float = 0.5,
    max_shape: float = 0.06,
    max_on_circle: float = 0.8,
    min_arc: float = 0.25,
    closed: float = CLOSED,
    spacing: float | None = None,
) -> list[CurveReport]:
    """Each expert of a curve fit with its validity and the reason when it is not valid.

    An expert is *not* valid, with the first reason that applies:

    * ``"empty (share S)"``: its share of the points is below ``min_share``;
    * ``"no real radius (r^2 < 0)"`` (a circle) or ``"degenerate conic"``: its weights
      describe no real curve;
    * ``"posterior too wide (sd D px for size R px)"``: its largest posterior sd of
      position or size exceeds ``max_relative_sd`` times its size (a circle's r, an
      ellipse's major semi-axis; sds that are not even defined count as too wide): the
      data do not pin the curve down, and its sds are not printed (``wide``);
    * ``"poor fit (noise N px for r R px)"`` (a circle): its points lie, by its own fitted
      noise precision beta_k, more than ``max_relative_noise`` r from it (a line read as
      a circle), or so far that no radius can be read; or more than ``max_noise_ratio``
      times the median noise of the other circles of the fit (a circle drawn through stray
      pixels beside clean rings: measured 9.7 px against 0.35 px); a conic (a fit of one
      shared conic form): the RMS first-order distance of the points it holds exceeds
      ``max_relative_noise`` times its size (:func:`_conic_fit`: a long thin ellipse or a
      near-straight hyperbola through texture, 55 to 391 px from its points);
    * ``"two curves (r R1 and R2 px)"`` (a circle): the radial distances of the points it
      holds form two groups (:func:`two_groups`: the best split of the sorted distances
      leaves groups of at least ``min_group`` of its points whose means are more than
      ``max_gap`` within-group sds apart), i.e. one circle drawn through two rings;
      measured: Gaussian jitter and uniform (raster, thick-ring) noise split at 2.7 and
      3.5 sds, a circle through two rings far beyond;
    * ``"no ring (... contrast C)"`` (a circle whose noise exceeds ``noisy_ring`` r): the
      density of all the points within one noise sd of it is less than ``min_contrast``
      times their density between one and three sds (:func:`ring_contrast`): a circle
      drawn through points spread evenly (pure noise: measured 0.97 to 1.04 on 20 circles,
      noise 0.24 to 0.33 r), where a ring gives more (filled rings 5 to 30 px thick at
      r = 60: 2.1 to 2.5; the test suites' circles: 1.37 and up, their noise at most
      0.05 r, below ``noisy_ring``, so they are not tested); or its excess over that
      density beside it is no more than chance gives the best of all the circles a fit
      could try (:func:`ring_by_chance`: the densest ring a fit finds among points spread
      uniformly, 300 over a 200 px square, held 1.5 to 3 times the density beside it on
      two seeds of six, on 8 to 45 points);
    * ``"no edge (...)"`` (a circle of points on the pixel grid: an edge map, a binary
      image): the density of all points within w = max(2 px, its noise) of it is less
      than ``min_edge_contrast`` times their density between w and 3 w, and the points it
      holds fill less than ``min_fill`` of the pixels within its noise of it
      (:func:`_band`): a Gaussian ring gives 4.3 at w = its sd, a band of points spread
      evenly across its width 2.7 at any width, a ring drawn filled fills its band;
      measured, the circles of the scene sets 3.2 and more (the rings jittered by 2.5 px
      lowest), the real ones on photos 3.7 and more, bands of texture that auto had called
      valid on ``skimage.data.camera``, ``rocket``, ``chelsea`` 1.4 to 2.6;
    * ``"another shape (...)"`` (a circle): its points depart from it smoothly by more than
      ``max_shape`` r (:func:`_systematic`: the sd of the part of their radial residuals
      that neighbours along it share): a rounded rectangle, a pebble, a tuft of grass.
      Measured: circles inscribed in the ends of the bricks of ``skimage.data.brick``
      0.067 r and more, the 24 coins 0.051 r at most, the study's eye 0.02 r, jittered and
      rasterized rings about 0 (their noise is independent from point to point);
    * ``"part of an ellipse (semi-axes A x B px; fit conics)"`` (a circle of points on
      the pixel grid): the edge chains trace an ellipse that holds half of its points and
      of whose pixels less than ``max_on_circle`` lie within 2 px of it
      (:func:`part_of_ellipse`): a round rim seen obliquely, of which the circle fits the
      nearly round stretch (drawn ellipses of axis ratios 0.95 to 0.5: 0.22 to 0.59 on the
      circle; real circles 0.94 to 1);
    * ``"duplicate of expert J"`` (1-based): a circle within
      min(``min_separation`` px, r / 4) of a valid one with a larger share (Hausdorff
      distance |c_j - c_k| + |r_j - r_k|; r / 4 for point sets in small units); two other
      experts of one shared form when their fitted targets differ by less than the noise
      sd on the points, sqrt(mean (x_i^T (m_j - m_k))^2) < sd;
    * ``"along expert J (half its points lie on that curve)"`` (a circle): at least half of
      its points within 2 tau of it lie within 2 tau of a valid circle J of a larger share
      that is not concentric with it: a circle through a piece of another curve's edge
      (a coin's doubled rim) and whatever else it crosses; measured on
      ``skimage.data.coins``, the 25th circle of ``--experts auto``, r = 12 px inside a
      coin of r = 22.6 px;
    * ``"no arc (its points cover S of its perimeter, the longest arc A)"`` (a circle or
      an ellipse): the picture does not show it as a curve: the points it holds neither
      close it (cover ``closed`` of its perimeter, default 0.9) nor trace one unbroken arc
      of ``min_arc`` of it (default 1/4: a swept angle of 90 degrees). The perimeter is cut
      into arcs of 2 tau pixels, tau = max(2 px, 2 x the median nearest-neighbour spacing of
      all points), so a sparse ring is judged at its own spacing
      (:func:`pyro_moe.shapes.chains.arc_cover`). A curve through an arc of clutter, a
      straight edge or texture holds scattered pieces: measured on ``skimage.data.coins``,
      a 25th circle (r = 12 px) through the doubled lower rim of one coin and its relief
      covered 0.62 in pieces, its longest arc 0.2; every coin covers 0.81 to 1.

    Circles also carry ``r_corrected`` (the Kasa bias removed with their own noise; a
    refined circle's own radius, which has none) and ``noise_px``.

    ``spacing``: the median nearest-neighbour spacing of the fit's points in pixels
    (:func:`_spacing` of them), when the caller has it (every K of :func:`select_curves`
    fits the same points); None: computed here.
    """
    curves = result.curves()
    refined = result.refined_experts()
    algebraic = result.geometry.curves(result.mean.detach().cpu().numpy())
    sds = curve_uncertainty(result)
    geometry = result.geometry
    kinds = list(geometry.kinds)
    scale = geometry.standardization.scale
    K = result.experts
    share = [float(v) for v in result.responsibilities.mean(0)[:K].cpu()]
    beta = _expert_betas(result)
    order = sorted(range(K), key=lambda k: -share[k])
    reasons: list[str | None] = [None] * K
    wide = [False] * K
    extra: list[tuple[float | None, float | None]] = [(None, None)] * K
    for k in range(K):
        kind, c = kinds[k], curves[k]
        if kind == "circle" and c.valid:
            v = 1.0 / max(float(beta[k]), 1e-300)
            r_s = algebraic[k].r / scale  # the regression's radius, which v is about
            corr, noise = kasa_corrected_radius(r_s, v), radial_noise(r_s, v)
            if k in refined:  # the geometric circle's radius carries no Kasa bias
                corr = c.r / scale
            extra[k] = (
                None if corr is None else scale * corr,
                None if noise is None else scale * noise,
            )
        ss = _sd_size(kind, c, sds[k])
        wide[k] = ss is not None and not ss[0] <= max_relative_sd * ss[1]
        if share[k] < min_share:
            reasons[k] = f"empty (share {share[k]:.3f})"
        elif kind == "circle" and not c.valid:
            reasons[k] = "no real radius (r^2 < 0)"
        elif kind == "conic" and c.kind == "degenerate":
            reasons[k] = "degenerate conic"
        elif wide[k]:
            reasons[k] = f"posterior too wide (sd {ss[0]:.3g} px for size {ss[1]:.3g} px)"
        elif kind == "circle" and (extra[k][1] is None or extra[k][1] > max_relative_noise * c.r):
            noise = "too large" if extra[k][1] is None else f"{extra[k][1]:.3g} px"
            reasons[k] = f"poor fit (noise {noise} for r {c.r:.3g} px)"
    circle_noise = [extra[k][1] for k in range(K) if reasons[k] is None and kinds[k] == "circle"]
    for k in range(K):
        others = sorted(circle_noise)
        if reasons[k] is not None or kinds[k] != "circle" or len(others) < 2:
            continue
        others.remove(extra[k][1])
        typical = float(np.median(others))
        if extra[k][1] > max_noise_ratio * typical:
            reasons[k] = (
                f"poor fit (noise {extra[k][1]:.3g} px, the other circles' {typical:.3g} px)"
            )
    X = result.X.detach().cpu().numpy()
    m = result.mean.detach().cpu().numpy()
    xy = hard = None  # the points in pixels and their hard labels, read once
    if "circle" in kinds or (geometry.shared and kinds[0] == "conic"):
        xy = geometry.pixel_points(X, result.y.detach().cpu().numpy())
        hard = result.responsibilities.argmax(-1).cpu().numpy()
    if "circle" in kinds:
        on_grid = bool(np.allclose(xy, np.round(xy), rtol=0.0, atol=1e-6))
        grid = np.round(xy)
        ellipses: list[tuple[Candidate, Conic]] | None = None  # read once a circle is judged
        for k in range(K):
            c = curves[k]
            if reasons[k] is not None or kinds[k] != "circle":
                continue
            d = np.hypot(xy[hard == k, 0] - c.x0, xy[hard == k, 1] - c.y0)
            split = two_groups(d, max_gap=max_gap, min_group=min_group)
            if split is not None:
                reasons[k] = f"two curves (r {split[0]:.3g} and {split[1]:.3g} px)"
                continue
            noise = extra[k][1]
            if noise > noisy_ring * c.r:
                contrast = ring_contrast(xy, c.x0, c.y0, c.r, noise)
                if contrast < min_contrast:
                    reasons[k] = (
                        f"no ring (the points are as dense beside it as on it: contrast "
                        f"{contrast:.2f})"
                    )
                    continue
                if ring_by_chance(xy, c.x0, c.y0, c.r, noise):
                    reasons[k] = (
                        f"no ring (contrast {contrast:.2f}: no more than chance gives the "
                        "best of all circles)"
                    )
                    continue
            if on_grid:
                band = _band(xy, xy[hard == k], c, noise, min_edge_contrast, min_fill)
                if band is not None:
                    reasons[k] = band
                    continue
            shape = _systematic(xy[hard == k], c)
            if shape > max_shape * c.r:
                reasons[k] = (
                    f"another shape (its points depart from it smoothly by {shape:.3g} px "
                    f"for r {c.r:.3g} px)"
                )
                continue
            if on_grid:
                if ellipses is None:
                    ellipses = chain_ellipses(grid)
                e = part_of_ellipse(grid[hard == k], c, ellipses, grid, max_on_circle)
                if e is not None:
                    reasons[k] = _part_of(e)
    if geometry.shared and kinds[0] == "conic":
        for k in range(K):
            if reasons[k] is None:
                reasons[k] = _conic_fit(xy[hard == k], curves[k], max_relative_noise)
    for pos, k in enumerate(order):
        if reasons[k] is not None:
            continue
        for j in order[:pos]:
            if reasons[j] is not None or kinds[j] != kinds[k]:
                continue
            if kinds[k] == "circle":
                a, b = curves[j], curves[k]
                near = min(min_separation, 0.25 * min(a.r, b.r))
                same = math.hypot(a.x0 - b.x0, a.y0 - b.y0) + abs(a.r - b.r) < near
            elif geometry.shared:
                sd = math.sqrt(
                    0.5 / max(float(beta[j]), 1e-300) + 0.5 / max(float(beta[k]), 1e-300)
                )
                same = float(np.sqrt(np.mean((X @ (m[j] - m[k])) ** 2))) < sd
            else:
                same = False
            if same:
                reasons[k] = f"duplicate of expert {j + 1}"
                break
    if geometry.shared and kinds[0] in ("circle", "conic"):
        step = 2.0 * max(CHAIN_TAU, 2.0 * (_spacing(xy) if spacing is None else spacing))
        for k in range(K):
            w = _pixel_weights(curves[k]) if reasons[k] is None else None
            if w is None:
                continue
            cover, longest = arc_of(xy[hard == k], w, kinds[k], _perimeter(curves[k]), step)
            if cover < closed and longest < min_arc:
                reasons[k] = (
                    f"no arc (its points cover {cover:.2f} of its perimeter, the longest "
                    f"arc {longest:.2f})"
                )
        if kinds[0] == "circle":
            for k in order:  # the smaller shares first judged against the larger
                j = _along(k, order, reasons, curves, xy[hard == k], step)
                if j is not None:
                    reasons[k] = f"along expert {j + 1} (half its points lie on that curve)"
    return [
        CurveReport(
            expert=k,
            name=geometry.names[k],
            curve=curves[k],
            share=share[k],
            sd=sds[k],
            valid=reasons[k] is None,
            reason=reasons[k],
            wide=wide[k],
            r_corrected=extra[k][0],
            noise_px=extra[k][1],
        )
        for k in range(K)
    ]


def curve_distinct(
    fit: CurveFit,
    *,
    min_share: float = 0.01,
    min_separation: float = 2.0,
    duplicate_sd: float = 1.0,
    reports: list[CurveReport] | None = None,
) -> tuple[int, str]:
    """Number of distinct, used experts of a curve fit and a note on the rest: for circle
    and conic experts, those :func:`curve_reports` calls valid (the note lists the others'
    reasons; ``reports``: the fit's reports when the caller has made them); for other
    kinds, :func:`pyro_moe.selection.distinct_experts` of the core result.
    ``count == fit.experts`` means the fit is admissible."""
    if set(fit.expert_kinds) <= {"circle", "conic"}:
        if reports is None:
            reports = curve_reports(fit, min_share=min_share, min_separation=min_separation)
        bad = [f"{r.expert + 1}: {r.reason}" for r in reports if not r.valid]
        return sum(r.valid for r in reports), "; ".join(bad)
    return distinct_experts(fit.result, min_share=min_share, duplicate_sd=duplicate_sd)


#: The largest K that ``--experts auto`` tries on points without edge chains (a point set
#: off the pixel grid, or chains that give no candidate curve).
AUTO_MAX_EXPERTS = 5


def auto_range(candidates: list[Candidate], kind: str = "circle") -> tuple[int, int]:
    """The K that :func:`select_curves` tries by default, from the picture's edge chains
    (:func:`pyro_moe.curves.fitting.chain_candidates`): from the number S of closed
    candidates (covering :data:`~pyro_moe.shapes.chains.CLOSED` of their perimeter) up to
    max(S + A + 1, :data:`AUTO_MAX_EXPERTS`), A the arcs among them that cover at least
    :data:`NEW_ARC` [1] of their curve without closing it (a curve broken into arcs may be
    one of them; :func:`select_curves` also grows a circle range past this top while each
    K gains, :func:`gains`), the range ending at the first K that adds no
    admissible curve (:func:`no_gain`), so that the evidence for one curve beyond what the
    chains show is weighed (the extra expert starts on the next candidate, or where
    sequential RANSAC finds one among the points left), and a curve the chains miss (a
    small ring broken into short arcs) is still counted; 1 .. :data:`AUTO_MAX_EXPERTS`
    without closed candidates. Measured on ``circle_scene("small (r 8-15)")``, seeds 0-2:
    S = 1 and the range 1..2 chose K = 2 for three rings. Conics (``kind``) take S and
    S + 1 (growing past it while each K gains and its draw is cheap, :func:`too_costly`):
    a curve beyond the chains' starts from sequential RANSAC, 16384 minimal subsets per
    conic. Measured: the study's eye photo gives 37 candidates: the pupil
    (0.53 of its perimeter), three closed highlight rings, and 33 arcs of 12 to 100 points
    covering 0.17 to 0.49 of their circles; S = 3. Arcs alone (no closed candidate: sparse
    or jittered rings, whose chains break every few pixels) say nothing of K: 1 ..
    :data:`AUTO_MAX_EXPERTS`, K = 1, 2, ... until a K adds no admissible curve
    (:func:`no_gain`); measured on three sparse concentric rings in 50 % clutter (three
    arcs of 0.17 of their circles), S = 1 and the range 1..2 missed the third ring."""
    strong = sum(c.sweep >= CLOSED for c in candidates)
    if not strong:
        return 1, AUTO_MAX_EXPERTS
    # arcs that are no closed curve but a quarter of one or more (the reports' min_arc):
    # a curve broken into arcs may be one of them, and K may reach past them by one
    arcs = sum(NEW_ARC[1] <= c.sweep < CLOSED for c in candidates)
    if kind != "circle":  # a conic's RANSAC seed draws 16384 subsets per curve
        return strong, strong + 1
    return strong, max(strong + arcs + 1, AUTO_MAX_EXPERTS)


def no_gain(table: list[dict], margin: float = 3.0) -> bool:
    """Whether :func:`select_curves`' range from the picture ends at the last K of
    ``table`` (rows of :func:`pyro_moe.selection.select_experts`): a smaller K was
    admissible, and the last K is not, or scores no more than ``margin`` nats above the
    best admissible score before it. Then the choice (the smallest admissible K within
    ``margin`` of the best) is already among the rows, unless a larger K jumps past a K
    that adds nothing: with each K seeded from the same sequential draws (its first K - 1
    curves are those of K - 1), the extra curve of K is the best the points left offer, and
    when it is no curve, the next is less of one."""
    return any(row["admissible"] for row in table[:-1]) and not gains(table, margin)


#: How far past the top of :func:`auto_range` (x it) the range from the picture may grow,
#: one K at a time while each K gains (:func:`gains`).
GROWTH = 2


def gains(table: list[dict], margin: float = 3.0) -> bool:
    """Whether the last K of ``table`` is admissible and scores more than ``margin`` nats
    above every admissible K before it: then the range from the picture goes on past the
    top of :func:`auto_range` (to at most :data:`GROWTH` x it; a conic K only where its
    draw is cheap, :func:`too_costly`), since the chains may show fewer curves than the
    picture holds. Measured on drawings of nine circles (3 x 3, r 20-40 px, five of them
    dashed, 3 px on and 3 px off): the chains closed four, the range 4..5 ended at K = 5
    and chose it; grown, K = 9 with nine valid circles (three seeds). The same with nine
    ellipses (semi-major 25-50 px, five dashed): K = 5 before, 9 grown, each with a
    filled-ellipse overlap above 0.95 (`ellipse_drawing`, five seeds at 360^2, three at 600^2)."""
    last = table[-1]
    before = [row["score"] for row in table[:-1] if row["admissible"]]
    return bool(last["admissible"]) and (not before or last["score"] > max(before) + margin)


#: The most points a conic range from the picture may run its sequential draw on past
#: the top of :func:`auto_range` (:func:`too_costly`).
CONIC_DRAW_POINTS = 2048


def too_costly(data, K: int) -> bool:
    """Whether the seeded start of K conics (past the top of :func:`auto_range`) would run
    its sequential draw (16384 minimal subsets per conic,
    :func:`~pyro_moe.shapes.seeding.default_candidates`) on more than
    :data:`CONIC_DRAW_POINTS` points (:func:`~pyro_moe.curves.fitting.drawn_points`);
    False for circles (256 subsets per circle). Measured, the first conic's draw (CPU):
    0.42 s on the 754 points four closed ellipses leave in a 360^2 drawing of nine (five
    dashed; :func:`~pyro_moe.shapes.synthetic.ellipse_drawing`, seed 0), 0.85-0.88 s on
    1299 and 1890 points (the drawing at 600^2 and 900^2), 1.7 s on the 3416 points
    ``skimage.data.coffee``'s two rims leave (K = 4, refused, then took 3.8 s of auto's
    4.0 s). Past this the range stops growing; ``max_experts`` asks for more."""
    if data.geometry.kinds[0] != "conic":
        return False
    return drawn_points(data.with_experts(K)) > CONIC_DRAW_POINTS


def nothing_found(table: list[dict]) -> bool:
    """Whether :func:`select_curves`' range from the picture ends at the last K of
    ``table`` when no K was admissible: the last two K hold no more valid curves than the
    most before them (none when they are the first two). A picture without a curve
    (texture: ``skimage.data.camera``, ``rocket``, ``brick``) gives no valid circle at any
    K; measured, 0 valid circles at every K of 1..5, 2.6 to 6.1 s CPU for the five fits."""
    if len(table) < 2 or any(row["admissible"] for row in table):
        return False
    before = max((row["distinct"] for row in table[:-2]), default=0)
    return max(row["distinct"] for row in table[-2:]) <= before


#: The least share of its perimeter a new curve must hold, or of its longest arc (the
#: reports' ``closed`` and ``min_arc``), for :func:`no_new_arc` to call it an arc.
NEW_ARC = (CLOSED, 0.25)


#: How many noise sds (the fitted circle's ``noise_px``) from a fitted circle a new seed
#: curve may lie (|dc| + |dr|) and still be that circle's band, not a new curve
#: (:func:`no_new_arc`): with jitter, the points of a ring beyond the seed's inlier band
#: trace its outer or inner side. Measured on "jitter 1.5-2.5 px, concentric 2" (seeds
#: 4, 5, 8, 10, 24) and "jitter 2.5 px, apart 3" (seeds 3, 6): the K + 1-th seed curve
#: 3.5-4.6 px from a ring jittered by 1.5-2.5 px; K + 1 was fitted and not chosen (seed
#: 24: "no edge", 714 iterations, 0.28 s of auto's 0.33 s; now 0.05 s, the same K = 2).
BAND_SDS = 3.0


def _in_bands(seeds: list, fitted: list[tuple[float, float, float, float]]) -> bool:
    """Whether every seeded circle ((x0, y0, r), r NaN for none) lies in the band of a
    fitted circle (x0, y0, r, noise_px): within :data:`BAND_SDS` noise sds in |dc| + |dr|."""
    for x0, y0, r in seeds:
        if not r > 0:
            continue
        if not any(
            math.hypot(x0 - cx, y0 - cy) + abs(r - cr) <= BAND_SDS * noise
            for cx, cy, cr, noise in fitted
        ):
            return False
    return True


def _kasa(P: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The least-squares (Kasa) circle of points P (pixels): its weights and (x0, y0, r),
    r NaN for no real circle."""
    w = np.linalg.lstsq(*circle_design(P), rcond=None)[0]
    return w, circle_parameters(w)


def _data_spacing(data) -> float:
    """:func:`_spacing` of a curve problem's points, computed once per point set (every K
    of ``--experts auto`` reads it)."""
    if "spacing" not in data.cache:
        data.cache["spacing"] = _spacing(data.points.xy)
    return data.cache["spacing"]


def no_new_arc(
    data, K: int, *, seed: int = 0, fitted: list[tuple[float, float, float, float]] | None = None
) -> bool:
    """Whether the seed of K + 1 circles adds no arc to those of K: the points the seeded
    start of K + 1 gives its last expert (:func:`~pyro_moe.curves.fitting.start_labels`:
    the next chain candidate, or sequential RANSAC's next curve among the points the K
    curves leave, the same draw as K's) are fewer than 5, or their least-squares circle
    (Kasa, pixels) is no real circle, or they cover less than :data:`NEW_ARC` [0] of its
    perimeter with a longest arc under :data:`NEW_ARC` [1] (:func:`arc_of`, on the arcs of
    the reports' "no arc" rule), or they are no more than chance puts on the best of such
    circles (:func:`by_chance`), or every curve of the start of K + 1 runs in the band of
    a circle of the fit at K (``fitted``: (x0, y0, r, noise_px) of its valid circles;
    within :data:`BAND_SDS` of that circle's noise sd in |dc| + |dr|; all of them, since
    the start of K + 1 may order its curves otherwise than the fit at K: on
    ``circle_scene("small (r 8-15)", 2)`` its last curve was a ring the fit at K = 2
    held, and the ring it lacked was among the others). Then the fit of K + 1 starts its extra expert
    on no curve the points show, and (polished, not searched, beyond an admissible K) ends
    with no valid one. False for experts other than circles."""
    g = data.geometry
    if not g.shared or g.kinds[0] != "circle":
        return False
    data_k = data.with_experts(K + 1)
    labels = start_labels(data_k, seed=seed)
    new = labels == K
    if new.sum() < 5:
        return True
    xy = data.points.xy
    P = xy[new]
    w, (_, _, r) = _kasa(P)
    if not r > 0:  # (NaN: no real circle)
        return True
    if fitted and _in_bands([_kasa(xy[labels == k])[1] for k in range(K + 1)
                             if (labels == k).sum() >= 5], fitted):  # fmt: skip
        return True
    spacing = _data_spacing(data)
    if by_chance(xy, (labels < 0) | new, len(P), r, 2.0 * spacing):
        return True
    step = 2.0 * max(CHAIN_TAU, 2.0 * spacing)
    cover, longest = arc_of(P, w, "circle", 2 * math.pi * r, step)
    return cover < NEW_ARC[0] and longest < NEW_ARC[1]


def drawn_curves(data, limit: int, *, seed: int = 0) -> int:
    """How many curves the picture shows by the sequential draw alone: the number D of
    leading curves of the seeded start's draw (sequential RANSAC,
    :func:`~pyro_moe.curves.fitting.start_labels`) that each add an arc to those before
    them by :func:`no_new_arc` (at least 5 points, a real circle, more points than chance
    puts on the best circle, an arc by the reports' rule, and not in the band of a curve
    drawn before it, :func:`drawn_bands`), at most ``limit``; 0 for experts other than
    circles. :func:`select_curves` starts a range without closed chain candidates at
    K = D: each K below it would be fitted only to find that its seed of K + 1 adds an arc
    (the same test, on the same draw), and the fit at D is then the one ``fit_circles``
    makes with K = D given. Measured on the 469 sparse scenes (seeds 0-66, one run,
    ``benchmarks/results/scenes_sparse_drawn_seeds0-33.md``): the same K and circles on
    every scene, auto's median CPU per scene 44 -> 37 ms, on "sparse 2 apart" (K = 1 was
    fitted first, then K = 2) 17 -> 13 ms."""
    g = data.geometry
    if not g.shared or g.kinds[0] != "circle":
        return 0
    D = 0
    while D < limit and not no_new_arc(data, D, seed=seed, fitted=drawn_bands(data, D, seed)):
        D += 1
    return D


def drawn_bands(data, K: int, seed: int = 0) -> list[tuple[float, float, float, float]]:
    """(x0, y0, r, noise_px) of the first K curves of the sequential draw (pixels): each
    the least-squares (Kasa) circle of the points the start of K gives it, its noise the
    robust sd (1.4826 x the median absolute deviation) of the signed distances to it of
    every point within 4 seed bands (8 x the points' spacing) of it: the band
    :func:`no_new_arc` reads off a fit at K, without the fit (the seed's own inliers,
    within one band, would understate a jittered ring's spread)."""
    if K < 1:
        return []
    labels = start_labels(data.with_experts(K), seed=seed)
    xy = data.points.xy
    wide = 8.0 * _data_spacing(data)
    bands = []
    for k in range(K):
        P = xy[labels == k]
        if len(P) < 5:
            continue
        x0, y0, r = _kasa(P)[1]
        if not r > 0:
            continue
        signed = np.hypot(xy[:, 0] - x0, xy[:, 1] - y0) - r
        near = signed[np.abs(signed) <= wide]
        noise = 1.4826 * float(np.median(np.abs(near - np.median(near))))
        bands.append((float(x0), float(y0), float(r), noise))
    return bands


def by_chance(xy: np.ndarray, left: np.ndarray, n: int, r: float, tau: float) -> bool:
    """Whether n points on a circle of radius r are what chance gives the best of all the
    circles a seed could draw (:func:`no_new_arc`; an a-contrario test, the number of false
    alarms of EDCircles and LSD): the points ``left`` (a mask of xy) by the curves before
    it, spread evenly over the points' W x H box, put m = rho 2 tau 2 pi r in its band
    (tau: the seed's inlier distance, twice the points' spacing); with
    T = W H max(W, H) / 2 circles to choose from (centres on the pixels, radii to half the
    box), the count is chance when T P(Poisson(m) >= n) >= 1. Measured on "apart 2 + 20-50 %
    clutter" (seeds 0-11): once both rings are fitted the next seed curve is the best
    circle through the clutter, 11 and 15 points where m is 2.2 and 4.9 on seeds 2 and 6
    (false alarms 58 and 530), and
    without this test ``--experts auto`` fitted K = 3 there on 10 of 12 scenes (2 before the
    n / 2 bound of :func:`arc_of`; the kind's median 1.3x slower) for the reports to refuse
    it; a ring the fit lacks stands far above it (the smallest
    sparse ring, r = 19.7 px, 24 points in 50 % clutter: m = 4.7, false alarms 2e-3)."""
    lo, hi = point_box(xy)
    W, H = np.maximum(hi - lo, 1.0)
    m = int(left.sum()) / float(W * H) * 2.0 * tau * 2.0 * math.pi * r
    return _chance(n, m, _circles_tried(xy))


def _circles_tried(xy: np.ndarray) -> float:
    """The circles a seed or a fit could choose among the points xy: T = W H max(W, H) / 2
    (centres on the pixels of their W x H box, radii to half its larger side)."""
    lo, hi = point_box(xy)
    W, H = np.maximum(hi - lo, 1.0)
    return float(W * H * max(W, H) / 2.0)


def _chance(n: int, m: float, tests: float) -> bool:
    """Whether a count n is chance where m is expected, among ``tests`` tries: the
    expected number of false alarms, tests x P(Poisson(m) >= n), is at least 1."""
    from scipy.special import pdtrc  # P(Poisson(m) > k); scipy.stats is slow to import

    return bool(tests * pdtrc(n - 1, m) >= 1.0)


#: The options :func:`select_curves` reads besides :func:`pyro_moe.fit`'s: the range's
#: start (``seeded``) and :func:`~pyro_moe.selection.select_experts`' criterion.
SELECT_OPTIONS = (
    "seeded",
    "margin",
    "symmetry_correction",
    "min_share",
    "duplicate_sd",
    "cv",
    "loo",
)


def select_curves(
    source,
    *,
    design: str = "circle",
    max_experts: int | None = None,
    min_experts: int | None = None,
    model: str | Path | Model = "mixture_of_models",
    max_points: int | None = None,
    seed: int = 0,
    image_options: dict | None = None,
    min_separation: float = 2.0,
    **options: Any,
) -> Selection:
    """:func:`pyro_moe.selection.select_experts` on the curve design of points or an image.

    ``source`` is what :func:`pyro_moe.fit_curves` takes (image path or array, (N, 2)
    points, a PointSet, a point file). Each K is fitted as ``fit_curves`` fits it (the same
    :func:`~pyro_moe.curves.fitting.curve_fit_options`: the noise expert over the points'
    box, one noise precision per curve; ``search=`` and ``per_expert_noise=`` among
    ``options`` change them) and the results are
    :class:`~pyro_moe.curves.CurveFit`, so ``selection.result.circles()`` / ``.conics()``
    are in pixel units (circles refined as ``fit_curves`` refines them:
    :meth:`~pyro_moe.curves.result.CurveFit.refined`).

    The range of K: ``max_experts=None`` (default) takes it from the picture's edge chains
    (:func:`auto_range`: S to S + A + 1 for S closed candidates and A arcs, a circle range
    growing past it while each K gains, :func:`gains`; conics S and S + 1, growing alike
    while the draw is cheap, :func:`too_costly`), each K then
    started as
    ``fit_curves`` starts it (the chains' candidates; ``seeded``) and without the search
    (``search=None``: off where the chains start the fit); for points without closed
    candidates, and whenever ``max_experts`` is given, K = ``min_experts`` (default 1) ..
    ``max_experts`` (:data:`AUTO_MAX_EXPERTS` when None) from the engine's restarts with the
    search, as before (``seeded=True`` starts them from sequential RANSAC: better for many
    curves, worse with heavy clutter, see the comment in the code). The defaults (the noise
    expert on) are :data:`~pyro_moe.curves.fitting.CURVE_DEFAULTS`.

    A fit at K is admissible when its experts are distinct
    (:func:`curve_distinct`; ``min_separation`` pixels between circles). ``options`` go to
    :func:`~pyro_moe.selection.select_experts` and on to :func:`pyro_moe.fit`. The model
    file is loaded once.
    """
    image_options = take_image_options(image_options, options)
    check_fit_options(options, "select_curves", also=SELECT_OPTIONS)
    options = with_curve_defaults(options)
    model = load_model(model)
    data = curve_data(
        source, 1, design=design, model=model, max_points=max_points, seed=seed,
        image_options=image_options,
    )  # fmt: skip
    per_expert_noise = options.pop("per_expert_noise", True)
    search = options.pop("search", None)
    curve = curve_fit_options(data, per_expert_noise=per_expert_noise)
    curve.pop("search")  # per K, in start(K)
    # a subsample of the pixels (max_points) breaks the chains: the default range then
    cands = (
        chain_candidates(data) if len(data.points.xy) == len(data.y) and max_points is None else []
    )
    from_picture = max_experts is None
    low_given = min_experts
    high = None
    if max_experts is None:  # the range from the picture
        low, high = auto_range(cands, data.geometry.kinds[0])
        min_experts = low if min_experts is None else min_experts
        high = max(high, min_experts)
        max_experts = GROWTH * high  # past high only while each K gains (stop)
    elif min_experts is None:
        min_experts = 1
    # Seeded by default where the range comes from the picture (the chains' curves, else
    # sequential RANSAC's), K growing until it adds no admissible curve (no_gain); with
    # max_experts given, every K from the engine's restarts with the search, as before.
    # Measured (benchmarks/scenes.py --set sparse, seeds 0-2): the restarts took 4-12 s
    # per jittered scene; seeded with the stop, see docs/guide.md.
    seeded = options.pop("seeded", None)
    seeded = from_picture if seeded is None else seeded
    stop = None
    rows: list[dict] = []  # the table so far, as stop sees it
    if from_picture and options.get("cv") is None:  # chains or not: K grows while it gains
        margin = float(options.get("margin", 3.0))

        def stop(table: list[dict]) -> bool:
            rows[:] = table
            if no_gain(table, margin) or nothing_found(table):
                return True
            if high is not None and table[-1]["experts"] >= high:
                if not gains(table, margin) or too_costly(data, table[-1]["experts"] + 1):
                    return True
            # an admissible K whose K + 1 seed adds no arc: K + 1 has no curve to add
            if not table[-1]["admissible"]:
                return False
            bands = last.get(table[-1]["experts"], [])
            return no_new_arc(data, table[-1]["experts"], seed=seed, fitted=bands)

    def start(K: int) -> dict:  # with seeded=True, each K starts where fit_curves does
        data_k = data.with_experts(K)
        # the search: from a seeded start only where the polished seeds leave something to
        # fix (as fit_curves runs it)
        if not seeded:
            on = True if search is None else bool(search)
            return {"search": curve_fit_options(data_k, search=on)["search"]}
        seeds = seeded_start(data_k, model, options, per_expert_noise=per_expert_noise, seed=seed)
        # off where the chains start the fit: their curves, and those beyond them judged by
        # the reports and the ELBO (measured on coins, K = 25 with the search: 1.7 s CPU,
        # without 0.16 s, the same K = 24 chosen)
        on = (not (seeds and chains_start(data_k))) if search is None else bool(search)
        polish = search is None and bool(seeds)
        if polish and stop is not None and any(row["admissible"] for row in rows):
            # Beyond an admissible K, K asks only whether the curve the seed adds (sequential
            # RANSAC's next, the best the points left offer) holds: polished, not searched.
            # Measured on the sparse scene set (seeds 0-2 and 10-14, 56 scenes): no move of
            # the search was kept at a K up to the true one; at the true K + 1 it took 2 to
            # 8 refits, 20 to 550 ms CPU, most of auto's time, and made none admissible.
            on = False
        policy = curve_fit_options(data_k, search=on, seeded=polish)["search"]
        return {"search": policy, **seeds}

    min_share = options.get("min_share", 0.01)
    duplicate_sd = options.get("duplicate_sd", 1.0)

    last: dict[int, list] = {}  # K -> its fit's valid circles with their noise, for stop

    def distinct(fit: CurveFit) -> tuple[int, str]:
        if not set(fit.expert_kinds) <= {"circle", "conic"}:
            return curve_distinct(fit, min_share=min_share, min_separation=min_separation,
                                  duplicate_sd=duplicate_sd)  # fmt: skip
        if "report_spacing" not in data.cache:  # the same points at every K
            X, y = (v.detach().cpu().numpy() for v in (fit.X, fit.y))
            data.cache["report_spacing"] = _spacing(fit.geometry.pixel_points(X, y))
        reports = curve_reports(fit, min_share=min_share, min_separation=min_separation,
                                spacing=data.cache["report_spacing"])  # fmt: skip
        last[fit.experts] = [
            (r.curve.x0, r.curve.y0, r.curve.r, r.noise_px)
            for r in reports
            if r.valid and isinstance(r.curve, Circle) and r.noise_px is not None
        ]
        return curve_distinct(
            fit, min_share=min_share, min_separation=min_separation, duplicate_sd=duplicate_sd,
            reports=reports,
        )  # fmt: skip

    def run(low: int) -> Selection:
        rows.clear()
        last.clear()
        return select_experts(
            model,
            data.X,
            data.y,
            max_experts=max_experts,
            min_experts=low,
            seed=seed,
            start=start,
            wrap=lambda K, res: CurveFit(res, data.geometry.repeated(K)).refined(),
            distinct=distinct,
            stop=stop,
            **curve,
            **options,
        )

    # Where the chains hold no arc (no candidate covering a quarter of its curve: points,
    # not edges, such as sparse or jittered rings) the range starts where the draw's curves
    # stop adding arcs (drawn_curves), not at K = 1; should the fit there not hold that
    # many valid curves, the range starts at min_experts after all (the K below are then
    # fitted). Not on edges with arcs: their structure is no uniform clutter, and the
    # draw's chance count found 5-10 "curves" on skimage's camera, rocket and moon, whose
    # fits at that K held none (and auto took 2-5x as long).
    drawn = 0
    if stop is not None and low_given is None and not any(c.sweep >= NEW_ARC[1] for c in cands):
        drawn = drawn_curves(data, max_experts, seed=seed)
    selection = None
    if drawn > 1:
        selection = run(drawn)
        if not (selection.table[0]["admissible"] and len(last.get(drawn, [])) == drawn):
            selection = None
    if selection is None:
        selection = run(min_experts)
    else:
        selection.criterion += (
            f"; K < {drawn} not fitted: the sequential draw's first {drawn} curves each add an "
            "arc beyond chance, and the fit at that K holds as many valid circles"
        )
    selection.settings["min_separation"] = min_separation
    selection.settings["drawn_curves"] = drawn
    return selection


def select_circles(source, *, max_experts: int | None = None, **options: Any) -> Selection:
    """Circles: ``select_curves(source, design="circle", ...)``."""
    return select_curves(source, design="circle", max_experts=max_experts, **options)
