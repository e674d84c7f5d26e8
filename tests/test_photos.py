"""Photographs in: Canny edges with an automatic scale, and the curves found on real photos.

References were measured independently of pyro_moe's fit:

* coins (``skimage.data.coins``, 24 coins): skimage's Hough transform on Canny edges
  (sigma 3, radii 15..39 px, 24 peaks, minimum distances 20 px), each circle then refined by
  ``skimage.measure.ransac`` + ``CircleModel`` (threshold 1.5 px) on the edge points within
  7 px of it; checked by eye on a plot of the circles over the photo.
* the study's eye photo ``1.tif``: the pupil from Canny edges (sigma 2 and 3) within
  80..120 px of a hand-read centre (277, 290), RANSAC + CircleModel (2 px), the mean of the
  two sigmas: (276.8, 288.0), r = 100.0 (the sigmas differ by 3.6 px in x); the outer iris
  boundary from Canny edges (sigma 3) 240..320 px from the pupil centre and 5 px clear of
  the frame, RANSAC + CircleModel (2 px): (285.7, 281.7), r = 276.5; the two specular
  rings (the outer edges of the bright highlights in the pupil) from Canny edges (sigma 2
  and 3) in bands of 18..30 px and 15..25 px about hand-read centres (326, 282) and
  (249, 299), RANSAC + CircleModel (1.5 px), the mean of the two sigmas: (325.8, 281.7),
  r = 24.0 and (248.6, 298.8), r = 19.7 (the sigmas differ by 0.8 px in r).
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

import pyro_moe
from pyro_moe.errors import InputError
from pyro_moe.shapes.curves import Circle
from pyro_moe.shapes.edges import EDGE_SIGMAS, auto_edge_sigma, canny_edges, is_binary
from pyro_moe.shapes.emprior import emprior_dir
from pyro_moe.shapes.image import image_to_points

data = pytest.importorskip("skimage.data")

COINS = [
    (45.3, 54.3, 19.9), (100.6, 55.9, 18.7), (155.1, 50.9, 22.8), (215.1, 51.4, 22.6),
    (276.8, 52.5, 19.7), (335.0, 43.7, 28.9), (44.5, 124.5, 20.3), (102.3, 125.2, 18.4),
    (153.6, 126.9, 18.7), (205.0, 124.0, 19.5), (271.0, 119.0, 24.5), (336.2, 124.4, 19.4),
    (43.6, 197.1, 18.5), (101.7, 195.3, 21.8), (154.0, 197.7, 19.1), (212.4, 193.0, 23.5),
    (273.1, 193.1, 21.7), (347.3, 186.2, 31.4), (46.0, 259.8, 27.9), (113.7, 265.8, 21.2),
    (173.0, 260.6, 27.1), (243.7, 263.4, 23.4), (301.0, 262.8, 24.9), (358.1, 268.5, 21.7),
]  # fmt: skip
EYE = {"pupil": (276.8, 288.0, 100.0), "iris": (285.7, 281.7, 276.5)}
EYE_SPECULAR = {"bright ring": (325.8, 281.7, 24.0), "faint ring": (248.6, 298.8, 19.7)}
#: Other round edges of the eye photo: the faint specular ring is an annulus about 6 px
#: wide, and Canny marks its inner edge as well as its outer one (checked on a zoom of the
#: photo with its edge points); the circle ``--experts auto`` fits there (its K = 5).
EYE_OTHER_EDGES = {"faint ring, inner edge": (248.5, 298.9, 13.9)}
#: ``skimage.data.coffee``'s rims as (x0, y0, semi-major, semi-minor): RANSAC +
#: ``EllipseModel`` (1.5 px) on the Canny edges (automatic sigma) within 8 px of an
#: ellipse read by hand off a plot of the edges. The saucer's rim is cut by the cup and
#: the frame (395 of 870 band points are inliers): a rough reference.
COFFEE = {
    "cup outer rim": (290.2, 112.5, 117.4, 94.6),
    "cup inner rim": (291.4, 112.2, 98.3, 81.3),
    "saucer rim": (279.5, 252.2, 190.4, 134.4),
}


def _gap(ref, circle) -> float:
    """The largest of |dx0|, |dy0|, |dr| in pixels."""
    x, y, r = ref
    return max(abs(circle.x0 - x), abs(circle.y0 - y), abs(circle.r - r))


def _ellipse_gap(ref, conic) -> float:
    """The largest of |dx0|, |dy0| and the semi-axes' differences (px); inf for a conic
    that is not an ellipse."""
    if conic.kind != "ellipse":
        return float("inf")
    x, y, a, b = ref
    big, small = sorted(conic.semi_axes, reverse=True)
    return max(abs(conic.center[0] - x), abs(conic.center[1] - y), abs(big - a), abs(small - b))


def _eye_photo_circles(experts: int):
    """The circles of ``circles 1.tif --edges --experts K`` (skipped without the photo)."""
    root = emprior_dir()
    path = root / "1.tif" if root is not None else None
    if path is None or not path.exists():
        pytest.skip("the study's eye photo 1.tif is absent")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", pyro_moe.ConvergenceWarning)
        return pyro_moe.fit_circles(path, experts=experts, edges=True, noise_expert=True).circles()


def _found(refs, circles, tol):
    """How many references have a valid circle within ``tol`` px (each circle used once)."""
    left = [c for c in circles if c.valid]
    hits = 0
    for ref in refs:
        if not left:
            break
        j = int(np.argmin([_gap(ref, c) for c in left]))
        if _gap(ref, left[j]) <= tol:
            hits += 1
            left.pop(j)
    return hits


def test_a_mask_is_binary_and_a_photo_is_not():
    assert not is_binary(data.coins() / 255.0)
    mask = np.zeros((40, 40))
    mask[10:30, 10:30] = 1.0
    assert is_binary(mask + np.random.default_rng(0).normal(0, 0.01, mask.shape).clip(0))
    # a gray mask still gives the boundary of its filled square with edges=True
    assert len(image_to_points(mask, edges=True)) == 4 * 19


def test_the_automatic_sigma_keeps_the_edge_budget():
    gray = data.coins() / 255.0
    s = auto_edge_sigma(gray)
    assert s in EDGE_SIGMAS and s > EDGE_SIGMAS[0]  # the coins' relief needs smoothing
    budget = 6.0 * sum(gray.shape)
    assert canny_edges(gray, s).sum() <= budget < canny_edges(gray, EDGE_SIGMAS[0]).sum()
    fine = image_to_points(data.coins(), edges=True, edge_sigma=1.0)
    assert len(fine) == canny_edges(gray, 1.0).sum() > len(image_to_points(gray, edges=True))


@pytest.mark.parametrize("bad", [0, -1.0, float("nan"), "wide", True])
def test_a_bad_edge_sigma_names_itself(bad):
    with pytest.raises(InputError, match="edge_sigma"):
        image_to_points(data.coins(), edges=True, edge_sigma=bad)


@pytest.mark.slow
def test_coins_k24_finds_at_least_23_of_24_within_4_px():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", pyro_moe.ConvergenceWarning)
        result = pyro_moe.fit_circles(data.coins(), experts=24, edges=True, noise_expert=True)
    circles = result.circles()
    assert _found(COINS, circles, 4.0) >= 23
    # no invalid circle reported as valid: each valid circle lies on a coin
    for c in circles:
        if c.valid:
            assert min(_gap(ref, c) for ref in COINS) <= 4.0, c


@pytest.mark.slow
def test_the_eye_photo_k2_gives_the_pupil_and_the_iris_within_8_px():
    circles = _eye_photo_circles(2)
    for name, ref in EYE.items():
        assert min(_gap(ref, c) for c in circles) <= 8.0, (name, circles)


def test_the_command_line_passes_edge_sigma(capsys, tmp_path):
    from cli_helpers import run_cli
    from PIL import Image

    path = tmp_path / "coins.png"
    Image.fromarray(data.coins()).save(path)
    counts = {}
    for sigma in ("1", "4"):
        code, out, _ = run_cli(capsys, "circles", path, "--edges", "--edge-sigma", sigma,
                               "--experts", "1", "--json")  # fmt: skip
        assert code == 0
        counts[sigma] = json.loads(out)["points"]
    gray = data.coins() / 255.0
    assert counts == {
        "1": int(canny_edges(gray, 1.0).sum()),
        "4": int(canny_edges(gray, 4.0).sum()),
    }


def _inside(shape, centre, axes, angle=0.0) -> np.ndarray:
    """Pixels (H, W) inside an ellipse of centre (x, y), semi-axes and angle."""
    yy, xx = np.mgrid[: shape[0], : shape[1]].astype(np.float64)
    c, s = np.cos(angle), np.sin(angle)
    u, v = (xx - centre[0]) * c + (yy - centre[1]) * s, (centre[0] - xx) * s + (yy - centre[1]) * c
    return (u / axes[0]) ** 2 + (v / axes[1]) ** 2 <= 1.0


def cup_and_saucer(seed: int = 0):
    """A rendered cup on a saucer seen at an angle, on a grained table with a straight
    edge: (gray image, {name: (centre, semi-axes, angle)}) of the cup's outer and inner
    rims and the saucer's rim (the cup's body hides part of the saucer)."""
    rng = np.random.default_rng(seed)
    H, W = 300, 420
    yy, xx = np.mgrid[:H, :W].astype(np.float64)
    img = 0.55 + 0.06 * np.sin(xx / 7.0 + 0.4 * np.sin(yy / 23.0)) + 0.03 * rng.normal(size=(H, W))
    img[yy < 0.45 * xx - 60] = 0.15  # the table's straight edge, dark beyond it
    rims = {"outer": ((210.0, 110.0), (95.0, 60.0), 0.05),
            "inner": ((210.0, 110.0), (80.0, 50.0), 0.05),
            "saucer": ((205.0, 200.0), (160.0, 88.0), 0.05)}  # fmt: skip
    saucer = _inside((H, W), *rims["saucer"])
    img[saucer] = 0.35 + 0.1 * (xx / W)[saucer]  # shaded
    img[_inside((H, W), (210.0, 160.0), (95.0, 60.0), 0.05) & (yy > 110)] = 0.28  # the body
    img[_inside((H, W), *rims["outer"])] = 0.92
    inner = _inside((H, W), *rims["inner"])
    img[inner] = 0.25 + 0.1 * (yy / H)[inner]
    return np.clip(img + 0.02 * rng.normal(size=(H, W)), 0, 1), rims


def eye_like(seed: int = 0):
    """A rendered eye: a textured iris (radial fibres) on a bright sclera, a dark pupil and
    two small bright highlights in it: (gray image, [(x0, y0, r)] of iris, pupil and the
    two highlights)."""
    rng = np.random.default_rng(seed)
    H, W = 420, 440
    yy, xx = np.mgrid[:H, :W].astype(np.float64)
    img = 0.8 + 0.02 * rng.normal(size=(H, W))
    iris, pupil = (222.0, 205.0, 150.0), (215.0, 212.0, 58.0)
    spec = [(240.0, 195.0, 14.0), (190.0, 226.0, 9.0)]
    rad = np.hypot(xx - iris[0], yy - iris[1])
    fibres = np.sin(60 * np.arctan2(yy - iris[1], xx - iris[0]) + 3 * rng.normal())
    fibres = 0.45 + 0.08 * fibres * np.cos(rad / 6.0) + 0.05 * rng.normal(size=(H, W))
    img[rad <= iris[2]] = fibres[rad <= iris[2]]
    img[np.hypot(xx - pupil[0], yy - pupil[1]) <= pupil[2]] = 0.08
    for (x, y, r), level in zip(spec, (0.97, 0.7), strict=True):
        img[np.hypot(xx - x, yy - y) <= r] = level
    return np.clip(img + 0.01 * rng.normal(size=(H, W)), 0, 1), [iris, pupil, *spec]


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1])
def test_a_rendered_cup_and_saucer_gives_both_rims_not_the_table_edge(seed):
    img, rims = cup_and_saucer(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", pyro_moe.ConvergenceWarning)
        conics = pyro_moe.fit_conics(img, experts=3, edges=True, noise_expert=True).conics()
    for name in ("outer", "inner"):
        (x, y), (a, b), _ = rims[name]
        assert min(_ellipse_gap((x, y, a, b), c) for c in conics) <= 2.0, (name, conics)


@pytest.mark.parametrize("seed", [0, 1])
def test_a_rendered_eye_k4_gives_pupil_iris_and_both_highlights(seed):
    img, truth = eye_like(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", pyro_moe.ConvergenceWarning)
        circles = pyro_moe.fit_circles(img, experts=4, edges=True, noise_expert=True).circles()
    assert _found(truth, circles, 2.0) == 4, circles


@pytest.mark.slow
def test_the_eye_photo_k4_adds_both_specular_rings():
    circles = _eye_photo_circles(4)
    assert _found(list(EYE.values()), circles, 8.0) == 2, circles
    assert _found(list(EYE_SPECULAR.values()), circles, 2.0) == 2, circles


@pytest.mark.slow
def test_coffee_gives_both_cup_rims_within_4_px():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", pyro_moe.ConvergenceWarning)
        conics = pyro_moe.fit_conics(data.coffee(), experts=3, edges=True,
                                     noise_expert=True).conics()  # fmt: skip
    for name in ("cup outer rim", "cup inner rim"):
        assert min(_ellipse_gap(COFFEE[name], c) for c in conics) <= 4.0, (name, conics)


def rim_with_branches(seed: int = 0):
    """A real photo (``skimage.data.moon``) with a bright circular rim drawn on it and,
    inside the rim, dark branching curved lines (a tree of circular arcs of radii 40 to
    160 px, each branch forking in two, 3 px wide): (gray image in [0, 1], the rim
    (x0, y0, r))."""
    from skimage.draw import disk

    rng = np.random.default_rng(seed)
    img = data.moon() / 255.0
    H, W = img.shape
    rim = (W / 2 + rng.uniform(-10, 10), H / 2 + rng.uniform(-10, 10), 200.0)
    yy, xx = np.mgrid[:H, :W]
    img = np.where(np.abs(np.hypot(xx - rim[0], yy - rim[1]) - rim[2]) <= 2.0, 0.95, img)
    stack = [(rim[0] + rng.uniform(-30, 30), rim[1] + 120.0, -np.pi / 2, 0)]
    while stack:  # a branch: an arc of random radius and side, then two branches
        x, y, heading, depth = stack.pop()
        radius, side = rng.uniform(40, 160), rng.choice([-1.0, 1.0])
        for _ in range(int(rng.uniform(40, 90))):
            heading += side / radius
            x, y = x + np.cos(heading), y + np.sin(heading)
            if np.hypot(x - rim[0], y - rim[1]) > rim[2] - 12:
                break
            rr, cc = disk((y, x), 1.5, shape=img.shape)
            img[rr, cc] = 0.1
        else:
            if depth < 4:
                stack += [(x, y, heading + 0.5, depth + 1), (x, y, heading - 0.5, depth + 1)]
    return np.clip(img, 0, 1), rim


def _circle_of(weights) -> tuple[float, float, float]:
    w = np.asarray(weights, dtype=float)
    return 0.5 * w[0], 0.5 * w[1], float(np.sqrt(w[2] + 0.25 * (w[0] ** 2 + w[1] ** 2)))


def test_the_edge_chains_alone_give_the_24_coins_and_both_cup_rims():
    from pyro_moe.shapes.chains import CLOSED, chain_curves

    coins = chain_curves(image_to_points(data.coins(), edges=True).xy, "circle")
    closed = [c for c in coins if c.sweep >= CLOSED]
    assert len(closed) == 24
    found = [_circle_of(c.weights) for c in closed]
    assert all(min(_gap(ref, Circle(*f, True)) for ref in COINS) <= 2.0 for f in found)
    assert _found(COINS, [Circle(*f, True) for f in found], 2.0) == 24
    cup = chain_curves(image_to_points(data.coffee(), edges=True).xy, "conic")
    centres = []  # each candidate conic's centre, the gradient of its form = 0
    for c in cup[:2]:
        B, C, D, E, _ = c.weights
        det = -4.0 * C - B * B
        centres.append(((B * E - 2.0 * C * D) / det, (2.0 * E + B * D) / det))
    for name in ("cup outer rim", "cup inner rim"):
        x, y = COFFEE[name][:2]
        assert min(np.hypot(cx - x, cy - y) for cx, cy in centres) <= 1.5, (name, centres)


def test_straight_edges_and_a_corner_give_no_candidate_curve():
    from pyro_moe.shapes.chains import chain_curves

    mask = np.zeros((200, 240), dtype=bool)
    mask[50, 10:230] = True  # a horizontal edge
    rr = np.arange(60, 190)
    mask[rr, rr // 2 + 20] = True  # a slanted one
    mask[100:180, 150] = True  # an L corner
    mask[180, 150:220] = True
    rows, cols = np.nonzero(mask)
    assert chain_curves(np.column_stack([cols, rows]).astype(float), "circle") == []
    assert chain_curves(np.column_stack([cols, rows]).astype(float), "conic") == []


def test_points_off_the_pixel_grid_have_no_chains():
    from pyro_moe.shapes.chains import chain_curves, grid_mask

    xy = np.random.default_rng(0).uniform(0, 100, (300, 2))
    assert grid_mask(xy) is None and chain_curves(xy, "circle") == []


def test_the_api_default_is_the_noise_expert_and_coffee_k2_gives_both_rims():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", pyro_moe.ConvergenceWarning)
        result = pyro_moe.fit_conics(data.coffee(), experts=2, edges=True)
    assert result.noise_expert
    conics = result.conics()
    for name in ("cup outer rim", "cup inner rim"):
        assert min(_ellipse_gap(COFFEE[name], c) for c in conics) <= 1.0, (name, conics)


@pytest.mark.parametrize("seed", [0, 1])
def test_auto_on_a_rim_with_branching_clutter_reports_only_the_rim(seed):
    """Curved, branching clutter inside a rim drawn on a real photo: every valid circle of
    ``--experts auto`` is one of the rim's two edges (r 198 and 202 px)."""
    img, (x0, y0, r) = rim_with_branches(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", pyro_moe.ConvergenceWarning)
        selection = pyro_moe.select_curves(img, design="circle", image_options={"edges": True})
    valid = [rep.curve for rep in pyro_moe.curve_reports(selection.result) if rep.valid]
    assert valid
    for c in valid:
        assert max(abs(c.x0 - x0), abs(c.y0 - y0), abs(c.r - r)) <= 4.0, c


@pytest.mark.slow
@pytest.mark.parametrize("name", ["camera", "rocket", "brick"])
def test_auto_on_photos_of_texture_without_a_circle_reports_no_circle(name):
    """Grass, a tripod, a rocket, buildings, a brick pavement: curved texture and straight
    edges, no circle. Auto had reported bands of texture as valid circles (camera: three,
    noise 7.8-22 px; rocket: one, r 157 px, noise 31 px), now 'no edge' (the points within
    max(2 px, their noise) of them are less than 2.8 times as dense as beside them, a
    curve's are 3.7 and more), and circles inscribed in the bricks' ends (r 16-18 px,
    noise 1.5-1.9 px), now 'another shape' (their points depart from them smoothly, by
    0.067 r and more; a coin's by 0.051 r at most)."""
    img = getattr(data, name)()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", pyro_moe.ConvergenceWarning)
        selection = pyro_moe.select_curves(img, design="circle", image_options={"edges": True})
    valid = [r.curve for r in pyro_moe.curve_reports(selection.result) if r.valid]
    assert valid == [], valid


@pytest.mark.slow
@pytest.mark.parametrize("name", ["camera", "brick"])
def test_conic_auto_on_photos_of_texture_reports_no_conic(name):
    """The same photos with ``conics --experts auto``: it had reported a near-straight
    hyperbola and a 390 x 37 px ellipse through the camera's grass, a 447 x 20 px ellipse
    across the bricks, all valid; their points lie 73 to 121 px RMS from them (the real
    conics of the other photos: under 1 px), now "poor fit"."""
    img = getattr(data, name)()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", pyro_moe.ConvergenceWarning)
        selection = pyro_moe.select_curves(img, design="conic", image_options={"edges": True})
    reports = pyro_moe.curve_reports(selection.result)
    assert [r.curve for r in reports if r.valid] == []
    assert any(r.reason.startswith("poor fit") for r in reports)


@pytest.mark.slow
def test_coins_auto_finds_the_24_coins_from_the_chains_range():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", pyro_moe.ConvergenceWarning)
        selection = pyro_moe.select_curves(data.coins(), design="circle",
                                           image_options={"edges": True})  # fmt: skip
    # the range from the chains: 24 closed candidates, K = 24, 25 tried (it grows past 25,
    # up to 2 x 25, only while a K gains: K = 25 adds no curve)
    assert (selection.settings["min_experts"], selection.settings["max_experts"]) == (24, 50)
    assert [row["experts"] for row in selection.table] == [24, 25]
    assert selection.experts == 24
    valid = [r.curve for r in pyro_moe.curve_reports(selection.result) if r.valid]
    assert _found(COINS, valid, 4.0) == 24
    for c in valid:  # nothing valid beside the coins
        assert min(_gap(ref, c) for ref in COINS) <= 4.0, c


def test_ellipse_overlap_is_the_filled_ellipses_intersection_over_union():
    from pyro_moe.shapes.metric import ellipse_overlap, ellipses_found

    assert ellipse_overlap((0, 0, 10, 10, 0), (0, 0, 10, 10, 0)) == pytest.approx(1.0)
    # two circles of r 10, centres 1 apart: lens 2 r^2 acos(d / 2r) - (d / 2) sqrt(4r^2 - d^2)
    lens = 200 * np.arccos(0.05) - 0.5 * np.sqrt(399.0)
    expected = lens / (2 * np.pi * 100 - lens)
    assert ellipse_overlap((0, 0, 10, 10, 0), (1, 0, 10, 10, 0)) == pytest.approx(
        expected, abs=3e-3
    )
    # crossed ellipses 10 x 5: the intersection is 4 a b atan(b / a)
    inter = 4 * 50 * np.arctan(0.5)
    crossed = ellipse_overlap((0, 0, 10, 5, 0), (0, 0, 10, 5, np.pi / 2))
    assert crossed == pytest.approx(inter / (2 * np.pi * 50 - inter), abs=3e-3)
    assert ellipses_found([(0, 0, 10, 5, 0), (50, 50, 8, 8, 0)], [(50.5, 50, 8, 8, 0)], 0.8) == 1
    with pytest.raises(InputError, match="a, b > 0"):
        ellipse_overlap((0, 0, 0, 5, 0), (0, 0, 1, 1, 0))
