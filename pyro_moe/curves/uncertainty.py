"""Posterior uncertainty of circles (and conics) in pixel units, from q(w_k) = N(m_k, B_k).

Circles (delta method). With standardized weights $w = (w_1, w_2, w_3)$,

$$x_0 = w_1/2,\\qquad y_0 = w_2/2,\\qquad r = \\sqrt{w_3 + x_0^2 + y_0^2},$$

the Jacobian $J = \\partial(x_0, y_0, r)/\\partial w$ at $m_k$ is

$$
    J = \\begin{pmatrix} 1/2 & 0 & 0\\\\ 0 & 1/2 & 0\\\\
        x_0/(2r) & y_0/(2r) & 1/(2r) \\end{pmatrix},
$$

and $\\operatorname{Cov}(x_0, y_0, r) \\approx J B_k J^\\top$. Pixels:
$x_{0,px} = c_x + \\sigma x_0$, $y_{0,px} = c_y + \\sigma y_0$,
$r_{px} = \\sigma r$, so every standard deviation is multiplied by the scale
$\\sigma$ (covariance by $\\sigma^2$). Intervals: estimate
$\\pm z_{(1+\\text{level})/2}\\,\\text{sd}$. An invalid circle ($r^2 < 0$ at
$m_k$) has no radius: its ``r``, ``sd_r`` and ``r_interval`` are None (never NaN).

The delta method is first order: it is accurate while sd(r) ≪ r (checked against
:func:`circle_samples`, 20000 draws). q(w_k) is the posterior at point-estimated
hyperparameters (β, A, w0), so intervals ignore their uncertainty. They describe the
*model's* noise (Gaussian in $t = x^2 + y^2$); see ``tests/test_uncertainty.py`` for
coverage on data drawn from the model and on jittered circles.

A circle the curve functions refined (:meth:`pyro_moe.CurveFit.refined`: the weighted
geometric least-squares circle of its points) is reported with that fit's own covariance
$\\hat\\sigma_k^2 (J^\\top R_k J)^{-1}$ (pixels; the Laplace approximation under Gaussian
radial noise, the responsibilities held fixed), not the delta method at $m_k$: the sds
belong to the estimate reported. Measured (``benchmarks/sparse_refine.py``,
``benchmarks/results/scenes_sparse_refine.md``, 150 seeds per kind, K given): 95 %
coverage of (x0, y0, r) on the "two sparse jittered arcs" (300 circles) 0.95 / 0.93 /
0.92, where the delta method at the posterior mean covered its (algebraic) circles'
0.95 / 0.91 / 0.92; on "jitter 2.5 px, apart 3" (450 circles) r's coverage went from 0.71
(the Kasa bias of r) to 0.95, on "jitter 1.5-2.5 px, concentric 2" from 0.85 to 0.93.
:func:`circle_samples` and the diagnostics' draws stay draws of the model's posterior
q(w_k).

Conics (:func:`conic_uncertainty`): the same with a central-difference Jacobian of
(centre, semi-axes, angle) in pixel units with respect to the five study-form weights.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

from ..errors import InputError
from ..shapes.curves import circle_parameters, conic_from_weights, conic_to_pixels
from ..shapes.points import Standardization
from .result import CurveFit

__all__ = [
    "CircleUncertainty",
    "ConicUncertainty",
    "circle_jacobian",
    "circle_samples",
    "circle_uncertainty",
    "conic_uncertainty",
    "curve_uncertainty",
]


def _z(level: float) -> float:
    if not 0 < level < 1:
        raise InputError(f"level must be in (0, 1), got {level}")
    return NormalDist().inv_cdf(0.5 + level / 2)


@dataclass(frozen=True)
class CircleUncertainty:
    """One circle with delta-method standard deviations and intervals, in pixel units.

    ``r``, ``sd_r`` and ``r_interval`` are None for an invalid circle (r^2 < 0).
    ``cov`` is the 3x3 covariance of (x0, y0, r), or the 2x2 one of (x0, y0) when invalid.
    """

    x0: float
    y0: float
    r: float | None
    sd_x0: float
    sd_y0: float
    sd_r: float | None
    level: float
    x0_interval: tuple[float, float]
    y0_interval: tuple[float, float]
    r_interval: tuple[float, float] | None
    cov: np.ndarray
    valid: bool = True

    def as_dict(self) -> dict[str, object]:
        """Plain-python values (None where undefined; never NaN)."""
        return {
            "x0": self.x0,
            "y0": self.y0,
            "r": self.r,
            "valid": self.valid,
            "sd_x0": self.sd_x0,
            "sd_y0": self.sd_y0,
            "sd_r": self.sd_r,
            "level": self.level,
            "x0_interval": list(self.x0_interval),
            "y0_interval": list(self.y0_interval),
            "r_interval": None if self.r_interval is None else list(self.r_interval),
        }


def _circle_standardization(result: CurveFit) -> Standardization:
    if set(_kinds(result)) != {"circle"}:
        raise InputError(
            "circle uncertainty needs a fit whose experts are all circles (fit_circles); "
            "for a mix of kinds use curve_uncertainty"
        )
    return result.geometry.standardization


def _kinds(result) -> list:
    """The experts' kinds of a curve fit; none for anything else (a core FitResult)."""
    return list(result.expert_kinds) if isinstance(result, CurveFit) else []


def _posteriors(result: CurveFit, size: int | None = None):
    """(m_k, B_k) per expert as float numpy arrays, cut to the first ``size`` weights (an
    expert with its own feature map has its n_k weights first, then padding)."""
    means = result.mean.detach().cpu().numpy().astype(float)
    covs = result.cov.detach().cpu().numpy().astype(float)
    if size is not None:
        means, covs = means[:, :size], covs[:, :size, :size]
    return list(zip(means, covs, strict=True))


def circle_jacobian(w: np.ndarray) -> np.ndarray | None:
    """$J = \\partial(x_0, y_0, r)/\\partial w$ (3, 3) at standardized weights w;
    None when $r^2 = w_3 + x_0^2 + y_0^2 \\le 0$."""
    x0, y0 = 0.5 * w[0], 0.5 * w[1]
    r2 = w[2] + x0 * x0 + y0 * y0
    if not r2 > 0:
        return None
    r = math.sqrt(r2)
    return np.array([[0.5, 0.0, 0.0], [0.0, 0.5, 0.0], [x0 / (2 * r), y0 / (2 * r), 1.0 / (2 * r)]])


def circle_uncertainty(result: CurveFit, level: float = 0.95) -> list[CircleUncertainty]:
    """Per expert: (x0, y0, r) in pixels with delta-method sds and ``level`` intervals.

    $\\operatorname{Cov}_{px} = \\sigma^2 J B_k J^\\top$ with J from
    :func:`circle_jacobian` at $m_k$, B_k = ``result.cov[k]`` (see module docstring); a
    refined circle (:meth:`pyro_moe.CurveFit.refined`) with its geometric fit's covariance.
    """
    st = _circle_standardization(result)
    return [
        _refined(result, k, level) or _circle(m, B, st, level)
        for k, (m, B) in enumerate(_posteriors(result, 3))
    ]


def _refined(result: CurveFit, k: int, level: float) -> CircleUncertainty | None:
    """Expert k's refined circle with its geometric fit's covariance (module docstring);
    None when the fit did not refine it."""
    if k not in result.refined_experts():
        return None
    x0, y0, r = (float(v) for v in result.refinement[0][k])
    return _summary(x0, y0, r, np.array(result.refinement[1][k], dtype=float), level)


def _circle(m: np.ndarray, B: np.ndarray, st: Standardization, level: float) -> CircleUncertainty:
    """One circle expert's delta-method summary (see :func:`circle_uncertainty`)."""
    x0, y0, r_px = (float(v) for v in circle_parameters(m, st))
    J = circle_jacobian(m)
    valid = J is not None
    if J is None:  # no radius: the centre's 2x2 block only
        J = np.array([[0.5, 0.0, 0.0], [0.0, 0.5, 0.0]])
    cov = st.scale**2 * J @ B @ J.T
    return _summary(x0, y0, r_px if valid else None, cov, level, valid)


def _summary(
    x0: float, y0: float, r: float | None, cov: np.ndarray, level: float, valid: bool = True
) -> CircleUncertainty:
    """(x0, y0, r) with the sds of ``cov`` and their ``level`` intervals x +- z sd (r None:
    no radius, ``cov`` the centre's 2x2 block)."""
    z = _z(level)
    sd = [float(v) for v in np.sqrt(np.clip(np.diag(cov), 0, None))]
    sd_r = sd[2] if r is not None else None
    return CircleUncertainty(
        x0=x0,
        y0=y0,
        r=r,
        sd_x0=sd[0],
        sd_y0=sd[1],
        sd_r=sd_r,
        level=level,
        x0_interval=(x0 - z * sd[0], x0 + z * sd[0]),
        y0_interval=(y0 - z * sd[1], y0 + z * sd[1]),
        r_interval=None if r is None or sd_r is None else (r - z * sd_r, r + z * sd_r),
        cov=cov,
        valid=valid,
    )


def circle_samples(result: CurveFit, draws: int = 20000, seed: int = 0) -> np.ndarray:
    """Draws of (x0, y0, r) in pixel units from q(w_k) = N(m_k, B_k): array (K, draws, 3).

    ``r`` is NaN in the draws whose radicand $w_3 + x_0^2 + y_0^2$ is negative (no
    real circle); use ``np.nanstd`` or drop them.
    """
    if draws < 1:
        raise InputError(f"draws must be >= 1, got {draws}")
    st = _circle_standardization(result)
    rng = np.random.default_rng(seed)
    posteriors = _posteriors(result, 3)
    out = np.empty((len(posteriors), draws, 3))
    for k, (m, B) in enumerate(posteriors):
        w = rng.multivariate_normal(m, 0.5 * (B + B.T), size=draws, method="eigh")
        out[k] = circle_parameters(w, st)
    return out


# --------------------------------------------------------------------------- conics


@dataclass(frozen=True)
class ConicUncertainty:
    """A conic's geometry in pixel units with delta-method sds (numerical Jacobian).

    ``values`` / ``sd`` map ``cx, cy, a, b, angle`` (angle in radians) to numbers, or are
    None when the conic is not an ellipse or hyperbola, or its kind changes within the
    finite-difference steps (then the delta method does not apply).
    """

    kind: str
    values: dict[str, float] | None
    sd: dict[str, float] | None
    level: float
    intervals: dict[str, tuple[float, float]] | None

    def as_dict(self) -> dict[str, object]:
        return {
            "kind": self.kind,
            "values": self.values,
            "sd": self.sd,
            "level": self.level,
            "intervals": None
            if self.intervals is None
            else {k: list(v) for k, v in self.intervals.items()},
        }


_CONIC_FIELDS = ("cx", "cy", "a", "b", "angle")


def _conic_geometry(w: np.ndarray, st) -> tuple[str, np.ndarray | None]:
    c = conic_to_pixels(conic_from_weights(w), st)
    if c.kind not in ("ellipse", "hyperbola") or c.center is None or c.semi_axes is None:
        return c.kind, None
    return c.kind, np.array([*c.center, *c.semi_axes, c.angle], dtype=float)


def conic_uncertainty(
    result: CurveFit, level: float = 0.95, rel_step: float = 1e-4
) -> list[ConicUncertainty]:
    """Per expert: centre, semi-axes and angle (pixels, radians) with delta-method sds.

    $\\operatorname{Cov} \\approx J B_k J^\\top$, J by central differences with step
    ``rel_step`` times the posterior sd of each weight (the angle difference is wrapped
    to (-pi/2, pi/2]). The angle of a near-circle is ill-defined and its sd large.
    """
    if set(_kinds(result)) != {"conic"}:
        raise InputError(
            "conic uncertainty needs a fit whose experts are all conics (fit_conics); "
            "for a mix of kinds use curve_uncertainty"
        )
    st = result.geometry.standardization
    return [_conic(m, B, st, level, rel_step) for m, B in _posteriors(result, 5)]


def _conic(
    m: np.ndarray, B: np.ndarray, st: Standardization, level: float, rel_step: float
) -> ConicUncertainty:
    """One conic expert's delta-method summary (see :func:`conic_uncertainty`)."""
    z = _z(level)
    kind, g0 = _conic_geometry(m, st)
    if g0 is None:
        return ConicUncertainty(kind, None, None, level, None)
    J = np.empty((5, len(m)))
    for j in range(len(m)):
        h = rel_step * max(math.sqrt(max(B[j, j], 0.0)), 1e-12)
        e = np.zeros(len(m))
        e[j] = h
        kp, gp = _conic_geometry(m + e, st)
        km, gm = _conic_geometry(m - e, st)
        if gp is None or gm is None or kp != kind or km != kind:
            return ConicUncertainty(kind, None, None, level, None)
        d = gp - gm
        d[4] = (d[4] + math.pi / 2) % math.pi - math.pi / 2
        J[:, j] = d / (2 * h)
    cov = J @ B @ J.T
    sd = np.sqrt(np.clip(np.diag(cov), 0, None))
    values = {f: float(v) for f, v in zip(_CONIC_FIELDS, g0, strict=True)}
    sds = {f: float(s) for f, s in zip(_CONIC_FIELDS, sd, strict=True)}
    intervals = {f: (values[f] - z * sds[f], values[f] + z * sds[f]) for f in _CONIC_FIELDS}
    return ConicUncertainty(kind, values, sds, level, intervals)


def curve_uncertainty(
    result: CurveFit, level: float = 0.95, rel_step: float = 1e-4
) -> list[CircleUncertainty | ConicUncertainty | None]:
    """Per expert, by its kind: a :class:`CircleUncertainty` for a circle expert, a
    :class:`ConicUncertainty` for a conic (ellipse) expert, None for other kinds (a line
    expert's (a, c) sds are ``sqrt(diag(result.cov[k][:2, :2]))`` in standard units)."""
    if not isinstance(result, CurveFit):
        raise InputError("this result was not fitted on shape data (no curve geometry)")
    st = result.geometry.standardization
    out: list[CircleUncertainty | ConicUncertainty | None] = []
    for k, (kind, (m, B)) in enumerate(zip(result.expert_kinds, _posteriors(result), strict=True)):
        if kind == "circle":
            out.append(_refined(result, k, level) or _circle(m[:3], B[:3, :3], st, level))
        elif kind == "conic":
            out.append(_conic(m[:5], B[:5, :5], st, level, rel_step))
        else:
            out.append(None)
    return out
