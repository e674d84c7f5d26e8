"""Fitting and scheduling: one fit per (data set, prior choice, method, seed), run in
worker processes when more than one core is available, and :func:`reproduce`, which
plans the fits, runs them, summarizes them into a :class:`~pyro_moe.study.report.Report`
and writes it.

Each fit is seeded (seed s draws the data and initializes the fit), so the numbers do not
depend on the number of workers. :class:`~pyro_moe.ConvergenceWarning` is caught per fit
and counted in the report.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
import platform
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pyro_moe.errors import ConvergenceWarning, InputError

if TYPE_CHECKING:
    from pyro_moe.files import StagedOutputs

from .constants import (
    CAVI_SETTINGS,
    DATASETS,
    EYE_MASK,
    EYE_ROWS,
    FULL_LEVELS,
    FULL_SEEDS,
    FULL_SVI_SEEDS,
    PARTS,
    PUBLISHED_S,
    QUICK_LEVELS,
    QUICK_SEEDS,
    QUICK_SVI_DATASETS,
    QUICK_SVI_SEEDS,
    ROWS,
    SVI_SETTINGS,
    SWEEP_ROWS,
)
from .report import Report, jsonable, write_report
from .stats import summary

__all__ = ["fit_choice", "reproduce"]

Progress = Callable[[int, int, str], None]


# --------------------------------------------------------------------------- one fit


def fit_choice(
    choice: str,
    xy: np.ndarray,
    *,
    method: str = "cavi",
    seed: int = 0,
    **overrides: Any,
):
    """Fit one row of :data:`~pyro_moe.study.constants.ROWS` (``"f1"``, ``"f2"``, ``"f3"``,
    ``"f3 + noise expert"``) to points ``xy`` (N, 2) in standard units, with the settings of
    :data:`~pyro_moe.study.constants.CAVI_SETTINGS` or ``SVI_SETTINGS``; ``overrides``
    replace any of them.

    Returns a :class:`~pyro_moe.CurveFit` (circles via ``result.circles()``, standard
    units). ConvergenceWarning is not caught here.
    """
    import pyro_moe
    from pyro_moe.shapes import circle_design
    from pyro_moe.shapes.geometry import Geometry

    if choice not in ROWS:
        raise InputError(f"unknown choice {choice!r}; use one of {', '.join(ROWS)}")
    opts = {**(CAVI_SETTINGS if method == "cavi" else SVI_SETTINGS), **ROWS[choice]}
    opts.update(overrides)
    model = opts.pop("model")
    X, t = circle_design(xy)
    # the study's points are in standard units already: the identity standardization
    geometry = Geometry.of("circle", opts["experts"])
    result = pyro_moe.fit(
        model, X, t, method=method, seed=seed, prior_units="unit", progress=False, **opts
    )
    return pyro_moe.CurveFit(result, geometry)


def _data(dataset: str, seed: int, level: float | None):
    from pyro_moe.shapes import noise_sweep, synthetic_1, synthetic_2, synthetic_3

    if dataset == "synthetic_1":
        return synthetic_1()
    if dataset == "synthetic_2":
        return synthetic_2(seed)
    if dataset == "synthetic_3":
        return synthetic_3(seed)
    if dataset == "sweep":
        return noise_sweep(float(level), seed)
    raise InputError(f"unknown data set {dataset!r}")


def _caught(caught: list[warnings.WarningMessage]) -> tuple[int, list[str]]:
    """(number of ConvergenceWarnings, the other warnings as text)."""
    n_conv = sum(issubclass(w.category, ConvergenceWarning) for w in caught)
    others = [
        f"{w.category.__name__}: {w.message}"
        for w in caught
        if not issubclass(w.category, ConvergenceWarning)
    ]
    return n_conv, others


def _run_task(task: dict[str, Any]) -> dict[str, Any]:
    """One fit: build the data, fit, score. Runs in a worker process or in-process."""
    from pyro_moe.shapes import circle_error

    d = _data(task["dataset"], task["seed"], task.get("level"))
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        res = fit_choice(task["choice"], d.xy, method=task["method"], seed=task["seed"])
    S = circle_error(d.circles, res.circles())
    n_conv, others = _caught(caught)
    return {
        **task,
        "S": float(S),
        "elbo_per_point": res.elbo / len(d),
        "objective": res.objective,
        "iterations": int(res.iterations),
        "converged": bool(res.converged),
        "seconds": time.perf_counter() - start,
        "convergence_warnings": n_conv,
        "other_warnings": others,
    }


def ls_floor(dataset: str, seed: int) -> float:
    """S of ordinary least squares per circle on the true labels (no mixture, no prior):
    the error the jitter alone leaves (r is biased upward by the noise in x^2 + y^2)."""
    from pyro_moe.shapes import circle_design, circle_error, circles_from_weights

    d = _data(dataset, seed, None)
    W = []
    for k in range(len(d.circles)):
        X, t = circle_design(d.xy[d.labels == k])
        W.append(np.linalg.lstsq(X, t, rcond=None)[0])
    return circle_error(d.circles, circles_from_weights(np.array(W)))


# --------------------------------------------------------------------------- scheduling


def _worker_init() -> None:
    import signal
    import threading

    import torch
    from tqdm import tqdm

    torch.set_num_threads(1)  # one process per core; the caller's process is not touched
    # tqdm's default write lock is a multiprocessing RLock, a named semaphore; a worker
    # terminated on Ctrl-C cannot unlink it, and the resource tracker then warns of a
    # "leaked semaphore". A worker's bars (if any) need only a thread lock.
    tqdm.set_lock(threading.RLock())
    # Ctrl-C reaches the whole process group: the parent alone handles it (it terminates
    # the workers), so a worker neither prints a traceback nor keeps running
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent()


def _die_with_parent() -> None:
    """Linux: SIGTERM this worker when the process that started it dies (killed by a signal
    it does not handle, even SIGKILL), so that no worker outlives the run; elsewhere, a
    no-op."""
    import ctypes
    import signal

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # pragma: no cover - not Linux
        return
    if os.getppid() == 1:  # the parent died before the call: go now
        os._exit(1)


def _stop_workers(pool: concurrent.futures.ProcessPoolExecutor) -> None:
    """Terminate a pool's worker processes now (an interrupted or failed run): cancelling
    the futures alone lets the running fits finish, minutes later."""
    procs = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for proc in procs:
        proc.terminate()
    for proc in procs:
        proc.join(timeout=1.0)
        if proc.is_alive():
            proc.kill()
            proc.join(timeout=1.0)
    pool.shutdown(wait=True)  # the workers are gone: this returns at once


def default_workers() -> int:
    """The usable cores, at most 4."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        n = os.cpu_count() or 1
    return max(1, min(n, 4))


def _cost(task: dict[str, Any]) -> float:
    noise = {"synthetic_1": 0.0, "synthetic_2": 0.0, "synthetic_3": 1.0}.get(
        task["dataset"], task.get("level") or 0.0
    )
    return (20.0 if task["method"] == "svi" else 1.0) * (0.2 + noise)


def _label(t: dict[str, Any]) -> str:
    where = t["dataset"] if t.get("level") is None else f"noise {t['level']:g}"
    return f"{t['method']} {t['choice']} {where} seed {t['seed']}"


def run_all(
    tasks: list[dict[str, Any]], workers: int, progress: Progress | None = None
) -> list[dict[str, Any]]:
    """Run every task (in ``workers`` processes, or in-process for 1); results in the
    order of ``tasks``."""
    out: list[dict[str, Any] | None] = [None] * len(tasks)
    total = len(tasks)
    if workers <= 1 or total <= 1:
        for i, t in enumerate(tasks):
            out[i] = _run_task(t)
            if progress is not None:
                progress(i + 1, total, _label(t))
        return out  # type: ignore[return-value]
    # expensive fits first, so the pool drains evenly
    order = sorted(range(total), key=lambda i: -_cost(tasks[i]))
    ctx = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(
        max_workers=workers, mp_context=ctx, initializer=_worker_init
    ) as pool:
        futures = {pool.submit(_run_task, tasks[i]): i for i in order}
        try:
            for done, fut in enumerate(concurrent.futures.as_completed(futures), 1):
                i = futures[fut]
                out[i] = fut.result()
                if progress is not None:
                    progress(done, total, _label(tasks[i]))
        except BaseException:
            _stop_workers(pool)
            raise
    return out  # type: ignore[return-value]


# --------------------------------------------------------------------------- the eye


def check_out_dir(out_dir: Path) -> None:
    """InputError unless the report can be written into ``out_dir``: absent (with an
    existing parent) or a directory whose report files are absent or regular files."""
    from pyro_moe.files import check_destination

    if out_dir.exists() or out_dir.is_symlink():
        if not out_dir.is_dir():
            raise InputError(f"--out {out_dir} exists and is not a directory; give a folder")
        for name in REPORT_FILES:
            check_destination(out_dir / name)
    elif not (out_dir.parent if str(out_dir.parent) else Path(".")).is_dir():
        raise InputError(f"cannot create {out_dir}: folder {out_dir.parent} does not exist")


#: The files :func:`pyro_moe.study.report.write_report` may write into the output folder.
REPORT_FILES = ("report.md", "results.json", "sweep.png", "eye_fit.png")


def eye_source(eye: Path | str | None) -> Path | None:
    """The eye mask image to use, or None when there is none (part skipped)."""
    if eye is None:
        from pyro_moe.shapes import emprior_dir

        d = emprior_dir()
        if d is None or not (d / EYE_MASK).is_file():
            return None
        return d / EYE_MASK
    p = Path(eye).expanduser()
    if p.is_dir():
        p = p / EYE_MASK
    if not p.is_file():
        raise InputError(f"eye image not found: {p}")
    return p


def eye_points(path: Path, seed: int = 0, n: int = 200) -> np.ndarray:
    """The study's preprocessing (as :func:`~pyro_moe.shapes.study_eye_points`) of any
    mask: Otsu foreground, (column, -row) standardized per axis, n points drawn with
    ``default_rng(seed)``. For the study's mask it returns exactly study_eye_points."""
    from pyro_moe.shapes.image import foreground_mask, read_image

    mask = foreground_mask(read_image(path), "otsu", invert=False)
    rows, cols = np.nonzero(mask)
    uv = np.column_stack([cols, 255.0 - rows]).astype(np.float64)
    uv = (uv - uv.mean(axis=0)) / uv.std(axis=0)
    if uv.shape[0] < n:
        raise InputError(f"the eye image has {uv.shape[0]} foreground pixels; need {n}")
    rng = np.random.default_rng(seed)
    return uv[rng.choice(uv.shape[0], size=n, replace=False)]


def _fit_eye(path: Path) -> tuple[dict[str, Any], dict[str, Any], int, list[str]]:
    xy = eye_points(path)
    fits: dict[str, Any] = {}
    results: dict[str, Any] = {}
    n_conv = 0
    others: list[str] = []
    for choice in EYE_ROWS:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            res = fit_choice(choice, xy, method="cavi", seed=0)
        n, o = _caught(caught)
        n_conv, others = n_conv + n, others + o
        circles = sorted(res.circles(), key=lambda c: (not c.valid, c.r))
        fits[choice] = {
            "circles": [c.as_dict() for c in circles],
            "elbo_per_point": res.elbo / xy.shape[0],
            "converged": bool(res.converged),
            "iterations": int(res.iterations),
            "outliers": int(res.outliers.sum()) if res.noise_expert else None,
        }
        results[choice] = res
    info = {
        "image": str(path),
        "points": int(xy.shape[0]),
        "units": "standardized per axis (study_eye_points: Otsu foreground, (column, "
        "255 - row), each axis centred and divided by its sd; y up), 200 points, seed 0",
        "fits": fits,
    }
    return info, results, n_conv, others


# --------------------------------------------------------------------------- reproduce


def reproduce(
    *,
    quick: bool = False,
    out: Path | str | None = None,
    eye: Path | str | None = None,
    methods: Sequence[str] = ("cavi", "svi"),
    seeds: int | None = None,
    progress: Progress | None = None,
    levels: Sequence[float] | None = None,
    parts: Sequence[str] = PARTS,
    workers: int | None = None,
    outputs: StagedOutputs | None = None,
) -> Report:
    """Run the study's computational experiment and write the report.

    Args:
        quick: the short variant: 3 seeds (unless ``seeds`` is given), sweep levels
            0, 0.5, 1, and SVI on one seed of Synthetic 1 and 2 only (full: all data sets,
            ``min(seeds, 5)`` seeds, since an SVI fit costs ~10 s).
        out: output folder (default ``./reproduce_out``), created when missing; files in it
            are replaced atomically.
        eye: an eye mask image, or a folder holding the study's ``1_mask_2.jpg``; default
            the study's data folder (:func:`~pyro_moe.shapes.emprior_dir`). When neither
            exists the eye part is skipped and the report says so.
        methods: engines for the S table (the sweep and the eye use CAVI).
        seeds: seeds per cell (default 10; quick 3). Seed s draws the data and
            initializes the fit.
        progress: called as ``progress(done, total, label)`` after each fit.
        levels: noise levels of the sweep (default 0, .25, .5, .75, 1; quick 0, .5, 1).
        parts: which of ``"table"``, ``"sweep"``, ``"eye"`` to run.
        workers: worker processes (default: the usable cores, at most 4; 1 = in-process).
        outputs: stage the report's files there instead of writing them (the caller
            commits; the command line does so once its output is printed).

    Returns:
        The :class:`~pyro_moe.study.report.Report`, whose ``report_path``, ``json_path``
        and ``figure_paths`` point at the files written.
    """
    start = time.perf_counter()
    methods = tuple(methods)
    for m in methods:
        if m not in ("cavi", "svi"):
            raise InputError(f"unknown method {m!r}; use 'cavi' and/or 'svi'")
    for p in parts:
        if p not in PARTS:
            raise InputError(f"unknown part {p!r}; use any of {', '.join(PARTS)}")
    n_seeds = (QUICK_SEEDS if quick else FULL_SEEDS) if seeds is None else int(seeds)
    if n_seeds < 1:
        raise InputError(f"seeds must be >= 1, got {seeds}")
    svi_seeds = min(n_seeds, QUICK_SVI_SEEDS if quick else FULL_SVI_SEEDS)
    svi_datasets = QUICK_SVI_DATASETS if quick else tuple(DATASETS)
    levels = tuple(float(x) for x in (levels or (QUICK_LEVELS if quick else FULL_LEVELS)))
    for lv in levels:
        if not 0.0 <= lv <= 1.0:
            raise InputError(f"noise levels must be in [0, 1], got {lv}")
    n_workers = default_workers() if workers is None else max(1, int(workers))
    out_dir = Path("reproduce_out") if out is None else Path(out)
    check_out_dir(out_dir)
    eye_path = eye_source(eye) if "eye" in parts else None
    if eye_path is not None:
        from pyro_moe.shapes.image import read_image

        read_image(eye_path)  # an unreadable image fails now, not after every fit

    import pyro
    import torch

    import pyro_moe

    report = Report(
        settings={
            "quick": quick,
            "methods": list(methods),
            "seeds": n_seeds,
            "seeds_by_method": {m: (svi_seeds if m == "svi" else n_seeds) for m in methods},
            "svi_datasets": list(svi_datasets),
            "sweep_levels": list(levels),
            "parts": list(parts),
            "workers": n_workers,
            "rows": {k: jsonable(v) for k, v in ROWS.items()},
            "cavi_settings": CAVI_SETTINGS,
            "svi_settings": SVI_SETTINGS,
            "versions": {
                "pyro_moe": pyro_moe.__version__,
                "torch": torch.__version__,
                "pyro": pyro.__version__,
                "python": platform.python_version(),
            },
        },
        out=out_dir,
    )

    # ---- the tasks --------------------------------------------------------------------
    tasks: list[dict[str, Any]] = []
    if "table" in parts:
        for m in methods:
            for ds in DATASETS:
                if m == "svi" and ds not in svi_datasets:
                    continue
                n = svi_seeds if m == "svi" else n_seeds
                for choice in ROWS:
                    for s in range(n):
                        tasks.append(
                            {"part": "table", "dataset": ds, "choice": choice, "method": m,
                             "seed": s, "level": None}
                        )  # fmt: skip
    if "sweep" in parts:
        for lv in levels:
            for choice in SWEEP_ROWS:
                for s in range(n_seeds):
                    tasks.append(
                        {"part": "sweep", "dataset": "sweep", "choice": choice, "method": "cavi",
                         "seed": s, "level": lv}
                    )  # fmt: skip
    t0 = time.perf_counter()
    results = run_all(tasks, n_workers, progress)
    report.timings["fits"] = time.perf_counter() - t0

    # ---- assemble ---------------------------------------------------------------------
    if "table" in parts:
        for ds in DATASETS:
            report.floor[ds] = summary([ls_floor(ds, s) for s in range(n_seeds)])
            for choice in ROWS:
                entry: dict[str, Any] = {
                    "dataset": ds,
                    "choice": choice,
                    "published": PUBLISHED_S[ds].get(choice),
                    "methods": {},
                }
                for m in methods:
                    rs = [
                        r
                        for r in results
                        if r["part"] == "table"
                        and r["dataset"] == ds
                        and r["choice"] == choice
                        and r["method"] == m
                    ]
                    if not rs:
                        continue
                    entry["methods"][m] = {
                        "seeds": [r["seed"] for r in rs],
                        "S": [r["S"] for r in rs],
                        "elbo_per_point": [r["elbo_per_point"] for r in rs],
                        "summary": summary([r["S"] for r in rs]),
                        "not_converged": sum(not r["converged"] for r in rs),
                        "seconds": sum(r["seconds"] for r in rs),
                    }
                report.table.append(entry)
    if "sweep" in parts:
        for lv in levels:
            for choice in SWEEP_ROWS:
                rs = [
                    r
                    for r in results
                    if r["part"] == "sweep" and r["level"] == lv and r["choice"] == choice
                ]
                report.sweep.append(
                    {
                        "level": lv,
                        "choice": choice,
                        "seeds": [r["seed"] for r in rs],
                        "S": [r["S"] for r in rs],
                        "elbo_per_point": [r["elbo_per_point"] for r in rs],
                        "S_summary": summary([r["S"] for r in rs]),
                        "elbo_summary": summary([r["elbo_per_point"] for r in rs]),
                        "not_converged": sum(not r["converged"] for r in rs),
                    }
                )
    groups = [
        (part, m)
        for part in ("table", "sweep")
        for m in ("cavi", "svi")
        if any(r["part"] == part and r["method"] == m for r in results)
    ]
    conv = {
        f"{part}/{m}": sum(
            r["convergence_warnings"] for r in results if r["part"] == part and r["method"] == m
        )
        for part, m in groups
    }
    fits_by = {
        f"{part}/{m}": sum(r["part"] == part and r["method"] == m for r in results)
        for part, m in groups
    }
    others = sorted({w for r in results for w in r["other_warnings"]})

    # ---- the eye ----------------------------------------------------------------------
    eye_results: dict[str, Any] = {}
    if "eye" in parts:
        t1 = time.perf_counter()
        if eye_path is None:
            report.eye_note = (
                "Skipped: the study's data folder (../shared/data/emprior, or "
                "$PYRO_MOE_EMPRIOR) is absent and no eye image was given."
            )
        else:
            report.eye, eye_results, n_conv, eye_others = _fit_eye(eye_path)
            conv["eye/cavi"] = n_conv
            fits_by["eye/cavi"] = len(eye_results)
            others = sorted(set(others) | set(eye_others))
        report.timings["eye"] = time.perf_counter() - t1
    report.warnings = {
        "convergence_warnings": conv,
        "convergence_warnings_total": sum(conv.values()),
        "other_warnings": others,
        "fits": len(results) + len(eye_results),
        "fits_by": fits_by,
    }

    # ---- files ------------------------------------------------------------------------
    report.timings["total"] = time.perf_counter() - start
    write_report(report, out_dir, eye_results, outputs)
    return report
