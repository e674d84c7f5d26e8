"""The study's reproduction job (:mod:`pyro_moe.study.runner`): a tiny run writes every
file with sane numbers; worker processes give the in-process numbers."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import pytest

from pyro_moe.errors import InputError
from pyro_moe.shapes import emprior_dir
from pyro_moe.study import DATASETS, PUBLISHED_S, ROWS, Report, main_table, reproduce

HAVE_EMPRIOR = emprior_dir() is not None


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Report, Path]:
    """Quick run, 2 seeds, CAVI only, in-process; warnings turned into errors."""
    out = tmp_path_factory.mktemp("reproduce")
    calls: list[tuple[int, int, str]] = []
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        report = reproduce(
            quick=True,
            seeds=2,
            methods=("cavi",),
            out=out,
            workers=1,
            progress=lambda done, total, label: calls.append((done, total, label)),
        )
    assert calls and calls[-1][0] == calls[-1][1] == len(calls)
    return report, out


@pytest.mark.slow
def test_tiny_run_writes_every_file(tiny):
    report, out = tiny
    assert report.report_path == out / "report.md" and report.report_path.is_file()
    assert report.json_path == out / "results.json" and report.json_path.is_file()
    assert report.figure_paths["sweep"] == out / "sweep.png"
    for p in report.figure_paths.values():
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temp files left
    text = report.report_path.read_text()
    for heading in ("## 1. Circle error S", "## 2. Noise sweep", "## 4. Where and why we differ"):
        assert heading in text
    assert report.table_markdown() in text
    assert "derivation.md" in text and "erratum a" in text and "noise expert" in text


@pytest.mark.slow
def test_tiny_run_json_has_the_table(tiny):
    report, _ = tiny
    data = json.loads(report.json_path.read_text())
    assert data == json.loads(report.to_json())
    cells = {(r["dataset"], r["choice"]): r for r in data["table"]}
    assert set(cells) == {(d, c) for d in DATASETS for c in ROWS}
    for (ds, choice), row in cells.items():
        assert row["published"] == PUBLISHED_S[ds].get(choice)
        cavi = row["methods"]["cavi"]
        assert cavi["seeds"] == [0, 1]
        assert math.isfinite(cavi["summary"]["median"]), (ds, choice)
    for choice in ("f2", "f3"):
        assert cells["synthetic_1", choice]["methods"]["cavi"]["summary"]["max"] < 1e-6
    # Synthetic 2: every choice near the jitter floor; the noise expert helps on Synthetic 3
    floor = data["ls_floor"]["synthetic_2"]["median"]
    assert 5e-4 < floor < 3e-3
    for choice in ROWS:
        assert cells["synthetic_2", choice]["methods"]["cavi"]["summary"]["median"] < 5e-3
    s3 = {c: cells["synthetic_3", c]["methods"]["cavi"]["summary"]["median"] for c in ROWS}
    assert s3["f3 + noise expert"] < s3["f3"]
    # the sweep: 3 levels x 4 rows, finite S and ELBO per point
    assert [(r["level"], r["choice"]) for r in data["sweep"]] == [
        (lv, c) for lv in (0.0, 0.5, 1.0) for c in ROWS
    ]
    for r in data["sweep"]:
        assert all(math.isfinite(x) for x in r["S"] + r["elbo_per_point"])
    assert data["warnings"]["other_warnings"] == []
    assert data["settings"]["seeds_by_method"] == {"cavi": 2}
    eye = {"eye/cavi": 3} if HAVE_EMPRIOR else {}
    assert data["warnings"]["fits_by"] == {"table/cavi": 24, "sweep/cavi": 24, **eye}


@pytest.mark.slow
def test_main_table_lists_every_cell(tiny):
    report, _ = tiny
    text = main_table(report)
    assert len(text.splitlines()) == 2 + len(DATASETS) * len(ROWS) + 1
    assert "Synthetic 3" in text and "f3 + noise expert" in text and "CAVI" in text


@pytest.mark.slow
def test_the_prose_quotes_this_runs_numbers(tiny):
    from pyro_moe.study.report import fmt

    report, _ = tiny
    text = report.report_path.read_text()
    for ds, choice in [("synthetic_2", "f2"), ("synthetic_3", "f3"), ("synthetic_3", "f1")]:
        assert fmt(report.median(ds, choice)) in text.split("## 4.")[1]
    assert fmt(report.floor_median("synthetic_2")) in text.split("## 4.")[1]


@pytest.mark.slow
@pytest.mark.skipif(not HAVE_EMPRIOR, reason="../shared/data/emprior is absent")
def test_eye_part_when_the_study_data_is_present(tiny):
    report, out = tiny
    assert report.eye is not None
    assert report.figure_paths["eye"] == out / "eye_fit.png"
    for choice in ("f2", "f3"):
        circles = report.eye["fits"][choice]["circles"]
        assert len(circles) == 2 and all(c["valid"] for c in circles)
        inner, outer = circles  # sorted by radius
        assert 0.05 < inner["r"] < outer["r"] < 3.0
    assert "## 3. The eye image" in report.report_path.read_text()


def test_eye_part_is_skipped_cleanly_without_the_data(tmp_path, monkeypatch):
    monkeypatch.setenv("PYRO_MOE_EMPRIOR", str(tmp_path / "absent"))
    report = reproduce(parts=("eye",), out=tmp_path / "out", workers=1)
    assert report.eye is None and "Skipped" in report.eye_note
    assert "eye" not in report.figure_paths
    assert "Skipped" in report.report_path.read_text()
    assert json.loads(report.json_path.read_text())["eye"] is None


@pytest.mark.skipif(not HAVE_EMPRIOR, reason="../shared/data/emprior is absent")
def test_eye_path_may_be_the_mask_itself(tmp_path, monkeypatch):
    mask = emprior_dir() / "1_mask_2.jpg"
    monkeypatch.setenv("PYRO_MOE_EMPRIOR", str(tmp_path / "absent"))
    report = reproduce(parts=("eye",), eye=mask, out=tmp_path, workers=1)
    assert report.eye is not None and report.eye["image"] == str(mask)
    assert (tmp_path / "eye_fit.png").is_file()


def test_bad_arguments_are_refused(tmp_path):
    with pytest.raises(InputError, match="method"):
        reproduce(methods=("gibbs",), out=tmp_path)
    with pytest.raises(InputError, match="part"):
        reproduce(parts=("everything",), out=tmp_path)
    with pytest.raises(InputError, match="levels"):
        reproduce(parts=("sweep",), levels=(2.0,), out=tmp_path)
    with pytest.raises(InputError, match="not found"):
        reproduce(parts=("eye",), eye=tmp_path / "nope.png", out=tmp_path)
    assert not list(tmp_path.iterdir())


@pytest.mark.slow
def test_worker_processes_give_the_same_numbers(tiny, tmp_path):
    """Each fit is seeded: two worker processes reproduce the in-process seed-0 numbers."""
    report, _ = tiny
    pooled = reproduce(
        parts=("sweep",), levels=(1.0,), seeds=1, methods=("cavi",), out=tmp_path, workers=2
    )
    serial = {r["choice"]: r["S"][0] for r in report.sweep if r["level"] == 1.0}
    assert {r["choice"]: r["S"][0] for r in pooled.sweep} == pytest.approx(serial, rel=1e-9)
