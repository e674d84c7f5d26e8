"""Speed where users wait (issue #31): this checkout against a base commit, in one run.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/speed.py [--base main] [--rounds 3] [--quick]

The base commit (default ``main``) is checked out in a temporary ``git worktree``; each
round runs one fresh process per checkout (``PYTHONPATH=<tree>``, alternating which goes
first), and every figure keeps its best over the rounds (the machine may be shared; best-of
filters out other processes' load, and the before/after ratio is measured in the same run).
Beside each figure, the floors measured in the same process:

* **bare pass**: plain torch, responsibilities by log-sum-exp, sum r x x^T, sum r y x
  (:func:`run.bare_pass`);
* **bandwidth floor**: the bytes one iteration must move (X and y read, log q(Z) written:
  8 (n + 1 + C) bytes a point) at the copy bandwidth of this machine (a 256 MB
  ``Tensor.copy_``, read + write).

Measured: whole ``fit`` calls of the mixture of models at N = 1000, n = 3 (per iteration:
(T(max_iter) - T(1)) / (iterations - 1); fixed cost: T(1) less one iteration, "cold" on data
the process has not fitted before, "warm" on the same data again); the regularized mixture
of experts (gate learned) at N = 1000 the same way, and at 10^6 points x 50 iterations in a
fresh process (wall, peak RSS); one CAVI iteration of the mixture of models at 10^6 and 10^7
points (the median of the fit's own per-iteration times) against the floors.
Writes ``benchmarks/results/speed.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
OUT = HERE / "results"

CHILD = r"""
import json, resource, sys, time, warnings
import numpy as np, torch
torch.set_num_threads(1)
sys.path.insert(0, {bench!r})
from run import bare_pass, circles_data, regression_data
import pyro_moe
warnings.simplefilter("ignore")
QUICK, REPEATS = {quick}, 5
out = {{}}

def wall(fn, clock=time.perf_counter):
    t0 = clock(); r = fn(); return clock() - t0, r

def small(model, K, X, y, **kw):
    # whole fit calls: per iteration and fixed cost, cold (new data) and warm (same data),
    # in wall time and in this thread's CPU time (less moved by other processes' load)
    fit = lambda X, y, it: pyro_moe.fit(model, X, y, experts=K, n_init=1, max_iter=it, tol=0.0, **kw)
    fit(X, y, 3)
    row = dict(iterations=None)
    for name, clock in (("", time.perf_counter), ("cpu_", time.thread_time)):
        t1 = tM = cold = float("inf")
        for rep in range(REPEATS):
            t, _ = wall(lambda: fit(X, y, 1), clock); t1 = min(t1, t)
            t, r = wall(lambda: fit(X, y, 201), clock); tM = min(tM, t)
            row["iterations"] = r.iterations
            y2 = y * (1.0 + 1e-12 * (rep + 1 + REPEATS * len(name)))  # data not fitted before
            t, _ = wall(lambda: fit(X, y2, 1), clock); cold = min(cold, t)
        per = (tM - t1) / max(row["iterations"] - 1, 1)
        row[name + "per_iter_s"], row[name + "fixed_warm_s"] = per, t1 - per
        row[name + "fixed_cold_s"] = cold - per
    return row

for K in (2, 8):
    X, y, _ = regression_data(1000, K)
    out[f"mixture_of_models K={{K}} N=1e3"] = small("mixture_of_models", K, X, y, init="random")
X, y = circles_data(1000)
out["regularized_experts K=2 N=1e3"] = small("regularized_experts", 2, X, y)

# the copy bandwidth: a 256 MB float64 buffer read and written
src = torch.ones(2**25, dtype=torch.float64); dst = torch.empty_like(src)
bw = max(2 * src.numel() * 8 / wall(lambda: dst.copy_(src))[0] for _ in range(5))
del src, dst
out["copy bandwidth GB/s"] = dict(value=bw / 1e9)
sizes = [10**6] if QUICK else [10**6, 10**7]
for K in (2, 8):
    for N in sizes:
        X, y, W = regression_data(N, K)
        best = float("inf")
        for _ in range(2 if N >= 10**7 else 3):
            r = pyro_moe.fit("mixture_of_models", X, y, experts=K, n_init=1,
                             max_iter=4 if N >= 10**7 else 8, tol=0.0, init="random")
            t = r.time_history.numpy()
            best = min(best, float(np.median(np.diff(np.concatenate([[0.0], t])))))
        bare = min(wall(lambda: bare_pass(X, y, W))[0] for _ in range(2))
        floor = N * 8 * (X.shape[1] + 1 + K) / bw
        out[f"mixture_of_models K={{K}} N={{N:.0e}}"] = dict(
            per_iter_s=best, bare_pass_s=bare, bandwidth_floor_s=floor)
        del X, y, W
print(json.dumps(out))
"""

GOAL = r"""
import json, resource, sys, time, warnings
import torch
torch.set_num_threads(1)
sys.path.insert(0, {bench!r})
from run import circles_data
import pyro_moe
warnings.simplefilter("ignore")
X, y = circles_data({N})
t0 = time.perf_counter()
r = pyro_moe.fit("regularized_experts", X, y, experts=2, n_init=1, max_iter={iters}, tol=0.0)
wall = time.perf_counter() - t0
print(json.dumps(dict(wall_s=wall, iterations=r.iterations,
                      peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)))
"""


def child(code: str, tree: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(tree), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def keep_best(best: dict, got: dict) -> None:
    """Fold ``got`` into ``best``: every number its minimum over the rounds (bandwidth:
    its maximum), except iteration counts."""
    for k, row in got.items():
        cur = best.setdefault(k, {})
        for f, v in row.items():
            if f == "iterations" or f not in cur:
                cur[f] = v
            elif "GB/s" in k:
                cur[f] = max(cur[f], v)
            else:
                cur[f] = min(cur[f], v)


def base_tree(ref: str, where: Path) -> Path:
    """A detached ``git worktree`` of ``ref`` under ``where``."""
    tree = where / "base"
    subprocess.run(
        ["git", "-C", str(ROOT), "worktree", "add", "-q", "--detach", str(tree), ref], check=True
    )
    return tree


def fmt(v) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def main() -> None:
    sys.path.insert(0, str(HERE))
    from run import machine, table

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", default="main", help="the commit to compare against (main)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="10^6 points at most, 10^5 for the goal")
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    base_sha = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", args.base], capture_output=True, text=True, check=True
    ).stdout.strip()
    head_sha = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    goal_N = 10**5 if args.quick else 10**6
    with tempfile.TemporaryDirectory() as tmp:
        trees = {"before": base_tree(args.base, Path(tmp)), "after": ROOT}
        best: dict[str, dict] = {"before": {}, "after": {}}
        try:
            for i in range(args.rounds):
                for which in ["before", "after"] if i % 2 == 0 else ["after", "before"]:
                    code = CHILD.format(bench=str(HERE), quick=args.quick)
                    keep_best(best[which], child(code, trees[which]))
                    goal = child(GOAL.format(bench=str(HERE), N=goal_N, iters=50), trees[which])
                    keep_best(best[which], {f"regularized_experts K=2 N={goal_N:.0e} x 50": goal})
                    print(f"round {i + 1} {which}: done", file=sys.stderr, flush=True)
        finally:
            subprocess.run(
                ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(trees["before"])],
                check=False,
            )
    before, after = best["before"], best["after"]
    bw = after["copy bandwidth GB/s"]["value"]
    small_rows, cpu_rows, large_rows = [], [], []
    for k, row in after.items():
        b = before.get(k, {})
        if "per_iter_s" in row and "bandwidth_floor_s" not in row:
            small_rows.append(
                {
                    "fit": k,
                    "iterations": row["iterations"],
                    "per_iter_us": 1e6 * row["per_iter_s"],
                    "before_us": 1e6 * b["per_iter_s"],
                    "ratio": b["per_iter_s"] / row["per_iter_s"],
                    "fixed_cold_ms": 1e3 * row["fixed_cold_s"],
                    "before_cold_ms": 1e3 * b["fixed_cold_s"],
                    "fixed_warm_ms": 1e3 * row["fixed_warm_s"],
                    "before_warm_ms": 1e3 * b["fixed_warm_s"],
                }
            )
            cpu_rows.append(
                {
                    "fit": k,
                    "per_iter_us": 1e6 * row["cpu_per_iter_s"],
                    "before_us": 1e6 * b["cpu_per_iter_s"],
                    "ratio": b["cpu_per_iter_s"] / row["cpu_per_iter_s"],
                    "fixed_cold_ms": 1e3 * row["cpu_fixed_cold_s"],
                    "before_cold_ms": 1e3 * b["cpu_fixed_cold_s"],
                    "fixed_warm_ms": 1e3 * row["cpu_fixed_warm_s"],
                    "before_warm_ms": 1e3 * b["cpu_fixed_warm_s"],
                }
            )
        elif "bandwidth_floor_s" in row:
            large_rows.append(
                {
                    "fit": k,
                    "per_iter_ms": 1e3 * row["per_iter_s"],
                    "before_ms": 1e3 * b["per_iter_s"],
                    "ratio": b["per_iter_s"] / row["per_iter_s"],
                    "bandwidth_floor_ms": 1e3 * row["bandwidth_floor_s"],
                    "over_floor": row["per_iter_s"] / row["bandwidth_floor_s"],
                    "bare_pass_ms": 1e3 * row["bare_pass_s"],
                }
            )
        elif "wall_s" in row:
            goal_row = {
                "fit": k,
                "wall_s": row["wall_s"],
                "before_s": b["wall_s"],
                "ratio": b["wall_s"] / row["wall_s"],
                "peak_rss_mb": row["peak_rss_mb"],
                "before_rss_mb": b["peak_rss_mb"],
            }
    res = {
        "machine": machine(),
        "base": base_sha,
        "head": head_sha,
        "rounds": args.rounds,
        "before": before,
        "after": after,
    }
    OUT.mkdir(exist_ok=True)
    (OUT / "speed.json").write_text(json.dumps(res, indent=1))
    md = [
        "# Speed where users wait (issue #31)",
        "",
        ", ".join(f"{k}={v}" for k, v in res["machine"].items()),
        "",
        f"`benchmarks/speed.py{' --quick' if args.quick else ''}`: this checkout "
        f"({head_sha[:10]}) against {args.base} ({base_sha[:10]}), best of {args.rounds} "
        "interleaved rounds of fresh processes; ratio = before / after. Load average "
        f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores at the end of the run.",
        "",
        "## Whole `fit` calls at N = 1000, n = 3 (one restart)",
        "",
        "Per iteration: (T(max_iter=201) - T(1)) / (iterations - 1), the fit stopping where "
        "the objective stands still (tol = 0). Fixed cost: T(1) less one iteration; cold: "
        "data the process has not fitted before, warm: the same data again.",
        "",
        table(
            small_rows,
            ["fit", "iterations", "per_iter_us", "before_us", "ratio", "fixed_cold_ms",
             "before_cold_ms", "fixed_warm_ms", "before_warm_ms"],
        ),
        "",
        "The same in this thread's CPU time (`time.thread_time`; less moved by other "
        "processes' load than wall time):",
        "",
        table(
            cpu_rows,
            ["fit", "per_iter_us", "before_us", "ratio", "fixed_cold_ms", "before_cold_ms",
             "fixed_warm_ms", "before_warm_ms"],
        ),
        "",
        "## One CAVI iteration at scale, against the floors measured in the same process",
        "",
        f"Copy bandwidth {bw:.3g} GB/s (256 MB, read + write). Bandwidth floor: 8 (n + 1 + K) "
        "bytes a point (X, y read, log q(Z) written) at that bandwidth. Bare pass: plain "
        "torch responsibilities and statistics (`run.bare_pass`).",
        "",
        table(
            large_rows,
            ["fit", "per_iter_ms", "before_ms", "ratio", "bandwidth_floor_ms", "over_floor",
             "bare_pass_ms"],
        ),
        "",
        "## Regularized mixture of experts (gate learned), 50 iterations, fresh process",
        "",
        table([goal_row], ["fit", "wall_s", "before_s", "ratio", "peak_rss_mb", "before_rss_mb"]),
        "",
    ]  # fmt: skip
    (OUT / "speed.md").write_text("\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
