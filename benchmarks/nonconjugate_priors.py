"""Non-conjugate weight priors swapped into a model file: natural-gradient SVI (CVI's
linearised prior step) beside NUTS and Adam SVI.

``models/mixture_of_models.py`` is copied with its ``weight_prior`` returning
``dist.Laplace(prior_mean, s).to_event(1)`` or ``dist.StudentT(3.0, prior_mean, s).to_event(1)``
(s = sqrt(diag A), the Gaussian's sd), on two small problems (K = 2, ``fit``'s default
prior and a learned beta): two noisy circles (N = 200, ``tests/conftest.py: two_circles``,
jitter 0.1) and two lines x = a y + c (N = 300, noise sd 0.05, slopes 0.5 and -0.05: the
second slope sits at the Laplace's kink). For each:

* SVI, ``method="svi"`` (natural gradient, CVI): its final objective F (quadrature), steps,
  seconds, the range of F over the last 10 % of steps, and Pyro's Monte Carlo ELBO of the
  file at the final q with its standard error (``final_particles=4000``);
* NUTS, ``method="nuts"`` (4 chains x 1000 draws; CAVI refuses the file, so NUTS takes h and
  its preconditioning from the SVI fit): seconds, split R-hat, divergences;
* SVI's and Adam SVI's (``optimizer="adam"``, defaults: 3000 steps, lr 0.002) largest
  |mean - NUTS mean| / NUTS sd and range of sd / NUTS sd over the weights, and Adam's
  final objective (its own Monte Carlo estimate, 200 draws).

Writes benchmarks/results/nonconjugate_priors.{json,md}.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/nonconjugate_priors.py
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
from run import machine  # benchmarks/run.py: one description of the machine

import pyro_moe

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from conftest import GAUSSIAN_PRIOR, SWAPS, edited_model, two_circles

OUT = Path(__file__).resolve().parent / "results"


def two_lines(N: int = 300, seed: int = 0):
    """x = a y + c + N(0, 0.05^2) on two lines, (a, c) = (0.5, 0) and (-0.05, 1); X = [y, 1]."""
    rng = np.random.default_rng(seed)
    yy = rng.uniform(-1, 1, N)
    first = rng.random(N) < 0.5
    x = np.where(first, 0.5 * yy, -0.05 * yy + 1.0) + rng.normal(0, 0.05, N)
    return np.c_[yy, np.ones(N)], x


def compare(fit, nuts) -> dict:
    sd = nuts.cov.diagonal(dim1=-2, dim2=-1).sqrt()
    ratio = fit.cov.diagonal(dim1=-2, dim2=-1).sqrt() / sd
    return {
        "max_mean_err_sd": float(((fit.mean - nuts.mean).abs() / sd).max()),
        "sd_ratio": [float(ratio.min()), float(ratio.max())],
    }


def main() -> None:
    rows = []
    problems = {"two circles, N = 200": two_circles(200, 0.1, 0), "two lines, N = 300": two_lines()}
    with tempfile.TemporaryDirectory() as tmp:
        for pname, (X, y) in problems.items():
            for prior, edit in SWAPS.items():
                d = Path(tmp) / f"{prior}{len(rows)}"
                d.mkdir()
                path = edited_model(d, "mixture_of_models", GAUSSIAN_PRIOR, edit)
                t = time.perf_counter()
                svi = pyro_moe.fit(path, X, y, experts=2, method="svi", n_init=1,
                                   final_particles=4000)  # fmt: skip
                t_svi = time.perf_counter() - t
                t = time.perf_counter()
                nuts = pyro_moe.fit(path, X, y, experts=2, method="nuts", n_init=1, chains=4,
                                    max_iter=1000)  # fmt: skip
                t_nuts = time.perf_counter() - t
                t = time.perf_counter()
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", pyro_moe.ConvergenceWarning)
                    adam = pyro_moe.fit(path, X, y, experts=2, method="svi", n_init=1,
                                        optimizer="adam")  # fmt: skip
                t_adam = time.perf_counter() - t
                h = svi.objective_history
                tail = h[-max(2, len(h) // 10) :]
                s = svi.restarts[0]
                row = {
                    "problem": pname,
                    "prior": prior,
                    "svi": {
                        "objective": svi.objective,
                        "steps": svi.iterations,
                        "converged": svi.converged,
                        "seconds": t_svi,
                        "last_10pct_range": float(tail.max() - tail.min()),
                        "pyro_objective": s["pyro_objective"],
                        "pyro_objective_se": s["pyro_objective_se"],
                        **compare(svi, nuts),
                    },
                    "nuts": {
                        "seconds": t_nuts,
                        "split_rhat_max": nuts.draws.info["split_rhat_max"],
                        "divergences": int(nuts.draws.diverging.sum()),
                        "hyper": nuts.draws.info["hyper"],
                    },
                    "adam": {
                        "objective": adam.objective,
                        "objective_se": adam.restarts[0]["objective_se"],
                        "steps": adam.iterations,
                        "seconds": t_adam,
                        **compare(adam, nuts),
                    },
                }
                rows.append(row)
                print(json.dumps(row, indent=1), flush=True)
    OUT.mkdir(exist_ok=True)
    result = {"machine": machine(), "rows": rows}
    (OUT / "nonconjugate_priors.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        "# Non-conjugate weight priors: natural SVI (CVI) beside NUTS and Adam SVI",
        "",
        f"Machine: {machine()}. Command: "
        "`OMP_NUM_THREADS=1 .venv/bin/python benchmarks/nonconjugate_priors.py`.",
        "",
        "| problem | prior | SVI F (quadrature) | Pyro ELBO ± se | steps | last 10 % range "
        "| SVI s | NUTS s | R-hat | SVI mean err (sd) | SVI sd ratio | Adam F ± se "
        "| Adam mean err (sd) | Adam sd ratio | Adam s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        s, n, a = r["svi"], r["nuts"], r["adam"]
        lines.append(
            f"| {r['problem']} | {r['prior']} | {s['objective']:.4f} | "
            f"{s['pyro_objective']:.4f} ± {s['pyro_objective_se']:.1e} | {s['steps']} | "
            f"{s['last_10pct_range']:.1e} | {s['seconds']:.1f} | {n['seconds']:.0f} | "
            f"{n['split_rhat_max']:.3f} | {s['max_mean_err_sd']:.3f} | "
            f"{s['sd_ratio'][0]:.3f}-{s['sd_ratio'][1]:.3f} | "
            f"{a['objective']:.2f} ± {a['objective_se']:.2f} | {a['max_mean_err_sd']:.3f} | "
            f"{a['sd_ratio'][0]:.3f}-{a['sd_ratio'][1]:.3f} | {a['seconds']:.0f} |"
        )
    (OUT / "nonconjugate_priors.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
