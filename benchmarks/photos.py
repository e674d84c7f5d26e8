"""Curves found on photographs and clean scenes, against the strongest peers in one run.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/photos.py

Methods, each in this one process, warm (every method run once on a small image first),
time per image in-process:

* ``pyro_moe K``: :func:`pyro_moe.fit_circles` / :func:`pyro_moe.fit_conics` with K given
  and the library's defaults (``edges=True`` on photos), exactly what ``pyro-moe circles
  IMAGE --edges --experts K`` fits;
* ``pyro_moe auto``: :func:`pyro_moe.select_curves` with its defaults (``--experts auto``);
  *other* counts its valid curves that match no known curve of the picture (on the coins
  and the drawn rim: curves that are not there; on coffee the saucer's rim and the cup's
  foot are there but have no reference, so *other* is not "invented" there);
* ``EDCircles``: OpenCV's EdgeDrawing (``benchmarks/peers.py::edcircles``, parameter-free,
  no K) on the gray image (the ``bench`` extra; skipped without it);
* ``RANSAC``: sequential RANSAC with ``CircleModel`` (``benchmarks/peers.py::
  ransac_circles``, threshold 1.5 px, 2000 trials) on the same Canny edges pyro_moe uses,
  K given (circles only).

Photos (references and how they were measured: ``tests/test_photos.py``): coins (24
circles, success within 4 px in x0, y0, r), the study's eye photo ``1.tif`` (pupil and
outer iris, 8 px; skipped when the study's data are absent), coffee (both cup rims as
ellipses: success when the filled-ellipse overlap with the reference exceeds 0.8,
:func:`pyro_moe.shapes.metric.ellipse_overlap`, as AAMED's evaluation on real pictures, and
within 4 px), and a real photo (``skimage.data.moon``) with a drawn rim and branching curved
clutter inside it (``tests/test_photos.py::rim_with_branches``, 4 px; its two edges
r = 198 and 202 px). Photos with curved texture and no circle (``skimage.data.camera``,
``rocket``, ``brick``): ``--experts auto`` only (circles, and conics), every valid curve
*other*.

Drawings: :func:`pyro_moe.shapes.synthetic.ellipse_drawing`, nine ellipses of which five
are dashed (3 px on, 3 px off: their edge chains do not close), seeds 0-2; pyro_moe K = 9,
``pyro_moe auto`` (``select_curves(design="conic")``) and EDCircles on the binary drawing;
found when a true ellipse is matched one to one at filled overlap > 0.95; median time.

Clean scenes: :func:`pyro_moe.shapes.synthetic.circle_scene` of the kinds without stray
pixels or jitter, seeds 0 and 1, success within 2 px, median time per image.

Writes benchmarks/results/photos.{json,md}. Times are wall-clock on the machine that runs
it, and only comparable within one run.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import numpy as np  # noqa: E402
import skimage.data  # noqa: E402
from peers import edcircles, ransac_circles  # noqa: E402
from scipy.optimize import linear_sum_assignment  # noqa: E402
from skimage.color import rgb2gray  # noqa: E402

import pyro_moe  # noqa: E402
from pyro_moe.files import atomic_write  # noqa: E402
from pyro_moe.shapes.curves import Circle  # noqa: E402
from pyro_moe.shapes.emprior import emprior_dir  # noqa: E402
from pyro_moe.shapes.image import image_to_points, read_image  # noqa: E402
from pyro_moe.shapes.metric import ellipse_overlap  # noqa: E402
from pyro_moe.shapes.synthetic import circle_scene, ellipse_drawing  # noqa: E402
from tests.test_photos import (  # noqa: E402
    COFFEE,
    COINS,
    EYE,
    EYE_OTHER_EDGES,
    EYE_SPECULAR,
    _found,
    rim_with_branches,
)

LOAD_START = 0.0
CLEAN = (
    "concentric 2", "concentric 3", "concentric 4", "apart 2 (small and large)",
    "overlapping 2", "small (r 8-15)", "cut by the border", "5 apart", "two concentric pairs",
    "2-px-thick rings",
)  # fmt: skip


class Seconds(float):
    """Wall-clock seconds of a call, with ``cpu``: its process CPU seconds (one thread with
    OMP_NUM_THREADS=1: on a shared machine the wall time grows with the load, the CPU time
    much less)."""

    cpu: float = 0.0


def _timed(fit, *args, **kw):
    t0, c0 = time.perf_counter(), time.process_time()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = fit(*args, **kw)
    dt = Seconds(time.perf_counter() - t0)
    dt.cpu = time.process_time() - c0
    return result, dt


def _gray8(img: np.ndarray) -> np.ndarray:
    """uint8 gray for OpenCV: colour by luminance, floats in [0, 1] scaled."""
    a = np.asarray(img)
    if a.ndim == 3:
        a = rgb2gray(a[..., :3])
    if a.dtype == bool:
        return a.astype(np.uint8) * 255
    return (a * 255).astype(np.uint8) if a.dtype.kind == "f" else a.astype(np.uint8)


def _edges(img: np.ndarray) -> np.ndarray:
    """The edge map pyro_moe fits (Canny at the automatic scale), as a boolean image."""
    ps = image_to_points(img, edges=True)
    mask = np.zeros(ps.image_shape, dtype=bool)
    mask[ps.xy[:, 1].astype(int), ps.xy[:, 0].astype(int)] = True
    return mask


def _valid(result) -> list:
    return [r.curve for r in pyro_moe.curve_reports(result) if r.valid]


def _ellipse(c) -> tuple[float, ...] | None:
    if getattr(c, "kind", None) != "ellipse":
        return None
    return (*c.center, *c.semi_axes, c.angle)


def _rims_found(refs: dict, ellipses: list[tuple[float, ...]]) -> tuple[int, dict]:
    """How many reference rims (x0, y0, a, b) have an ellipse (cx, cy, a, b, angle) of
    filled overlap > 0.8 within 4 px in centre and semi-axes; and each rim's best overlap.
    The references carry no angle: a rim's overlap is the best over the candidate's own
    angle and the reference taken at it (the coffee rims are nearly round)."""
    best, hits = {}, 0
    for name, (x, y, a, b) in refs.items():
        top = 0.0
        for e in ellipses:
            big, small = sorted(e[2:4], reverse=True)
            close = max(abs(e[0] - x), abs(e[1] - y), abs(big - a), abs(small - b)) <= 4.0
            ang = e[4] if e[2] >= e[3] else e[4] + np.pi / 2
            o = ellipse_overlap((x, y, a, b, ang), (e[0], e[1], big, small, ang))
            top = max(top, o if close else 0.0)
        best[name] = round(top, 3)
        hits += top > 0.8
    return hits, best


def _run_edcircles(img):
    try:
        return _timed(edcircles, _gray8(img))
    except ImportError:
        return None, None


def circle_photo(rows, name, img, refs, tol, K, known=None):
    """pyro_moe K, pyro_moe auto, EDCircles and RANSAC on one photo of circles: found
    references; *invented*: valid circles within ``tol`` of no known circle (``known``:
    the references and other circles the photo shows, e.g. the eye's specular rings)."""
    known = list(refs) + list(known or [])

    def invented(circles):
        return len(circles) - _found(known, circles, tol)

    r, dt = _timed(pyro_moe.fit_circles, img, experts=K, edges=True)
    v = _valid(r)
    rows.append({"photo": name, "method": f"pyro_moe K={K}", "found": _found(refs, v, tol),
                 "total": len(refs), "tol_px": tol, "invented": invented(v),
                 "seconds": dt, "cpu_seconds": dt.cpu})  # fmt: skip
    s, dt = _timed(pyro_moe.select_curves, img, design="circle", image_options={"edges": True})
    v = _valid(s.result)
    rows.append({"photo": name, "method": f"pyro_moe auto (K={s.experts})",
                 "found": _found(refs, v, tol), "total": len(refs), "tol_px": tol,
                 "invented": invented(v), "seconds": dt, "cpu_seconds": dt.cpu})  # fmt: skip
    ed, dt = _run_edcircles(img)
    if ed is not None:
        circ = [Circle(*c, True) for c in ed[0]["circles"]]
        circ += [Circle(e[0], e[1], 0.5 * (e[2] + e[3]), True) for e in ed[0]["ellipses"]
                 if min(e[2], e[3]) > 0.9 * max(e[2], e[3])]  # fmt: skip
        rows.append({"photo": name, "method": "EDCircles", "found": _found(refs, circ, tol),
                     "total": len(refs), "tol_px": tol,
                     "invented": invented(circ), "seconds": dt, "cpu_seconds": dt.cpu})  # fmt: skip
    edges = _edges(img)
    rc, dt = _timed(ransac_circles, edges, K)
    circ = [Circle(*c, True) for c in rc[0]]
    rows.append({"photo": name, "method": f"RANSAC K={K}", "found": _found(refs, circ, tol),
                 "total": len(refs), "tol_px": tol,
                 "invented": invented(circ), "seconds": dt, "cpu_seconds": dt.cpu})  # fmt: skip


def coffee(rows):
    img = skimage.data.coffee()
    refs = {k: COFFEE[k] for k in ("cup outer rim", "cup inner rim")}
    for how, fit in (
        ("pyro_moe K=2", lambda: pyro_moe.fit_conics(img, experts=2, edges=True)),
        ("pyro_moe auto", lambda: pyro_moe.select_curves(img, design="conic",
                                                         image_options={"edges": True})),
    ):  # fmt: skip
        r, dt = _timed(fit)
        result = r.result if hasattr(r, "table") else r  # a Selection, or a CurveFit
        ells = [e for e in map(_ellipse, _valid(result)) if e is not None]
        hits, best = _rims_found(refs, ells)
        label = how if result is r else f"{how} (K={r.experts})"
        rows.append({"photo": "coffee (both cup rims)", "method": label, "found": hits,
                     "total": 2, "tol_px": "overlap > 0.8, 4", "overlap": best,
                     "invented": len(ells) - hits, "seconds": dt, "cpu_seconds": dt.cpu})  # fmt: skip
    ed, dt = _run_edcircles(img)
    if ed is not None:
        ells = [(x, y, a, b, np.deg2rad(t)) for x, y, a, b, t in ed[0]["ellipses"]]
        ells += [(x, y, r, r, 0.0) for x, y, r in ed[0]["circles"]]
        hits, best = _rims_found(refs, ells)
        rows.append({"photo": "coffee (both cup rims)", "method": "EDCircles", "found": hits,
                     "total": 2, "tol_px": "overlap > 0.8, 4", "overlap": best,
                     "invented": len(ells) - hits, "seconds": dt, "cpu_seconds": dt.cpu})  # fmt: skip


#: Photos of skimage.data with curved texture and edges but no circle a person would
#: point at: every valid circle of ``--experts auto`` on them counts as *other*.
NO_CIRCLE = ("camera", "rocket", "brick")


def textured(rows):
    """``--experts auto`` on :data:`NO_CIRCLE`, circles and conics: its valid curves, all
    *other*."""
    for name in NO_CIRCLE:
        img = getattr(skimage.data, name)()
        for design in ("circle", "conic"):
            s, dt = _timed(pyro_moe.select_curves, img, design=design,
                           image_options={"edges": True})  # fmt: skip
            v = _valid(s.result)
            label = "pyro_moe auto" if design == "circle" else "pyro_moe conics auto"
            rows.append({"photo": f"{name} (skimage.data; texture, no circle)",
                         "method": f"{label} (K={s.experts})", "found": 0, "total": 0,
                         "tol_px": "-", "invented": len(v), "valid": [str(c) for c in v],
                         "seconds": dt, "cpu_seconds": dt.cpu})  # fmt: skip


def clean_scenes(rows):
    times = {"pyro_moe K": [], "RANSAC K": [], "EDCircles": []}
    cpu = {m: [] for m in times}
    solved = dict.fromkeys(times, 0)
    n = 0
    for kind in CLEAN:
        for seed in (0, 1):
            img, truth = circle_scene(kind, seed)
            K, n = len(truth), n + 1
            r, dt = _timed(pyro_moe.fit_circles, img, experts=K)
            times["pyro_moe K"].append(dt)
            cpu["pyro_moe K"].append(dt.cpu)
            solved["pyro_moe K"] += _found([(c.x0, c.y0, c.r) for c in truth], _valid(r), 2.0) == K
            rc, dt = _timed(ransac_circles, img, K)
            times["RANSAC K"].append(dt)
            cpu["RANSAC K"].append(dt.cpu)
            circ = [Circle(*c, True) for c in rc[0]]
            solved["RANSAC K"] += _found([(c.x0, c.y0, c.r) for c in truth], circ, 2.0) == K
            ed, dt = _run_edcircles(img)
            if ed is not None:
                times["EDCircles"].append(dt)
                cpu["EDCircles"].append(dt.cpu)
                circ = [Circle(*c, True) for c in ed[0]["circles"]]
                solved["EDCircles"] += _found([(c.x0, c.y0, c.r) for c in truth], circ, 2.0) == K
    for method, ts in times.items():
        if ts:
            rows.append({"photo": f"clean scenes ({n})", "method": method, "found": solved[method],
                         "total": n, "tol_px": 2, "seconds": statistics.median(ts),
                         "cpu_seconds": statistics.median(cpu[method]),
                         "median": True})  # fmt: skip


def _ellipses_matched(truth: list, ellipses: list) -> int:
    """How many true ellipses are matched one to one (Hungarian on the overlap) by a found
    ellipse of filled overlap > 0.95 (the field's threshold on synthetic pictures)."""
    if not ellipses:
        return 0
    O = np.array([[ellipse_overlap(t, e) for e in ellipses] for t in truth])
    rows, cols = linear_sum_assignment(-O)
    return int((O[rows, cols] > 0.95).sum())


def drawings(rows):
    """Drawings of nine ellipses (:func:`pyro_moe.shapes.synthetic.ellipse_drawing`, five
    dashed so that their edge chains do not close), seeds 0-2: pyro_moe K = 9, auto and
    EDCircles; found when matched at overlap > 0.95; median time per drawing."""
    runs = {"pyro_moe K=9": [], "pyro_moe auto": [], "EDCircles": []}
    found = dict.fromkeys(runs, 0)
    chosen = []
    for seed in (0, 1, 2):
        img, truth = ellipse_drawing(seed)
        r, dt = _timed(pyro_moe.fit_conics, img, experts=9)
        runs["pyro_moe K=9"].append(dt)
        found["pyro_moe K=9"] += _ellipses_matched(
            truth, [e for e in map(_ellipse, _valid(r)) if e]
        )
        s, dt = _timed(pyro_moe.select_curves, img, design="conic")
        runs["pyro_moe auto"].append(dt)
        chosen.append(s.experts)
        ells = [e for e in map(_ellipse, _valid(s.result)) if e]
        found["pyro_moe auto"] += _ellipses_matched(truth, ells)
        ed, dt = _run_edcircles(img)
        if ed is not None:
            runs["EDCircles"].append(dt)
            ells = [(x, y, a, b, np.deg2rad(t)) for x, y, a, b, t in ed[0]["ellipses"]]
            ells += [(x, y, r, r, 0.0) for x, y, r in ed[0]["circles"]]
            found["EDCircles"] += _ellipses_matched(truth, ells)
    for method, ts in runs.items():
        if ts:
            label = (
                f"{method} (K={', '.join(map(str, chosen))})" if method.endswith("auto") else method
            )
            rows.append({"photo": "nine ellipses, five dashed (drawings, 3 seeds)",
                         "method": label, "found": found[method], "total": 9 * len(ts),
                         "tol_px": "overlap > 0.95", "seconds": statistics.median(ts),
                         "cpu_seconds": statistics.median([t.cpu for t in ts]),
                         "median": True})  # fmt: skip


def _duration(t: float) -> str:
    return f"{t * 1000:.1f} ms" if t < 1 else f"{t:.2f} s"


def main() -> None:
    global LOAD_START
    LOAD_START = os.getloadavg()[0]
    warm = circle_scene("concentric 2", 5)[0]
    _timed(pyro_moe.fit_circles, warm, experts=2)
    _timed(pyro_moe.select_curves, warm, design="circle")
    _run_edcircles(warm)
    rows: list[dict] = []
    clean_scenes(rows)
    circle_photo(rows, "coins (skimage.data)", skimage.data.coins(), COINS, 4.0, 24)
    root = emprior_dir()
    if root is not None and (root / "1.tif").exists():
        eye = read_image(root / "1.tif")
        circle_photo(rows, "eye 1.tif (study)", eye, list(EYE.values()), 8.0, 2,
                     known=[*EYE_SPECULAR.values(), *EYE_OTHER_EDGES.values()])  # fmt: skip
    coffee(rows)
    drawings(rows)
    for seed in (0, 1):
        img, (x0, y0, r) = rim_with_branches(seed)
        refs = [(x0, y0, r - 2.0), (x0, y0, r + 2.0)]  # the drawn rim's two edges
        circle_photo(rows, f"rim + branching clutter (moon, seed {seed})", img, refs, 4.0, 2)
    textured(rows)
    for row in rows:
        print(row, flush=True)
    out = HERE / "results"
    atomic_write(out / "photos.json", lambda p: p.write_text(json.dumps(rows, indent=1) + "\n"))
    lines = [
        "Photos and clean scenes, every method in one process on one machine, warm; time per",
        "image in-process (clean scenes: the median), wall clock and the process's CPU time",
        "(one thread). Written by `benchmarks/photos.py`; load average at the start of the",
        f"run: {LOAD_START:.1f}, at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores.",
        "",
        "| picture | method | found (within) | other | time | CPU time |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        found = f"{row['found']}/{row['total']} ({row['tol_px']})"
        if "overlap" in row:
            found += " " + ", ".join(f"{v:.2f}" for v in row["overlap"].values())
        lines.append(f"| {row['photo']} | {row['method']} | {found} | {row.get('invented', '')} | "
                     f"{_duration(row['seconds'])} | {_duration(row['cpu_seconds'])} |")  # fmt: skip
    atomic_write(out / "photos.md", lambda p: p.write_text("\n".join(lines) + "\n"))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
