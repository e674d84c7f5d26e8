"""Fitting on Dask: the same CAVI iteration with the data held as row chunks on a
``dask.distributed`` cluster.

One CAVI iteration is a sum of per-point sufficient statistics (derivation section 6):
the E-step of a chunk of rows gives its G_k = sum_i r_ik z_i z_i^T (N_k, S_k, s_k and
sum r y^2 at once), sum_i r_ik and sum_i lse_i, and the statistics of the whole data are
their sums. So, as Spark's ``GaussianMixture`` distributes EM:

* on the workers, per chunk: the fused E-step :func:`pyro_moe.closed_form.updates.e_step`
  (the very function the in-memory pass runs over all rows), the initial q(Z)'s
  statistics (:mod:`pyro_moe.closed_form.init`), and the gate's data term and gradient;
* on the client: the sums, reduced in chunk order (so the answer does not depend on which
  worker ran what), the M-step and the objective, in the closed-form sweep itself
  (:func:`pyro_moe.engines.sweep.sweep`, CAVI's and natural SVI's, with every safeguard):
  :class:`DaskSource` implements :class:`pyro_moe.engines.source.DataSource`, the
  distributed twin of :class:`pyro_moe.engines.source.InMemory`, whose one chunk is all
  the data.

q(Z) itself is never shipped: a pass that needs r (the gate's step) recomputes it on each
chunk from the small state of the last E-step (q(W), the log prior's parameters, E beta),
which is what the in-memory pass computed on those rows. A lost worker's chunks are
recomputed by Dask from their graph (their file, or the persisted array's source), so a
fault does not change the answer.

The gate's M-step (:class:`DaskGateFitter`) is :class:`pyro_moe.engines.gate.GateFitter`
with its two data sums, sum_ik r_ik log g_ik and the loss/gradient of the L-BFGS closure,
reduced over the chunks; its subsample presample gathers its rows once.

Data: Dask arrays, ``.npy`` files (read as memory maps, one slice per task), a directory
holding ``X.npy`` and ``y.npy``, or a zarr store (when zarr is installed), via
:func:`open_store`.
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .checks import as_array, check_magnitude
from .closed_form import updates as U
from .closed_form.init import (
    scoring_rows,
    subset_fit,
    subset_precision,
    subset_residuals,
    subset_responsibilities,
)
from .engines.cavi import CAVI
from .engines.gate import GateFitter
from .engines.source import LogPrior, held_out_sums, log_gate_of, target_variance
from .engines.svi import SVI
from .errors import InputError, PyroMoeError, SchedulerError

__all__ = [
    "DaskData", "DaskSource", "Start", "as_dask_data", "connect", "is_distributed", "open_store",
]  # fmt: skip

#: rows per chunk of a store read from disk (1e6 rows of 4 float64: 32 MB per task)
STORE_CHUNK_ROWS = 1_000_000
#: Dask arrays up to this size are persisted on the workers (larger ones, e.g. read from
#: zarr, are recomputed from their graph in every pass)
PERSIST_BYTES = 1 << 30
#: seconds to wait for a scheduler before the one-line SchedulerError
CONNECT_TIMEOUT = 10.0
#: rows of the head the model file is traced on (its sites and prior values)
HEAD_ROWS = 1000
#: the most values the exact median of the subsets init gathers on the client
GATHER = 1 << 20


# ---- connecting ------------------------------------------------------------------------
@contextlib.contextmanager
def connect(scheduler: str | None = None, workers: int | None = None, timeout: float | None = None):
    """The client to compute on: the active ``dask.distributed`` client, a client of
    ``scheduler`` (an address, e.g. ``tcp://host:8786``), or a new ``LocalCluster`` of
    ``workers`` processes (default 2, one thread each), closed afterwards.

    An unreachable scheduler is one :class:`SchedulerError` naming the address."""
    from distributed import Client, get_client

    if scheduler is None and workers is None:
        try:
            active = get_client()
        except ValueError:  # no active client: a LocalCluster below
            active = None
        if active is not None:
            yield active
            return
    if scheduler is not None:
        try:
            client = Client(scheduler, timeout=CONNECT_TIMEOUT if timeout is None else timeout)
        except (OSError, TimeoutError, ValueError) as e:
            raise SchedulerError(
                f"cannot reach the Dask scheduler at {scheduler!r} "
                f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else 'timed out'})"
            ) from None
        try:
            yield client
        finally:
            client.close()
        return
    n = 2 if workers is None else int(workers)
    if n < 1:
        raise InputError(f"workers must be >= 1, got {workers}")
    cluster = local_cluster(n)
    client = Client(cluster)
    try:
        yield client
    finally:
        client.close()
        cluster.close()


def local_cluster(workers: int, memory_limit: str = "2GiB"):
    """A ``LocalCluster`` of ``workers`` processes, one thread each.

    Dask's nanny starts workers with ``MALLOC_TRIM_THRESHOLD_=65536``, which also turns
    off glibc's adaptive mmap threshold: every temporary of the E-step's blocks (a few MB)
    is then a fresh mmap and its page faults; measured 2-3x slower elementwise torch ops
    in a worker than in the client. Both thresholds are raised to 256 MiB here."""
    import dask
    from distributed import LocalCluster

    environ = "distributed.nanny.pre-spawn-environ."
    with dask.config.set({environ + "MALLOC_TRIM_THRESHOLD_": 1 << 28,
                          environ + "MALLOC_MMAP_THRESHOLD_": 1 << 28}):  # fmt: skip
        return LocalCluster(
            n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
            memory_limit=memory_limit,
        )  # fmt: skip


# ---- the data ---------------------------------------------------------------------------
@dataclass(frozen=True)
class NpySlice:
    """Rows start..stop of a ``.npy`` file: a chunk that the task computing on it reads
    itself (through a memory map), so no chunk travels between workers."""

    path: str
    start: int
    stop: int

    def read(self) -> np.ndarray:
        return load_rows(self.path, self.start, self.stop)


def _read(a):
    return a.read() if isinstance(a, NpySlice) else a


def _tensor(a) -> torch.Tensor:
    """A chunk (numpy, memmap slice, tensor, :class:`NpySlice`) as a float64 tensor."""
    a = _read(a)
    if torch.is_tensor(a):
        return a.to(torch.float64)
    return torch.from_numpy(np.array(a, dtype=np.float64, copy=True))


def _pair(x, y) -> tuple[torch.Tensor, torch.Tensor]:
    X, y = _tensor(x), _tensor(y)
    if y.dim() == 2 and y.shape[1] == 1:
        y = y[:, 0]
    return X, y


def load_rows(path: str, start: int, stop: int) -> np.ndarray:
    """Rows start..stop of a ``.npy`` file, read through a memory map (one task's slice)."""
    return np.asarray(np.load(path, mmap_mode="r")[start:stop])


@dataclass
class _Failed:
    """What a guarded task returns instead of raising: its error, raised on the client
    (a task that raises makes the worker log "Compute Failed" and a traceback to stderr)."""

    error: BaseException


def _guarded(fn, rows: tuple[int, int] | None, *args):
    """``fn(*args)`` on a worker, an error returned as :class:`_Failed`: a PyroMoeError as it
    is, a read that failed (OSError: a storage fault) as an InputError naming the rows of the
    chunk, any other error as it is."""
    try:
        return fn(*args)
    except PyroMoeError as e:
        return _Failed(e)
    except OSError as e:
        where = f"rows {rows[0]}..{rows[1]} of " if rows is not None else ""
        return _Failed(InputError(f"cannot read {where}the data: {type(e).__name__}: {e}"))
    except Exception as e:  # raised on the client, with its type
        return _Failed(e)


def guarded_task(fn, rows: tuple[int, int] | None = None, *, pure: bool = False):
    """A delayed ``fn`` whose errors come back to the client (:func:`gather_guarded`) rather
    than through the worker's log; ``rows`` (start, stop): the chunk's rows, for messages."""
    from dask import delayed

    def task(*args):
        return delayed(_guarded, pure=pure)(fn, rows, *args)

    return task


def gather_guarded(client, futures) -> list:
    """The results of guarded tasks; the first error among them (in task order) raised."""
    out = client.gather(futures)
    for r in out:
        if isinstance(r, _Failed):
            raise r.error
    return out


@dataclass
class DaskData:
    """X (N, n) and y (N,) as row chunks: ``parts`` is one (X chunk, y chunk) pair per
    chunk, in row order (dask delayed objects of a persisted array, or :class:`NpySlice`
    of a file), ``sizes`` their rows."""

    parts: list[tuple[Any, Any]]
    sizes: list[int]
    n: int
    keep: Any = None  # the persisted arrays, whose futures hold the chunks on the cluster

    @property
    def N(self) -> int:
        return int(sum(self.sizes))

    @property
    def offsets(self) -> list[int]:
        return [0, *np.cumsum(self.sizes).tolist()]


def is_distributed(X) -> bool:
    """Whether ``X`` is data for the distributed path: a Dask array, a store path
    (``.npy``, a directory of ``X.npy``/``y.npy``, zarr), or :class:`DaskData`."""
    if isinstance(X, DaskData):
        return True
    if isinstance(X, str | os.PathLike):
        return True
    mod = type(X).__module__ or ""
    return mod.startswith("dask.")


def open_store(path: str | os.PathLike, y=None, *, chunk_rows: int = STORE_CHUNK_ROWS):
    """X and y of an on-disk store, lazily, as (X, y) for :func:`as_dask_data`.

    ``path``: a ``.npy`` file of X (with ``y`` another ``.npy`` path), a directory with
    ``X.npy`` and ``y.npy``, or a zarr store with arrays ``X`` and ``y`` (needs zarr).
    ``.npy`` files are memory-mapped by each task, one slice of ``chunk_rows`` rows each."""
    p = Path(path)
    if p.is_dir() and (p / "X.npy").exists():
        return _npy_parts(p / "X.npy", p / "y.npy", chunk_rows)
    if p.suffix == ".npy":
        if y is None:
            raise InputError(f"X is the file {str(p)!r}: give y as a .npy path too")
        return _npy_parts(p, Path(y), chunk_rows)
    if p.suffix == ".zarr" or (p / ".zgroup").exists() or (p / "zarr.json").exists():
        try:
            import dask.array as da
        except ImportError as e:  # pragma: no cover - dask is installed with the extra
            raise InputError("reading a zarr store needs dask: pip install pyro_moe[dask]") from e
        try:
            return da.from_zarr(str(p), component="X"), da.from_zarr(str(p), component="y")
        except (ImportError, ModuleNotFoundError):
            raise InputError("reading a zarr store needs zarr: pip install zarr") from None
    raise InputError(
        f"cannot read the store {str(p)!r}: give a .npy file of X (and y), a directory with "
        "X.npy and y.npy, or a zarr store with arrays X and y"
    )


def _npy_parts(px: Path, py: Path, chunk_rows: int) -> DaskData:
    for p in (px, py):
        if not p.exists():
            raise InputError(f"the store has no file {str(p)!r}")
    try:
        X = np.load(px, mmap_mode="r")
        y = np.load(py, mmap_mode="r")
    except (ValueError, OSError) as e:
        raise InputError(f"cannot read {str(px)!r} / {str(py)!r} as .npy: {e}") from None
    if X.ndim != 2:
        raise InputError(f"X must be a 2-d array (N points x n features), got shape {X.shape}")
    if y.ndim == 2 and y.shape[1] == 1:
        pass
    elif y.ndim != 1:
        raise InputError(f"y must be a 1-d array of N targets, got shape {y.shape}")
    if X.shape[0] != y.shape[0]:
        raise InputError(f"X has {X.shape[0]} rows but y has {y.shape[0]} entries")
    N = X.shape[0]
    parts, sizes = [], []
    for i in range(0, N, chunk_rows):
        j = min(i + chunk_rows, N)
        parts.append((NpySlice(str(px), i, j), NpySlice(str(py), i, j)))
        sizes.append(j - i)
    return DaskData(parts, sizes, X.shape[1])


def as_dask_data(X, y, client) -> DaskData:
    """:class:`DaskData` of Dask arrays (persisted on the cluster up to PERSIST_BYTES), of a
    store path
    (:func:`open_store`), or as given."""
    if isinstance(X, DaskData):
        return X
    if isinstance(X, str | os.PathLike):
        opened = open_store(X, y)
        if isinstance(opened, DaskData):
            return opened
        X, y = opened
    import dask.array as da

    if not isinstance(X, da.Array):
        X = da.asarray(X)
    if y is None:
        raise InputError("y is missing: give the targets (a Dask array or a store)")
    if not isinstance(y, da.Array):
        y = da.asarray(y)
    if X.ndim != 2:
        raise InputError(f"X must be a 2-d array (N points x n features), got shape {X.shape}")
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise InputError(f"y must be a 1-d array of N targets, got shape {y.shape}")
    if X.shape[0] != y.shape[0]:
        raise InputError(f"X has {X.shape[0]} rows but y has {y.shape[0]} entries")
    if X.shape[1] == 0:
        raise InputError("X has no columns (features)")
    X = X.rechunk({1: -1})
    y = y.rechunk((X.chunks[0],))
    if X.nbytes + y.nbytes <= PERSIST_BYTES:  # held on the workers; else read every pass
        X, y = client.persist([X, y])
    xs, ys = X.to_delayed().ravel().tolist(), y.to_delayed().ravel().tolist()
    return DaskData(list(zip(xs, ys, strict=True)), list(X.chunks[0]), X.shape[1], (X, y))


# ---- the passes: per-chunk functions run on the workers --------------------------------
def _summary(x, y, start: int = 0, declared: int | None = None) -> dict:
    """Validate a chunk (:func:`pyro_moe.checks.as_array`, finite, not overflowing, the rows
    its array declares) and return its moments: rows, sum y, sum (y - mean)^2, min y, max y,
    sum x_j^2, sum y^2. ``start``: the chunk's first row in the data (errors name rows
    there)."""
    X = as_array("X", _read(x), finite=False)
    y = as_array("y", _read(y), finite=False)
    if y.dim() == 2 and y.shape[1] == 1:
        y = y[:, 0]
    stop = start + (y.shape[0] if declared is None else declared)
    for name, a in (("X", X), ("y", y)):
        if declared is not None and (a.dim() == 0 or a.shape[0] != declared):
            got = "no rows" if a.dim() == 0 else f"{a.shape[0]} rows"
            raise InputError(
                f"the chunk of rows {start}..{stop} of {name} holds {got}, but its array "
                f"declares {declared}: the Dask array's chunks do not match their data"
            )
        bad = ~torch.isfinite(a)
        if bad.any():
            rows = bad.reshape(a.shape[0], -1).any(-1)
            raise InputError(
                f"{name} has NaN or inf in {int(rows.sum())} row(s) of the chunk of rows "
                f"{start}..{stop}, first at row {start + int(rows.nonzero()[0])}"
            )
    check_magnitude("X", X)
    check_magnitude("y", y)
    if X.dim() != 2 or X.shape[0] != y.shape[0]:
        raise InputError(
            f"the chunk of rows {start}..{stop}: X has shape {tuple(X.shape)} and y "
            f"{tuple(y.shape)}; they must be (rows, n) and (rows,)"
        )
    m = y.mean()
    return {
        "n": y.shape[0],
        "mean": m,
        "m2": (y - m).square().sum(),
        "min": y.min(),
        "max": y.max(),
        "xx": X.square().sum(0),
        "yy": y.square().sum(),
        "xabs": X.abs().amax(0),
        "yabs": y.abs().max(),
    }


def _merge(parts: list[dict]) -> dict:
    """The moments of all chunks, merged in row order (Chan et al.'s pairwise update of the
    mean and the sum of squared deviations)."""
    out = dict(parts[0])
    for p in parts[1:]:
        n, m = out["n"] + p["n"], p["mean"] - out["mean"]
        out["m2"] = out["m2"] + p["m2"] + m * m * out["n"] * p["n"] / n
        out["mean"] = out["mean"] + m * p["n"] / n
        out["n"] = n
        out["min"], out["max"] = (
            torch.minimum(out["min"], p["min"]),
            torch.maximum(out["max"], p["max"]),
        )
        out["xx"], out["yy"] = out["xx"] + p["xx"], out["yy"] + p["yy"]
        out["xabs"] = torch.maximum(out["xabs"], p["xabs"])
        out["yabs"] = torch.maximum(out["yabs"], p["yabs"])
    return out


def _pair_chunk(x, y) -> tuple[torch.Tensor, torch.Tensor]:
    return _pair(x, y)


def _rows(x, y, idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    X, y = _pair(x, y)
    i = torch.from_numpy(idx)
    return X[i], y[i]


@dataclass
class GateAt:
    """The gate at given parameters (a detached copy): the distributed handle of its log
    softmax, computed on each chunk where it is needed."""

    gate: torch.nn.Module

    def log_softmax(self, X: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return torch.log_softmax(self.gate(X.to(next(self.gate.parameters()).dtype)), -1).to(
                X.dtype
            )


def _log_prior(X: torch.Tensor, spec) -> torch.Tensor:
    """The E-step's log prior (rows, C) on a chunk: a mixture's row, or the gate's."""
    kind, *args = spec
    if kind == "row":
        (row,) = args
        return row.expand(X.shape[0], row.shape[-1])
    gate, rho = args
    return log_gate_of(gate.log_softmax(X), rho)


def _log_r(X: torch.Tensor, y: torch.Tensor, state) -> torch.Tensor:
    """log q(Z) (rows, C) of a chunk under the state that made it: the last E-step, or the
    initialisation (what the in-memory pass computed on these rows)."""
    kind, *a = state
    if kind == "e":
        q, spec, e_log_beta, e_beta, noise, maps = a
        return U.e_step(X, y, q, _log_prior(X, spec), e_log_beta, e_beta, noise, maps=maps).log_r
    if kind == "prior":
        q, spec, e_log_beta, e_beta, noise, maps = a
        e = U.expected_sq_residuals(X, y, q, maps)
        return U.responsibilities(_log_prior(X, spec), e, e_log_beta, e_beta, noise)
    W, beta0, C, noise, maps = a  # "subsets"
    return subset_responsibilities(subset_residuals(X, y, W, maps), beta0, C, noise)


def _initial_stats(x, y, state, K: int, maps):
    X, y = _pair(x, y)
    r = _log_r(X, y, state).exp()
    stats = U.sufficient_stats(X, y, r[:, :K], maps)
    return (stats.Nk, stats.S, stats.s, stats.yy), r.sum(0)


def _e_step(x, y, q, spec, e_log_beta, e_beta, noise, maps):
    X, y = _pair(x, y)
    est = U.e_step(X, y, q, _log_prior(X, spec), e_log_beta, e_beta, noise, maps=maps)
    st = est.stats
    return (st.Nk, st.S, st.s, st.yy), est.r_sum, est.lse


def _log_r_chunk(x, y, state) -> torch.Tensor:
    X, y = _pair(x, y)
    return _log_r(X, y, state)


def _min_sq(x, y, W, maps) -> torch.Tensor:
    X, y = _pair(x, y)
    return subset_residuals(X, y, W, maps).min(-1).values


def _bucket_counts(x, y, W, maps, edges: torch.Tensor) -> torch.Tensor:
    """Counts of min_k res_ik^2 in the buckets (-inf, e_0), [e_0, e_1), ..., [e_m-1, inf)."""
    v = _min_sq(x, y, W, maps)
    return torch.bincount(torch.bucketize(v, edges, right=True), minlength=len(edges) + 1)


def _bucket_values(x, y, W, maps, lo: float, hi: float) -> torch.Tensor:
    v = _min_sq(x, y, W, maps)
    return v[(v >= lo) & (v < hi)]


def _gate_expected(x, y, state, K: int, gate: GateAt) -> torch.Tensor:
    """sum_ik r_ik log g_ik of a chunk."""
    X, y = _pair(x, y)
    r = _log_r(X, y, state)[:, :K].exp()
    return (r * gate.log_softmax(X)).sum()


def _gate_loss(x, y, state, K: int, work: torch.nn.Module, N: int, rows: int):
    """-(1/N) sum_ik r_ik log g_ik(V) of a chunk and its gradient in the working
    parameters (summed over the fitter's row blocks, as in memory)."""
    X, y = _pair(x, y)
    # a copy per task: on a thread-based cluster every chunk's task gets the same object, and
    # their backward passes would race on its .grad
    work = copy.deepcopy(work)
    params = [p for p in work.parameters() if p.requires_grad]
    for p in params:
        p.grad = None
    dtype = params[0].dtype
    r = _log_r(X, y, state)[:, :K].exp().to(dtype)
    Xw = X.to(dtype)
    total = X.new_zeros(())
    for sl in U.chunks(X.shape[0], rows):
        loss = -(r[sl] * torch.log_softmax(work(Xw[sl]), -1)).sum() / N
        loss.backward()
        total += loss.detach().to(total.dtype)
    return total, [p.grad for p in params]


def _gate_terms(x, y, state, K: int, layers, theta: torch.Tensor, rows: int, curvature: bool):
    """The gate's Gauss-Newton terms of a chunk (:meth:`pyro_moe.engines.gate.GateLayers.terms`:
    sum r log g, its gradient and curvature in θ), r recomputed from the E-step state."""
    X, y = _pair(x, y)
    r = _log_r(X, y, state)[:, :K].exp()
    out = X.new_empty(X.shape[0], K)
    return layers.terms(X, r.T.contiguous(), theta, rows, out, curvature)


def _held_out(x, y, groups, q, lp: LogPrior, e_log_beta, e_beta, noise, maps) -> torch.Tensor:
    """The stop rule's per-group data terms (G,) over the subsample rows of a chunk
    (:func:`pyro_moe.engines.source.held_out_sums`, the in-memory function)."""
    X, y = _pair(x, y)
    return held_out_sums(X, y, groups, q, lp, e_log_beta, e_beta, noise, maps)


@dataclass
class Start:
    """A start from given globals, for distributed data: the initial q(Z) is one E-step
    (:func:`pyro_moe.closed_form.updates.e_step`) on each chunk from q(W), the log prior
    (:class:`~pyro_moe.engines.source.LogPrior`: the mixing weights' E[log pi] or the
    gate) and E[beta], E[log beta], e.g. those of a fit to a subsample
    (:meth:`from_result`). q(Z) itself is never formed on the client.
    :meth:`log_responsibilities` is the same E-step on rows in memory."""

    q: U.WeightPosterior
    log_prior: LogPrior
    e_beta: torch.Tensor
    e_log_beta: torch.Tensor

    @classmethod
    def from_result(cls, result) -> Start:
        """The globals of a closed-form :class:`~pyro_moe.result.FitResult`: q(W) = N(m_k,
        B_k), E[log pi_k] = psi(alpha_k) - psi(sum alpha) (a mixture; with a noise expert
        its share log rho last) or the fitted gate, and the point estimate of beta or E of
        q(beta) (its log for E[log beta], or psi(a) - log b)."""
        post, hyper = result.posterior, result.hyper
        cov = post.cov.to(torch.float64)
        q = U.WeightPosterior(post.mean.to(torch.float64), cov,
                              U.cholesky_logdet(torch.linalg.cholesky(cov)))  # fmt: skip
        if result.gate is not None:
            lp = LogPrior(gate=copy.deepcopy(result.gate), share=hyper.noise_weight)
        else:
            lp = LogPrior(row=U.dirichlet_expected_log(post.alpha).unsqueeze(0))
        if post.noise_shape is not None:
            a, b = post.noise_shape, post.noise_rate
            e_beta, e_log_beta = U.gamma_moments(a, b)
        else:
            e_beta = hyper.noise_precision
            e_log_beta = torch.log(e_beta)
        return cls(q, lp, e_beta, e_log_beta)

    def log_responsibilities(self, X, y, noise_log_density=None, maps=None) -> torch.Tensor:
        """log q(Z) (N, C) of rows X, y in memory: the E-step a distributed fit from this
        start takes on each chunk."""
        return U.e_step(X, y, self.q, self.log_prior(X), self.e_log_beta, self.e_beta,
                        noise_log_density, maps=maps).log_r  # fmt: skip


# ---- the source: DaskSource is source.InMemory's distributed twin --------------------------
@dataclass
class _EStep:
    stats: U.Stats
    r_sum: torch.Tensor
    lse: torch.Tensor


def _stats(Nk, S, s, yy) -> U.Stats:
    return U.Stats(Nk=Nk, S=S, s=s, yy=yy)


class DaskSource:
    """The passes of one CAVI iteration over :class:`DaskData` on ``client``: each pass is
    one task per chunk (the per-chunk functions above), its small results summed here in
    chunk order. It implements :class:`pyro_moe.engines.source.DataSource`, as
    :class:`~pyro_moe.engines.source.InMemory` does in memory.

    It is natural SVI's source as well: a minibatch's rows are gathered from the chunks that hold them (:meth:`batch`), and the
    stop rule's subsample is evaluated on the workers (:meth:`held_out`).

    ``start``: a :class:`Start`; every restart's initial q(Z) is then its E-step."""

    def __init__(self, data: DaskData, client, summary: dict, head: tuple, collect: bool,
                 start: Start | None = None):  # fmt: skip
        self.data, self.client, self.summary = data, client, summary
        self.N = data.N
        self.head = head
        self.collect = collect
        self.start = start
        self.state = None  # what made the present q(Z): recomputed where r is needed
        self.passes = 0

    # -- mapping over the chunks
    def map(self, fn, *args) -> list:
        """``fn(x, y, *args)`` on every chunk, on the workers; the results in chunk order."""
        off = self.data.offsets
        # the state differs every pass: no hashing of it (pure=False)
        futures = self.client.compute([
            guarded_task(fn, (off[c], off[c + 1]))(x, y, *args)
            for c, (x, y) in enumerate(self.data.parts)
        ])  # fmt: skip
        self.passes += 1
        return gather_guarded(self.client, futures)

    def summary_pass(self) -> list[dict]:
        """:func:`_summary` of every chunk (each checked against its declared rows)."""
        off = self.data.offsets
        futures = self.client.compute([
            guarded_task(_summary, (off[c], off[c + 1]))(x, y, off[c], self.data.sizes[c])
            for c, (x, y) in enumerate(self.data.parts)
        ])  # fmt: skip
        self.passes += 1
        return gather_guarded(self.client, futures)

    def target_variance(self) -> float:
        s = self.summary
        var = float(s["m2"] / (s["n"] - 1)) if s["n"] > 1 else 0.0
        return target_variance(var, float(s["yy"] / s["n"]))

    def rows(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """X[idx], y[idx] (in the order of ``idx``), gathered from the chunks that hold them."""
        return self._collect(self._submit(idx))

    def _submit(self, idx: torch.Tensor):
        """The tasks that send X[idx], y[idx]: one per chunk holding some of the rows."""
        idx = idx.cpu().numpy()
        off = np.asarray(self.data.offsets)
        chunk = np.searchsorted(off, idx, side="right") - 1
        jobs, where = [], []
        for c in np.unique(chunk):
            sel = np.nonzero(chunk == c)[0]
            x, y = self.data.parts[c]
            rows = (int(off[c]), int(off[c + 1]))
            jobs.append(guarded_task(_rows, rows, pure=True)(x, y, idx[sel] - off[c]))
            where.append(sel)
        return len(idx), where, self.client.compute(jobs)

    def _collect(self, submitted) -> tuple[torch.Tensor, torch.Tensor]:
        n, where, futures = submitted
        out_X = torch.empty(n, self.data.n, dtype=torch.float64)
        out_y = torch.empty(n, dtype=torch.float64)
        for sel, (Xr, yr) in zip(where, gather_guarded(self.client, futures), strict=True):
            out_X[torch.from_numpy(sel)] = Xr
            out_y[torch.from_numpy(sel)] = yr
        return out_X, out_y

    # -- natural SVI's passes (minibatches, the stop rule's subsample)
    def full_log_prior(self, lp: LogPrior):
        """The E-step's log prior of every chunk, as :meth:`e_step` takes it: the mixture's
        row, or the gate at its present parameters (a detached copy, :class:`GateAt`)."""
        return self.log_prior(lp.row, None if lp.gate is None else GateAt(copy.deepcopy(lp.gate)),
                              lp.share)  # fmt: skip

    def batch(self, rows: torch.Tensor, upcoming: torch.Tensor | None = None):
        """A minibatch X[rows], y[rows]: one task per chunk holding some of the rows, which
        sends back only those rows (:meth:`rows`). The ``upcoming`` batch's tasks are
        submitted before this one returns, so its rows travel while the client takes the
        step on these (one batch in flight)."""
        pending = getattr(self, "_pending", None)
        if pending is not None and pending[0] is rows:
            submitted = pending[1]
        else:
            submitted = self._submit(rows)
        self._pending = (upcoming, self._submit(upcoming)) if upcoming is not None else None
        return self._collect(submitted)

    def all_rows(self, K: int) -> None:
        """None: all rows are never gathered (natural SVI's first Adam step of the gate
        waits for the first minibatch)."""
        return None

    def held_out(self, groups, q, lp: LogPrior, e_log_beta, e_beta, noise, maps) -> torch.Tensor:
        """The stop rule's per-group sums of lse_i (G,) over the evaluation subsample
        (``groups``: global row indices), each chunk summing the rows it holds on its
        worker, the chunks' sums added in chunk order."""
        off = self.data.offsets
        lp = LogPrior(lp.row, copy.deepcopy(lp.gate), lp.share)  # the gate as it is now
        jobs = []
        for c, (x, y) in enumerate(self.data.parts):
            local = [g[(g >= off[c]) & (g < off[c + 1])] - off[c] for g in groups]
            if any(t.numel() for t in local):
                jobs.append(guarded_task(_held_out, (off[c], off[c + 1]))(
                    x, y, local, q, lp, e_log_beta, e_beta, noise, maps))  # fmt: skip
        self.passes += 1
        return sum(gather_guarded(self.client, self.client.compute(jobs)))

    # -- the gate
    def gate_fitter(
        self, gate, steps, dtype, warm, tolerance, prior_scale, method=None
    ) -> DaskGateFitter:
        return DaskGateFitter(self, gate, steps, dtype, warm, tolerance, prior_scale, method)

    def gate_layout(self, log_softmax):
        return log_softmax

    def log_prior(self, row, gate_log_softmax, rho):
        if row is not None:
            return ("row", row)
        return ("gate", gate_log_softmax, rho)

    def gate_responsibilities(self, K: int):
        return self.state

    # -- q(Z)
    def initial(self, how: str, K: int, seed: int, *, prior, log_prior, e_beta, e_log_beta,
                given, noise_log_density, maps):  # fmt: skip
        if how in ("random", "given"):
            raise InputError(
                f"init={how!r} is not available for distributed data (its draws or values "
                "cover all N rows at once); use init='subsets' or 'prior'"
            )
        noise = noise_log_density
        C = K + int(noise is not None)
        if self.start is not None:  # one E-step from the given globals, on each chunk
            st = self.start
            spec = self.full_log_prior(st.log_prior)
            self.state = ("e", st.q, spec, st.e_log_beta, st.e_beta, noise, maps)
        elif how == "prior":
            self.state = ("prior", prior, log_prior, e_log_beta, e_beta, noise, maps)
        elif how == "subsets":
            gen = torch.Generator(device="cpu").manual_seed(int(seed))
            Xr, yr = self.rows(scoring_rows(self.N, gen))
            W = subset_fit(Xr, yr, K, gen, maps)
            median = self._median_min_sq(W, maps, subset_residuals(Xr, yr, W, maps).min(-1).values)
            beta0 = subset_precision(median, self.target_variance_raw())
            self.state = ("subsets", W, beta0, C, noise, maps)
        else:
            raise InputError(
                f"unknown init {how!r}; use 'prior', 'subsets', 'random' or given responsibilities"
            )
        parts = self.map(_initial_stats, self.state, K, maps)
        stats = _stats(*(sum(p[0][i] for p in parts) for i in range(4)))
        return stats, sum(p[1] for p in parts)

    def target_variance_raw(self) -> float:
        """Var(y) as ``y.var()`` gives it (0 for one point)."""
        s = self.summary
        return float(s["m2"] / (s["n"] - 1)) if s["n"] > 1 else 0.0

    def rows_all(self) -> tuple[torch.Tensor, torch.Tensor]:
        """All of X and y, gathered (the result of a fit small enough to collect)."""
        parts = self.map(_pair_chunk)
        return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])

    def _median_min_sq(self, W, maps, sample: torch.Tensor) -> torch.Tensor:
        """The lower median of v_i = min_k res_ik^2 over all N rows (what
        ``torch.median`` returns in memory), exactly: the values are counted in buckets
        between the sample's values, and only the bucket holding the median is gathered."""
        k = (self.N - 1) // 2  # 0-based rank of the lower median
        if self.N <= GATHER:
            v = torch.cat(self.map(_min_sq, W, maps))
            return v.kthvalue(k + 1).values
        lo, hi = -math.inf, math.inf
        edges = torch.unique(sample)
        for _ in range(8):
            counts = sum(self.map(_bucket_counts, W, maps, edges))
            cum = torch.cumsum(counts, 0)
            j = int(torch.searchsorted(cum, torch.tensor(k), right=True))
            below = int(cum[j - 1]) if j > 0 else 0
            lo = float(edges[j - 1]) if j > 0 else lo
            hi = float(edges[j]) if j < len(edges) else hi
            if int(counts[j]) <= GATHER:
                v = torch.cat(self.map(_bucket_values, W, maps, lo, hi))
                return v.kthvalue(k - below + 1).values
            if lo == -math.inf or hi == math.inf or not hi > lo:
                break
            edges = torch.linspace(lo, hi, 4097, dtype=torch.float64)
        v = torch.cat(self.map(_bucket_values, W, maps, lo, hi))  # many ties: gather them
        return v.kthvalue(k - below + 1).values

    def e_step(self, q, log_prior, e_log_beta, e_beta, noise, maps) -> _EStep:
        parts = self.map(_e_step, q, log_prior, e_log_beta, e_beta, noise, maps)
        self.state = ("e", q, log_prior, e_log_beta, e_beta, noise, maps)
        stats = _stats(*(sum(p[0][i] for p in parts) for i in range(4)))
        return _EStep(stats, sum(p[1] for p in parts), sum(p[2] for p in parts))

    def log_responsibilities(self) -> torch.Tensor:
        """log q(Z) (N, C) gathered from the chunks, or (0, C) when not collected."""
        C = self._components()
        if not self.collect:
            return torch.empty(0, C, dtype=torch.float64)
        return torch.cat(self.map(_log_r_chunk, self.state))

    def _components(self) -> int:
        kind, *a = self.state
        if kind == "subsets":
            return int(a[2])
        spec = a[1]
        if spec[0] == "row":
            return spec[1].shape[-1]
        return len(a[0].mean) + int(spec[2] is not None)


class DaskGateFitter(GateFitter):
    """:class:`GateFitter` over :class:`DaskData`: its data sums (sum r log g, the
    Gauss-Newton terms, the L-BFGS closure's loss and gradient) reduced over the chunks; r is the source's last E-step
    state, a log softmax is a :class:`GateAt`; the presample's rows are gathered once."""

    def __init__(
        self, source: DaskSource, gate, steps, dtype, warm, tolerance, prior_scale, method=None
    ):
        super().__init__(gate, source.head[0], steps, dtype, warm, tolerance, prior_scale,
                         N=source.N, method=method)  # fmt: skip
        self.source = source
        self.known = None  # the closure's loss and gradient: autograd on the workers
        self.K = None
        self._sample_rows = source.rows(self.sample) if self.sample is not None else None

    def log_softmax(self) -> GateAt:
        return GateAt(copy.deepcopy(self.gate))

    def expected(self, r, log_g) -> torch.Tensor:
        K = self._experts(log_g)
        return sum(self.source.map(_gate_expected, r, K, log_g))

    def _experts(self, log_g: GateAt) -> int:
        if self.K is None:
            self.K = int(log_g.log_softmax(self.source.head[0][:1]).shape[-1])
        return self.K

    def sample_rows(self, r):
        Xs, ys = self._sample_rows
        rs = _log_r(Xs, ys, r)[:, : self._experts(GateAt(self.gate))].exp()
        return Xs.to(self.Xw.dtype), rs.to(self.Xw.dtype)

    def _newton_start(self, r):
        return r, None, None  # r is the E-step state; log g stays on the workers

    def _newton_terms(self, r, theta, curvature: bool, out):
        assert self.layers is not None
        K = self.layers.shapes[0][0]
        parts = self.source.map(_gate_terms, r, K, self.layers, theta, self.newton_rows,
                                curvature)  # fmt: skip
        D, grad, C = (sum(p[i] for p in parts) if parts[0][i] is not None else None
                      for i in range(3))  # fmt: skip
        return D, grad, C

    def _data_loss(self, r, total: torch.Tensor) -> torch.Tensor:
        K = self._experts(GateAt(self.gate))
        work = copy.deepcopy(self.work)
        parts = self.source.map(_gate_loss, r, K, work, self.N, self.rows)
        with torch.no_grad():
            for p, *grads in zip(self.wparams, *(g for _, g in parts), strict=True):
                g = sum(grads)
                p.grad = g if p.grad is None else p.grad + g
        for loss, _ in parts:
            total += loss.to(total.dtype)
        self._cached = None
        return total


# ---- the engine and the entry point -----------------------------------------------------
class OnDask:
    """An engine whose passes run on a Dask cluster (:class:`DaskSource`): the model file is
    traced on the data's first rows (its sites and prior values do not depend on N)."""

    def __init__(self, model, X, y, config, options, source: DaskSource):
        super().__init__(model, X, y, config, options)
        self._source = source

    def source(self) -> DaskSource:
        return self._source

    def show_progress(self) -> bool:
        import sys

        return sys.stderr.isatty()


class DaskCAVI(OnDask, CAVI):
    """CAVI whose passes run on a Dask cluster (:class:`DaskSource`)."""


class DaskSVI(OnDask, SVI):
    """Natural-gradient SVI (:func:`pyro_moe.engines.sweep.sweep`) whose passes run
    on a Dask cluster (:class:`DaskSource`): the full batch is CAVI's iteration on the
    chunks; a minibatch's rows are gathered from the chunks that hold them. The options are
    checked against all N points."""

    def points(self) -> int:
        return self._source.N

    def prepare(self) -> None:
        super().prepare()
        if self.conj is None:
            raise InputError(
                "this model file has a site without a natural-gradient step (it needs "
                "optimizer='adam'), and optimizer='adam' does not run on distributed data"
            )

    def monte_carlo_check(self, run, seed: int) -> None:
        run.summary["pyro_objective"] = None  # Pyro's Monte Carlo check reads X in memory


def fit_on_dask(
    engine,
    options,
    model,
    X,
    y,
    experts: int,
    hyper: dict,
    *,
    weight_scale_of=None,
    scheduler: str | None = None,
    workers: int | None = None,
    collect: bool | None = None,
    start: Start | None = None,
):
    """:func:`pyro_moe.fit` of distributed data (Dask arrays, a store): the moments of the
    data that the defaults need (Var y, the target range, rms of each column) in one pass,
    the model file traced on the first rows, then CAVI (``method="cavi"``) or natural-
    gradient SVI (``method="svi"``) with :class:`DaskSource`.

    ``collect``: gather X, y and q(Z) into the result (default: when they take at most
    COLLECT_BYTES); otherwise the result's X, y and responsibilities have no rows.
    ``start``: a :class:`Start`, the initial q(Z) of the (one) restart.
    """
    from .checks import check_count
    from .model_file import noise_bounds

    if engine.name not in ("cavi", "svi"):
        raise InputError(
            f"method={engine.name!r} does not run on distributed data; use method='cavi' or 'svi'"
        )
    if engine.name == "svi" and options.optimizer != "natural":
        raise InputError(
            "optimizer='adam' does not run on distributed data (Pyro's SVI step reads X and "
            "y in memory); use optimizer='natural', the default"
        )
    if isinstance(X, str | os.PathLike):  # a bad path fails before any cluster starts
        opened = open_store(X, y)
        X, y = (opened, None) if isinstance(opened, DaskData) else opened
    with connect(scheduler, workers) as client:
        data = as_dask_data(X, y, client)
        if data.N == 0:
            raise InputError("no data: X and y are empty")
        if data.n == 0:
            raise InputError("X has no columns (features)")
        parts = DaskSource(data, client, {}, (None, None), False).summary_pass()
        summary = _merge(parts)
        N = data.N
        experts = check_count("experts", experts, 1)
        if experts > N:
            raise InputError(f"experts = {experts} is more than the number of points ({N})")
        src = DaskSource(data, client, summary, (None, None), False)
        head = src.rows(torch.arange(min(N, HEAD_ROWS)))
        var = src.target_variance_raw()
        hyper = dict(hyper)
        if hyper.get("noise_precision") is None:
            hyper["noise_precision"] = 1.0 / target_variance(var, float(summary["yy"] / N))
        if hyper.get("noise_range") is None:
            hyper["noise_range"] = noise_bounds(torch.stack([summary["min"], summary["max"]]))
        ws = None
        if weight_scale_of is not None:  # the data's units of the weights (fitting.weight_scale)
            # a sum of squares that underflowed to 0 (values below ~1e-154): the largest
            # magnitude stands in for the rms, so the scale is refused, not taken as 1
            rms_x = torch.where(summary["xx"] > 0, (summary["xx"] / N).sqrt(), summary["xabs"])
            rms_y = (summary["yy"] / N).sqrt() if summary["yy"] > 0 else summary["yabs"]
            ws = weight_scale_of(rms_x, rms_y)
        config = model.config(head[0], head[1], int(experts), seed=options.seed,
                              weight_scale=ws, input_rms=(summary["xx"] / N).sqrt(),
                              **hyper)  # fmt: skip
        if config.noise_bounds is not None:
            lo, hi = (float(b) for b in config.noise_bounds)
            if float(summary["min"]) < lo or float(summary["max"]) > hi:
                raise InputError(
                    f"noise_range ({lo:.6g}, {hi:.6g}) does not hold every target (from "
                    f"{float(summary['min']):.6g} to {float(summary['max']):.6g})"
                )
        width = data.n + 1 + config.components
        collect = N * width * 8 <= COLLECT_BYTES if collect is None else bool(collect)
        src = DaskSource(data, client, summary, head, collect, start)
        engine_type = DaskCAVI if engine.name == "cavi" else DaskSVI
        result = engine_type(model, head[0], head[1], config, options, src).fit()
        if collect:
            Xa, ya = src.rows_all()
        else:
            Xa, ya = head[0][:0], head[1][:0]
        result.X, result.y = Xa, ya
        result.restarts = [dict(r, passes=src.passes) for r in result.restarts]
        return result


#: the most bytes of X, y and q(Z) a distributed fit gathers into its result by default
COLLECT_BYTES = 1 << 30
