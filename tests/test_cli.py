"""End-to-end tests of the ``pyro-moe`` command line (:mod:`pyro_moe.cli`).

Most tests call ``main(argv)`` in-process (fast); a few run ``python -m pyro_moe`` in a
subprocess to check the real entry point and its exit statuses.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import pyro_moe
from pyro_moe.cli import main
from pyro_moe.model_file import MODELS_DIR
from pyro_moe.shapes import circle_image, match_circles

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
TRUE_CENTERS = [(40.0, 40.0), (90.0, 85.0)]
TRUE_RADII = [18.0, 25.0]


# --------------------------------------------------------------------------- helpers


def save_png(path: Path, mask: np.ndarray) -> Path:
    """Save a boolean mask as an 8-bit gray PNG (foreground white)."""
    Image.fromarray((np.asarray(mask) * 255).astype(np.uint8)).save(path)
    return path


@pytest.fixture
def circles_png(tmp_path: Path) -> Path:
    """A 128x128 PNG with two rasterized circles (TRUE_CENTERS, TRUE_RADII)."""
    img, _ = circle_image(TRUE_CENTERS, TRUE_RADII, (128, 128))
    return save_png(tmp_path / "circles.png", img)


@pytest.fixture
def table_csv(tmp_path: Path) -> Path:
    """A CSV with two linear regimes: y = 1 + 2 a (first half) and y = -1 - 3 b."""
    rng = np.random.default_rng(0)
    n = 120
    a, b = rng.normal(size=n), rng.normal(size=n)
    first = np.arange(n) < n // 2
    y = np.where(first, 1 + 2 * a, -1 - 3 * b) + 0.05 * rng.normal(size=n)
    path = tmp_path / "table.csv"
    lines = ["a,b,y", *(f"{ai:.6f},{bi:.6f},{yi:.6f}" for ai, bi, yi in zip(a, b, y, strict=True))]
    path.write_text("\n".join(lines) + "\n")
    return path


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """``main(argv)`` in-process; returns (exit status, stdout, stderr)."""
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_error_line(err: str, status: int, code: int, *, internal: bool = False) -> None:
    """Exactly one stderr line of the expected kind, no traceback, the expected status."""
    lines = err.splitlines()
    assert code == status, err
    assert len(lines) == 1, err
    prefix = "pyro-moe: internal error: " if internal else "pyro-moe: error: "
    assert lines[0].startswith(prefix), err
    assert "Traceback" not in err


def leftovers(directory: Path, before: set[str]) -> set[str]:
    """Files that appeared in ``directory`` (outputs or temporaries)."""
    return {p.name for p in directory.iterdir()} - before


def non_conjugate_model(tmp_path: Path) -> Path:
    """mixture_of_models with a Laplace prior on the weights: SVI only."""
    text = (MODELS_DIR / "mixture_of_models.py").read_text()
    old = "dist.MultivariateNormal(prior_mean, covariance_matrix=prior_cov)"
    assert old in text
    path = tmp_path / "laplace_model.py"
    path.write_text(text.replace(old, "dist.Laplace(prior_mean, 1.0).to_event(1)"))
    return path


# --------------------------------------------------------------------------- successes


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


def test_circles_recovered_within_one_pixel(capsys, circles_png):
    code, out, err = run_cli(capsys, "circles", circles_png, "--experts", "2")
    assert code == 0, err
    assert err == ""
    rows = [line.split() for line in out.splitlines() if line[:1].isdigit()]
    assert len(rows) == 2
    found = [pyro_moe.shapes.Circle(float(r[1]), float(r[2]), float(r[3])) for r in rows]
    _check_recovered(found)
    assert sum(float(r[4]) for r in rows) == pytest.approx(1.0, abs=2e-3)
    for word in ("objective", "ELBO", "iterations", "seconds"):
        assert word in out


def _check_recovered(found) -> None:
    true = [
        pyro_moe.shapes.Circle(x, y, r) for (x, y), r in zip(TRUE_CENTERS, TRUE_RADII, strict=True)
    ]
    pairs = match_circles(true, found)
    assert len(pairs) == len(true)
    for i, j in pairs:
        assert abs(found[j].x0 - true[i].x0) < 1
        assert abs(found[j].y0 - true[i].y0) < 1
        assert abs(found[j].r - true[i].r) < 1


def test_circles_json(capsys, circles_png):
    code, out, _ = run_cli(capsys, "circles", circles_png, "-k", "2", "--json")
    assert code == 0
    data = json.loads(out)
    assert set(data) >= {
        "circles",
        "objective",
        "elbo",
        "iterations",
        "seconds",
        "method",
        "model",
        "converged",
    }
    assert data["method"] == "cavi" and data["model"] == "mixture_of_models"
    found = [pyro_moe.shapes.Circle(c["x0"], c["y0"], c["r"], c["valid"]) for c in data["circles"]]
    _check_recovered(found)
    assert sum(c["share"] for c in data["circles"]) + data["noise_share"] == pytest.approx(1.0)


def test_circles_plot_and_save(capsys, circles_png, tmp_path):
    plot, save = tmp_path / "fit.png", tmp_path / "fit.npz"
    before = {p.name for p in tmp_path.iterdir()}
    code, out, err = run_cli(
        capsys, "circles", circles_png, "-k", "2", "--json", "--plot", plot, "--save", save
    )
    assert code == 0, err
    assert leftovers(tmp_path, before) == {"fit.png", "fit.npz"}  # no temporaries left
    assert plot.read_bytes()[:8] == PNG_SIGNATURE
    with Image.open(plot) as im:
        im.verify()
    loaded = pyro_moe.FitResult.load(save)
    printed = json.loads(out)["circles"]
    for c, p in zip(loaded.circles(), printed, strict=True):
        assert (c.x0, c.y0, c.r) == pytest.approx((p["x0"], p["y0"], p["r"]), abs=1e-9)


def test_conics_of_circles(capsys, circles_png, tmp_path):
    plot = tmp_path / "conics.png"
    code, out, err = run_cli(capsys, "conics", circles_png, "-k", "2", "--json", "--plot", plot)
    assert code == 0, err
    conics = json.loads(out)["conics"]
    assert [c["kind"] for c in conics] == ["ellipse", "ellipse"]
    centres = sorted(tuple(c["center"]) for c in conics)
    assert np.allclose(centres, sorted(TRUE_CENTERS), atol=1.5)
    assert plot.read_bytes()[:8] == PNG_SIGNATURE
    code, out, _ = run_cli(capsys, "conics", circles_png, "-k", "2")
    assert code == 0 and "angle (deg)" in out and "ellipse" in out


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


def test_convergence_warning_is_one_line_and_exit_zero(capsys, circles_png):
    code, out, err = run_cli(capsys, "circles", circles_png, "-k", "2", "--max-iter", "2")
    assert code == 0
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("pyro-moe: warning: "), err
    assert "circle" in out


def test_help_shows_defaults(capsys):
    for command in ("circles", "conics", "fit", "demo"):
        assert main([command, "--help"]) == 0
        out = capsys.readouterr().out
        assert "default" in out
    assert "(default: otsu)" in " ".join(_help(capsys, "circles").split())


def _help(capsys, command: str) -> str:
    main([command, "--help"])
    return capsys.readouterr().out


def test_threads_option(capsys, circles_png):
    import torch

    before = torch.get_num_threads()
    try:
        code, _, err = run_cli(capsys, "--threads", "1", "circles", circles_png, "--restarts", "1")
        assert code == 0, err
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


# --------------------------------------------------------------------------- errors


def _expect_failure(capsys, tmp_path, status, *argv, internal=False):
    """Run with --save/--plot into tmp_path and check the error contract."""
    outdir = tmp_path / "out"
    outdir.mkdir(exist_ok=True)
    before = {p.name for p in outdir.iterdir()}
    code, out, err = run_cli(capsys, *argv)
    assert_one_error_line(err, status, code, internal=internal)
    assert out == ""
    assert leftovers(outdir, before) == set()
    return err


@pytest.fixture
def image_outputs(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    return ["--save", out / "r.npz", "--plot", out / "r.png"]


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda d: d / "missing.png", "no such image"),
        (lambda d: _write(d / "corrupt.png", b"\x89PNG garbage"), "not a readable image"),
        (lambda d: _write(d / "empty.png", b""), "not a readable image"),
        (lambda d: save_png(d / "black.png", np.zeros((32, 32), bool)), "no foreground"),
    ],
    ids=["missing", "corrupt", "empty", "no-foreground"],
)
def test_bad_images_fail_with_status_1(capsys, tmp_path, image_outputs, make, message):
    image = make(tmp_path)
    err = _expect_failure(capsys, tmp_path, 1, "circles", image, *image_outputs)
    assert message in err


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(
    "args, message",
    [
        (["--experts", "0"], "--experts"),
        (["--experts", "auto", "--max-experts", "0"], "--max-experts"),
        (["--experts", "two"], "integer"),
        (["--model", "no_such_model"], "unknown model"),
        (["--threshold", "dark"], "--threshold"),
        (["--learn", "everything"], "--learn"),
        (["--method", "mcmc"], "--method"),
    ],
)
def test_usage_errors_exit_2(capsys, tmp_path, circles_png, image_outputs, args, message):
    err = _expect_failure(capsys, tmp_path, 2, "circles", circles_png, *image_outputs, *args)
    assert message in err.replace("'auto'", "auto")


def test_model_file_with_syntax_error_exits_2(capsys, tmp_path, circles_png, image_outputs):
    bad = tmp_path / "broken_model.py"
    bad.write_text("def model(X, y, config:\n    pass\n")
    err = _expect_failure(
        capsys, tmp_path, 2, "circles", circles_png, "--model", bad, *image_outputs
    )
    assert "syntax error" in err


def test_non_conjugate_model_with_cavi_exits_1(capsys, tmp_path, circles_png, image_outputs):
    model = non_conjugate_model(tmp_path)
    err = _expect_failure(
        capsys, tmp_path, 1, "circles", circles_png, "--model", model, "--method", "cavi",
        *image_outputs,
    )  # fmt: skip
    assert "Laplace" in err and "svi" in err


def test_more_experts_than_points_exits_1(capsys, tmp_path, circles_png, image_outputs):
    err = _expect_failure(
        capsys, tmp_path, 1, "circles", circles_png, "--max-points", "5", "-k", "6", *image_outputs
    )
    assert "more than the number of points" in err


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
    err = _expect_failure(capsys, tmp_path, 1, "fit", data, *args, "--save", tmp_path / "out/f.npz")
    assert message in err


def test_missing_output_directory_is_a_usage_error(capsys, tmp_path, circles_png):
    err = _expect_failure(
        capsys, tmp_path, 2, "circles", circles_png, "--save", tmp_path / "no/x.npz"
    )
    assert "does not exist" in err


def test_failure_while_writing_leaves_no_file(capsys, tmp_path, circles_png, monkeypatch):
    """The plot is staged first; a failing save must remove it too."""

    def broken_save(self, path):
        Path(path).write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(pyro_moe.FitResult, "save", broken_save)
    out = tmp_path / "out"
    _expect_failure(
        capsys,
        tmp_path,
        1,
        "circles",
        circles_png,
        "--plot",
        out / "p.png",
        "--save",
        out / "r.npz",
    )


def test_unexpected_exception_is_an_internal_error(capsys, tmp_path, circles_png, monkeypatch):
    def boom(*args, **kwargs):
        raise RuntimeError("something\nbroke")

    monkeypatch.setattr(pyro_moe, "fit_circles", boom)
    err = _expect_failure(capsys, tmp_path, 1, "circles", circles_png, internal=True)
    assert "rerun with --debug" in err and "something broke" in err
    for argv in (
        ["--debug", "circles", str(circles_png)],
        ["circles", str(circles_png), "--debug"],
    ):
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert "Traceback" in err and "RuntimeError" in err
        assert err.splitlines()[-1].startswith("pyro-moe: internal error: ")


# --------------------------------------------------------------------------- entry point


def _python_m(*argv: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    return subprocess.run(
        [sys.executable, "-m", "pyro_moe", *map(str, argv)],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=120,
        check=False,
    )


def test_entry_point_success_and_usage_error(tmp_path, circles_png):
    ok = _python_m("circles", circles_png, "-k", "2", "--json", cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert len(json.loads(ok.stdout)["circles"]) == 2
    bad = _python_m("circles", circles_png, "--experts", "0", cwd=tmp_path)
    assert bad.returncode == 2
    assert len(bad.stderr.splitlines()) == 1 and bad.stderr.startswith("pyro-moe: error: ")


def test_entry_point_failed_run(tmp_path):
    missing = _python_m(
        "circles", tmp_path / "nope.png", "--save", tmp_path / "x.npz", cwd=tmp_path
    )
    assert missing.returncode == 1
    assert missing.stderr.splitlines() == [
        f"pyro-moe: error: no such image file: {tmp_path / 'nope.png'}"
    ]
    assert "Traceback" not in missing.stderr
    assert not (tmp_path / "x.npz").exists()


# --------------------------------------------------------------------------- compare


def test_compare_image_json_and_plot(capsys, circles_png, tmp_path):
    png = tmp_path / "cmp.png"
    code, out, err = run_cli(capsys, "compare", circles_png, "--json", "--plot", png)
    assert code == 0, err
    rows = json.loads(out)["rows"]
    assert [r["method"] for r in rows] == ["cavi", "svi"]
    # the gap itself is SVI's business (tests/test_svi.py); here: reported and finite
    assert rows[0]["rel_gap"] == 0.0 and 0.0 <= rows[1]["rel_gap"] < float("inf")
    for row in rows:
        _check_recovered([pyro_moe.shapes.Circle(x0, y0, r) for x0, y0, r in row["circles"]])
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert leftovers(tmp_path, {"circles.png", "cmp.png"}) == set()


def test_compare_csv_table(capsys, table_csv):
    code, out, err = run_cli(capsys, "compare", table_csv, "--target", "y", "--restarts", "2")
    assert code == 0, err
    assert "| cavi |" in out and "| svi |" in out


def test_compare_csv_needs_a_target(capsys, tmp_path, table_csv):
    _expect_failure(capsys, tmp_path, 2, "compare", table_csv, "--plot", tmp_path / "out" / "p.png")


# --------------------------------------------------------------------------- auto K, noise expert, sds


@pytest.fixture
def three_circles_png(tmp_path: Path) -> Path:
    """Two concentric circles and a third one, 10% outlier pixels."""
    img, _ = circle_image(
        [(55.0, 58.0), (55.0, 58.0), (118.0, 112.0)], [16.0, 36.0, 22.0], (160, 160),
        outlier_fraction=0.1, seed=0,
    )  # fmt: skip
    return save_png(tmp_path / "three.png", img)


def test_circles_experts_auto_finds_three(capsys, three_circles_png):
    argv = ["circles", three_circles_png, "--experts", "auto", "--max-points", "500"]
    code, out, err = run_cli(capsys, *argv, "--restarts", "3", "--json")
    assert code == 0, err
    data = json.loads(out)
    assert len(data["circles"]) == 3 and data["selection"]["experts"] == 3
    assert [row["experts"] for row in data["selection"]["table"]] == [1, 2, 3, 4, 5]
    for c in data["circles"]:
        assert c["valid"] and 0 < c["sd_x0"] < 1 and 0 < c["sd_y0"] < 1 and 0 < c["sd_r"] < 1
    assert data["noise_expert"] is True
    assert 0.03 < data["outlier_share"] < 0.2  # 10% outlier pixels
    total = sum(c["share"] for c in data["circles"])
    assert total + data["noise_share"] == pytest.approx(1.0)
    assert data["noise_share"] == pytest.approx(data["outlier_share"], abs=0.03)

    code, out, err = run_cli(capsys, *argv, "--restarts", "2", "--max-experts", "4")
    assert code == 0, err
    assert "K = 3 circles" in out and "K chosen by --experts auto: 3" in out
    assert "sd r" in out and "outliers" in out


def test_circles_without_noise_expert(capsys, circles_png):
    code, out, err = run_cli(
        capsys, "circles", circles_png, "-k", "2", "--no-noise-expert", "--json"
    )
    assert code == 0, err
    data = json.loads(out)
    assert data["noise_expert"] is False
    assert data["outlier_share"] == 0.0 and data["noise_share"] == 0.0
    assert sum(c["share"] for c in data["circles"]) + data["noise_share"] == pytest.approx(1.0)
    assert all(c["sd_r"] > 0 for c in data["circles"])
    code, out, err = run_cli(capsys, "circles", circles_png, "-k", "2", "--no-noise-expert")
    assert code == 0, err
    assert "outliers" not in out and "sd x0" in out


def test_experts_auto_is_for_curves_only(capsys, table_csv):
    code, _, err = run_cli(capsys, "fit", table_csv, "--target", "y", "--experts", "auto")
    assert_one_error_line(err, 2, code)
    assert "circles and conics" in err


def test_help_mentions_auto_and_noise_expert(capsys):
    text = " ".join(_help(capsys, "circles").split())
    assert "auto" in text and "--max-experts" in text and "--no-noise-expert" in text


# --------------------------------------------------------------------------- reproduce


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


# --------------------------------------------------------------------------- curves (mixed kinds)


@pytest.fixture
def circle_and_ellipse_png(tmp_path: Path) -> Path:
    """A circle (150, 130, r 28) and an ellipse centred (70, 80), axes 45 x 22, at 30 deg."""
    from pyro_moe.shapes import ellipse_points, rasterize

    e = ellipse_points((70.0, 80.0), (45.0, 22.0), np.radians(30.0), 2000, even=True)
    c = ellipse_points((150.0, 130.0), (28.0, 28.0), 0.0, 2000, even=True)
    return save_png(tmp_path / "mix.png", rasterize(np.concatenate([e, c]), (200, 200)))


def test_curves_reports_each_expert_as_its_kind(capsys, circle_and_ellipse_png, tmp_path):
    plot, save = tmp_path / "mix_fit.png", tmp_path / "mix.npz"
    code, out, err = run_cli(
        capsys, "curves", str(circle_and_ellipse_png), "--experts", "circle,ellipse", "--json",
        "--plot", str(plot), "--save", str(save),
    )  # fmt: skip
    assert code == 0, err
    got = json.loads(out)
    circle, ellipse = got["curves"]
    assert circle["expert"] == "circle" and circle["kind"] == "circle"
    assert abs(circle["x0"] - 150) < 1 and abs(circle["y0"] - 130) < 1 and abs(circle["r"] - 28) < 1
    assert circle["sd_r"] > 0
    assert ellipse["expert"] == "ellipse" and ellipse["kind"] == "ellipse"
    assert np.allclose(ellipse["center"], [70, 80], atol=1)
    assert np.allclose(ellipse["semi_axes"], [45, 22], atol=1)
    assert abs(ellipse["angle_degrees"] - 30) < 2
    assert plot.read_bytes()[:8] == PNG_SIGNATURE
    assert pyro_moe.FitResult.load(save).expert_kinds == ["circle", "conic"]
    code, out, _ = run_cli(capsys, "curves", str(circle_and_ellipse_png), "-k", "circle,ellipse")
    assert code == 0 and "circle x0=150" in out and "ellipse centre=(70.0" in out


def test_curves_refuses_unknown_and_mixed_experts(capsys, circle_and_ellipse_png):
    code, _, err = run_cli(capsys, "curves", str(circle_and_ellipse_png), "-k", "circle,hexagon")
    assert code == 1 and "unknown expert(s) 'hexagon'" in err
    code, _, err = run_cli(capsys, "curves", str(circle_and_ellipse_png), "-k", "ellipse,line")
    assert code == 1 and "--allow-mixed-targets" in err
    code, _, err = run_cli(
        capsys, "curves", str(circle_and_ellipse_png), "-k", "ellipse,line", "--allow-mixed-targets"
    )
    assert code == 0 and "different targets" in err


def test_device_option(capsys, circles_png):
    code, out, err = run_cli(capsys, "circles", circles_png, "-k", "2", "--device", "cpu", "--json")
    assert code == 0, err
    assert len(json.loads(out)["circles"]) == 2
    for bad, message in [("gpu0", "not a torch device"), ("meta", "only cpu and cuda")]:
        code, _, err = run_cli(capsys, "circles", circles_png, "--device", bad)
        assert code == 2 and message in err, err


@pytest.mark.skipif(
    __import__("torch").cuda.is_available(), reason="checks the message without CUDA"
)
def test_device_cuda_without_cuda_is_a_usage_error(capsys, circles_png):
    code, _, err = run_cli(capsys, "circles", circles_png, "--device", "cuda")
    assert code == 2 and "CUDA is not available" in err, err
