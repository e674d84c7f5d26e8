"""Synthetic circle scenes of the kinds users bring, and three methods on each.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/scenes.py [--quick] [--methods pyro_moe,ransac,hough]

Scenes (seeded, regenerated on every run): concentric rings (2, 3 and 4), apart, overlapping,
small (r 8-15), cut by the border, 5 apart, two concentric pairs, 5-30 % stray pixels,
jitter, 2-px-thick rings, and one 1024^2 image. A scene is *solved* when every true circle
is matched (Hungarian on (x0, y0, r)) by a found circle within 2 px in each of x0, y0 and
r (absolute pixels, at every image size).

pyro_moe runs as the command line would (`fit_circles`, K given, the noise expert on, the
default restarts); RANSAC is sequential `skimage.measure.ransac` + `CircleModel` (threshold
1.5 px); Hough is `skimage.transform.hough_circle` + `hough_circle_peaks` with minimum
distances 1 (so concentric circles survive) and the true radius range +-20 %.
Writes benchmarks/results/scenes.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
import warnings
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import pyro_moe  # noqa: E402
from pyro_moe.shapes import Circle, circle_image, match_circles, rasterize  # noqa: E402

TOL_PX = 2.0


def _ring_image(centers, radii, shape, *, thickness=1, outliers=0.0, jitter=0.0, seed=0):
    """Rings drawn with optional radial jitter (px) before rasterizing."""
    if jitter == 0.0:
        return circle_image(centers, radii, shape, thickness=thickness,
                            outlier_fraction=outliers, seed=seed)  # fmt: skip
    rng = np.random.default_rng(seed)
    pts = []
    for (cx, cy), r in zip(centers, radii, strict=True):
        m = math.ceil(8 * math.pi * r) + 16
        phi = 2 * np.pi * np.arange(m) / m
        rr = r + rng.normal(0.0, jitter, m)
        pts.append(np.column_stack([cx + rr * np.cos(phi), cy + rr * np.sin(phi)]))
    img = rasterize(np.concatenate(pts), shape, thickness=thickness)
    if outliers:
        bg = np.flatnonzero(~img.ravel())
        n = min(round(outliers * int(img.sum())), bg.size)
        img.flat[rng.choice(bg, size=n, replace=False)] = True
    return img, [
        Circle(float(cx), float(cy), float(r)) for (cx, cy), r in zip(centers, radii, strict=True)
    ]


def scenes(quick: bool = False):
    """(name, image, true circles) for every scene kind."""
    S = (160, 160)
    yield ("concentric 2", *_ring_image([(80.3, 79.6)] * 2, [25, 60], S))
    yield ("concentric 3", *_ring_image([(110.2, 108.7)] * 3, [30, 66, 104], (220, 220)))
    yield ("concentric 4", *_ring_image([(110.4, 109.3)] * 4, [20, 45, 72, 104], (220, 220)))
    yield ("apart 2 (r 25, 80)", *_ring_image([(45.0, 50.0), (150.0, 120.0)], [25, 80], (220, 240)))
    yield ("overlapping 2", *_ring_image([(70.0, 80.0), (100.0, 85.0)], [40, 35], S))
    yield ("small (r 8-15)", *_ring_image([(30, 30), (90, 40), (60, 110)], [8, 12, 15], (140, 140)))
    yield ("cut by the border", *_ring_image([(20.0, 60.0), (120.0, 150.0)], [35, 40], S))
    yield ("5 apart", *_ring_image([(40, 40), (120, 40), (40, 120), (120, 120), (80, 80)],
                                   [22, 18, 25, 20, 15], S))  # fmt: skip
    yield ("two concentric pairs", *_ring_image([(55, 60)] * 2 + [(150, 120)] * 2,
                                                [20, 40, 15, 35], (200, 200)))  # fmt: skip
    for f in (0.05, 0.3):
        yield (f"concentric 2 + {f:.0%} stray", *_ring_image([(80.3, 79.6)] * 2, [25, 60], S,
                                                             outliers=f, seed=3))  # fmt: skip
    yield ("apart 3 + 15% stray", *_ring_image([(40, 45), (115, 50), (80, 120)], [25, 30, 28],
                                               S, outliers=0.15, seed=4))  # fmt: skip
    yield ("jitter 0.7 px", *_ring_image([(80, 80)] * 2 + [(40, 40)], [30, 60, 12], S, jitter=0.7))
    yield ("2-px-thick rings", *_ring_image([(80.0, 80.0)] * 2, [30, 62], S, thickness=2))
    if not quick:
        yield ("1024^2, 3 concentric", *_ring_image([(512.3, 510.8)] * 3, [120, 260, 410],
                                                    (1024, 1024)))  # fmt: skip


def solved(truth, found) -> tuple[bool, int, float]:
    """(every circle within TOL_PX in x0, y0 and r; how many; worst error)."""
    pred = [c if isinstance(c, Circle) else Circle(*c, True) for c in found]
    pairs = match_circles(truth, pred)
    errs = [max(abs(truth[i].x0 - pred[j].x0), abs(truth[i].y0 - pred[j].y0),
                abs(truth[i].r - pred[j].r)) for i, j in pairs]  # fmt: skip
    good = sum(e <= TOL_PX for e in errs)
    worst = max(errs) if len(errs) == len(truth) else math.inf
    return good == len(truth), good, worst


def run_pyro_moe(img, K):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = pyro_moe.fit_circles(img, experts=K, noise_expert=True)
    return [c for c in r.circles()]


def main() -> None:
    import run  # the RANSAC and Hough baselines of benchmarks/run.py

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--methods", default="pyro_moe,ransac,hough")
    args = ap.parse_args()
    methods = args.methods.split(",")
    rows = []
    for name, img, truth in scenes(args.quick):
        K = len(truth)
        row = {"scene": name, "K": K, "size": list(img.shape), "points": int(img.sum())}
        for m in methods:
            t0 = time.perf_counter()
            if m == "pyro_moe":
                found = run_pyro_moe(img, K)
            elif m == "ransac":
                found = run.ransac_circles(img, K)[0]
            else:
                found = run.hough(img, K, truth)[0]
            dt = time.perf_counter() - t0
            ok, good, worst = solved(truth, found)
            row[m] = {"solved": ok, "found": good, "worst_px": worst, "seconds": dt}
        rows.append(row)
        print(name, {m: (row[m]["solved"], round(row[m]["worst_px"], 2), round(row[m]["seconds"], 2))
                     for m in methods}, flush=True)  # fmt: skip
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / "scenes.json").write_text(json.dumps(rows, indent=1, default=float) + "\n")
    lines = ["| scene | K | " + " | ".join(methods) + " |", "|---|---|" + "---|" * len(methods)]
    for row in rows:
        cells = [f"{'yes' if row[m]['solved'] else 'no'} ({row[m]['worst_px']:.2g} px, "
                 f"{row[m]['seconds']:.2g} s)" for m in methods]  # fmt: skip
        lines.append(f"| {row['scene']} | {row['K']} | " + " | ".join(cells) + " |")
    total = {m: sum(r[m]["solved"] for r in rows) for m in methods}
    lines.append(
        "| **solved** | | " + " | ".join(f"**{total[m]}/{len(rows)}**" for m in methods) + " |"
    )
    (out / "scenes.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
