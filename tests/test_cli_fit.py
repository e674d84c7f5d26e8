"""``pyro-moe fit DATA.csv`` (:mod:`pyro_moe.cli.fit`)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_helpers import assert_one_error_line, expect_failure, run_cli
from cli_helpers import table_csv as make_table_csv

import pyro_moe


@pytest.fixture
def table_csv(tmp_path: Path) -> Path:
    return make_table_csv(tmp_path)


def test_fit_csv(capsys, table_csv, tmp_path):
    save = tmp_path / "fit.npz"
    code, out, err = run_cli(
        capsys, "fit", table_csv, "--target", "y", "-k", "2", "--json", "--save", save
    )
    assert code == 0, err
    data = json.loads(out)
    assert data["features"] == ["a", "b", "(intercept)"]
    weights = sorted(
        (round(e["weights"]["a"]), round(e["weights"]["b"]), round(e["weights"]["(intercept)"]))
        for e in data["experts"]
    )
    assert weights == [(0, -3, -1), (2, 0, 1)]
    assert sum(e["share"] for e in data["experts"]) == pytest.approx(1.0)
    assert all(e["noise_precision"] > 0 for e in data["experts"])
    loaded = pyro_moe.FitResult.load(save)
    assert loaded.mean.shape == (2, 3)

    code, out, _ = run_cli(
        capsys, "fit", table_csv, "--target", "y", "--features", "a", "--no-intercept"
    )
    assert code == 0
    header = out.splitlines()[2].split()
    assert header[:2] == ["expert", "a"] and "(intercept)" not in out
    assert "noise precision" in out and "objective" in out


def _csv(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "bad.csv"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    "text, args, message",
    [
        ("a,b,y\n1,2,3\n4,5,6\n", ["--target", "z"], "no column 'z'"),
        ("a,b,y\n1,2,3\n4,5,6\n", ["--target", "y", "--features", "a,c"], "no column(s) 'c'"),
        ("a,b,y\n1,2,3\n4,5\n", ["--target", "y"], "fields"),
        ("a,b,y\n1,2,3\n4,nan,6\n7,8,9\n", ["--target", "y"], "NaN"),
        ("a,b,y\n1,2,3\n4,five,6\n7,8,9\n", ["--target", "y"], "not a number"),
        ("a,b,y\n1,2,3\n4,,6\n7,8,9\n", ["--target", "y"], "missing value"),
        ("", ["--target", "y"], "empty"),
        ("a,b,y\n1,2,3\n4,5,6\n", ["--target", "y", "-k", "5"], "more than the number of points"),
    ],
    ids=["no-target", "no-feature", "ragged", "nan", "text", "blank", "empty", "k-too-large"],
)
def test_bad_csv_fails_with_status_1(capsys, tmp_path, text, args, message):
    data = _csv(tmp_path, text)
    err = expect_failure(capsys, tmp_path, 1, "fit", data, *args, "--save", tmp_path / "out/f.npz")
    assert message in err


def test_experts_auto_is_for_curves_only(capsys, table_csv):
    code, _, err = run_cli(capsys, "fit", table_csv, "--target", "y", "--experts", "auto")
    assert_one_error_line(err, 2, code)
    assert "circles and conics" in err
