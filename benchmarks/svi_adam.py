"""Adam SVI where natural gradient has no step (issue 26): the tolerance and step budget
that suit it, and how far Adam ends from CAVI on the built-in gated model.

Data: two linear regimes switching at x = 0 (notebook 04's regression example: N = 200,
x ~ U(-3, 3), noise sd 0.3, X = [x, 1]), K = 2, one restart each (seed 0).

* ``fallback``: the default ``method="svi"`` (natural gradient) on two files it cannot
  step, so every site goes to Adam (whitened q(W)): an ARD Gamma precision per expert and
  feature, and a Student-t likelihood (``tests/conftest.py``'s ``added_site_model`` and
  ``observed_model``), for each (tol, max_iter): the steps taken, whether the stop rule
  passed, the seconds, the final objective (Pyro's Monte Carlo ELBO) and its standard error.
* ``gated``: ``models/mixture_of_experts.py`` itself (conjugate: CAVI fits it), CAVI
  against Adam (``optimizer="adam"``) with its defaults and with longer budgets, larger
  learning rates and whitened coordinates: the final objective (closed form at Adam's
  final parameters) and the gap to CAVI's.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/svi_adam.py [fallback] [gated]

Writes benchmarks/results/svi_adam.{json,md} (a case run alone replaces its own rows).
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))  # the edited files of the tests
from conftest import added_site_model, observed_model  # noqa: E402
from run import machine, table  # noqa: E402  (benchmarks/run.py)

import pyro_moe  # noqa: E402

OUT = HERE / "results"


def regimes(N: int = 200, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(-3, 3, N)
    y = np.where(x < 0, -1.0 - 0.8 * x, 0.5 + 1.5 * x) + rng.normal(0, 0.3, N)
    return np.c_[x, np.ones_like(x)], y


def one(model, X, y, **kw) -> dict:
    t0 = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit = pyro_moe.fit(model, X, y, experts=2, n_init=1, seed=0, **kw)
    r = fit.restarts[0]
    return {
        "objective": fit.objective,
        "objective_se": r.get("objective_se", 0.0),
        "steps": fit.iterations,
        "converged": fit.converged,
        "seconds": time.perf_counter() - t0,
        "optimizer": r.get("optimizer", fit.method),
        "warnings": len(caught),
    }


def fallback(rows: list[dict]) -> None:
    X, y = regimes()
    tmp = Path(tempfile.mkdtemp())
    files = {
        "ard": added_site_model(tmp, "ard"),
        "student_t": observed_model(tmp, "dist.StudentT(3.0, mean, scale)", name="student_t"),
    }
    settings = {
        "defaults (lr=0.1, tol=0.001, max_iter=3000)": {},
        "lr=0.03": {"lr": 0.03},
        "lr=0.01, tol=0.001, max_iter=3000": {"lr": 0.01, "tol": 1e-3, "max_iter": 3000},
        "lr=0.01, tol=0.0001, max_iter=3000": {"lr": 0.01, "tol": 1e-4, "max_iter": 3000},
        "lr=0.01, tol=1e-05, max_iter=3000": {"lr": 0.01, "tol": 1e-5, "max_iter": 3000},
        "lr=0.01, tol=0.0001, max_iter=1000": {"lr": 0.01, "tol": 1e-4, "max_iter": 1000},
        "lr=0.01, tol=0.0001, max_iter=6000": {"lr": 0.01, "tol": 1e-4, "max_iter": 6000},
    }
    for kind, path in files.items():
        for name, kw in settings.items():
            row = one(str(path), X, y, method="svi", **kw)
            rows.append({"case": kind, "setting": name, **row})
            print(rows[-1], flush=True)


def gated(rows: list[dict]) -> None:
    X, y = regimes()
    cavi = one("mixture_of_experts", X, y)
    rows.append({"case": "gated", "setting": "cavi", **cavi, "gap_to_cavi": 0.0})
    print(rows[-1], flush=True)
    settings = {
        "adam defaults": {},
        "adam whiten": {"whiten": True},
        "adam lr=0.01": {"lr": 0.01},
        "adam lr=0.01, max_iter=10000, tol=0": {"lr": 0.01, "max_iter": 10000, "tol": 0.0},
        "adam whiten, lr=0.05, max_iter=10000, tol=0": {
            "whiten": True,
            "lr": 0.05,
            "max_iter": 10000,
            "tol": 0.0,
        },
    }
    for name, kw in settings.items():
        row = one("mixture_of_experts", X, y, method="svi", optimizer="adam", **kw)
        rows.append(
            {
                "case": "gated",
                "setting": name,
                **row,
                "gap_to_cavi": cavi["objective"] - row["objective"],
            }
        )
        print(rows[-1], flush=True)


def write(rows: list[dict]) -> str:
    """benchmarks/results/svi_adam.{json,md}, the rows of earlier runs of the other case kept
    (``python benchmarks/svi_adam.py fallback`` and ``... gated`` may run apart)."""
    OUT.mkdir(exist_ok=True)
    path = OUT / "svi_adam.json"
    cases = {r["case"] for r in rows}
    kept = []
    if path.exists():
        kept = [r for r in json.loads(path.read_text())["rows"] if r["case"] not in cases]
    order = {"gated": 0, "ard": 1, "student_t": 2}
    rows = sorted([*kept, *rows], key=lambda r: order.get(r["case"], 3))
    path.write_text(json.dumps({"machine": machine(), "rows": rows}, indent=1))
    cols = ["case", "setting", "optimizer", "steps", "converged", "seconds", "objective",
            "objective_se", "gap_to_cavi", "warnings"]  # fmt: skip
    host = ", ".join(f"{k}={v}" for k, v in machine().items())
    text = (
        f"# Adam SVI: tolerance, budget, gap to CAVI\n\n{host}\n\n"
        "N = 200, K = 2, one restart (seed 0); seconds on a shared 2-core machine under load "
        "(other jobs running): compare within a case.\n\n" + table(rows, cols)
    )
    (OUT / "svi_adam.md").write_text(text + "\n")
    return text


def main(argv: list[str]) -> int:
    rows: list[dict] = []
    for c in argv or ["fallback", "gated"]:
        {"fallback": fallback, "gated": gated}[c](rows)
    print(write(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
