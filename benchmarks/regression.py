"""Mixtures of experts on real regression data: held-out log predictive density.

Data: :mod:`pyro_moe.datasets` (mcycle, faithful, engel, and flexmix's NPreg simulated as
published). Design: the input standardized on the training fold, then [1, z, z^2, z^3]
(the same for every mixture of experts). Score: 5-fold cross-validation (one shuffled
``KFold(5, random_state=0)`` per data set, the same folds for every method), the mean over
the held-out points of log p(y_i | x_i, training fold) (``Prediction.log_prob``).

Two studies, each written to ``benchmarks/results/``:

* ``gates``: the model file's gate and gate prior at K = 3, CAVI, one noise precision per
  expert: the study's MLP gate softmax(V1^T sigma(V2^T x)) and a linear softmax gate
  softmax(V^T x), each without a prior and with p(V) = N(0, s^2) on its weights for
  several s (variants of ``models/mixture_of_experts.py`` written to a temporary folder);
  -> ``regression_gates.{json,md}``. This is how the defaults were chosen
  (``docs/regression.md``).
* ``compare`` (default): the built-in ``mixture_of_experts`` with its defaults, K chosen
  by :func:`pyro_moe.select_experts` on each training fold (CAVI and SVI), beside one
  Bayesian linear model (K = 1), scikit-learn's ``GaussianProcessRegressor`` (RBF + white
  noise, on z) and ``BayesianGaussianMixture``'s conditional p(y | x) (a mixture of 2-d
  Gaussians on (z, y), 5 components); -> ``regression.{json,md}``. The SVI rows use
  ``method="svi"`` with its defaults; each row also keeps the CPU seconds of every K's
  fit per fold (``seconds_by_k``).
* ``select``: :func:`pyro_moe.select_experts` with ``cv=5, loo=True`` on each whole data
  set (and ``npreg1000``, NPreg simulated with N = 1000): per K the objective,
  convergence, CPU seconds, 5-fold held-out lpd and PSIS-LOO; ->
  ``regression_selection.{json,md}``.

Times are this process's CPU seconds per fit on a shared, loaded machine
(``OMP_NUM_THREADS=1``; the load average is stored beside them).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/regression.py compare --methods cavi svi
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/regression.py gates --variants "mlp 3" "mlp none"
    .venv/bin/python benchmarks/regression.py table        # regression.md from regression.json
    .venv/bin/python benchmarks/regression.py gates-table  # regression_gates.md
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/regression.py select --methods cavi \\
        --data mcycle faithful engel npreg gagurine npreg1000

Both studies keep the rows already measured (by data set and method or variant) and add
or replace the ones they run, so a study can be run a data set at a time.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from run import machine  # benchmarks/run.py: one description of the machine
from scipy.special import logsumexp
from scipy.stats import norm
from sklearn.gaussian_process import GaussianProcessRegressor
from sklearn.gaussian_process.kernels import RBF, ConstantKernel, WhiteKernel
from sklearn.mixture import BayesianGaussianMixture
from sklearn.model_selection import KFold

import pyro_moe
from pyro_moe import datasets

OUT = Path(__file__).resolve().parent / "results"
MODEL = Path(pyro_moe.__file__).resolve().parent.parent / "models" / "mixture_of_experts.py"
DEGREE = 3


def load(name: str) -> tuple[np.ndarray, np.ndarray]:
    """A data set of :mod:`pyro_moe.datasets`, or ``npreg1000``: flexmix's NPreg simulated
    with N = 1000 (n = 500 per class), for fit times at N = 1000."""
    data = datasets.npreg(500) if name == "npreg1000" else datasets.load(name)
    return data.X, data.y


def design(x_train: np.ndarray, x: np.ndarray) -> np.ndarray:
    """[1, z, z^2, z^3] with z standardized by the training fold's mean and sd."""
    z = (x[:, 0] - x_train[:, 0].mean()) / x_train[:, 0].std()
    return np.column_stack([z**d for d in range(DEGREE + 1)])


def folds(y: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    return list(KFold(5, shuffle=True, random_state=0).split(y))


def lpd_moe(result, D_test: np.ndarray, y_test: np.ndarray) -> float:
    return float(result.predict(D_test).log_prob(torch.as_tensor(y_test)).mean())


# ---- the peers --------------------------------------------------------------------------
def gp_lpd(x_tr, y_tr, x_te, y_te) -> float:
    """GaussianProcessRegressor (C * RBF + White) on standardized x and y; the predictive
    density of y is N(mean, sd^2) mapped back to y's units."""
    mx, sx, my, sy = x_tr.mean(), x_tr.std(), y_tr.mean(), y_tr.std()
    kernel = ConstantKernel(1.0) * RBF(1.0) + WhiteKernel(0.1)
    gp = GaussianProcessRegressor(kernel, n_restarts_optimizer=2, random_state=0)
    gp.fit((x_tr - mx) / sx, (y_tr - my) / sy)
    m, s = gp.predict((x_te - mx) / sx, return_std=True)
    return float(np.mean(norm.logpdf(y_te, my + sy * m, sy * s)))


def bgm_lpd(x_tr, y_tr, x_te, y_te, components: int = 5) -> float:
    """BayesianGaussianMixture on (z, y) standardized; p(y | x) = p(x, y) / p(x), each a
    mixture of Gaussians in closed form (the conditional of each component, reweighted by
    its marginal density of x)."""
    mx, sx, my, sy = x_tr.mean(), x_tr.std(), y_tr.mean(), y_tr.std()
    Z = np.column_stack([(x_tr[:, 0] - mx) / sx, (y_tr - my) / sy])
    bgm = BayesianGaussianMixture(n_components=components, max_iter=1000, random_state=0)
    bgm.fit(Z)
    zx = (x_te[:, 0] - mx) / sx
    zy = (y_te - my) / sy
    mu, C, w = bgm.means_, bgm.covariances_, bgm.weights_
    sxx, sxy, syy = C[:, 0, 0], C[:, 0, 1], C[:, 1, 1]
    log_px = np.log(w) + norm.logpdf(zx[:, None], mu[:, 0], np.sqrt(sxx))  # (N, C)
    cond_m = mu[:, 1] + sxy / sxx * (zx[:, None] - mu[:, 0])
    cond_s = np.sqrt(syy - sxy**2 / sxx)
    log_pxy = log_px + norm.logpdf(zy[:, None], cond_m, cond_s)
    lp = logsumexp(log_pxy, 1) - logsumexp(log_px, 1) - np.log(sy)
    return float(np.mean(lp))


# ---- the gate study ---------------------------------------------------------------------
MLP = "return nn.Sequential(nn.Linear(features, hidden), nn.Sigmoid(), nn.Linear(hidden, experts))"
LINEAR = "return nn.Linear(features, experts)"


def gate_variant(folder: Path, gate: str, scale: float | None) -> Path:
    """A copy of the built-in model file with the given gate ("mlp" or "linear") and gate
    prior p(V) = N(0, scale^2) on its weights (None: no prior), with or without the noise
    expert. Fails when the model file no longer has the lines it edits."""
    text = MODEL.read_text()
    assert MLP in text, "the model file's make_gate is not the MLP gate"
    text = text.replace(MLP, MLP if gate == "mlp" else LINEAR)

    text, n = re.subn(r"    s = config\.gate_prior_scale\n", f"    s = {scale}\n", text)
    assert n == 1, "the model file's gate_prior has no 's = ...' line"
    path = folder / f"{gate}_{'none' if scale is None else str(scale).replace('.', 'p')}.py"
    path.write_text(text)
    return path


def fit_quiet(model, D, y, **kw):
    """The fit, its CPU seconds (this process's own: the machine is shared) and whether
    it warned that it did not converge."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        t = time.process_time()
        res = pyro_moe.fit(model, D, y, **kw)
        elapsed = time.process_time() - t
    unconverged = any("converge" in str(w.message) for w in caught)
    return res, elapsed, unconverged


def gates(
    names: list[str],
    variants: list[tuple[str, float | None]],
    experts: int = 3,
    per_expert_noise: bool = True,
    store: Path = OUT / "regression_gates.json",
):
    """Each variant on each data set (rows already in ``store`` are kept and not rerun),
    written after each row."""
    rows = json.loads(store.read_text()) if store.exists() else []
    noise = "per expert" if per_expert_noise else "shared"
    done = {(r["gate"], r["scale"], r["data"], r.get("noise", "per expert")) for r in rows}
    with tempfile.TemporaryDirectory() as tmp:
        for gate, scale in variants:
            path = gate_variant(Path(tmp), gate, scale)
            for name in names:
                if (gate, scale, name, noise) in done:
                    continue
                X, y = load(name)
                lpds, times, unconv = [], [], 0
                for tr, te in folds(y):
                    D_tr, D_te = design(X[tr], X[tr]), design(X[tr], X[te])
                    res, el, bad = fit_quiet(
                        path, D_tr, y[tr], experts=experts, per_expert_noise=per_expert_noise
                    )
                    lpds.append(lpd_moe(res, D_te, y[te]))
                    times.append(el)
                    unconv += bad
                row = dict(
                    gate=gate, scale=scale, noise=noise, data=name, experts=experts,
                    lpd=float(np.mean(lpds)), folds=lpds, seconds=times, unconverged=unconv,
                )  # fmt: skip
                rows.append(row)
                print(json.dumps({k: v for k, v in row.items() if k != "folds"}), flush=True)
                store.write_text(json.dumps(rows, indent=1))
    return rows


# ---- the comparison ---------------------------------------------------------------------
def compare(
    names: list[str],
    methods: list[str],
    max_experts: int = 4,
    store: Path = OUT / "regression.json",
) -> list[dict]:
    """Per data set and fold: the peers, K = 1, and the built-in model with its defaults,
    K chosen by select_experts on the training fold (per method). Rows are merged into
    ``store`` (regression.json; a row of the same data set and method replaced) after each
    data set."""
    rows = json.loads(store.read_text()) if store.exists() else []
    for name in names:
        X, y = load(name)
        out, per_k = {}, {}
        for tr, te in folds(y):
            D_tr, D_te = design(X[tr], X[tr]), design(X[tr], X[te])
            t = time.process_time()
            out.setdefault("GP (RBF + white)", []).append(
                (gp_lpd(X[tr], y[tr], X[te], y[te]), time.process_time() - t, None)
            )
            t = time.process_time()
            out.setdefault("BayesianGaussianMixture, conditional p(y \\| x)", []).append(
                (bgm_lpd(X[tr], y[tr], X[te], y[te]), time.process_time() - t, None)
            )
            res, el, _ = fit_quiet("mixture_of_experts", D_tr, y[tr], experts=1)
            out.setdefault("Bayesian linear model (K = 1)", []).append(
                (lpd_moe(res, D_te, y[te]), el, 1)
            )
            for method in methods:
                t = time.process_time()
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    sel = pyro_moe.select_experts(
                        "mixture_of_experts", D_tr, y[tr], max_experts=max_experts,
                        method=method,
                    )  # fmt: skip
                el = time.process_time() - t
                per_fit = el / len(sel.table)
                out.setdefault(
                    f"mixture_of_experts, {method.upper()}, K by select_experts", []
                ).append((lpd_moe(sel.result, D_te, y[te]), per_fit, sel.experts))
                per_k.setdefault(method, []).append(
                    {str(r["experts"]): r["seconds"] for r in sel.table}
                )
        for method, vals in out.items():
            lpd, sec, ks = zip(*vals, strict=True)
            rows = [r for r in rows if (r["data"], r["method"]) != (name, method)]
            rows.append(
                dict(data=name, method=method, lpd=float(np.mean(lpd)), folds=list(lpd),
                     seconds_per_fit=float(np.mean(sec)), experts=list(ks),
                     load=os.getloadavg()[0])
            )  # fmt: skip
            engine = next((m for m in per_k if f", {m.upper()}," in method), None)
            if engine is not None:  # CPU seconds of each K's fit (5 restarts), per fold
                rows[-1]["seconds_by_k"] = per_k[engine]
            print(json.dumps({k: v for k, v in rows[-1].items() if k != "folds"}), flush=True)
        store.write_text(json.dumps(rows, indent=1))
    return rows


# ---- choosing K on all the data ---------------------------------------------------------
def selection_study(
    names: list[str], method: str = "cavi", max_experts: int = 4, cv: int | None = 5
) -> list[dict]:
    """select_experts(cv=5, loo=True) on each whole data set (the design of the standardized
    input): per K the objective, convergence, CPU seconds of the fit (5 restarts), the
    5-fold held-out lpd and PSIS-LOO per point, and whether they agree. Rows merged into
    regression_selection.json by (data set, method)."""
    store = OUT / "regression_selection.json"
    rows = json.loads(store.read_text()) if store.exists() else []
    for name in names:
        X, y = load(name)
        D = design(X, X)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sel = pyro_moe.select_experts(
                "mixture_of_experts", D, y, max_experts=max_experts, cv=cv, loo=True,
                method=method,
            )  # fmt: skip
        rows = [r for r in rows if (r["data"], r.get("method")) != (name, method)]
        rows.append(
            dict(data=name, method=method, N=len(y), chosen=sel.experts, notes=sel.notes,
                 load=os.getloadavg()[0], table=[
                     {k: v for k, v in r.items() if k != "note"} | {"note": r["note"]}
                     for r in sel.table])
        )  # fmt: skip
        print(json.dumps(rows[-1]), flush=True)
        store.write_text(json.dumps(rows, indent=1))
    return rows


def selection_markdown(rows: list[dict]) -> str:
    """One table per data set: select_experts' rows with the held-out lpd and LOO."""
    out = []
    for r in rows:
        out += [
            f"### {r['data']} (N = {r['N']}, {r['method'].upper()}): K = {r['chosen']} chosen",
            "",
            "| K | objective | converged | CPU s (5 restarts) | 5-fold CV lpd | "
            "PSIS-LOO lpd | LOO − CV | LOO agrees | points with k > 0.7 |",
            "| --- |" + " ---: |" * 6 + " --- | ---: |",
        ]
        for t in r["table"]:
            mark = "*" if t["experts"] == r["chosen"] else ""
            if "cv_lpd" in t:
                paired = f" ± {t['loo_se']:.3f}" if "loo_se" in t else ""
                cv = (
                    f"{t['cv_lpd']:.3f} ± {t['cv_sem']:.3f} | {t['loo_lpd']:.3f} | "
                    f"{t['loo_lpd'] - t['cv_lpd']:+.3f}{paired} | "
                    f"{'yes' if t['loo_agrees'] else 'no'}"
                )
            else:  # no cross-validation: the fit times and LOO only
                cv = f" | {t['loo_lpd']:.3f} |  | "
            out.append(
                f"| {t['experts']}{mark} | {t['objective']:.1f} | "
                f"{'yes' if t['converged'] else 'no'} | {t['seconds']:.1f} | {cv} | "
                f"{t['loo_khat_high']} |"
            )
        out += [""] + [f"{n}." for n in r["notes"]] + [""]
    return "\n".join(out)


def write_selection_markdown(rows: list[dict]) -> str:
    text = (
        "# Choosing K on the whole data set: held-out lpd and PSIS-LOO\n\n"
        "Written by `benchmarks/regression.py select` (its docstring says how): "
        "`select_experts(cv=5, loo=True)` with the defaults of `mixture_of_experts`, "
        "K = 1..4, on each whole data set, design [1, z, z², z³]. CV lpd: 5-fold held-out "
        "log predictive density per point ± its standard error (sd of the pointwise values "
        "/ √N); PSIS-LOO: ArviZ's elpd_loo / N of the fit on all the data (1000 draws of "
        "q(W), the gate and the noise held at their fitted values). LOO − CV: the mean "
        "of the pointwise difference ± its standard error; LOO agrees when it is within "
        "0.02 nats per point or two standard errors (`selection.LOO_TOLERANCE`; rows "
        "without ± were flagged by an earlier, looser rule: within two standard errors "
        "of the CV lpd). CPU s: this process's CPU seconds "
        "of one K's fit with 5 restarts, on a shared 2-core machine (load average in "
        "`regression_selection.json`). `npreg1000`: flexmix's NPreg simulated with "
        "N = 1000.\n\n" + selection_markdown(rows)
    )
    (OUT / "regression_selection.md").write_text(text)
    return text


def markdown(rows: list[dict]) -> str:
    """The table of regression.md: lpd per point (5-fold) per method and data set."""
    names = [n for n in datasets.DATASETS if any(r["data"] == n for r in rows)]
    methods = list(dict.fromkeys(r["method"] for r in rows))
    by = {(r["data"], r["method"]): r for r in rows}
    lines = [
        "| method | " + " | ".join(names) + " | CPU s per fit |",
        "| --- |" + " ---: |" * (len(names) + 1),
    ]
    for m in methods:
        cells = []
        for n in names:
            r = by.get((n, m))
            if r is None:
                cells.append("")
                continue
            ks = sorted({k for k in r["experts"] if k is not None})
            cells.append(f"{r['lpd']:.3f}" + (f" (K {'/'.join(map(str, ks))})" if ks else ""))
        secs = [by[(n, m)]["seconds_per_fit"] for n in names if (n, m) in by]
        lines.append(f"| {m} | " + " | ".join(cells) + f" | {max(secs):.1f} |")
    return "\n".join(lines)


def gates_markdown() -> str:
    """The rows of every ``regression_gates*.json`` as one table: held-out lpd per point
    (5-fold) per variant and data set, and the largest mean CPU seconds per fit."""
    rows = [
        r for p in sorted(OUT.glob("regression_gates*.json")) for r in json.loads(p.read_text())
    ]
    names = [n for n in datasets.DATASETS if any(r["data"] == n for r in rows)]

    def label(r):
        prior = "no prior" if r["scale"] is None else f"s = {r['scale']:g}"
        return f"{r['gate']} gate, {prior}, noise {r.get('noise', 'per expert')}"

    labels = list(dict.fromkeys(label(r) for r in rows))
    by = {(label(r), r["data"]): r for r in rows}
    lines = [
        "| gate, prior p(V) = N(0, s²), noise | " + " | ".join(names) + " | s per fit |",
        "| --- |" + " ---: |" * (len(names) + 1),
    ]
    for lab in labels:
        cells = [f"{by[(lab, n)]['lpd']:.3f}" if (lab, n) in by else "" for n in names]
        # rows without "noise" were timed by the wall clock, later ones by CPU time: the
        # largest CPU time, else the largest wall time
        have = [n for n in names if (lab, n) in by]
        cpu = [n for n in have if "noise" in by[(lab, n)]]
        secs = max(float(np.mean(by[(lab, n)]["seconds"])) for n in cpu or have)
        where = "" if len(cpu) == len(have) else f" ({', '.join(cpu)})" if cpu else " wall"
        lines.append(f"| {lab} | " + " | ".join(cells) + f" | {secs:.1f}{where} |")
    return "\n".join(lines)


def write_markdown(rows: list[dict]) -> str:
    """benchmarks/results/regression.md from the rows of regression.json."""
    text = (
        "# Held-out log predictive density on real regression data\n\n"
        "Written by `benchmarks/regression.py` (its docstring says how). Mean over the "
        "held-out points of log p(y_i | x_i, training fold), nats per point, 5-fold "
        "cross-validation, the same folds for every method; larger is better. "
        "K: the numbers of experts select_experts chose on the 5 training folds. CPU s per "
        "fit: the largest over the data sets of the mean CPU seconds of one fit (one K; "
        "the machine was shared and loaded).\n\n" + markdown(rows) + "\n"
    )
    (OUT / "regression.md").write_text(text)
    return text


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "study",
        nargs="?",
        default="compare",
        choices=("compare", "gates", "gates-table", "table", "select", "select-table"),
    )
    p.add_argument("--data", nargs="*", default=list(datasets.DATASETS))
    p.add_argument(
        "--variants",
        nargs="*",
        default=["linear 3", "mlp 3", "mlp none", "linear 1", "linear 10"],
        help="gates: 'GATE SCALE' pairs, GATE mlp or linear, SCALE a number or none",
    )
    p.add_argument("--methods", nargs="*", default=["cavi", "svi"], help="compare: engines")
    p.add_argument("--max-experts", type=int, default=4, help="compare: select_experts' max")
    p.add_argument("--shared-noise", action="store_true", help="gates: one beta for all")
    p.add_argument("--out", help="gates, compare: the JSON file of rows (default: the study's)")
    p.add_argument("--cv", type=int, default=5, help="select: folds (0: no cross-validation)")
    a = p.parse_args()
    torch.set_num_threads(1)
    if a.study == "table":
        print(write_markdown(json.loads((OUT / "regression.json").read_text())))
        return
    if a.study == "select":
        rows = selection_study(a.data, a.methods[0], a.max_experts, a.cv or None)
        print(write_selection_markdown(rows))
        return
    if a.study == "select-table":
        rows = json.loads((OUT / "regression_selection.json").read_text())
        print(write_selection_markdown(rows))
        return
    if a.study == "gates-table":
        (OUT / "regression_gates.md").write_text(
            "# The gate of mixture_of_experts, measured\n\nWritten by `benchmarks/regression.py "
            "gates-table` from `regression_gates*.json` (`benchmarks/regression.py gates`): "
            "5-fold held-out log predictive density per point, K = 3, CAVI, n_init = 5. "
            "s per fit: the largest over the data sets of the mean CPU seconds of one fit "
            "(5 restarts), over the data sets named where only those were timed by CPU "
            "time, wall seconds where marked (the machine was shared and loaded).\n\n"
            + gates_markdown()
            + "\n"
        )
        return
    if a.study == "gates":
        variants = [(g, None if s == "none" else float(s)) for g, s in map(str.split, a.variants)]
        store = Path(a.out) if a.out else OUT / "regression_gates.json"
        gates(a.data, variants, per_expert_noise=not a.shared_noise, store=store)
        return
    rows = compare(
        a.data, a.methods, a.max_experts, Path(a.out) if a.out else OUT / "regression.json"
    )
    print(write_markdown(rows))


if __name__ == "__main__":
    print(machine())
    main()
