"""CAVI on Dask: points read from disk, 20 iterations of the mixture of models, 2 workers.

For each N: X (N, 3) = [x1, x2, 1] and y (two planes, noise 0.3) are written to .npy files
under a temporary directory (deleted afterwards), then ``pyro_moe.fit`` runs on the store
with a 2-worker ``LocalCluster`` (one thread and a 2 GiB memory limit each; every task
memory-maps its 2.5e5-row slice), ``n_init=1``, ``max_iter=20``, ``tol=0`` (20 iterations).
Measured: wall time of the fit, seconds per iteration (the history's times; the
initialisation's passes are apart), the peak RSS of each worker process
(sampled every 50 ms by a thread in each worker), and, for comparison, the in-memory fit's seconds per iteration at the
sizes that fit in memory (``--memory-max``). Writes benchmarks/results/dask_scaling.{json,md}.

    OMP_NUM_THREADS=1 nice .venv/bin/python benchmarks/dask_scaling.py --sizes 1e6,1e7,1e8
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from run import machine  # benchmarks/run.py: one description of the machine

import pyro_moe
from pyro_moe import distributed as D

OUT = Path(__file__).resolve().parent / "results"
ITERATIONS = 20
WRITE_ROWS = 5_000_000
CHUNK_ROWS = 250_000  # rows per task (so that both workers work from N = 1e6 on)


def write_store(directory: Path, N: int, seed: int = 0) -> None:
    """X.npy (N, 3) and y.npy (N,) written in blocks (never all of N in memory)."""
    X = np.lib.format.open_memmap(directory / "X.npy", "w+", np.float64, (N, 3))
    y = np.lib.format.open_memmap(directory / "y.npy", "w+", np.float64, (N,))
    W = np.array([[1.0, -2.0, 0.5], [-1.5, 0.5, 3.0]])
    g = np.random.default_rng(seed)
    for i in range(0, N, WRITE_ROWS):
        j = min(i + WRITE_ROWS, N)
        x = np.c_[g.normal(size=(j - i, 2)), np.ones(j - i)]
        z = g.integers(0, 2, j - i)
        X[i:j] = x
        y[i:j] = (x * W[z]).sum(1) + 0.3 * g.normal(size=j - i)
    X.flush()
    y.flush()
    del X, y


def start_rss_sampler(dask_worker) -> None:
    """In a worker: sample the process's RSS every 50 ms, keeping the peak (getrusage's
    ru_maxrss would include the client's peak, inherited when the worker was spawned)."""
    import threading

    import psutil

    proc, peak = psutil.Process(), [0]
    dask_worker.rss_peak = peak

    def sample():
        while True:
            peak[0] = max(peak[0], proc.memory_info().rss)
            time.sleep(0.05)

    threading.Thread(target=sample, daemon=True).start()


def rss_peak_mb(dask_worker) -> float:
    return dask_worker.rss_peak[0] / 2**20


def client_peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def per_iteration(result) -> float:
    """Median seconds per iteration from the history's cumulative times."""
    t = result.history.time.numpy()
    return float(np.median(np.diff(t))) if len(t) > 2 else float(t[-1])


def main() -> None:
    from distributed import Client

    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="1e6,1e7,1e8")
    ap.add_argument("--memory-max", type=float, default=1e7, help="largest in-memory N")
    ap.add_argument("--dir", default=None, help="where to write the stores (default: /tmp)")
    ap.add_argument("--iterations", type=int, default=ITERATIONS)
    ap.add_argument("--append", action="store_true", help="add rows to the existing results")
    args = ap.parse_args()
    sizes = [int(float(s)) for s in args.sizes.split(",")]
    torch.set_num_threads(1)
    kw = dict(experts=2, n_init=1, max_iter=args.iterations, tol=0.0)
    rows = []
    root = Path(tempfile.mkdtemp(prefix="pyro_moe_dask_", dir=args.dir))
    try:
        for N in sizes:
            d = root / f"N{N}"
            d.mkdir()
            t0 = time.perf_counter()
            write_store(d, N)
            write_s = time.perf_counter() - t0
            row = {"N": N, "max_iter": args.iterations, "write_s": write_s, "bytes": N * 4 * 8}
            cluster = D.local_cluster(2)  # what fit(workers=2) starts
            with Client(cluster) as client, warnings.catch_warnings():
                warnings.simplefilter("ignore", pyro_moe.ConvergenceWarning)
                client.run(torch.set_num_threads, 1)
                client.run(start_rss_sampler)
                time.sleep(0.2)
                before = client.run(rss_peak_mb)
                t0 = time.perf_counter()
                store = D.open_store(d, chunk_rows=CHUNK_ROWS)
                r = pyro_moe.fit("mixture_of_models", store, None, collect=False, **kw)
                wall = time.perf_counter() - t0
                peaks = client.run(rss_peak_mb)
            cluster.close()
            row.update(
                dask_wall_s=wall,
                dask_iterations=r.iterations,
                dask_s_per_iter=per_iteration(r),
                dask_iter_total_s=float(r.history.time[-1]),
                dask_objective=float(r.objective_history[-1]),
                worker_peak_rss_mb=sorted(peaks.values()),
                worker_rss_before_fit_mb=sorted(before.values()),
                passes=r.restarts[0]["passes"],
            )
            if N <= args.memory_max:
                X = np.load(d / "X.npy")
                y = np.load(d / "y.npy")
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", pyro_moe.ConvergenceWarning)
                    t0 = time.perf_counter()
                    m = pyro_moe.fit("mixture_of_models", X, y, **kw)
                    row["memory_wall_s"] = time.perf_counter() - t0
                row["memory_s_per_iter"] = per_iteration(m)
                row["memory_objective"] = float(m.objective_history[-1])
                row["objective_rel_diff"] = abs(
                    row["dask_objective"] - row["memory_objective"]
                ) / abs(row["memory_objective"])
                del X, y, m
            rows.append(row)
            print(json.dumps(row), flush=True)
            shutil.rmtree(d)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    if args.append and (OUT / "dask_scaling.json").exists():
        old = json.loads((OUT / "dask_scaling.json").read_text())["rows"]
        rows = sorted([r for r in old if r["N"] not in sizes] + rows, key=lambda r: r["N"])
    write(rows)


def write(rows: list[dict]) -> None:
    OUT.mkdir(exist_ok=True)
    info = {"machine": machine(), "workers": 2, "iterations": ITERATIONS,
            "chunk_rows": CHUNK_ROWS, "rows": rows}  # fmt: skip
    (OUT / "dask_scaling.json").write_text(json.dumps(info, indent=2) + "\n")
    base = rows[0]
    lines = [
        "# CAVI on Dask: points read from disk, up to 20 iterations, 2 workers",
        "",
        "Written by `benchmarks/dask_scaling.py` (2-worker LocalCluster, one thread each, "
        f"{CHUNK_ROWS:.1e}-row tasks memory-mapping .npy files; mixture of models, "
        "K = 2, n = 3). Seconds per iteration: the median over the iterations run; the initialisation's "
        "passes (moments, subsets, the exact median) are in the wall time only. `tol = 0`: a "
        "fit stops early only when the objective repeats exactly.",
        "",
        "| N | iterations run | Dask wall (s) | Dask s/iter | s/iter per 1e6 points | vs N[0] per point "
        "| in-memory s/iter | Dask / in-memory per iter | worker peak RSS (MB) | rel. diff of F |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        per = r["dask_s_per_iter"] / (r["N"] / 1e6)
        rel = per / (base["dask_s_per_iter"] / (base["N"] / 1e6))
        mem = r.get("memory_s_per_iter")
        ratio = "" if mem is None else f"{r['dask_s_per_iter'] / mem:.2f}"
        diff = "" if mem is None else f"{r['objective_rel_diff']:.1e}"
        lines.append(
            f"| {r['N']:.0e} | {r['dask_iterations']} | {r['dask_wall_s']:.1f} | {r['dask_s_per_iter']:.3f} | {per:.4f} "
            f"| {rel:.2f} | {'' if mem is None else f'{mem:.3f}'} | {ratio} "
            f"| {max(r['worker_peak_rss_mb']):.0f} | {diff} |"
        )
    m = info["machine"]
    lines += ["", f"Machine: {json.dumps(m)}", ""]
    (OUT / "dask_scaling.md").write_text("\n".join(lines))


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
