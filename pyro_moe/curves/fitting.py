"""Curves from points or binary images: the showcase application in one call.

One pipeline for every curve fit: points (from an image, an array or a PointSet) are
standardized (one centre, one scale), the experts' names (``"circle"`` K times, or a mix
such as ``["circle", "ellipse"]``) are looked up in the model file's ``EXPERTS``, and
:func:`curve_data` builds the design and the :class:`~pyro_moe.shapes.geometry.Geometry`
that maps the fitted weights back to curves in pixel units (x = column, y = row from the
top-left). Experts of one form share one design (a circle is the regression of
t = x^2 + y^2 on X = [x, y, 1], CAVI's fast path); experts of different forms each see the
design through their own map (:mod:`pyro_moe.experts`). The fit is the core
:func:`pyro_moe.fit` with the curve options (:func:`curve_fit_options`:
``prior_units="unit"``, the expert maps, the noise expert's support, the search with the
plausible-curve rule) and its result a :class:`~pyro_moe.curves.result.CurveFit`:
``fit.curves()`` reports each expert as its own kind of curve. The model file is loaded
once per call.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
import torch

from ..config import learn_set
from ..errors import InputError
from ..fitting import fit
from ..model_file import Model, load_model
from ..search import SearchPolicy, SearchReport
from ..shapes.chains import CLOSED, Candidate, chain_curves, curve_distance
from ..shapes.curves import MAX_RELATIVE_NOISE, radial_noise
from ..shapes.geometry import FORMS, Geometry, target_name
from ..shapes.image import image_to_points
from ..shapes.points import PointSet, Standardization, is_point_file, read_points, validate_points
from ..shapes.seeding import MIN_COVERAGE, coverage, plausible, point_box, sequential_curves
from .design import (
    curve_design,
    curve_layout,
    expert_names,
    form_design,
    one_form,
    target_range,
)
from .result import CurveFit

#: The curve functions' own defaults where they differ from :func:`pyro_moe.fit`'s, in one
#: home: :func:`fit_curves`, :func:`pyro_moe.select_curves` and the command line
#: (``circles``, ``conics``, ``curves``, whose ``--noise-expert`` defaults to None: this)
#: read them here, so the API and the command give the same curves. ``noise_expert``: a
#: uniform background component for stray pixels, on (a photo's edges always hold some;
#: measured on ``skimage.data.coffee``, conics K = 2, without it both ellipses ran through
#: the table, semi-axes 266 x 169 and 299 x 73 px).
CURVE_DEFAULTS: Mapping[str, Any] = MappingProxyType({"noise_expert": True})


def with_curve_defaults(options: dict) -> dict:
    """``options`` with :data:`CURVE_DEFAULTS` filled in where they are absent or None."""
    out = dict(options)
    for name, value in CURVE_DEFAULTS.items():
        if out.get(name) is None:
            out[name] = value
    return out


#: The least height and width of an image given as an array (see :func:`as_points`).
MIN_IMAGE_SIDE = 4


def is_image_array(arr: np.ndarray) -> bool:
    """The rule that tells an image array from anything else (points are (N, 2) and never
    boolean): an image is (H, W) or (H, W, 1..4) with H, W >= :data:`MIN_IMAGE_SIDE`, of
    booleans or integers, or of floats in [0, 1]. So an (N, 3) array is never an image."""
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and not 1 <= arr.shape[2] <= 4):
        return False
    if min(arr.shape[:2]) < MIN_IMAGE_SIDE:
        return False
    if arr.dtype == bool or np.issubdtype(arr.dtype, np.integer):
        return True
    if np.issubdtype(arr.dtype, np.floating):
        return bool(np.isfinite(arr).all() and arr.min() >= 0 and arr.max() <= 1)
    return False


def _point_set(xy: np.ndarray, max_points: int | None, seed: int) -> PointSet:
    """Checked points, at most ``max_points`` of them drawn at random with ``seed``."""
    xy = validate_points(xy)
    if max_points is not None and len(xy) > max_points:
        keep = np.sort(np.random.default_rng(seed).choice(len(xy), max_points, replace=False))
        xy = xy[keep]
    return PointSet(xy, Standardization.fit(xy), None)


def as_points(source, *, max_points: int | None = None, seed: int = 0, **image_options) -> PointSet:
    """A :class:`PointSet` from a PointSet, an (N, 2) array of (x, y), a point file (a path
    ending in ``.csv``, ``.txt`` or ``.npy``: :func:`pyro_moe.shapes.points.read_points`),
    or an image (any other path, or an array that :func:`is_image_array` calls an image);
    any other array is an InputError (an (N, 3) array is neither: it is refused, not read
    as an image)."""
    if isinstance(source, bytes):  # a path as bytes (os.fsencode)
        source = os.fsdecode(source)
    if isinstance(source, PointSet):
        ps = source
    elif isinstance(source, str | Path) and is_point_file(source):
        ps = _point_set(read_points(source), max_points, seed)
    elif isinstance(source, str | Path):
        ps = image_to_points(source, max_points=max_points, seed=seed, **image_options)
    else:
        try:
            arr = np.asarray(source)
        except (TypeError, ValueError) as e:
            raise InputError(
                f"points or image must be an array, a path or a PointSet: {e}"
            ) from None
        if arr.ndim == 2 and arr.shape[1] == 2 and arr.dtype != bool:
            ps = _point_set(source, max_points, seed)  # its mask, column names, complex parts
        elif is_image_array(arr):
            ps = image_to_points(arr, max_points=max_points, seed=seed, **image_options)
        else:
            raise InputError(
                f"cannot read an array of shape {arr.shape} and dtype {arr.dtype} as points or "
                "as an image: points are an (N, 2) array of (x, y); an image array is (H, W) "
                f"or (H, W, channels) with H, W >= {MIN_IMAGE_SIDE}, of booleans, integers or "
                "floats in [0, 1]"
            )
    return ps


#: Options of :func:`pyro_moe.shapes.image.image_to_points` that the curve functions also
#: take as keywords (``fit_circles(img, edges=True)``), as well as in ``image_options``.
IMAGE_OPTIONS = ("threshold", "invert", "edges", "edge_sigma", "max_pixels")


def take_image_options(image_options: dict | None, options: dict) -> dict:
    """``image_options`` with the :data:`IMAGE_OPTIONS` given as keywords among
    ``options`` moved into it (they leave ``options``): ``fit_circles(img, edges=True)``
    and ``select_circles(img, edges=True)`` read the picture as ``image_options=
    {"edges": True}`` does."""
    image_options = dict(image_options or {})
    for name in IMAGE_OPTIONS:
        if name in options:
            image_options[name] = options.pop(name)
    return image_options


@dataclass(frozen=True)
class CurveData:
    """A curve-fitting problem: design X, target y, expert maps (None when every expert
    has the same form), the geometry of the K experts, and the support (lo, hi) of the
    noise expert over the points' bounding box (:func:`target_range`)."""

    X: np.ndarray
    y: np.ndarray
    maps: torch.Tensor | None
    geometry: Geometry
    points: PointSet
    noise_range: tuple[float, float]
    cache: dict = field(default_factory=dict, compare=False, repr=False)

    @property
    def experts(self) -> int:
        return self.geometry.experts

    def with_experts(self, K: int) -> CurveData:
        """The same problem with K experts of its (shared) form; its cache is shared, so
        every K of ``--experts auto`` reads the chains, the standardized points and the
        sequential draw once."""
        return replace(self, geometry=self.geometry.repeated(K))


#: The distance (pixels) within which a point joins a chain candidate's curve in the seeded
#: start, and which the chains join arcs by: two raster steps.
CHAIN_TAU = 2.0


def chain_candidates(data: CurveData) -> list[Candidate]:
    """The candidate curves of the points' edge chains (:func:`pyro_moe.shapes.chains.
    chain_curves`, best first; computed once per :class:`CurveData`): [] for points off
    the pixel grid, and for experts of several forms or without a circle or conic form."""
    g = data.geometry
    kind = g.kinds[0]
    if not g.shared or kind not in ("circle", "conic"):
        return []
    if "chains" not in data.cache:
        data.cache["chains"] = chain_curves(data.points.xy, kind, tau=CHAIN_TAU)
    return data.cache["chains"]


def standard_points(data: CurveData) -> np.ndarray:
    """The standardized points of ``data`` (:attr:`PointSet.standard`), computed once per
    :class:`CurveData` (each K of ``--experts auto`` reads them again; each reading checked
    and mapped the points anew)."""
    if "standard" not in data.cache:
        data.cache["standard"] = data.points.standard
    return data.cache["standard"]


def chains_seed(data: CurveData) -> bool:
    """Whether the edge chains give each of the K experts a closed curve: at least K
    candidates, each covering :data:`CLOSED` of its perimeter (a curve only partly seen,
    such as the study's eye photo's pupil, 0.53, may be ranked above a larger one the chains
    miss, and a start on it loses that one: K = 2 on that photo lost the outer iris)."""
    cands = chain_candidates(data)[: data.experts]
    return len(cands) == data.experts and all(c.sweep >= CLOSED for c in cands)


def chains_explain(data: CurveData) -> bool:
    """Whether the edge chains explain the picture: they seed every expert
    (:func:`chains_seed`) and the K candidates hold :data:`CHAINS_EXPLAIN` of the points.
    Then the search over fixed points has nothing to add
    (no point left unexplained by a curve) and :func:`fit_curves` skips it."""
    if not chains_seed(data):
        return False
    cands = chain_candidates(data)[: data.experts]
    held = sum(len(c.points) for c in cands)
    return held >= CHAINS_EXPLAIN * len(data.points.xy)


#: The least share of all points the K chain candidates must hold for :func:`chains_explain`
#: (else a larger curve the chains do not show, broken by texture, may hold more points:
#: measured on the study's eye photo, K = 2, the pupil and a highlight hold 9 % of the
#: edge points, and the outer iris, which the search finds, is no candidate).
CHAINS_EXPLAIN = 0.5


def start_labels(data: CurveData, *, seed: int = 0) -> np.ndarray:
    """Labels (N,) of a seeded start (0..K-1, -1: no curve): where the chains start the fit
    (:func:`chains_start`), the K best chain candidates (:func:`chain_candidates`), each
    taking the points within :data:`CHAIN_TAU` pixels of its curve that a better one has
    not taken, and for an expert beyond the candidates sequential RANSAC among the points
    they leave; else sequential RANSAC
    (:func:`pyro_moe.shapes.seeding.seed_curves`) on all points, as before the chains
    (measured on the study's eye photo, K = 2: the chains' pupil and highlight as the start
    lost the outer iris, which RANSAC's start and the search find)."""
    K = data.experts
    if not chains_start(data):
        return sequential_labels(data, None, K, seed=seed)
    labels, taken = chain_labels(data), chain_seeds(data)
    if taken < K:  # the experts beyond the chains' curves: RANSAC on what is left
        left = np.flatnonzero(labels < 0)
        sub = sequential_labels(data, left, K - taken, seed=seed)
        labels[left[sub >= 0]] = taken + sub[sub >= 0]
    return labels


def chain_labels(data: CurveData) -> np.ndarray:
    """Labels (N,) of the chains' part of a seeded start (:func:`start_labels`): the
    :func:`chain_seeds` best candidates, each taking the points within :data:`CHAIN_TAU`
    pixels of its curve that a better one has not taken; -1 for the rest (all of them when
    the chains seed no expert)."""
    kind = data.geometry.kinds[0]
    xy = data.points.xy
    labels = np.full(len(xy), -1)
    for k, c in enumerate(chain_candidates(data)[: chain_seeds(data)]):
        labels[(labels < 0) & (curve_distance(xy, c.weights, kind) <= CHAIN_TAU)] = k
    return labels


def drawn_points(data: CurveData) -> int:
    """How many points the sequential draw of a seeded start (:func:`start_labels`) of
    ``data.experts`` curves runs on: those the chains' candidates leave (all points when
    the chains seed no expert); 0 when the chains seed every expert (no draw)."""
    if chain_seeds(data) >= data.experts:
        return 0
    return int((chain_labels(data) < 0).sum())


def sequential_labels(
    data: CurveData, subset: np.ndarray | None, curves: int, *, seed: int = 0
) -> np.ndarray:
    """:func:`pyro_moe.shapes.seeding.seed_curves` of ``curves`` curves on the standardized
    points (``subset``: those of these indices; None: all), from one sequential draw per
    (subset, seed) kept in ``data.cache``: the first K curves of K + 1 are those of K, so
    ``--experts auto``'s K = 1, 2, ... draw each curve once (measured on three rings in
    50 % clutter, K = 1..4: 2.0 s of seeding before, one draw of 4 curves after)."""
    kind = data.geometry.kinds[0]
    P = standard_points(data) if subset is None else standard_points(data)[subset]
    key = ("sequential", seed, None if subset is None else subset.tobytes())
    if key not in data.cache:
        data.cache[key] = (sequential_curves(P, FORMS[kind], kind, seed=seed), [])
    steps, done = data.cache[key]
    while len(done) < curves:
        nxt = next(steps, None)
        if nxt is None:
            break
        done.append(nxt)
    if not done or curves < 1:
        return np.full(len(P), -1)
    return done[min(curves, len(done)) - 1].copy()


def chains_start(data: CurveData) -> bool:
    """Whether a seeded start takes any of the chains' candidates (:func:`chain_seeds`)."""
    return chain_seeds(data) > 0


def chain_seeds(data: CurveData) -> int:
    """How many experts a seeded start takes from the chains' candidates, best first: all
    K (at most the candidates there are) when the first K - 1 are closed (:data:`CLOSED`),
    so that ``--experts auto``'s K = S + 1 starts from the S curves and one more (the next
    candidate, or RANSAC's among the points left); else the closed candidates that lead
    the ranking, the rest of the K from sequential RANSAC among the points they leave
    (measured on ``circle_scene("small (r 8-15)")``: two candidates, 0.96 and 0.69 of
    their circles, the third ring, r = 8 px, broken into arcs shorter than 10 px; K = 3
    then started from the first candidate and two RANSAC curves). 0 when the best
    candidate is not closed: the study's eye photo ranks its pupil (0.53 of its
    perimeter) first, and a start on the highlights that follow lost the outer iris,
    which RANSAC's start finds."""
    K = data.experts
    cands = chain_candidates(data)[:K]
    closed = [c.sweep >= CLOSED for c in cands]
    lead = next((i for i, c in enumerate(closed) if not c), len(closed))
    if lead >= max(K - 1, 1):
        return len(cands)
    return lead


def curve_data(
    source,
    experts: int | Sequence[str] | str = 2,
    *,
    design: str = "circle",
    model="mixture_of_models",
    max_points: int | None = None,
    seed: int = 0,
    image_options: dict | None = None,
    allow_mixed_targets: bool = False,
) -> CurveData:
    """The design, target and geometry of a curve fit on the standardized points of
    ``source`` (see the module docstring). A count of ``experts`` above the number of
    points is refused before anything of size K is built."""
    ps = as_points(source, max_points=max_points, seed=seed, **(image_options or {}))
    names = expert_names(experts, design, points=len(ps))
    catalog = load_model(model).expert_catalog
    one = one_form(names, catalog)  # one expert named K times: no layout (its maps unused)
    lay = None if one is not None else curve_layout(
        names, catalog, allow_mixed_targets=allow_mixed_targets
    )  # fmt: skip
    listed = (one,) * len(names) if lay is None else lay.experts
    need = max(e.size for e in listed)
    shared = all(e == listed[0] for e in listed)
    if len(ps) < need:
        what = f"a {names[0]}" if shared else "these experts"
        raise InputError(f"need at least {need} points to fit {what}, got {len(ps)}")
    st = ps.standardization
    kinds = tuple(e.kind for e in listed)
    standard = ps.standard  # mapped once: the design, the noise range and the seeds read it
    cache = {"standard": standard}
    if shared:  # one form: its features and target (y, the observed targets), no maps
        e = listed[0]
        X, y = form_design(e, standard)
        geometry = Geometry(names, kinds, e.features, target_name(e.response, e.offset), st, True)
        noise_range = target_range(standard, e.response, e.offset, targets=y)
        return CurveData(X, y, None, geometry, ps, noise_range, cache)
    X, y = curve_design(lay, standard)
    geometry = Geometry(names, kinds, lay.columns, lay.response, st, False)
    return CurveData(X, y, lay.maps, geometry, ps, target_range(standard, lay.response), cache)


#: The share of every point each component keeps in a seeded start. Small: the first
#: weight update is a least-squares fit of t, whose residual grows with the square of a
#: point's distance to the curve, so a floor of 0.02 / C from every point of the picture
#: outweighed each coin's own rim (measured on coins: radii of 60-150 px after one sweep,
#: still so at 1e-6).
FLOOR = 1e-12


def seed_responsibilities(
    data: CurveData, *, noise_expert: bool, seed: int = 0
) -> tuple[np.ndarray, np.ndarray] | None:
    """A start from :func:`start_labels` (the edge chains' candidates, then sequential
    RANSAC for the curves they do not give): responsibilities (N, K [+ 1]), each curve's inliers on its expert, the points no curve
    explains on the noise expert (without one: on the curve of the smallest residual), every
    component
    keeping :data:`FLOOR` / C of each point; and the initial noise precisions (K,),
    beta_k = 1 / mean (t_i - phi_i^T w_k)^2 over curve k's inliers with w_k their least
    squares fit (the median of these for an expert no curve was found for). Without the
    latter, the first update weighs a precise ring's points with the default
    beta = 1 / Var(t), and the weight prior pulls every circle away from its ring
    (measured on ``skimage.data.coins``: radii of 100+ px after one sweep). None for
    experts of several forms or of a form without a curve kind."""
    g = data.geometry
    kind = g.kinds[0]
    if not g.shared or kind not in FORMS:
        return None
    labels = start_labels(data, seed=seed)
    K = data.experts
    C = K + int(noise_expert)
    R = np.zeros((len(labels), C))
    hit = labels >= 0
    R[hit, labels[hit]] = 1.0
    beta = np.full(K, np.nan)
    found = np.unique(labels[hit])
    W = np.zeros((K, data.X.shape[1]))
    for k in found:  # one least-squares solve per curve found
        on = labels == k
        X_k, y_k = data.X.compress(on, axis=0), data.y.compress(on)  # X[on], y[on], faster
        W[k] = np.linalg.lstsq(X_k, y_k, rcond=None)[0]
        beta[k] = 1.0 / max(float(np.mean((y_k - X_k @ W[k]) ** 2)), 1e-300)
    if noise_expert:
        R[~hit, K] = 1.0
    elif len(found):  # the curve whose target residual is smallest
        res = np.abs(data.y[~hit, None] - data.X[~hit] @ W[found].T)
        R[np.flatnonzero(~hit), found[res.argmin(-1)]] = 1.0
    else:
        R[~hit, :] = 1.0 / K
    if not np.isfinite(beta).any() and not float(data.y.var()) > 0:
        return None  # no curve seeded and a constant target (too few points): the default
    finite = np.isfinite(beta)
    if not finite.all():  # the experts no curve was found for
        fill = float(np.nanmedian(beta)) if finite.any() else 1.0 / float(data.y.var())
        beta = np.where(finite, beta, fill)
    return (1.0 - FLOOR) * R + FLOOR / C, beta


def plausible_experts(data: CurveData):
    """The curve application's admissibility rule for the search
    (:class:`pyro_moe.search.SearchPolicy`): a map from the posterior-mean weights (K, n) in standard units to
    (K,) booleans, True where an expert's curve is one the picture shows: a curve of its
    kind in the points' box (:func:`pyro_moe.shapes.seeding.plausible`; for conics a real
    ellipse of axis ratio >= 1/4, since the double line a thin conic degenerates into fits
    straight edges to second order) whose visible arcs hold points on at least
    :data:`~pyro_moe.shapes.seeding.MIN_COVERAGE` of their length
    (:func:`pyro_moe.shapes.seeding.coverage`: a circle through an iris's texture only
    crosses it). None for experts of several forms or of a form without a curve kind."""
    g = data.geometry
    kind = g.kinds[0]
    if not g.shared or kind not in FORMS:
        return None
    P = standard_points(data)
    box = point_box(P)
    extent = float(np.linalg.norm(box[1] - box[0]))
    form = FORMS[kind]
    if "tau" not in data.cache:  # one nearest-neighbour query per point set, not per K
        from scipy.spatial import cKDTree

        data.cache["tau"] = 2.0 * float(np.median(cKDTree(P).query(P, k=2)[0][:, 1]))
    tau = data.cache["tau"]

    def check(W: torch.Tensor) -> torch.Tensor:
        w = W.detach().cpu().numpy().astype(np.float64)[:, : len(form[0])]
        ok = plausible(kind, w, extent, box)
        ok &= coverage(P, w, form, kind, tau) >= MIN_COVERAGE
        return torch.as_tensor(ok, device=W.device)

    return check


def fit_curves(
    source,
    *,
    design: str = "circle",
    experts: int | Sequence[str] | str = 2,
    model="mixture_of_models",
    max_points: int | None = None,
    seed: int = 0,
    image_options: dict | None = None,
    allow_mixed_targets: bool = False,
    search: bool | None = None,
    per_expert_noise: bool = True,
    seeded: bool = True,
    **fit_options,
) -> CurveFit:
    """Fit curves to points or an image; a :class:`~pyro_moe.curves.result.CurveFit`.

    ``experts`` is a number of curves of kind ``design`` ("circle" or "conic"), or the
    experts' names (a list, or "circle,ellipse"), each with its own feature map as the
    model file declares it (``EXPERTS``; the default model, ``models/mixture_of_models.py``,
    declares circle, ellipse, conic and line). Experts that model different targets (a
    line with conics) need ``allow_mixed_targets=True`` (see :mod:`pyro_moe.experts`).

    ``per_expert_noise`` (default on): one noise precision per curve. The noise of
    t = x^2 + y^2 about a ring grows with its radius (about 2 r sigma), so one shared
    precision makes a large ring look noisy and a small one precise; measured on the scenes
    of ``benchmarks/scenes.py``, per-curve noise with the search solved 14 of 14, one shared
    precision 12. ``search``: after the restarts, re-seed experts that duplicate another or
    lose to the noise expert or are implausible curves (:func:`plausible_experts`), keeping
    a move only when the converged objective improves (:mod:`pyro_moe.search`); None
    (default): on, unless the start is seeded and the edge chains give every expert a curve
    seen all round and holding most points (:func:`chains_explain`: then no point is left for the search to explain;
    on ``skimage.data.coins`` the search took 2.5 of 5.8 s and moved nothing); from a
    seeded start it then runs only where the polished fit holds an expert the seeds did
    not explain (:class:`SeededSearch`, :func:`seeds_explain`); True: always, in full. ``seeded``
    (default on, for experts of one kind, when neither ``init`` nor ``responsibilities`` is
    given): start from the curves of the edge chains and, for those they do not give, from
    sequential RANSAC (:func:`seed_responsibilities`) instead of the engine's restarts;
    measured on ``skimage.data.coins`` (24 coins), the restarts found none of them.
    While the fit holds a circle that is a band of clutter rather than a ring
    (:func:`noisy_circles`), up to :data:`SEEDED_RESTARTS` further seeded starts (other
    random draws of the seed) are fitted and the highest objective kept.
    ``noise_expert`` and the curve functions' other defaults: :data:`CURVE_DEFAULTS`. ``fit_options`` go to :func:`pyro_moe.fit` (method, n_init,
    learn, priors, ...).
    The image options (:data:`IMAGE_OPTIONS`: ``threshold``, ``invert``, ``edges``,
    ``edge_sigma``, ``max_pixels``) may be given as keywords or in ``image_options``.
    Priors are in standardized units. Use ``result.curves()`` (each expert as its kind),
    or ``result.circles()`` / ``result.conics()``: each circle is the weighted geometric
    least-squares circle of its points, the responsibilities the weights
    (:meth:`~pyro_moe.curves.result.CurveFit.refined`; the core result ``fit.mean`` stays
    the model's posterior). ``model`` (a name, a path or a loaded
    :class:`~pyro_moe.model_file.Model`) is loaded once.
    """
    image_options = take_image_options(image_options, fit_options)
    check_fit_options(fit_options, "fit_curves", also=("subsample",))
    model = load_model(model)
    fit_options = with_curve_defaults(fit_options)
    if is_distributed_points(source, fit_options):
        from .distributed import fit_curves_on_dask

        return fit_curves_on_dask(
            source, design=design, experts=experts, model=model, seed=seed,
            allow_mixed_targets=allow_mixed_targets, search=search is not False,
            per_expert_noise=per_expert_noise, seeded=seeded, fit_in_memory=fit_curves,
            **fit_options,
        )  # fmt: skip
    data = curve_data(
        source, experts, design=design, model=model, max_points=max_points, seed=seed,
        image_options=image_options, allow_mixed_targets=allow_mixed_targets,
    )  # fmt: skip
    start = (
        seeded_start(data, model, fit_options, per_expert_noise=per_expert_noise, seed=seed)
        if seeded
        else {}
    )
    polish = search is None and bool(start)  # the search only where the seeds need it
    if search is None:
        search = not (start and chains_explain(data))
    search = search is not False
    options = curve_fit_options(
        data, search=search, per_expert_noise=per_expert_noise, seeded=polish
    )
    result = CurveFit(
        fit(model, data.X, data.y, experts=data.experts, seed=seed, **options,
            **{**fit_options, **start}),
        data.geometry,
    )  # fmt: skip
    for extra in range(1, SEEDED_RESTARTS + 1 if start else 1):
        if not noisy_circles(result):
            break
        other = seeded_start(
            data, model, fit_options, per_expert_noise=per_expert_noise, seed=seed + extra
        )
        again = CurveFit(
            fit(model, data.X, data.y, experts=data.experts, seed=seed, **options,
                **{**fit_options, **other}),
            data.geometry,
        )  # fmt: skip
        if again.objective > result.objective:
            result = again
    return result.refined()


#: The most further seeded starts :func:`fit_curves` makes (with the seed's random draws
#: of ``seed + 1``, ``seed + 2``, ...) while its fit holds a circle that is no ring
#: (:func:`noisy_circles`); the fit of the highest objective is kept. Measured on sparse
#: rings in 50 % clutter (15 % of their pixels): the seed's third curve a circle through the
#: clutter with one draw, the third ring with another (``benchmarks/sparse_seed_ab.py``).
SEEDED_RESTARTS = 2


def noisy_circles(result: CurveFit) -> int:
    """How many circle experts of a fit hold points spread more than
    :data:`MAX_RELATIVE_NOISE` x r about them (their radial noise sd read from the fitted
    noise precision, :func:`pyro_moe.shapes.curves.radial_noise`), or have no real radius:
    an expert that took a band of clutter, where the seed drew a curve through it. 0 for
    other kinds."""
    g = result.geometry
    beta = result.noise_precision.detach().cpu().numpy().astype(float).reshape(-1)
    beta = np.broadcast_to(beta, (result.experts,))
    count = 0
    for k, c in enumerate(result.curves()):
        if g.kinds[k] != "circle":
            continue
        if not c.valid:
            count += 1
            continue
        scale = g.standardization.scale
        noise = radial_noise(c.r / scale, 1.0 / max(float(beta[k]), 1e-300))
        count += noise is None or scale * noise > MAX_RELATIVE_NOISE * c.r
    return count


def is_distributed_points(source, fit_options: dict) -> bool:
    """Whether a curve fit's ``source`` is points for the distributed path
    (:mod:`pyro_moe.curves.distributed`): a Dask array, a zarr store, or a ``.npy`` file
    of points when ``scheduler`` or ``workers`` is given."""
    if (type(source).__module__ or "").startswith("dask."):
        return True
    if not isinstance(source, str | Path):
        return False
    p = Path(source)
    if p.suffix == ".zarr" or any((p / f).exists() for f in (".zgroup", ".zarray", "zarr.json")):
        return True
    wants = fit_options.get("scheduler") is not None or fit_options.get("workers") is not None
    return wants and p.suffix.lower() == ".npy"


def seeded_start(
    data: CurveData,
    model: Model,
    fit_options: dict,
    *,
    per_expert_noise: bool = True,
    seed: int = 0,
) -> dict:
    """The options that start a curve fit from :func:`seed_responsibilities` (the one place
    :func:`fit_curves` and :func:`pyro_moe.select_curves` make them): ``responsibilities``,
    and the seeded noise precisions where beta is learned per expert (a starting value).
    Empty when ``fit_options`` give ``responsibilities`` or ``init``, or when no seed is
    made (experts of several forms)."""
    if fit_options.get("responsibilities") is not None or "init" in fit_options:
        return {}
    settings = load_model(model).settings
    noise = fit_options.get("noise_expert")
    if noise is None:
        noise = bool(settings.get("noise_expert", False))
    start = seed_responsibilities(data, noise_expert=noise, seed=seed)
    if start is None:
        return {}
    R, beta = start
    out: dict = {"responsibilities": R}
    # the seeded precisions are a starting value: only where beta is learned
    learned = "noise_precision" in learn_set(fit_options.get("learn", settings.get("learn")))
    if fit_options.get("noise_precision") is None and per_expert_noise and learned:
        out["noise_precision"] = beta
    return out


#: what :func:`curve_fit_options` sets from the points, which a caller cannot also give
SET_BY_THE_CURVE_FIT = ("prior_units", "maps", "noise_range")


def check_fit_options(fit_options: dict, where: str, also: tuple[str, ...] = ()) -> None:
    """One :class:`InputError`, before any work, for a keyword a curve function sets
    itself (it would clash with :func:`curve_fit_options`: the priors' units, the expert
    maps, the noise expert's support are made from the points), or for one nothing reads:
    neither an option of :func:`pyro_moe.fit` (its own, the run's, the hyperparameters,
    those the registered engine of ``method`` declares) nor one of ``also`` (the caller's
    own); the closest names, the image options among them, are suggested
    (``select_circles(img, edgse=True)`` failed after its first fit, naming only the
    engine's options)."""
    clash = [n for n in SET_BY_THE_CURVE_FIT if n in fit_options]
    if clash:
        raise InputError(
            f"{where} sets {', '.join(clash)} itself from the points (the curve design); "
            "leave it out, or fit the design with pyro_moe.fit"
        )
    from ..engines import ENGINES
    from ..parameters import COMMON, FIT, HYPERPARAMETERS

    engine = ENGINES.get(fit_options.get("method", FIT["method"].default))
    if engine is None:  # pyro_moe.fit names the method it does not know
        return
    known = {*FIT, *COMMON, *HYPERPARAMETERS, *engine.declared, *engine.aliases, *also}
    unknown = sorted(set(fit_options) - known)
    if unknown:
        import difflib

        near = {
            n: difflib.get_close_matches(n, sorted(known | set(IMAGE_OPTIONS)), n=1)
            for n in unknown
        }
        hint = "; ".join(f"{n}: did you mean {m[0]}?" for n, m in near.items() if m)
        raise InputError(
            f"unknown option(s) {', '.join(unknown)} for {where}"
            + (f" ({hint})" if hint else "")
            + f"; it takes the image options ({', '.join(IMAGE_OPTIONS)}) and those of "
            "pyro_moe.fit (help(pyro_moe.fit), pyro_moe.parameters)"
        )


#: The least share of the points an expert of a seeded fit must hold for the fit to be
#: left unsearched (:func:`seeds_explain`): the search's own ``min_share``.
MIN_SHARE = SearchPolicy.min_share


def seeds_explain(data: CurveData, result) -> bool:
    """Whether a fit polished from a seeded start needs no search
    (:class:`SeededSearch`): every expert holds :data:`MIN_SHARE` of the points, is a
    plausible curve the points trace (:func:`plausible_experts`), no circle is a band of
    clutter (:func:`noisy_circles`), and no two circles coincide (centres and radii within
    2 px in all: the reports' ``min_separation``). Then every victim the search would try
    is a curve the fit already has, and each of its trial refits (25 iterations) is lost
    time: measured on three sparse rings in 50 % clutter (``--experts auto``, K = 2..4),
    11 trial refits, 0.74 s of 1.75 s, none kept."""
    K = result.experts
    share = result.responsibilities[:, :K].mean(0)
    if bool((share < MIN_SHARE).any()):
        return False
    check = plausible_experts(data)
    if check is not None and not bool(check(result.mean).all()):
        return False
    fit_k = CurveFit(result, data.geometry)
    if "circle" in data.geometry.kinds and noisy_circles(fit_k):
        return False
    circles = [c for k, c in enumerate(fit_k.curves()) if data.geometry.kinds[k] == "circle"]
    for j in range(len(circles)):
        for k in range(j + 1, len(circles)):
            a, b = circles[j], circles[k]
            if math.hypot(a.x0 - b.x0, a.y0 - b.y0) + abs(a.r - b.r) < 2.0:
                return False
    return True


@dataclass(frozen=True)
class SeededSearch(SearchPolicy):
    """The search of a fit from a seeded start (:func:`seeded_start`): run only where the
    polished seeds leave something to fix (``explained(result)`` False:
    :func:`seeds_explain`), else the polished fit is the answer, with an empty report."""

    explained: Callable[[Any], bool] | None = None

    def run(self, result, refit, *, seed: int = 0):
        if self.explained is not None and self.explained(result):
            return result, SearchReport(0, 0, result.objective, result.objective)
        return super().run(result, refit, seed=seed)


def curve_fit_options(
    data: CurveData, *, search: bool = True, per_expert_noise: bool = True, seeded: bool = False
) -> dict:
    """The options of :func:`pyro_moe.fit` that make a fit a curve fit, the one place they
    are set (:func:`fit_curves` and :func:`pyro_moe.select_curves`, which fits each K as
    ``fit_curves`` would): the priors in the standardized points' units
    (``prior_units="unit"``), the expert maps, the noise expert's support over the points'
    bounding box, one noise precision per curve, and the search with what it counts as a
    plausible curve (a :class:`~pyro_moe.search.SearchPolicy` with
    :func:`plausible_experts`; see :func:`fit_curves`)."""
    return {
        "prior_units": "unit",
        "maps": data.maps,
        "noise_range": data.noise_range,
        "search": search_policy(data, seeded=seeded) if search else False,
        "per_expert_noise": per_expert_noise,
    }


def search_policy(data: CurveData, *, seeded: bool = False) -> SearchPolicy:
    """The search of a curve fit, with the plausible-curve rule
    (:func:`plausible_experts`); from a seeded start, only where the polished seeds leave
    something to fix (:class:`SeededSearch`, :func:`seeds_explain`)."""
    admissible = plausible_experts(data)
    if not seeded:
        return SearchPolicy(admissible=admissible)
    return SeededSearch(admissible=admissible, explained=lambda r: seeds_explain(data, r))


def fit_circles(source, *, experts: int = 2, **options) -> CurveFit:
    """Circles: ``fit_curves(source, design="circle", ...)``."""
    return fit_curves(source, design="circle", experts=experts, **options)


def fit_conics(source, *, experts: int = 2, **options) -> CurveFit:
    """Conics: ``fit_curves(source, design="conic", ...)``."""
    return fit_curves(source, design="conic", experts=experts, **options)
