"""Memory at scale: a CAVI fit on 1e6 points stays below 1.5 GB of resident memory.

No timed assertions (the machine is shared); speed is measured by ``benchmarks/run.py``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

CHILD = """
import json, resource, warnings
import torch
torch.set_num_threads(1)
import pyro_moe
from pyro_moe.shapes import circle_design, circle_points
xy, _ = circle_points([(0, 0), (0.05, -0.03)], [0.5, 1.5], 500_000, jitter=0.005, seed=0)
X, t = circle_design(xy)
warnings.simplefilter("ignore")
r = pyro_moe.fit("regularized_experts", X, t, experts=2, n_init=1, max_iter=3, tol=0)
print(json.dumps({"N": int(r.X.shape[0]), "iterations": r.iterations,
    "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


@pytest.mark.slow
@pytest.mark.skipif(sys.platform != "linux", reason="ru_maxrss is in KiB on Linux only")
def test_fit_on_a_million_points_stays_below_1_5_gb():
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run(
        [sys.executable, "-c", CHILD], capture_output=True, text=True, check=True, env=env
    ).stdout
    row = json.loads(out.strip().splitlines()[-1])
    assert row["N"] == 10**6 and row["iterations"] == 3
    assert row["peak_mb"] < 1536, row
