"""The exact posterior beside the variational ones: NUTS, CAVI and SVI on the same model file.

Two data sets: the study's ``2.csv`` (read in place from ../shared/data/emprior; skipped when
absent), two circles, and a 1000-point sample of a 128x128 image of three circles (two
concentric). Mixture of models, its defaults (beta learned by CAVI and SVI; NUTS holds it
at CAVI's value). NUTS: 4 chains x 1000 draws after 500 warm-up iterations, one after
another on one core. Reported per data set: NUTS's wall time, the largest rank-normalised
R-hat and the smallest bulk ESS over the expert weights (arviz), divergences; for CAVI and
SVI the largest |mean - NUTS mean| / NUTS sd and the range of sd(VI) / sd(NUTS) over the
weights, and PSIS k-hat. Writes benchmarks/results/nuts.{json,md}.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/nuts.py
"""

from __future__ import annotations

import json
import os
import time
import warnings
from pathlib import Path

import arviz as az
import numpy as np
import torch
from run import machine  # benchmarks/run.py: one description of the machine

import pyro_moe
from pyro_moe import diagnostics as D
from pyro_moe.shapes import circle_image, emprior_dir, load_emprior_points

OUT = Path(__file__).resolve().parent / "results"
NUTS = dict(method="nuts", chains=4, max_iter=1000, warmup=500)


def data_sets():
    d = emprior_dir()
    if d is not None and (d / "2.csv").is_file():
        yield "2.csv (N = 200)", load_emprior_points(2), 2, {}
    else:
        print("skipped 2.csv: the study's data folder is absent")
    image, _ = circle_image([(64, 64), (64, 64), (40, 90)], [20, 45, 12], (128, 128))
    yield "circle image (N = 1000)", image, 3, {"max_points": 1000}


def fit(source, K: int, extra: dict, **options):
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", pyro_moe.ConvergenceWarning)
        r = pyro_moe.fit_circles(source, experts=K, **extra, **options)
    return r, time.perf_counter() - t0


def main() -> None:
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    rows = []
    for name, source, K, extra in data_sets():
        cavi, t_cavi = fit(source, K, extra)
        svi, t_svi = fit(source, K, extra, method="svi")
        nuts, t_nuts = fit(source, K, extra, **NUTS)
        idata = D.to_inference_data(nuts)
        rhat = float(az.rhat(idata, var_names=["w"])["w"].max())
        ess = float(az.ess(idata, var_names=["w"], method="bulk")["w"].min())
        mean = nuts.mean.numpy()
        sd = nuts.cov.diagonal(dim1=-2, dim2=-1).sqrt().numpy()
        row = {
            "data": name,
            "experts": K,
            "points": len(nuts.y),
            "nuts_seconds": t_nuts,
            "nuts_sampling_seconds": nuts.draws.info["sampling_seconds"],
            "chains_x_draws": list(nuts.draws.w.shape[:2]),
            "warmup": NUTS["warmup"],
            "rhat_max": rhat,
            "ess_bulk_min": ess,
            "divergences": int(nuts.draws.diverging.sum()),
            "mean_tree_depth": float(nuts.draws.tree_depth.double().mean()),
            "relabelled_draws": nuts.draws.relabelled,
        }
        for label, r, t in (("cavi", cavi, t_cavi), ("svi", svi, t_svi)):
            r = r.aligned_to(nuts)
            vi_sd = r.cov.diagonal(dim1=-2, dim2=-1).sqrt().numpy()
            z = np.abs(r.mean.numpy() - mean) / sd
            ratio = vi_sd / sd
            row[label] = {
                "seconds": t,
                "max_mean_gap_in_nuts_sd": float(z.max()),
                "sd_ratio_min": float(ratio.min()),
                "sd_ratio_max": float(ratio.max()),
                "sd_ratio": ratio.round(3).tolist(),
                "khat": D.psis_khat(r),
                "noise_precision": float(r.noise_precision),
            }
        rows.append(row)
        print(json.dumps(row, indent=1), flush=True)
    OUT.mkdir(exist_ok=True)
    result = {"machine": machine(), "nuts_options": NUTS, "rows": rows}
    (OUT / "nuts.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        "# NUTS beside CAVI and SVI (benchmarks/nuts.py)",
        "",
        f"Machine: {machine()}. NUTS: {NUTS['chains']} chains x {NUTS['max_iter']} draws after "
        f"{NUTS['warmup']} warm-up iterations, one core, hyperparameters fixed at CAVI's.",
        "",
        "| data | K | NUTS wall (s) | max R-hat | min bulk ESS | divergences | "
        "CAVI max mean gap (NUTS sd) | CAVI sd ratio | CAVI k-hat | "
        "SVI max mean gap (NUTS sd) | SVI sd ratio | SVI k-hat |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        c, s = r["cavi"], r["svi"]
        lines.append(
            f"| {r['data']} | {r['experts']} | {r['nuts_seconds']:.0f} | {r['rhat_max']:.4f} | "
            f"{r['ess_bulk_min']:.0f} | {r['divergences']} | "
            f"{c['max_mean_gap_in_nuts_sd']:.2f} | {c['sd_ratio_min']:.2f}–{c['sd_ratio_max']:.2f} | "
            f"{c['khat']:.2f} | {s['max_mean_gap_in_nuts_sd']:.2f} | "
            f"{s['sd_ratio_min']:.2f}–{s['sd_ratio_max']:.2f} | {s['khat']:.2f} |"
        )
    (OUT / "nuts.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
