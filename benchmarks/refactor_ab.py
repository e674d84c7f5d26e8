"""Before/after timing of a refactor: the same measurements of two checkouts, interleaved.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/refactor_ab.py OLD_TREE [NEW_TREE] [--rounds 3]

Each round runs one fresh process per checkout (``PYTHONPATH=<tree>``, alternating which
goes first), and every measurement keeps its best over the rounds (the machine may be
shared; best-of filters other processes' load). Measured: the median time of one CAVI
iteration of the mixture of models (K = 2, 8; N = 1e3 to 1e6) and of the regularized
mixture of experts (gate learned); one natural-SVI step (full batch); whole fits with their
fixed cost (a small CAVI fit, a 256² two-circle image through ``fit_circles``). Writes
``benchmarks/results/refactor_ab.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from run import child_json

HERE = Path(__file__).resolve().parent
OUT = HERE / "results"

CHILD = r"""
import json, sys, time, warnings
import numpy as np, torch
torch.set_num_threads(1)
sys.path.insert(0, {bench!r})
from run import circles_data, regression_data
import pyro_moe
warnings.simplefilter("ignore")
out = {{}}

def per_iter(model, X, y, K, iters, **kw):
    best = float("inf")
    for _ in range(3):
        r = pyro_moe.fit(model, X, y, experts=K, n_init=1, max_iter=iters, tol=0.0, **kw)
        t = r.time_history.numpy()
        best = min(best, float(np.median(np.diff(np.concatenate([[0.0], t])))))
    return best

def wall(fn, repeats=3):
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter(); fn(); best = min(best, time.perf_counter() - t0)
    return best

for K in (2, 8):
    for N in (10**3, 10**4, 10**5, 10**6):
        X, y, _ = regression_data(N, K)
        out[f"cavi iteration, mixture_of_models K={{K}} N={{N:.0e}}"] = per_iter(
            "mixture_of_models", X, y, K, 5 if N == 10**6 else 10, init="random")
for N in (10**3, 10**4):
    X, y = circles_data(N)
    out[f"cavi iteration, regularized_experts K=2 N={{N:.0e}}"] = per_iter(
        "regularized_experts", X, y, 2, 10)
X, y, _ = regression_data(10**4, 2)
out["natural SVI step, full batch, K=2 N=1e+04"] = per_iter(
    "mixture_of_models", X, y, 2, 10, init="random", method="svi")
X, y, _ = regression_data(1000, 2)
out["whole CAVI fit, K=2 N=1e+03, 50 iterations"] = wall(lambda: pyro_moe.fit(
    "mixture_of_models", X, y, experts=2, n_init=1, max_iter=50, tol=0.0, init="random"))
from pyro_moe.shapes import circle_image
img, _ = circle_image([(80.0, 90.0), (160.0, 150.0)], [40.0, 60.0], (256, 256))
out["fit_circles, 256x256 image, K=2"] = wall(lambda: pyro_moe.fit_circles(img, experts=2))
print(json.dumps(out))
"""


def measure(tree: Path) -> dict[str, float]:
    return child_json(CHILD.format(bench=str(HERE)), tree)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("old", type=Path)
    ap.add_argument("new", type=Path, nargs="?", default=HERE.parent)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    trees = {"before": args.old.resolve(), "after": args.new.resolve()}
    best: dict[str, dict[str, float]] = {"before": {}, "after": {}}
    for i in range(args.rounds):
        order = ["before", "after"] if i % 2 == 0 else ["after", "before"]
        for which in order:
            got = measure(trees[which])
            for k, v in got.items():
                best[which][k] = min(v, best[which].get(k, float("inf")))
            print(f"round {i + 1} {which}: done", file=sys.stderr, flush=True)
    rows = []
    for k in best["before"]:
        b, a = best["before"][k], best["after"][k]
        rows.append({"measure": k, "before_s": b, "after_s": a, "after_over_before": a / b})
    OUT.mkdir(exist_ok=True)
    (OUT / "refactor_ab.json").write_text(
        json.dumps({"trees": {k: str(v) for k, v in trees.items()}, "rows": rows}, indent=1)
    )
    lines = [
        "# Before / after (best of " + str(args.rounds) + " interleaved rounds)",
        "",
        "`benchmarks/refactor_ab.py`; times in seconds, OMP_NUM_THREADS=1.",
        "",
        "| measure | before s | after s | after / before |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {r['measure']} | {r['before_s']:.4g} | {r['after_s']:.4g} | {r['after_over_before']:.3f} |"
        for r in rows
    ]
    (OUT / "refactor_ab.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
