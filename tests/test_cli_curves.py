"""``pyro-moe circles``, ``conics`` and ``curves`` (:mod:`pyro_moe.cli.curves`)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import (
    PNG_SIGNATURE,
    TRUE_CENTERS,
    check_recovered,
    expect_failure,
    leftovers,
    non_conjugate_model,
    run_cli,
    save_png,
)
from cli_helpers import circles_png as make_circles_png
from cli_helpers import image_outputs as make_image_outputs
from PIL import Image

import pyro_moe
from pyro_moe.shapes import circle_image


@pytest.fixture
def circles_png(tmp_path: Path) -> Path:
    return make_circles_png(tmp_path)


@pytest.fixture
def image_outputs(tmp_path: Path) -> list[object]:
    return make_image_outputs(tmp_path)


# --------------------------------------------------------------------------- circles, conics


def test_circles_recovered_within_one_pixel(capsys, circles_png):
    code, out, err = run_cli(capsys, "circles", circles_png, "--experts", "2")
    assert code == 0, err
    assert err == ""
    rows = [line.split() for line in out.splitlines() if line[:1].isdigit()]
    assert len(rows) == 2
    found = [pyro_moe.shapes.Circle(float(r[1]), float(r[2]), float(r[3])) for r in rows]
    check_recovered(found)
    assert sum(float(r[4]) for r in rows) == pytest.approx(1.0, abs=2e-3)
    for word in ("objective", "ELBO", "iterations", "seconds"):
        assert word in out


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
    check_recovered(found)
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
    loaded = pyro_moe.CurveFit.load(save)
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


# --------------------------------------------------------------------------- failed runs


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
    err = expect_failure(capsys, tmp_path, 1, "circles", image, *image_outputs)
    assert message in err


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_model_file_with_syntax_error_exits_2(capsys, tmp_path, circles_png, image_outputs):
    bad = tmp_path / "broken_model.py"
    bad.write_text("def model(X, y, config:\n    pass\n")
    err = expect_failure(
        capsys, tmp_path, 2, "circles", circles_png, "--model", bad, *image_outputs
    )
    assert "syntax error" in err


def test_non_conjugate_model_with_cavi_exits_1(capsys, tmp_path, circles_png, image_outputs):
    model = non_conjugate_model(tmp_path)
    err = expect_failure(
        capsys, tmp_path, 1, "circles", circles_png, "--model", model, "--method", "cavi",
        *image_outputs,
    )  # fmt: skip
    assert "Laplace" in err and "svi" in err


def test_more_experts_than_points_exits_1(capsys, tmp_path, circles_png, image_outputs):
    err = expect_failure(
        capsys, tmp_path, 1, "circles", circles_png, "--max-points", "5", "-k", "6", *image_outputs
    )
    assert "more than the number of points" in err


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
    # no chain candidates (a subsample of the pixels): the range starts where the
    # sequential draw's curves stop adding arcs (curves.selection.drawn_curves: 3), and
    # ends where the seed of the next adds no arc (curves.selection.no_new_arc): only
    # K = 3 is fitted
    assert [row["experts"] for row in data["selection"]["table"]] == [3]
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
    assert pyro_moe.CurveFit.load(save).expert_kinds == ["circle", "conic"]
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


def test_curves_prints_a_line_expert_as_a_line(capsys, circle_and_ellipse_png):
    argv = ["curves", str(circle_and_ellipse_png), "-k", "ellipse,line", "--allow-mixed-targets"]
    code, out, err = run_cli(capsys, *argv, "--restarts", "1")
    assert code == 0, err
    assert "line x = " in out
    code, out, _ = run_cli(capsys, *argv, "--restarts", "1", "--json")
    line = json.loads(out)["curves"][1]
    assert line["expert"] == "line" and line["kind"] == "line" and {"a", "c", "angle"} <= set(line)


# --------------------------------------------------------------------------- point sets, batch


def _points_csv(path: Path, *, header: bool = True, seed: int = 0) -> Path:
    """Two concentric circles (r 0.5 and 1.5 around the origin) as x, y rows."""
    rng = np.random.default_rng(seed)
    phi = rng.uniform(0, 2 * np.pi, 200)
    r = np.where(np.arange(200) < 100, 0.5, 1.5) + rng.normal(0, 0.01, 200)
    rows = "".join(
        f"{a:.6f},{b:.6f}\n" for a, b in zip(r * np.cos(phi), r * np.sin(phi), strict=True)
    )
    path.write_text(("x,y\n" if header else "") + rows)
    return path


@pytest.mark.parametrize("header", [True, False])
def test_circles_of_a_point_set(capsys, tmp_path, header):
    csv = _points_csv(tmp_path / "points.csv", header=header)
    code, out, err = run_cli(capsys, "circles", csv, "-k", "2", "--json")
    assert code == 0, err
    radii = sorted(c["r"] for c in json.loads(out)["circles"])
    assert radii == pytest.approx([0.5, 1.5], abs=0.02)


def test_a_point_set_of_three_columns_is_refused(capsys, tmp_path, image_outputs):
    bad = tmp_path / "three.npy"
    np.save(bad, np.zeros((10, 3)))
    err = expect_failure(capsys, tmp_path, 1, "circles", bad, *image_outputs)
    assert "(N, 2)" in err and "(10, 3)" in err


def test_batch_mode_json_lines(capsys, tmp_path, circles_png):
    folder = tmp_path / "inputs"
    folder.mkdir()
    _points_csv(folder / "a.csv")
    _points_csv(folder / "b.csv", header=False, seed=1)
    (folder / "bad.csv").write_text("a,b,c\n1,2,3\n")
    (folder / "notes.md").write_text("not an input")
    code, out, err = run_cli(capsys, "circles", folder, circles_png, "-k", "2", "--json")
    assert code == 1  # one input failed
    lines = [json.loads(line) for line in out.splitlines()]
    assert [line["input"] for line in lines] == [
        str(folder / "a.csv"), str(folder / "b.csv"), str(folder / "bad.csv"), str(circles_png)
    ]  # fmt: skip
    assert [line["ok"] for line in lines] == [True, True, False, True]
    assert "3 columns" in lines[2]["error"]
    assert all(len(line["circles"]) == 2 for line in lines if line["ok"])
    assert "100%" in err  # the progress bar
    code, out, _ = run_cli(capsys, "circles", folder / "a.csv", folder / "b.csv", "-k", "2")
    assert code == 0 and out.count("== ") == 2 and "2 of 2 inputs fitted" in out
    argv = ("circles", folder / "a.csv", folder / "b.csv", "-k", "2", "--json")
    code, out, _ = run_cli(capsys, *argv, "--deterministic")
    lines = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and len(lines) == 2
    assert all("input_seconds" not in line and "seconds" not in line for line in lines)


def test_batch_mode_refuses_plot_and_an_empty_folder(capsys, tmp_path, circles_png):
    code, _, err = run_cli(
        capsys, "circles", circles_png, circles_png, "--plot", tmp_path / "p.png"
    )
    assert code == 2 and "one input" in err
    (tmp_path / "empty").mkdir()
    code, _, err = run_cli(capsys, "circles", tmp_path / "empty")
    assert code == 2 and "without images or point sets" in err


def test_invalid_experts_are_marked_with_their_reason(capsys, tmp_path):
    img = np.zeros((100, 100), bool)  # a straight line: no circle
    img[np.arange(100), (0.5 * np.arange(100) + 20).astype(int)] = True
    png = save_png(tmp_path / "line.png", img)
    code, out, err = run_cli(capsys, "circles", png, "-k", "2", "--restarts", "1")
    assert code == 0, err
    rows = [line.split() for line in out.splitlines() if line[:1].isdigit()]
    assert [r[5] for r in rows] == ["no", "no"] and "not valid curves" in out
    code, out, _ = run_cli(capsys, "circles", png, "-k", "2", "--restarts", "1", "--json")
    for c in json.loads(out)["circles"]:
        assert c["valid"] is False and c["reason"]
        if c["reason"].startswith("posterior too wide"):
            assert c["sd_x0"] is None and c["sd_r"] is None


def test_plot_with_stray_pixels_held_by_the_noise_expert(capsys, tmp_path):
    img, _ = circle_image([(60, 60)] * 2, [20, 45], (120, 120), outlier_fraction=0.2, seed=1)
    png, plot = save_png(tmp_path / "stray.png", img), tmp_path / "plot.png"
    code, out, err = run_cli(capsys, "circles", png, "-k", "2", "--json", "--plot", plot)
    assert code == 0, err
    assert json.loads(out)["outlier_share"] > 0.1
    assert plot.read_bytes()[:8] == PNG_SIGNATURE


@pytest.mark.parametrize("k", ["100000000", "99999999999999999999"])
@pytest.mark.parametrize("command", ["circles", "conics"])
def test_a_huge_k_is_refused_at_once_as_more_experts_than_points(
    capsys, tmp_path, circles_png, image_outputs, command, k
):
    """H-3: ``-k 100000000`` built 11 GB before any check, ``-k 999...9`` was an internal
    OverflowError; both are fit's own error, before anything of size K is allocated."""
    import resource

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    err = expect_failure(capsys, tmp_path, 1, command, circles_png, "-k", k, *image_outputs)
    assert f"experts = {k} is more than the number of points (" in err
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mib < 200, grown_mib


def _two_rings_with_strays(path):
    """Two rings and 40 stray pixels, saved as a PNG at ``path``."""
    from PIL import Image

    yy, xx = np.mgrid[:80, :90]
    img = (np.abs(np.hypot(xx - 40, yy - 38) - 20) < 1) | (
        np.abs(np.hypot(xx - 55, yy - 45) - 12) < 1
    )
    rng = np.random.default_rng(3)
    img[rng.integers(0, 80, 40), rng.integers(0, 90, 40)] = True
    Image.fromarray((img * 255).astype(np.uint8)).save(path)
    return path


@pytest.mark.parametrize(
    ("argv", "api"),
    [
        (["circles", "--experts", "2"], lambda p: pyro_moe.fit_circles(p, experts=2)),
        (["conics", "--experts", "2"], lambda p: pyro_moe.fit_conics(p, experts=2)),
        (
            ["curves", "--experts", "circle,ellipse"],
            lambda p: pyro_moe.fit_curves(p, experts=["circle", "ellipse"]),
        ),
        (
            ["circles", "--experts", "auto"],
            lambda p: pyro_moe.select_curves(p, design="circle").result,
        ),
        (
            ["conics", "--experts", "auto"],
            lambda p: pyro_moe.select_curves(p, design="conic").result,
        ),
    ],
    ids=["circles", "conics", "curves", "circles-auto", "conics-auto"],
)
def test_every_curve_command_gives_the_api_s_curves_with_the_defaults(capsys, tmp_path, argv, api):
    """The command and the API with their defaults fit the same model (noise expert and
    all) to the same points: the same objective, the same number of experts, the same
    noise expert."""
    import warnings

    path = _two_rings_with_strays(tmp_path / "rings.png")
    code, out, _ = run_cli(capsys, argv[0], path, *argv[1:], "--json", "--deterministic")
    assert code == 0
    printed = json.loads(out)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = api(str(path))
    assert printed["noise_expert"] == bool(result.noise_expert) is True
    assert printed["points"] == len(result.y)
    assert printed["objective"] == pytest.approx(result.objective, rel=1e-9, abs=1e-9)
    shown = printed.get("circles", printed.get("conics", printed.get("curves")))
    assert len(shown) == result.experts
