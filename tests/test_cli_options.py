"""The shared option groups and argument types (:mod:`pyro_moe.cli.options`): bad values
are usage errors (status 2), and ``--help`` shows the defaults."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_helpers import circles_png as make_circles_png
from cli_helpers import expect_failure, help_text, image_outputs, run_cli

from pyro_moe.cli import main


@pytest.fixture
def circles_png(tmp_path: Path) -> Path:
    return make_circles_png(tmp_path)


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
def test_usage_errors_exit_2(capsys, tmp_path, circles_png, args, message):
    outputs = image_outputs(tmp_path)
    err = expect_failure(capsys, tmp_path, 2, "circles", circles_png, *outputs, *args)
    assert message in err.replace("'auto'", "auto")


def test_help_shows_defaults(capsys):
    for command in ("circles", "conics", "fit", "demo"):
        assert main([command, "--help"]) == 0
        out = capsys.readouterr().out
        assert "default" in out
    assert "(default: otsu)" in " ".join(help_text(capsys, "circles").split())


def test_help_mentions_auto_and_noise_expert(capsys):
    text = " ".join(help_text(capsys, "circles").split())
    assert "auto" in text and "--max-experts" in text and "--no-noise-expert" in text


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
