"""The study's computational experiment, end to end: ``reproduce()``.

Three parts, each optional (``parts=``):

1. **The S table**: the study's circle error S (:func:`~pyro_moe.shapes.circle_error`, the
   sum over the two circles of the squared error of (x0, y0, r), Hungarian-matched) for the
   prior choices f1/f2/f3 (:data:`CHOICES`) and an extra row "f3 + noise expert", on
   Synthetic 1–3, median and spread over seeds, by CAVI and by SVI, next to the published
   values (:data:`PUBLISHED_S`) and the least-squares floor with the true labels.
2. **The noise sweep**: S and the ELBO per point against the share of uniform noise
   (:func:`~pyro_moe.shapes.noise_sweep`), CAVI, for every row of :data:`ROWS`.
3. **The eye image**: f2, f3 and f3 + noise expert on the study's eye points
   (:func:`~pyro_moe.shapes.study_eye_points`: standardized per axis, y up), when the
   study's data folder is present or an eye mask is given.

Everything is written atomically to ``out``: ``report.md``, ``results.json``,
``sweep.png`` and ``eye_fit.png``. Fits run in worker processes when more than one core
is available (each fit is seeded, so the numbers do not depend on the number of workers).
:class:`~pyro_moe.ConvergenceWarning` is caught per fit and counted in the report.

    >>> from pyro_moe.reproduce import reproduce, main_table
    >>> report = reproduce(quick=True)          # doctest: +SKIP
    >>> print(main_table(report))               # doctest: +SKIP
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import io
import json
import math
import multiprocessing
import os
import platform
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ConvergenceWarning, InputError

__all__ = [
    "CAVI_SETTINGS",
    "CHOICES",
    "DATASETS",
    "IDENTITY_SHAPES",
    "PUBLISHED_S",
    "ROWS",
    "STUDY_PRIOR_MEAN",
    "STUDY_XI",
    "SVI_SETTINGS",
    "Report",
    "fit_choice",
    "main_table",
    "reproduce",
]

# --------------------------------------------------------------------------- the study's setup

#: The study's prior means (standardized units): w0_1 = [0, 0, 0.1], w0_2 = [0, 0, 2].
STUDY_PRIOR_MEAN: tuple[tuple[float, ...], ...] = ((0.0, 0.0, 0.1), (0.0, 0.0, 2.0))
#: The regularizer's Xi = diag(0.01, 0.01, 1) (a covariance: it ties the centres).
STUDY_XI: tuple[float, ...] = (0.01, 0.01, 1.0)

#: The study's prior choices as keyword arguments of :func:`pyro_moe.fit` plus ``model``
#: (the model file). Copy an entry before editing it (``dict(CHOICES["f2"])``).
#:
#: * f1, no prior information: gated mixture of experts, w0_k = 0 and A_k = I as initial
#:   values, everything learned (w0, A, beta, gate).
#: * f2, informative fixed priors: the study's w0_k, A_k = I, held fixed; beta and the gate
#:   learned.
#: * f3, regularized experts: the study's w0_k as start, A_k = I, Xi ties the prior means;
#:   w0 learned under the regularizer R(w0), beta and the gate learned.
CHOICES: dict[str, dict[str, Any]] = {
    "f1": {"model": "mixture_of_experts", "learn": "all"},
    "f2": {
        "model": "mixture_of_experts",
        "prior_mean": STUDY_PRIOR_MEAN,
        "prior_cov": 1.0,
        "learn": ("noise_precision", "gate"),
    },
    "f3": {
        "model": "regularized_experts",
        "prior_mean": STUDY_PRIOR_MEAN,
        "prior_cov": 1.0,
        "regularization_cov": STUDY_XI,
    },
}

#: The rows of the S table and of the sweep: the three choices, plus f3 with a uniform
#: background component (``noise_expert=True``, which also puts the model file's Gaussian
#: prior on the gate's weights), which the study did not have.
ROWS: dict[str, dict[str, Any]] = {
    **CHOICES,
    "f3 + noise expert": {**CHOICES["f3"], "noise_expert": True},
}

#: Engine settings of every fit (K = 2, one restart; CAVI as in notebook 02).
CAVI_SETTINGS: dict[str, Any] = {"experts": 2, "n_init": 1, "max_iter": 400, "tol": 1e-6}
SVI_SETTINGS: dict[str, Any] = {"experts": 2, "n_init": 1, "max_iter": 3000}

#: The study's points are already in standard units: circles are read off the weights as is.
IDENTITY_SHAPES: dict[str, Any] = {"design": "circle", "center": [0.0, 0.0], "scale": 1.0}

#: The study's data sets, by key: display name.
DATASETS: dict[str, str] = {
    "synthetic_1": "Synthetic 1",
    "synthetic_2": "Synthetic 2",
    "synthetic_3": "Synthetic 3",
}

#: The study's published S (one number per cell; no spread was published).
PUBLISHED_S: dict[str, dict[str, float]] = {
    "synthetic_1": {"f1": 1e-5, "f2": 1e-5, "f3": 1e-5},
    "synthetic_2": {"f1": 0.6, "f2": 1e-3, "f3": 1e-3},
    "synthetic_3": {"f1": 0.6, "f2": 1e-3, "f3": 1e-3},
}

FULL_SEEDS = 10
QUICK_SEEDS = 3
FULL_SVI_SEEDS = 5  # SVI costs ~10 s a fit (3000 steps): 5 seeds keep the full run < 10 min
QUICK_SVI_SEEDS = 1
QUICK_SVI_DATASETS = ("synthetic_1", "synthetic_2")
FULL_LEVELS = (0.0, 0.25, 0.5, 0.75, 1.0)
QUICK_LEVELS = (0.0, 0.5, 1.0)
EYE_MASK = "1_mask_2.jpg"
EYE_ROWS = ("f2", "f3", "f3 + noise expert")
PARTS = ("table", "sweep", "eye")
SWEEP_ROWS = tuple(ROWS)

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
    """Fit one row of :data:`ROWS` (``"f1"``, ``"f2"``, ``"f3"``, ``"f3 + noise expert"``)
    to points ``xy`` (N, 2) in standard units, with the settings of :data:`CAVI_SETTINGS`
    or :data:`SVI_SETTINGS`; ``overrides`` replace any of them.

    Returns the :class:`~pyro_moe.FitResult` (circles via ``result.circles()``, standard
    units). ConvergenceWarning is not caught here.
    """
    import pyro_moe
    from pyro_moe.shapes import circle_design

    if choice not in ROWS:
        raise InputError(f"unknown choice {choice!r}; use one of {', '.join(ROWS)}")
    opts = {**(CAVI_SETTINGS if method == "cavi" else SVI_SETTINGS), **ROWS[choice]}
    opts.update(overrides)
    model = opts.pop("model")
    X, t = circle_design(xy)
    return pyro_moe.fit(
        model, X, t, method=method, seed=seed, shapes=IDENTITY_SHAPES, progress=False, **opts
    )


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


def _run_task(task: dict[str, Any]) -> dict[str, Any]:
    """One fit: build the data, fit, score. Runs in a worker process or in-process."""
    from pyro_moe.shapes import circle_error

    d = _data(task["dataset"], task["seed"], task.get("level"))
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        res = fit_choice(task["choice"], d.xy, method=task["method"], seed=task["seed"])
    S = circle_error(d.circles, res.circles())
    n_conv = sum(issubclass(w.category, ConvergenceWarning) for w in caught)
    others = [
        f"{w.category.__name__}: {w.message}"
        for w in caught
        if not issubclass(w.category, ConvergenceWarning)
    ]
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


def _worker_init() -> None:
    import torch

    torch.set_num_threads(1)  # one process per core; the caller's process is not touched


def _default_workers() -> int:
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        n = os.cpu_count() or 1
    return max(1, min(n, 4))


def _run_all(
    tasks: list[dict[str, Any]], workers: int, progress: Progress | None
) -> list[dict[str, Any]]:
    """Run every task; results in the order of ``tasks``."""
    out: list[dict[str, Any] | None] = [None] * len(tasks)
    total = len(tasks)

    def label(t: dict[str, Any]) -> str:
        where = t["dataset"] if t.get("level") is None else f"noise {t['level']:g}"
        return f"{t['method']} {t['choice']} {where} seed {t['seed']}"

    if workers <= 1 or total <= 1:
        for i, t in enumerate(tasks):
            out[i] = _run_task(t)
            if progress is not None:
                progress(i + 1, total, label(t))
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
                    progress(done, total, label(tasks[i]))
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise
    return out  # type: ignore[return-value]


def _cost(task: dict[str, Any]) -> float:
    noise = {"synthetic_1": 0.0, "synthetic_2": 0.0, "synthetic_3": 1.0}.get(
        task["dataset"], task.get("level") or 0.0
    )
    return (20.0 if task["method"] == "svi" else 1.0) * (0.2 + noise)


# --------------------------------------------------------------------------- statistics


def _quantile(values: Sequence[float], q: float) -> float:
    """Linear-interpolation quantile that keeps inf (an invalid circle) as inf."""
    v = sorted(values)
    if not v:
        return math.nan
    p = q * (len(v) - 1)
    lo, hi = math.floor(p), math.ceil(p)
    if v[lo] == v[hi]:
        return float(v[lo])
    return float(v[lo] + (v[hi] - v[lo]) * (p - lo))


def _summary(values: Sequence[float]) -> dict[str, Any]:
    vals = [float(x) for x in values]
    return {
        "n": len(vals),
        "median": _quantile(vals, 0.5),
        "q25": _quantile(vals, 0.25),
        "q75": _quantile(vals, 0.75),
        "min": min(vals) if vals else math.nan,
        "max": max(vals) if vals else math.nan,
        "invalid": sum(not math.isfinite(x) for x in vals),
    }


def _fmt(x: float | None, digits: int = 2) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    if math.isinf(x):
        return "inf"
    if x == 0:
        return "0"
    return f"{x:.{digits}g}" if 1e-3 <= abs(x) < 1e4 else f"{x:.{digits - 1}e}"


def _fmt_stat(s: dict[str, Any] | None) -> str:
    if s is None or s["n"] == 0:
        return "–"
    text = f"{_fmt(s['median'])} [{_fmt(s['q25'])}, {_fmt(s['q75'])}]"
    if s["invalid"]:
        text += f" ({s['invalid']}/{s['n']} invalid)"
    return text


def _ls_floor(dataset: str, seed: int) -> float:
    """S of ordinary least squares per circle on the true labels (no mixture, no prior):
    the error the jitter alone leaves (r is biased upward by the noise in x^2 + y^2)."""
    from pyro_moe.shapes import circle_design, circle_error, circles_from_weights

    d = _data(dataset, seed, None)
    W = []
    for k in range(len(d.circles)):
        X, t = circle_design(d.xy[d.labels == k])
        W.append(np.linalg.lstsq(X, t, rcond=None)[0])
    return circle_error(d.circles, circles_from_weights(np.array(W)))


# --------------------------------------------------------------------------- the report


@dataclass
class Report:
    """What :func:`reproduce` found: the S table, the sweep, the eye fit, and the files.

    ``table``: one entry per (data set, row) with ``published`` and per method the S values
    per seed and their summary (``median``, ``q25``, ``q75``, ``min``, ``max``,
    ``invalid``: circles with r^2 < 0, S = inf). ``sweep``: one entry per (level, row) with
    S and ELBO per point (nats) per seed and summaries. ``eye``: the fitted circles in
    standardized units, or ``None`` when skipped (``eye_note`` says why).
    """

    settings: dict[str, Any]
    table: list[dict[str, Any]] = field(default_factory=list)
    floor: dict[str, dict[str, Any]] = field(default_factory=dict)
    sweep: list[dict[str, Any]] = field(default_factory=list)
    eye: dict[str, Any] | None = None
    eye_note: str = ""
    warnings: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    out: Path | None = None
    report_path: Path | None = None
    json_path: Path | None = None
    figure_paths: dict[str, Path] = field(default_factory=dict)

    # ---- tables -----------------------------------------------------------------------
    def table_markdown(self) -> str:
        """The S table (median [IQR] over seeds) next to the published values, Markdown."""
        methods = self.settings.get("methods", [])
        head = ["data set", "choice", "published S"]
        head += [f"{m.upper()} median S [IQR]" for m in methods]
        head += ["LS floor (true labels)"]
        lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
        for row in self.table:
            pub = row.get("published")
            cells = [DATASETS[row["dataset"]], row["choice"], _fmt(pub) if pub else "–"]
            for m in methods:
                cells.append(_fmt_stat(row["methods"].get(m, {}).get("summary")))
            cells.append(_fmt(self.floor.get(row["dataset"], {}).get("median")))
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines)

    def sweep_markdown(self) -> str:
        """The noise sweep (CAVI): median [IQR] of S and median ELBO per point, Markdown."""
        head = ["noise level", "noise points", "choice", "median S [IQR]", "ELBO / N (nats)"]
        lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
        for r in self.sweep:
            cells = [
                f"{r['level']:g}",
                str(round(200 * r["level"])),
                r["choice"],
                _fmt_stat(r["S_summary"]),
                f"{r['elbo_summary']['median']:.3f}",
            ]
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines)

    def eye_markdown(self) -> str:
        """The eye fit's circles (standardized units), Markdown; the skip note otherwise."""
        if self.eye is None:
            return self.eye_note
        lines = [
            "| choice | circle | x0 | y0 | r | ELBO / N (nats) |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        for choice, fit in self.eye["fits"].items():
            for k, c in enumerate(fit["circles"]):
                r = c["r"] if isinstance(c["r"], str) else f"{c['r']:.4f}"
                lines.append(
                    f"| {choice} | {k} | {c['x0']:.4f} | {c['y0']:.4f} | {r} | "
                    f"{fit['elbo_per_point']:.3f} |"
                )
        return "\n".join(lines)

    # ---- serialization ----------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Everything as plain JSON types (non-finite numbers become ``null``)."""
        return _jsonable(
            {
                "settings": self.settings,
                "published_S": PUBLISHED_S,
                "table": self.table,
                "ls_floor": self.floor,
                "sweep": self.sweep,
                "eye": self.eye,
                "eye_note": self.eye_note,
                "warnings": self.warnings,
                "timings_s": self.timings,
                "files": {
                    "report": self.report_path,
                    "results": self.json_path,
                    **self.figure_paths,
                },
            }
        )

    def to_json(self) -> str:
        """:meth:`to_dict` as an indented JSON string (what ``results.json`` holds)."""
        return json.dumps(self.to_dict(), indent=2, allow_nan=False)


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, bool | str | int) or obj is None:
        return obj
    if isinstance(obj, float | np.floating):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    return str(obj)


def main_table(report: Report) -> str:
    """The S table as fixed-width text, as the command line prints it."""
    methods = report.settings.get("methods", [])
    head = ["data set", "choice", "published"] + [f"{m.upper()} median S [IQR]" for m in methods]
    rows = [head]
    for row in report.table:
        pub = row.get("published")
        cells = [DATASETS[row["dataset"]], row["choice"], _fmt(pub) if pub else "–"]
        for m in methods:
            cells.append(_fmt_stat(row["methods"].get(m, {}).get("summary")))
        rows.append(cells)
    width = [max(len(r[j]) for r in rows) for j in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, width, strict=True)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in width))
    seeds = report.settings.get("seeds_by_method", {})
    note = ", ".join(f"{m.upper()} {seeds.get(m, '?')} seed(s)" for m in methods)
    lines.append(f"S: median [25%, 75%] over seeds ({note}); K = 2.")
    return "\n".join(lines)


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

    Returns:
        The :class:`Report`, whose ``report_path``, ``json_path`` and ``figure_paths``
        point at the files written.
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
    n_workers = _default_workers() if workers is None else max(1, int(workers))
    out_dir = Path("reproduce_out") if out is None else Path(out)
    eye_path = _eye_source(eye) if "eye" in parts else None

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
            "rows": {k: _jsonable(v) for k, v in ROWS.items()},
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
    results = _run_all(tasks, n_workers, progress)
    report.timings["fits"] = time.perf_counter() - t0

    # ---- assemble ---------------------------------------------------------------------
    if "table" in parts:
        for ds in DATASETS:
            report.floor[ds] = _summary([_ls_floor(ds, s) for s in range(n_seeds)])
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
                        "summary": _summary([r["S"] for r in rs]),
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
                        "S_summary": _summary([r["S"] for r in rs]),
                        "elbo_summary": _summary([r["elbo_per_point"] for r in rs]),
                        "not_converged": sum(not r["converged"] for r in rs),
                    }
                )
    conv = {
        f"{part}/{m}": sum(
            r["convergence_warnings"] for r in results if r["part"] == part and r["method"] == m
        )
        for part in ("table", "sweep")
        for m in ("cavi", "svi")
        if any(r["part"] == part and r["method"] == m for r in results)
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
            others = sorted(set(others) | set(eye_others))
        report.timings["eye"] = time.perf_counter() - t1
    report.warnings = {
        "convergence_warnings": conv,
        "convergence_warnings_total": sum(conv.values()),
        "other_warnings": others,
        "fits": len(results) + len(eye_results),
    }

    # ---- files ------------------------------------------------------------------------
    report.timings["total"] = time.perf_counter() - start
    _write(report, out_dir, eye_results)
    return report


# --------------------------------------------------------------------------- the eye


def _eye_source(eye: Path | str | None) -> Path | None:
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


def _eye_points(path: Path, seed: int = 0, n: int = 200) -> np.ndarray:
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
    xy = _eye_points(path)
    fits: dict[str, Any] = {}
    results: dict[str, Any] = {}
    n_conv = 0
    others: list[str] = []
    for choice in EYE_ROWS:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            res = fit_choice(choice, xy, method="cavi", seed=0)
        n_conv += sum(issubclass(w.category, ConvergenceWarning) for w in caught)
        others += [
            f"{w.category.__name__}: {w.message}"
            for w in caught
            if not issubclass(w.category, ConvergenceWarning)
        ]
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


# --------------------------------------------------------------------------- figures and files


def _sweep_figure(report: Report) -> bytes:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4))
    ax_s, ax_l = fig.subplots(1, 2)
    for i, choice in enumerate(SWEEP_ROWS):
        rows = [r for r in report.sweep if r["choice"] == choice]
        lv = np.array([r["level"] for r in rows])
        med = np.array([r["S_summary"]["median"] for r in rows])
        q25 = np.array([r["S_summary"]["q25"] for r in rows])
        q75 = np.array([r["S_summary"]["q75"] for r in rows])
        color, style = f"C{i}", "osD^"[i % 4] + ("--" if i % 2 else "-")
        finite = np.isfinite(med)
        ax_s.plot(lv[finite], med[finite], style, color=color, label=choice, mfc="none")
        band = np.isfinite(q25) & np.isfinite(q75)
        ax_s.fill_between(lv[band], q25[band], q75[band], color=color, alpha=0.15, lw=0)
        elbo = np.array([r["elbo_summary"]["median"] for r in rows])
        ax_l.plot(lv, elbo, style, color=color, label=choice, mfc="none")
    ax_s.set_yscale("log")
    ax_s.set_xlabel("noise level (uniform points / 200)")
    ax_s.set_ylabel("circle error S (median, IQR band)")
    ax_s.set_title("S against noise (CAVI)")
    ax_l.set_xlabel("noise level (uniform points / 200)")
    ax_l.set_ylabel("ELBO per point (nats, median)")
    ax_l.set_title("ELBO / N against noise (CAVI)")
    ax_s.legend(fontsize=8)
    fig.tight_layout()
    return _png(fig)


def _eye_figure(results: dict[str, Any]) -> bytes:
    from matplotlib.figure import Figure

    from pyro_moe import plots

    fig = Figure(figsize=(4.3 * len(results), 4.3))
    axes = np.atleast_1d(fig.subplots(1, len(results)))
    for ax, (choice, res) in zip(axes, results.items(), strict=True):
        plots.plot_fit(res, ax=ax, title=f"eye, {choice} (CAVI)")
        ax.invert_yaxis()  # these points have y up, not the image convention
        ax.set_xlabel("u (standardized)")
        ax.set_ylabel("v (standardized, up)")
    fig.tight_layout()
    return _png(fig)


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    return buf.getvalue()


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; an ordinary file here
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _write(report: Report, out_dir: Path, eye_results: dict[str, Any]) -> None:
    """Render everything first, then replace each file atomically."""
    out_dir.mkdir(parents=True, exist_ok=True)
    blobs: dict[Path, bytes] = {}
    if report.sweep:
        p = out_dir / "sweep.png"
        blobs[p] = _sweep_figure(report)
        report.figure_paths["sweep"] = p
    if eye_results:
        p = out_dir / "eye_fit.png"
        blobs[p] = _eye_figure(eye_results)
        report.figure_paths["eye"] = p
    report.report_path = out_dir / "report.md"
    report.json_path = out_dir / "results.json"
    blobs[report.report_path] = _markdown(report).encode()
    blobs[report.json_path] = (report.to_json() + "\n").encode()
    for path, data in blobs.items():
        _write_atomic(path, data)


def _cell(report: Report, ds: str, choice: str, method: str = "cavi") -> float | None:
    for row in report.table:
        if row["dataset"] == ds and row["choice"] == choice and method in row["methods"]:
            return row["methods"][method]["summary"]["median"]
    return None


def _markdown(report: Report) -> str:
    s = report.settings
    seeds = s["seeds_by_method"]
    runs = ", ".join(f"{m.upper()} on {seeds[m]} seed(s)" for m in s["methods"])
    lines = [
        "# Reproduction of the study's computational experiment",
        "",
        f"{'Quick' if s['quick'] else 'Full'} run: {runs}"
        + (
            f" (SVI on {', '.join(DATASETS[d] for d in s['svi_datasets'])})"
            if "svi" in s["methods"]
            else ""
        )
        + f"; {report.warnings.get('fits', 0)} fits in {report.timings['total']:.0f} s "
        f"({s['workers']} worker process(es)). pyro_moe {s['versions']['pyro_moe']}, "
        f"torch {s['versions']['torch']}, pyro {s['versions']['pyro']}.",
        "",
        "Every fit: K = 2, one restart, seed s for the data and the initialization; CAVI "
        f"max_iter = {CAVI_SETTINGS['max_iter']}, tol = {CAVI_SETTINGS['tol']:g}; SVI "
        f"{SVI_SETTINGS['max_iter']} steps at most. The prior choices "
        "(`pyro_moe.reproduce.CHOICES`):",
        "",
        "* **f1**: `mixture_of_experts`, w0_k = 0 and A_k = I as initial values, everything "
        'learned (`learn="all"`).',
        "* **f2**: `mixture_of_experts`, the study's w0_1 = [0, 0, 0.1], w0_2 = [0, 0, 2], "
        "A_k = I held fixed; β and the gate learned.",
        "* **f3**: `regularized_experts`, the study's w0_k as start, A_k = I, "
        "Ξ = diag(0.01, 0.01, 1); w0 (under R(w0)), β and the gate learned.",
        "* **f3 + noise expert**: f3 plus a uniform background component "
        "(`noise_expert=True`, with the gate prior p(V) of the model file); "
        "not in the study.",
        "",
    ]
    if report.table:
        lines += [
            "## 1. Circle error S",
            "",
            "S = Σ_k (x0_k − x̂0_k)² + (y0_k − ŷ0_k)² + (r_k − r̂_k)² over the two circles "
            "(Hungarian matching; an invalid circle, r̂² < 0, gives S = inf). Median "
            "[25 %, 75 %] over seeds; min and max per cell are in `results.json`. "
            "'LS floor': ordinary least squares on each circle's own points with the true "
            "labels (no mixture, no prior), median over the same seeds — the error the "
            "jitter alone leaves.",
            "",
            report.table_markdown(),
            "",
        ]
    if report.sweep:
        lines += [
            "## 2. Noise sweep (CAVI)",
            "",
            "Synthetic 2 plus round(200 × level) points uniform on [−2, 2]² (level 1 = "
            "Synthetic 3). ELBO / N: the final evidence lower bound per point, in nats "
            "(without the regularizer R(w0) for f3).",
            "",
            report.sweep_markdown(),
            "",
            "![S and ELBO per point against the noise level](sweep.png)",
            "",
        ]
    if "eye" in s["parts"]:
        lines += ["## 3. The eye image (CAVI)", ""]
        if report.eye is not None:
            lines += [
                f"Image `{report.eye['image']}`; points: {report.eye['units']}. Circles are "
                "in these standardized units (not pixels: the per-axis scaling does not map "
                "circles back to pixel circles exactly). No ground truth: the inner circle "
                "is the pupil, the outer the iris.",
                "",
                report.eye_markdown(),
                "",
                "![fits over the eye points](eye_fit.png)",
                "",
            ]
        else:
            lines += [report.eye_note, ""]
    lines += ["## 4. Where and why we differ", "", _differences(report), ""]
    w = report.warnings
    conv = ", ".join(f"{k}: {v}" for k, v in w.get("convergence_warnings", {}).items())
    lines += [
        "## 5. Run notes",
        "",
        f"* Fits that stopped at their iteration limit (ConvergenceWarning, caught per fit "
        f"and counted here): {w.get('convergence_warnings_total', 0)} ({conv or 'none'})."
        + (
            " SVI's stop rule rarely triggers within its step budget at N = 200–400 (its "
            "Monte Carlo noise floor); its final objective is still the closed-form ELBO."
            if "svi" in s["methods"]
            else ""
        ),
        f"* Other warnings: {len(w.get('other_warnings', []))}"
        + "".join(f"\n  * `{m}`" for m in w.get("other_warnings", [])),
        "* Wall time: "
        + ", ".join(f"{k} {v:.1f} s" for k, v in report.timings.items())
        + f" (fits: wall time of the fitting phase, {s['workers']} worker process(es)).",
        "",
    ]
    return "\n".join(lines)


def _differences(report: Report) -> str:
    """The 'where and why we differ' paragraph, with this run's numbers where available."""
    f = _fmt
    s1 = _cell(report, "synthetic_1", "f2")
    s1_svi = _cell(report, "synthetic_1", "f2", "svi")
    s2 = [_cell(report, "synthetic_2", c) for c in ("f1", "f2", "f3")]
    s3 = _cell(report, "synthetic_3", "f3")
    s3n = _cell(report, "synthetic_3", "f3 + noise expert")
    floor2 = report.floor.get("synthetic_2", {}).get("median")
    parts = [
        "**Formulas.** We fit the model as stated, with the corrected updates of "
        "`docs/derivation.md` §8, not the published ones: (a) the published "
        "mixture-of-experts q(Z) update drops the factor 2 y_i from the cross term, so its "
        "responsibilities do not depend on the targets at all (only on x_i and the gate); "
        "(f) the published regularized prior-mean update uses Ξ where Ξ⁻¹ belongs and "
        "misses a factor 2; (e) A_k = E[w wᵀ] holds only for a zero prior mean. Both (a) "
        "and (f) lower the objective against the corrected block maximisers "
        "(`tests/test_errata.py`).",
    ]
    if s1 is not None:
        parts.append(
            f"**Synthetic 1.** The study reports S = 1e-5; closed-form CAVI reaches "
            f"{f(s1)} (f2), machine precision, because on noise-free points β climbs to its "
            "floor and the posterior mean is the exact interpolant"
            + (
                f"; SVI, a stochastic optimiser with a step budget, stops at {f(s1_svi)}, "
                "the order of the published value, which suggests the published 1e-5 is an "
                "optimiser tolerance, not a property of the model."
                if s1_svi is not None
                else "; a stochastic or iteration-limited optimiser stops near 1e-6–1e-5, "
                "which suggests the published 1e-5 is an optimiser tolerance."
            )
        )
    if all(v is not None for v in s2):
        parts.append(
            f"**Synthetic 2.** f2 and f3 give {f(s2[1])} and {f(s2[2])} against the "
            f"published 1e-3: the jitter bias floor. Least squares on each circle's own "
            f"points with the true labels already gives {f(floor2)}: N(0, 0.1²) jitter on x "
            "and y enters t = x² + y² and biases r̂ upward (E[t] = r² + 2σ² on a centred "
            "circle), so a method that regresses t on [x, y, 1] sits on this floor; the "
            "published 1e-3 is this floor to the one digit the study reports."
        )
        if s2[0] < 0.01:
            parts[-1] += (
                f" f1 gives {f(s2[0])}, not the published 0.6: with the corrected q(Z) "
                "(erratum a) the responsibilities see y, and even zero prior means separate "
                "the circles. The published update, blind to y, is a plausible cause of the "
                "study's f1 failure (we have not rerun the study's code)."
            )
        else:
            parts[-1] += (
                f" f1 gives {f(s2[0])} (published 0.6): without prior information the two "
                "experts do not always separate the circles from one restart."
            )
    if s3 is not None:
        parts.append(
            f"**Synthetic 3.** Half the points are uniform noise. f3 gives {f(s3)} (CAVI), "
            "far from the published 1e-3: two Gaussian-noise circle experts must explain "
            "every stray point, which inflates 1/β and pulls the circles. The published "
            "1e-3 is at (or below) the jitter floor of the noise-free Synthetic 2 and we "
            "could not reach it with any of f1–f3."
            + (
                f" The noise expert (a uniform component over the target range) brings f3 "
                f"to {f(s3n)}. It does not reach the floor: the gate still routes some stray "
                "points to the circle experts (a solution with a higher ELBO, see the "
                "README's noise-expert section)."
                if s3n is not None
                else ""
            )
        )
    return "\n\n".join(parts)
