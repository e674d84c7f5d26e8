"""Seeded generators and rasterization."""

from __future__ import annotations

import numpy as np
import pytest

from pyro_moe.errors import InputError
from pyro_moe.shapes import (
    SCENE_KINDS,
    circle_image,
    circle_points,
    circle_scene,
    demo_image,
    ellipse_points,
    hyperbola_points,
    image_to_points,
    noise_sweep,
    rasterize,
    ring_image,
    synthetic_1,
    synthetic_2,
    synthetic_3,
)
from pyro_moe.shapes.synthetic import SPARSE_KINDS, point_scene


def test_circle_points_counts_and_labels() -> None:
    xy, lab = circle_points([(0, 0), (3, 1)], [1.0, 2.0], [30, 50], seed=0)
    assert xy.shape == (80, 2) and lab.shape == (80,)
    assert (lab == 0).sum() == 30 and (lab == 1).sum() == 50
    np.testing.assert_allclose(np.hypot(*xy[lab == 0].T), 1.0)
    np.testing.assert_allclose(np.hypot(*(xy[lab == 1] - [3, 1]).T), 2.0)


def test_circle_points_even() -> None:
    xy, _ = circle_points([(0, 0)], [1.0], 4, even=True)
    np.testing.assert_allclose(xy, [[1, 0], [0, 1], [-1, 0], [0, -1]], atol=1e-15)


def test_circle_points_seeds() -> None:
    kw = {"jitter": 0.05, "outlier_fraction": 0.2}
    a = circle_points([(0, 0)], [1.0], 40, seed=3, **kw)
    b = circle_points([(0, 0)], [1.0], 40, seed=3, **kw)
    c = circle_points([(0, 0)], [1.0], 40, seed=4, **kw)
    np.testing.assert_array_equal(a[0], b[0])
    assert not np.allclose(a[0], c[0])


@pytest.mark.parametrize("fraction", [0.1, 0.25, 0.5])
def test_outlier_fraction(fraction: float) -> None:
    xy, lab = circle_points([(0, 0), (5, 5)], [1.0, 2.0], 60, outlier_fraction=fraction)
    assert (lab == -1).mean() == pytest.approx(fraction, abs=0.01)
    out = xy[lab == -1]
    # default box: bounding box [-1, 7] x [-1, 7] widened 10% about its centre
    assert out.min() >= -1.4 and out.max() <= 7.4
    xy, lab = circle_points([(0, 0)], [1.0], 50, outlier_fraction=0.5, box=(10, 11, 10, 11))
    assert ((xy[lab == -1] >= 10) & (xy[lab == -1] <= 11)).all()


def test_circle_points_bad_args() -> None:
    with pytest.raises(InputError, match="outlier_fraction"):
        circle_points([(0, 0)], [1.0], 5, outlier_fraction=1.0)
    with pytest.raises(InputError, match="one radius per centre"):
        circle_points([(0, 0), (1, 1)], [1.0], 5)


def test_study_sets() -> None:
    s1, s2, s3 = synthetic_1(), synthetic_2(), synthetic_3()
    assert (len(s1), len(s2), len(s3)) == (200, 200, 400)
    np.testing.assert_allclose(np.hypot(*s1.xy[:100].T), 0.5)
    np.testing.assert_allclose(np.hypot(*s1.xy[100:].T), 1.5)
    assert [c.r for c in s1.circles] == [0.5, 1.5]
    assert ((s3.labels == -1).sum(), (s3.labels == 0).sum()) == (200, 100)
    assert np.abs(s3.xy[s3.labels == -1]).max() <= 2.0
    np.testing.assert_array_equal(s3.xy[:200], s2.xy)  # same seed, same circle part
    resid = s2.xy - s1.xy
    assert 0.08 < resid.std() < 0.12
    np.testing.assert_array_equal(synthetic_2(1).xy, synthetic_2(1).xy)
    assert not np.allclose(synthetic_2(1).xy, synthetic_2(2).xy)


@pytest.mark.parametrize(("level", "n"), [(0.0, 200), (0.25, 250), (0.5, 300), (1.0, 400)])
def test_noise_sweep(level: float, n: int) -> None:
    d = noise_sweep(level, seed=0)
    assert len(d) == n and (d.labels == -1).sum() == n - 200
    if level == 1.0:
        np.testing.assert_array_equal(d.xy, synthetic_3(0).xy)
    with pytest.raises(InputError):
        noise_sweep(1.5)


def test_ellipse_and_hyperbola_points() -> None:
    xy = ellipse_points((1, 2), (3, 1), 0.0, 25, seed=0)
    assert xy.shape == (25, 2)
    np.testing.assert_allclose(((xy[:, 0] - 1) / 3) ** 2 + (xy[:, 1] - 2) ** 2, 1.0)
    h = hyperbola_points((0, 0), (1, 2), 0.0, 20, seed=0)
    np.testing.assert_allclose(h[:, 0] ** 2 - (h[:, 1] / 2) ** 2, 1.0)
    assert (h[:, 0] > 0).sum() == 10


def test_rasterize() -> None:
    img = rasterize([[2.4, 1.6], [100, 100], [-3, 0]], (5, 6))
    assert img.shape == (5, 6) and img.dtype == bool
    assert img.sum() == 1 and img[2, 2]
    thick = rasterize([[3, 3]], (7, 7), thickness=3)
    assert thick.sum() == 9


def test_circle_image_connected_and_outliers() -> None:
    from scipy import ndimage

    img, circles = circle_image([(64, 64)], [40], (128, 128))
    _, n = ndimage.label(img, structure=np.ones((3, 3)))
    assert n == 1
    assert circles[0].r == 40
    noisy, _ = circle_image([(64, 64)], [40], (128, 128), outlier_fraction=0.2, seed=1)
    extra = int(noisy.sum() - img.sum())
    assert extra == round(0.2 * img.sum())
    again, _ = circle_image([(64, 64)], [40], (128, 128), outlier_fraction=0.2, seed=1)
    np.testing.assert_array_equal(noisy, again)


def test_demo_image() -> None:
    img, circles = demo_image()
    assert img.shape == (160, 160) and img.dtype == bool
    assert len(circles) == 3
    assert (circles[0].x0, circles[0].y0) == (circles[1].x0, circles[1].y0)
    pts = image_to_points(img)
    for c in circles:
        d = np.abs(np.hypot(pts.xy[:, 0] - c.x0, pts.xy[:, 1] - c.y0) - c.r)
        assert (d < 1.0).sum() > 4 * c.r


@pytest.mark.parametrize("kind", SCENE_KINDS)
def test_every_scene_kind_draws_new_circles_per_seed(kind) -> None:
    img, truth = circle_scene(kind, 0)
    again, same = circle_scene(kind, 0)
    _, moved = circle_scene(kind, 1)
    assert np.array_equal(img, again) and same == truth
    assert moved != truth and img.dtype == bool
    assert len(truth) == len(moved) >= 2
    h, w = img.shape
    for c in truth:  # every circle has pixels in the image, "cut by the border" or not
        phi = np.linspace(0, 2 * np.pi, 64)
        x, y = c.x0 + c.r * np.cos(phi), c.y0 + c.r * np.sin(phi)
        assert ((x >= 0) & (x < w) & (y >= 0) & (y < h)).any()
    if kind == "cut by the border":
        assert any(c.x0 - c.r < 0 or c.y0 + c.r > h for c in truth)


def test_ring_image_jitter_and_unknown_kind() -> None:
    plain, _ = ring_image([(40, 40)], [20], (80, 80))
    jittered, _ = ring_image([(40, 40)], [20], (80, 80), jitter=0.7, seed=1)
    assert not np.array_equal(plain, jittered)
    with pytest.raises(InputError, match="unknown scene kind"):
        circle_scene("hexagons")


def _ring_distance(img: np.ndarray, c) -> np.ndarray:
    xy = np.argwhere(img)[:, ::-1].astype(float)
    return np.abs(np.hypot(xy[:, 0] - c.x0, xy[:, 1] - c.y0) - c.r)


def test_point_scene_keeps_a_share_of_the_ring_and_adds_clutter() -> None:
    whole, (c,) = circle_image([(60, 60)], [40], (120, 120))
    sparse, _ = point_scene([(60, 60)], [40], (120, 120), keep=0.2, seed=3)
    assert (_ring_distance(sparse, c) <= 1.0).all()
    # points at random angles, rounded to pixels: a few land on one pixel
    assert 0.15 * whole.sum() <= sparse.sum() <= 0.2 * whole.sum() + 1
    cluttered, _ = point_scene([(60, 60)], [40], (120, 120), keep=0.2, clutter=0.5, seed=3)
    off = (_ring_distance(cluttered, c) > 1.0).sum()
    assert abs(off - sparse.sum()) <= 0.1 * sparse.sum()  # half the set pixels are clutter
    jittered, _ = point_scene([(60, 60)], [40], (120, 120), jitter=2.0, seed=3)
    d = _ring_distance(jittered, c)
    assert 1.0 < np.sqrt(np.mean(d**2)) < 3.0
    arc, _ = point_scene([(60, 60)], [40], (120, 120), arcs=[(0.0, np.pi / 2)], seed=3)
    xy = np.argwhere(arc)[:, ::-1] - 60.0
    assert (xy >= -1).all()  # the first quadrant only (y down, x right)


def test_point_scene_refuses_bad_input() -> None:
    with pytest.raises(InputError, match="keep"):
        point_scene([(60, 60)], [40], (120, 120), keep=0.0)
    with pytest.raises(InputError, match="clutter"):
        point_scene([(60, 60)], [40], (120, 120), clutter=1.0)
    with pytest.raises(InputError, match="one arc per circle"):
        point_scene([(60, 60)], [40], (120, 120), arcs=[(0, 1), (1, 2)])


@pytest.mark.parametrize("kind", SPARSE_KINDS)
def test_every_sparse_kind_draws_new_circles_per_seed(kind) -> None:
    img, truth = circle_scene(kind, 0)
    again, same = circle_scene(kind, 0)
    _, moved = circle_scene(kind, 1)
    assert np.array_equal(img, again) and same == truth
    assert moved != truth and img.dtype == bool and len(truth) >= 2
    for c in truth:  # each circle holds pixels on it (jittered: within 3 sds)
        assert (_ring_distance(img, c) <= 1.0 + 3 * 2.5).sum() >= 10


def test_ellipse_drawing_is_seeded_and_its_pixels_lie_on_its_ellipses():
    """The same seed, the same drawing; every set pixel within a pixel of one of the nine
    ellipses (radial distance along its own ray); the dashed ones hold about half of a
    solid one's pixels per unit length; a bad ``dashed`` or a grid too small is refused."""
    from pyro_moe.shapes.synthetic import ellipse_drawing

    img, truth = ellipse_drawing(3)
    again, same = ellipse_drawing(3)
    assert np.array_equal(img, again) and same == truth and len(truth) == 9
    rows, cols = np.nonzero(img)
    near = np.zeros(len(rows), bool)
    for cx, cy, a, b, t in truth:
        u = (cols - cx) * np.cos(t) + (rows - cy) * np.sin(t)
        v = -(cols - cx) * np.sin(t) + (rows - cy) * np.cos(t)
        rho = np.hypot(u / a, v / b)  # 1 on the ellipse
        near |= np.abs(rho - 1.0) * np.hypot(u, v) / np.maximum(rho, 1e-9) <= 1.0
    assert near.all()
    solid, _ = ellipse_drawing(3, dashed=0)
    assert 0.4 < img.sum() / solid.sum() < 0.9  # five of nine at about half
    with pytest.raises(InputError, match="dashed"):
        ellipse_drawing(0, dashed=10)
    with pytest.raises(InputError, match="room"):
        ellipse_drawing(0, size=120)
