"""The sequential-RANSAC start of a fit of many curves (pyro_moe.shapes.seeding)."""

from __future__ import annotations

import itertools

import numpy as np

from pyro_moe.shapes.geometry import FORMS
from pyro_moe.shapes.image import image_to_points
from pyro_moe.shapes.seeding import seed_curves
from pyro_moe.shapes.synthetic import circle_image, ellipse_points


def _circle(xy: np.ndarray) -> tuple[float, float, float]:
    """Least-squares (Kasa) circle of points (N, 2)."""
    A = np.column_stack([xy, np.ones(len(xy))])
    w = np.linalg.lstsq(A, (xy**2).sum(1), rcond=None)[0]
    x0, y0 = w[0] / 2, w[1] / 2
    return x0, y0, float(np.sqrt(w[2] + x0**2 + y0**2))


def test_twelve_small_circles_each_get_their_own_label():
    centers = [(30 + 60 * i, 30 + 60 * j) for i in range(4) for j in range(3)]
    radii = [12 + 2 * (k % 5) for k in range(12)]
    img, truth = circle_image(centers, radii, (190, 250), outlier_fraction=0.1, seed=1)
    ps = image_to_points(img)
    labels = seed_curves(ps.xy, 12, FORMS["circle"], "circle", seed=0)
    fitted = [_circle(ps.xy[labels == k]) for k in range(12) if (labels == k).sum() >= 3]
    assert len(fitted) == 12
    for c in truth:  # every circle is one label's points, within half a pixel
        gap = min(max(abs(x - c.x0), abs(y - c.y0), abs(r - c.r)) for x, y, r in fitted)
        assert gap < 0.5, c
    assert 0.05 < (labels < 0).mean() < 0.15  # the stray pixels are left unlabelled


def test_two_ellipses_and_too_few_points():
    a = ellipse_points((0.0, 0.0), (3.0, 1.5), 0.3, 300, seed=0)
    b = ellipse_points((8.0, 1.0), (1.0, 0.6), -0.5, 150, seed=1)
    xy = np.vstack([a, b])
    labels = seed_curves(xy, 2, FORMS["conic"], "conic", seed=0)
    assert set(np.unique(labels)) <= {-1, 0, 1}
    assert (labels[:300] == labels[0]).mean() > 0.95 and (labels[300:] == labels[300]).mean() > 0.95
    assert labels[0] != labels[300]
    assert (seed_curves(xy[:5], 1, FORMS["conic"], "conic") == -1).all()  # fewer than n + 2


def _conic_w(centre, axes, angle) -> np.ndarray:
    """The conic-form weights (x^2 = w . [xy, yy, x, y, 1]) of an ellipse."""
    c, s = np.cos(angle), np.sin(angle)
    R = np.array([[c, -s], [s, c]])
    Q = R @ np.diag([1 / axes[0] ** 2, 1 / axes[1] ** 2]) @ R.T
    p = np.asarray(centre, dtype=np.float64)
    coef = np.array([2 * Q[0, 1], Q[1, 1], *(-2 * Q @ p), p @ Q @ p - 1]) / Q[0, 0]
    return -coef


def test_an_ellipse_is_plausible_and_its_degenerations_are_not():
    from pyro_moe.shapes.seeding import MIN_AXIS_RATIO, _centres, plausible

    w = _conic_w((1.0, 2.0), (3.0, 1.0), 0.3)
    np.testing.assert_allclose(_centres("conic", w[None])[0], [1.0, 2.0], atol=1e-12)
    assert plausible("conic", w[None], 10.0)[0]
    assert not plausible("conic", w[None], 2.9)[0]  # wider than the picture
    assert not plausible("conic", w[None], 10.0, ((2.0, 0.0), (5.0, 5.0)))[0]  # centre outside
    thin = _conic_w((1.0, 2.0), (3.0, 0.99 * MIN_AXIS_RATIO * 3.0), 0.3)
    assert not plausible("conic", thin[None], 10.0)[0]
    double_line = np.array([2.0, -1.0, 0.0, 0.0, 0.0])  # (x - y)^2 = 0
    hyperbola = np.array([0.0, 1.0, 0.0, 0.0, 1.0])  # x^2 - y^2 = 1
    assert not plausible("conic", np.stack([double_line, hyperbola]), 10.0).any()


def test_coverage_tells_a_traced_curve_from_one_that_crosses_texture():
    from pyro_moe.shapes.seeding import coverage

    rng = np.random.default_rng(0)
    ring = ellipse_points((50.0, 50.0), (20.0, 20.0), 0.0, 400, seed=0)
    texture = rng.uniform(0, 100, (1500, 2))
    P = np.vstack([ring, texture])
    on = np.array([100.0, 100.0, 400.0 - 2 * 2500.0])  # the ring: w = (2 x0, 2 y0, r^2 - |c|^2)
    off = np.array([80.0, 100.0, 900.0 - 1600.0 - 2500.0])  # r = 30 about (40, 50)
    share = coverage(P, np.stack([on, off]), FORMS["circle"], "circle", tau=1.0)
    assert share[0] > 0.95 and share[1] < 0.5
    # a ring cut by the frame is judged on its visible arcs only
    half = ring[ring[:, 0] <= 50.0]
    assert coverage(half, on, FORMS["circle"], "circle", tau=1.0)[0] > 0.9


def test_the_sequential_draw_gives_every_k_the_curves_of_k_minus_one():
    """One draw serves every K (--experts auto): the labels after K curves of
    sequential_curves are seed_curves(K), and the first K - 1 curves of K are those of
    K - 1, point for point."""
    from pyro_moe.shapes.seeding import sequential_curves

    img, _ = circle_image([(40, 40), (40, 40), (110, 90)], [14, 30, 22], (150, 150),
                          outlier_fraction=0.1, seed=3)  # fmt: skip
    P = image_to_points(img).standard
    steps = list(zip(range(4), sequential_curves(P, FORMS["circle"], "circle", seed=5),
                     strict=False))  # fmt: skip
    assert len(steps) >= 3  # the three rings (a fourth curve only if the outliers hold one)
    for k, labels in steps:
        assert np.array_equal(labels, seed_curves(P, k + 1, FORMS["circle"], "circle", seed=5))
    for (_, before), (k, after) in itertools.pairwise(steps):
        assert np.array_equal(np.where(after < k, after, -1), before)


def test_the_covered_arcs_are_those_of_every_inlier_pair():
    """_covered reads the angles of the inliers only; the arcs it marks are those that the
    angle of every (candidate, point) pair, masked by the inliers, marks."""
    from pyro_moe.shapes.seeding import _arc_counts, _covered

    rng = np.random.default_rng(2)
    P = rng.uniform(-1.0, 1.0, (120, 2))
    W = np.column_stack([rng.uniform(-0.5, 0.5, (40, 2)), rng.uniform(0.1, 0.6, 40)])
    inlier = rng.random((40, 120)) < 0.3
    covered, arcs = _covered("circle", W, P, inlier, 0.05)
    centre = 0.5 * W[:, :2]
    ang = np.arctan2(P[None, :, 1] - centre[:, 1:2], P[None, :, 0] - centre[:, 0:1])
    arc = np.minimum(((ang + np.pi) / (2 * np.pi) * arcs[:, None]).astype(np.int64),
                     arcs[:, None] - 1)  # fmt: skip
    want = np.zeros_like(covered)
    for c, i in zip(*np.nonzero(inlier), strict=True):
        want[c, arc[c, i]] = True
    assert np.array_equal(arcs, _arc_counts("circle", W, 0.05))
    assert covered.any() and np.array_equal(covered, want)


def test_the_draw_stops_once_its_best_curve_makes_more_candidates_needless(monkeypatch):
    """RANSAC's stopping rule: on two sparse rings without clutter the first curve holds
    about half the points, so the first FIRST_BATCH candidates (in the order drawn) have
    held one of its subsets with probability > STOP_PROBABILITY and the rest are not
    refitted; the second holds all that is left. The labels are those of the full draw
    (the rule off: STOP_PROBABILITY = 1), from fewer least-squares refits."""
    from pyro_moe.shapes import seeding
    from pyro_moe.shapes.synthetic import circle_scene

    img, _ = circle_scene("sparse 2 apart (15-30 % of pixels)", 0)
    P = image_to_points(img).standard
    refits = []
    lsq = seeding._inlier_lsq

    def counted(phi, t, inlier):
        refits.append(len(inlier))
        return lsq(phi, t, inlier)

    monkeypatch.setattr(seeding, "_inlier_lsq", counted)
    early = seed_curves(P, 2, FORMS["circle"], "circle", seed=0)
    stopped = sum(refits)
    refits.clear()
    monkeypatch.setattr(seeding, "STOP_PROBABILITY", 1.0)
    full = seed_curves(P, 2, FORMS["circle"], "circle", seed=0)
    assert np.array_equal(early, full) and set(np.unique(full)) == {0, 1}
    assert stopped < 0.7 * sum(refits)


def test_batches_cover_the_candidates_once():
    from pyro_moe.shapes.seeding import _batches

    assert list(_batches(150, 64, 1000)) == [(0, 64), (64, 150)]
    assert list(_batches(10, 64, 1000)) == [(0, 10)]
    assert list(_batches(200, 64, 50)) == [(0, 64), (64, 114), (114, 164), (164, 200)]
    assert list(_batches(0, 64, 50)) == []


def test_the_inlier_refits_solve_each_candidate_and_refuse_the_ill_conditioned():
    """_inlier_lsq solves each candidate's normal equations on its inliers (as lstsq does)
    and gives NaN where they are singular or nearly so (condition number >= 1e12), the
    cheap bound tr^n / det deciding the clear rows and eigvalsh the rest."""
    from pyro_moe.shapes import seeding

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(2, 40))
    phi, t = np.column_stack([x, y, np.ones(40)]), x * x + y * y
    inlier = rng.random((6, 40)) < 0.6
    inlier[4] = False
    inlier[4, :2] = True  # two points: singular
    line = np.column_stack([x, 2 * x + 1, np.ones(40)])  # collinear points: rank 2
    out = seeding._inlier_lsq(phi, t, inlier)
    for c in range(6):
        if c == 4:
            assert np.isnan(out[c]).all()
            continue
        want = np.linalg.lstsq(phi[inlier[c]], t[inlier[c]], rcond=None)[0]
        np.testing.assert_allclose(out[c], want, rtol=1e-9, atol=1e-9)
    near = line + np.column_stack([np.zeros(40), 1e-7 * rng.normal(size=40), np.zeros(40)])
    assert np.isnan(seeding._inlier_lsq(near, t, np.ones((2, 40), dtype=bool))).all()
    assert np.isnan(seeding._inlier_lsq(line, t, np.ones((1, 40), dtype=bool))).all()
