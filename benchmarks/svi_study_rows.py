"""SVI (natural gradient, the default of method="svi") against CAVI on every row of the
study's reproduction (``pyro-moe reproduce --quick``: f1, f2, f3, f3 + noise expert on
Synthetic 1-3 and the noise sweep, f2, f3, f3 + noise expert on the eye), seed 0, the
reproduction's own settings (:func:`pyro_moe.study.runner.fit_choice`).

Per row: both objectives, |F_SVI - F_CAVI| against max(1e-4 |F_CAVI|, 0.5), S of both
against max(2 S_CAVI, 1e-6), and the largest |sd_SVI / sd_CAVI - 1| of the weights'
posterior sds (experts aligned, Hungarian on the means), against 5 %. Both engines stop by
the same rule (tol = 1e-8 on the relative change of F). Writes
benchmarks/results/svi_study_rows.{json,md}.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/svi_study_rows.py
"""

from __future__ import annotations

import json
import time
import warnings
from pathlib import Path

from run import machine, svi_against_cavi, table  # benchmarks/run.py

from pyro_moe.study.constants import EYE_ROWS, QUICK_LEVELS, ROWS
from pyro_moe.study.runner import _data, eye_points, eye_source, fit_choice

OUT = Path(__file__).resolve().parent / "results"


def cases():
    for ds in ("synthetic_1", "synthetic_2", "synthetic_3"):
        d = _data(ds, 0, None)
        yield ds, d.xy, d.circles, tuple(ROWS)
    for level in QUICK_LEVELS:
        d = _data("sweep", 0, level)
        yield f"sweep {level:g}", d.xy, d.circles, tuple(ROWS)
    eye = eye_source(None)
    if eye is not None:
        yield "eye", eye_points(eye), None, EYE_ROWS


def main() -> None:
    rows = []
    for name, xy, truth, choices in cases():
        for choice in choices:
            fits = {}
            for method in ("cavi", "svi"):
                t0 = time.perf_counter()
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    fits[method] = (fit_choice(choice, xy, method=method, seed=0),
                                    time.perf_counter() - t0)  # fmt: skip
            (c, tc), (s, ts) = fits["cavi"], fits["svi"]
            row = {"data": name, "row": choice, **svi_against_cavi(c, s, truth),
                   "cavi_s": tc, "svi_s": ts}  # fmt: skip
            rows.append(row)
            print(row, flush=True)
    keys = ["data", "row", "F_cavi", "F_svi", "gap", "F_ok", "S_cavi", "S_svi", "S_ok",
            "sd_ratio_max_dev", "sd_ok", "cavi_converged", "svi_converged", "cavi_s",
            "svi_s"]  # fmt: skip
    info = machine()
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "svi_study_rows.json").write_text(json.dumps({"info": info, "rows": rows}, indent=2))
    text = "\n\n".join(
        [
            "# SVI (natural gradient) against CAVI on the reproduction's rows",
            ", ".join(f"{k}={v}" for k, v in info.items()),
            __doc__.split("\n\n")[1],
            table(rows, keys),
        ]
    )
    (OUT / "svi_study_rows.md").write_text(text + "\n")


if __name__ == "__main__":
    main()
