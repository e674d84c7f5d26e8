"""CAVI benchmarks: scaling in N and K, one iteration against the bare sufficient-statistics
pass, the 1e6-point regularized mixture of experts (wall time and peak memory), the gate
M-step variants, and circle finding against scikit-image (Hough, RANSAC).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/run.py [--quick]

Writes benchmarks/results/cavi.json and benchmarks/results/cavi.md. Every timing is the best
of ``REPEATS`` runs (the machine is shared; best-of filters out other processes' load).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from peers import hough, ransac_circles

import pyro_moe
from pyro_moe.shapes import circle_design, circle_error, circle_image, circle_points
from pyro_moe.shapes.metric import match_circles

OUT = Path(__file__).resolve().parent / "results"
REPEATS = 3
LOG_2PI = float(np.log(2 * np.pi))


def log(*a) -> None:
    print(*a, file=sys.stderr, flush=True)


def machine() -> dict:
    return {
        "machine": platform.machine(),
        "processor": platform.processor(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "pyro": __import__("pyro").__version__,
        "cpus": os.cpu_count(),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
        "torch_threads": torch.get_num_threads(),
    }


def child_json(code: str, tree: Path) -> dict:
    """Run ``code`` in a fresh ``python -c`` process that imports ``tree``'s pyro_moe and
    return the JSON object it prints last. The process runs in ``tree``: ``python -c`` puts
    the working directory first on sys.path, before PYTHONPATH, so a child started from
    this checkout imported this checkout's package whatever ``tree`` was (the A/B scripts
    timed one checkout twice before); the child's code should assert what it imported."""
    env = {**os.environ, "PYTHONPATH": str(tree), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True,
        cwd=tree,
    )  # fmt: skip
    return json.loads(done.stdout.strip().splitlines()[-1])


def regression_data(N: int, K: int, n: int = 3, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(N, n, generator=g, dtype=torch.float64)
    W = 2 * torch.randn(K, n, generator=g, dtype=torch.float64)
    z = torch.randint(K, (N,), generator=g)
    y = (X * W[z]).sum(-1) + 0.05 * torch.randn(N, generator=g, dtype=torch.float64)
    return X, y, W


def circles_data(N: int):
    xy, _ = circle_points([(0, 0), (0.05, -0.03)], [0.5, 1.5], N // 2, jitter=0.005, seed=0)
    X, t = circle_design(xy)
    return torch.as_tensor(X), torch.as_tensor(t)


def time_per_iteration(model: str, X, y, K: int, iters: int, **kw) -> float:
    """Best over REPEATS runs of the median time of one CAVI iteration (init excluded)."""
    best = float("inf")
    for _ in range(REPEATS):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            r = pyro_moe.fit(model, X, y, experts=K, n_init=1, max_iter=iters, tol=0.0, **kw)
        t = r.time_history.numpy()
        best = min(best, float(np.median(np.diff(np.concatenate([[0.0], t])))))
    return best


def bare_pass(X, y, W, beta: float = 1.0):
    """The plain-torch pass an iteration needs: responsibilities by log-sum-exp, then
    sum_i r_ik x_i x_i^T and sum_i r_ik y_i x_i."""
    resid = y.unsqueeze(-1) - X @ W.T
    logits = -0.5 * beta * resid * resid
    r = torch.softmax(logits, -1)
    rX = r.T.unsqueeze(-1) * X
    return rX.transpose(-1, -2) @ X, rX.transpose(-1, -2) @ y


def best_time(fn, repeats: int = REPEATS) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def scaling(quick: bool) -> list[dict]:
    sizes = [10**3, 10**4, 10**5] + ([] if quick else [10**6, 10**7])
    rows = []
    for K in (2, 3, 8):
        for N in sizes:
            X, y, W = regression_data(N, K)
            iters = 5 if N >= 10**7 else 10
            t_it = time_per_iteration("mixture_of_models", X, y, K, iters, init="random")
            t_bare = best_time(lambda X=X, y=y, W=W: bare_pass(X, y, W))
            rows.append(
                {
                    "model": "mixture_of_models",
                    "K": K,
                    "N": N,
                    "s_per_iter": t_it,
                    "ns_per_point_iter": 1e9 * t_it / N,
                    "bare_pass_s": t_bare,
                    "ratio_iter_to_bare": t_it / t_bare,
                }
            )
            log("scaling", rows[-1])
            del X, y
    gated = [10**3, 10**4, 10**5] + ([] if quick else [10**6])
    for N in gated:
        X, y = circles_data(N)
        t_it = time_per_iteration("regularized_experts", X, y, 2, 10)
        rows.append(
            {
                "model": "regularized_experts",
                "K": 2,
                "N": N,
                "s_per_iter": t_it,
                "ns_per_point_iter": 1e9 * t_it / N,
                "bare_pass_s": None,
                "ratio_iter_to_bare": None,
            }
        )
        log("scaling", rows[-1])
    return rows


GOAL_CHILD = """
import json, resource, sys, time, warnings
import torch
torch.set_num_threads(1)
sys.path.insert(0, {bench!r})
from run import circles_data
import pyro_moe
N, iters = {N}, {iters}
X, y = circles_data(N)
warnings.simplefilter("ignore")
t0 = time.perf_counter()
r = pyro_moe.fit("regularized_experts", X, y, experts=2, n_init=1, max_iter=iters, tol=0.0)
wall = time.perf_counter() - t0
hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM")] if sys.platform == "linux" else []
print(json.dumps(dict(N=N, iterations=r.iterations, wall_s=wall, fit_loop_s=float(r.time_history[-1]),
    objective=r.objective, peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    vm_hwm_mb=int(hwm[0].split()[1]) / 1024 if hwm else None)))
"""


def goal(N: int, iters: int) -> dict:
    """The regularized MoE (gate learned) in a fresh process: wall time and peak RSS."""
    code = GOAL_CHILD.format(bench=str(Path(__file__).resolve().parent), N=N, iters=iters)
    best = None
    for _ in range(REPEATS if N <= 10**6 else 1):
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        ).stdout
        row = json.loads(out.strip().splitlines()[-1])
        if best is None or row["wall_s"] < best["wall_s"]:
            best = row
    log("goal", best)
    return best


GATE_VARIANTS = [
    ("L-BFGS x10, float64, cold, every iteration (first version)", dict(gate_dtype="float64", gate_warm_start=False, gate_skip_tol=0.0)),
    ("L-BFGS x10, float32, cold", dict(gate_dtype="float32", gate_warm_start=False)),
    ("L-BFGS x10, float64, warm, every iteration", dict(gate_dtype="float64", gate_warm_start=True, gate_skip_tol=0.0)),
    ("L-BFGS x10, float64, warm, skip on small gain (default from 1e5 points)", dict(gate_dtype="float64", gate_warm_start=True)),
    ("L-BFGS x10, float32, warm", dict(gate_dtype="float32", gate_warm_start=True)),
    ("L-BFGS x3, float32, warm", dict(gate_dtype="float32", gate_warm_start=True, gate_steps=3)),
    ("L-BFGS x1, float32, warm", dict(gate_dtype="float32", gate_warm_start=True, gate_steps=1)),
]  # fmt: skip


def gate_comparison(N: int, iters: int = 50) -> list[dict]:
    """Each gate M-step variant, 50 CAVI iterations: time to reach the best final objective
    (within 1e-8 relative), final objective, wall time (best of REPEATS)."""
    X, y = circles_data(N)
    runs = []
    for name, kw in GATE_VARIANTS:
        best = None
        for _ in range(REPEATS):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                r = pyro_moe.fit(
                    "regularized_experts", X, y, experts=2, n_init=1, max_iter=iters, tol=0.0, **kw
                )
            if best is None or r.time_history[-1] < best.time_history[-1]:
                best = r
        runs.append((name, best))
    target = max(r.objective for _, r in runs)
    target -= 1e-8 * abs(target)
    rows = []
    for name, r in runs:
        h, t = r.objective_history.numpy(), r.time_history.numpy()
        hit = np.flatnonzero(h >= target)
        rows.append(
            {
                "N": N,
                "variant": name,
                "final_objective": float(h[-1]),
                "objective_at_10": float(h[min(9, len(h) - 1)]),
                "time_to_target_s": float(t[hit[0]]) if hit.size else None,
                "iters_to_target": int(hit[0] + 1) if hit.size else None,
                "wall_50_iters_s": float(t[-1]),
            }
        )
        log("gate", rows[-1])
    return rows


# ---- circle finding against scikit-image ---------------------------------------------------
def circle_cases(quick: bool):
    sizes = (256,) if quick else (256, 1024)
    for size in sizes:
        s = size / 256
        for K in (2, 3):
            radii = [s * r for r in (40, 70, 100)[:K]]
            for f in (0.0, 0.1, 0.2):
                img, truth = circle_image(
                    [(s * 128 + 0.3, s * 124 - 0.4)] * K, radii, (size, size), outlier_fraction=f
                )
                yield size, K, f, img, truth


def score(truth, found) -> tuple[float, int]:
    from pyro_moe.shapes import Circle

    pred = [Circle(x, y, r, bool(r > 0)) for x, y, r in found]
    S = circle_error(truth, pred)
    pairs = match_circles(truth, pred)
    tol = 2.0 * truth[0].r / 40  # 2 px at 256^2, scaled with the image
    good = 0
    for i, j in pairs:
        t, p = truth[i], pred[j]
        good += int(np.sqrt((t.x0 - p.x0) ** 2 + (t.y0 - p.y0) ** 2 + (t.r - p.r) ** 2) <= tol)
    return S, good


def circle_comparison(quick: bool) -> tuple[list[dict], str | None]:
    try:
        import skimage
    except ImportError:
        return [], "scikit-image is not installed (pip install scikit-image): skipped"
    rows = []
    for size, K, f, img, truth in circle_cases(quick):
        methods = {
            "pyro_moe": lambda img=img, K=K: (
                [
                    (c.x0, c.y0, c.r)
                    for c in pyro_moe.fit_circles(
                        img, experts=K, noise_expert=True, max_points=4000
                    ).circles()
                ],
                "fit_circles(experts=K, noise_expert=True, max_points=4000), defaults otherwise",
            ),
            "hough": lambda img=img, K=K, truth=truth: hough(img, K, truth),
            "ransac": lambda img=img, K=K: ransac_circles(img, K),
        }
        for name, fn in methods.items():
            t0 = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                found, settings = fn()
            wall = time.perf_counter() - t0
            S, good = score(truth, found)
            rows.append(
                {
                    "size": size,
                    "circles": K,
                    "outliers": f,
                    "method": name,
                    "S": S,
                    "found": good,
                    "wall_s": wall,
                    "settings": settings,
                }
            )
            log("circles", {k: v for k, v in rows[-1].items() if k != "settings"})
    return rows, f"scikit-image {skimage.__version__}"


def svi_against_cavi(c, s, truth=None) -> dict:
    """Issue #16's three tests of an SVI fit ``s`` against the CAVI fit ``c`` of the same
    data (the one home of the rule, for benchmarks/svi_study_rows.py and svi_kinds.py):
    |F_SVI - F_CAVI| <= max(1e-4 |F_CAVI|, 0.5) nats; S_SVI <= max(2 S_CAVI, 1e-6) (circle
    error against ``truth``, when given); the largest |sd_SVI / sd_CAVI - 1| of the weights'
    posterior sds, experts aligned, below 5 %."""
    sd_c = c.cov.diagonal(dim1=-2, dim2=-1).sqrt()
    sd_s = s.aligned_to(c).cov.diagonal(dim1=-2, dim2=-1).sqrt()
    row = {
        "F_cavi": c.objective,
        "F_svi": s.objective,
        "gap": s.objective - c.objective,
        "F_ok": abs(s.objective - c.objective) <= max(1e-4 * abs(c.objective), 0.5),
        "sd_ratio_max_dev": float((sd_s / sd_c - 1).abs().max()),
        "cavi_converged": c.converged,
        "svi_converged": s.converged,
    }
    row["sd_ok"] = row["sd_ratio_max_dev"] < 0.05
    if truth is not None:
        row["S_cavi"] = circle_error(truth, c.circles())
        row["S_svi"] = circle_error(truth, s.circles())
        row["S_ok"] = row["S_svi"] <= max(2 * row["S_cavi"], 1e-6)
    return row


def table(rows: list[dict], keys: list[str]) -> str:
    def fmt(v):
        if isinstance(v, float):
            return f"{v:.4g}"
        return "" if v is None else str(v)

    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(fmt(r.get(k)) for k in keys) + " |" for r in rows]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes only (about 2 minutes)")
    ap.add_argument("--skip-circles", action="store_true")
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    info = machine()
    res: dict = {"machine": info, "quick": args.quick, "repeats": REPEATS}
    # the goal runs first: a child's ru_maxrss includes the parent's peak at the spawn on
    # Linux (the high-water mark is folded in at exec), so the parent must still be small
    res["goal"] = [goal(10**5 if args.quick else 10**6, 50)]
    if not args.quick:
        res["goal"].append(goal(10**7, 5))
    res["scaling"] = scaling(args.quick)
    res["gate"] = gate_comparison(10**5)  # 1e6: about 40 s a run, see the goal table
    circ, note = (
        ([], "skipped (--skip-circles)") if args.skip_circles else circle_comparison(args.quick)
    )
    res["circles"], res["circles_note"] = circ, note
    OUT.mkdir(exist_ok=True)
    (OUT / "cavi.json").write_text(json.dumps(res, indent=1))
    md = [
        "# CAVI at scale",
        "",
        ", ".join(f"{k}={v}" for k, v in info.items()),
        "",
        f"Every time is the best of {REPEATS} runs (shared machine). `benchmarks/run.py"
        + (" --quick`" if args.quick else "`"),
        "",
        "## Time per CAVI iteration (linear in N) and ratio to the bare statistics pass",
        "",
        "Bare pass: plain torch, responsibilities by log-sum-exp, sum r x x^T, sum r y x.",
        "",
        table(
            res["scaling"],
            ["model", "K", "N", "s_per_iter", "ns_per_point_iter", "bare_pass_s", "ratio_iter_to_bare"],
        ),
        "",
        "## Regularized mixture of experts (K = 2, n = 3, gate learned), fresh process",
        "",
        table(
            res["goal"],
            ["N", "iterations", "wall_s", "fit_loop_s", "objective", "peak_rss_mb", "vm_hwm_mb"],
        ),
        "",
        "## Gate M-step variants (regularized experts, 50 iterations)",
        "",
        table(
            res["gate"],
            ["N", "variant", "final_objective", "objective_at_10", "time_to_target_s", "iters_to_target", "wall_50_iters_s"],
        ),
        "",
        "## Circle finding on synthetic images (concentric circles, outlier pixels)",
        "",
        note,
        "",
    ]  # fmt: skip
    if circ:
        md += [
            table(circ, ["size", "circles", "outliers", "method", "S", "found", "wall_s"]),
            "",
            "Settings: " + "; ".join(sorted({f"{r['method']}: {r['settings']}" for r in circ})),
            "",
        ]
    (OUT / "cavi.md").write_text("\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
