"""The wheel works outside the checkout: build it, install it apart, fit every built-in model.

Run by ``make wheel-check`` (a prerequisite of ``make test``)::

    .venv/bin/python tests/wheel_check.py

1. Copies the files git knows of (tracked and untracked-but-not-ignored) to a temporary
   folder and builds the wheel there (``pip wheel --no-deps --no-build-isolation``, with the
   venv's setuptools: no download, and no ``build/`` or ``*.egg-info`` left in the checkout,
   nor stale files from an old ``build/`` carried into the wheel).
2. Checks the wheel holds every ``.py`` file of ``pyro_moe/`` and ``models/`` (a subpackage
   missing from ``[tool.setuptools] packages`` in pyproject.toml would be silently left out).
3. Installs it with ``pip install --no-deps --target`` into a temporary folder.
4. Runs this venv's python there with ``-S`` (no site-packages .pth files, so not the editable
   install's finder) and ``PYTHONPATH=<target>:<venv site-packages>`` from a cwd outside the
   checkout; it asserts every imported ``pyro_moe`` module and ``models/`` come from the
   target folder, then fits every built-in model by name on 200 points (CAVI) and one
   ``fit_circles`` (the default model), and checks the circles.

Exits non-zero with the reason on any failure. Not collected by pytest (no ``test_`` prefix).
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import tempfile
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Runs in the installed copy; argv[1] is the target folder it must import from.
PROBE = r"""
import sys
from pathlib import Path

target = Path(sys.argv[1]).resolve()

import numpy as np
import pyro_moe
from pyro_moe import model_file
from pyro_moe.shapes import circle_design, circle_error, circles_from_weights, synthetic_1

def inside(p):
    return Path(p).resolve().is_relative_to(target)

stray = sorted(
    f"{name} ({mod.__file__})"
    for name, mod in sys.modules.items()
    if name.split(".")[0] == "pyro_moe" and getattr(mod, "__file__", None)
    and not inside(mod.__file__)
)
assert not stray, f"pyro_moe modules imported from outside the wheel: {stray}"
assert inside(model_file.MODELS_DIR), f"models/ found outside the wheel: {model_file.MODELS_DIR}"

names = pyro_moe.builtin_models()
assert names, f"no built-in models in the installed wheel (looked in {model_file.MODELS_DIR})"
data = synthetic_1()
X, t = circle_design(data.xy)
for name in names:
    m = pyro_moe.load_model(name)
    assert inside(m.path), f"model {name} loaded from outside the wheel: {m.path}"
    y = (t > np.median(t)).astype(float) if name == "logistic_experts" else t  # its y is 0/1
    res = pyro_moe.fit(name, X, y, experts=2, prior_mean=[0.0, 0.0, 0.5], n_init=2, max_iter=200)
    print(f"  {name}: fitted by name, objective {float(res.objective):.4g}")
res = pyro_moe.fit_circles(data.xy, experts=2, n_init=2)
err = circle_error(data.circles, res.circles())
assert err < 1e-3, f"fit_circles from the wheel: circle error {err}"
print(f"  fit_circles (default model): circle error {err:.2e}")
"""


def fail(message: str) -> None:
    print(f"wheel check FAILED: {message}", file=sys.stderr)
    raise SystemExit(1)


def run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
    if proc.returncode != 0:
        fail(f"{' '.join(cmd)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def source_files() -> list[str]:
    """The checkout's files as a clean clone plus uncommitted work would have them."""
    out = run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT
    ).stdout
    return sorted({f for f in out.split("\0") if f and (ROOT / f).is_file()})


def copy_tree(files: list[str], dest: Path) -> None:
    for f in files:
        target = dest / f
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes((ROOT / f).read_bytes())


def check_contents(wheel: Path, files: list[str]) -> None:
    """Every .py of pyro_moe/ and models/ is in the wheel (models/ as pyro_moe/models/)."""
    with zipfile.ZipFile(wheel) as zf:
        shipped = set(zf.namelist())
    expected = {}
    for f in files:
        if not f.endswith(".py"):
            continue
        if f.startswith("pyro_moe/"):
            expected[f] = f
        elif f.startswith("models/") and f.count("/") == 1:
            expected[f] = "pyro_moe/" + f
    missing = sorted(src for src, inwheel in expected.items() if inwheel not in shipped)
    if missing:
        fail(
            f"{wheel.name} lacks {missing}: list their packages in [tool.setuptools] "
            "packages of pyproject.toml"
        )


def main() -> None:
    start = time.perf_counter()
    files = source_files()
    with tempfile.TemporaryDirectory(prefix="pyro_moe_wheel_") as tmp:
        tmp = Path(tmp)
        src, dist, target, cwd = tmp / "src", tmp / "dist", tmp / "site", tmp / "cwd"
        cwd.mkdir()
        copy_tree(files, src)
        pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input", "-q"]
        run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(dist), str(src)])
        wheels = sorted(dist.glob("pyro_moe-*.whl"))
        if len(wheels) != 1:
            fail(f"expected one pyro_moe wheel in {dist}, found {[w.name for w in wheels]}")
        check_contents(wheels[0], files)
        run([*pip, "install", "--no-deps", "--no-compile", "--target", str(target), str(wheels[0])])
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
        env["PYTHONPATH"] = os.pathsep.join([str(target), sysconfig.get_paths()["purelib"]])
        env.setdefault("OMP_NUM_THREADS", "1")
        env.setdefault("MPLBACKEND", "Agg")
        probe = run([sys.executable, "-S", "-c", PROBE, str(target)], cwd=cwd, env=env)
        print(probe.stdout, end="")
        print(f"wheel check passed: {wheels[0].name} in {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
