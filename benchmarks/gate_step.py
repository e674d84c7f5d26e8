"""The gate's M-step (issues #30, #31): Gauss-Newton against L-BFGS, in one process.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/gate_step.py [fits] [regularized] [table]
        [--data mcycle faithful engel npreg gagurine npreg1000] [--experts 2 3 4]

Variants (the fit option ``gate_method``, which overrides the model file's
``SETTINGS["gate_method"]``, and :mod:`pyro_moe.engines.gate`'s module constants, set in
this process):

* ``default``: the model file's own (``mixture_of_experts``: ``gate_method="auto"``);
* ``lbfgs``: L-BFGS (10 iterations, strong Wolfe) per sweep (``gate_method="lbfgs"``, the
  default of the files that name no method), its closure's loss and gradient by
  ``GateLayers.terms``;
* ``lbfgs autograd``: the same L-BFGS with its closure's loss and gradient by autograd
  through the gate module (``GATE_LBFGS_BY_HAND = False``, as before that closure);
* ``newton``: damped Gauss-Newton, one iteration per sweep (``gate_method="newton"``,
  ``GATE_NEWTON_STEPS = 1``, the module's ``GATE_CURVATURE_AGE``): what
  ``models/mixture_of_experts.py`` takes by default (``"auto"``: the same below 1e5
  points, L-BFGS from there; the regularized rows at 1e5 say why);
* ``newton fresh``: the same with a fresh curvature every sweep (``GATE_CURVATURE_AGE = 0``);
* ``newton x3``: up to 3 Gauss-Newton iterations per sweep, each with a fresh curvature.

Studies:

* ``fits``: the built-in ``mixture_of_experts`` (MLP gate, gate prior s = 3, its defaults:
  5 restarts, tol 1e-8) on each data set of :mod:`pyro_moe.datasets` with the design of
  ``benchmarks/regression.py`` ([1, z, z^2, z^3], all points), K in {2, 3, 4}: this
  process's CPU seconds per fit (``time.process_time``), the CAVI sweeps of all restarts,
  the best final objective and each restart's, the same seeds for every variant;
* ``regularized``: ``regularized_experts`` (K = 2, the circles of ``benchmarks/run.py``,
  n_init = 1, tol = 0) at N = 1000 and 1e5, timed as ``benchmarks/speed.py`` times whole
  fits: per iteration (T(max_iter) - T(1)) / (iterations - 1) in this thread's CPU time
  (``time.thread_time``), best of 3 at N = 1000 (1 at 1e5), and the whole fit's time and
  final objective.

The first L-BFGS of a process imports ``torch._dynamo`` (torch.optim does, ~2 s); it is
imported before any timing, and measured once (``dynamo_import_s``). The machine is shared
(2 cores, other processes): the load average is stored beside each row; compare the
variants' ratios within one run. Writes ``benchmarks/results/gate_step.{json,md}``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from regression import design, load
from run import circles_data, machine

import pyro_moe
from pyro_moe.engines import gate as G
from pyro_moe.engines.cavi import CAVI

OUT = Path(__file__).resolve().parent / "results"
STORE = OUT / "gate_step.json"
VARIANTS = {
    "default": {},
    "lbfgs": dict(gate_method="lbfgs"),
    "lbfgs autograd": dict(gate_method="lbfgs", GATE_LBFGS_BY_HAND=False),
    "newton": dict(gate_method="newton", GATE_NEWTON_STEPS=1),
    "newton fresh": dict(gate_method="newton", GATE_CURVATURE_AGE=0),
    "newton x3": dict(gate_method="newton", GATE_CURVATURE_AGE=0, GATE_NEWTON_STEPS=3),
}
DEFAULTS = {name: getattr(G, name) for v in VARIANTS.values() for name in v if name.isupper()}


def use(variant: str) -> dict:
    """Set the gate module's constants to ``variant``'s (the defaults for the rest); return
    its fit options (``gate_method``, which overrides the model file's SETTINGS)."""
    for name, value in {**DEFAULTS, **VARIANTS[variant]}.items():
        if name.isupper():
            setattr(G, name, value)
    return {k: v for k, v in VARIANTS[variant].items() if not k.isupper()}


class Sweeps:
    """Counts the sweeps of every restart (CAVI.run's histories)."""

    def __init__(self):
        self.histories: list[list[float]] = []
        original = CAVI.run

        def run(engine, *a, **k):
            r = original(engine, *a, **k)
            self.histories.append(list(r.objective))
            return r

        CAVI.run = run


def fits(names: list[str], experts: list[int], variants: list[str], rows: list[dict]):
    count = Sweeps()
    for name in names:
        X, y = load(name)
        D = design(X, X)
        for K in experts:
            for v in variants:
                kw = use(v)
                count.histories.clear()
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    t = time.process_time()
                    res = pyro_moe.fit("mixture_of_experts", D, y, experts=K, **kw)
                    cpu = time.process_time() - t
                row = dict(
                    study="fits", data=name, N=len(y), experts=K, variant=v, cpu_s=cpu,
                    sweeps=sum(len(h) for h in count.histories), objective=res.objective,
                    restarts=[h[-1] for h in count.histories],
                    converged=[r["converged"] for r in res.restarts], load=os.getloadavg()[0],
                )  # fmt: skip
                rows[:] = [r for r in rows if _key(r) != _key(row)] + [row]
                print(json.dumps(row), flush=True)
                STORE.write_text(json.dumps(rows, indent=1))


def regularized(sizes: list[int], variants: list[str], rows: list[dict]):
    for N in sizes:
        X, y = circles_data(N)
        repeats = 3 if N <= 10_000 else 1
        for v in variants:
            kw = use(v)

            def fit(it, X=X, y=y, kw=kw):
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    return pyro_moe.fit(
                        "regularized_experts",
                        X,
                        y,
                        experts=2,
                        n_init=1,
                        max_iter=it,
                        tol=0.0,
                        **kw,
                    )

            fit(3)
            t1 = tM = float("inf")
            for _ in range(repeats):
                t = time.thread_time()
                fit(1)
                t1 = min(t1, time.thread_time() - t)
                t = time.thread_time()
                res = fit(201 if N <= 10_000 else 50)
                tM = min(tM, time.thread_time() - t)
            row = dict(
                study="regularized", data="circles", N=N, experts=2, variant=v,
                iterations=res.iterations, per_iter_us=1e6 * (tM - t1) / max(res.iterations - 1, 1),
                fit_s=tM, objective=res.objective, load=os.getloadavg()[0],
            )  # fmt: skip
            rows[:] = [r for r in rows if _key(r) != _key(row)] + [row]
            print(json.dumps(row), flush=True)
            STORE.write_text(json.dumps(rows, indent=1))


def _key(r: dict) -> tuple:
    return (r["study"], r["data"], r["N"], r["experts"], r["variant"])


def markdown(rows: list[dict], info: dict) -> str:
    fit_rows = [r for r in rows if r["study"] == "fits"]
    variants = list(dict.fromkeys(r["variant"] for r in rows))
    by = {_key(r): r for r in rows}
    lines = [
        "# The gate's M-step: Gauss-Newton against L-BFGS",
        "",
        "Written by `benchmarks/gate_step.py` (its docstring says how). "
        f"{json.dumps(info)}. The machine was shared (2 cores, other processes running; load "
        "average per row in `gate_step.json`): compare the variants within a row.",
        "",
        "## Whole fits of `mixture_of_experts` (MLP gate, defaults: 5 restarts, tol 1e-8)",
        "",
        "CPU s: this process's CPU seconds of one fit (all restarts); sweeps: CAVI sweeps of "
        "all restarts; objective: the best final F (total nats; larger is better); Δ: "
        "that variant's F less L-BFGS's.",
        "",
        "| data | N | K | " + " | ".join(f"{v} CPU s" for v in variants) + " | "
        + " | ".join(f"{v} sweeps" for v in variants) + " | lbfgs F | "
        + " | ".join(f"{v} Δ" for v in variants if v != "lbfgs") + " |",
        "|---|---:|---:|" + "---:|" * (3 * len(variants)),
    ]  # fmt: skip
    seen = list(dict.fromkeys((r["data"], r["N"], r["experts"]) for r in fit_rows))
    for data, N, K in seen:
        cells = [by.get(("fits", data, N, K, v)) for v in variants]
        base = by.get(("fits", data, N, K, "lbfgs"))
        line = f"| {data} | {N} | {K} | "
        line += " | ".join(f"{c['cpu_s']:.2f}" if c else "" for c in cells) + " | "
        line += " | ".join(str(c["sweeps"]) if c else "" for c in cells) + " | "
        line += f"{base['objective']:.3f} | " if base else " | "
        line += " | ".join(
            f"{c['objective'] - base['objective']:+.3f}" if c and base else ""
            for v, c in zip(variants, cells, strict=True)
            if v != "lbfgs"
        )
        lines.append(line + " |")
    if fit_rows:
        lines += ["", "Largest CPU s per fit over the data sets at N ≤ 1000:", ""]
        for v in variants:
            secs = [r["cpu_s"] for r in fit_rows if r["variant"] == v and r["N"] <= 1000]
            if secs:
                lines.append(f"- {v}: {max(secs):.2f} s (median {np.median(secs):.2f} s)")
    reg = [r for r in rows if r["study"] == "regularized"]
    if reg:
        lines += [
            "",
            "## `regularized_experts` (gate learned), K = 2, n_init = 1, tol = 0",
            "",
            "per iteration: (T(max_iter) - T(1)) / (iterations - 1), thread CPU time; "
            "fit: T(max_iter), the fit stopping where F stands still (max_iter 201; 50 at "
            "N = 1e5).",
            "",
            "| N | variant | iterations | per iteration µs | fit s | objective |",
            "|---:|---|---:|---:|---:|---:|",
        ]
        for r in reg:
            lines.append(
                f"| {r['N']:.0e} | {r['variant']} | {r['iterations']} | "
                f"{r['per_iter_us']:.0f} | {r['fit_s']:.3f} | {r['objective']:.4f} |"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("studies", nargs="*", default=["fits", "regularized"])
    p.add_argument(
        "--data", nargs="*", default=["mcycle", "faithful", "engel", "npreg", "gagurine"]
    )
    p.add_argument("--experts", nargs="*", type=int, default=[2, 3, 4])
    p.add_argument("--variants", nargs="*", default=list(VARIANTS))
    p.add_argument("--sizes", nargs="*", type=float, default=[1e3, 1e5])
    a = p.parse_args()
    torch.set_num_threads(1)
    info = machine()
    t = time.perf_counter()
    importlib.import_module("torch._dynamo")  # what the first torch.optim optimizer imports

    info["dynamo_import_s"] = round(time.perf_counter() - t, 2)
    print(json.dumps(info), "load", os.getloadavg(), file=sys.stderr, flush=True)
    rows = json.loads(STORE.read_text()) if STORE.exists() else []
    if "fits" in a.studies:
        fits(a.data, a.experts, a.variants, rows)
    if "regularized" in a.studies:
        regularized([int(n) for n in a.sizes], a.variants, rows)
    (OUT / "gate_step.md").write_text(markdown(rows, info))
    print(markdown(rows, info))


if __name__ == "__main__":
    main()
