"""The fixed cost of a fit on new data (issues #31 and #28): this checkout against a base.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/fixed_cost.py [--base main] [--rounds 3]
        [--quick]

The base commit (default ``main``) is checked out in a temporary ``git worktree``; each
round runs one fresh process per checkout (``PYTHONPATH=<tree>``, alternating which goes
first) and every figure keeps its best over the rounds (the machine may be shared: best-of
filters out other processes' load; the before/after ratio is measured in the same run).
Times are this thread's CPU time (``time.thread_time``), wall time beside them.

* **Whole fit calls** of the mixture of models at N = 1000, n = 3, K = 2, 8, 24 (one
  restart, ``init="random"``, ``tol=0``): the fixed cost is T(max_iter=1) less one
  iteration, the iteration (T(11) - T(1)) / 10 on the same data; *cold*: new data each call
  (what a curve fit's first fit, or a user's fit of new data, pays: the model file is read),
  *warm*: the same data again (its reading kept). Medians of ``--reps`` calls.
* **The stages of the fixed cost**, each alone at K = 2 (loading the file, the data's
  checks, the config, the options, a config's deep copy, the data's fingerprint, the
  reading of the file, warm and on new data).
* **Per stage on clean scenes**: ``fit_circles(image, experts=K, noise_expert=True)`` (what
  ``pyro-moe circles IMAGE --experts K`` runs) on 20 fresh clean scenes of
  :data:`pyro_moe.shapes.synthetic.SCENE_KINDS` (seeds 2 and 3, the 1024^2 kind left out),
  warm: the CPU time per image, of it ``read_model`` (the reading of the model file, once
  per new point set), and the Pyro traces of the file it runs (their number and time).

Writes ``benchmarks/results/fixed_cost.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from run import child_json

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
OUT = HERE / "results"

CHILD = r"""
import json, statistics, sys, time, warnings
import torch
torch.set_num_threads(1)
sys.path.insert(0, {bench!r})
from run import regression_data
import pyro_moe
assert pyro_moe.__file__.startswith({tree!r}), pyro_moe.__file__
from pyro_moe import likelihood
from pyro_moe.closed_form import sites
warnings.simplefilter("ignore")
REPS, QUICK = {reps}, {quick}
out = {{}}


def both():
    return time.thread_time(), time.perf_counter()


def timed(fn):
    c, w = both()
    fn()
    c2, w2 = both()
    return c2 - c, w2 - w


def fit(X, y, K, it):
    return pyro_moe.fit("mixture_of_models", X, y, experts=K, n_init=1, max_iter=it, tol=0.0,
                        init="random")


LONG = 11  # the iteration: (T(LONG) - T(1)) / (its iterations - 1)
for K in (2, 8, 24):
    X, y, _ = regression_data(1000, K, seed=0)
    fresh = [regression_data(1000, K, seed=1 + i)[:2] for i in range(REPS + 2)]
    fit(X, y, K, 1)  # the first fit of the process (imports, the file's first reading)
    for Xc, yc in fresh[:2]:
        fit(Xc, yc, K, 1)
    cold = [timed(lambda: fit(Xc, yc, K, 1)) for Xc, yc in fresh[2:]]
    warm1 = [timed(lambda: fit(X, y, K, 1)) for _ in range(REPS)]
    warmL = [timed(lambda: fit(X, y, K, LONG)) for _ in range(REPS)]
    iters = fit(X, y, K, LONG).history.iterations
    row = {{"iterations": iters}}
    for j, clock in enumerate(("cpu", "wall")):
        med = lambda ts: statistics.median(t[j] for t in ts)
        per = (med(warmL) - med(warm1)) / (iters - 1)
        row[clock + "_per_iter_s"] = per
        row[clock + "_fixed_cold_s"] = med(cold) - per
        row[clock + "_fixed_warm_s"] = med(warm1) - per
    out[f"fit N=1000 K={{K}}"] = row

# ---- the stages of a fit's fixed cost, each alone (K = 2, medians of 5 x REPS calls) ----
import copy
from pyro_moe.engines import get_engine
from pyro_moe.fitting import as_data, weight_scale
from pyro_moe.model_file import load_model
model = load_model("mixture_of_models")
X, y, _ = regression_data(1000, 2, seed=0)
s = weight_scale(X, y)
config = model.config(X, y, 2, weight_scale=s)
new = [regression_data(1000, 2, seed=100 + i)[:2] for i in range(5 * REPS)]
configs = [model.config(Xn, yn, 2, weight_scale=weight_scale(Xn, yn)) for Xn, yn in new]
sites.read_model(model, X, y, config)


def alone(fn, reps=5 * REPS):
    return statistics.median(timed(fn)[0] for _ in range(reps))


it = iter(range(5 * REPS))


def read_new():
    i = next(it)
    sites.read_model(model, new[i][0], new[i][1], configs[i])


out["stages"] = {{
    "load_model": alone(lambda: load_model("mixture_of_models")),
    "as_data": alone(lambda: as_data(X.numpy(), y.numpy())),
    "weight_scale": alone(lambda: weight_scale(X, y)),
    "config": alone(lambda: model.config(X, y, 2, weight_scale=s)),
    "options": alone(lambda: get_engine("cavi").options({{"n_init": 1, "max_iter": 1}})),
    "deepcopy_config": alone(lambda: copy.deepcopy(config)),
    "fingerprint": alone(lambda: sites._fingerprint(model, X, y, config, False)),
    "read_model_warm": alone(lambda: sites.read_model(model, X, y, config)),
    "read_model_new_data": alone(read_new),
}}

# ---- per stage on 20 clean scenes ----
from pyro_moe.shapes.synthetic import SCENE_KINDS, circle_scene
scenes = []
for seed in (2, 3):
    for kind in SCENE_KINDS:
        if not kind.startswith("1024"):
            scenes.append(circle_scene(kind, seed))
scenes = scenes[: 4 if QUICK else 20]
acc = dict(n_traces=0)


def wrap(owner, name, key, count=False):
    real = getattr(owner, name, None)
    if real is None:
        return
    acc.setdefault(key, 0.0)

    def inner(*a, **k):
        c = time.thread_time()
        try:
            return real(*a, **k)
        finally:
            acc[key] += time.thread_time() - c
            if count:
                acc["n_traces"] += 1

    setattr(owner, name, inner)


import pyro_moe.curves.fitting as cf
import pyro_moe.fitting as pf
from pyro_moe.engines import base, cavi
wrap(base.Engine, "fit", "engine")
wrap(cavi, "read_model", "read_model")
wrap(cavi, "sweep", "sweeps")
wrap(likelihood, "trace_model", "traces", count=True)
if getattr(sites, "trace_model", None) is not None:  # the site trace, imported by name
    wrap(sites, "trace_model", "traces", count=True)
wrap(cf, "chain_curves", "chains")
wrap(cf, "seed_responsibilities", "seeded_start")
wrap(cf, "curve_data", "design")
wrap(cf, "noisy_circles", "noisy_circles")
wrap(cf, "load_model", "load_model")
wrap(pf, "load_model", "load_model")
img, truth = scenes[0]
pyro_moe.fit_circles(img, experts=len(truth), noise_expert=True)  # warm
for k in acc:
    acc[k] = 0
per_image = []
for img, truth in scenes:
    per_image.append(timed(lambda: pyro_moe.fit_circles(img, experts=len(truth), noise_expert=True)))
cpu = sum(c for c, _ in per_image)
wall = sum(w for _, w in per_image)
n = len(scenes)
out["clean scenes"] = dict(
    images=n, cpu_per_image_s=cpu / n, wall_per_image_s=wall / n,
    cpu_median_image_s=statistics.median(c for c, _ in per_image),
    traces_per_image=acc.pop("n_traces") / n, **{{k + "_s": v / n for k, v in acc.items()}},
)
print(json.dumps(out))
"""


def keep_best(best: dict, got: dict) -> None:
    """Fold ``got`` into ``best``: every time its minimum over the rounds."""
    for k, row in got.items():
        cur = best.setdefault(k, {})
        for f, v in row.items():
            cur[f] = min(cur[f], v) if f in cur and isinstance(v, float) else v


def main() -> None:
    sys.path.insert(0, str(HERE))
    from run import machine, table

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", default="main", help="the commit to compare against (main)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--reps", type=int, default=15, help="fit calls per median")
    ap.add_argument("--quick", action="store_true", help="4 scenes, 5 calls per median")
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    reps = 5 if args.quick else args.reps

    def sha(ref: str) -> str:
        return subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", ref], capture_output=True, text=True, check=True
        ).stdout.strip()

    base_sha, head_sha = sha(args.base), sha("HEAD")
    loads = []
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "base"
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "add", "-q", "--detach", str(base), base_sha],
            check=True,
        )
        trees = {"before": base, "after": ROOT}
        best: dict[str, dict] = {"before": {}, "after": {}}
        try:
            for i in range(args.rounds):
                for which in ["before", "after"] if i % 2 == 0 else ["after", "before"]:
                    code = CHILD.format(
                        bench=str(HERE), reps=reps, quick=args.quick, tree=str(trees[which])
                    )
                    keep_best(best[which], child_json(code, trees[which]))
                    loads.append(os.getloadavg()[0])
                    print(f"round {i + 1} {which}: load {loads[-1]:.1f}", file=sys.stderr)
        finally:
            subprocess.run(
                ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(base)], check=False
            )
    b, a = best["before"], best["after"]
    fits = []
    for k in a:
        if not k.startswith("fit "):
            continue
        row = {"fit": k.removeprefix("fit ")}
        for what in ("fixed_cold", "fixed_warm", "per_iter"):
            scale, unit = (1e3, "ms") if what != "per_iter" else (1e6, "us")
            row[f"{what}_{unit}"] = scale * a[k][f"cpu_{what}_s"]
            row[f"before_{unit}" if what == "fixed_cold" else f"before_{what}_{unit}"] = (
                scale * b[k][f"cpu_{what}_s"]
            )
        row["cold_wall_ms"] = 1e3 * a[k]["wall_fixed_cold_s"]
        row["before_cold_wall_ms"] = 1e3 * b[k]["wall_fixed_cold_s"]
        fits.append(row)
    sa, sb = a["clean scenes"], b["clean scenes"]
    stages = [
        ("the whole fit_circles call (mean)", "cpu_per_image"),
        ("the whole fit_circles call (median)", "cpu_median_image"),
        ("the engine, every fit of the image (`Engine.fit`)", "engine"),
        ("&nbsp;&nbsp;its reading of the model file, `read_model`", "read_model"),
        ("&nbsp;&nbsp;&nbsp;&nbsp;of it the Pyro traces of the file", "traces"),
        ("&nbsp;&nbsp;the CAVI sweeps", "sweeps"),
        ("the seeded start (`seed_responsibilities`)", "seeded_start"),
        ("&nbsp;&nbsp;of it the edge chains (`chain_curves`)", "chains"),
        ("the design (`curve_data`: image to points, standardization)", "design"),
        ("loading the model file (`load_model`)", "load_model"),
        ("the band-of-clutter check (`noisy_circles`)", "noisy_circles"),
        ("wall time per image", "wall_per_image"),
    ]
    stages = [
        {"stage": label, "ms": 1e3 * sa[k + "_s"], "before_ms": 1e3 * sb[k + "_s"]}
        for label, k in stages
        if k + "_s" in sa and k + "_s" in sb
    ]
    stages.append(
        {"stage": "Pyro traces per image (count)", "ms": sa["traces_per_image"],
         "before_ms": sb["traces_per_image"]}
    )  # fmt: skip
    parts = [
        {"stage": k, "ms": 1e3 * a["stages"][k], "before_ms": 1e3 * b["stages"][k]}
        for k in a["stages"]
    ]
    info = machine()
    res = {
        "machine": info, "base": base_sha, "head": head_sha, "rounds": args.rounds,
        "reps": reps, "load_average": loads, "before": b, "after": a,
    }  # fmt: skip
    OUT.mkdir(exist_ok=True)
    (OUT / "fixed_cost.json").write_text(json.dumps(res, indent=1))
    md = [
        "# The fixed cost of a fit on new data (issues #31, #28)",
        "",
        ", ".join(f"{k}={v}" for k, v in info.items()),
        "",
        f"`benchmarks/fixed_cost.py`: this checkout ({head_sha[:10]}) against {args.base} "
        f"({base_sha[:10]}), best of {args.rounds} interleaved rounds of fresh processes, "
        f"medians of {reps} calls; this thread's CPU time. Load average "
        f"{min(loads):.1f}-{max(loads):.1f} on {os.cpu_count()} cores during the run (the "
        "machine was shared).",
        "",
        "## Whole `fit` calls at N = 1000, n = 3 (mixture of models, one restart)",
        "",
        "Fixed cost: T(max_iter=1) less one iteration; the iteration: (T(11) - T(1)) / 10. "
        "Cold: new data every call (the model file is read); warm: the same data again. "
        "`cold_wall_ms`: the cold fixed cost in wall time.",
        "",
        table(
            fits,
            [
                "fit",
                "fixed_cold_ms",
                "before_ms",
                "fixed_warm_ms",
                "before_fixed_warm_ms",
                "per_iter_us",
                "before_per_iter_us",
                "cold_wall_ms",
                "before_cold_wall_ms",
            ],
        ),
        "",
        "## The stages of a fit's fixed cost, each alone (K = 2, N = 1000)",
        "",
        "Medians of single calls: `read_model_new_data` reads new data of a structure read "
        "before (its first reading not counted), `read_model_warm` the same data again.",
        "",
        table(parts, ["stage", "ms", "before_ms"]),
        "",
        f"## Per stage on {sa['images']} clean scenes, CPU ms per image",
        "",
        "`fit_circles(image, experts=K, noise_expert=True)`, warm; each stage timed by "
        "wrapping its function (inclusive: an indented stage is part of the one above it).",
        "",
        table(stages, ["stage", "ms", "before_ms"]),
        "",
    ]
    (OUT / "fixed_cost.md").write_text("\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
