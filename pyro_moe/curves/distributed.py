"""Curve fits of points held on a Dask cluster: ``fit_curves`` / ``fit_circles`` /
``fit_conics`` of a Dask array (N, 2), a zarr store of points, or a ``.npy`` file of points
with ``scheduler=`` or ``workers=`` (:func:`pyro_moe.curves.fitting.is_distributed_points`).

The algorithm, with the data never on the client as a whole:

1. one pass on the workers: each chunk of points is checked (shape, NaN or inf, with the
   rows named) and its bounding box returned;
2. a uniform subsample of at most :data:`SUBSAMPLE` points (without replacement, drawn
   with ``seed``) is gathered and fitted in memory by :func:`pyro_moe.fit_curves` itself:
   its standardization, RANSAC-seeded start, search for better fixed points and
   plausibility rules (none of which can run over chunks);
3. the design of every chunk is built on its worker by
   :func:`pyro_moe.curves.design.curve_design` (the function the in-memory fit uses) in
   the subsample fit's standard coordinates, so its weights carry over;
4. CAVI (or natural SVI, ``method="svi"``) runs over all N points on the cluster
   (:func:`pyro_moe.distributed.fit_on_dask`), starting from the subsample fit's globals
   (:class:`pyro_moe.distributed.Start`): the initial q(Z) of each chunk is one E-step
   from its q(W), E[log pi] (or gate) and beta, on the worker. The noise expert's support
   is the target's range over the *full* data's bounding box joined with every observed
   target (:func:`pyro_moe.curves.design.target_range`, the in-memory rule).

The result is a :class:`~pyro_moe.curves.result.CurveFit` whose ``curves()`` /
``circles()`` read its geometry as for an in-memory fit, from the posterior mean: the
geometric refinement of an in-memory fit (:meth:`~pyro_moe.curves.result.CurveFit.refined`)
needs every point's responsibilities in memory, so a fit of distributed points reports the
regression's circles (on 20000 points of three rings, within 0.006 px of the in-memory
fit's refined ones). It also holds the subsample fit as ``result.subsample_fit``. The model file is loaded once (a loaded
:class:`~pyro_moe.model_file.Model` is passed on to both fits).
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import numpy as np

from ..errors import InputError

#: the most points the in-memory start (seeding, search, plausibility) is fitted on
SUBSAMPLE = 50_000


def points_array(source):
    """The points of ``source`` as a Dask array (N, 2), lazily: a Dask array as given, a
    zarr store (an array, or a group with an array ``points``), or a ``.npy`` file read as
    memory-mapped slices of :data:`pyro_moe.distributed.STORE_CHUNK_ROWS` rows per task."""
    import dask.array as da
    from dask import delayed

    from ..distributed import STORE_CHUNK_ROWS, load_rows

    if isinstance(source, str | os.PathLike):
        p = Path(source)
        if not p.exists():
            raise InputError(f"there is no point store {str(p)!r}")
        if p.suffix.lower() == ".npy":
            try:
                mm = np.load(p, mmap_mode="r")
            except (ValueError, OSError) as e:
                raise InputError(f"cannot read {str(p)!r} as .npy: {e}") from None
            _check_shape(mm.shape)
            N = mm.shape[0]
            parts = [
                da.from_delayed(delayed(load_rows)(str(p), i, min(i + STORE_CHUNK_ROWS, N)),
                                shape=(min(i + STORE_CHUNK_ROWS, N) - i, 2), dtype=mm.dtype)
                for i in range(0, N, STORE_CHUNK_ROWS)
            ]  # fmt: skip
            return da.concatenate(parts) if parts else da.zeros((0, 2))
        try:
            import zarr
        except ImportError:
            raise InputError("reading a zarr store needs zarr: pip install zarr") from None
        node = zarr.open(str(p), mode="r")
        if not hasattr(node, "shape"):  # a group: its array "points"
            if "points" not in node:
                raise InputError(f"the zarr group {str(p)!r} has no array 'points'")
            node = node["points"]
        arr = da.from_zarr(node)
    else:
        arr = source
    _check_shape(arr.shape)
    return arr.rechunk({1: -1})


def _check_shape(shape) -> None:
    if len(shape) != 2 or shape[1] != 2:
        raise InputError(
            f"points must have shape (N, 2) (one row per point: x, y), got shape {tuple(shape)}"
        )


def _chunk_box(
    block: np.ndarray, start: int, declared: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Check a chunk of points (rows start.. of the data, ``declared`` rows as its array
    says) and return its (min, max)."""
    arr = np.asarray(block, dtype=np.float64)
    if declared is not None and (arr.ndim != 2 or arr.shape != (declared, 2)):
        raise InputError(
            f"the chunk of points of rows {start}..{start + declared} has shape "
            f"{arr.shape}, but its array declares ({declared}, 2): the Dask array's chunks "
            "do not match their data"
        )
    bad = ~np.isfinite(arr).all(axis=1)
    if bad.any():
        first = (np.flatnonzero(bad)[:5] + start).tolist()
        raise InputError(
            f"points contain NaN or infinite values in {int(bad.sum())} rows of the chunk of "
            f"rows {start}..{start + len(arr)} (first rows: {first}); drop or fix them first"
        )
    return arr.min(0), arr.max(0)


def _chunk_design(block: np.ndarray, lay, standardization) -> np.ndarray:
    """[X | y] (rows, n + 1) of a chunk of points in pixels: its standard coordinates'
    design (:func:`pyro_moe.curves.design.curve_design`)."""
    from .design import curve_design

    X, y = curve_design(lay, standardization.to_standard(np.asarray(block, dtype=np.float64)))
    return np.column_stack([X, y])


def _chunk_target_range(block: np.ndarray, lay, standardization) -> tuple[float, float]:
    y = _chunk_design(block, lay, standardization)[:, -1]
    return float(y.min()), float(y.max())


def fit_curves_on_dask(
    source,
    *,
    design: str = "circle",
    experts=2,
    model="mixture_of_models",
    seed: int = 0,
    allow_mixed_targets: bool = False,
    search: bool = True,
    per_expert_noise: bool = True,
    seeded: bool = True,
    fit_in_memory=None,
    subsample: int | None = None,
    scheduler: str | None = None,
    workers: int | None = None,
    collect: bool | None = None,
    **fit_options,
):
    """:func:`pyro_moe.fit_curves` of distributed points (the module docstring's steps).
    ``subsample``: the points of the in-memory start (default :data:`SUBSAMPLE`); the
    other options are :func:`pyro_moe.fit_curves`' (``search``, ``seeded``: for the
    subsample fit; ``fit_options``: for both fits). ``fit_in_memory``: the in-memory
    curve fit of the subsample, :func:`pyro_moe.fit_curves` (which passes itself: this
    module sits below :mod:`pyro_moe.curves.fitting` and does not import it)."""
    from ..distributed import Start, connect, gather_guarded, guarded_task
    from ..fitting import fit
    from ..model_file import load_model
    from .design import curve_layout, expert_names, target_range
    from .result import CurveFit

    if fit_in_memory is None:
        raise TypeError("fit_curves_on_dask needs fit_in_memory= (pyro_moe.fit_curves)")
    for name in ("init", "responsibilities"):
        if fit_options.get(name) is not None:
            raise InputError(
                f"{name}= is not available for distributed points: the fit starts from the "
                "in-memory fit of a subsample"
            )
    P = points_array(source)
    N = P.shape[0]
    names = expert_names(experts, design, points=int(N) if N == N else None)  # NaN: unknown
    model = load_model(model)
    lay = curve_layout(names, model.expert_catalog, allow_mixed_targets=allow_mixed_targets)
    with connect(scheduler, workers) as client:
        starts = np.cumsum([0, *P.chunks[0]])
        blocks = P.to_delayed().ravel().tolist()
        bounds = [(int(a), int(b)) for a, b in itertools.pairwise(starts)]
        boxes = gather_guarded(client, client.compute([
            guarded_task(_chunk_box, r)(b, r[0], r[1] - r[0])
            for b, r in zip(blocks, bounds, strict=True)
        ]))  # fmt: skip
        N = int(P.shape[0])
        need = max(e.size for e in lay.experts)
        if N < need:
            raise InputError(f"need at least {need} points to fit these curves, got {N}")
        lo = np.min([b[0] for b in boxes], axis=0)
        hi = np.max([b[1] for b in boxes], axis=0)
        M = min(N, int(SUBSAMPLE if subsample is None else subsample))
        rows = np.sort(np.random.default_rng(seed).choice(N, M, replace=False))
        sub = np.asarray(P[rows].compute(), dtype=np.float64)
        opts = {k: v for k, v in fit_options.items() if k not in ("n_init",)}
        start_fit = fit_in_memory(
            sub, design=design, experts=experts, model=model, seed=seed,
            allow_mixed_targets=allow_mixed_targets, search=search,
            per_expert_noise=per_expert_noise, seeded=seeded, **fit_options,
        )  # fmt: skip
        geometry = start_fit.geometry
        st = geometry.standardization
        n = len(lay.columns) if not geometry.shared else len(lay.experts[0].features)
        Z = P.map_blocks(_chunk_design, lay, st, chunks=(P.chunks[0], (n + 1,)),
                         dtype=np.float64)  # fmt: skip
        Xd, yd = Z[:, :n], Z[:, n]
        # the noise expert's support: the target over the full box, and every target
        e = lay.experts[0]
        response, offset = (e.response, e.offset) if geometry.shared else (lay.response, {})
        box = st.to_standard(np.vstack([lo, hi, [lo[0], hi[1]], [hi[0], lo[1]], sub]))
        t_lo, t_hi = target_range(box, response, offset)
        ranges = gather_guarded(client, client.compute([
            guarded_task(_chunk_target_range, r)(b, lay, st)
            for b, r in zip(blocks, bounds, strict=True)
        ]))  # fmt: skip
        y_lo, y_hi = min(r[0] for r in ranges), max(r[1] for r in ranges)
        noise_range = (min(t_lo, float(y_lo)), max(t_hi, float(y_hi)))
        if opts.get("noise_precision") is None:
            opts["noise_precision"] = start_fit.result.hyper.noise_precision
        result = fit(
            model, Xd, yd, experts=len(names), seed=seed, prior_units="unit",
            maps=None if geometry.shared else lay.maps, noise_range=noise_range,
            per_expert_noise=per_expert_noise, n_init=1, collect=collect,
            start_from=Start.from_result(start_fit.result), **opts,
        )  # fmt: skip
    result.restarts = [dict(r, init="start", subsample=M) for r in result.restarts]
    return CurveFit(result, geometry, subsample_fit=start_fit)
