"""Conjugate hyperpriors found from the model file: CAVI's derived updates
beside natural-gradient SVI and NUTS.

Three files, each a built-in file with one conjugate edit CAVI used to refuse or
point-estimate (K = 2, N = 1000 points of two linear regimes in x, X = [x, 1]):

* ARD: ``tests/model_files/ard.py`` (alpha_kj ~ Gamma(1, 1) per expert and feature,
  w_kj ~ N(w0_kj, 1/alpha_kj); the gated mixture of experts);
* hierarchical w0: ``tests/model_files/hierarchical_mean.py`` (w0_k ~ N(m0, 2^2 I),
  w_k ~ N(w0_k, A); the mixture of models);
* Gamma beta: ``models/mixture_of_models.py`` with beta_k ~ Gamma(2, 0.5), one per expert.

For each: CAVI and natural SVI (``method="svi"``, its defaults) objectives and seconds per
fit; NUTS (2 chains x 300 draws after 300 warm-up, at CAVI's hyperparameters): the largest
|mean - NUTS mean| / NUTS sd and the range of sd / NUTS sd over the weights w and over the
hyperprior site (alpha, w0 or beta), for CAVI and SVI.

Writes benchmarks/results/conjugate_priors.{json,md}.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/conjugate_priors.py
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from run import machine  # benchmarks/run.py: one description of the machine

import pyro_moe

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from conftest import ARD, ARD_GUIDE, GAMMA_PRIOR_EDIT, WEIGHTS, WEIGHTS_GUIDE  # noqa: E402

OUT = Path(__file__).resolve().parent / "results"
N = 1000
NUTS = dict(chains=2, warmup=300, max_iter=300)
if os.environ.get("CONJ_QUICK"):  # a smoke run of the script itself
    NUTS = dict(chains=2, warmup=30, max_iter=30)
GAMMA_BETA = ("    return None\n", "    return dist.Gamma(config.const(2.0), config.const(0.5))\n")


def regimes(n: int = N, seed: int = 0):
    """y = 1 + 2x (x < 0), -1 + 0.5x (x >= 0), noise sd 0.1; X = [x, 1]."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, n)
    y = np.where(x < 0, 1 + 2 * x, -1 + 0.5 * x) + 0.1 * rng.normal(size=n)
    return np.c_[x, np.ones(n)], y


def q_moments(fit, site: str):
    """(mean, sd) of the variational q of ``site``: w from q(W), a hyperprior site from its
    derived q (closed form) or, for beta, q(beta) = Gamma(a, b)."""
    if site == "w":
        return fit.mean, fit.cov.diagonal(dim1=-2, dim2=-1).sqrt()
    if site == "noise_precision":
        a, b = fit.noise_shape, fit.noise_rate
        return a / b, a.sqrt() / b
    p = fit.posterior.site_params[site]
    if "shape" in p:
        return p["shape"] / p["rate"], p["shape"].sqrt() / p["rate"]
    return p["loc"], p["cov"].diagonal().sqrt().reshape(p["loc"].shape)


def nuts_moments(nuts, site: str):
    if site == "w":
        return nuts.mean, nuts.cov.diagonal(dim1=-2, dim2=-1).sqrt()
    if site == "noise_precision":
        d = nuts.draws.beta.reshape(-1, *nuts.draws.beta.shape[2:])
    else:
        d = nuts.posterior.site_draws[site]
    return d.mean(0), d.std(0)


def compare(fit, nuts, site: str) -> dict:
    m, s = q_moments(fit, site)
    mn, sn = nuts_moments(nuts, site)
    m, s = m.reshape(mn.shape), s.reshape(sn.shape)
    return {
        "max_mean_err_sd": float(((m - mn).abs() / sn).max()),
        "sd_ratio": [float((s / sn).min()), float((s / sn).max())],
    }


def timed(path, X, y, **kw):
    t = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", pyro_moe.ConvergenceWarning)
        fit = pyro_moe.fit(path, X, y, experts=2, **kw)
    return fit, time.perf_counter() - t


def main() -> None:
    torch.set_num_threads(1)
    X, y = regimes()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        gamma = Path(tmp) / "gamma_beta.py"
        text = (ROOT / "models" / "mixture_of_models.py").read_text()
        assert GAMMA_PRIOR_EDIT[0] in text
        gamma.write_text(text.replace(*GAMMA_BETA))
        ard_mm = Path(tmp) / "ard_models.py"
        text_mm = text.replace(WEIGHTS, ARD).replace(WEIGHTS_GUIDE, ARD_GUIDE)
        ard_mm.write_text(text_mm)
        files = {
            "ARD, gated experts (tests/model_files/ard.py)": (
                ROOT / "tests/model_files/ard.py",
                "alpha",
                {},
                "mixture_of_experts",
            ),
            "ARD, mixture of models": (ard_mm, "alpha", {}, "mixture_of_models"),
            "hierarchical w0": (
                ROOT / "tests/model_files/hierarchical_mean.py",
                "w0",
                {},
                "mixture_of_models",
            ),
            "Gamma beta_k (2, 0.5)": (
                gamma,
                "noise_precision",
                {"per_expert_noise": True},
                "mixture_of_models",
            ),
        }
        for name, (path, site, kw, base) in files.items():
            _, t_base = timed(base, X, y, n_init=1, **kw)  # the unedited file, same data
            cavi, t_cavi = timed(path, X, y, n_init=1, **kw)
            _, t_cavi2 = timed(path, X, y, n_init=1, **kw)  # read_model kept: a refit
            svi, t_svi = timed(path, X, y, n_init=1, method="svi", **kw)
            nuts, t_nuts = timed(path, X, y, n_init=1, method="nuts", hyper_from=cavi, **NUTS, **kw)
            row = {
                "file": name,
                "site": site,
                "cavi": {
                    "objective": cavi.objective,
                    "iterations": cavi.iterations,
                    "converged": cavi.converged,
                    "seconds": t_cavi,
                    "seconds_refit": t_cavi2,
                    "seconds_built_in_file": t_base,
                    "w": compare(cavi, nuts, "w"),
                    site: compare(cavi, nuts, site),
                },
                "svi": {
                    "objective": svi.objective,
                    "steps": svi.iterations,
                    "steps_by_site": svi.info.get("steps"),
                    "seconds": t_svi,
                    "w": compare(svi, nuts, "w"),
                    site: compare(svi, nuts, site),
                },
                "nuts": {
                    "seconds": t_nuts,
                    "split_rhat_max": nuts.draws.info["split_rhat_max"],
                    "divergences": int(nuts.draws.diverging.sum()),
                    "sites": nuts.draws.info["sites"],
                },
                "cavi_minus_svi": cavi.objective - svi.objective,
            }
            rows.append(row)
            print(json.dumps(row, indent=1), flush=True)
    OUT.mkdir(exist_ok=True)
    info = {"machine": machine(), "loadavg": os.getloadavg(), "N": N, "nuts": NUTS}
    (OUT / "conjugate_priors.json").write_text(json.dumps({**info, "rows": rows}, indent=2) + "\n")
    lines = [
        "# Conjugate hyperpriors found from the model file: CAVI, natural SVI, NUTS",
        "",
        f"Machine: {machine()}; load average {os.getloadavg()[0]:.1f} (shared machine: "
        f"seconds are noisy). N = {N}, K = 2; NUTS {NUTS['chains']} chains x "
        f"{NUTS['max_iter']} after {NUTS['warmup']} warm-up at CAVI's hyperparameters. "
        "Command: `OMP_NUM_THREADS=1 .venv/bin/python benchmarks/conjugate_priors.py`.",
        "",
        "Errors are |mean - NUTS mean| / NUTS sd (largest over the site's entries); sd ratio "
        "is sd / NUTS sd (range).",
        "",
        "| file | CAVI F | SVI F | CAVI - SVI | CAVI s (refit; unedited file) | SVI s | NUTS s | R-hat "
        "| CAVI w err | CAVI w sd ratio | CAVI site err | CAVI site sd ratio "
        "| SVI w err | SVI site err |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        c, s, n, site = r["cavi"], r["svi"], r["nuts"], r["site"]
        lines.append(
            f"| {r['file']} | {c['objective']:.4f} | {s['objective']:.4f} | "
            f"{r['cavi_minus_svi']:.1e} | {c['seconds']:.2f} ({c['seconds_refit']:.2f}; "
            f"{c['seconds_built_in_file']:.2f}) | "
            f"{s['seconds']:.2f} | {n['seconds']:.0f} | {n['split_rhat_max']:.3f} | "
            f"{c['w']['max_mean_err_sd']:.3f} | "
            f"{c['w']['sd_ratio'][0]:.2f}-{c['w']['sd_ratio'][1]:.2f} | "
            f"{c[site]['max_mean_err_sd']:.3f} ({site}) | "
            f"{c[site]['sd_ratio'][0]:.2f}-{c[site]['sd_ratio'][1]:.2f} | "
            f"{s['w']['max_mean_err_sd']:.3f} | {s[site]['max_mean_err_sd']:.3f} |"
        )
    (OUT / "conjugate_priors.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
