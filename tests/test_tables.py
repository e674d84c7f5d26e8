"""CSV tables (:mod:`pyro_moe.tables`): named columns as arrays, every bad cell named."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pyro_moe.errors import InputError
from pyro_moe.tables import read_csv, read_numeric, read_xy


def _csv(tmp_path: Path, text: str, name: str = "t.csv") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_read_csv_gives_named_columns(tmp_path):
    path = _csv(tmp_path, "\ufeffa, b ,y\n1,2,3\n\n4.5,-5e-1,6\n")
    cols = read_csv(path)
    assert list(cols) == ["a", "b", "y"]
    assert np.array_equal(cols["a"], [1.0, 4.5]) and np.array_equal(cols["b"], [2.0, -0.5])
    assert cols["y"].dtype == np.float64 and cols["y"].shape == (2,)
    assert list(read_csv(path, ["y", "a"])) == ["y", "a"]


def test_read_csv_checks_only_the_columns_asked_for(tmp_path):
    path = _csv(tmp_path, "a,label,y\n1,red,3\n2,blue,4\n")
    assert np.array_equal(read_csv(path, ["a", "y"])["y"], [3.0, 4.0])
    with pytest.raises(InputError, match=r"line 2, column 'label': 'red' is not a number"):
        read_csv(path)


def test_read_xy_defaults_to_every_other_column(tmp_path):
    path = _csv(tmp_path, "a,y,b\n1,2,3\n4,5,6\n")
    X, y, names = read_xy(path, "y")
    assert names == ["a", "b"]
    assert np.array_equal(X, [[1, 3], [4, 6]]) and np.array_equal(y, [2, 5])
    X, _, names = read_xy(path, "y", ["b"])
    assert names == ["b"] and X.shape == (2, 1)


@pytest.mark.parametrize(
    "text, target, features, message",
    [
        ("a,b,y\n1,2,3\n", "z", None, "no column 'z'"),
        ("a,b,y\n1,2,3\n", "y", ["a", "c"], "no column(s) 'c'"),
        ("a,b,y\n1,2,3\n", "y", ["a", "y"], "also a feature"),
        ("y\n1\n", "y", None, "no feature columns"),
        ("a,a,y\n1,2,3\n", "y", None, "duplicate column name(s) 'a'"),
        ("a,b,y\n", "y", None, "no data rows"),
        ("a,b,y\n1,2,3\n4,5\n", "y", None, "line 3: 2 fields, but the header has 3"),
        ("a,b,y\n1,inf,3\n", "y", None, "line 2, column 'b': 'inf' (NaN or inf)"),
        ("a,b,y\n1, ,3\n", "y", None, "line 2, column 'b': missing value"),
        ("", "y", None, "is empty"),
    ],
)
def test_read_xy_names_what_is_wrong(tmp_path, text, target, features, message):
    with pytest.raises(InputError) as info:
        read_xy(_csv(tmp_path, text), target, features)
    assert message in str(info.value)


def test_unreadable_files_are_input_errors(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        read_csv(tmp_path / "missing.csv")
    with pytest.raises(InputError, match="directory"):
        read_csv(tmp_path)
    bad = tmp_path / "latin1.csv"
    bad.write_bytes(b"a,y\n\xe9,1\n")
    with pytest.raises(InputError, match="cannot read CSV file"):
        read_csv(bad)
    with pytest.raises(InputError, match="asked for"):
        read_csv(_csv(tmp_path, "a,y\n1,2\n"), ["b"])


def test_read_numeric_with_and_without_a_header(tmp_path):
    names, values = read_numeric(_csv(tmp_path, "x,y\n1,2\n3,4\n"))
    assert names == ["x", "y"] and values.tolist() == [[1.0, 2.0], [3.0, 4.0]]
    names, values = read_numeric(_csv(tmp_path, "1,2\n3,4.5\n"))
    assert names is None and values.tolist() == [[1.0, 2.0], [3.0, 4.5]]
    with pytest.raises(InputError, match=r"line 2, column '2': 'b' is not a number"):
        read_numeric(_csv(tmp_path, "1,2\n3,b\n"))
    with pytest.raises(InputError, match="is empty"):
        read_numeric(_csv(tmp_path, ""))
