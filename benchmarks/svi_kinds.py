"""SVI (natural gradient, the default of method="svi") against CAVI on new cases of the
three kinds issue #16 measured: `mixture_of_models`, the engines' defaults, the same seed.

* ``rings``: clean concentric rings (two radii about one centre, jitter 1e-4 to 1e-3:
  posterior sds ~1e-4), no noise expert;
* ``stray``: two apart circles with 30 % stray points, the noise expert on;
* ``exact``: exact concentric circles (no jitter), the noise expert on.

Each case draws its own centre(s), radii and N (300 to 3000 points) from its seed. Per case:
both objectives, the gap against max(1e-4 |F_CAVI|, 0.5) nats, the study's S of both
(circle error against the truth) against max(2 S_CAVI, 1e-6), the largest
|sd_SVI / sd_CAVI - 1| of the weights' posterior sds (experts aligned) against 5 %, and
both times. Writes benchmarks/results/svi_kinds.{json,md}.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/svi_kinds.py [--seeds 6]
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import numpy as np
from run import machine, svi_against_cavi, table  # benchmarks/run.py

import pyro_moe
from pyro_moe.shapes import Circle, circle_design, circle_points
from pyro_moe.shapes.geometry import Geometry

OUT = Path(__file__).resolve().parent / "results"
KINDS = ("rings", "stray", "exact")


def case(kind: str, seed: int):
    """(xy, truth, fit options) of one case of ``kind``."""
    rng = np.random.default_rng(1000 * KINDS.index(kind) + seed)
    N = int(rng.integers(300, 3000))
    if kind == "stray":
        r = rng.uniform(0.3, 0.8, 2)
        gap = rng.uniform(0.2, 1.0)
        c1 = rng.uniform(-2, 2, 2)
        phi = rng.uniform(0, 2 * np.pi)
        c2 = c1 + (r.sum() + gap) * np.array([np.cos(phi), np.sin(phi)])
        centres, jitter, out = [tuple(c1), tuple(c2)], float(rng.uniform(0.005, 0.02)), 0.3
        opts = {"noise_expert": True}
    else:
        c = tuple(rng.uniform(-2, 2, 2))
        r1 = rng.uniform(0.3, 1.0)
        r = np.array([r1, r1 * rng.uniform(1.5, 3.0)])
        centres, out = [c, c], 0.0
        jitter = float(10 ** rng.uniform(-4, -3)) if kind == "rings" else 0.0
        opts = {"noise_expert": kind == "exact"}
    n = int(N * (1 - out)) // 2
    xy, _ = circle_points(centres, r, n, jitter=jitter, outlier_fraction=out, seed=seed)
    truth = [Circle(cx, cy, rr, True) for (cx, cy), rr in zip(centres, r, strict=True)]
    return xy, truth, opts


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=6)
    args = ap.parse_args()
    rows = []
    for kind in KINDS:
        for seed in range(args.seeds):
            xy, truth, opts = case(kind, seed)
            X, t = circle_design(xy)
            fits = {}
            for method in ("cavi", "svi"):
                t0 = time.perf_counter()
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    fits[method] = pyro_moe.CurveFit(pyro_moe.fit(
                        "mixture_of_models", X, t, experts=2, method=method, seed=seed,
                        progress=False, prior_units="unit", **opts,
                    ), Geometry.of("circle", 2))  # fmt: skip
                fits[method + "_s"] = time.perf_counter() - t0
            row = {"kind": kind, "seed": seed, "N": int(X.shape[0]),
                   **svi_against_cavi(fits["cavi"], fits["svi"], truth),
                   "cavi_s": fits["cavi_s"], "svi_s": fits["svi_s"]}  # fmt: skip
            rows.append(row)
            print(row, flush=True)
    keys = ["kind", "seed", "N", "F_cavi", "F_svi", "gap", "F_ok", "S_cavi", "S_svi", "S_ok",
            "sd_ratio_max_dev", "sd_ok", "cavi_converged", "svi_converged", "cavi_s", "svi_s"]  # fmt: skip
    info = machine()
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "svi_kinds.json").write_text(json.dumps({"info": info, "rows": rows}, indent=2))
    passed = sum(r["F_ok"] and r["S_ok"] and r["sd_ok"] for r in rows)
    text = "\n\n".join(
        [
            "# SVI (natural gradient) against CAVI on new cases of issue #16's three kinds",
            ", ".join(f"{k}={v}" for k, v in info.items()),
            *__doc__.split("\n\n")[1:3],
            f"All three tests pass on {passed} of {len(rows)} cases.",
            table(rows, keys),
        ]
    )
    (OUT / "svi_kinds.md").write_text(text + "\n")


if __name__ == "__main__":
    main()
