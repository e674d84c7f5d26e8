"""The curve pipeline: points from any source, experts' names, the design and its geometry,
and circles / conics recovered in pixel units."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

import pyro_moe
from pyro_moe.curves.design import expert_names
from pyro_moe.curves.fitting import CurveData, as_points, curve_data
from pyro_moe.experts import MixedTargetsWarning
from pyro_moe.shapes import (
    Circle,
    PointSet,
    Standardization,
    circle_design,
    circle_error,
    circle_image,
    circle_points,
    conic_design,
    ellipse_points,
    match_circles,
)
from pyro_moe.shapes.geometry import FORMS, Geometry, monomials
from pyro_moe.shapes.seeding import seed_curves
from pyro_moe.shapes.synthetic import SPARSE_KINDS, circle_scene, point_scene


def _two_circles() -> np.ndarray:
    xy, _ = circle_points([(10.0, 20.0), (40.0, 25.0)], [5.0, 8.0], 50, seed=1)
    return xy


def _standard(xy: np.ndarray) -> np.ndarray:
    """The standardization written out: mean centre, sigma = sqrt((var x + var y) / 2)."""
    c = xy.mean(0)
    s = np.sqrt(0.5 * (xy[:, 0].var() + xy[:, 1].var()))
    return (xy - c) / s


# ---- expert_names ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("experts", "design", "names"),
    [(3, "circle", ("circle",) * 3), (1, "circle", ("circle",)),
     (2, "conic", ("conic", "conic")), (np.int64(2), "circle", ("circle", "circle")),
     ("circle, ellipse", "circle", ("circle", "ellipse")),
     ("circle,ellipse,", "circle", ("circle", "ellipse")), ("line", "circle", ("line",)),
     (["circle", "ellipse"], "circle", ("circle", "ellipse")),
     (("ellipse", "ellipse", "circle"), "conic", ("ellipse", "ellipse", "circle"))],
)  # fmt: skip
def test_expert_names(experts, design, names):
    assert expert_names(experts, design) == names


def test_expert_names_default_design_is_circle():
    assert expert_names(2) == ("circle", "circle")


@pytest.mark.parametrize("bad", [0, -1, True, False, 2.5, None, 2.0])
def test_expert_names_refuses_bad_counts(bad):
    with pytest.raises(pyro_moe.InputError, match="experts must be an integer >= 1"):
        expert_names(bad)


@pytest.mark.parametrize(
    ("call", "kw", "hint"),
    [
        ("fit_circles", {"edgse": True}, "edges"),
        ("select_circles", {"edgse": True}, "edges"),
        ("select_circles", {"n_inti": 2}, "n_init"),
        ("fit_conics", {"max_iters": 5}, "max_iter"),
    ],
)
def test_an_unknown_option_is_refused_before_any_work_with_the_nearest_name(
    call, kw, hint, monkeypatch
):
    """A misspelt keyword fails at once, naming the option meant (the image options among
    them), not after the first fit with the engine's list alone."""
    import pyro_moe.curves.fitting as cf

    def no_work(*a, **k):
        raise AssertionError("the picture was read before the options were checked")

    monkeypatch.setattr(cf, "curve_data", no_work)
    monkeypatch.setattr("pyro_moe.curves.selection.curve_data", no_work)
    img = np.zeros((40, 40), dtype=bool)
    with pytest.raises(pyro_moe.InputError, match=f"unknown option.*did you mean {hint}"):
        getattr(pyro_moe, call)(img, **kw)
    # every option a layer below reads still passes the check
    cf.check_fit_options({"n_init": 2, "margin": 1.0, "seeded": True, "noise_expert": True,
                          "gate_steps": 3}, "select_curves", also=("seeded", "margin"))  # fmt: skip
    cf.check_fit_options({"method": "svi", "max_steps": 10, "batch_size": 64}, "fit_curves")
    with pytest.raises(pyro_moe.InputError, match="batch_size"):  # an SVI option under CAVI
        cf.check_fit_options({"batch_size": 64}, "fit_curves")


@pytest.mark.parametrize("design", ["line", "ellipse", "Circle", ""])
def test_expert_names_refuses_an_unknown_design(design):
    with pytest.raises(pyro_moe.InputError, match="unknown design"):
        expert_names(2, design)


# ---- as_points ------------------------------------------------------------------------


def test_as_points_of_an_array():
    xy = _two_circles()
    ps = as_points(xy)
    assert isinstance(ps, PointSet) and ps.image_shape is None
    np.testing.assert_array_equal(ps.xy, xy)
    np.testing.assert_allclose(ps.standard, _standard(xy), atol=1e-12)


def test_as_points_of_a_point_set_is_that_point_set():
    xy = _two_circles()
    ps = PointSet(xy, Standardization.identity())
    assert as_points(ps) is ps


def test_as_points_subsamples_with_the_seed():
    xy = _two_circles()
    a = as_points(xy, max_points=30, seed=4)
    assert len(a) == 30
    np.testing.assert_array_equal(a.xy, as_points(xy, max_points=30, seed=4).xy)
    assert not np.array_equal(a.xy, as_points(xy, max_points=30, seed=5).xy)
    # a subset, kept in the input's order; standardized on the kept points
    rows = [int(np.flatnonzero((xy == p).all(1))[0]) for p in a.xy]
    assert rows == sorted(rows)
    np.testing.assert_allclose(a.standard, _standard(a.xy), atol=1e-12)
    assert len(as_points(xy, max_points=500)) == len(xy)


def test_as_points_of_an_image_and_its_file(tmp_path):
    from PIL import Image

    img, _ = circle_image([(30.0, 20.0)], [10.0], shape=(50, 60))
    ps = as_points(img)
    rows, cols = np.nonzero(img)
    np.testing.assert_array_equal(ps.xy, np.c_[cols, rows])  # x = column, y = row
    assert ps.image_shape == (50, 60)
    path = tmp_path / "c.png"
    Image.fromarray(img.astype(np.uint8) * 255).save(path)
    for source in (path, str(path)):
        from_file = as_points(source)
        np.testing.assert_array_equal(from_file.xy, ps.xy)
        assert from_file.image_shape == (50, 60)


def test_as_points_refuses_bad_points():
    xy = _two_circles()
    xy[3, 1] = np.nan
    with pytest.raises(pyro_moe.InputError, match="NaN"):
        as_points(xy)


# ---- curve_data -----------------------------------------------------------------------


def test_curve_data_of_circles_is_the_shared_circle_design():
    xy = _two_circles()
    data = curve_data(xy, experts=2)
    assert isinstance(data, CurveData)
    X, t = circle_design(data.points.standard)
    np.testing.assert_array_equal(data.X, X)
    np.testing.assert_array_equal(data.y, t)
    # the same numbers written out: X = [x, y, 1], y = x^2 + y^2 of the standardized points
    s = _standard(xy)
    np.testing.assert_allclose(data.X, np.c_[s, np.ones(len(s))], atol=1e-12)
    np.testing.assert_allclose(data.y, (s**2).sum(1), atol=1e-12)
    assert data.maps is None
    g = data.geometry
    assert g.shared and g.design == "circle" and data.experts == 2
    assert g == Geometry.of("circle", 2, Standardization.fit(xy))
    np.testing.assert_allclose(g.pixel_points(data.X, data.y), xy, atol=1e-9)


def test_curve_data_of_conics_is_the_shared_conic_design():
    xy = ellipse_points((50.0, 40.0), (20.0, 10.0), 0.3, 80, seed=1)
    data = curve_data(xy, experts=3, design="conic")
    X, t = conic_design(data.points.standard)
    np.testing.assert_array_equal(data.X, X)
    np.testing.assert_array_equal(data.y, t)
    assert data.maps is None and data.geometry.design == "conic" and data.experts == 3


@pytest.mark.parametrize("experts", [["conic", "ellipse"], "ellipse,conic,ellipse"])
def test_conic_and_ellipse_share_one_form(experts):
    xy = ellipse_points((50.0, 40.0), (20.0, 10.0), 0.3, 80, seed=1)
    data = curve_data(xy, experts)
    assert data.maps is None
    assert data.geometry.shared and data.geometry.design == "conic"
    assert data.geometry.names == expert_names(experts)
    assert set(data.geometry.kinds) == {"conic"}
    X, t = conic_design(data.points.standard)
    np.testing.assert_array_equal(data.X, X)
    np.testing.assert_array_equal(data.y, t)


def test_curve_data_of_a_mix_maps_each_expert():
    xy = np.r_[_two_circles()[:50], ellipse_points((30.0, 30.0), (12.0, 5.0), 0.4, 50, seed=2)]
    data = curve_data(xy, ["circle", "ellipse"])
    n, d = 5, 6  # the ellipse's 5 weights; X = [xy, yy, x, y, 1] and y = xx
    assert data.X.shape == (len(xy), d - 1) and data.y.shape == (len(xy),)
    assert isinstance(data.maps, torch.Tensor) and data.maps.shape == (2, n + 1, d)
    g = data.geometry
    assert g.shared is False and g.design == "experts"
    assert g.names == ("circle", "ellipse") and g.kinds == ("circle", "conic")
    assert g.columns == ("xy", "yy", "x", "y", "1") and g.target == "xx"
    m = monomials(_standard(xy))
    np.testing.assert_allclose(data.X, np.column_stack([m[c] for c in g.columns]), atol=1e-12)
    np.testing.assert_allclose(data.y, m["xx"], atol=1e-12)
    # each map T_k turns z = [X, y] into the expert's features (padded) and its target
    Z = torch.as_tensor(np.c_[data.X, data.y])
    circle = Z @ data.maps[0].T
    ellipse = Z @ data.maps[1].T
    one = np.ones(len(xy))
    np.testing.assert_allclose(circle[:, :3].numpy(), np.c_[m["x"], m["y"], one], atol=1e-12)
    np.testing.assert_array_equal(circle[:, 3:n].numpy(), 0.0)
    np.testing.assert_allclose(circle[:, n].numpy(), m["xx"] + m["yy"], atol=1e-12)
    np.testing.assert_allclose(ellipse[:, :n].numpy(), data.X, atol=1e-12)
    np.testing.assert_allclose(ellipse[:, n].numpy(), m["xx"], atol=1e-12)
    np.testing.assert_allclose(g.pixel_points(data.X, data.y), xy, atol=1e-9)


def test_curve_data_refuses_mixed_targets_unless_asked():
    xy = _two_circles()
    with pytest.raises(pyro_moe.InputError, match="different targets"):
        curve_data(xy, ["circle", "line"])
    with pytest.warns(MixedTargetsWarning):
        data = curve_data(xy, ["circle", "line"], allow_mixed_targets=True)
    assert data.geometry.kinds == ("circle", "line") and not data.geometry.shared


@pytest.mark.parametrize(
    ("experts", "design", "n", "need", "what"),
    [(1, "circle", 2, 3, "a circle"), (2, "conic", 4, 5, "a conic"),
     (["circle", "ellipse"], "circle", 4, 5, "these experts")],
)  # fmt: skip
def test_curve_data_needs_enough_points(experts, design, n, need, what):
    xy = ellipse_points((50.0, 40.0), (20.0, 10.0), 0.3, n, even=True)
    with pytest.raises(pyro_moe.InputError, match=f"need at least {need} points to fit {what}"):
        curve_data(xy, experts, design=design)
    curve_data(ellipse_points((50.0, 40.0), (20.0, 10.0), 0.3, need, even=True), experts,
               design=design)  # fmt: skip


@pytest.mark.parametrize("experts", [[], "", ["bogus"], "circle,hexagon"])
def test_curve_data_refuses_unknown_or_no_experts(experts):
    with pytest.raises(pyro_moe.InputError):
        curve_data(_two_circles(), experts)


# ---- fits -----------------------------------------------------------------------------


def _close(true, got, tol=0.5):
    pairs = match_circles(true, got)
    assert len(pairs) == len(true)
    for k, j in pairs:
        t, g = true[k], got[j]
        assert g.valid
        assert abs(g.x0 - t.x0) < tol and abs(g.y0 - t.y0) < tol and abs(g.r - t.r) < tol, (t, g)


def test_fit_circles_recovers_the_circles_of_an_image():
    img, true = circle_image([(40.0, 50.0), (85.0, 60.0)], [15.0, 20.0], shape=(100, 120))
    res = pyro_moe.fit_circles(img, experts=2, n_init=1)
    assert res.expert_kinds == ["circle", "circle"]
    _close(true, res.circles())
    assert circle_error(true, res.circles()) < 0.5
    assert res.geometry == curve_data(img, 2).geometry
    rows, cols = np.nonzero(img)
    np.testing.assert_allclose(res.pixel_points(), np.c_[cols, rows], atol=1e-9)


def test_fit_circles_of_points_with_max_points():
    xy, _ = circle_points([(40.0, 50.0), (85.0, 60.0)], [15.0, 20.0], 200, jitter=0.1, seed=3)
    res = pyro_moe.fit_circles(xy, experts=2, n_init=1, max_points=150)
    assert len(res.pixel_points()) == 150
    true = [Circle(40.0, 50.0, 15.0), Circle(85.0, 60.0, 20.0)]
    _close(true, res.circles())


def test_fit_conics_recovers_the_ellipses():
    truth = [((50.0, 40.0), (20.0, 10.0), 0.3), ((110.0, 80.0), (15.0, 12.0), -0.5)]
    xy = np.concatenate([ellipse_points(c, ab, th, 150, jitter=0.3, seed=i)
                         for i, (c, ab, th) in enumerate(truth)])  # fmt: skip
    res = pyro_moe.fit_conics(xy, experts=2, n_init=2)
    conics = res.conics()
    assert [c.kind for c in conics] == ["ellipse", "ellipse"]
    for center, axes, angle in truth:
        c = min(conics, key=lambda c: np.hypot(*np.subtract(c.center, center)))
        assert np.abs(np.subtract(c.center, center)).max() < 0.5, c
        assert np.abs(np.subtract(c.semi_axes, axes)).max() < 0.5, c
        assert abs(c.angle - angle) < 0.05, c
    with pytest.raises(pyro_moe.InputError, match="not all circles"):
        res.circles()


def test_fit_curves_of_a_circle_and_an_ellipse():
    circle, _ = circle_points([(40.0, 40.0)], [15.0], 150, jitter=0.2, seed=3)
    ellipse = ellipse_points((110.0, 80.0), (15.0, 12.0), -0.5, 150, jitter=0.2, seed=2)
    res = pyro_moe.fit_curves(np.r_[circle, ellipse], experts=["circle", "ellipse"], n_init=2)
    assert res.expert_kinds == ["circle", "conic"]
    c, e = res.curves()
    assert (c.x0, c.y0, c.r) == pytest.approx((40.0, 40.0, 15.0), abs=0.5)
    assert e.kind == "ellipse"
    assert e.center == pytest.approx((110.0, 80.0), abs=0.5)
    assert e.semi_axes == pytest.approx((15.0, 12.0), abs=0.5)


# ---- the noise expert over the points' box, one noise precision per curve ------------------
@pytest.mark.parametrize("radius", [40.0, 20.0])
def test_a_clean_circle_is_never_called_outliers(radius):
    """Regression: with the noise expert uniform over the *observed* range of
    t = x^2 + y^2 (tiny on a clean ring) a one-pixel circle of r = 40 came back as r = 1.2
    with every point an outlier."""
    img, _ = circle_image([(60.0, 60.0)], [radius], shape=(120, 120))
    r = pyro_moe.fit_circles(img, experts=1, noise_expert=True)
    (c,) = r.circles()
    assert abs(c.r - radius) < 0.5 and abs(c.x0 - 60) < 0.5 and abs(c.y0 - 60) < 0.5
    assert float(r.outliers.double().mean()) == 0.0


def test_target_range_covers_the_box_and_every_target():
    from pyro_moe.curves.design import target_range

    rng = np.random.default_rng(0)
    pts = rng.uniform(-1.0, 2.0, size=(50, 2))
    lo, hi = target_range(pts, "xx", {"yy": 1.0})
    t = (pts**2).sum(1)
    assert lo <= t.min() and hi >= t.max()
    box = np.array([[pts[:, 0].max(), pts[:, 1].max()]])
    assert hi == pytest.approx(float((box**2).sum()), rel=1e-12)  # the box's far corner
    assert lo == pytest.approx(0.0, abs=2e-4)  # the box holds the origin: min on the grid


@pytest.mark.parametrize(
    "response,offset",
    [("xx", {"yy": 1.0}), ("xx", {}), ("x", {}), ("yy", {"xx": -2.5}), ("xx", {"xy": 1.0})],
)
def test_target_range_is_the_grids_own_range_to_the_last_bit(response, offset):
    """The range read on the grid's two axes (a target of one monomial per coordinate) is
    the same numbers as the RANGE_GRID^2 grid's, written out here; a target with a cross
    term is read on the grid itself."""
    from pyro_moe.curves.design import RANGE_GRID, target_range
    from pyro_moe.shapes.geometry import monomials

    rng = np.random.default_rng(7)
    for _ in range(40):
        pts = rng.normal(size=(int(rng.integers(3, 60)), 2)) * rng.uniform(0.1, 4.0)
        pts += rng.normal(size=2) * rng.uniform(0.0, 3.0)
        gx, gy = np.meshgrid(
            *(np.linspace(a, b, RANGE_GRID) for a, b in zip(pts.min(0), pts.max(0), strict=True))
        )
        m = monomials(np.concatenate([np.column_stack([gx.ravel(), gy.ravel()]), pts]))
        t = m[response] + sum(c * m[name] for name, c in offset.items())
        assert target_range(pts, response, offset) == (float(t.min()), float(t.max()))


def test_curves_have_one_noise_precision_each_by_default():
    img, _ = circle_image([(60.0, 60.0)] * 2, [15.0, 45.0], shape=(120, 120))
    r = pyro_moe.fit_circles(img, experts=2)
    assert r.noise_precision.shape == (2,)
    big, small = (0, 1) if r.circles()[0].r > r.circles()[1].r else (1, 0)
    # the t-noise of a ring grows like its radius: the small ring is the more precise
    assert float(r.noise_precision[small]) > float(r.noise_precision[big])
    shared = pyro_moe.fit_circles(img, experts=2, per_expert_noise=False)
    assert shared.noise_precision.shape == ()


@pytest.mark.parametrize("experts", [2**40, 10**20, 10**8])
def test_a_huge_count_of_experts_is_fits_error_before_anything_is_built(experts):
    """H-3: ``fit_circles(C, experts=2**40)`` was a raw MemoryError in expert_names; now the
    InputError of ``fit``, raised before anything of size K (names, maps) is built."""
    img, _ = circle_image([(40.0, 45.0)], [20.0], (100, 100))
    n = len(as_points(img))
    message = f"experts = {experts} is more than the number of points ({n})"
    for call in (pyro_moe.fit_circles, pyro_moe.fit_conics):
        with pytest.raises(pyro_moe.InputError, match=re.escape(message)):
            call(img, experts=experts)
    with pytest.raises(pyro_moe.InputError, match=re.escape(message)):
        expert_names(experts, points=n)
    with pytest.raises(pyro_moe.InputError, match=r"experts = 3 is more than .* \(2\)"):
        pyro_moe.fit_curves(np.array([[0.0, 1.0], [1.0, 0.0]]), experts=["line"] * 3)


def test_one_curve_fit_executes_the_model_file_once(tmp_path):
    """The model file is loaded once per curve fit (it was three times: the layout, the
    seeded start and fit each loaded it): a copy of the built-in file that counts its
    executions in a file."""
    from conftest import edited_model

    counter = tmp_path / "executions.txt"
    path = edited_model(
        tmp_path,
        "mixture_of_models",
        "import pyro\n",
        f"import pyro\n\nwith open({str(counter)!r}, 'a') as _fh:\n    _fh.write('x')\n",
    )
    img, _ = circle_image([(40.0, 45.0), (100.0, 60.0)], [20.0, 25.0], (120, 140))
    res = pyro_moe.fit_circles(img, experts=2, model=path)
    assert counter.read_text() == "x"
    assert len(res.circles()) == 2
    counter.write_text("")
    pyro_moe.select_circles(img, max_experts=2, n_init=1, model=path)
    assert counter.read_text() == "x"


def _within(truth, found, tol: float = 2.0) -> bool:
    """Every true circle matched by a found one within ``tol`` px in x0, y0 and r."""
    pairs = match_circles(truth, found)
    return len(pairs) == len(truth) and all(
        max(abs(truth[i].x0 - found[j].x0), abs(truth[i].y0 - found[j].y0),
            abs(truth[i].r - found[j].r)) <= tol
        for i, j in pairs
    )  # fmt: skip


def test_seed_finds_a_small_sparse_ring_among_clutter() -> None:
    """Three rings keeping 15 % of their pixels in as many clutter pixels: the seed's third
    curve was a large circle through the clutter (main: 0 of 20 such scenes solved)."""
    img, truth = point_scene([(128, 128)] * 3, [20, 55, 95], (256, 256), keep=0.15,
                             clutter=0.5, seed=42)  # fmt: skip
    data = curve_data(img, 3)
    labels = seed_curves(data.points.standard, 3, FORMS["circle"], "circle")
    xy = data.points.xy
    found = []
    for k in range(3):
        q = xy[labels == k]
        w = np.linalg.lstsq(np.column_stack([q, np.ones(len(q))]), (q**2).sum(1), rcond=None)[0]
        x0, y0 = w[0] / 2, w[1] / 2
        found.append(Circle(x0, y0, float(np.sqrt(w[2] + x0**2 + y0**2)), True))
    assert _within(truth, found, tol=3.0)
    fit = pyro_moe.fit_circles(img, experts=3, noise_expert=True)
    assert _within(truth, fit.circles())


@pytest.mark.parametrize("kind", SPARSE_KINDS)
def test_sparse_jittered_cluttered_scenes_solved_with_k_given(kind) -> None:
    """Each kind of issue 28's point sets, on a seed not used while tuning the seed."""
    img, truth = circle_scene(kind, 7)
    fit = pyro_moe.fit_circles(img, experts=len(truth), noise_expert=True)
    assert _within(truth, [c for c in fit.circles() if c.valid])


def test_a_fit_holding_a_band_of_clutter_is_seeded_again(monkeypatch) -> None:
    """Three 12 % rings in 60 % clutter where the seed's first draw puts the third curve
    through the clutter (a circle whose points spread over a quarter of its radius): a
    further seeded start finds the third ring, at a higher objective (seed 51; with 15 %
    rings in 50 % clutter the first draw finds all three on seeds 0-119 since the seed's
    score counts a narrow band's excess as its significance, and 114 of those 120 fits are
    right, against 83 before)."""
    from pyro_moe.curves import fitting

    img, truth = point_scene([(128, 128)] * 3, [20, 55, 95], (256, 256), keep=0.12,
                             clutter=0.6, seed=51)  # fmt: skip
    fit = pyro_moe.fit_circles(img, experts=3, noise_expert=True)
    assert _within(truth, fit.circles()) and fitting.noisy_circles(fit) == 0
    monkeypatch.setattr(fitting, "SEEDED_RESTARTS", 0)
    once = pyro_moe.fit_circles(img, experts=3, noise_expert=True)
    assert fitting.noisy_circles(once) >= 1 and once.objective < fit.objective


def test_the_search_runs_only_where_the_seeds_leave_something_to_fix() -> None:
    """From a seeded start the polished fit is the answer when every expert is a curve
    the points trace (seeds_explain): the search tries nothing; with one expert more than
    the picture's curves, the extra one holds nothing and the search runs."""
    from pyro_moe.curves import fitting

    img, truth = circle_scene(SPARSE_KINDS[3], 0)  # three jittered rings apart
    fit = pyro_moe.fit_circles(img, experts=3, noise_expert=True)
    assert _within(truth, fit.circles())
    assert fit.result.search["tried"] == 0
    assert fitting.seeds_explain(fitting.curve_data(img, 3), fit.result)
    two, _ = circle_scene(SPARSE_KINDS[0], 0)  # two sparse rings, three experts
    more = pyro_moe.fit_circles(two, experts=3, noise_expert=True)
    assert not fitting.seeds_explain(fitting.curve_data(two, 3), more.result)  # one empty
    assert more.result.search["tried"] > 0
    forced = pyro_moe.fit_circles(img, experts=3, noise_expert=True, search=True)
    assert forced.result.search["tried"] > 0  # search=True: the full search, as before


def test_a_ring_cut_by_the_frame_is_a_closed_chain_start() -> None:
    """A ring cut by the picture's border, traced all along its visible part, is closed
    (its sweep read on the arcs inside the box): the chains start the fit, no RANSAC."""
    from pyro_moe.curves import fitting

    img, truth = circle_scene("cut by the border", 0)
    data = curve_data(img, 2)
    assert fitting.chains_seed(data) and fitting.chain_seeds(data) == 2
    fit = pyro_moe.fit_circles(img, experts=2, noise_expert=True)
    assert _within(truth, fit.circles())


def test_refined_circles_are_saved_loaded_and_permuted(tmp_path):
    """fit_circles reports each circle as its geometric refinement (CurveFit.refined); the
    core result keeps the posterior mean, a saved fit reads back the same circles, and a
    relabelled fit carries its refinement with its experts."""
    fit = pyro_moe.fit_circles(_two_circles(), experts=2)
    assert fit.refined_experts() == [0, 1]
    algebraic = fit.geometry.curves(fit.mean.detach().cpu().numpy())
    assert [c.r for c in fit.circles()] != [c.r for c in algebraic]
    back = pyro_moe.CurveFit.load(fit.save(tmp_path / "fit.npz"))
    assert back.circles() == pytest.approx(fit.circles())
    np.testing.assert_allclose(back.refinement[1], fit.refinement[1])
    swapped = fit.permuted([1, 0])
    assert swapped.circles() == fit.circles()[::-1]
    plain = pyro_moe.CurveFit(fit.result, fit.geometry)  # a CurveFit of a core result
    assert plain.refined_experts() == [] and plain.circles() == algebraic


@pytest.mark.parametrize("seed", [46, 56])
def test_sparse_concentric_rings_in_clutter_are_seeded_on_the_rings(seed) -> None:
    """Three sparse concentric rings in clutter where the seed once drew circles through
    the clutter instead of the inner rings (seed 46: two circles each tangent to one inner
    ring and inside the other, 14 px off; seed 56: a circle through clutter for the
    smallest ring, r = 19.7 px, 19 px off), and the fit started on the true rings ends
    higher (F -115 against -252, -169 against -203): the seed's score now counts a narrow
    band's excess as its significance and cuts a small ring into arcs one band long."""
    from pyro_moe.shapes.synthetic import SPARSE_KINDS, circle_scene

    img, truth = circle_scene(SPARSE_KINDS[1], seed)
    fit = pyro_moe.fit_circles(img, experts=3, noise_expert=True)
    assert _within(truth, [c for c in fit.circles() if c.valid])
