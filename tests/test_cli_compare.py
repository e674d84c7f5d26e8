"""``pyro-moe compare`` (:mod:`pyro_moe.cli.compare`)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_helpers import check_recovered, expect_failure, leftovers, run_cli
from cli_helpers import circles_png as make_circles_png
from cli_helpers import table_csv as make_table_csv

import pyro_moe


@pytest.fixture
def circles_png(tmp_path: Path) -> Path:
    return make_circles_png(tmp_path)


@pytest.fixture
def table_csv(tmp_path: Path) -> Path:
    return make_table_csv(tmp_path)


@pytest.mark.slow
def test_compare_image_json_and_plot(capsys, circles_png, tmp_path):
    png = tmp_path / "cmp.png"
    code, out, err = run_cli(capsys, "compare", circles_png, "--json", "--plot", png)
    assert code == 0, err
    rows = json.loads(out)["rows"]
    assert [r["method"] for r in rows] == ["cavi", "svi"]
    # the gap itself is SVI's business (tests/test_engines_svi.py); here: reported and finite
    assert rows[0]["rel_gap"] == 0.0 and 0.0 <= rows[1]["rel_gap"] < float("inf")
    for row in rows:
        check_recovered([pyro_moe.shapes.Circle(x0, y0, r) for x0, y0, r in row["circles"]])
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert leftovers(tmp_path, {"circles.png", "cmp.png"}) == set()


@pytest.mark.slow
def test_compare_csv_table(capsys, table_csv):
    code, out, err = run_cli(capsys, "compare", table_csv, "--target", "y", "--restarts", "2")
    assert code == 0, err
    assert "| cavi |" in out and "| svi |" in out


def test_compare_csv_needs_a_target(capsys, tmp_path, table_csv):
    expect_failure(capsys, tmp_path, 2, "compare", table_csv, "--plot", tmp_path / "out" / "p.png")
