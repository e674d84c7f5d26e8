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
from cli_helpers import (
    assert_one_error_line,
    circles_png,
    expect_failure,
    run_cli,
    save_png,
    table_csv,
)

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
def _only_progress_then(rest: str, last: str) -> None:
    """stderr after the first progress line: the progress lines of jobs that ended before
    the signal arrived (how many depends on the machine's load), then ``last``, once, and
    nothing after it (no traceback, no "leaked semaphore" from the resource tracker)."""
    lines = rest.splitlines(keepends=True)
    assert lines and lines[-1] == last + "\n", rest
    assert all(line.startswith("[") for line in lines[:-1]), rest


def test_ctrl_c_stops_reproduce_and_its_workers_promptly(tmp_path):
    # promptly: well before the job would end by itself (2 s on a quiet machine; the bound
    # leaves room for a loaded CI machine, where it once took 2.45 s)
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
    assert code == 130 and elapsed < 10.0, (elapsed, rest)
    # the interruption line last, and nothing after it (no "leaked semaphore")
    _only_progress_then(rest, "pyro-moe: interrupted (no output written)")
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


# ---- issue 29: outputs, inputs, signals, stdout --------------------------------------------
def _points_csv(directory: Path, name: str = "c.csv") -> Path:
    th = np.linspace(0, 2 * np.pi, 60, endpoint=False)
    path = directory / name
    pts = np.column_stack([50 + 20 * np.cos(th), 40 + 20 * np.sin(th)])
    path.write_text("x,y\n" + "\n".join(f"{x:.6f},{y:.6f}" for x, y in pts) + "\n")
    return path


def test_outputs_onto_an_input_or_onto_each_other_are_refused(capsys, tmp_path):
    """DL-3, DL-4: --save / --plot over the input, and --plot and --save one path."""
    pts = _points_csv(tmp_path)
    table = table_csv(tmp_path)
    text, data = pts.read_bytes(), table.read_bytes()
    expect_failure(capsys, tmp_path, 2, "circles", pts, "-k", "1", "--save", pts)
    expect_failure(capsys, tmp_path, 2, "circles", pts, "-k", "1", "--plot", tmp_path / "c.csv")
    expect_failure(capsys, tmp_path, 2, "fit", table, "--target", "y", "--save", table)
    assert pts.read_bytes() == text and table.read_bytes() == data
    same = tmp_path / "out" / "same.png"
    err = expect_failure(capsys, tmp_path, 2, "circles", pts, "-k", "1", "--plot", same,
                         "--save", same)  # fmt: skip
    assert "same file" in err


def test_plot_is_written_in_the_format_of_its_ending(capsys, tmp_path):
    """SW-10: .jpg gives JPEG bytes, .pdf a PDF; an unknown ending is a usage error."""
    pts = _points_csv(tmp_path)
    for name, magic in (("p.jpg", b"\xff\xd8"), ("p.pdf", b"%PDF"), ("p.png", b"\x89PNG")):
        code, _, err = run_cli(capsys, "circles", pts, "-k", "1", "--plot", tmp_path / name)
        assert code == 0, err
        assert (tmp_path / name).read_bytes().startswith(magic), name
    expect_failure(capsys, tmp_path, 2, "circles", pts, "-k", "1", "--plot", "out/p.xyz")


def test_save_to_a_name_ending_in_a_slash_is_refused(capsys, tmp_path):
    """SW-11: argparse's Path would strip the slash and write a file named newdir."""
    pts = _points_csv(tmp_path)
    expect_failure(capsys, tmp_path, 2, "circles", pts, "-k", "1", "--save", f"{tmp_path}/newdir/")
    assert not (tmp_path / "newdir").exists()


def test_batch_reports_every_entry_that_cannot_be_read(capsys, tmp_path):
    """SW-12: broken links, link loops, FIFOs and links to /dev/zero get a failure line."""
    batch = tmp_path / "batch"
    batch.mkdir()
    _points_csv(batch, "a_good.csv")
    (batch / "b_broken.png").symlink_to(batch / "missing.png")
    (batch / "c_loop.png").symlink_to(batch / "c_loop.png")
    os.mkfifo(batch / "d_fifo.png")
    os.mkfifo(batch / "e_fifo.csv")
    (batch / "f_zero.csv").symlink_to("/dev/zero")
    code, out, _ = run_cli(capsys, "circles", batch, "-k", "1", "--json")
    lines = [json.loads(line) for line in out.splitlines()]
    assert code == 1
    assert [Path(d["input"]).name for d in lines] == sorted(p.name for p in batch.iterdir())
    assert [d["ok"] for d in lines] == [True, False, False, False, False, False]
    assert all("internal error" not in d["error"] for d in lines[1:])


def test_options_that_do_not_apply_to_the_input_are_usage_errors(capsys, tmp_path):
    """UE-6: compare's --max-points on a table, --target on an image; --edge-sigma alone."""
    table = table_csv(tmp_path)
    image = circles_png(tmp_path)
    err = expect_failure(capsys, tmp_path, 2, "compare", table, "--target", "y",
                         "--max-points", "10")  # fmt: skip
    assert "--max-points" in err
    err = expect_failure(capsys, tmp_path, 2, "compare", image, "--target", "y")
    assert "--target" in err
    err = expect_failure(capsys, tmp_path, 2, "circles", image, "--edge-sigma", "2")
    assert "--edges" in err


def test_fd_level_writes_of_a_model_file_do_not_reach_stdout(capsys, tmp_path):
    """SW-14: os.write(1, ...) at import and in model() goes to stderr, not into --json."""
    text = (MODELS_DIR / "mixture_of_models.py").read_text()
    model = tmp_path / "fd1.py"
    model.write_text('import os\nos.write(1, b"RAW FD1 OUTPUT\\n")\n' + text)
    proc = subprocess.run(
        [sys.executable, "-m", "pyro_moe", "fit", table_csv(tmp_path), "--target", "y",
         "--model", model, "-k", "1", "--restarts", "1", "--json"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path, env=_env(),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    json.loads(proc.stdout)
    assert "RAW FD1 OUTPUT" in proc.stderr


def _env() -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


@pytest.mark.parametrize("how", ["closed", "full"])
def test_a_closed_or_full_stdout_is_one_error_line_and_no_file(tmp_path, how):
    """WE-12: stdout closed (>&-) or /dev/full: exit 1, one line, no output file."""
    pts = _points_csv(tmp_path)
    argv = [sys.executable, "-m", "pyro_moe", "circles", str(pts), "-k", "1", "--json",
            "--save", str(tmp_path / "r.npz")]  # fmt: skip
    if how == "full" and not Path("/dev/full").exists():
        pytest.skip("no /dev/full")
    stdout = subprocess.DEVNULL
    with open("/dev/full", "w") if how == "full" else open(os.devnull, "w") as sink:
        if how == "full":
            stdout = sink
            proc = subprocess.run(argv, stdout=stdout, stderr=subprocess.PIPE, text=True,
                                  timeout=300, env=_env())  # fmt: skip
        else:  # the child starts with file descriptor 1 closed
            proc = subprocess.run(
                ["sh", "-c", '"$@" >&-', "sh", *argv],
                stderr=subprocess.PIPE, text=True, timeout=300, env=_env(),
            )  # fmt: skip
    assert_one_error_line(proc.stderr, 1, proc.returncode)
    assert "standard output" in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.csv"]


_SIGNAL_DURING_PLOT = """
import os, signal, sys
import pyro_moe.cli.curves as curves
from pyro_moe.cli import main
def plot(*args, **kwargs):  # the staged temporaries exist now
    os.kill(os.getpid(), signal.{name})
    raise AssertionError("the signal did not stop the run")
curves.plot_png = plot
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize("name, status", [("SIGTERM", 143), ("SIGHUP", 129)])
def test_sigterm_and_sighup_remove_staged_outputs(tmp_path, name, status):
    """DL-1: like Ctrl-C: one line, exit 128 + the signal, no temporary left."""
    pts = _points_csv(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    proc = subprocess.run(
        [sys.executable, "-c", _SIGNAL_DURING_PLOT.format(name=name), "circles", str(pts),
         "-k", "1", "--plot", str(out / "fit.png"), "--save", str(out / "fit.npz")],
        capture_output=True, text=True, timeout=300, env=_env(),
    )  # fmt: skip
    assert proc.returncode == status, proc.stderr
    assert proc.stderr == f"pyro-moe: terminated by {name} (no output written)\n"
    assert list(out.iterdir()) == []


@pytest.mark.slow
def test_sigterm_stops_reproduce_and_its_workers(tmp_path):
    """DL-2: SIGTERM to the main process alone: its pool goes with it."""
    out = tmp_path / "rep"
    proc = _popen(
        "reproduce", "--quick", "--cavi-only", "--seeds", "1", "--out", out, cwd=tmp_path,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
    )  # fmt: skip
    try:
        line = proc.stderr.readline()  # the first progress line: the worker pool is busy
        assert line.startswith("["), line
        children = subprocess.run(
            ["pgrep", "-P", str(proc.pid)], capture_output=True, text=True, check=False
        ).stdout.split()
        proc.send_signal(signal.SIGTERM)  # the main process only, not its group
        code = proc.wait(timeout=120)
        rest = proc.stderr.read()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert code == 143, rest
    _only_progress_then(rest, "pyro-moe: terminated by SIGTERM (no output written)")
    assert not out.exists()
    deadline = time.monotonic() + 30
    while (alive := [p for p in children if _cmdline(p)]) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not alive, f"child processes still running: {alive}"


@pytest.mark.parametrize("which", ["plot", "save"])
def test_a_full_disk_names_the_destination_not_the_temporary(capsys, tmp_path, monkeypatch, which):
    """UE-4: ENOSPC while writing a staged output names --plot / --save, not .x.tmp."""
    import errno

    import pyro_moe.cli.curves as curves

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / ".r.png.x.tmp"))

    if which == "plot":
        monkeypatch.setattr(curves, "plot_png", full)
    else:
        monkeypatch.setattr(np, "savez", full)
    pts = _points_csv(tmp_path)
    out = tmp_path / "out"
    err = expect_failure(capsys, tmp_path, 1, "circles", pts, "-k", "1", "--plot",
                         out / "r.png", "--save", out / "r.npz")  # fmt: skip
    dest = out / ("r.png" if which == "plot" else "r.npz")
    assert f"cannot write {dest}: No space left on device" in err, err
    assert ".tmp" not in err


# ---- issue 29, third pass ----------------------------------------------------------------
def test_points_exactly_on_a_circle_are_the_circle_not_outliers(capsys, tmp_path):
    """SW-4: 40 exact points on (3, 1, r 2) with the CLI's default noise expert gave r = 0."""
    th = np.linspace(0, 2 * np.pi, 40, endpoint=False)
    pts = np.column_stack([3 + 2 * np.cos(th), 1 + 2 * np.sin(th)])
    path = tmp_path / "exact.csv"
    path.write_text("x,y\n" + "".join(f"{float(x)!r},{float(y)!r}\n" for x, y in pts))
    code, out, err = run_cli(capsys, "circles", path, "-k", "1", "--json")
    assert code == 0, err
    got = json.loads(out)
    (c,) = got["circles"]
    assert c["valid"] and (c["x0"], c["y0"], c["r"]) == pytest.approx((3, 1, 2), abs=1e-6)
    assert got["outlier_share"] == 0.0


def test_a_bad_chunk_of_a_store_is_one_line_without_the_worker_log(tmp_path):
    """TB-1 / UE-2: a NaN in a store fitted on a worker printed Dask's "Compute Failed" log
    (8 lines) before the error, which named the row within its chunk."""
    pytest.importorskip("distributed")
    g = np.random.default_rng(0)
    X = np.column_stack([g.normal(size=300), np.ones(300)])
    y = X @ [2.0, 1.0]
    y[250] = np.nan
    store = tmp_path / "store"
    store.mkdir()
    np.save(store / "X.npy", X)
    np.save(store / "y.npy", y)
    argv = [sys.executable, "-m", "pyro_moe", "fit", str(store), "--workers", "1",
            "--save", str(tmp_path / "r.npz")]  # fmt: skip
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=300, env=_env())
    assert_one_error_line(proc.stderr, 1, proc.returncode)
    assert "first at row 250" in proc.stderr and proc.stdout == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["store"]


def test_deterministic_curves_are_the_same_bytes_whatever_the_threads(capsys, tmp_path):
    """SW-13: with over 32768 values torch sums in parallel, in an order that depends on
    the thread count: --threads 1 and 2 differed in the last digits (noise_share)."""
    g = np.random.default_rng(0)
    n = 40_000
    th = g.uniform(0, 2 * np.pi, n)
    r = np.where(g.random(n) < 0.5, 30, 15) + 0.3 * g.normal(size=n)
    pts = np.column_stack([50 + r * np.cos(th), 40 + r * np.sin(th)])
    pts[:8000] = g.uniform(0, 100, (8000, 2))
    path = tmp_path / "pts.csv"
    np.savetxt(path, pts, delimiter=",", header="x,y", comments="")
    argv = ["curves", path, "-k", "circle,ellipse", "--restarts", "1", "--max-iter", "5",
            "--json", "--deterministic"]  # fmt: skip
    outs = [run_cli(capsys, "--threads", t, *argv) for t in (1, 2)]
    assert outs[0][0] == 0 and outs[0][1] == outs[1][1]
    assert '"noise_share"' in outs[0][1]


def test_too_few_nuts_draws_are_one_error_line(capsys, tmp_path):
    """WE-9: --method nuts --max-iter 3 was "internal error: AssertionError: ;" after 10 s."""
    argv = ["fit", table_csv(tmp_path), "--target", "y", "--method", "nuts", "--max-iter", "3"]
    code, out, err = run_cli(capsys, *argv)
    assert_one_error_line(err, 1, code)
    assert "max_iter" in err and ">= 4" in err and out == ""
