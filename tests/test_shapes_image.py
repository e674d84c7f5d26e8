"""Images → points: reading, thresholds, pixel-unit round trips and bad inputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pyro_moe.errors import ImageError, InputError, PyroMoeError
from pyro_moe.shapes import (
    circle_design,
    circle_from_weights,
    circle_image,
    circle_to_pixels,
    edge_mask,
    foreground_mask,
    image_to_points,
    otsu_threshold,
    read_image,
    to_gray,
)

SHAPE = (128, 160)  # rows, columns
X0, Y0, R = 70.3, 52.8, 31.2


@pytest.fixture(scope="module")
def ring() -> np.ndarray:
    img, circles = circle_image([(X0, Y0)], [R], SHAPE)
    assert circles[0].x0 == X0 and circles[0].r == R
    return img


def _fit_pixels(points) -> tuple[float, float, float]:
    X, t = circle_design(points.standard)
    w = np.linalg.lstsq(X, t, rcond=None)[0]
    c = circle_to_pixels(circle_from_weights(w), points.standardization)
    assert c.valid
    return c.x0, c.y0, c.r


def _check(points, tol: float = 0.5) -> None:
    x0, y0, r = _fit_pixels(points)
    assert abs(x0 - X0) < tol and abs(y0 - Y0) < tol and abs(r - R) < tol


def test_array_round_trip_pixel_units(ring: np.ndarray) -> None:
    pts = image_to_points(ring)
    assert pts.image_shape == SHAPE
    assert len(pts) == int(ring.sum())
    # x is the column, y the row
    rows, cols = np.nonzero(ring)
    np.testing.assert_array_equal(pts.xy[:, 0], cols)
    np.testing.assert_array_equal(pts.xy[:, 1], rows)
    np.testing.assert_allclose(pts.standard.mean(axis=0), 0, atol=1e-12)
    _check(pts)


def test_uint8_and_float_arrays(ring: np.ndarray) -> None:
    _check(image_to_points(ring.astype(np.uint8) * 255))
    _check(image_to_points(ring.astype(np.float64)))
    _check(image_to_points(ring.astype(np.uint16) * 65535))


def test_png_round_trip(ring: np.ndarray, tmp_path: Path) -> None:
    path = tmp_path / "ring.png"
    Image.fromarray(ring.astype(np.uint8) * 255).save(path)
    gray = read_image(path)
    assert gray.dtype == np.float64 and gray.shape == SHAPE
    assert gray.min() == 0.0 and gray.max() == 1.0
    _check(image_to_points(path))
    _check(image_to_points(str(path)))


def test_jpeg_and_tiff(ring: np.ndarray, tmp_path: Path) -> None:
    u8 = ring.astype(np.uint8) * 255
    jpg, tif = tmp_path / "ring.jpg", tmp_path / "ring.tif"
    Image.fromarray(u8).save(jpg, quality=95)
    Image.fromarray(u8).save(tif)
    _check(image_to_points(jpg), tol=0.75)  # compression artefacts
    _check(image_to_points(tif))


def test_16bit(ring: np.ndarray, tmp_path: Path) -> None:
    path = tmp_path / "ring16.png"
    img = (ring.astype(np.uint16) * 40000).astype(np.uint16)
    Image.fromarray(img).save(path)
    gray = read_image(path)
    assert gray.max() == pytest.approx(40000 / 65535)
    _check(image_to_points(path))


def test_rgb_and_rgba(ring: np.ndarray, tmp_path: Path) -> None:
    rgb = np.zeros((*SHAPE, 3), dtype=np.uint8)
    rgb[ring] = (255, 0, 0)  # red strokes
    p = tmp_path / "rgb.png"
    Image.fromarray(rgb).save(p)
    gray = read_image(p)
    assert gray.max() == pytest.approx(0.2125)  # skimage.color.rgb2gray: BT.709 red weight
    _check(image_to_points(p))

    rgba = np.zeros((*SHAPE, 4), dtype=np.uint8)
    rgba[..., :3] = 255
    rgba[..., 3] = ring.astype(np.uint8) * 255  # white, visible only on the ring
    p = tmp_path / "rgba.png"
    Image.fromarray(rgba, mode="RGBA").save(p)
    gray = read_image(p)
    np.testing.assert_allclose(gray, ring.astype(float))
    _check(image_to_points(p))

    rgba[..., 3] = 255  # fully opaque: plain luminance of RGB
    rgba[..., :3] = 0
    rgba[ring, :3] = 255
    p = tmp_path / "opaque.png"
    Image.fromarray(rgba, mode="RGBA").save(p)
    np.testing.assert_allclose(read_image(p), ring.astype(float))


def test_inverted_dark_on_white(ring: np.ndarray, tmp_path: Path) -> None:
    paper = np.where(ring, 0, 255).astype(np.uint8)
    p = tmp_path / "paper.png"
    Image.fromarray(paper).save(p)
    pts = image_to_points(p)  # auto: bright side is > half the image → take the dark side
    assert len(pts) == int(ring.sum())
    _check(pts)
    forced = image_to_points(p, invert=False)  # the paper itself
    assert len(forced) == ring.size - int(ring.sum())
    assert len(image_to_points(ring, invert=True)) == ring.size - int(ring.sum())


def test_edges_of_filled_disc() -> None:
    yy, xx = np.mgrid[: SHAPE[0], : SHAPE[1]]
    disc = (xx - X0) ** 2 + (yy - Y0) ** 2 <= R**2
    pts = image_to_points(disc, edges=True)
    assert len(pts) < disc.sum() / 5
    x0, y0, r = _fit_pixels(pts)
    assert abs(x0 - X0) < 0.5 and abs(y0 - Y0) < 0.5 and abs(r - R) < 1.0
    e = edge_mask(disc)
    assert (e <= disc).all()


def test_edge_mask_small() -> None:
    m = np.zeros((5, 5), dtype=bool)
    m[1:4, 1:4] = True
    e = edge_mask(m)
    assert e.sum() == 8 and not e[2, 2]
    full = np.ones((3, 3), dtype=bool)
    assert edge_mask(full).sum() == 8  # outside the image is background


def test_max_points_seeded(ring: np.ndarray) -> None:
    a = image_to_points(ring, max_points=50, seed=1)
    b = image_to_points(ring, max_points=50, seed=1)
    c = image_to_points(ring, max_points=50, seed=2)
    assert len(a) == 50
    np.testing.assert_array_equal(a.xy, b.xy)
    assert not np.array_equal(a.xy, c.xy)
    assert len(np.unique(a.xy, axis=0)) == 50
    assert len(image_to_points(ring, max_points=10**6)) == int(ring.sum())
    with pytest.raises(InputError, match="max_points"):
        image_to_points(ring, max_points=2)


def test_otsu_threshold() -> None:
    rng = np.random.default_rng(0)
    upper = rng.random((40, 40)) < 0.3
    img = np.where(upper, 0.8, 0.2) + rng.normal(0, 0.01, (40, 40))
    t = otsu_threshold(img)
    # skimage's threshold_otsu: ``img > t`` is exactly the upper class
    np.testing.assert_array_equal(img > t, upper)
    assert otsu_threshold(np.array([[0.0, 1.0], [1.0, 0.0]])) < 1.0
    mask = foreground_mask(img)
    assert mask.mean() == pytest.approx((img > 0.5).mean())
    assert foreground_mask(img, 0.5, invert=False).sum() == (img > 0.5).sum()
    with pytest.raises(InputError, match="otsu"):
        foreground_mask(img, "median")


def test_to_gray_shapes() -> None:
    with pytest.raises(ImageError, match="shape"):
        to_gray(np.zeros((4, 4, 5)))
    with pytest.raises(ImageError, match="NaN"):
        to_gray(np.full((3, 3), np.nan))


# ---------------------------------------------------------------- bad inputs


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="no such image file"):
        read_image(tmp_path / "nope.png")
    with pytest.raises(ImageError, match="no such image file"):
        image_to_points(tmp_path / "nope.png")


def test_text_file_named_png(tmp_path: Path) -> None:
    p = tmp_path / "fake.png"
    p.write_text("this is not an image\n")
    with pytest.raises(ImageError, match="not a readable image"):
        read_image(p)


def test_empty_file(tmp_path: Path) -> None:
    p = tmp_path / "empty.png"
    p.write_bytes(b"")
    with pytest.raises(ImageError, match="not a readable image"):
        image_to_points(p)


def test_truncated_png(ring: np.ndarray, tmp_path: Path) -> None:
    p = tmp_path / "cut.png"
    Image.fromarray(ring.astype(np.uint8) * 255).save(p)
    p.write_bytes(p.read_bytes()[:100])
    with pytest.raises(ImageError, match="not a readable image"):
        read_image(p)


def test_directory(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="not a readable image"):
        read_image(tmp_path)


def test_constant_image(tmp_path: Path) -> None:
    p = tmp_path / "flat.png"
    Image.fromarray(np.full((20, 20), 128, dtype=np.uint8)).save(p)
    with pytest.raises(ImageError, match="all pixels have the same value"):
        image_to_points(p)


def test_no_foreground_with_fixed_threshold() -> None:
    img = np.zeros((10, 10))
    img[2, 3] = 0.4
    with pytest.raises(ImageError, match=r"no foreground pixels.*--threshold or --invert"):
        image_to_points(img, threshold=0.5, invert=False)
    with pytest.raises(ImageError, match="no foreground pixels"):
        image_to_points(np.zeros((10, 10), dtype=bool))


def test_two_foreground_pixels(tmp_path: Path) -> None:
    img = np.zeros((20, 20), dtype=np.uint8)
    img[3, 4] = img[10, 12] = 255
    p = tmp_path / "two.png"
    Image.fromarray(img).save(p)
    with pytest.raises(ImageError, match="only 2 foreground pixel"):
        image_to_points(p)


def test_errors_are_library_errors(tmp_path: Path) -> None:
    for bad in (tmp_path / "missing.tif", np.zeros((4, 4, 7))):
        with pytest.raises(PyroMoeError):
            image_to_points(bad)
