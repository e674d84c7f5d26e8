"""The sequential-RANSAC seed before and after issue 28's changes, on sparse point sets.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/sparse_seed_ab.py [--seeds 10-30]
        [--before 204af59]

``pyro_moe.fit_circles(image, experts=K, noise_expert=True)`` on each scene twice,
interleaved in one process: with ``pyro_moe/shapes/seeding.py`` as it was at ``--before``
(read with ``git show``) and no further seeded starts
(``pyro_moe.curves.fitting.SEEDED_RESTARTS = 0``, as before), and as both are now;
everything else is this tree's. Scenes
(:func:`pyro_moe.shapes.synthetic.point_scene`, 256^2 / 200^2 images):

* ``three 15 % rings, 50 % clutter``: three concentric rings (radii in steps of 18-38 px
  from 0), each keeping 15-16 % of its pixels, in as many clutter pixels;
* ``two sparse jittered rings, 50 % clutter``: two rings apart (r 25-50, centres near
  (55, 55) and (145, 145)), 15-30 % of their pixels, jitter 2.5 px, in as many clutter
  pixels.

Solved: every circle within 2 px in x0, y0 and r. Also the objective F of each fit: where
only one of the two solves a scene, the higher F tells whether the seed or the model was
wrong. Writes benchmarks/results/sparse_seed_ab.{json,md}.
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import json
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from scenes import solved  # noqa: E402

import pyro_moe  # noqa: E402
import pyro_moe.curves.fitting as curve_fitting  # noqa: E402
from pyro_moe.shapes.synthetic import point_scene  # noqa: E402


def scene(name: str, seed: int):
    rng = np.random.default_rng(seed + 1000)
    if name.startswith("three"):
        radii = list(np.cumsum(rng.uniform(18, 38, 3)))
        c = (128 + rng.uniform(-3, 3), 128 + rng.uniform(-3, 3))
        keep = list(rng.uniform(0.15, 0.16, 3))
        return point_scene([c] * 3, radii, (256, 256), keep=keep, clutter=0.5, seed=seed)
    radii = list(rng.uniform(25, 50, 2))
    centers = [tuple(55 + rng.uniform(-4, 4, 2)), tuple(145 + rng.uniform(-4, 4, 2))]
    keep = list(rng.uniform(0.15, 0.3, 2))
    return point_scene(centers, radii, (200, 200), keep=keep, jitter=2.5, clutter=0.5,
                       seed=seed)  # fmt: skip


def seeding_at(commit: str):
    """``pyro_moe/shapes/seeding.py`` at ``commit``, loaded as a module of pyro_moe.shapes."""
    text = subprocess.run(["git", "show", f"{commit}:pyro_moe/shapes/seeding.py"],
                          capture_output=True, text=True, check=True, cwd=HERE).stdout  # fmt: skip
    path = Path(tempfile.mkdtemp()) / "seeding_before.py"
    path.write_text(text)
    spec = importlib.util.spec_from_file_location("pyro_moe.shapes._seeding_before", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def as_sequential(seed_curves):
    """A ``seed_curves(points, K, form, kind, seed=...)`` of an older seeding.py as the
    sequential draw the curve fit now reads (``sequential_curves``: the labels after 1, 2,
    ... curves), one call per K."""

    def sequential(points, form, kind, *, seed=0, candidates=None, tau=None):
        for k in itertools.count(1):
            yield seed_curves(points, k, form, kind, seed=seed, candidates=candidates, tau=tau)

    return sequential


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="10-30", help="first-last (last excluded)")
    ap.add_argument("--before", default="204af59")
    args = ap.parse_args()
    lo, hi = (int(v) for v in args.seeds.split("-"))
    variants = {
        "before": as_sequential(seeding_at(args.before).seed_curves),
        "now": curve_fitting.sequential_curves,
    }
    restarts = curve_fitting.SEEDED_RESTARTS
    warnings.simplefilter("ignore")
    rows = []
    for name in ("three 15 % rings, 50 % clutter", "two sparse jittered rings, 50 % clutter"):
        for seed in range(lo, hi):
            img, truth = scene(name, seed)
            row = {"scene": name, "seed": seed}
            for tag, sequential in variants.items():
                curve_fitting.sequential_curves = sequential
                curve_fitting.SEEDED_RESTARTS = restarts if tag == "now" else 0
                t0 = time.perf_counter()
                fit = pyro_moe.fit_circles(img, experts=len(truth), noise_expert=True)
                dt = time.perf_counter() - t0
                ok, _, worst = solved(truth, [c for c in fit.circles() if c.valid])
                row[tag] = {"solved": ok, "worst_px": worst, "objective": fit.objective,
                            "seconds": dt}  # fmt: skip
            rows.append(row)
            print(row, flush=True)
    curve_fitting.sequential_curves, curve_fitting.SEEDED_RESTARTS = variants["now"], restarts
    lines = [f"`benchmarks/sparse_seed_ab.py --seeds {args.seeds} --before {args.before}`: "
             "fit_circles, K given, seeding.py and SEEDED_RESTARTS before and now, interleaved in one "
             "process "
             "(shared machine: compare within the run)", "",
             "| scenes | solved before | solved now | F higher now where only now solves | "
             "median s before | median s now |", "|---|---|---|---|---|---|"]  # fmt: skip
    for name in dict.fromkeys(r["scene"] for r in rows):
        rs = [r for r in rows if r["scene"] == name]
        fixed = [r for r in rs if r["now"]["solved"] and not r["before"]["solved"]]
        higher = sum(r["now"]["objective"] > r["before"]["objective"] for r in fixed)
        med = {t: np.median([r[t]["seconds"] for r in rs]) for t in variants}
        lines.append(f"| {name} | {sum(r['before']['solved'] for r in rs)}/{len(rs)} | "
                     f"{sum(r['now']['solved'] for r in rs)}/{len(rs)} | {higher}/{len(fixed)} | "
                     f"{med['before']:.2g} | {med['now']:.2g} |")  # fmt: skip
    out = HERE / "results"
    (out / "sparse_seed_ab.json").write_text(json.dumps(rows, indent=1, default=float) + "\n")
    (out / "sparse_seed_ab.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
