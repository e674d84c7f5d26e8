"""Curves found on photographs: found / total within tolerance, and the time of each fit.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/photos.py

Photos: ``skimage.data.coins`` (24 coins, ``circles --edges --experts 24``, 4 px), the
study's eye photo ``1.tif`` (pupil and outer iris, ``circles --edges --experts 2``, 8 px;
and with ``--experts 4`` the two specular rings too, 2 px; skipped when the study's data
are absent) and ``skimage.data.coffee`` (cup rim and saucer
and inner rims and the saucer's rim, ``conics --edges --experts 3``, 4 px in centre and
semi-axes). The references and how they were
measured are those of ``tests/test_photos.py``. Every fit runs as the command line does
(noise expert on, the default restarts, the automatic edge scale). Writes
benchmarks/results/photos.{json,md}. Times are wall-clock on the machine that runs it.
"""

from __future__ import annotations

import json
import sys
import time
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import skimage.data  # noqa: E402

import pyro_moe  # noqa: E402
from pyro_moe.files import atomic_write  # noqa: E402
from pyro_moe.shapes.emprior import emprior_dir  # noqa: E402
from tests.test_photos import COFFEE, COINS, EYE, EYE_SPECULAR, _ellipse_gap, _found  # noqa: E402


def _timed(fit, *args, **kw):
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = fit(*args, **kw)
    return result, time.perf_counter() - t0


def main() -> None:
    rows = []
    r, dt = _timed(pyro_moe.fit_circles, skimage.data.coins(), experts=24, edges=True,
                   noise_expert=True)  # fmt: skip
    circles = r.circles()
    bogus = sum(c.valid and _found(COINS, [c], 4.0) == 0 for c in circles)
    rows.append({"photo": "coins (skimage.data)", "K": 24, "tol_px": 4,
                 "found": _found(COINS, circles, 4.0), "total": len(COINS),
                 "valid_but_wrong": bogus, "seconds": dt})  # fmt: skip
    root = emprior_dir()
    if root is not None and (root / "1.tif").exists():
        r, dt = _timed(pyro_moe.fit_circles, root / "1.tif", experts=2, edges=True,
                       noise_expert=True)  # fmt: skip
        refs = list(EYE.values())
        rows.append({"photo": "eye 1.tif (study)", "K": 2, "tol_px": 8,
                     "found": _found(refs, r.circles(), 8.0), "total": len(refs),
                     "seconds": dt})  # fmt: skip
        r, dt = _timed(pyro_moe.fit_circles, root / "1.tif", experts=4, edges=True,
                       noise_expert=True)  # fmt: skip
        rings = list(EYE_SPECULAR.values())
        found = _found(refs, r.circles(), 8.0) + _found(rings, r.circles(), 2.0)
        rows.append({"photo": "eye 1.tif (study), + specular rings", "K": 4,
                     "tol_px": "8 / 2", "found": found, "total": len(refs) + len(rings),
                     "seconds": dt})  # fmt: skip
    r, dt = _timed(pyro_moe.fit_conics, skimage.data.coffee(), experts=3, edges=True,
                   noise_expert=True)  # fmt: skip
    conics = r.conics()
    hits = {name: min(_ellipse_gap(ref, c) for c in conics) for name, ref in COFFEE.items()}
    rows.append({"photo": "coffee (skimage.data), conics", "K": 3, "tol_px": 4,
                 "found": sum(v <= 4.0 for v in hits.values()), "total": len(COFFEE),
                 "gap_px": hits, "seconds": dt,
                 "curves": [str(c) for c in r.curves()]})  # fmt: skip
    for row in rows:
        print(row, flush=True)
    out = HERE / "results"
    atomic_write(out / "photos.json", lambda p: p.write_text(json.dumps(rows, indent=1) + "\n"))
    lines = ["| photo | K | found (within) | time |", "|---|---|---|---|"]
    for row in rows:
        found = f"{row['found']}/{row['total']}"
        lines.append(f"| {row['photo']} | {row['K']} | {found} ({row['tol_px']} px) | "
                     f"{row['seconds']:.1f} s |")  # fmt: skip
    atomic_write(out / "photos.md", lambda p: p.write_text("\n".join(lines) + "\n"))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
