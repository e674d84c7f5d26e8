"""Circles and conics as linear regressions, and back.

Circle. $(x - x_0)^2 + (y - y_0)^2 = r^2$ is the linear regression

$$t = x^2 + y^2 = w_1 x + w_2 y + w_3,\\qquad X = [x, y, 1],$$

with $w = (2x_0,\\ 2y_0,\\ r^2 - x_0^2 - y_0^2)$. Inverse:
$x_0 = w_1/2,\\ y_0 = w_2/2,\\ r = \\sqrt{w_3 + x_0^2 + y_0^2}$; the circle is
*invalid* (no real points) when $w_3 + x_0^2 + y_0^2 < 0$.

Conic (the study's form). $x^2 = B'xy + C'y^2 + D'x + E'y + F'$, i.e.

$$t = x^2,\\qquad X = [xy,\\ y^2,\\ x,\\ y,\\ 1],\\qquad w = (B', C', D', E', F'),$$

which is the general conic $A x^2 + B xy + C y^2 + D x + E y + F = 0$ with
$A = 1,\\ B = -B',\\ C = -C',\\ D = -D',\\ E = -E',\\ F = -F'$. (Conics with
$A = 0$, e.g. $y = x^2$ rotated by 90°, cannot be written in this form.)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from pyro_moe.errors import InputError
from pyro_moe.shapes.points import Standardization, validate_points

__all__ = [
    "CONIC_KINDS",
    "Circle",
    "Conic",
    "Line",
    "circle_design",
    "circle_from_weights",
    "circle_to_pixels",
    "circle_weights",
    "circles_from_weights",
    "conic_design",
    "conic_from_coefficients",
    "conic_from_weights",
    "conic_to_pixels",
    "conic_weights_from_geometry",
    "geometric_circles",
    "kasa_corrected_radius",
    "line_from_weights",
    "radial_noise",
]

CONIC_KINDS = ("ellipse", "parabola", "hyperbola", "degenerate")

# Relative tolerances of the conic classification (see conic_from_coefficients).
DEGENERATE_RTOL = 1e-9
PARABOLA_RTOL = 1e-9


def _weights(w: object, k: int, what: str) -> np.ndarray:
    try:
        arr = np.asarray(w, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{what} weights must be {k} numbers: {exc}") from None
    if arr.shape != (k,):
        raise InputError(f"{what} weights must be {k} numbers, got shape {np.shape(w)}")
    if not np.isfinite(arr).all():
        raise InputError(f"{what} weights contain NaN or infinite values: {arr.tolist()}")
    return arr


# --------------------------------------------------------------------------- circles


def circle_design(xy: object) -> tuple[np.ndarray, np.ndarray]:
    """Design of the circle regression: $X = [x, y, 1]$ (N, 3), $t = x^2 + y^2$.

    Needs at least 3 finite points (3 unknowns); raises InputError otherwise.
    """
    pts = validate_points(xy, 0)
    if pts.shape[0] < 3:
        raise InputError(f"need at least 3 points to fit a circle (3 unknowns), got {pts.shape[0]}")
    x, y = pts[:, 0], pts[:, 1]
    X = np.column_stack([x, y, np.ones_like(x)])
    return X, x * x + y * y


@dataclass(frozen=True)
class Circle:
    """A circle $(x - x_0)^2 + (y - y_0)^2 = r^2$.

    ``valid`` is False when the weights it came from give $r^2 < 0$; then ``r`` is
    0.0 (never NaN) and :meth:`as_dict` / ``str`` show ``"invalid"``.
    """

    x0: float
    y0: float
    r: float
    valid: bool = True

    def as_dict(self) -> dict[str, float | bool | str]:
        """``{"x0", "y0", "r", "valid"}``; ``r`` is the string ``"invalid"`` for an invalid
        circle, so a table never shows NaN or a misleading 0."""
        return {
            "x0": float(self.x0),
            "y0": float(self.y0),
            "r": float(self.r) if self.valid else "invalid",
            "valid": bool(self.valid),
        }

    def __str__(self) -> str:
        if not self.valid:
            return f"Circle(invalid: centre ({self.x0:.4g}, {self.y0:.4g}), r^2 < 0)"
        return f"Circle(x0={self.x0:.4g}, y0={self.y0:.4g}, r={self.r:.4g})"

    def weights(self) -> np.ndarray:
        """The regression weights $(2x_0, 2y_0, r^2 - x_0^2 - y_0^2)$."""
        return circle_weights(self.x0, self.y0, self.r)

    def to_pixels(self, standardization: Standardization) -> Circle:
        """This circle (in standard units) in pixel units; see :func:`circle_to_pixels`."""
        return circle_to_pixels(self, standardization)

    def to_standard(self, standardization: Standardization) -> Circle:
        """This circle (in pixel units) in standard units."""
        x0, y0, r = standardization.circle_to_standard(self.x0, self.y0, self.r)
        return Circle(x0, y0, r if self.valid else 0.0, self.valid)


def circle_weights(x0: float, y0: float, r: float) -> np.ndarray:
    """Weights of a circle: $w = (2x_0,\\ 2y_0,\\ r^2 - x_0^2 - y_0^2)$."""
    return np.array([2.0 * x0, 2.0 * y0, r * r - x0 * x0 - y0 * y0], dtype=np.float64)


def circle_from_weights(w: object) -> Circle:
    """Circle from weights: $x_0 = w_1/2,\\ y_0 = w_2/2,\\
    r = \\sqrt{w_3 + x_0^2 + y_0^2}$; ``valid=False, r=0.0`` when the radicand is < 0.

    Raises InputError for non-finite weights or a wrong length.
    """
    arr = _weights(w, 3, "circle")
    x0, y0 = 0.5 * arr[0], 0.5 * arr[1]
    r2 = arr[2] + x0 * x0 + y0 * y0
    if r2 < 0.0:
        return Circle(float(x0), float(y0), 0.0, False)
    return Circle(float(x0), float(y0), float(math.sqrt(r2)), True)


def circle_parameters(W: object, standardization: Standardization | None = None) -> np.ndarray:
    """(x0, y0, r) for any stack of circle weights, shape (..., 3) for W of shape (..., 3).

    Vectorised :func:`circle_from_weights` for posterior draws and trajectories: ``r`` is
    NaN where the radicand is negative, so statistics over draws can drop those (tables
    use :class:`Circle`, whose invalid circles carry no NaN). With ``standardization`` the
    parameters are in pixel units.
    """
    w = np.asarray(W, dtype=float)
    x0, y0 = 0.5 * w[..., 0], 0.5 * w[..., 1]
    r2 = w[..., 2] + x0 * x0 + y0 * y0
    r = np.sqrt(np.where(r2 >= 0, r2, np.nan))
    if standardization is not None:
        c, s = standardization.center, standardization.scale
        x0, y0, r = c[0] + s * x0, c[1] + s * y0, s * r
    return np.stack([x0, y0, r], -1)


def kasa_corrected_radius(r: float, target_variance: float) -> float | None:
    """The radius corrected for the Kasa bias: $\\hat r_c = (\\hat r^4 - v)^{1/4}$.

    The circle regression of $t = x^2 + y^2$ on $[x, y, 1]$ (Kasa's fit) over-estimates r
    when the points are noisy: with $p = c + r u + \\varepsilon$, $|u| = 1$ and isotropic
    noise $\\varepsilon \\sim N(0, \\sigma^2 I)$,
    $|p - c|^2 = r^2 + 2r\\,u^\\top\\varepsilon + |\\varepsilon|^2$, so the fitted
    $\\hat r^2 \\approx E|p - c|^2 = r^2 + 2\\sigma^2$ ($\\hat r \\approx r + \\sigma^2/r$),
    and the target's residual variance is $v = 4r^2\\sigma^2 + 4\\sigma^4$ (the two terms
    are uncorrelated). Eliminating $\\sigma^2$ and $r^2 = \\hat r^2 - 2\\sigma^2$ gives
    $4\\sigma^4 - 4\\hat r^2\\sigma^2 + v = 0$, the smaller root
    $\\sigma^2 = (\\hat r^2 - \\sqrt{\\hat r^4 - v})/2$ and $r^2 = \\sqrt{\\hat r^4 - v}$
    (docs/guide.md, "The Kasa bias"). ``r`` and ``v = 1/beta_k`` (the expert's fitted noise
    variance of t) in one system of units; None when $v \\ge \\hat r^4$ (the noise is too
    large for the expansion: no radius can be read).
    """
    disc = float(r) ** 4 - float(target_variance)
    if not (math.isfinite(disc) and disc > 0.0):
        return None
    return float(disc**0.25)


#: The noise sd of its points about a circle, as a share of its radius, above which the
#: circle is a band of stray points rather than a ring: ``curve_reports``' "poor fit" and
#: the curve fit's further seeded starts (``pyro_moe.curves.fitting.noisy_circles``).
MAX_RELATIVE_NOISE = 0.25


def radial_noise(r: float, target_variance: float) -> float | None:
    """The points' noise sd about a circle, $\\sigma = \\sqrt{(\\hat r^2 -
    \\sqrt{\\hat r^4 - v})/2}$ ($\\approx \\sqrt v / (2\\hat r)$), read from the target's
    residual variance v as in :func:`kasa_corrected_radius`; None when $v \\ge \\hat r^4$."""
    disc = float(r) ** 4 - float(target_variance)
    if not (math.isfinite(disc) and disc > 0.0):
        return None
    s2 = 0.5 * (float(r) ** 2 - math.sqrt(disc))
    return float(math.sqrt(max(s2, 0.0)))


#: Gauss-Newton steps of :func:`geometric_circles` at most, and the step (in units of the
#: circle's radius) below which it stops.
GEOMETRIC_STEPS = 30
GEOMETRIC_TOL = 1e-8


def geometric_circles(
    xy: object, weights: object, start: object
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Weighted geometric least squares of K circles at once (Gauss-Newton from ``start``).

    For points $p_i$ (N, 2), weights $w_{ik} \\ge 0$ (N, K) and starting circles
    $\\theta_k = (x_{0k}, y_{0k}, r_k)$ (K, 3), each circle minimises
    $S_k(\\theta) = \\sum_i w_{ik} d_{ik}^2$ with the geometric residual
    $d_{ik} = |p_i - c_k| - r_k$ (Kasa's algebraic residual $|p_i - c_k|^2 - r_k^2$
    weighs a point by $(|p_i - c_k| + r_k)^2$, so on a short noisy arc it pulls the circle
    to a smaller, shifted one). The step solves
    $(J^\\top W J)\\,\\delta = -J^\\top W d$ with
    $\\partial d / \\partial\\theta = (-(x_i - x_0)/\\rho_i, -(y_i - y_0)/\\rho_i, -1)$,
    $\\rho_i = |p_i - c|$, halved until $S_k$ does not grow.

    Returns (theta (K, 3), cov (K, 3, 3), sigma (K,), ok (K,)): ``cov`` is
    $\\hat\\sigma_k^2 (J^\\top W J)^{-1}$ at the optimum, the Laplace approximation of
    the posterior of $\\theta_k$ under a flat prior and Gaussian radial noise of
    variance $\\hat\\sigma_k^2 = S_k / (\\sum_i w_{ik} - 3)$ with the weights held
    fixed; ``ok`` is False where the weights hold fewer than 4 points' worth, the normal
    matrix is singular or the fit leaves the reals (its rows are ``start``, NaN
    covariance).
    """
    P = np.asarray(xy, dtype=np.float64)
    Wt = np.asarray(weights, dtype=np.float64)
    theta = np.array(start, dtype=np.float64, copy=True).reshape(-1, 3)
    K = theta.shape[0]
    if P.ndim != 2 or P.shape[1] != 2 or Wt.shape != (len(P), K):
        raise InputError(
            f"geometric_circles needs points (N, 2), weights (N, K) and starts (K, 3); got "
            f"{P.shape}, {Wt.shape}, {theta.shape}"
        )
    keep = np.zeros(len(P), dtype=bool)  # points no circle weighs add nothing
    for k in range(K):  # column by column: numpy's any(1) over K columns is far slower
        keep |= Wt[:, k] > 1e-12
    # (K, N) arrays: each circle's sums run along contiguous memory
    # compress: the same rows as P[keep], Wt[keep], several times faster in numpy 2.4
    px, py = P[:, 0].compress(keep), P[:, 1].compress(keep)
    Wt = np.ascontiguousarray(Wt.compress(keep, axis=0).T)
    n = px.size
    mass = Wt.sum(1)
    ok = (mass > 4.0) & np.isfinite(theta).all(1) & (theta[:, 2] > 0)
    theta[~ok] = 1.0

    def moments(th: np.ndarray) -> np.ndarray:
        """(K, 4, 4) the weighted moments F W F^T of F = (u_x, u_y, 1, d) per point at the
        circles th, u = (p - c) / rho: J^T W J = M[:3, :3] (J = -(u_x, u_y, 1)),
        J^T W d = -M[:3, 3], S = M[3, 3]; one batched product instead of a sum per entry."""
        dx = px[None, :] - th[:, 0:1]
        dy = py[None, :] - th[:, 1:2]
        rho = np.maximum(np.sqrt(dx * dx + dy * dy), 1e-12)  # np.hypot is 3x slower
        F = np.empty((K, 4, n))
        np.divide(dx, rho, out=F[:, 0])
        np.divide(dy, rho, out=F[:, 1])
        F[:, 2] = 1.0
        np.subtract(rho, th[:, 2:3], out=F[:, 3])
        return (F * Wt[:, None, :]) @ F.transpose(0, 2, 1)

    M = moments(theta)
    for _ in range(GEOMETRIC_STEPS):
        A = M[:, :3, :3].copy()
        g = M[:, :3, 3]  # -J^T W d
        S = M[:, 3, 3]
        good = ok & (np.abs(np.linalg.det(A)) > 1e-300)
        A[~good] = np.eye(3)
        step = np.linalg.solve(A, g[..., None])[..., 0]
        step[~good] = 0.0
        t = np.ones(K)
        for _half in range(20):  # step halving: S_k never grows
            trial = theta + t[:, None] * step
            new = moments(trial)
            worse = new[:, 3, 3] > S * (1 + 1e-12)
            if not worse.any():
                break
            t = np.where(worse, 0.5 * t, t)
        if worse.any():  # a circle that cannot improve stays; the others move
            t = np.where(worse, 0.0, t)
            trial = theta + t[:, None] * step
            new = moments(trial)
        moved = np.abs(trial - theta).max(1)
        theta = trial
        M = new
        if (moved <= GEOMETRIC_TOL * np.abs(theta[:, 2])).all():
            break
    ok &= np.isfinite(theta).all(1) & (theta[:, 2] > 0)
    A = M[:, :3, :3]
    S = M[:, 3, 3]
    sigma2 = S / np.maximum(mass - 3.0, 1e-12)
    cov = np.full((K, 3, 3), np.nan)
    use = np.flatnonzero(ok)
    try:  # one batched inverse (the same LAPACK solve per matrix); one by one if one fails
        cov[use] = sigma2[use, None, None] * np.linalg.inv(A[use])
    except np.linalg.LinAlgError:
        for k in use:
            try:
                cov[k] = sigma2[k] * np.linalg.inv(A[k])
            except np.linalg.LinAlgError:
                ok[k] = False
    theta[~ok] = np.asarray(start, dtype=np.float64).reshape(-1, 3)[~ok]
    return theta, cov, np.sqrt(sigma2), ok


def circles_from_weights(W: object) -> list[Circle]:
    """One :class:`Circle` per row of a (K, 3) weight matrix."""
    try:
        arr = np.asarray(W, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InputError(f"circle weight matrix must be numeric (K, 3): {exc}") from None
    if arr.ndim == 1 and arr.shape == (3,):
        arr = arr[None, :]
    if arr.ndim != 2 or arr.shape[1] != 3:
        raise InputError(f"circle weight matrix must have shape (K, 3), got {arr.shape}")
    return [circle_from_weights(row) for row in arr]


def circle_to_pixels(circle: Circle, standardization: Standardization) -> Circle:
    """Circle in standard units → pixel units:
    $(c_x + \\sigma x_0,\\ c_y + \\sigma y_0,\\ \\sigma r)$; validity is kept."""
    x0, y0, r = standardization.circle_to_pixels(circle.x0, circle.y0, circle.r)
    return Circle(x0, y0, r if circle.valid else 0.0, circle.valid)


# --------------------------------------------------------------------------- conics


def conic_design(xy: object) -> tuple[np.ndarray, np.ndarray]:
    """Design of the conic regression: $X = [xy,\\ y^2,\\ x,\\ y,\\ 1]$ (N, 5),
    $t = x^2$. Needs at least 5 finite points (5 unknowns)."""
    pts = validate_points(xy, 0)
    if pts.shape[0] < 5:
        raise InputError(f"need at least 5 points to fit a conic (5 unknowns), got {pts.shape[0]}")
    x, y = pts[:, 0], pts[:, 1]
    X = np.column_stack([x * y, y * y, x, y, np.ones_like(x)])
    return X, x * x


def _wrap_angle(theta: float) -> float:
    """Map an axis direction to (-pi/2, pi/2] (an axis is a line: theta ~ theta + pi).

    Directions within 1e-12 rad of -pi/2 are mapped to +pi/2 (round-off in the
    eigenvectors must not flip a vertical axis between the two ends of the interval).
    """
    t = math.fmod(theta, math.pi)
    if t > math.pi / 2:
        t -= math.pi
    if t <= -math.pi / 2 + 1e-12:
        t += math.pi
    return float(min(t, math.pi / 2))


@dataclass(frozen=True, eq=False)
class Conic:
    """A conic $A x^2 + B xy + C y^2 + D x + E y + F = 0$.

    Attributes:
        kind: ``"ellipse"`` (circles included), ``"parabola"``, ``"hyperbola"`` or
            ``"degenerate"`` (line pairs, single points, and imaginary ellipses).
        coefficients: (6,) array ``(A, B, C, D, E, F)``, normalized so ``A = 1``.
        center: ``(x_c, y_c)`` for ellipses and hyperbolas, else None.
        semi_axes: ellipse ``(major, minor)``; hyperbola ``(transverse, conjugate)``;
            else None.
        angle: radians in (-pi/2, pi/2], from +x to the major (ellipse) or transverse
            (hyperbola) axis, or to the symmetry axis of a parabola; 0.0 for a circle;
            None for degenerate conics. With pixel coordinates (y down) a positive
            angle turns clockwise on screen.
    """

    kind: str
    coefficients: np.ndarray
    center: tuple[float, float] | None = None
    semi_axes: tuple[float, float] | None = None
    angle: float | None = None
    matrix: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        coef = np.asarray(self.coefficients, dtype=np.float64).reshape(-1).copy()
        coef.setflags(write=False)
        object.__setattr__(self, "coefficients", coef)
        A, B, C, D, E, F = coef
        M = np.array([[A, B / 2, D / 2], [B / 2, C, E / 2], [D / 2, E / 2, F]])
        M.setflags(write=False)
        object.__setattr__(self, "matrix", M)

    def weights(self) -> np.ndarray:
        """The study-form weights $(B', C', D', E', F') = -(B, C, D, E, F)/A$."""
        A = self.coefficients[0]
        return -self.coefficients[1:] / A

    def evaluate(self, xy: object) -> np.ndarray:
        """Algebraic value $A x^2 + Bxy + Cy^2 + Dx + Ey + F$ at (N, 2) points."""
        pts = validate_points(xy, 0)
        x, y = pts[:, 0], pts[:, 1]
        A, B, C, D, E, F = self.coefficients
        return A * x * x + B * x * y + C * y * y + D * x + E * y + F

    def as_dict(self) -> dict[str, object]:
        """Plain-python summary (no NaN): kind, coefficients, centre, semi-axes, angle."""
        return {
            "kind": self.kind,
            "coefficients": [float(c) for c in self.coefficients],
            "center": self.center,
            "semi_axes": self.semi_axes,
            "angle": self.angle,
        }

    def to_pixels(self, standardization: Standardization) -> Conic:
        """This conic (standard units) in pixel units; see :func:`conic_to_pixels`."""
        return conic_to_pixels(self, standardization)


def conic_from_coefficients(
    coefficients: object,
    *,
    degenerate_rtol: float = DEGENERATE_RTOL,
    parabola_rtol: float = PARABOLA_RTOL,
) -> Conic:
    """Classify the general conic $(A, B, C, D, E, F)$ and compute its geometry.

    With $Q = \\begin{pmatrix}A & B/2\\\\ B/2 & C\\end{pmatrix}$ and
    $M = \\begin{pmatrix}A & B/2 & D/2\\\\ B/2 & C & E/2\\\\ D/2 & E/2 & F
    \\end{pmatrix}$ (coefficients first scaled so that $\\max|M_{ij}| = 1$):

    * degenerate when $|\\det M| \\le \\text{degenerate\\_rtol}$ (a relative test,
      since $\\max|M_{ij}| = 1$); the test is not invariant to the units of x and y,
      so classify in standardized coordinates (which this library does);
    * else, with the eigenvalues $\\lambda_{1,2}$ of $Q$ and the discriminant
      $\\Delta = B^2 - 4AC = -4\\det Q = -4\\lambda_1\\lambda_2$: parabola when
      $\\min|\\lambda_i| \\le \\text{parabola\\_rtol}\\,\\max|\\lambda_i|$, ellipse when
      $\\Delta < 0$ and $(A + C)\\det M < 0$, *degenerate* (imaginary ellipse,
      no real points) when $\\Delta < 0$ and $(A + C)\\det M > 0$, hyperbola
      when $\\Delta > 0$.

    Geometry: the centre solves $Q c = -(D, E)/2$; in centred coordinates the conic
    is $q^\\top Q q + F_c = 0$ with $F_c = \\det M / \\det Q$. With the
    eigen-decomposition $Q = \\sum_i \\lambda_i v_i v_i^\\top$, the semi-axis along
    $v_i$ is $\\sqrt{|F_c/\\lambda_i|}$; for an ellipse the major axis has the
    smallest $|\\lambda_i|$; for a hyperbola the transverse axis is the one with
    $-F_c/\\lambda_i > 0$. The angle is that of the chosen eigenvector.
    Coefficients are returned normalized so $A = 1$ when $A \\ne 0$.
    """
    coef = _weights(coefficients, 6, "conic")
    if not np.any(coef[:3]):
        raise InputError("not a conic: the quadratic coefficients A, B, C are all zero")
    if coef[0] != 0.0:
        coef = coef / coef[0]
    A, B, C, D, E, F = coef
    M = np.array([[A, B / 2, D / 2], [B / 2, C, E / 2], [D / 2, E / 2, F]])
    Mn = M / np.abs(M).max()
    det_n = float(np.linalg.det(Mn))
    if abs(det_n) <= degenerate_rtol:
        return Conic("degenerate", coef)
    Q = M[:2, :2]
    disc = B * B - 4.0 * A * C
    evals, evecs = np.linalg.eigh(Q)
    if np.abs(evals).min() <= parabola_rtol * np.abs(evals).max():
        axis = evecs[:, int(np.argmin(np.abs(evals)))]
        return Conic("parabola", coef, angle=_wrap_angle(math.atan2(axis[1], axis[0])))
    det_Q = float(np.linalg.det(Q))
    det_M = float(np.linalg.det(M))
    center = np.linalg.solve(Q, -0.5 * np.array([D, E]))
    Fc = det_M / det_Q
    if disc < 0.0:
        if (A + C) * det_M > 0.0:
            return Conic("degenerate", coef)  # imaginary ellipse: no real points
        axes = np.sqrt(-Fc / evals)
        order = np.argsort(-axes)
        major, minor = axes[order]
        if math.isclose(major, minor, rel_tol=1e-12):
            angle = 0.0
        else:
            v = evecs[:, order[0]]
            angle = _wrap_angle(math.atan2(v[1], v[0]))
        return Conic(
            "ellipse",
            coef,
            center=(float(center[0]), float(center[1])),
            semi_axes=(float(major), float(minor)),
            angle=angle,
        )
    ratio = -Fc / evals
    i_t = int(np.argmax(ratio))  # transverse: the one with -Fc/lambda > 0
    i_c = 1 - i_t
    v = evecs[:, i_t]
    return Conic(
        "hyperbola",
        coef,
        center=(float(center[0]), float(center[1])),
        semi_axes=(float(math.sqrt(ratio[i_t])), float(math.sqrt(-ratio[i_c]))),
        angle=_wrap_angle(math.atan2(v[1], v[0])),
    )


def conic_from_weights(w: object, **tolerances: float) -> Conic:
    """Conic from the study-form weights $w = (B', C', D', E', F')$:
    coefficients $(1, -B', -C', -D', -E', -F')$, then
    :func:`conic_from_coefficients` (keyword tolerances are passed on)."""
    arr = _weights(w, 5, "conic")
    return conic_from_coefficients(np.concatenate([[1.0], -arr]), **tolerances)


def conic_weights_from_geometry(
    center: Sequence[float],
    semi_axes: Sequence[float],
    angle: float,
    kind: str = "ellipse",
) -> np.ndarray:
    """Study-form weights $(B', C', D', E', F')$ of an ellipse (or hyperbola).

    With $R = R(\\theta)$, $Q = R\\,\\mathrm{diag}(1/a^2, \\pm 1/b^2)R^\\top$
    (``-`` for a hyperbola, ``a`` transverse) the conic is
    $(p - c)^\\top Q (p - c) = 1$, i.e. $A = Q_{11}, B = 2Q_{12}, C = Q_{22},
    (D, E) = -2Qc, F = c^\\top Q c - 1$; then $w = -(B, C, D, E, F)/A$.
    Raises InputError when $A = 0$ (the study form cannot hold that conic).
    """
    if kind not in ("ellipse", "hyperbola"):
        raise InputError(f"kind must be 'ellipse' or 'hyperbola', got {kind!r}")
    c = np.asarray(center, dtype=np.float64).reshape(-1)
    ab = np.asarray(semi_axes, dtype=np.float64).reshape(-1)
    if c.shape != (2,) or ab.shape != (2,) or not (np.isfinite(c).all() and np.isfinite(ab).all()):
        raise InputError("center and semi_axes must be 2 finite numbers each")
    if not (ab > 0).all():
        raise InputError(f"semi-axes must be positive, got {ab.tolist()}")
    ct, st = math.cos(angle), math.sin(angle)
    R = np.array([[ct, -st], [st, ct]])
    sign = 1.0 if kind == "ellipse" else -1.0
    Q = R @ np.diag([1.0 / ab[0] ** 2, sign / ab[1] ** 2]) @ R.T
    A, B, C = Q[0, 0], 2.0 * Q[0, 1], Q[1, 1]
    D, E = -2.0 * (Q @ c)
    F = float(c @ Q @ c) - 1.0
    if abs(A) <= 1e-12 * np.abs(Q).max():
        raise InputError(
            "the x^2 coefficient of this conic is zero; the study form x^2 = ... "
            "cannot represent it"
        )
    return -np.array([B, C, D, E, F]) / A


def conic_to_pixels(conic: Conic, standardization: Standardization) -> Conic:
    """Conic in standard units → pixel units (kind kept).

    With $s = (p - c)/\\sigma$, i.e. homogeneous $\\tilde s = T\\tilde p$,
    $T = \\begin{pmatrix} I/\\sigma & -c/\\sigma\\\\ 0 & 1\\end{pmatrix}$, the conic
    matrix becomes $T^\\top M T$ (renormalized to $A = 1$). Centre
    $\\mapsto c + \\sigma\\,\\text{centre}$, semi-axes $\\times\\sigma$, angle
    unchanged (the map is isotropic). The kind is not re-classified.
    """
    s, (cx, cy) = standardization.scale, standardization.center
    T = np.array([[1.0 / s, 0.0, -cx / s], [0.0, 1.0 / s, -cy / s], [0.0, 0.0, 1.0]])
    P = T.T @ conic.matrix @ T
    coef = np.array([P[0, 0], 2 * P[0, 1], P[1, 1], 2 * P[0, 2], 2 * P[1, 2], P[2, 2]])
    if coef[0] != 0.0:
        coef = coef / coef[0]
    center = None
    if conic.center is not None:
        center = (float(cx + s * conic.center[0]), float(cy + s * conic.center[1]))
    semi = None
    if conic.semi_axes is not None:
        semi = (float(s * conic.semi_axes[0]), float(s * conic.semi_axes[1]))
    return Conic(conic.kind, coef, center=center, semi_axes=semi, angle=conic.angle)


# --------------------------------------------------------------------------- lines


@dataclass(frozen=True)
class Line:
    """A line $x = a\\,y + c$ (the line expert's form: every line but the horizontal
    ones). ``angle`` is its direction from +x, in (-pi/2, pi/2]."""

    a: float
    c: float

    @property
    def angle(self) -> float:
        return _wrap_angle(math.atan2(1.0, self.a))

    def as_dict(self) -> dict[str, float]:
        return {"a": float(self.a), "c": float(self.c), "angle": self.angle}

    def __str__(self) -> str:
        return f"Line(x = {self.a:.4g} y + {self.c:.4g})"

    def to_pixels(self, standardization: Standardization) -> Line:
        """With $p = c_0 + \\sigma s$: $x_p = a y_p + (\\sigma c + c_{0x} -
        a c_{0y})$ (the slope is unit-free under an isotropic map)."""
        (cx, cy), s = standardization.center, standardization.scale
        return Line(self.a, s * self.c + cx - self.a * cy)


def line_from_weights(w: object) -> Line:
    """Line from the weights $(a, c)$ of the regression $x = a y + c$."""
    arr = _weights(w, 2, "line")
    return Line(float(arr[0]), float(arr[1]))
