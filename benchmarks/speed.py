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

from run import child_json

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
assert pyro_moe.__file__.startswith({tree!r}), pyro_moe.__file__
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

# the copy bandwidth: a 256 MB float64 buffer read and written
src = torch.ones(2**25, dtype=torch.float64); dst = torch.empty_like(src)
bw = max(2 * src.numel() * 8 / wall(lambda: dst.copy_(src))[0] for _ in range(5))
del src, dst
out["copy bandwidth GB/s"] = dict(value=bw / 1e9)
# the cost of one small torch call (dispatch, no arithmetic): a + b on 2-element tensors
a2 = torch.ones(2, dtype=torch.float64)
per_call = min(wall(lambda: [a2 + a2 for _ in range(2000)], time.thread_time)[0] / 2000
               for _ in range(5))
out["torch call us"] = dict(value=per_call * 1e6)

from torch.overrides import TorchFunctionMode
class Count(TorchFunctionMode):
    # torch calls made from Python (functions, methods, operators), attribute reads excluded
    def __init__(self):
        super().__init__(); self.n = 0
    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        if not name.startswith("__get") and name not in ("dim", "size", "numel", "stride"):
            self.n += 1
        return func(*args, **(kwargs or {{}}))

def calls_per_iteration(fit, X, y):
    counts = []
    for it in (1, 11):
        with Count() as c:
            fit(X, y, it)
        counts.append(c.n)
    return (counts[1] - counts[0]) / 10

def floors(row, fit, X, y, K):
    # beside the small fits: the bare pass at this N and K, the bandwidth floor, and the
    # dispatch floor (torch calls per iteration x the cost of one small call)
    W = torch.randn(K, X.shape[1], dtype=X.dtype)
    row["bare_pass_s"] = min(wall(lambda: bare_pass(X, y, W), time.thread_time)[0] for _ in range(20))
    row["bandwidth_floor_s"] = X.shape[0] * 8 * (X.shape[1] + 1 + K) / bw
    row["calls_per_iter"] = calls_per_iteration(fit, X, y)
    row["dispatch_floor_s"] = row["calls_per_iter"] * per_call

for K in (2, 8):
    X, y, _ = regression_data(1000, K)
    row = small("mixture_of_models", K, X, y, init="random")
    floors(row, lambda X, y, it: pyro_moe.fit("mixture_of_models", X, y, experts=K, n_init=1,
           max_iter=it, tol=0.0, init="random"), X, y, K)
    out[f"mixture_of_models K={{K}} N=1e3"] = row
X, y = circles_data(1000)
row = small("regularized_experts", 2, X, y)
floors(row, lambda X, y, it: pyro_moe.fit("regularized_experts", X, y, experts=2, n_init=1,
       max_iter=it, tol=0.0), X, y, 2)
out["regularized_experts K=2 N=1e3"] = row

# the fixed cost of a whole fit, warm (data fitted before), for the curve pipeline's sizes:
# T(1) less one iteration, the iteration from (T(3) - T(1)) / 2; thread CPU time
for N in (1000, 5000):
    for K in (2, 8, 24):
        X, y, _ = regression_data(N, K)
        fit = lambda it: pyro_moe.fit("mixture_of_models", X, y, experts=K, n_init=1,
                                      max_iter=it, tol=0.0, init="random")
        fit(3)
        t1 = min(wall(lambda: fit(1), time.thread_time)[0] for _ in range(REPEATS))
        t3 = min(wall(lambda: fit(3), time.thread_time)[0] for _ in range(REPEATS))
        per = (t3 - t1) / 2
        out[f"fixed N={{N}} K={{K}}"] = dict(fixed_warm_s=t1 - per, per_iter_s=per)
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
import pyro_moe.engines.cavi as cavi
from pyro_moe.engines.gate import GateFitter
warnings.simplefilter("ignore")
X, y = circles_data({N})
# where the fit's wall goes: reading the model file (its traces on all rows) and the gate's
# M-steps, timed inside this very fit by wrapping the two calls
spent = dict(read_model_s=0.0, gate_steps_s=0.0)
def timed(fn, key):
    def inner(*a, **k):
        t = time.perf_counter()
        try:
            return fn(*a, **k)
        finally:
            spent[key] += time.perf_counter() - t
    return inner
cavi.read_model = timed(cavi.read_model, "read_model_s")
GateFitter.step = timed(GateFitter.step, "gate_steps_s")
t0 = time.perf_counter()
r = pyro_moe.fit("regularized_experts", X, y, experts=2, n_init=1, max_iter={iters}, tol=0.0)
wall = time.perf_counter() - t0
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
# the gate's floor: one loss-and-gradient pass over all rows (each L-BFGS evaluation's cost)
gate = r.gate
R = torch.softmax(torch.randn(X.shape[0], 2, dtype=X.dtype), -1)
for p in gate.parameters():
    p.requires_grad_(True)
t1 = time.perf_counter()
(-(R * torch.log_softmax(gate(X), -1)).sum()).backward()
gate_s = time.perf_counter() - t1
print(json.dumps(dict(wall_s=wall, iterations=r.iterations, peak_rss_mb=rss,
                      gate_pass_s=gate_s, **spent)))
"""

DYNAMO = r"""
import json, time
import pyro_moe, torch
t0 = time.perf_counter()
import torch._dynamo
print(json.dumps(dict(import_s=time.perf_counter() - t0)))
"""


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
                    code = CHILD.format(bench=str(HERE), quick=args.quick, tree=str(trees[which]))
                    keep_best(best[which], child_json(code, trees[which]))
                    goal = child_json(
                        GOAL.format(bench=str(HERE), N=goal_N, iters=50), trees[which]
                    )
                    keep_best(best[which], {f"regularized_experts K=2 N={goal_N:.0e} x 50": goal})
                    keep_best(
                        best[which], {"import torch._dynamo": child_json(DYNAMO, trees[which])}
                    )
                    print(f"round {i + 1} {which}: done", file=sys.stderr, flush=True)
        finally:
            subprocess.run(
                ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(trees["before"])],
                check=False,
            )
    before, after = best["before"], best["after"]
    bw = after["copy bandwidth GB/s"]["value"]
    small_rows, cpu_rows, large_rows, fixed_rows = [], [], [], []
    per_call = after["torch call us"]["value"]
    for k, row in after.items():
        b = before.get(k, {})
        if k.startswith("fixed "):
            fixed_rows.append(
                {
                    "fit": k.removeprefix("fixed "),
                    "fixed_warm_ms": 1e3 * row["fixed_warm_s"],
                    "before_ms": 1e3 * b["fixed_warm_s"],
                    "per_iter_us": 1e6 * row["per_iter_s"],
                    "before_us": 1e6 * b["per_iter_s"],
                }
            )
        elif "cpu_per_iter_s" in row:
            floors = {
                "bare_pass_us": 1e6 * row["bare_pass_s"],
                "bandwidth_floor_us": 1e6 * row["bandwidth_floor_s"],
                "calls_per_iter": row["calls_per_iter"],
                "before_calls": b.get("calls_per_iter"),
                "dispatch_floor_us": 1e6 * row["dispatch_floor_s"],
            }
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
                    "fixed_warm_ms": 1e3 * row["cpu_fixed_warm_s"],
                    "before_warm_ms": 1e3 * b["cpu_fixed_warm_s"],
                    **floors,
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
                "iterations": row["iterations"],
                "peak_rss_mb": row["peak_rss_mb"],
                "before_rss_mb": b["peak_rss_mb"],
                "read_model_s": row.get("read_model_s"),
                "gate_steps_s": row.get("gate_steps_s"),
                "before_gate_s": b.get("gate_steps_s"),
                "gate_pass_s": row.get("gate_pass_s"),
            }
    dynamo_s = after["import torch._dynamo"]["import_s"]
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
            ["fit", "per_iter_us", "before_us", "ratio", "fixed_warm_ms", "before_warm_ms",
             "bare_pass_us", "bandwidth_floor_us", "calls_per_iter", "before_calls",
             "dispatch_floor_us"],
        ),
        "",
        "Floors beside each figure, measured in the same process: `bare_pass_us`, plain "
        "torch responsibilities and statistics at this N and K (`run.bare_pass`); "
        "`bandwidth_floor_us`, 8 (n + 1 + K) bytes a point at the copy bandwidth below; "
        "`calls_per_iter`, the torch calls made from Python per iteration (a "
        "`TorchFunctionMode` count, attribute reads excluded), and `dispatch_floor_us`, "
        f"those calls at the cost of one small call here ({per_call:.2f} us: `a + b` on "
        "2-element tensors), what the iteration costs if its arithmetic were free.",
        "",
        "## Fixed cost of a whole `fit` call, warm (data fitted before), thread CPU time",
        "",
        "Mixture of models, n = 3, one restart: T(1) less one iteration, the iteration "
        "(T(3) - T(1)) / 2; best of 5. What every curve fit of this size pays besides its "
        "iterations.",
        "",
        table(fixed_rows, ["fit", "fixed_warm_ms", "before_ms", "per_iter_us", "before_us"]),
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
        table(
            [goal_row],
            ["fit", "wall_s", "before_s", "ratio", "iterations", "peak_rss_mb", "before_rss_mb",
             "read_model_s", "gate_steps_s", "before_gate_s", "gate_pass_s"],
        ),
        "",
        "Inside the fit's wall: `read_model_s`, reading the model file (its Pyro traces on all "
        "rows), and `gate_steps_s`, the gate's M-steps (L-BFGS), timed by wrapping the two "
        "calls; `gate_pass_s`, the gate's floor: one loss-and-gradient pass over all rows "
        "(what one L-BFGS evaluation costs). The first gated fit of a process also imports "
        f"`torch._dynamo` (torch.optim does, on its first optimizer): {dynamo_s:.2f} s here, "
        "inside `wall_s`, measured in a fresh process.",
        "",
    ]  # fmt: skip
    (OUT / "speed.md").write_text("\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
