"""Natural-gradient SVI against CAVI from N = 1e3 to 1e6: time to within 0.1 % of the
final objective, full batch and minibatch.

Two scenes, `mixture_of_models`, study prior means, one restart each, the same seed:

* ``circles``: two circles (centres (0, 0), (0.3, -0.2), radii 0.5, 1.5, jitter 0.005),
  beta fixed at 1e3, nothing learned (as ``svi_vs_cavi.py``);
* ``stray``: two apart circles (centres (+-1, 0), radius 0.6, jitter 0.01) with 30 % stray
  points, the noise expert on, the default hyperparameters learned (w0, A, beta, the
  noise share in q(pi)); ``init="subsets"`` (the start that finds the circles).

Rows: ``cavi``; ``svi`` (natural gradient, full batch, rho = 1); ``svi_minibatch``
(``batch_size=min(1000, N // 4)``, Robbins-Monro, ``minibatch_from=0`` so minibatches at
every N; the default ``minibatch_from = 50_000`` runs the full batch below it, so the
default row at N < 5e4 is ``svi``). Time to within 0.1 % of the final objective: CAVI and
full batch read their exact objective history; a minibatch run's per-step objective is a
minibatch estimate (with stray points its sd is hundreds of nats), so it is timed on the
exact objective instead: the same seeded run stopped after s = 1, 2, 3, 5, 10, ... steps
(identical prefixes) ends with the closed-form objective on all points, and the time is
that of the first s within 0.1 % of the 3000-step run's final objective (the time of its
last step, without the final full-data evaluation). CAVI and full batch are repeated (7
times up to 1e4, 3 at 1e5, once at 1e6) and the median is reported; times are noisy on a shared
machine. ``ratio`` is time to 0.1 % over CAVI's. Writes
benchmarks/results/natural_scaling.{json,md}.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/natural_scaling.py [--quick]
"""

from __future__ import annotations

import json
import math
import os
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch
from run import machine, table  # benchmarks/run.py: the machine, the markdown table

import pyro_moe
from pyro_moe.comparison import time_to_within
from pyro_moe.shapes import circle_design, circle_points
from pyro_moe.study import STUDY_PRIOR_MEAN

OUT = Path(__file__).resolve().parent / "results"
SIZES = (1_000, 10_000, 100_000, 1_000_000)
SCENES = {
    "circles": dict(
        centres=[(0, 0), (0.3, -0.2)], radii=[0.5, 1.5], jitter=0.005, outliers=0.0,
        fit=dict(learn="none", noise_precision=1e3),
    ),
    "stray": dict(
        centres=[(-1.0, 0.0), (1.0, 0.0)], radii=[0.6, 0.6], jitter=0.01, outliers=0.3,
        fit=dict(noise_expert=True, init="subsets"),
    ),
}  # fmt: skip


STEPS = (1, 2, 3, 5, 10, 20, 30, 50, 100, 200, 300, 500, 1000, 2000)
MAX_STEPS = 3000


def runs(N: int):
    yield "cavi", {"method": "cavi"}
    yield "svi", {"method": "svi"}
    mini = {"method": "svi", "batch_size": min(1000, N // 4), "minibatch_from": 0}
    yield "svi_minibatch", {**mini, "max_iter": MAX_STEPS}


def minibatch_time_to(X, t, scene: dict, kw: dict, final: float, rel: float = 1e-3):
    """(time, steps) of the first prefix s in STEPS whose exact final objective is within
    ``rel`` of ``final`` (module docstring)."""
    for s in STEPS:
        r, _ = one(X, t, scene, {**kw, "max_iter": s})
        if abs(r.objective - final) <= rel * max(abs(final), 1.0):
            return float(r.time_history[-2]), s
    return math.nan, None


def one(X, t, scene: dict, kw: dict):
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", pyro_moe.ConvergenceWarning)
        r = pyro_moe.fit(
            "mixture_of_models", X, t, experts=2, prior_mean=STUDY_PRIOR_MEAN, n_init=1,
            **scene["fit"], **kw,
        )  # fmt: skip
    return r, time.perf_counter() - t0


def main() -> None:
    quick = "--quick" in sys.argv
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    sizes = SIZES[:2] if quick else SIZES
    rows = []
    for name, scene in SCENES.items():
        for N in sizes:
            per = round(N * (1 - scene["outliers"]) / 2)  # N points in all
            xy, _ = circle_points(
                scene["centres"], scene["radii"], per, jitter=scene["jitter"],
                outlier_fraction=scene["outliers"], seed=0,
            )  # fmt: skip
            X, t = circle_design(xy)
            one(X[:200], t[:200], scene, {"method": "cavi"})  # warm-up (first-call costs)
            repeats = 1 if N >= 1_000_000 else 3 if N >= 100_000 else 7
            for label, kw in runs(len(t)):
                fits = [one(X, t, scene, kw) for _ in range(1 if "batch_size" in kw else repeats)]
                r = fits[0][0]
                if "batch_size" in kw:
                    to, steps = minibatch_time_to(X, t, scene, kw, r.objective)
                else:
                    to = statistics.median(time_to_within(f) for f, _ in fits)
                    steps = None
                rows.append(
                    {
                        "scene": name,
                        "N": len(t),
                        "method": label,
                        "batch_size": r.restarts[0].get("batch_size"),
                        "objective": r.objective,
                        "iterations": r.iterations,
                        "converged": r.converged,
                        "wall_time_s": statistics.median(w for _, w in fits),
                        "time_to_0.1%_s": to,
                        "steps_to_0.1%": steps,
                    }
                )
                print(rows[-1], flush=True)
    for row in rows:
        ref = next(
            r for r in rows
            if (r["scene"], r["N"], r["method"]) == (row["scene"], row["N"], "cavi")
        )  # fmt: skip
        row["ratio"] = row["time_to_0.1%_s"] / ref["time_to_0.1%_s"]
        row["gap_to_cavi"] = row["objective"] - ref["objective"]
    info = {**machine(), "quick": quick, "note": __doc__.split("\n\n")[1:3]}
    OUT.mkdir(parents=True, exist_ok=True)
    stem = "natural_scaling_quick" if quick else "natural_scaling"
    (OUT / f"{stem}.json").write_text(json.dumps({"info": info, "rows": rows}, indent=2))
    keys = list(rows[0])
    text = "\n\n".join(
        [
            "# Natural-gradient SVI against CAVI, N = 1e3 to 1e6",
            ", ".join(f"{k}={v}" for k, v in info.items() if k != "note"),
            *info["note"],
            table(rows, keys),
        ]
    )
    (OUT / f"{stem}.md").write_text(text + "\n")


if __name__ == "__main__":
    main()
