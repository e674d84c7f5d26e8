"""The circles fit_circles reports: the posterior mean's (algebraic, Kasa) against the
geometric refinement (:meth:`pyro_moe.CurveFit.refined`), on many seeds of the sparse kinds.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/sparse_refine.py [--seeds 0-149]
        [--kinds 5,3,2] [--name scenes_sparse_refine]

Per kind (indices into :data:`~pyro_moe.shapes.synthetic.SPARSE_KINDS`; default the
sparse jittered arcs, three rings with 2.5 px jitter, two concentric jittered rings), each
seed's scene is fitted once (``fit_circles(img, experts=K, noise_expert=True)``) and
both circles of each expert scored: scenes solved (every circle within 2 px in x0, y0, r,
as ``benchmarks/scenes.py``), the median and 90th percentile of the worst error, and the
95 % coverage of (x0, y0, r) by each one's sds (the algebraic circle's: the delta method
at the posterior mean; the refined one's: its geometric fit's covariance). An oracle row
fits each true circle geometrically to the points within 3 jitter sds of it: what any
estimator of the same points could reach.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from scenes import solved  # noqa: E402

import pyro_moe  # noqa: E402
from pyro_moe.curves.result import CurveFit  # noqa: E402
from pyro_moe.shapes import match_circles  # noqa: E402
from pyro_moe.shapes.curves import geometric_circles  # noqa: E402
from pyro_moe.shapes.synthetic import SPARSE_KINDS, circle_scene  # noqa: E402

Z95 = 1.959964


def seeds_of(text: str) -> list[int]:
    if "-" in text and "," not in text:
        a, b = (int(v) for v in text.split("-"))
        return list(range(a, b + 1))
    return [int(v) for v in text.split(",")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="0-149")
    ap.add_argument("--kinds", default="5,3,2")
    ap.add_argument("--name", default="scenes_sparse_refine")
    args = ap.parse_args()
    seeds, kinds = seeds_of(args.seeds), [SPARSE_KINDS[int(i)] for i in args.kinds.split(",")]
    load_start = os.getloadavg()[0]
    out = {}
    for kind in kinds:
        fails = {"algebraic": 0, "refined": 0, "oracle": 0}
        worst = {k: [] for k in fails}
        z = {"algebraic": [], "refined": []}
        for seed in seeds:
            img, truth = circle_scene(kind, seed)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                fit = pyro_moe.fit_circles(img, experts=len(truth), noise_expert=True)
            plain = CurveFit(fit.result, fit.geometry)
            yy, xx = np.nonzero(img)
            xy = np.column_stack([xx, yy]).astype(float)
            T = np.array([[c.x0, c.y0, c.r] for c in truth])
            d = np.abs(np.hypot(xy[:, None, 0] - T[:, 0], xy[:, None, 1] - T[:, 1]) - T[:, 2])
            oracle, *_ = geometric_circles(xy, (d < 4.5).astype(float), T)
            found = {"algebraic": plain.circles(), "refined": fit.circles(),
                     "oracle": [tuple(c) for c in oracle]}  # fmt: skip
            for name, cs in found.items():
                ok, _, w = solved(truth, cs)
                fails[name] += not ok
                worst[name].append(w)
            for name, f in (("algebraic", plain), ("refined", fit)):
                us = pyro_moe.circle_uncertainty(f)
                for i, j in match_circles(truth, f.circles()):  # as scenes.solved pairs them
                    t, u = truth[i], us[j]
                    if u.r is None:
                        continue
                    z[name].append([(u.x0 - t.x0) / u.sd_x0, (u.y0 - t.y0) / u.sd_y0,
                                    (u.r - t.r) / u.sd_r])  # fmt: skip
        out[kind] = {
            "scenes": len(seeds),
            "failed": fails,
            "worst_median_px": {k: float(np.median(v)) for k, v in worst.items()},
            "worst_p90_px": {k: float(np.percentile(v, 90)) for k, v in worst.items()},
            "coverage95": {k: (np.abs(np.array(v)) < Z95).mean(0).tolist() for k, v in z.items()},
            "z_mean": {k: np.array(v).mean(0).tolist() for k, v in z.items()},
        }
        print(kind, out[kind], flush=True)
    meta = {"argv": sys.argv[1:], "seeds": [seeds[0], seeds[-1]], "load_start": load_start,
            "load_end": os.getloadavg()[0], "cores": os.cpu_count()}  # fmt: skip
    res = HERE / "results"
    (res / f"{args.name}.json").write_text(json.dumps({"meta": meta, "kinds": out}, indent=1))
    lines = [
        f"`benchmarks/sparse_refine.py {' '.join(meta['argv'])}`: seeds {seeds[0]}-{seeds[-1]} "
        "of each kind, K given, `fit_circles(img, experts=K, noise_expert=True)`; the posterior "
        "mean's (algebraic) circles against the geometric refinement fit_circles reports, and "
        "an oracle (the geometric fit of the points within 4.5 px of each true circle). "
        "Failed = a circle off by more than 2 px in x0, y0 or r; coverage = the share of "
        "true (x0, y0, r) inside each one's 95 % intervals.",
        "",
        "| kind | scenes | failed: algebraic / refined / oracle | worst px median (p90): "
        "algebraic / refined / oracle | coverage (x0, y0, r): algebraic | refined |",
        "|---|---|---|---|---|---|",
    ]
    for kind, r in out.items():
        f, m, p, c = r["failed"], r["worst_median_px"], r["worst_p90_px"], r["coverage95"]
        lines.append(
            f"| {kind} | {r['scenes']} | {f['algebraic']} / {f['refined']} / {f['oracle']} | "
            + " / ".join(f"{m[k]:.2f} ({p[k]:.2f})" for k in ("algebraic", "refined", "oracle"))
            + " | "
            + " | ".join(", ".join(f"{v:.3f}" for v in c[k]) for k in ("algebraic", "refined"))
            + " |"
        )
    (res / f"{args.name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
