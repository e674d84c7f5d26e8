"""``pyro-moe demo`` (:mod:`pyro_moe.cli.demo`)."""

from __future__ import annotations

import json

from cli_helpers import PNG_SIGNATURE, run_cli


def test_demo_prints_true_and_recovered_circles(capsys):
    code, out, err = run_cli(capsys, "demo")
    assert code == 0, err
    assert "true x0" in out and "found x0" in out
    assert "S = " in out
    for word in ("objective", "iterations", "seconds"):
        assert word in out
    s = float(out.split("S = ")[1].split()[0])
    assert s < 1.0


def test_demo_json(capsys):
    code, out, _ = run_cli(capsys, "demo", "--json")
    assert code == 0
    data = json.loads(out)
    assert len(data["circles"]) == 3
    assert data["S"] < 1.0
    assert all(c["recovered"]["valid"] for c in data["circles"])


def test_demo_plot(capsys, tmp_path):
    plot = tmp_path / "demo.png"
    code, _, err = run_cli(capsys, "demo", "--restarts", "1", "--json", "--plot", plot)
    assert code == 0, err
    assert plot.read_bytes()[:8] == PNG_SIGNATURE
    assert {p.name for p in tmp_path.iterdir()} == {"demo.png"}
