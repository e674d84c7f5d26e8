"""Fused kernels for the E-step (issue #31): does compiling it pay, and where?

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/fused_estep.py [--sizes 100 1000 100000 1000000]
        [--experts 2 8]

One E-step of the mixture of models with a noise component (K Gaussian experts, n = 3,
C = K + 1), in this thread's CPU time (``time.thread_time``), best of 3 rounds:

* ``engine``: :func:`pyro_moe.closed_form.updates.e_step`, what every CAVI iteration runs
  (chunked over rows from :data:`~pyro_moe.closed_form.updates.CHUNK_ELEMENTS` elements,
  in-place buffers, the triangle products kept where the rows make one chunk);
* ``minimal eager``: the same arithmetic in the fewest torch calls (residuals, e, logits,
  log-sum-exp, responsibilities and the statistics G = zz r^T; ``calls``, counted by a
  ``TorchFunctionMode`` as ``benchmarks/speed.py`` counts them, slicing included), no chunks;
* ``torch.compile``: that function compiled by TorchInductor (C++ on the CPU,
  ``dynamic=False``), with its first call's compile time;
* ``dispatch floor``: the minimal function's torch calls at the cost of one tiny call
  (``a + b`` on 2-element tensors) -- what it costs if its arithmetic were free.

Writes ``benchmarks/results/fused_estep.{json,md}``. The engine's full iteration (E-step,
M-step, objective) is timed by ``benchmarks/speed.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from run import machine  # noqa: E402

from pyro_moe.closed_form import updates as U  # noqa: E402


def minimal(z, zz, a, Qv, hb, const, lp, noise):
    """log r (C, N), sum_i lse_i, G (T, K), r summed (C,): e = Qv zz + (a z)^2 and the
    logits lp - hb e + const for the K experts, lp + noise for the last component."""
    resid = a @ z
    e = Qv @ zz + resid * resid
    logits = torch.cat([lp[:-1] - hb * e + const, (lp[-1:] + noise).expand(1, z.shape[1])])
    top = logits.amax(0, keepdim=True)
    p = torch.exp(logits - top)
    tot = p.sum(0, keepdim=True)
    log_tot = tot.log()
    r = p / tot
    return logits - top - log_tot, (top + log_tot).sum(), zz @ r[:-1].T, r.sum(1)


def problem(N: int, K: int, n: int = 3):
    """Random data, q(W) and prior for one E-step, as the engine and minimal() take them."""
    g = torch.Generator().manual_seed(0)
    f64 = dict(dtype=torch.float64)
    X = torch.randn(N, n, generator=g, **f64)
    y = torch.randn(N, generator=g, **f64)
    L = 0.05 * torch.randn(K, n, n, generator=g, **f64).tril()
    cov = L @ L.transpose(-1, -2) + 1e-3 * torch.eye(n, **f64)
    q = U.WeightPosterior(torch.randn(K, n, generator=g, **f64), cov, torch.logdet(cov))
    C = K + 1
    row = torch.log(torch.full((1, C), 1.0 / C, **f64))
    e_beta = torch.rand(K, generator=g, **f64) + 0.5
    e_log_beta = torch.log(e_beta)
    noise = torch.tensor(-3.0, **f64)
    engine_args = (X, y, q, row.expand(N, C), e_log_beta, e_beta, noise)
    d = n + 1
    I, J, _coef, _full, P = U._triangle(d, X.device, X.dtype)
    z = torch.cat([X.T, y.unsqueeze(0)], 0)
    zz = z[I] * z[J]
    a = U.residual_map(q.mean)
    Qv = q.cov.reshape(K, -1) @ P
    hb = (0.5 * e_beta).reshape(K, 1)
    const = (0.5 * e_log_beta - 0.5 * U.LOG_2PI).reshape(K, 1)
    return engine_args, (z, zz, a, Qv, hb, const, row.T.contiguous(), noise)


def best_cpu(fn, reps: int, rounds: int = 3) -> float:
    fn()
    fn()
    best = float("inf")
    for _ in range(rounds):
        t = time.thread_time()
        for _ in range(reps):
            fn()
        best = min(best, (time.thread_time() - t) / reps)
    return best


def count_calls(fn) -> int:
    from torch.overrides import TorchFunctionMode

    n = 0

    class Count(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            nonlocal n
            if getattr(func, "__name__", "") != "__get__":  # attribute reads
                n += 1
            return func(*args, **(kwargs or {}))

    with Count():
        fn()
    return n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[100, 1000, 100_000, 1_000_000])
    ap.add_argument("--experts", type=int, nargs="+", default=[2, 8])
    args = ap.parse_args()
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    a2 = torch.ones(2, dtype=torch.float64)
    tiny = best_cpu(lambda: a2 + a2, 20_000)
    compiled = torch.compile(minimal, dynamic=False)
    rows = []
    for K in args.experts:
        for N in args.sizes:
            eng, mini = problem(N, K)
            calls = count_calls(lambda mini=mini: minimal(*mini))
            reps = max(3, int(3e5 // N))
            t0 = time.perf_counter()
            compiled(*mini)
            compile_s = time.perf_counter() - t0
            ref, got = U.e_step(*eng), compiled(*mini)
            # the same E-step: its log-sum-exp and the responsibilities' sums agree
            same = abs(float(ref.lse) - float(got[1])) <= 1e-9 * abs(float(ref.lse)) and bool(
                torch.allclose(ref.r_sum, got[3], rtol=1e-9, atol=0.0)
            )
            rows.append(
                {
                    "K": K,
                    "N": N,
                    "engine_us": 1e6 * best_cpu(lambda eng=eng: U.e_step(*eng), reps),
                    "minimal_eager_us": 1e6 * best_cpu(lambda mini=mini: minimal(*mini), reps),
                    "compiled_us": 1e6 * best_cpu(lambda mini=mini: compiled(*mini), reps),
                    "compile_first_call_s": compile_s,
                    "calls": calls,
                    "dispatch_floor_us": 1e6 * tiny * calls,
                    "agrees": same,
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    meta = {**machine(), "tiny_call_us": 1e6 * tiny, "load": os.getloadavg()}
    out = HERE / "results"
    (out / "fused_estep.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    keys = list(rows[0])
    lines = [
        "# Fused kernels for the E-step (issue #31)",
        "",
        f"`benchmarks/fused_estep.py`; {meta['machine']}, Python {meta['python']}, "
        f"torch {meta['torch']}, one thread, this thread's CPU time, best of 3; one tiny "
        f"torch call {meta['tiny_call_us']:.2f} us; load average "
        f"{meta['load'][0]:.1f} on 2 cores.",
        "",
        "| " + " | ".join(keys) + " |",
        "|" + "---|" * len(keys),
    ]
    for r in rows:
        cells = [f"{v:.4g}" if isinstance(v, float) else str(v) for v in r.values()]
        lines.append("| " + " | ".join(cells) + " |")
    (out / "fused_estep.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
