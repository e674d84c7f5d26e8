"""The renderers of the command line (:mod:`pyro_moe.cli.render`): tables, numbers, and
one curve renderer that prints each expert by its kind."""

from __future__ import annotations

import io
import json
import math

import numpy as np
import pytest
from cli_helpers import TRUE_CENTERS, TRUE_RADII

import pyro_moe
from pyro_moe.cli.render import (
    curve_json,
    curve_text,
    finite,
    format_table,
    kind_of,
    num,
    render_curves,
)
from pyro_moe.shapes import Circle, Line, circle_image


def test_format_table_aligns_columns():
    text = format_table(["name", "value"], [["a", "1.0"], ["long name", "22.50"]])
    lines = text.splitlines()
    assert lines[0] == "name       value"
    assert lines[1] == "---------  -----"
    assert lines[2] == "a            1.0"
    assert lines[3] == "long name  22.50"


def test_numbers_for_tables_and_json():
    assert num(0.5) == "0.5000" and num(1e-5) == "1.000e-05" and num(0.0) == "0.0000"
    assert finite(math.nan) is None and finite(math.inf) is None and finite(2) == 2.0


def test_each_kind_has_its_fields_and_words():
    line = Line(0.5, 3.0)
    assert kind_of(line) == "line" and set(curve_json(line, None)) == {"a", "c", "angle"}
    assert curve_text(line, None) == ("line x = 0.500 y + 3.000", "-")
    weights = np.array([1.0, 2.0])
    assert kind_of(weights) is None
    assert curve_json(weights, None) == {"weights": [1.0, 2.0]}
    assert curve_text(weights, None) == ("weights 1.000 2.000", "-")
    invalid = Circle(1.0, 2.0, math.nan, False)
    assert kind_of(invalid) == "circle"


@pytest.fixture(scope="module")
def circle_fit():
    img, _ = circle_image(TRUE_CENTERS, TRUE_RADII, (128, 128))
    return pyro_moe.fit_circles(img, experts=2, n_init=1, seed=0)


def test_one_renderer_reads_circles_as_the_circle_api_does(circle_fit):
    out = io.StringIO()
    render_curves(circle_fit, out, layout="circles", title="t", as_json=True)
    items = json.loads(out.getvalue())["circles"]
    sds = pyro_moe.circle_uncertainty(circle_fit)
    for item, c, u in zip(items, circle_fit.circles(), sds, strict=True):
        assert (item["x0"], item["y0"], item["r"]) == pytest.approx((c.x0, c.y0, c.r), rel=1e-12)
        assert (item["sd_x0"], item["sd_r"]) == pytest.approx((u.sd_x0, u.sd_r), rel=1e-9)
    out = io.StringIO()
    render_curves(circle_fit, out, layout="curves", title="t", names=["a", "b"])
    assert "circle x0=" in out.getvalue() and "(pixel units" in out.getvalue()
    with pytest.raises(ValueError, match="layout"):
        render_curves(circle_fit, out, layout="hexagons", title="t")
