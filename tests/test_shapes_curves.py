"""Circles and conics: exact least-squares round trips and classification."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyro_moe.errors import InputError
from pyro_moe.shapes import (
    Circle,
    Standardization,
    circle_design,
    circle_from_weights,
    circle_to_pixels,
    circle_weights,
    circles_from_weights,
    conic_design,
    conic_from_coefficients,
    conic_from_weights,
    conic_to_pixels,
    conic_weights_from_geometry,
    ellipse_points,
    hyperbola_points,
)
from pyro_moe.shapes.curves import geometric_circles, kasa_corrected_radius, radial_noise


def _lstsq(X: np.ndarray, t: np.ndarray) -> np.ndarray:
    return np.linalg.lstsq(X, t, rcond=None)[0]


@pytest.mark.parametrize(
    ("x0", "y0", "r"),
    [(0.0, 0.0, 0.5), (0.0, 0.0, 1.5), (2.5, -1.25, 0.75), (-3.0, 4.0, 10.0), (0.1, 0.2, 0.01)],
)
def test_circle_round_trip(x0: float, y0: float, r: float) -> None:
    rng = np.random.default_rng(1)
    phi = rng.uniform(0, 2 * np.pi, 40)
    xy = np.column_stack([x0 + r * np.cos(phi), y0 + r * np.sin(phi)])
    X, t = circle_design(xy)
    assert X.shape == (40, 3) and t.shape == (40,)
    np.testing.assert_allclose(X[:, 2], 1.0)
    c = circle_from_weights(_lstsq(X, t))
    assert c.valid
    assert c.x0 == pytest.approx(x0, abs=1e-9)
    assert c.y0 == pytest.approx(y0, abs=1e-9)
    assert c.r == pytest.approx(r, abs=1e-9)
    np.testing.assert_allclose(circle_weights(x0, y0, r), c.weights(), atol=1e-9)


def test_circles_from_weights_matrix() -> None:
    W = np.stack([circle_weights(0, 0, 0.5), circle_weights(1, -2, 3)])
    cs = circles_from_weights(W)
    assert [round(c.r, 12) for c in cs] == [0.5, 3.0]
    assert cs[1].x0 == pytest.approx(1) and cs[1].y0 == pytest.approx(-2)
    with pytest.raises(InputError, match=r"\(K, 3\)"):
        circles_from_weights(np.zeros((2, 4)))


def test_invalid_circle_has_no_nan() -> None:
    c = circle_from_weights([0.2, -0.4, -5.0])  # r^2 = -5 + 0.01 + 0.04 < 0
    assert not c.valid
    assert c.r == 0.0
    d = c.as_dict()
    assert d["r"] == "invalid" and d["valid"] is False
    for v in d.values():
        assert not (isinstance(v, float) and math.isnan(v))
    assert "invalid" in str(c)
    assert "nan" not in str(c).lower()
    p = circle_to_pixels(c, Standardization(np.array([10.0, 20.0]), 3.0))
    assert not p.valid and p.r == 0.0


def test_circle_weights_bad_input() -> None:
    with pytest.raises(InputError, match="NaN"):
        circle_from_weights([np.nan, 0, 1])
    with pytest.raises(InputError, match="3 numbers"):
        circle_from_weights([1, 2])


def test_circle_to_pixels_matches_standardization() -> None:
    s = Standardization(np.array([70.0, 50.0]), 25.0)
    c = Circle(0.2, -0.4, 0.8)
    p = c.to_pixels(s)
    assert (p.x0, p.y0, p.r) == pytest.approx((75.0, 40.0, 20.0))
    back = p.to_standard(s)
    assert (back.x0, back.y0, back.r) == pytest.approx((0.2, -0.4, 0.8))


ELLIPSES = [
    ((0.0, 0.0), (1.0, 0.5), 0.0),
    ((0.3, -0.2), (1.2, 0.5), 0.7),
    ((-1.0, 2.0), (2.0, 1.5), -1.2),
    ((0.5, 0.5), (0.8, 0.3), math.pi / 2),
    ((0.0, 1.0), (1.5, 0.4), -0.3),
]


@pytest.mark.parametrize(("center", "axes", "angle"), ELLIPSES)
def test_ellipse_round_trip(center, axes, angle) -> None:
    xy = ellipse_points(center, axes, angle, 60, seed=3)
    X, t = conic_design(xy)
    assert X.shape == (60, 5)
    conic = conic_from_weights(_lstsq(X, t))
    assert conic.kind == "ellipse"
    np.testing.assert_allclose(conic.center, center, atol=1e-8)
    np.testing.assert_allclose(conic.semi_axes, axes, atol=1e-8)
    expected = math.atan2(math.sin(2 * angle), math.cos(2 * angle)) / 2  # axis angle
    if expected <= -math.pi / 2 + 1e-12:
        expected += math.pi
    assert conic.angle == pytest.approx(expected, abs=1e-8)
    assert -math.pi / 2 < conic.angle <= math.pi / 2
    assert np.abs(conic.evaluate(xy)).max() < 1e-8
    # the geometric inverse map gives the same weights
    w = conic_weights_from_geometry(center, axes, angle)
    np.testing.assert_allclose(w, conic.weights(), atol=1e-8)
    assert conic.coefficients[0] == 1.0


@pytest.mark.parametrize(
    ("center", "axes", "angle"),
    [
        ((0.0, 0.0), (0.5, 0.8), 0.0),
        ((0.3, -0.2), (0.6, 0.9), 0.4),
        ((1.0, -1.0), (1.0, 0.5), -0.6),
    ],
)
def test_hyperbola_round_trip(center, axes, angle) -> None:
    xy = hyperbola_points(center, axes, angle, 60, seed=5)
    X, t = conic_design(xy)
    conic = conic_from_weights(_lstsq(X, t))
    assert conic.kind == "hyperbola"
    np.testing.assert_allclose(conic.center, center, atol=1e-8)
    np.testing.assert_allclose(conic.semi_axes, axes, atol=1e-8)  # transverse first
    assert conic.angle == pytest.approx(angle, abs=1e-8)
    w = conic_weights_from_geometry(center, axes, angle, kind="hyperbola")
    np.testing.assert_allclose(w, conic.weights(), atol=1e-7)


def test_circle_is_an_ellipse_with_zero_angle() -> None:
    conic = conic_from_weights(conic_weights_from_geometry((0.5, -0.5), (1.0, 1.0), 0.3))
    assert conic.kind == "ellipse"
    assert conic.semi_axes == pytest.approx((1.0, 1.0))
    assert conic.angle == 0.0


def test_parabola() -> None:
    # x^2 = y  (B'=0, C'=0, D'=0, E'=1, F'=0), shifted: (x-1)^2 = 2(y+3)
    rng = np.random.default_rng(0)
    x = rng.uniform(-3, 3, 30)
    y = (x - 1) ** 2 / 2 - 3
    X, t = conic_design(np.column_stack([x, y]))
    conic = conic_from_weights(_lstsq(X, t))
    assert conic.kind == "parabola"
    assert conic.center is None and conic.semi_axes is None
    assert conic.angle == pytest.approx(math.pi / 2)  # symmetry axis is vertical


def test_rotated_parabola() -> None:
    # x^2 - 2xy + y^2 + x + y = 0  : B^2 - 4AC = 0, axis along (1, 1)/sqrt 2
    conic = conic_from_coefficients([1, -2, 1, 1, 1, 0])
    assert conic.kind == "parabola"
    assert conic.angle == pytest.approx(math.pi / 4)


@pytest.mark.parametrize(
    "coef",
    [
        [1, 0, -1, 0, 0, 0],  # x^2 - y^2 = 0: two lines
        [1, 0, 0, 0, 0, -1],  # x^2 = 1: two parallel lines
        [1, 0, 1, 0, 0, 0],  # a single point
        [1, 0, 1, 0, 0, 1],  # x^2 + y^2 = -1: imaginary ellipse
        [2, 0, 3, -4, 0, 10],  # shifted imaginary ellipse
    ],
)
def test_degenerate(coef) -> None:
    conic = conic_from_coefficients(coef)
    assert conic.kind == "degenerate"
    assert conic.center is None and conic.semi_axes is None and conic.angle is None
    assert conic.coefficients[0] == 1.0


def test_conic_bad_inputs() -> None:
    with pytest.raises(InputError, match="5 numbers"):
        conic_from_weights([1, 2, 3])
    with pytest.raises(InputError, match="all zero"):
        conic_from_coefficients([0, 0, 0, 1, 1, 1])
    with pytest.raises(InputError, match="at least 5 points"):
        conic_design(np.zeros((4, 2)))
    with pytest.raises(InputError, match="x\\^2 coefficient"):
        # hyperbola with cos^2/a^2 = sin^2/b^2
        conic_weights_from_geometry((0, 0), (1.0, 1.0), math.pi / 4, kind="hyperbola")


def test_conic_to_pixels() -> None:
    s = Standardization(np.array([80.0, 60.0]), 20.0)
    center, axes, angle = (0.25, -0.5), (1.2, 0.4), 0.5
    conic = conic_from_weights(conic_weights_from_geometry(center, axes, angle))
    pix = conic_to_pixels(conic, s)
    assert pix.kind == "ellipse"
    assert pix.center == pytest.approx((85.0, 50.0))
    assert pix.semi_axes == pytest.approx((24.0, 8.0))
    assert pix.angle == pytest.approx(angle)
    # points on the standard-units ellipse, mapped to pixels, satisfy the pixel conic
    xy = s.to_pixels(ellipse_points(center, axes, angle, 20, seed=0))
    assert np.abs(pix.evaluate(xy)).max() < 1e-8 * np.abs(pix.coefficients).max()
    # and classifying the pixel coefficients independently agrees
    again = conic_from_coefficients(pix.coefficients)
    assert again.kind == "ellipse"
    np.testing.assert_allclose(again.semi_axes, (24.0, 8.0), rtol=1e-9)


def test_circle_design_too_few_points() -> None:
    with pytest.raises(InputError, match=r"need at least 3 points to fit a circle \(3 unknowns\)"):
        circle_design([[0, 0], [1, 1]])


@pytest.mark.parametrize(("r", "sigma"), [(10.0, 0.5), (1.5, 0.1), (40.0, 2.0)])
def test_kasa_correction_inverts_the_bias(r: float, sigma: float) -> None:
    """With r_hat^2 = r^2 + 2 sigma^2 and v = 4 r^2 sigma^2 + 4 sigma^4 (the moments of
    |p - c|^2 under isotropic noise), the correction gives back r and sigma."""
    r_hat = math.sqrt(r * r + 2 * sigma * sigma)
    v = 4 * r * r * sigma * sigma + 4 * sigma**4
    assert kasa_corrected_radius(r_hat, v) == pytest.approx(r, rel=1e-12)
    assert radial_noise(r_hat, v) == pytest.approx(sigma, rel=1e-9)
    assert kasa_corrected_radius(1.0, 2.0) is None and radial_noise(1.0, 2.0) is None


def test_geometric_circles_recover_exact_arcs_all_at_once() -> None:
    """Two circles' exact 90-degree arcs, each weighted to its own circle, started off by
    2-3 px: the geometric fit finds both exactly (residual sd 0), the responsibilities
    picking the points."""
    phi = np.linspace(0.2, 0.2 + np.pi / 2, 30)
    a = np.column_stack([10 + 5 * np.cos(phi), 20 + 5 * np.sin(phi)])
    b = np.column_stack([40 + 8 * np.cos(phi + 2), 25 + 8 * np.sin(phi + 2)])
    xy = np.concatenate([a, b])
    w = np.zeros((60, 2))
    w[:30, 0] = w[30:, 1] = 1.0
    theta, cov, sigma, ok = geometric_circles(xy, w, [[12, 18, 6], [38, 27, 10]])
    np.testing.assert_allclose(theta, [[10, 20, 5], [40, 25, 8]], atol=1e-8)
    assert ok.all() and np.all(sigma < 1e-8) and np.all(np.abs(cov) < 1e-12)


@given(
    seed=st.integers(0, 10_000),
    sweep=st.floats(0.5, 2 * np.pi),
    jitter=st.floats(0.0, 2.0),
)
@settings(max_examples=30, deadline=None)
def test_geometric_circles_never_raise_the_sum_of_squares(seed, sweep, jitter) -> None:
    """The refined circle's weighted sum of squared geometric residuals is at most the
    start's (step halving), and its covariance is symmetric positive semi-definite."""
    rng = np.random.default_rng(seed)
    phi = rng.uniform(0, sweep, 40)
    xy = np.column_stack([30 + 12 * np.cos(phi), 20 + 12 * np.sin(phi)])
    xy += rng.normal(0, jitter, xy.shape)
    w = rng.uniform(0.2, 1.0, (40, 1))
    start = np.array([[30 + rng.normal(0, 2), 20 + rng.normal(0, 2), 12 + rng.normal(0, 2)]])

    def ss(th):
        return float((w[:, 0] * (np.hypot(*(xy - th[0, :2]).T) - th[0, 2]) ** 2).sum())

    theta, cov, _sigma, ok = geometric_circles(xy, w, start)
    assert ss(theta) <= ss(start) * (1 + 1e-9) + 1e-12
    if ok[0]:
        np.testing.assert_allclose(cov[0], cov[0].T, atol=1e-12)
        assert np.linalg.eigvalsh(cov[0]).min() > -1e-9


def test_geometric_circles_refuse_too_little_weight_and_bad_shapes() -> None:
    xy = np.column_stack([np.cos(np.arange(10.0)), np.sin(np.arange(10.0))])
    w = np.zeros((10, 1))
    w[:3] = 1.0  # three points' worth: no residual left to read the noise from
    theta, cov, _sigma, ok = geometric_circles(xy, w, [[0.1, 0.0, 1.2]])
    assert not ok[0] and np.isnan(cov).all()
    np.testing.assert_allclose(theta, [[0.1, 0.0, 1.2]])
    with pytest.raises(InputError, match="weights"):
        geometric_circles(xy, np.ones((9, 1)), [[0, 0, 1]])


def test_geometric_circles_stop_at_the_least_squares_circle_with_its_laplace_covariance():
    """At the returned circles a Gauss-Newton step moves nothing and ``cov`` is
    sigma^2 (J^T W J)^{-1}, sigma^2 = S / (sum w - 3), each written out from the
    definitions (two noisy arcs fitted at once, each weighed on its own circle)."""
    rng = np.random.default_rng(3)
    phi = rng.uniform(0, 4.0, 80)
    xy = np.concatenate([
        np.column_stack([30 + 12 * np.cos(phi[:40]), 20 + 12 * np.sin(phi[:40])]),
        np.column_stack([70 + 25 * np.cos(phi[40:]), 60 + 25 * np.sin(phi[40:])]),
    ])  # fmt: skip
    xy += rng.normal(0, 0.7, xy.shape)
    w = np.zeros((80, 2))
    w[:40, 0] = w[40:, 1] = rng.uniform(0.5, 1.0, 40)
    theta, cov, sigma, ok = geometric_circles(xy, w, [[31, 19, 11], [69, 62, 24]])
    assert ok.all()
    for k in range(2):
        d_xy = xy - theta[k, :2]
        rho = np.hypot(*d_xy.T)
        d = rho - theta[k, 2]
        J = -np.column_stack([d_xy / rho[:, None], np.ones(80)])
        A = J.T @ (w[:, k, None] * J)
        step = np.linalg.solve(A, J.T @ (w[:, k] * d))  # the Gauss-Newton step from there
        assert np.abs(step).max() < 1e-6
        s2 = float((w[:, k] * d * d).sum() / (w[:, k].sum() - 3.0))
        assert sigma[k] ** 2 == pytest.approx(s2, rel=1e-12)
        want = s2 * np.linalg.inv(A)
        np.testing.assert_allclose(cov[k], want, rtol=1e-9, atol=1e-15)
