"""The README's figure: three concentric circles with 10 % stray pixels (256 x 256), the
circles pyro_moe finds beside those a Hough transform returns on the same image.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/readme_figure.py

Needs scikit-image (the ``bench`` extra). The image is the benchmark's case (256², K = 3,
outlier fraction 0.1, :func:`run.circle_cases`) and Hough is the benchmark's
(:func:`run.hough`: ``hough_circle`` + ``hough_circle_peaks``, minimum distances 1 so that
concentric circles survive, radii 0.8-1.2 times the true range), so the figure shows the
``benchmarks/results/cavi.md`` comparison on one of its images. Writes
``docs/images/concentric_circles.png`` and ``benchmarks/results/readme_figure.json`` (the
circles, S and wall times, best of ``run.REPEATS``, drawn in the figure).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from run import REPEATS, hough, score

import pyro_moe
from pyro_moe.shapes import circle_image

ROOT = Path(__file__).resolve().parent.parent
FIGURE = ROOT / "docs" / "images" / "concentric_circles.png"
RESULTS = ROOT / "benchmarks" / "results" / "readme_figure.json"
SIZE, K, OUTLIERS = 256, 3, 0.1


def timed(fn):
    """``fn()`` and its best wall time of ``REPEATS`` runs (as in ``run.best_time``)."""
    walls, out = [], None
    for _ in range(REPEATS):
        t0 = time.perf_counter()
        out = fn()
        walls.append(time.perf_counter() - t0)
    return out, min(walls)


def main() -> None:
    img, truth = circle_image(
        [(SIZE / 2 + 0.3, SIZE * 124 / 256 - 0.4)] * K,
        [40.0, 70.0, 100.0][:K],
        (SIZE, SIZE),
        outlier_fraction=OUTLIERS,
    )

    def fit():
        result = pyro_moe.fit_circles(img, experts=K, noise_expert=True, max_points=4000)
        return [(c.x0, c.y0, c.r) for c in result.circles()]

    fit()  # the first call pays for torch's lazy initialisation; the benchmark's does too
    ours, ours_s = timed(fit)
    (theirs, settings), theirs_s = timed(lambda: hough(img, K, truth))
    rows = {}
    for name, found, wall in (("pyro_moe", ours, ours_s), ("hough", theirs, theirs_s)):
        S, good = score(truth, found)
        rows[name] = {"circles": found, "S": S, "found": good, "wall_s": wall}
    rows["hough"]["settings"] = settings
    rows["truth"] = [(c.x0, c.y0, c.r) for c in truth]

    fig, axes = plt.subplots(1, 2, figsize=(8, 4.1), sharex=True, sharey=True)
    phi = np.linspace(0, 2 * np.pi, 400)
    ys, xs = np.nonzero(img)
    titles = {
        "pyro_moe": "pyro_moe.fit_circles (noise expert)",
        "hough": "skimage hough_circle + peaks",
    }
    for ax, name in zip(axes, ("pyro_moe", "hough"), strict=True):
        ax.scatter(xs, ys, s=0.6, c="0.55", linewidths=0)
        for x0, y0, r in rows[name]["circles"]:
            ax.plot(x0 + r * np.cos(phi), y0 + r * np.sin(phi), lw=1.3)
            ax.plot([x0], [y0], "+", ms=6, c="k")
        info = rows[name]
        ax.set_title(
            f"{titles[name]}\nS = {info['S']:.2g}, {info['found']}/{K} within 2 px, "
            f"{info['wall_s']:.2f} s (best of {REPEATS})",
            fontsize=9,
        )
        ax.set_aspect("equal")
        ax.set_xlim(0, SIZE)
        ax.set_ylim(SIZE, 0)
        ax.tick_params(labelsize=7)
    fig.suptitle(f"{K} concentric circles, {OUTLIERS:.0%} stray pixels, {SIZE}x{SIZE}", fontsize=10)
    fig.tight_layout()
    FIGURE.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(FIGURE, dpi=90, metadata={"Software": None})
    plt.close(fig)
    RESULTS.write_text(json.dumps(rows, indent=2) + "\n")
    print(f"wrote {FIGURE} ({FIGURE.stat().st_size / 1024:.0f} kB) and {RESULTS}")
    for name in ("pyro_moe", "hough"):
        print(name, {k: v for k, v in rows[name].items() if k != "circles"})


if __name__ == "__main__":
    main()
