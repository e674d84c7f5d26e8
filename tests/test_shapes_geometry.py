"""The curve geometry: experts' kinds, design columns, weights → pixel curves, persistence."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from pyro_moe.errors import InputError
from pyro_moe.shapes import (
    Circle,
    Line,
    Standardization,
    circle_design,
    circle_weights,
    conic_weights_from_geometry,
    ellipse_points,
)
from pyro_moe.shapes.geometry import (
    FORMS,
    KINDS,
    MONOMIALS,
    Geometry,
    curve_of,
    monomials,
    target_name,
)

ST = Standardization(np.array([30.0, 40.0]), 12.5)


def _mixed(st: Standardization = ST) -> Geometry:
    """A circle and an ellipse expert on the mapped design of both (as curve_data builds it)."""
    return Geometry(("circle", "ellipse"), ("circle", "conic"), ("xy", "yy", "x", "y", "1"), "xx",
                    st, False)  # fmt: skip


# ---- the forms ------------------------------------------------------------------------


def test_forms_and_kinds():
    assert KINDS == ("circle", "conic", "line")
    assert FORMS["circle"] == (("x", "y", "1"), "xx", {"yy": 1.0})
    assert FORMS["conic"] == (("xy", "yy", "x", "y", "1"), "xx", {})
    assert FORMS["line"] == (("y", "1"), "x", {})
    assert MONOMIALS == ("xx", "xy", "yy", "x", "y", "1")


def test_monomials_of_points():
    xy = np.array([[2.0, 3.0], [-1.0, 0.5]])
    m = monomials(xy)
    assert set(m) == set(MONOMIALS)
    np.testing.assert_array_equal(m["xx"], [4.0, 1.0])
    np.testing.assert_array_equal(m["xy"], [6.0, -0.5])
    np.testing.assert_array_equal(m["yy"], [9.0, 0.25])
    np.testing.assert_array_equal(m["x"], [2.0, -1.0])
    np.testing.assert_array_equal(m["y"], [3.0, 0.5])
    np.testing.assert_array_equal(m["1"], [1.0, 1.0])


@pytest.mark.parametrize(
    ("response", "offset", "name"),
    [("xx", {"yy": 1.0}, "xx+yy"), ("xx", {}, "xx"), ("x", {}, "x"),
     ("xx", {"yy": 2.0, "x": -0.5}, "xx+2*yy+-0.5*x")],
)  # fmt: skip
def test_target_name(response, offset, name):
    assert target_name(response, offset) == name


def test_curve_of_reads_each_kind():
    c = curve_of("circle", circle_weights(1.0, -2.0, 3.0))
    assert isinstance(c, Circle)
    assert (c.x0, c.y0, c.r) == pytest.approx((1.0, -2.0, 3.0))
    # padded weights (a mapped layout): only the kind's first n_k weights are read
    padded = np.r_[circle_weights(1.0, -2.0, 3.0), 99.0, -7.0]
    assert curve_of("circle", padded) == c
    assert curve_of("line", [0.5, 2.0]) == Line(0.5, 2.0)
    w = np.array([0.1, 0.2, 0.3])
    np.testing.assert_array_equal(curve_of(None, w), w)


# ---- construction ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "columns", "target", "design"),
    [("circle", ("x", "y", "1"), "xx+yy", "circle"),
     ("conic", ("xy", "yy", "x", "y", "1"), "xx", "conic"),
     ("line", ("y", "1"), "x", "experts")],
)  # fmt: skip
@pytest.mark.parametrize("K", [1, 3])
def test_of_each_form(kind, columns, target, design, K):
    g = Geometry.of(kind, K, ST)
    assert g.names == (kind,) * K and g.kinds == (kind,) * K
    assert g.experts == K
    assert g.columns == columns and g.target == target
    assert g.standardization == ST
    assert g.shared is True
    assert g.design == design


def test_of_defaults_to_the_identity():
    g = Geometry.of("circle", 2)
    assert g.standardization == Standardization.identity()
    a, b = g.curves(np.stack([circle_weights(1.5, -0.5, 2.0), circle_weights(0.0, 3.0, 1.0)]))
    assert (a.x0, a.y0, a.r) == pytest.approx((1.5, -0.5, 2.0))
    assert (b.x0, b.y0, b.r) == pytest.approx((0.0, 3.0, 1.0))


@pytest.mark.parametrize("kind", ["ellipse", "Circle", "", "experts"])
def test_of_unknown_kind(kind):
    with pytest.raises(InputError, match="unknown curve kind"):
        Geometry.of(kind, 2, ST)


@pytest.mark.parametrize("K", [0, -1])
def test_of_needs_an_expert(K):
    with pytest.raises(InputError, match="one kind per expert"):
        Geometry.of("circle", K, ST)


def test_constructor_checks():
    cols = ("x", "y", "1")
    with pytest.raises(InputError, match="one kind per expert"):
        Geometry(("circle", "circle"), ("circle",), cols, "xx+yy", ST, True)
    with pytest.raises(InputError, match="one kind per expert"):
        Geometry((), (), cols, "xx+yy", ST, True)
    with pytest.raises(InputError, match="unknown curve kind 'ellipse'"):
        Geometry(("ellipse",), ("ellipse",), cols, "xx", ST, True)
    # lists become tuples; None is a kind (an expert reported by its weights)
    g = Geometry(["mine"], [None], ["x", "1"], "xx", ST, True)
    assert g.names == ("mine",) and g.kinds == (None,) and g.columns == ("x", "1")
    assert g.design == "experts"


def test_design_property():
    assert Geometry.of("circle", 2, ST).design == "circle"
    assert Geometry.of("conic", 2, ST).design == "conic"
    assert Geometry.of("line", 2, ST).design == "experts"
    assert _mixed().design == "experts"
    # two names of one form on a shared design are still a conic design
    shared = Geometry(("conic", "ellipse"), ("conic", "conic"), FORMS["conic"][0], "xx", ST, True)
    assert shared.design == "conic"
    # a circle geometry whose design is mapped is not the circle design
    mapped = Geometry(("circle",) * 2, ("circle",) * 2, ("x", "y", "1"), "xx", ST, False)
    assert mapped.design == "experts"


# ---- weights → curves in pixels -------------------------------------------------------


def test_circle_weights_become_pixel_circles():
    std = [(0.3, -0.2, 0.8), (-1.0, 0.5, 1.5)]
    W = np.stack([circle_weights(*c) for c in std])
    g = Geometry.of("circle", 2, ST)
    got = g.curves(W)
    assert all(isinstance(c, Circle) and c.valid for c in got)
    # x0 = c_x + s x0_std, y0 = c_y + s y0_std, r = s r_std (by hand: c = (30, 40), s = 12.5)
    expected = [(33.75, 37.5, 10.0), (17.5, 46.25, 18.75)]
    for c, (x0, y0, r) in zip(got, expected, strict=True):
        assert (c.x0, c.y0, c.r) == pytest.approx((x0, y0, r), abs=1e-12)


def test_circle_curves_lie_on_the_pixel_points():
    """Points of a pixel circle, standardized, fitted by least squares: the weights read
    back as the pixel circle."""
    phi = np.linspace(0, 2 * np.pi, 40, endpoint=False)
    xy = np.c_[52.0 + 9.0 * np.cos(phi), 17.0 + 9.0 * np.sin(phi)]
    st = Standardization.fit(xy)
    X, t = circle_design(st.to_standard(xy))
    w = np.linalg.lstsq(X, t, rcond=None)[0]
    (c,) = Geometry.of("circle", 1, st).curves(w[None, :])
    assert (c.x0, c.y0, c.r) == pytest.approx((52.0, 17.0, 9.0), abs=1e-9)


def test_invalid_circle_stays_invalid():
    (c,) = Geometry.of("circle", 1, ST).curves([[0.0, 0.0, -1.0]])
    assert not c.valid and c.r == 0.0
    assert (c.x0, c.y0) == pytest.approx((30.0, 40.0))


def test_conic_weights_become_pixel_conics():
    w = conic_weights_from_geometry((0.4, -0.3), (1.2, 0.5), 0.6)
    (e,) = Geometry.of("conic", 1, ST).curves(w[None, :])
    assert e.kind == "ellipse"
    assert e.center == pytest.approx((30.0 + 12.5 * 0.4, 40.0 - 12.5 * 0.3), abs=1e-9)
    assert e.semi_axes == pytest.approx((15.0, 6.25), abs=1e-9)
    assert e.angle == pytest.approx(0.6, abs=1e-9)


def test_line_weights_become_pixel_lines():
    a, c = 0.75, -0.4  # x = a y + c in standard units
    (line,) = Geometry.of("line", 1, ST).curves([[a, c]])
    ys = np.array([-1.0, 0.0, 2.0])
    pix = np.c_[line.a * ys + line.c, ys]  # points of the pixel line
    s = ST.to_standard(pix)
    np.testing.assert_allclose(s[:, 0], a * s[:, 1] + c, atol=1e-12)


def test_mixed_curves_read_each_expert_as_its_kind():
    W = np.zeros((2, 5))
    W[0, :3] = circle_weights(0.2, 0.1, 0.7)
    W[0, 3:] = [5.0, -5.0]  # padding, never read
    W[1] = conic_weights_from_geometry((-0.5, 0.5), (1.0, 0.4), -0.3)
    circle, ellipse = _mixed().curves(W)
    assert isinstance(circle, Circle)
    assert (circle.x0, circle.y0, circle.r) == pytest.approx((32.5, 41.25, 8.75), abs=1e-12)
    assert ellipse.kind == "ellipse"
    assert ellipse.center == pytest.approx((23.75, 46.25), abs=1e-9)
    assert ellipse.semi_axes == pytest.approx((12.5, 5.0), abs=1e-9)


@pytest.mark.parametrize("rows", [1, 3])
def test_curves_need_one_row_per_expert(rows):
    with pytest.raises(InputError, match=f"{rows} weight rows for 2 experts"):
        Geometry.of("circle", 2, ST).curves(np.zeros((rows, 3)))


# ---- design rows → points -------------------------------------------------------------


def test_pixel_points_of_a_shared_circle_design():
    xy = ellipse_points((60.0, 25.0), (14.0, 6.0), 0.4, 50, seed=3)
    st = Standardization.fit(xy)
    X, y = circle_design(st.to_standard(xy))
    np.testing.assert_allclose(Geometry.of("circle", 2, st).pixel_points(X, y), xy, atol=1e-9)


@pytest.mark.parametrize("kind", ["conic", "line"])
def test_pixel_points_of_other_shared_designs(kind):
    xy = ellipse_points((60.0, 25.0), (14.0, 6.0), 0.4, 50, seed=3)
    st = Standardization.fit(xy)
    g = Geometry.of(kind, 2, st)
    features, response, _ = FORMS[kind]
    m = monomials(st.to_standard(xy))
    X = np.column_stack([m[c] for c in features])
    np.testing.assert_allclose(g.pixel_points(X, m[response]), xy, atol=1e-9)


def test_pixel_points_of_a_mapped_design():
    xy = ellipse_points((10.0, 90.0), (20.0, 8.0), -0.7, 60, seed=4)
    st = Standardization.fit(xy)
    g = _mixed(st)
    m = monomials(st.to_standard(xy))
    X = np.column_stack([m[c] for c in g.columns])
    np.testing.assert_allclose(g.pixel_points(X, m["xx"]), xy, atol=1e-9)
    # the columns are found by name, not by position
    shuffled = Geometry(g.names, g.kinds, ("1", "y", "xy", "x", "yy"), "xx", st, False)
    Xs = np.column_stack([m[c] for c in shuffled.columns])
    np.testing.assert_allclose(shuffled.pixel_points(Xs, m["xx"]), xy, atol=1e-9)


def test_pixel_points_need_x_and_y():
    g = Geometry(("mine",), (None,), ("xx", "y", "1"), "xy", ST, True)
    with pytest.raises(InputError, match="does not hold the points' x and y"):
        g.pixel_points(np.zeros((4, 3)), np.zeros(4))


# ---- permuted, repeated ---------------------------------------------------------------


def test_permuted():
    g = Geometry(("circle", "ellipse", "line"), ("circle", "conic", "line"),
                 ("xy", "yy", "x", "y", "1"), "xx", ST, False)  # fmt: skip
    p = g.permuted([2, 0, 1])
    assert p.names == ("line", "circle", "ellipse")
    assert p.kinds == ("line", "circle", "conic")
    assert (p.columns, p.target, p.standardization, p.shared) == (
        g.columns, g.target, g.standardization, g.shared,
    )  # fmt: skip
    assert g.names == ("circle", "ellipse", "line")  # the original is unchanged
    assert p.permuted([1, 2, 0]) == g


def test_permuted_curves_follow_the_experts():
    """Permuting the experts permutes their kinds with them: each weight row is still read
    as its own expert's kind."""
    W = np.zeros((2, 5))
    W[0, :3] = circle_weights(0.2, 0.1, 0.7)
    W[1] = conic_weights_from_geometry((-0.5, 0.5), (1.0, 0.4), -0.3)
    g = _mixed()
    circle, ellipse = g.curves(W)
    ellipse2, circle2 = g.permuted([1, 0]).curves(W[[1, 0]])
    assert circle2 == circle
    assert ellipse2.kind == "ellipse"
    assert ellipse2.center == pytest.approx(ellipse.center)
    assert ellipse2.semi_axes == pytest.approx(ellipse.semi_axes)


@pytest.mark.parametrize("kind", ["circle", "conic", "line"])
def test_repeated(kind):
    g = Geometry.of(kind, 2, ST)
    r = g.repeated(4)
    assert r == Geometry.of(kind, 4, ST)
    assert r.experts == 4 and r.shared and r.columns == g.columns and r.target == g.target
    assert g.experts == 2


def test_repeated_refuses_a_mix_of_forms():
    with pytest.raises(InputError, match="one name"):
        _mixed().repeated(3)
    mapped = Geometry(("circle",) * 2, ("circle",) * 2, ("x", "y", "1"), "xx", ST, False)
    with pytest.raises(InputError, match="one name"):
        mapped.repeated(3)


# ---- equality and persistence ---------------------------------------------------------


def test_equality():
    assert Geometry.of("circle", 2, ST) == Geometry.of("circle", 2, ST)
    assert Geometry.of("circle", 2, ST) != Geometry.of("circle", 3, ST)
    assert Geometry.of("circle", 2, ST) != Geometry.of("conic", 2, ST)
    assert Geometry.of("circle", 2, ST) != Geometry.of("circle", 2, Standardization.identity())
    assert Geometry.of("circle", 2, ST) != _mixed()
    assert Geometry.of("circle", 2, ST) != "circle"
    with pytest.raises(TypeError):
        hash(Geometry.of("circle", 2, ST))


def test_as_dict():
    d = _mixed().as_dict()
    assert d == {
        "design": "experts",
        "names": ["circle", "ellipse"],
        "kinds": ["circle", "conic"],
        "columns": ["xy", "yy", "x", "y", "1"],
        "target": "xx",
        "center": [30.0, 40.0],
        "scale": 12.5,
        "shared": False,
    }
    assert Geometry.of("circle", 2, ST).as_dict()["design"] == "circle"


@pytest.mark.parametrize(
    "geometry",
    [Geometry.of("circle", 2, ST), Geometry.of("conic", 1, ST), Geometry.of("line", 3),
     _mixed(), Geometry(("mine", "circle"), (None, "circle"), ("x", "y", "1"), "xx", ST, False)],
)  # fmt: skip
def test_dict_round_trip(geometry):
    back = Geometry.from_dict(json.loads(json.dumps(geometry.as_dict())))
    assert back == geometry
    assert (back.names, back.kinds, back.columns, back.target, back.shared) == (
        geometry.names, geometry.kinds, geometry.columns, geometry.target, geometry.shared,
    )  # fmt: skip
    assert back.standardization == geometry.standardization


@pytest.mark.parametrize("design", ["circle", "conic"])
def test_from_old_single_form_dict(design):
    old = {"design": design, "center": [30.0, 40.0], "scale": 12.5}
    assert Geometry.from_dict(old, experts=3) == Geometry.of(design, 3, ST)
    with pytest.raises(InputError, match="number of experts"):
        Geometry.from_dict(old)


def test_from_old_experts_dict():
    old = {
        "design": "experts",
        "experts": ["circle", "ellipse"],
        "kinds": ["circle", "conic"],
        "columns": ["xy", "yy", "x", "y", "1"],
        "response": "xx",
        "center": [30.0, 40.0],
        "scale": 12.5,
    }
    g = Geometry.from_dict(old, experts=2)
    assert g == _mixed()
    assert g.shared is False and g.target == "xx"


@pytest.mark.parametrize(
    "bad",
    [{}, {"design": "circle"}, {"design": "circle", "center": [0.0, 0.0]},
     {"design": "experts", "center": [0.0, 0.0], "scale": 1.0},
     {"design": "circle", "center": [0.0], "scale": 1.0},
     {"design": "circle", "center": [0.0, 0.0], "scale": -1.0},
     {"design": "circle", "center": "here", "scale": 1.0},
     {"names": ["circle"], "center": [0.0, 0.0], "scale": 1.0}],
)  # fmt: skip
def test_from_dict_refuses_a_bad_dict(bad):
    with pytest.raises(InputError):
        Geometry.from_dict(bad, experts=2)


def test_from_dict_refuses_bad_kinds():
    d = _mixed().as_dict()
    with pytest.raises(InputError, match="unknown curve kind"):
        Geometry.from_dict({**d, "kinds": ["circle", "ellipse"]})
    with pytest.raises(InputError, match="one kind per expert"):
        Geometry.from_dict({**d, "kinds": ["circle"]})


def test_standardization_scale_is_applied_once():
    """A regression guard on the units: doubling the scale doubles the radius and moves
    the centre twice as far from c."""
    w = circle_weights(0.5, 0.0, 1.0)[None, :]
    (a,) = Geometry.of("circle", 1, Standardization(np.zeros(2), 1.0)).curves(w)
    (b,) = Geometry.of("circle", 1, Standardization(np.zeros(2), 2.0)).curves(w)
    assert (b.x0, b.r) == pytest.approx((2 * a.x0, 2 * a.r))
    assert math.isclose(a.r, 1.0)
