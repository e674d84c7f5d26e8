"""Point validation and the isotropic standardization."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from pyro_moe.errors import InputError
from pyro_moe.shapes import PointSet, Standardization, validate_points
from pyro_moe.shapes.points import is_point_file, read_points

finite = st.floats(-1e4, 1e4, allow_nan=False, allow_infinity=False)


@settings(max_examples=60, deadline=None)
@given(
    xy=arrays(np.float64, st.tuples(st.integers(2, 30), st.just(2)), elements=finite),
    cx=finite,
    cy=finite,
    scale=st.floats(1e-3, 1e3),
)
def test_standardization_round_trip(xy, cx, cy, scale) -> None:
    s = Standardization(np.array([cx, cy]), scale)
    back = s.to_pixels(s.to_standard(xy))
    np.testing.assert_allclose(back, xy, rtol=1e-9, atol=1e-9 * (1 + abs(cx) + abs(cy)))
    x0, y0, r = s.circle_to_standard(*s.circle_to_pixels(0.3, -0.7, 1.1))
    assert (x0, y0, r) == pytest.approx((0.3, -0.7, 1.1), rel=1e-9, abs=1e-9)


@settings(max_examples=60, deadline=None)
@given(xy=arrays(np.float64, st.tuples(st.integers(2, 30), st.just(2)), elements=finite))
def test_fit_gives_zero_mean_unit_scale(xy) -> None:
    spread = 0.5 * (xy[:, 0].var() + xy[:, 1].var())
    assume(spread > 1.0)
    s = Standardization.fit(xy)
    z = s.to_standard(xy)
    np.testing.assert_allclose(z.mean(axis=0), 0.0, atol=1e-8)
    assert 0.5 * (z[:, 0].var() + z[:, 1].var()) == pytest.approx(1.0, rel=1e-9)


def test_fit_is_isotropic() -> None:
    xy = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 2.0], [10.0, 2.0]])
    s = Standardization.fit(xy)
    assert s.center == pytest.approx([5.0, 1.0])
    assert s.scale == pytest.approx(np.sqrt((25 + 1) / 2))


def test_fit_zero_scale() -> None:
    with pytest.raises(InputError, match="coincide"):
        Standardization.fit([[3.0, 4.0], [3.0, 4.0]])


def test_identity_and_pointset() -> None:
    s = Standardization.identity()
    xy = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 7.0]])
    ps = PointSet(xy, s, None)
    assert len(ps) == 3
    np.testing.assert_array_equal(ps.standard, xy)
    assert ps.xy.dtype == np.float64


def test_validate_points_errors() -> None:
    with pytest.raises(InputError, match=r"shape \(N, 2\)"):
        validate_points(np.zeros((4, 3)))
    with pytest.raises(InputError, match=r"shape \(N, 2\)"):
        validate_points(np.zeros(4))
    bad = np.zeros((5, 2))
    bad[1, 0] = np.nan
    bad[3, 1] = np.inf
    with pytest.raises(InputError, match="NaN or infinite values in 2 of 5 rows"):
        validate_points(bad)
    with pytest.raises(InputError, match="need at least 3 points, got 2"):
        validate_points(np.zeros((2, 2)), 3)
    with pytest.raises(InputError, match="numeric"):
        validate_points([["a", "b"]])
    out = validate_points([[1, 2], [3, 4]])
    assert out.dtype == np.float64 and out.shape == (2, 2)


def test_standardization_rejects_bad_scale() -> None:
    with pytest.raises(InputError, match="positive"):
        Standardization(np.zeros(2), 0.0)
    with pytest.raises(InputError, match="centre"):
        Standardization(np.zeros(3), 1.0)


def test_read_points_from_csv_and_npy(tmp_path) -> None:
    xy = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 7.0]])
    named = tmp_path / "named.csv"  # columns named, in any order, among others
    named.write_text("id,Y,X\n" + "".join(f"{i},{y},{x}\n" for i, (x, y) in enumerate(xy)))
    bare = tmp_path / "bare.csv"  # no header: the first row is data
    bare.write_text("".join(f"{x},{y}\n" for x, y in xy))
    npy = tmp_path / "points.npy"
    np.save(npy, xy)
    for path in (named, bare, npy):
        assert is_point_file(path)
        np.testing.assert_array_equal(read_points(path), xy)
    assert not is_point_file(tmp_path / "eye.png")


def test_read_points_refuses_other_shapes(tmp_path) -> None:
    three = tmp_path / "three.csv"
    three.write_text("a,b,c\n1,2,3\n")
    with pytest.raises(InputError, match=r"two columns, x and y .* got 3 columns \(a, b, c\)"):
        read_points(three)
    np.save(tmp_path / "three.npy", np.zeros((4, 3)))
    with pytest.raises(InputError, match=r"\(N, 2\) numeric array .* shape \(4, 3\)"):
        read_points(tmp_path / "three.npy")
    nan = tmp_path / "nan.npy"
    np.save(nan, np.array([[0.0, np.nan], [1.0, 1.0]]))
    with pytest.raises(InputError, match="NaN or infinite"):
        read_points(nan)
    with pytest.raises(InputError, match="no such file"):
        read_points(tmp_path / "missing.npy")
    bad = tmp_path / "bad.npy"
    bad.write_bytes(b"not an array")
    with pytest.raises(InputError, match="cannot read"):
        read_points(bad)
