"""The exact posterior beside the variational ones: NUTS, CAVI and SVI on the same model file.

Two data sets: the study's ``2.csv`` (read in place from ../shared/data/emprior; skipped when
absent), two circles, and a 1000-point sample (of 1170 edge points) of a 256x256 image of
three circles (two concentric). ``fit_circles``'s defaults (one beta per circle, learned by
CAVI and SVI, the search over fixed points; NUTS holds beta at the value of the same CAVI
fit). NUTS: 4 chains x 1000 draws after the default warm-up, one after another on one
core, ``--repeat`` times (the machine is shared: wall time counts other processes' load,
CPU time, :func:`time.process_time`, is this process's own, the "one core" figure).
Reported per data set: NUTS's wall and CPU seconds (each repeat), the largest
rank-normalised R-hat and the smallest bulk ESS over the expert weights (arviz),
divergences; for CAVI and SVI the largest |mean - NUTS mean| / NUTS sd and the range of
sd(VI) / sd(NUTS) over the weights, and PSIS k-hat. Writes benchmarks/results/nuts.{json,md}.

``--only kinds`` (issue 26): one row per kind of edited model file
(``tests/model_files/*.py``: an edited mean, ARD, a horseshoe, Student-t, Bernoulli experts,
a linear gate -- fixed and sampled --, a gate prior) on two linear regimes (N = 150): what
CAVI and SVI do with the file, NUTS's seconds (2 chains x 300 draws after 150 warm-up, at
each variational fit's hyperparameters), its largest split R-hat over every sampled site,
divergences, and each fitting engine's largest |mean - NUTS mean| / NUTS sd. Writes
benchmarks/results/nuts_kinds.json; nuts.md is rebuilt from both JSON files.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/nuts.py [--repeat 2] [--only circles|kinds]
"""

from __future__ import annotations

import argparse
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
NUTS = dict(method="nuts", chains=4, max_iter=1000)
FILES = Path(__file__).resolve().parent.parent / "tests" / "model_files"
KIND_NUTS = dict(method="nuts", chains=2, warmup=150, max_iter=300, n_init=1, seed=0)
KIND_SVI = dict(method="svi", n_init=1, seed=0, max_iter=1500)
#: (row label, model file, NUTS's extra options)
KINDS = [
    ("edited mean (w^T x)^3", "mean_cubed", {}),
    ("ARD Gamma precision per expert and feature", "ard", {}),
    ("horseshoe (tau, local scales)", "horseshoe", {}),
    ("Student-t likelihood", "student_t", {}),
    ("Bernoulli experts", "bernoulli", {}),
    ("linear gate (gate fixed)", "linear_gate", {}),
    ("linear gate (gate sampled)", "linear_gate", {"gate": "sampled"}),
    ("gate prior (gate fixed)", "gate_prior", {}),
]


def data_sets():
    d = emprior_dir()
    if d is not None and (d / "2.csv").is_file():
        yield "2.csv (N = 200)", load_emprior_points(2), 2, {}
    else:
        print("skipped 2.csv: the study's data folder is absent")
    image, _ = circle_image([(128, 128), (128, 128), (80, 180)], [40, 90, 24], (256, 256))
    yield "circle image (N = 1000)", image, 3, {"max_points": 1000}


def fit(source, K: int, extra: dict, **options):
    """The fit, its wall and CPU seconds."""
    t0, c0 = time.perf_counter(), time.process_time()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", pyro_moe.ConvergenceWarning)
        r = pyro_moe.fit_circles(source, experts=K, **extra, **options)
    return r, time.perf_counter() - t0, time.process_time() - c0


def diagnosis() -> dict:
    """Issue 18's "CAVI means 132 NUTS sd away" on three circles: the earlier 128x128 scene,
    one shared beta (the curve functions' default then). The user's CAVI (with the search)
    against the CAVI fit without it, and NUTS (2 x 500 draws) with its CAVI run as the
    user's (``search=True``) and as it was (``search=False``), each against the user's."""
    image, _ = circle_image([(64, 64), (64, 64), (40, 90)], [20, 45, 12], (128, 128))
    extra = {"max_points": 1000, "per_expert_noise": False}
    cavi, _, _ = fit(image, 3, extra)
    plain, _, _ = fit(image, 3, extra, search=False)
    out = {
        "scene": "128x128, r = 20 / 45 / 12, one shared beta",
        "points": len(cavi.y),
        "cavi_objective": cavi.objective,
        "cavi_beta": float(cavi.noise_precision.mean()),
        "search_accepted": cavi.search["accepted"],
        "plain_objective": plain.objective,
        "plain_beta": float(plain.noise_precision.mean()),
    }
    for search in (True, False):
        nuts, wall, _ = fit(image, 3, extra, search=search, method="nuts", chains=2, max_iter=500)
        sd = nuts.cov.diagonal(dim1=-2, dim2=-1).sqrt()
        gap = (cavi.aligned_to(nuts).mean - nuts.mean).abs() / sd
        own = plain if not search else cavi  # the CAVI fit NUTS ran inside
        gap_own = (own.aligned_to(nuts).mean - nuts.mean).abs() / sd
        out[f"nuts_search_{search}"] = {
            "cavi_objective_inside": nuts.draws.info["cavi_objective"],
            "beta": float(nuts.noise_precision.mean()),
            "max_mean_gap_in_nuts_sd": float(gap.max()),
            "own_cavi_max_mean_gap_in_nuts_sd": float(gap_own.max()),
            "relabelled_draws": nuts.draws.relabelled,
            "seconds": wall,
        }
    return out


def kind_data(kind: str, n: int = 150):
    """Two linear regimes in x (X = [x, 1]) split at x = 0; y > 0 for the Bernoulli file."""
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, n)
    y = np.where(x < 0, 1 + 2 * x, -1 + 0.5 * x) + 0.1 * rng.normal(size=n)
    return np.c_[x, np.ones(n)], (y > 0).astype(float) if kind == "bernoulli" else y


def kinds() -> dict:
    """One row per kind of edited model file (module docstring)."""
    rows = []
    for label, kind, extra in KINDS:
        X, y = kind_data(kind)
        path = str(FILES / f"{kind}.py")
        row = {
            "kind": label,
            "file": str(Path(path).relative_to(FILES.parent.parent)),
            "points": len(y),
        }
        fits = {}
        for method, options in (("cavi", {"n_init": 1, "seed": 0}), ("svi", KIND_SVI)):
            t0 = time.perf_counter()
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", pyro_moe.ConvergenceWarning)
                    fits[method] = pyro_moe.fit(path, X, y, experts=2, **{"method": method,
                                                **options})  # fmt: skip
                how = fits[method].restarts[0].get("optimizer", method)
                row[method] = {"fits": True, "seconds": time.perf_counter() - t0, "how": how}
            except pyro_moe.NonConjugateError as e:
                site = str(e).split("site '")[1].split("'")[0] if "site '" in str(e) else "?"
                row[method] = {"fits": False, "refused_site": site}
        for method, vi in fits.items():
            t0, c0 = time.perf_counter(), time.process_time()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", pyro_moe.ConvergenceWarning)
                nuts = pyro_moe.fit(path, X, y, experts=2, hyper_from=vi, **KIND_NUTS, **extra)
            info = nuts.draws.info
            w = nuts.draws.w.reshape(-1, *nuts.draws.w.shape[2:])
            gap = float(((vi.mean - w.mean(0)).abs() / w.std(0)).max())
            row[method].update(
                nuts_seconds=time.perf_counter() - t0,
                nuts_cpu_seconds=time.process_time() - c0,
                sites=info["sites"],
                target=info["target"],
                gate=info["gate"],
                rhat_max=info["split_rhat_max"],
                divergences=int(nuts.draws.diverging.sum()),
                mean_leapfrog_steps=float(nuts.draws.n_steps.double().mean()),
                max_mean_gap_in_nuts_sd=gap,
            )
        row["load_average"] = os.getloadavg()[0]
        rows.append(row)
        print(json.dumps(row, indent=1), flush=True)
    return {"machine": machine(), "nuts_options": KIND_NUTS, "svi_options": KIND_SVI,
            "rows": rows}  # fmt: skip


def kinds_markdown(result: dict) -> list[str]:
    lines = [
        "",
        "## NUTS on edited model files (issue 26; `--only kinds`)",
        "",
        f"Machine: {result['machine']}. Two linear regimes, N = 150, K = 2; NUTS "
        f"{result['nuts_options']['chains']} chains x {result['nuts_options']['max_iter']} "
        f"draws after {result['nuts_options']['warmup']} warm-up at each variational fit's "
        f"hyperparameters (`hyper_from`); SVI {result['svi_options']['max_iter']} steps. "
        "Gap: the largest |VI mean - NUTS mean| / NUTS sd over the weights. The machine was "
        "shared (load average in brackets): compare seconds within the table only.",
        "",
        "| kind | CAVI | SVI | NUTS target | sites sampled | NUTS s (at CAVI's / SVI's h) "
        "| max split R-hat | divergences | CAVI gap (sd) | SVI gap (sd) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]

    def engine(e):
        return e.get("how", "fits") if e["fits"] else f"refuses '{e['refused_site']}'"

    for r in result["rows"]:
        ran = [r[m] for m in ("cavi", "svi") if r[m]["fits"]]
        secs = " / ".join(f"{e['nuts_seconds']:.0f}" for e in ran)
        gaps = {m: (f"{r[m]['max_mean_gap_in_nuts_sd']:.2f}" if r[m]["fits"] else "—")
                for m in ("cavi", "svi")}  # fmt: skip
        lines.append(
            f"| {r['kind']} | {engine(r['cavi'])} | {engine(r['svi'])} | {ran[0]['target']} | "
            f"{', '.join(ran[0]['sites'])} | {secs} [{r['load_average']:.1f}] | "
            f"{max(e['rhat_max'] for e in ran):.4f} | {sum(e['divergences'] for e in ran)} | "
            f"{gaps['cavi']} | {gaps['svi']} |"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=2, help="NUTS runs per data set")
    parser.add_argument("--only", choices=("all", "circles", "kinds"), default="all")
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    OUT.mkdir(exist_ok=True)
    if args.only in ("all", "kinds"):
        (OUT / "nuts_kinds.json").write_text(json.dumps(kinds(), indent=2) + "\n")
    if args.only == "kinds":
        write_markdown(json.loads((OUT / "nuts.json").read_text()))
        return
    rows = []
    for name, source, K, extra in data_sets():
        cavi, t_cavi, _ = fit(source, K, extra)
        svi, t_svi, _ = fit(source, K, extra, method="svi")
        walls, cpus = [], []
        for _ in range(args.repeat):  # the same seed: the same draws, only the time varies
            nuts, wall, cpu = fit(source, K, extra, **NUTS)
            walls.append(wall)
            cpus.append(cpu)
        idata = D.to_inference_data(nuts)
        rhat = float(az.rhat(idata, var_names=["w"])["w"].max())
        ess = float(az.ess(idata, var_names=["w"], method="bulk")["w"].min())
        mean = nuts.mean.numpy()
        sd = nuts.cov.diagonal(dim1=-2, dim2=-1).sqrt().numpy()
        row = {
            "data": name,
            "experts": K,
            "points": len(nuts.y),
            "nuts_seconds": walls,
            "nuts_cpu_seconds": cpus,
            "load_average": os.getloadavg()[0],
            "nuts_sampling_seconds": nuts.draws.info["sampling_seconds"],
            "cavi_objective": cavi.objective,
            "nuts_cavi_objective": nuts.draws.info["cavi_objective"],
            "chains_x_draws": list(nuts.draws.w.shape[:2]),
            "warmup": nuts.draws.info["warmup"],
            "gradient": nuts.draws.info["gradient"],
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
                "noise_precision": r.noise_precision.tolist(),
            }
        rows.append(row)
        print(json.dumps(row, indent=1), flush=True)
    diag = diagnosis()
    print(json.dumps(diag, indent=1), flush=True)
    result = {
        "machine": machine(),
        "nuts_options": NUTS,
        "repeat": args.repeat,
        "rows": rows,
        "diagnosis": diag,
    }
    (OUT / "nuts.json").write_text(json.dumps(result, indent=2) + "\n")
    write_markdown(result)


def write_markdown(result: dict) -> None:
    """nuts.md from nuts.json's rows (``result``) and nuts_kinds.json where present."""
    NUTS = result["nuts_options"]
    rows, diag, repeat = result["rows"], result["diagnosis"], result["repeat"]
    lines = [
        "# NUTS beside CAVI and SVI (benchmarks/nuts.py)",
        "",
        f"Machine: {machine()}. NUTS: {NUTS['chains']} chains x {NUTS['max_iter']} draws after "
        f"{rows[0]['warmup'] if rows else '?'} warm-up iterations, one core, hyperparameters "
        f"fixed at CAVI's; {repeat} runs each (wall and CPU seconds, min-max; the load "
        "average of the shared machine after the runs in brackets).",
        "",
        "| data | K | N | NUTS wall (s) | NUTS CPU (s) | max R-hat | min bulk ESS | divergences | "
        "CAVI max mean gap (NUTS sd) | CAVI sd ratio | CAVI k-hat | "
        "SVI max mean gap (NUTS sd) | SVI sd ratio | SVI k-hat |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]

    def spread(v):
        return f"{min(v):.0f}–{max(v):.0f}" if len(v) > 1 else f"{v[0]:.0f}"

    for r in rows:
        c, s = r["cavi"], r["svi"]
        lines.append(
            f"| {r['data']} | {r['experts']} | {r['points']} | {spread(r['nuts_seconds'])} "
            f"[{r['load_average']:.1f}] | {spread(r['nuts_cpu_seconds'])} | {r['rhat_max']:.4f} | "
            f"{r['ess_bulk_min']:.0f} | {r['divergences']} | "
            f"{c['max_mean_gap_in_nuts_sd']:.2f} | {c['sd_ratio_min']:.2f}–{c['sd_ratio_max']:.2f} | "
            f"{c['khat']:.2f} | {s['max_mean_gap_in_nuts_sd']:.2f} | "
            f"{s['sd_ratio_min']:.2f}–{s['sd_ratio_max']:.2f} | {s['khat']:.2f} |"
        )
    t, f = diag["nuts_search_True"], diag["nuts_search_False"]
    lines += [
        "",
        f"Diagnosis of the earlier discrepancy ({diag['scene']}, N = {diag['points']}): the "
        f"user's CAVI (with the search, {diag['search_accepted']} move kept) reaches "
        f"F = {diag['cavi_objective']:.1f} with beta = {diag['cavi_beta']:.0f}; without the "
        f"search F = {diag['plain_objective']:.1f}, beta = {diag['plain_beta']:.0f}. NUTS "
        "(2 x 500 draws) whose CAVI runs the search as the user's fit does: its CAVI's "
        f"F = {t['cavi_objective_inside']:.1f}, the user's CAVI means within "
        f"{t['max_mean_gap_in_nuts_sd']:.2f} NUTS sd, {t['relabelled_draws']} draws relabelled; "
        f"with its CAVI run without the search (as before): F = {f['cavi_objective_inside']:.1f}, "
        f"beta = {f['beta']:.0f}, {f['relabelled_draws']} draws relabelled, the means of that "
        f"CAVI fit up to {f['own_cavi_max_mean_gap_in_nuts_sd']:.0f} NUTS sd away and the "
        f"user's CAVI means up to {f['max_mean_gap_in_nuts_sd']:.2f} NUTS sd.",
    ]
    if (OUT / "nuts_kinds.json").is_file():
        lines += kinds_markdown(json.loads((OUT / "nuts_kinds.json").read_text()))
    (OUT / "nuts.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
