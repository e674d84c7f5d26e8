"""The command line's side of issue 17: every reproducer of the issue as a regression test
(closed pipes, Ctrl-C, checks before fitting, bounded options, pure JSON, deterministic
JSON, huge images, degenerate tables)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import types
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import assert_one_error_line, circles_png, run_cli, save_png, table_csv

from pyro_moe.model_file import MODELS_DIR

ROOT = Path(__file__).resolve().parent.parent


def _popen(*argv: object, cwd: Path, **kw) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return subprocess.Popen(
        [sys.executable, "-m", "pyro_moe", *map(str, argv)], cwd=cwd, env=env, text=True, **kw
    )


def _cmdline(pid: str) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return ""


@pytest.mark.parametrize(
    "argv",
    [
        ["demo", "--seed", "18446744073709551616"],
        ["--threads", "99999999999999999999", "demo"],
        ["demo", "--seed", "-1"],
    ],
)
def test_overflowing_seed_and_threads_are_usage_errors(capsys, argv):
    code, _, err = run_cli(capsys, *argv)
    assert_one_error_line(err, 2, code)


@pytest.mark.parametrize(
    "rows",
    [["1,3", "2,3", "3,3", "4,3"], ["1,2"], ["1,2"] * 4],
    ids=["constant-y", "one-row", "duplicate-rows"],
)
def test_fit_on_a_degenerate_table_succeeds(capsys, tmp_path, rows):
    path = tmp_path / "t.csv"
    path.write_text("a,b\n" + "\n".join(rows) + "\n")
    code, out, err = run_cli(capsys, "fit", path, "--target", "b", "--experts", "1", "--json")
    assert code == 0, err
    assert "internal error" not in err and json.loads(out)["points"] == len(rows)


def test_reproduce_checks_out_and_eye_before_any_fit(capsys, tmp_path):
    existing = tmp_path / "file"
    existing.write_text("x")
    code, _, err = run_cli(capsys, "reproduce", "--quick", "--out", existing)
    assert_one_error_line(err, 2, code)
    assert "not a directory" in err and existing.read_text() == "x"
    bad = tmp_path / "eye.png"
    bad.write_text("not an image")
    t0 = time.perf_counter()
    code, _, err = run_cli(capsys, "reproduce", "--quick", "--out", tmp_path / "o", "--eye", bad)
    assert_one_error_line(err, 1, code)
    assert "not a readable image" in err and time.perf_counter() - t0 < 10
    assert not (tmp_path / "o").exists()


def test_a_huge_image_is_refused_with_the_override_named(capsys, tmp_path):
    png = circles_png(tmp_path)  # 128 x 128
    code, _, err = run_cli(capsys, "circles", png, "--max-pixels", "1000")
    assert_one_error_line(err, 1, code)
    assert "too large" in err and "--max-pixels 0" in err


def test_json_holds_only_json_when_the_model_file_prints(capsys, tmp_path):
    text = (MODELS_DIR / "mixture_of_models.py").read_text()
    model = tmp_path / "chatty.py"
    model.write_text("print('hello at import')\n" + text)
    code, out, err = run_cli(
        capsys, "fit", table_csv(tmp_path), "--target", "y", "--model", model, "--json"
    )
    assert code == 0, err
    json.loads(out)
    assert "hello at import" in err and "hello" not in out


def test_deterministic_json_is_the_same_bytes(capsys, tmp_path):
    argv = ["fit", table_csv(tmp_path), "--target", "y", "--json", "--restarts", "1"]
    first = run_cli(capsys, *argv, "--deterministic")[1]
    second = run_cli(capsys, "--threads", "2", *argv, "--deterministic")[1]
    assert first == second and '"seconds"' not in first
    assert '"seconds"' in run_cli(capsys, *argv)[1]
    code, _, err = run_cli(capsys, "fit", table_csv(tmp_path), "--target", "y", "--deterministic")
    assert_one_error_line(err, 2, code)


@pytest.mark.slow
def test_a_closed_pipe_exits_quietly_and_leaves_no_file(tmp_path):
    mask = np.zeros((64, 64), bool)
    yy, xx = np.mgrid[:64, :64]
    mask[np.abs(np.hypot(xx - 32, yy - 32) - 20) < 1] = True
    png = save_png(tmp_path / "c.png", mask)
    proc = _popen(
        "circles", png, "-k", "1", "--json", "--save", tmp_path / "r.npz", cwd=tmp_path,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    proc.stdout.close()  # the reader is gone before the first byte (| true)
    err = proc.stderr.read()
    assert proc.wait(timeout=120) == 0
    assert err == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.png"]


@pytest.mark.slow
def test_ctrl_c_stops_reproduce_and_its_workers_within_two_seconds(tmp_path):
    out = tmp_path / "rep"
    proc = _popen(
        "reproduce", "--quick", "--cavi-only", "--out", out, cwd=tmp_path,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
    )  # fmt: skip
    line = proc.stderr.readline()  # the first progress line: the worker pool is busy
    assert line.startswith("["), line
    children = subprocess.run(
        ["pgrep", "-P", str(proc.pid)], capture_output=True, text=True, check=False
    ).stdout.split()
    workers = [pid for pid in children if "spawn_main" in _cmdline(pid)]
    assert workers, "no worker processes to check"
    os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C reaches the whole group
    t0 = time.perf_counter()
    code = proc.wait(timeout=30)
    elapsed = time.perf_counter() - t0
    rest = proc.stderr.read()
    assert code == 130 and elapsed < 2.0, (elapsed, rest)
    # one line, and nothing after it (no "leaked semaphore" from the resource tracker)
    assert rest == "pyro-moe: interrupted (no output written)\n", rest
    assert not out.exists()
    time.sleep(0.5)
    alive = [pid for pid in workers if "spawn_main" in _cmdline(pid)]
    assert not alive, f"worker processes still running: {alive}"


class _ClosedPipe:
    """A stdout whose reader has gone (``| true``): every write raises BrokenPipeError."""

    def write(self, text: str) -> int:
        raise BrokenPipeError(32, "Broken pipe")

    def flush(self) -> None:
        raise BrokenPipeError(32, "Broken pipe")

    def fileno(self) -> int:
        raise OSError("no file descriptor")


@pytest.mark.slow
def test_a_closed_pipe_leaves_no_reproduce_report(tmp_path, monkeypatch):
    from pyro_moe.cli import main

    out = tmp_path / "rep"
    monkeypatch.setattr(sys, "stdout", _ClosedPipe())
    code = main(
        ["reproduce", "--quick", "--seeds", "1", "--cavi-only", "--json", "--out", str(out)]
    )
    assert code == 0
    assert not out.exists()  # neither the report files nor the folder made for them


class _Interrupting(types.ModuleType):
    """A module whose attributes raise KeyboardInterrupt: Ctrl-C while it is imported."""

    def __getattr__(self, name: str):
        raise KeyboardInterrupt


def _interrupt(*args: object) -> None:
    raise KeyboardInterrupt


@pytest.mark.parametrize("where", ["import", "parse"])
def test_ctrl_c_during_start_up_is_one_line_and_no_traceback(capsys, monkeypatch, where):
    import pyro_moe.__main__ as entry
    import pyro_moe.cli

    if where == "import":
        monkeypatch.setitem(sys.modules, "pyro_moe.cli", _Interrupting("pyro_moe.cli"))
    else:
        monkeypatch.setattr(pyro_moe.cli, "build_parser", _interrupt)
    monkeypatch.setattr(sys, "argv", ["pyro-moe", "demo"])
    assert entry.run() == 130
    out, err = capsys.readouterr()
    assert out == "" and err == "pyro-moe: interrupted (no output written)\n"
