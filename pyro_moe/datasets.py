"""Real regression data sets with regimes or changing noise, for examples and benchmarks.

Each loader returns a :class:`Dataset`: the input ``X`` (N, 1), the target ``y`` (N,),
the columns' names and a description with its citation. Nothing is downloaded: the four
real data sets are small CSV files shipped in ``pyro_moe/data/`` (their provenance and
licence in ``pyro_moe/data/README.md``), and ``npreg`` is simulated as published.

* :func:`mcycle`: head acceleration after a simulated motorcycle crash against time
  (Silverman 1985; R's MASS): flat, then a dip and a swing, with noise that grows by a
  factor of ~10 from one regime to the next.
* :func:`faithful`: Old Faithful's eruption duration against the waiting time before it
  (Härdle 1991; R's datasets): two regimes (short and long eruptions) that overlap in x.
* :func:`engel`: Belgian working-class households' food expenditure against income
  (Engel 1857, Koenker & Bassett 1982; R's quantreg): the spread grows with income, and
  a few households lie far from the rest.
* :func:`gagurine`: the concentration of a chemical (GAG) in the urine of 314 children
  against their age (Venables & Ripley; R's MASS): a steep fall in the first years, then
  a flat tail, with a spread that shrinks about fivefold as the level falls.
* :func:`npreg`: flexmix's NPreg (Leisch 2004): two regression lines that cross, a
  straight one and a parabola, over the same x.

The design a mixture of experts needs (an intercept, polynomial or spline features) is
the caller's: :class:`pyro_moe.sklearn.MixtureOfExpertsRegressor` adds the intercept, a
scikit-learn ``Pipeline`` the rest.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from importlib import resources

import numpy as np

from .errors import InputError

__all__ = [
    "DATASETS",
    "Dataset",
    "engel",
    "faithful",
    "gagurine",
    "gated_logistic",
    "load",
    "mcycle",
    "npreg",
    "outlier_lines",
]


@dataclass(frozen=True)
class Dataset:
    """One regression data set: X (N, n) float64, y (N,) float64, their names, and the
    description with its source and citation."""

    name: str
    X: np.ndarray
    y: np.ndarray
    feature_names: tuple[str, ...]
    target_name: str
    description: str

    def __iter__(self):
        """``X, y = dataset``."""
        return iter((self.X, self.y))


def _read_csv(filename: str, x: str, y: str) -> tuple[np.ndarray, np.ndarray]:
    """Columns ``x`` and ``y`` of the shipped CSV file ``pyro_moe/data/<filename>``."""
    text = resources.files("pyro_moe").joinpath("data", filename).read_text(encoding="utf-8")
    rows = list(csv.DictReader(text.splitlines()))
    X = np.array([[float(r[x])] for r in rows], dtype=np.float64)
    t = np.array([float(r[y]) for r in rows], dtype=np.float64)
    return X, t


def mcycle() -> Dataset:
    """The motorcycle data: 133 measurements of head acceleration (g) against time (ms)
    after a simulated motorcycle crash, used to test crash helmets.

    Silverman, B. W. (1985) Some aspects of the spline smoothing approach to
    non-parametric curve fitting. JRSS B 47, 1-52. Shipped as ``mcycle`` in R's MASS
    (Venables & Ripley 2002, Modern Applied Statistics with S).
    """
    X, y = _read_csv("mcycle.csv", "times", "accel")
    return Dataset("mcycle", X, y, ("times",), "accel", mcycle.__doc__ or "")


def faithful() -> Dataset:
    """Old Faithful geyser: eruption duration (min) against the waiting time to it (min),
    272 eruptions.

    Härdle, W. (1991) Smoothing Techniques with Implementation in S. Springer; Azzalini,
    A. and Bowman, A. W. (1990) A look at some data on the Old Faithful geyser. Applied
    Statistics 39, 357-365. Shipped as ``faithful`` in R's datasets package.
    """
    X, y = _read_csv("faithful.csv", "waiting", "eruptions")
    return Dataset("faithful", X, y, ("waiting",), "eruptions", faithful.__doc__ or "")


def engel() -> Dataset:
    """Engel's food expenditure data: 235 Belgian working-class households' annual food
    expenditure against their income (Belgian francs).

    Koenker, R. and Bassett, G. (1982) Robust tests for heteroscedasticity based on
    regression quantiles. Econometrica 50, 43-61 (from Engel, E. 1857). Shipped as
    ``engel`` in R's quantreg (and in statsmodels).
    """
    X, y = _read_csv("engel.csv", "income", "foodexp")
    return Dataset("engel", X, y, ("income",), "foodexp", engel.__doc__ or "")


def gagurine() -> Dataset:
    """The concentration of a chemical, GAG, in the urine of 314 children against their
    age (years, 0 to 17), collected to chart the normal range a paediatrician can check a
    child against.

    Data by courtesy of S. Prosser (Paediatrics Department, University of Oxford), shipped
    as ``GAGurine`` in R's MASS: Venables, W. N. and Ripley, B. D. (2002) Modern Applied
    Statistics with S, 4th ed. Springer.
    """
    X, y = _read_csv("gagurine.csv", "Age", "GAG")
    return Dataset("gagurine", X, y, ("Age",), "GAG", gagurine.__doc__ or "")


def npreg(n: int = 100, seed: int = 0) -> Dataset:
    """flexmix's NPreg, simulated as published (``ExNPreg(n)`` in flexmix; ``data(NPreg)``
    is one draw with n = 100): 2n points, x ~ U(0, 10),

        class 1 (first n):  y = 5 x + 3 e
        class 2 (last n):   y = 40 - (x - 5)^2 + 3 e = 15 + 10 x - x^2 + 3 e,

    with e ~ N(0, 1). As in the R source (``c(...) + 3 * rnorm(n)``), the n noise draws
    are recycled: point i and point n + i share e_i. Numpy's generator (``seed``) replaces
    R's, so the draw is not flexmix's stored one.

    Leisch, F. (2004) FlexMix: A general framework for finite mixture models and latent
    class regression in R. Journal of Statistical Software 11(8).
    """
    if not isinstance(n, int | np.integer) or isinstance(n, bool) or n < 2 or n % 2:
        raise InputError(f"n must be an even integer >= 2 (as in flexmix), got {n!r}")
    rng = np.random.default_rng(seed)
    x = rng.uniform(0.0, 10.0, 2 * n)
    e = rng.standard_normal(n)
    mean = np.concatenate([5.0 * x[:n], 40.0 - (x[n:] - 5.0) ** 2])
    y = mean + 3.0 * np.concatenate([e, e])
    return Dataset("npreg", x[:, None], y, ("x",), "yn", npreg.__doc__ or "")


def outlier_lines(n: int = 400, share: float = 0.2, seed: int = 0):
    """Two lines switched by a gate, with gross outliers (robust experts):
    x ~ U(-3, 3), X = [x, 1], expert k = [x > 0] with W = [[-1, -1], [1, 2]],
    y = w_k^T x + 0.3 e; then a share of the points, drawn at random, get
    y ~ U(-15, 15) instead. Returns (X (n, 2), y (n,), W (2, 2), outlier mask (n,))."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-3.0, 3.0, n)
    X = np.c_[x, np.ones(n)]
    W = np.array([[-1.0, -1.0], [1.0, 2.0]])
    y = (X * W[(x > 0).astype(int)]).sum(1) + 0.3 * rng.standard_normal(n)
    out = rng.random(n) < share
    y[out] = rng.uniform(-15.0, 15.0, int(out.sum()))
    return X, y, W, out


def gated_logistic(n: int = 600, seed: int = 0):
    """0/1 targets from two logistic experts switched by a gate (classification experts): x ~ U(-3, 3), X = [x, 1], expert k = [x > 0] with logits w_k^T x,
    W = [[3, 3], [-3, 3]]: P(y = 1) rises to a peak at x = 0 and falls after it, which no
    one logistic regression on [x, 1] can follow. Returns (X (n, 2), y (n,), W (2, 2))."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-3.0, 3.0, n)
    X = np.c_[x, np.ones(n)]
    W = np.array([[3.0, 3.0], [-3.0, 3.0]])
    p = 1.0 / (1.0 + np.exp(-(X * W[(x > 0).astype(int)]).sum(1)))
    return X, (rng.random(n) < p).astype(np.float64), W


#: the loaders by name
DATASETS = {
    "mcycle": mcycle,
    "faithful": faithful,
    "engel": engel,
    "npreg": npreg,
    "gagurine": gagurine,
}


def load(name: str) -> Dataset:
    """The data set called ``name`` (one of :data:`DATASETS`)."""
    if name not in DATASETS:
        raise InputError(f"unknown data set {name!r}; known: {', '.join(DATASETS)}")
    return DATASETS[name]()
