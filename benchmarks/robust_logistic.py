"""Robust (Student-t) and logistic experts in closed form.

1. Robust experts against the Gaussian file: ``pyro_moe.datasets.outlier_lines`` (two gated
   lines, N = 400, 10, 20 and 30 % of the targets replaced by U(-15, 15)), CAVI with
   ``models/robust_experts.py`` and ``models/mixture_of_experts.py`` (defaults, seed 0): the
   largest |m - w_true| / posterior sd over both lines' weights, and seconds.
2. Logistic experts: ``pyro_moe.datasets.gated_logistic`` (N = 300 to fit, 600 held out),
   ``models/logistic_experts.py`` by CAVI, natural SVI (full batch) and NUTS (2 chains x 300
   draws, 200 warm-up; hyperparameters and gate at CAVI's), against one logistic regression
   (scikit-learn, default L2) and the null model (the training share of 1s): held-out
   log-likelihood per point, objective, the largest |mean - NUTS mean| / NUTS sd, the range
   of sd / NUTS sd, seconds.
3. Robust experts by CAVI, natural SVI and NUTS on 20 % outliers at N = 60 (NUTS samples the
   60 scale weights too: the generic path), the same columns.

Writes benchmarks/results/robust_logistic.{json,md}. The machine is shared (2 cores, several
jobs): seconds are noisy; the load average is printed.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/robust_logistic.py
"""

from __future__ import annotations

import json
import os
import time
import warnings
from pathlib import Path

import numpy as np
from run import machine  # benchmarks/run.py: one description of the machine

import pyro_moe
from pyro_moe.datasets import gated_logistic, outlier_lines

OUT = Path(__file__).resolve().parent / "results"
NOTE = (
    "At 30 % outliers every restart of the robust file, and a start from the true "
    "assignments, end at the same fixed point with one line lost (objective -1154.5994 both, "
    "measured apart from this script): with nu = 4 and a shared beta that is the model's "
    "optimum, not a failed start; a smaller nu was not tried."
)


def fit(model, X, y, **kw):
    t = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", pyro_moe.ConvergenceWarning)
        res = pyro_moe.fit(model, X, y, experts=2, seed=0, **kw)
    return res, time.perf_counter() - t


def line_error_sd(res, W) -> float:
    """max |m - w| / sd over both experts' weights, experts matched by slope order."""
    order = np.argsort(res.mean[:, 0].numpy())
    sd = res.cov.diagonal(dim1=-2, dim2=-1).sqrt().numpy()[order]
    return float((np.abs(res.mean.numpy()[order] - W[np.argsort(W[:, 0])]) / sd).max())


def against_nuts(res, nuts) -> dict:
    sd = nuts.cov.diagonal(dim1=-2, dim2=-1).sqrt()
    ratio = res.cov.diagonal(dim1=-2, dim2=-1).sqrt() / sd
    return {
        "max_mean_err_nuts_sd": float(((res.mean - nuts.mean).abs() / sd).max()),
        "sd_ratio": [float(ratio.min()), float(ratio.max())],
    }


def held_out(p, y) -> float:
    p = np.clip(p, 1e-300, 1 - 1e-16)
    return float(np.mean(y * np.log(p) + (1 - y) * np.log1p(-p)))


def engines(model, X, y, Xt=None, yt=None, nuts_kw=None) -> dict:
    out = {}
    cavi, t = fit(model, X, y)
    svi, t_svi = fit(model, X, y, method="svi")
    nuts, t_nuts = fit(model, X, y, method="nuts", **(nuts_kw or {}))
    for name, res, secs in (("cavi", cavi, t), ("svi", svi, t_svi), ("nuts", nuts, t_nuts)):
        row = {"seconds": secs, "iterations": res.iterations}
        if name != "nuts":
            row.update(objective=res.objective, converged=res.converged, **against_nuts(res, nuts))
        else:
            row.update(
                split_rhat_max=nuts.draws.info["split_rhat_max"],
                divergences=int(nuts.draws.diverging.sum()),
                target=nuts.draws.info["target"],
            )
        if Xt is not None:
            row["held_out_per_point"] = float(res.predict(Xt, draws=500).log_prob(yt).mean())
        out[name] = row
    return out


def main() -> None:
    print("load average", os.getloadavg(), flush=True)
    robust = []
    for share in (0.1, 0.2, 0.3):
        X, y, W, _ = outlier_lines(400, share=share, seed=0)
        row = {"share": share}
        for model in ("robust_experts", "mixture_of_experts"):
            res, secs = fit(model, X, y)
            row[model] = {"line_error_sd": line_error_sd(res, W), "seconds": secs}
        robust.append(row)
        print(json.dumps(row), flush=True)
    from sklearn.linear_model import LogisticRegression

    X, y, _ = gated_logistic(300, seed=0)
    Xt, yt, _ = gated_logistic(600, seed=1)
    logistic = engines("logistic_experts", X, y, Xt, yt, dict(max_iter=300, warmup=200, chains=2))
    logistic["logistic_regression"] = {
        "held_out_per_point": held_out(LogisticRegression().fit(X, y).predict_proba(Xt)[:, 1], yt)
    }
    logistic["null"] = {"held_out_per_point": held_out(np.full(len(yt), y.mean()), yt)}
    print(json.dumps(logistic), flush=True)
    X, y, _, _ = outlier_lines(60, share=0.2, seed=1)
    robust_engines = engines(
        "robust_experts", X, y, nuts_kw=dict(max_iter=200, warmup=200, chains=2)
    )
    print(json.dumps(robust_engines), flush=True)
    load = os.getloadavg()
    OUT.mkdir(exist_ok=True)
    result = {
        "machine": machine(),
        "load_average_end": load,
        "robust_vs_gaussian": robust,
        "logistic": logistic,
        "robust_engines": robust_engines,
    }
    (OUT / "robust_logistic.json").write_text(json.dumps(result, indent=2) + "\n")
    L = [
        "# Robust and logistic experts in closed form",
        "",
        "`OMP_NUM_THREADS=1 .venv/bin/python benchmarks/robust_logistic.py`; a shared machine "
        f"(2 cores, several jobs; load average at the end {load[0]:.1f}): seconds are noisy.",
        "",
        "## Robust vs Gaussian experts on gross outliers (N = 400, CAVI, defaults)",
        "",
        "| outliers | robust: max line error (posterior sd) | s | Gaussian: max line error (sd) | s |",
        "| --- | --- | --- | --- | --- |",
    ]
    for r in robust:
        a, b = r["robust_experts"], r["mixture_of_experts"]
        L.append(
            f"| {r['share']:.0%} | {a['line_error_sd']:.2f} | {a['seconds']:.1f} | "
            f"{b['line_error_sd']:.3g} | {b['seconds']:.1f} |"
        )

    def table(rows, title, held):
        L.extend(["", title, ""])
        head = "| engine | objective | max mean err (NUTS sd) | sd / NUTS sd | seconds |"
        L.append(head + (" held-out log-lik / point |" if held else ""))
        L.append("| --- | --- | --- | --- | --- |" + (" --- |" if held else ""))
        for name in ("cavi", "svi", "nuts"):
            r = rows[name]
            obj = f"{r['objective']:.3f}" if "objective" in r else "–"
            err = f"{r['max_mean_err_nuts_sd']:.3f}" if "objective" in r else "–"
            ratio = (
                f"{r['sd_ratio'][0]:.2f}–{r['sd_ratio'][1]:.2f}"
                if "objective" in r
                else (f"R-hat {r['split_rhat_max']:.3f}, {r['divergences']} div.")
            )
            line = f"| {name} | {obj} | {err} | {ratio} | {r['seconds']:.1f} |"
            L.append(line + (f" {r['held_out_per_point']:.4f} |" if held else ""))
        if held:
            for name in ("logistic_regression", "null"):
                L.append(f"| {name} | – | – | – | – | {rows[name]['held_out_per_point']:.4f} |")

    table(logistic, "## Logistic experts (N = 300 fitted, 600 held out)", True)
    table(
        robust_engines,
        "## Robust experts, CAVI vs natural SVI vs NUTS (N = 60, 20 % outliers)",
        False,
    )
    L.append("")
    L.append(
        "CAVI's and SVI's logistic objective is the Jaakkola-Jordan lower bound of the ELBO; "
        "NUTS holds the hyperparameters and the gate at CAVI's values."
    )
    L.extend(["", NOTE])
    (OUT / "robust_logistic.md").write_text("\n".join(L) + "\n")


if __name__ == "__main__":
    main()
