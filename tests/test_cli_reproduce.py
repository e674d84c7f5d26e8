"""``pyro-moe reproduce`` (:mod:`pyro_moe.cli.reproduce`), a thin command over
:mod:`pyro_moe.study`."""

from __future__ import annotations

import json

import pytest
from cli_helpers import assert_one_error_line, run_cli


def test_reproduce_usage_and_input_errors(capsys, tmp_path):
    code, out, err = run_cli(capsys, "reproduce", "--out", tmp_path / "missing" / "dir")
    assert_one_error_line(err, 2, code)
    assert out == ""
    code, out, err = run_cli(
        capsys, "reproduce", "--out", tmp_path / "o", "--eye", tmp_path / "no.jpg"
    )
    assert_one_error_line(err, 1, code)
    assert out == ""
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_reproduce_writes_the_report_and_prints_json(capsys, tmp_path):
    out_dir = tmp_path / "rep"
    code, out, err = run_cli(
        capsys, "reproduce", "--quick", "--seeds", "1", "--cavi-only", "--json", "--out", out_dir
    )
    assert code == 0, err
    data = json.loads(out)
    assert {"report.md", "results.json", "sweep.png"} <= {p.name for p in out_dir.iterdir()}
    assert "published" in (out_dir / "report.md").read_text()
    assert json.loads((out_dir / "results.json").read_text()) == data
    assert all(line.startswith("[") for line in err.splitlines())  # progress only
