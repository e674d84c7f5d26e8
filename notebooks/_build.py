"""Generate the example notebooks from the Python source below, executed, with their outputs.

    .venv/bin/python notebooks/_build.py            # write and run every notebooks/*.ipynb
    .venv/bin/python notebooks/_build.py 02 05      # only the notebooks whose name has 02, 05
    .venv/bin/python notebooks/_build.py --no-execute   # cells only, outputs left empty
    .venv/bin/python notebooks/_build.py --jobs 1       # one kernel at a time (default 2)

Each notebook is run in a fresh kernel (nbclient, ``OMP_NUM_THREADS=1``, inline figures)
and stored with its outputs and figures, so that a reader browsing the repository or the
docs site sees the results (the docs render the stored outputs and never execute). A
notebook that raises or writes to stderr fails the build and is not written. What changes
from run to run without meaning is stripped: nbclient's execution timestamps (it records
none), the kernel's language_info beyond the name. Wall times printed by a cell do change.

Edit the cells here, not in the .ipynb files: ``tests/test_notebooks.py`` checks that every
stored notebook's cells equal their source here and carry outputs, and ``pytest --nbmake
notebooks`` (``make test``) executes them again.
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent

SETUP = """\
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # small tensors: 1 thread is fastest
import contextlib
import warnings

import numpy as np
import torch

with warnings.catch_warnings():
    # tqdm.auto (the engines' progress bars) warns once at import in Jupyter when ipywidgets
    # is not installed; the bars are off in these short fits. Only that message is silenced.
    warnings.filterwarnings("ignore", message="IProgress not found")
    import tqdm.auto  # noqa: F401

import pyro_moe
from pyro_moe import plots

torch.manual_seed(0)


@contextlib.contextmanager
def report_convergence():
    \"\"\"Turn pyro_moe's ConvergenceWarning into a printed line; other warnings pass.\"\"\"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", pyro_moe.ConvergenceWarning)
        yield
    for w in caught:
        if issubclass(w.category, pyro_moe.ConvergenceWarning):
            print("note (not converged):", w.message)
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
"""

STUDY = """\
# The study's prior means w0_k (A_k = I) and the regularizer's Xi, in standardized units.
from pyro_moe.study import STUDY_PRIOR_MEAN, STUDY_XI

print("w0 =", STUDY_PRIOR_MEAN, " Xi = diag", STUDY_XI)
"""


def md(text: str):
    return new_markdown_cell(text.strip())


def code(text: str):
    return new_code_cell(text.strip())


NOTEBOOKS: dict[str, list] = {}

# --------------------------------------------------------------------------- 01
NOTEBOOKS["01_quickstart"] = [
    md("""
# Quickstart: circles from a binary image

`pyro_moe.fit_circles` turns the foreground pixels of a binary image into points, fits a
Bayesian mixture of linear regressions (one expert per circle: the circle
(x - x0)² + (y - y0)² = r² is linear in w = (2x0, 2y0, r² - x0² - y0²)), and returns the
circles in pixel units (x = column, y = row, origin top-left).
"""),
    code(SETUP),
    md(
        "An image with two concentric circles and one more (concentric circles defeat Hough transforms):"
    ),
    code("""
from pyro_moe.shapes import circle_image, circle_error

image, truth = circle_image([(60, 64), (60, 64), (125, 120)], [20, 42, 22], shape=(160, 160))
print(image.shape, image.dtype, int(image.sum()), "foreground pixels")
"""),
    code("""
result = pyro_moe.fit_circles(image, experts=3, seed=0)
print(result.summary())
print(f"{'expert':>6} {'x0':>8} {'y0':>8} {'r':>8} {'weight':>7}")
weights = result.weights.tolist()  # the experts', then the noise expert's (on by default)
for k, c in enumerate(result.circles()):
    print(f"{k:>6} {c.x0:8.2f} {c.y0:8.2f} {c.r:8.2f} {weights[k]:7.3f}")
if result.noise_expert:
    print(f"{'noise':>6} {'':>8} {'':>8} {'':>8} {weights[-1]:7.3f}")
print("circle error S against the truth:", f"{circle_error(truth, result.circles()):.2e}")
"""),
    md(
        "Points coloured by their most responsible expert (opacity = responsibility), fitted circles on top, y axis down as in the image:"
    ),
    code("fig = plots.plot_fit(result)"),
]

# --------------------------------------------------------------------------- 02
NOTEBOOKS["02_prior_choices"] = [
    md("""
# The study's prior choices f1, f2, f3

The study compares three ways of putting prior information into a mixture of experts that
recovers two concentric circles. Here they are, all with the same gated model family (so
only the priors differ), CAVI, K = 2:

| choice | model file | priors | learned (type-II ML) |
| --- | --- | --- | --- |
| **f1**: no prior information | `mixture_of_experts` | w0_k = 0 for both experts, A_k = I (initial values) | everything: w0, A, β, gate (`learn="all"`) |
| **f2**: informative fixed priors | `mixture_of_experts` | the study's w0_1 = [0, 0, 0.1], w0_2 = [0, 0, 2], A_k = I, held fixed | β and the gate |
| **f3**: regularized experts | `regularized_experts` | the study's w0 as start, A_k = I, Ξ = diag(0.01, 0.01, 1) ties the centres | w0 (under the regularizer R(w0)), β, gate |

The score is the study's circle error S (sum over circles of the squared distance between
true and fitted (x0, y0, r), matched by the Hungarian algorithm), median over a few seeds
(Synthetic 1 is noise-free, so one seed). Fits are capped at 400 iterations to keep this
notebook quick; a truncated fit prints a note instead of a warning.
"""),
    code(SETUP),
    code("""
from pyro_moe import study
from pyro_moe.shapes import circle_error, synthetic_1, synthetic_2, synthetic_3

CHOICES = study.CHOICES  # f1, f2, f3 as keyword arguments of pyro_moe.fit (plus the model)
for name, options in CHOICES.items():
    print(name, options)
print("every fit:", study.CAVI_SETTINGS)


def fit_choice(choice, xy, seed=0):
    \"\"\"One prior choice on points in standard units: the study's fit (pyro_moe.study).\"\"\"
    with report_convergence():
        return study.fit_choice(choice, xy, seed=seed)
"""),
    code("""
import time

SEEDS = (0, 1, 2)
datasets = {
    "Synthetic 1": lambda seed: synthetic_1(),
    "Synthetic 2": synthetic_2,
    "Synthetic 3": synthetic_3,
}
table = {}
start = time.perf_counter()
for name, make in datasets.items():
    seeds = (0,) if name == "Synthetic 1" else SEEDS
    for choice in CHOICES:
        S = []
        for seed in seeds:
            d = make(seed)
            res = fit_choice(choice, d.xy, seed)
            S.append(circle_error(d.circles, res.circles()))
        table[name, choice] = float(np.median(S))
print(f"({time.perf_counter() - start:.1f} s)")
print(f"{'median S':<12}" + "".join(f"{c:>12}" for c in CHOICES))
for name in datasets:
    print(f"{name:<12}" + "".join(f"{table[name, c]:12.3g}" for c in CHOICES))
"""),
    md("""
## The eye mask

The study's real example is an eye mask (pupil and iris: two nearly concentric circles).
When the study's data folder is present (`emprior_dir()`), we use its preprocessing
(`study_eye_points`: 200 foreground pixels, each axis standardized, y up); otherwise a
built-in stand-in with the same character (two nearly concentric noisy circles plus stray
pixels) so the notebook always runs. There is no ground truth, so we rank the three
choices by PSIS-LOO on the same points (`pyro_moe.diagnostics.compare_models`: expected
log predictive density of y = x² + y², higher is better).
"""),
    code("""
from pyro_moe import diagnostics
from pyro_moe.shapes import circle_points, emprior_dir, study_eye_points

if emprior_dir() is not None:
    eye = study_eye_points(seed=0, n=200)
    source = "study eye mask (1_mask_2.jpg)"
else:
    xy, _ = circle_points([(0.05, 0.0), (0.0, 0.0)], [0.45, 1.35], [70, 110],
                          jitter=0.04, outlier_fraction=0.1, seed=0)
    eye = (xy - xy.mean(0)) / xy.std(0)
    source = "built-in synthetic stand-in"
print(source, eye.shape)
eye_fits = {choice: fit_choice(choice, eye) for choice in CHOICES}
for choice, res in eye_fits.items():
    print(choice, " ".join(f"(x0={c.x0:.3f}, y0={c.y0:.3f}, r={c.r:.3f})" for c in res.circles()))
"""),
    code("""
ranking = diagnostics.compare_models(eye_fits, draws=500)
print(ranking[["rank", "elpd_loo", "p_loo", "elpd_diff", "dse", "weight", "warning"]].round(2))
"""),
    code("""
import matplotlib.pyplot as plt

fig, axes = plt.subplots(1, 3, figsize=(13, 4.3))
for ax, (choice, res) in zip(axes, eye_fits.items(), strict=True):
    plots.plot_fit(res, ax=ax, title=choice)
    ax.invert_yaxis()  # these points have y up, not the image convention
fig.tight_layout()
"""),
]

# --------------------------------------------------------------------------- 03
NOTEBOOKS["03_svi_vs_cavi"] = [
    md("""
# SVI against CAVI on the same model file

`pyro_moe.comparison.compare` fits one model file both ways, with the same data, priors and
initial q(Z): closed-form variational EM (CAVI), natural-gradient SVI (the default of
`method="svi"`: q(W), q(pi) stepped in natural parameters; with the full batch and rho = 1
each step is one CAVI sweep) and plain Adam SVI (`optimizer="adam"`, Pyro's
`TraceEnum_ELBO` with z summed out, `adam=True` below). All report the same objective
(total ELBO in nats), so their curves overlay. Data: Synthetic 2 with the study's priors,
mixture of models, K = 2.
"""),
    code(SETUP),
    code(STUDY),
    code("""
from pyro_moe.comparison import compare_circles
from pyro_moe.shapes import synthetic_2

d = synthetic_2(0)
with report_convergence():
    comparison = compare_circles(
        d.xy, experts=2, model="mixture_of_models", prior_mean=STUDY_PRIOR_MEAN,
        prior_cov=1.0, n_init=1, seed=0, adam=True,
    )
print(comparison.to_markdown())
print(f"natural-gradient SVI ended {comparison.relative_gap:.2e} of |F| away from CAVI's optimum")
"""),
    md(
        "Objective against iteration and against wall time (log x). Adam's per-step objective is a one-draw Monte Carlo estimate; natural-gradient SVI's is exact on the full batch; the last point of each SVI curve is the exact closed form at the final parameters."
    ),
    code(
        'fig = plots.plot_objective({"CAVI": comparison.cavi, "SVI (natural gradient)": '
        'comparison.svi, "SVI (Adam)": comparison.adam}, x="both")'
    ),
    code("fig = comparison.plot()"),
]

# --------------------------------------------------------------------------- 04
NOTEBOOKS["04_diagnostics"] = [
    md("""
# Posterior diagnostics with ArviZ

`result.to_inference_data()` (the same as `pyro_moe.diagnostics.to_inference_data(result)`)
draws from the variational posterior q and builds an `arviz.InferenceData`: `w` per expert
and feature, the circles' `x0, y0, r` in pixels, `pi`, a latent `beta` (a point-estimated
`beta` is data, in `constant_data`, not a posterior with sd 0), and the pointwise
log-likelihood of the model file (for LOO). Several fits become *chains* after their
experts are aligned (Hungarian algorithm on the posterior means), so R-hat across restarts
tells whether the restarts found the same optimum.
"""),
    code(SETUP),
    code(STUDY),
    code("""
from pyro_moe import diagnostics
from pyro_moe.shapes import synthetic_2

d = synthetic_2(0)
# clean rings: no noise expert (fit_circles' default adds one for stray points)
runs = [
    pyro_moe.fit_circles(d.xy, experts=2, seed=s, n_init=1, noise_expert=False)
    for s in range(4)
]
for s, r in enumerate(runs):
    print(f"seed {s}: F = {r.objective:9.3f}", [str(c) for c in r.circles()])
print(diagnostics.rhat_across_restarts(runs).to_dataframe().round(3))
"""),
    md(
        "A fit started from a bad split (left half / right half of the points) converges to a worse optimum when nothing moves it: with the search over fixed points off (`search=False`) and one noise precision shared by the circles, each expert stays on its half of the points, a circle through one side of both rings, F is far lower and R-hat with it as a chain is far above 1. `fit_circles`' other defaults (the search, one noise precision per circle) take the same bad start to the optimum of the runs above, R-hat 1.00:"
    ),
    code("""
right = (d.xy[:, 0] > d.xy[:, 0].mean()).astype(float)
bad_start = np.c_[right, 1 - right]
stuck = pyro_moe.fit_circles(d.xy, experts=2, responsibilities=bad_start, search=False,
                             per_expert_noise=False, noise_expert=False)
print(f"stuck: F = {stuck.objective:.3f}", [str(c) for c in stuck.circles()])
print(diagnostics.rhat_across_restarts([runs[0], stuck]).to_dataframe().round(3))
rescued = pyro_moe.fit_circles(d.xy, experts=2, responsibilities=bad_start, noise_expert=False)
print(f"with the defaults: F = {rescued.objective:.3f}", [str(c) for c in rescued.circles()])
print(diagnostics.rhat_across_restarts([runs[0], rescued]).to_dataframe().round(3))
"""),
    md(
        "Posterior densities of the radii (one chain per restart, pooled) and a forest plot of all circle parameters per chain:"
    ),
    code("""
idata = diagnostics.restarts_as_chains(runs, draws=1000, seed=0)
print(idata.posterior[["x0", "y0", "r"]].mean(("chain", "draw")).to_dataframe().round(4))
fig = diagnostics.plot_posterior(idata, var_names=["r"], hdi_prob=0.95)
"""),
    code('fig = diagnostics.plot_forest(idata, var_names=["x0", "y0", "r"], hdi_prob=0.95)'),
    md("LOO of one fit (Pareto-k diagnostics included; a high k is reported here, not raised):"),
    code("""
elpd = diagnostics.loo(runs[0])
print(elpd)
print("points with Pareto k > 0.7:", diagnostics.k_high(elpd))
"""),
    md("""
## Predictive intervals

`result.predict(X)` is the posterior predictive, a mixture over experts of
N(m_kᵀx, 1/β + xᵀB_k x); `.interval(0.95)` gives its central 95 % interval. A 1-D example:
two linear regimes switching at x = 0, fitted with a gated mixture of experts.
"""),
    code("""
import matplotlib.pyplot as plt

rng = np.random.default_rng(0)
x = rng.uniform(-3, 3, 200)
y = np.where(x < 0, -1.0 - 0.8 * x, 0.5 + 1.5 * x) + rng.normal(0, 0.3, x.size)
X = np.c_[x, np.ones_like(x)]
with report_convergence():
    moe = pyro_moe.fit("mixture_of_experts", X, y, experts=2, seed=0, n_init=2, max_iter=200,
                       tol=1e-6)
grid = np.linspace(-3.5, 3.5, 200)
pred = moe.predict(np.c_[grid, np.ones_like(grid)])
band = pred.interval(0.95).numpy()
inside = moe.predict(X).interval(0.95).numpy()
coverage = np.mean((y >= inside[:, 0]) & (y <= inside[:, 1]))
print(f"share of the data inside its 95 % interval: {coverage:.3f}")

fig, ax = plt.subplots(figsize=(6, 4))
ax.scatter(x, y, s=8, c="0.5", label="data")
ax.plot(grid, pred.mean.numpy(), "k", label="predictive mean")
ax.fill_between(grid, band[:, 0], band[:, 1], alpha=0.3, label="95 % interval")
ax.set_xlabel("x")
ax.set_ylabel("y")
ax.legend();
"""),
]

# --------------------------------------------------------------------------- 05
NOTEBOOKS["05_conics"] = [
    md("""
# Ellipses and hyperbolas

A conic in the study's form x² = B'xy + C'y² + D'x + E'y + F' is the regression t = x² on
X = [xy, y², x, y, 1], so `fit_conics` recovers ellipses and hyperbolas the way
`fit_circles` recovers circles. (Conics with no x² term cannot be written in this form.)
"""),
    code(SETUP),
    code("""
from pyro_moe.shapes import ellipse_points, hyperbola_points

ellipse = ellipse_points(center=(50, 40), semi_axes=(30, 12), angle=0.4, n=200, jitter=0.3,
                         seed=0)
hyperbola = hyperbola_points(center=(60, 85), semi_axes=(10, 6), angle=0.2, n=200,
                             jitter=0.2, seed=1)
print("truth: ellipse centre (50, 40), semi-axes (30, 12), angle 0.4;",
      "hyperbola centre (60, 85), semi-axes (10, 6), angle 0.2")
"""),
    code("""
one = pyro_moe.fit_conics(ellipse, experts=1)
print(one.conics()[0].as_dict())
"""),
    code("""
both = pyro_moe.fit_conics(np.r_[ellipse, hyperbola], experts=2, seed=0)
for k, c in enumerate(both.conics()):
    print(f"expert {k}: {c.kind:9s} centre ({c.center[0]:.2f}, {c.center[1]:.2f}) "
          f"semi-axes ({c.semi_axes[0]:.2f}, {c.semi_axes[1]:.2f}) angle {c.angle:.3f}")
fig = plots.plot_fit(both)
"""),
    md("The posterior uncertainty of the geometry, from draws of q(w) (`pyro_moe.diagnostics`):"),
    code("""
from pyro_moe import diagnostics

post = diagnostics.to_inference_data(both, draws=1000, seed=0).posterior
print(post.attrs["conic_kind"])
summary = post[["xc", "yc", "semi_major", "semi_minor", "angle"]]
print("mean\\n", summary.mean(("chain", "draw")).to_dataframe().round(3))
print("sd\\n", summary.std(("chain", "draw")).to_dataframe().round(4))
"""),
    md("""
## Experts with their own feature maps: a circle beside an ellipse

Each expert can have its own features and target (`pyro_moe.experts`, declared in
`models/mixture_of_models.py`): a *circle* expert regresses x² + y² on [x, y, 1] (3 weights),
an *ellipse* (conic) expert regresses x² on [xy, y², x, y, 1] (5 weights). Both model the
same quantity x² (the circle's target is x² shifted by y², a known function of the point),
so their ELBOs compare nats for nats: below, the evidence prefers one circle expert and one
ellipse expert over two of either kind.
"""),
    code("""
import matplotlib.pyplot as plt

from pyro_moe.shapes import rasterize

image = rasterize(np.r_[ellipse_points((70, 80), (45, 22), np.radians(30), 2000, even=True),
                        ellipse_points((150, 130), (28, 28), 0.0, 2000, even=True)], (200, 200))
mixes = {names: pyro_moe.fit_curves(image, experts=list(names), n_init=5)
         for names in [("circle", "ellipse"), ("circle", "circle"), ("ellipse", "ellipse")]}
for names, res in mixes.items():
    print(f"{' + '.join(names):18s} ELBO {res.elbo:9.1f} nats")
    for c in res.curves():
        print("    ", c if not hasattr(c, "semi_axes") else
              f"{c.kind}: centre ({c.center[0]:.2f}, {c.center[1]:.2f}), semi-axes "
              f"({c.semi_axes[0]:.2f}, {c.semi_axes[1]:.2f}), "
              f"angle {np.degrees(c.angle):.2f} deg")
"""),
    md("""
Truth: circle (150, 130), r = 28; ellipse centre (70, 80), semi-axes (45, 22), 30°. Two
circle experts cannot bend to the ellipse; two conic experts fit the circle as a slightly
elliptical conic whose two semi-axes are less certain than the circle expert's one radius
and whose tilt the data do not determine (`pyro_moe.curve_uncertainty` reports each expert
by its kind):
"""),
    code("""
for names in [("circle", "ellipse"), ("ellipse", "ellipse")]:
    for c, u in zip(mixes[names].curves(), pyro_moe.curve_uncertainty(mixes[names])):
        sd = (f"sd x0 {u.sd_x0:.3f}, y0 {u.sd_y0:.3f}, r {u.sd_r:.3f}" if hasattr(u, "sd_x0")
              else f"sd cx {u.sd['cx']:.3f}, cy {u.sd['cy']:.3f}, a {u.sd['a']:.3f}, "
                   f"b {u.sd['b']:.3f}, angle {u.sd['angle']:.2f} rad")
        print(f"{' + '.join(names):18s} {type(c).__name__:6s} {sd}")
fig, axes = plt.subplots(1, 3, figsize=(13, 4.3))
for ax, (names, res) in zip(axes, mixes.items()):
    plots.plot_fit(res, ax=ax, title=f"{' + '.join(names)}: ELBO {res.elbo:.0f}")
"""),
]

# --------------------------------------------------------------------------- 06
NOTEBOOKS["06_swap_prior"] = [
    md("""
# Swap a prior: a Laplace prior on the experts' weights

A model file is a plain Pyro program. Copy `models/mixture_of_models.py`, change
`weight_prior` from a Gaussian to a Laplace, and fit it: SVI fits any prior; CAVI has no
closed-form update for it and refuses with a message that names the site.
"""),
    code(SETUP),
    code(STUDY),
    code("""
import tempfile
from pathlib import Path

from pyro_moe.model_file import MODELS_DIR

source = (MODELS_DIR / "mixture_of_models.py").read_text()
old = "    return dist.MultivariateNormal(prior_mean, covariance_matrix=prior_cov)\\n"
new = (
    "    scale = prior_cov.diagonal(dim1=-2, dim2=-1).sqrt()\\n"
    "    return dist.Laplace(prior_mean, scale).to_event(1)\\n"
)
assert old in source
workdir = Path(tempfile.mkdtemp())
path = workdir / "laplace_mixture.py"
path.write_text(source.replace(old, new, 1))
laplace = pyro_moe.load_model(path)
print(path.name, "weight_prior:")
print("".join(line + "\\n" for line in path.read_text().splitlines()
              if "Laplace" in line or "scale =" in line))
"""),
    code("""
from pyro_moe.shapes import circle_design, circle_error, circles_from_weights, synthetic_2

d = synthetic_2(0)
X, t = circle_design(d.xy)
kw = dict(experts=2, prior_mean=STUDY_PRIOR_MEAN, prior_cov=1.0, n_init=1, seed=0)
try:
    pyro_moe.fit(laplace, X, t, method="cavi", **kw)
except pyro_moe.NonConjugateError as err:
    print("CAVI refused:", err)
"""),
    code("""
with report_convergence():
    svi = pyro_moe.fit(laplace, X, t, method="svi", max_iter=1500, **kw)
print(svi.summary())
circles = circles_from_weights(svi.mean.numpy())
print([str(c) for c in circles])
print(f"circle error S: {circle_error(d.circles, circles):.2e}")
fig = plots.plot_objective({"SVI, Laplace prior": svi}, x="both")
"""),
]

# --------------------------------------------------------------------------- 07
NOTEBOOKS["07_models_vs_experts"] = [
    md("""
# Mixture of models against mixture of experts

A *mixture of models* gives every point the same prior weights π (a Dirichlet posterior);
a *mixture of experts* lets a gate g(x) = softmax(V1ᵀσ(V2ᵀx)) choose the expert from the
point's position. On two circles in different regions of the image the gate learns the
regions; the mixture of models can only say "about half the points are on each circle".
"""),
    code(SETUP),
    code("""
from pyro_moe.curves.fitting import curve_data
from pyro_moe.shapes import circle_error, circle_points

xy, labels = circle_points([(45, 60), (115, 70)], [22, 30], [120, 160], jitter=0.6, seed=0)
truth = [f"({x:.0f}, {y:.0f}), r={r:.0f}" for x, y, r in [(45, 60, 22), (115, 70, 30)]]
print("truth:", truth)
with report_convergence():
    fits = {
        "mixture of models": pyro_moe.fit_circles(xy, experts=2, model="mixture_of_models",
                                                  seed=0),
        "mixture of experts": pyro_moe.fit_circles(xy, experts=2, model="mixture_of_experts",
                                                   seed=0, n_init=2, max_iter=150, tol=1e-6),
    }
for name, res in fits.items():
    print(f"{name:>18}: F = {res.objective:9.2f}", [str(c) for c in res.circles()])
"""),
    code("""
import matplotlib.pyplot as plt

fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
for ax, (name, res) in zip(axes, fits.items(), strict=True):
    plots.plot_fit(res, ax=ax, title=name)
fig.tight_layout()
"""),
    md(
        "The weights over the image plane: constant E[π_k] for the mixture of models, the gate's g_k(x) for the mixture of experts."
    ),
    code('fig = plots.plot_gate_map(fits["mixture of models"], resolution=80)'),
    code('fig = plots.plot_gate_map(fits["mixture of experts"], resolution=80)'),
    md("""
## The experts' parameters over the iterations

A `FitResult` keeps only the final parameters, so `plots.trace_parameters` re-runs CAVI from
the same start (same seed and initialisation, `n_init=1`) with `max_iter` = 1, 2, 3, 5, 8,
13, 20, 30, 50; CAVI is deterministic, so the fit stopped after t iterations is iteration t
of the full run.
"""),
    code("""
data = curve_data(xy, experts=2)  # the circle design of the standardized points
trace = plots.trace_parameters(
    "mixture_of_experts", data.X, data.y, experts=2, seed=0, geometry=data.geometry
)
print("objective after", trace.iterations.tolist(), "iterations:")
print(np.round(trace.objective, 2).tolist())
fig = plots.plot_trajectories(trace)
"""),
]

# --------------------------------------------------------------------------- 08
NOTEBOOKS["08_three_engines"] = [
    md("""
# Three engines on one model file: CAVI, SVI and the exact posterior by NUTS

CAVI and SVI fit a mean-field q(W) q(π) q(Z); `method="nuts"` draws from the exact
posterior p(W, π | y, h) of the same model file, z summed out, with the hyperparameters h
(here β) **fixed at the values the CAVI fit chose**, and NUTS preconditioned by CAVI's
q(w_k) = N(m_k, B_k) (w_k = m_k + L_k ε). Each draw's experts are aligned to CAVI's.

How good is each q? PSIS k̂ (Yao, Vehtari, Simpson & Gelman 2018) fits a generalised
Pareto tail to the importance ratios p(y, θ)/q(θ), θ ~ q: **k̂ < 0.5** q is close to the
posterior, **0.5–0.7** usable but its spread is doubtful, **> 0.7** q is far from the
posterior (usually too narrow), and its uncertainties should not be trusted.

Small data and short chains here (60 points, 2 chains × 200 draws) so the notebook runs in seconds;
`benchmarks/nuts.py` runs 4 × 1000.
"""),
    code(SETUP),
    code("""
import time

import arviz as az
import pandas as pd

from pyro_moe import diagnostics
from pyro_moe.shapes import circle_points

xy, _ = circle_points([(0, 0), (0.3, -0.2)], [0.5, 1.5], 30, jitter=0.02, seed=0)
fits, seconds = {}, {}
for method, options in [
    ("cavi", {}),
    ("svi", {"max_iter": 1000}),
    ("nuts", {"chains": 2, "warmup": 100, "max_iter": 200}),
]:
    t0 = time.perf_counter()
    with report_convergence():
        fits[method] = pyro_moe.fit_circles(xy, experts=2, method=method, **options)
    seconds[method] = time.perf_counter() - t0
nuts = fits["nuts"]
fits = {m: r.aligned_to(nuts) for m, r in fits.items()}
print(nuts.draws.info["hyper"], "| beta_k =", nuts.noise_precision.numpy().round(1).tolist())
"""),
    md("The posterior of each circle's radius: q of CAVI and SVI beside NUTS's draws."),
    code("""
idata = {m: diagnostics.to_inference_data(r, draws=600) for m, r in fits.items()}
fig = diagnostics.plot_forest(list(idata.values()), var_names=("r",),
                              model_names=list(idata), combined=True)
"""),
    code("""
with diagnostics._quiet_arviz_plotting():
    axes = az.plot_density(list(idata.values()), data_labels=list(idata), var_names=["r"],
                           shade=0.1)
"""),
    md("""
The table: posterior sd of each weight under q against NUTS's (sd ratio VI / NUTS; below 1
is the mean-field under-dispersion), R-hat and bulk ESS of NUTS's draws, k̂ of each q, and
the wall time of each fit.
"""),
    code("""
sd = {m: r.cov.diagonal(dim1=-2, dim2=-1).sqrt().numpy().ravel() for m, r in fits.items()}
summary = az.summary(idata["nuts"], var_names=["w"], kind="diagnostics")
table = pd.DataFrame(
    {
        "sd CAVI / NUTS": sd["cavi"] / sd["nuts"],
        "sd SVI / NUTS": sd["svi"] / sd["nuts"],
        "R-hat (NUTS)": summary["r_hat"].values,
        "bulk ESS (NUTS)": summary["ess_bulk"].values,
    },
    index=summary.index,
)
print(table.round(3).to_string())
for m in ("cavi", "svi"):
    print(f"{m}: k-hat = {diagnostics.psis_khat(fits[m]):.2f}, {seconds[m]:.1f} s")
print(f"nuts: {int(nuts.draws.diverging.sum())} divergences, {seconds['nuts']:.1f} s")
"""),
]


# --------------------------------------------------------------------------- 09
NOTEBOOKS["09_regression"] = [
    md("""
# Regression with a mixture of experts: the motorcycle data

`mcycle` (Silverman 1985, shipped in `pyro_moe.datasets`): head acceleration after a
simulated crash against time, flat, then a violent oscillation, then noise that dies down:
regimes with different noise, what a mixture of experts is for. The built-in
`mixture_of_experts` (a gate prior and one noise precision per expert by default:
[docs/regression.md](../regression.md) says why) on cubic features of time. K chosen by
`select_experts`, a held-out score with `Prediction.log_prob`, the predictive band, and
CAVI, SVI and NUTS side by side on the same model file.
"""),
    code(SETUP),
    code("""
import time

import matplotlib.pyplot as plt

from pyro_moe import datasets

data = datasets.mcycle()
x, y = data.X[:, 0], data.y
mu, sd = x.mean(), x.std()


def design(x):
    z = (x - mu) / sd
    return np.column_stack([z**d for d in range(4)])  # [1, z, z^2, z^3]


rng = np.random.default_rng(0)
test = np.zeros(len(y), bool)
test[rng.choice(len(y), len(y) // 5, replace=False)] = True
print(f"{len(y)} points: {int((~test).sum())} to fit, {int(test.sum())} held out")
"""),
    md("""
**K chosen** on the training points: every K from 1 to 4 fitted, the choice the smallest
admissible K within a margin of the best ELBO + log K! (the table says per K the objective,
whether the fit converged, and whether the choice sits at the search's boundary).
"""),
    code("""
with report_convergence():
    selection = pyro_moe.select_experts(
        "mixture_of_experts", design(x[~test]), y[~test], max_experts=4, seed=0
    )
print(selection.to_markdown())
K = selection.experts
"""),
    md("""
**Held-out score**: the mean log predictive density of the held-out points,
log p(y* | x*, data), from the model file's own likelihood (`Prediction.log_prob`), for the
chosen K against one Bayesian linear model on the same features (K = 1).
"""),
    code("""
scores = {}
for k in sorted({1, K}):
    with report_convergence():
        r = pyro_moe.fit("mixture_of_experts", design(x[~test]), y[~test], experts=k, seed=0)
    scores[k] = float(r.predict(design(x[test])).log_prob(y[test]).mean())
    print(f"K = {k}: held-out log predictive density {scores[k]:.3f} nats/point")
"""),
    md("""
**Three engines on the same file**, all points, K chosen: CAVI (closed form), SVI (its
natural-gradient steps) and NUTS (the exact posterior of the experts at CAVI's gate and
noise precisions). The band is the central 90 % of each predictive distribution.
"""),
    code("""
fits, seconds = {}, {}
grid = np.linspace(x.min(), x.max(), 300)
for method, options in [
    ("cavi", {}),
    ("svi", {}),
    ("nuts", {"chains": 2, "warmup": 150, "max_iter": 300}),
]:
    t0 = time.perf_counter()
    with report_convergence():
        fits[method] = pyro_moe.fit(
            "mixture_of_experts", design(x), y, experts=K, method=method, seed=0, **options
        )
    seconds[method] = time.perf_counter() - t0
fig, axes = plt.subplots(1, 3, figsize=(13, 3.6), sharey=True)
for ax, (method, r) in zip(axes, fits.items()):
    p = r.predict(design(grid))
    band = p.interval(0.9).numpy()
    ax.fill_between(grid, band[:, 0], band[:, 1], alpha=0.3, label="90 % predictive")
    ax.plot(grid, p.mean.numpy(), lw=1.5, label="predictive mean")
    ax.scatter(x, y, s=8, c="k")
    what = "log joint" if method == "nuts" else "F"
    ax.set(title=f"{method.upper()}: {what} = {r.objective:.1f} ({seconds[method]:.1f} s)",
           xlabel=data.feature_names[0])
axes[0].set_ylabel(data.target_name)
axes[0].legend(loc="lower right")
plt.tight_layout()
nuts = fits["nuts"]
print("NUTS: max split R-hat", round(nuts.draws.info["split_rhat_max"], 4),
      "| divergences", int(nuts.draws.diverging.sum()), "|", nuts.draws.info["hyper"])
"""),
    md("""
The NUTS objective is its log joint, not an ELBO (the summary says so). How far each
variational mean lies from NUTS's, in NUTS posterior sd:
"""),
    code("""
w = nuts.draws.w.reshape(-1, *nuts.draws.w.shape[2:])
for method in ("cavi", "svi"):
    gap = ((fits[method].aligned_to(nuts).mean - w.mean(0)).abs() / w.std(0)).max()
    print(f"{method}: max |m - E[w]| / sd = {float(gap):.3f}")
"""),
]


# --------------------------------------------------------------------------- 10
NOTEBOOKS["10_robust_and_classification"] = [
    md("""
# Robust experts, classification experts and an ARD prior, all in closed form

Three model files beyond the Gaussian experts, each fitted by CAVI without a gradient step
on the experts:

1. `robust_experts`: Student-t experts, written as a Gamma scale mixture (a weight λ_i per
   point), so that gross outliers get a small λ_i and little say in the lines
   ([derivation](../derivation.md) §6a);
2. `logistic_experts`: Bernoulli experts for a 0/1 target, fitted through the
   Jaakkola–Jordan bound (§6a), here through the scikit-learn estimator
   `MixtureOfExpertsClassifier`;
3. an **ARD prior** written into an edited copy of a model file: a Gamma precision per
   expert and feature, which CAVI recognises as conjugate from the traced file (§9) and
   fits in closed form.

All data are simulated (`pyro_moe.datasets`), small, and fitted with few restarts.
"""),
    code(SETUP),
    md("""
## 1. Two lines with 20 % gross outliers

`datasets.outlier_lines`: x ~ U(−3, 3), X = [x, 1], the line w = [−1, −1] left of 0 and
[1, 2] right of it (noise sd 0.3), then 20 % of the targets replaced by U(−15, 15). The
Gaussian `mixture_of_experts` file and the `robust_experts` file (ν = 4) on the same data,
K = 2, two restarts each.
"""),
    code("""
import time

import matplotlib.pyplot as plt
import pandas as pd

from pyro_moe import datasets

X, y, W, outlier = datasets.outlier_lines(300, share=0.2, seed=0)
print(f"{len(y)} points, {int(outlier.sum())} of them outliers; true [slope, intercept]:",
      W.tolist())
lines, seconds = {}, {}
for name in ("mixture_of_experts", "robust_experts"):
    t0 = time.perf_counter()
    with report_convergence():
        lines[name] = pyro_moe.fit(name, X, y, experts=2, n_init=2, seed=0)
    seconds[name] = time.perf_counter() - t0
"""),
    md("""
How far each fitted line is from the truth, in its own posterior sd: |m − w| / sd for the
slope and intercept of each line (the experts matched to the lines by their slopes). A
value near 1 or 2 is what the posterior allows; far above it, the outliers have pulled the
line away and the posterior is confidently wrong.
"""),
    code("""
def line_errors(result):
    \"\"\"|m - w| / sd (2 lines x [slope, intercept]), experts matched to W by slope.\"\"\"
    order = np.argsort(result.mean[:, 0].numpy())
    m = result.mean.numpy()[order]
    sd = result.cov.diagonal(dim1=-2, dim2=-1).sqrt().numpy()[order]
    return np.abs(m - W[np.argsort(W[:, 0])]) / sd


rows = {}
for name, r in lines.items():
    err = line_errors(r)
    rows[name] = {
        "slope, x < 0": err[0, 0], "intercept, x < 0": err[0, 1],
        "slope, x > 0": err[1, 0], "intercept, x > 0": err[1, 1],
        "seconds": seconds[name],
    }
    print(f"{name}: noise scale 1/sqrt(beta) =", np.round(r.noise_precision.numpy() ** -0.5, 2))
print("line error in posterior sd:")
print(pd.DataFrame(rows).T.round(2).to_string())
"""),
    md("""
The fits: each expert's mean line, drawn thick where the gate gives it the larger weight;
the true lines dashed, the outliers as red crosses. The Gaussian file has a noise precision
per expert: one expert widens into a flat background for the outliers (its noise scale
above), the line left of 0 is lost and the other is off by about 5 posterior sd. The robust
file's scale weights λ_i discount the outliers instead, and both lines are found.
"""),
    code("""
grid = np.linspace(-3, 3, 200)
G = np.column_stack([grid, np.ones_like(grid)])
fig, axes = plt.subplots(1, 2, figsize=(12, 4), sharey=True)
for ax, (name, r) in zip(axes, lines.items()):
    ax.scatter(X[~outlier, 0], y[~outlier], s=8, c="k", label="inliers")
    ax.scatter(X[outlier, 0], y[outlier], s=12, c="tab:red", marker="x", label="outliers")
    for w in W:
        ax.plot(grid, G @ w, "--", c="grey", lw=1)
    gate = r.predict(G).expert_weights.numpy()
    for k, m in enumerate(r.mean.numpy()):
        line = ax.plot(grid, G @ m, lw=1, alpha=0.4)[0]
        ax.plot(grid, np.where(gate[:, k] > 0.5, G @ m, np.nan), lw=3, c=line.get_color(),
                label=f"expert {k}")
    ax.set(title=f"{name}: max line error {line_errors(r).max():.1f} sd", xlabel="x",
           ylim=(-16, 16))
axes[0].set_ylabel("y")
axes[0].legend(loc="upper left")
plt.tight_layout()
"""),
    md("""
## 2. Classification: two gated logistic experts

`datasets.gated_logistic`: P(y = 1 | x) = σ(3x + 3) left of 0 and σ(−3x + 3) right of it, a
peak at x = 0 that one logistic regression on [x, 1] cannot follow. 300 points to fit, 600
held out. `MixtureOfExpertsClassifier` (the `logistic_experts` file, K = 2, its intercept
added like scikit-learn's) against one `LogisticRegression` and the null model (the
training share of 1s), scored by the held-out log-likelihood per point (larger is better;
the classifier's `score` is this, not the accuracy).
"""),
    code("""
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss

from pyro_moe.sklearn import MixtureOfExpertsClassifier

X_fit, y_fit, W_true = datasets.gated_logistic(300, seed=0)
X_test, y_test, _ = datasets.gated_logistic(600, seed=1)
x_fit, x_test = X_fit[:, :1], X_test[:, :1]  # the estimators add the intercept

t0 = time.perf_counter()
with report_convergence():
    clf = MixtureOfExpertsClassifier(experts=2, n_init=2, seed=0).fit(x_fit, y_fit)
print(f"mixture fitted in {time.perf_counter() - t0:.1f} s,",
      f"{clf.n_iter_} iterations, Jaakkola-Jordan bound {clf.result_.objective:.2f}")
logreg = LogisticRegression().fit(x_fit, y_fit)
share = y_fit.mean()
held_out = {
    "mixture of 2 logistic experts": clf.score(x_test, y_test),
    "one logistic regression": -log_loss(y_test, logreg.predict_proba(x_test)[:, 1]),
    "null (training share of 1s)": -log_loss(y_test, np.full(len(y_test), share)),
}
for name, score in held_out.items():
    print(f"{name:>30}: held-out log-likelihood {score:.3f} nats/point")
"""),
    md("""
P(y = 1 | x): the classifier's posterior predictive (its `predict_proba`, a Monte Carlo
average over q of the file's own Bernoulli likelihood), the logistic regression and the
truth, with the 0/1 labels as ticks; right, the gate g_k(x) that the fit learned (the expert
weights of `clf.predictive`).
"""),
    code("""
grid = np.linspace(-3, 3, 300)[:, None]
truth = 1 / (1 + np.exp(-(np.c_[grid, np.ones_like(grid)] * W_true[(grid[:, 0] > 0) * 1]).sum(1)))
fig, (ax, ax_gate) = plt.subplots(1, 2, figsize=(12, 3.8), gridspec_kw={"width_ratios": [2, 1]})
ax.plot(grid, truth, "--", c="grey", label="truth")
ax.plot(grid, clf.predict_proba(grid)[:, 1], lw=2, label="mixture of 2 logistic experts")
ax.plot(grid, logreg.predict_proba(grid)[:, 1], lw=2, label="one logistic regression")
ax.plot(x_fit, y_fit + np.where(y_fit > 0, 0.03, -0.03), "|", c="k", alpha=0.4)
ax.set(xlabel="x", ylabel="P(y = 1 | x)", ylim=(-0.08, 1.08))
ax.legend(loc="center left")
gate = clf.predictive(grid).expert_weights.numpy()
for k in range(gate.shape[1]):
    ax_gate.plot(grid, gate[:, k], lw=2, label=f"g_{k}(x)")
ax_gate.set(xlabel="x", title="the gate", ylim=(-0.05, 1.05))
ax_gate.legend()
plt.tight_layout()
"""),
    md("""
## 3. An ARD prior, written into a copy of a model file

Automatic relevance determination: each expert's weight j gets its own precision,
α_kj ~ Gamma(a0, b0) (here a0 = b0 = 0.01, vague), w_kj ~ N(w0_kj, 1/α_kj). A feature an
expert does not use gets a large α_kj, which shrinks its weight to 0. Copy
`models/mixture_of_experts.py` and make three edits: import `constraints`, put `alpha` in
the experts' plate before `w` in the model, and give the guide q(α_kj) = Gamma(a_kj, b_kj)
beside q(w_k) (as [Model files](../model_files.md) shows).
"""),
    code("""
import tempfile
from pathlib import Path

from pyro_moe.model_file import MODELS_DIR

source = (MODELS_DIR / "mixture_of_experts.py").read_text()
edits = {  # old line(s) -> new line(s)
    "from torch import nn\\n": "from pyro.distributions import constraints\\nfrom torch import nn\\n",
    '        w = pyro.sample("w", weight_prior(config.hyper("prior_mean"), config.hyper("prior_cov")))\\n': (
        "        vague = config.const(0.01).expand([config.features])\\n"
        '        alpha = pyro.sample("alpha", dist.Gamma(vague, vague).to_event(1))\\n'
        '        w = pyro.sample("w", dist.Normal(config.hyper("prior_mean"), alpha.rsqrt()).to_event(1))\\n'
    ),
    "    parts.weights_guide(config)\\n": (
        "    start = config.const(1.0).expand([config.experts, config.features])\\n"
        '    a = pyro.param("alpha_shape", lambda: start.clone(), constraint=constraints.positive)\\n'
        '    b = pyro.param("alpha_rate", lambda: start.clone(), constraint=constraints.positive)\\n'
        "    with pyro.plate(parts.EXPERTS_PLATE, config.experts) as experts:\\n"
        '        pyro.sample("alpha", dist.Gamma(a, b).to_event(1))\\n'
        "        parts.weights_guide(config, plate=experts)\\n"
    ),
}
for old, new in edits.items():
    assert source.count(old) == 1, old
    source = source.replace(old, new)
path = Path(tempfile.mkdtemp()) / "ard_experts.py"
path.write_text(source)
ard = pyro_moe.load_model(path)
print(path.name, "model and guide:")
start = source.index("def model(")
print(source[start:])
"""),
    md("""
Data: the two lines of section 1 without outliers, and three columns of pure noise that no
expert uses. `fit(..., method="cavi")` reads the traced file, finds α conjugate (it enters
the prior precision of w linearly) and fits q(α) in closed form beside q(W) and q(Z): no
refusal, no gradient step on α.
"""),
    code("""
X2, y2, W2, _ = datasets.outlier_lines(200, share=0.0, seed=0)
rng = np.random.default_rng(1)
features = ["x", "1", "noise 1", "noise 2", "noise 3"]
design = pd.DataFrame(np.c_[X2, rng.standard_normal((len(y2), 3))], columns=features)
t0 = time.perf_counter()
with report_convergence():
    fit_ard = pyro_moe.fit(ard, design, y2, experts=2, method="cavi", n_init=2, seed=0)
print(f"{time.perf_counter() - t0:.1f} s")
print(fit_ard.summary())
"""),
    md("""
The posterior of the ARD precisions, q(α_kj) = Gamma(a_kj, b_kj) from
`result.posterior.site_params["alpha"]`: its mean a/b and sd √a / b per expert and feature,
beside the posterior mean of the weight. The noise columns' precisions are large (weights
shrunk to about 0), the used features' small.
"""),
    code("""
q = fit_ard.posterior.site_params["alpha"]
a, b = q["shape"].numpy(), q["rate"].numpy()
for k in range(fit_ard.experts):
    table = pd.DataFrame(
        {"E[w]": fit_ard.mean[k].numpy(), "E[alpha]": a[k] / b[k], "sd[alpha]": np.sqrt(a[k]) / b[k]},
        index=features,
    )
    print(f"expert {k}:")
    print(table.round(3).to_string(), "\\n")
fig, ax = plt.subplots(figsize=(6, 3))
for k in range(fit_ard.experts):
    ax.bar(np.arange(len(features)) + 0.4 * k, a[k] / b[k], width=0.4, label=f"expert {k}")
ax.set(xticks=np.arange(len(features)) + 0.2, xticklabels=features, yscale="log",
       ylabel="E[alpha] (log scale)", title="ARD precisions")
ax.legend()
plt.tight_layout()
"""),
]


def notebook(name: str) -> nbformat.NotebookNode:
    """The notebook ``name`` as built from its source here, without outputs."""
    nb = new_notebook(cells=copy.deepcopy(NOTEBOOKS[name]))
    for i, cell in enumerate(nb.cells):  # stable ids: a rebuild changes only edited cells
        cell.id = f"{name[:2]}-{i:02d}"
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nb.metadata["language_info"] = {"name": "python"}
    nbformat.validate(nb)
    return nb


def build(names: list[str] | None = None, *, run: bool = True, jobs: int = 2) -> list[Path]:
    """Write the notebooks (those whose name contains one of ``names``; all by default),
    each executed first when ``run`` (``jobs`` kernels at a time); return their paths."""
    chosen = [n for n in NOTEBOOKS if not names or any(part in n for part in names)]

    def one(name: str) -> Path:
        nb = notebook(name)
        path = HERE / f"{name}.ipynb"
        if run:
            seconds = execute(nb, path.name)
            print(f"{path.name}: {seconds:.1f} s", flush=True)
        nbformat.write(nb, path)
        return path

    # Each kernel is its own process: threads are enough to run ``jobs`` of them at once.
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        return list(pool.map(one, chosen))


def kernel_env() -> dict[str, str]:
    """The kernel's environment: one torch thread, and matplotlib's inline backend (so a
    figure becomes an output); an MPLBACKEND set for the shell (Agg) would keep it off."""
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}
    env["OMP_NUM_THREADS"] = "1"
    return env


def execute(nb: nbformat.NotebookNode, label: str) -> float:
    """Run ``nb`` in place in a fresh kernel and strip the volatile metadata; return the
    seconds; raise on an error or on any stderr output (a warning)."""
    from nbclient import NotebookClient

    start = time.perf_counter()
    NotebookClient(
        nb,
        timeout=300,
        kernel_name="python3",
        record_timing=False,
        resources={"metadata": {"path": str(HERE)}},
    ).execute(env=kernel_env())
    seconds = time.perf_counter() - start
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream" and out.get("name") == "stderr":
                raise RuntimeError(f"{label}: stderr output (a warning?):\n{out['text']}")
    nb.metadata["language_info"] = {"name": "python"}
    nbformat.validate(nb)
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--no-execute", action="store_true", help="write the cells only, without outputs"
    )
    parser.add_argument(
        "--jobs", type=int, default=2, help="notebooks executed at once (default: 2)"
    )
    parser.add_argument("names", nargs="*", help="only the notebooks whose name contains one")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    paths = build(args.names, run=not args.no_execute, jobs=args.jobs)
    print(f"{len(paths)} notebooks in {time.perf_counter() - start:.0f} s")
    print("wrote", ", ".join(p.name for p in paths))
    return 0


if __name__ == "__main__":
    sys.exit(main())
