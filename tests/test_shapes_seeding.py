"""The sequential-RANSAC start of a fit of many curves (pyro_moe.shapes.seeding)."""

from __future__ import annotations

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
