"""pyro_moe.distributed: CAVI on Dask gives the in-memory fit's objective, survives a lost
worker, and refuses what it cannot do by name."""

from __future__ import annotations

import json
import os
import signal
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import pyro_moe
from pyro_moe import distributed as D
from pyro_moe.errors import ConvergenceWarning, InputError

da = pytest.importorskip("dask.array")
distributed = pytest.importorskip("distributed")

RTOL = 1e-10


def two_lines(N: int, seed: int = 0, outliers: float = 0.0):
    """X = [x1, x2, 1], y from one of two planes (noise 0.3), a share of outliers."""
    g = np.random.default_rng(seed)
    X = np.c_[g.normal(size=(N, 2)), np.ones(N)]
    W = np.array([[1.0, -2.0, 0.5], [-1.5, 0.5, 3.0]])
    z = (X[:, 0] > 0).astype(int) if seed % 2 else g.integers(0, 2, N)
    y = (X * W[z]).sum(1) + 0.3 * g.normal(size=N)
    bad = g.random(N) < outliers
    y[bad] = g.uniform(-10, 10, bad.sum())
    return X, y


def chunked(X, y, rows):
    return da.from_array(X, chunks=(rows, X.shape[1])), da.from_array(y, chunks=rows)


def same(a, b, lengths: bool = True):
    """The same objective history to RTOL (the same final objective, when a fit that reached
    its fixed point a step earlier or later may differ in length)."""
    ha, hb = a.objective_history, b.objective_history
    if lengths:
        assert len(ha) == len(hb)
    m = min(len(ha), len(hb))
    rel = ((ha[:m] - hb[:m]).abs() / hb[:m].abs()).max().item()
    assert rel < RTOL, rel
    assert abs(ha[-1] - hb[-1]) / abs(hb[-1]) < RTOL


def quiet_fit(*args, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return pyro_moe.fit(*args, **kw)


@pytest.mark.slow
def test_mixture_of_models_on_dask_matches_in_memory(client):
    X, y = two_lines(100_000)
    kw = dict(experts=2, n_init=1, max_iter=10)
    mem = quiet_fit("mixture_of_models", X, y, **kw)
    dk = quiet_fit("mixture_of_models", *chunked(X, y, 50_000), **kw)
    same(dk, mem)
    assert torch.allclose(dk.mean, mem.mean, rtol=1e-8, atol=1e-10)
    # small enough: X, y and q(Z) are gathered into the result, in row order
    assert torch.equal(dk.X, mem.X)
    assert torch.allclose(dk.responsibilities, mem.responsibilities, atol=1e-10)


@pytest.mark.slow
def test_gated_model_on_dask_matches_in_memory(client):
    # 1e5 points: the gate's warm L-BFGS and its subsample presample both run
    X, y = two_lines(100_000, seed=1)
    kw = dict(experts=2, n_init=1, max_iter=3, tol=0.0)
    mem = quiet_fit("mixture_of_experts", X, y, **kw)
    dk = quiet_fit("mixture_of_experts", *chunked(X, y, 50_000), **kw)
    same(dk, mem)
    for a, b in zip(dk.gate.parameters(), mem.gate.parameters(), strict=True):
        assert torch.allclose(a, b, rtol=1e-6, atol=1e-8)


def test_npy_store_and_noise_expert_match_in_memory(client, tmp_path):
    X, y = two_lines(6000, seed=2, outliers=0.05)
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "y.npy", y)
    kw = dict(experts=2, n_init=1, max_iter=8, noise_expert=True)
    mem = quiet_fit("mixture_of_models", X, y, **kw)
    store = D.open_store(tmp_path, chunk_rows=1000)  # six tasks per pass, read from disk
    dk = quiet_fit("mixture_of_models", store, None, **kw)
    same(dk, mem)
    # the directory itself, and X.npy with y.npy, are stores too
    kw = dict(kw, max_iter=2)
    mem = quiet_fit("mixture_of_models", X, y, **kw)
    same(quiet_fit("mixture_of_models", str(tmp_path), None, **kw), mem)
    same(quiet_fit("mixture_of_models", tmp_path / "X.npy", tmp_path / "y.npy", **kw), mem)


@pytest.mark.parametrize(
    "model, options",
    [
        ("mixture_of_experts", {"noise_expert": True}),  # the gate prior and the noise share
        ("regularized_experts", {}),  # R(w0) and its w0 update
        ("mixture_of_models", {"learn": "all", "per_expert_noise": True}),
        # conjugate hyperpriors derived from the file: q(alpha), q(w0_k)
        (str(Path(__file__).parent / "model_files" / "ard.py"), {}),
        (str(Path(__file__).parent / "model_files" / "hierarchical_mean.py"), {}),
    ],
)
def test_other_model_files_match_in_memory(client, model, options):
    X, y = two_lines(3000, seed=1, outliers=0.05)
    kw = dict(experts=2, n_init=1, max_iter=3, tol=0.0, **options)
    same(quiet_fit(model, *chunked(X, y, 1000), **kw), quiet_fit(model, X, y, **kw))


@pytest.mark.slow
def test_natural_svi_on_dask_full_batch_and_minibatches(client):
    """Full batch (N below minibatch_from): in-memory natural SVI's history to 1e-10. With
    minibatches: the same batches (one randperm per epoch, rows gathered from the chunks),
    so the in-memory run's history again, and a final objective within
    max(1e-4 |F|, 0.5) nats of CAVI's, exact over all N points."""
    X, y = two_lines(100_000, seed=2, outliers=0.02)
    kw = dict(experts=2, n_init=1, noise_expert=True)
    Xd, yd = chunked(X, y, 30_000)  # four chunks, the last one short
    same(quiet_fit("mixture_of_models", Xd, yd, method="svi", max_iter=6, batch_size=5000,
                   minibatch_from=200_000, **kw),
         quiet_fit("mixture_of_models", X, y, method="svi", max_iter=6, **kw))  # fmt: skip
    cavi = quiet_fit("mixture_of_models", X, y, **kw)
    mini = dict(method="svi", batch_size=5000, max_iter=150, **kw)
    dk = quiet_fit("mixture_of_models", Xd, yd, **mini)
    mem = quiet_fit("mixture_of_models", X, y, **mini)
    assert dk.restarts[0]["batch_size"] == 5000 and len(dk.objective_history) == 151
    same(dk, mem)
    F = float(cavi.objective_history[-1])
    assert abs(float(dk.objective_history[-1]) - F) <= max(1e-4 * abs(F), 0.5)
    # the final entry is the closed form over all N points: CAVI's objective at its globals
    assert torch.allclose(dk.responsibilities, mem.responsibilities, atol=1e-10)


def test_gated_natural_svi_on_dask(client):
    """The gate on Dask: full batch takes CAVI's L-BFGS M-step over the chunks (the
    in-memory history to 1e-10); minibatches take Adam steps on the gathered batch (from
    the first batch on: the in-memory run's first Adam step reads all rows, so the two
    differ)."""
    X, y = two_lines(4000, seed=1, outliers=0.05)
    kw = dict(experts=2, n_init=1, noise_expert=True, method="svi")
    Xd, yd = chunked(X, y, 1500)
    same(quiet_fit("mixture_of_experts", Xd, yd, max_iter=4, **kw),
         quiet_fit("mixture_of_experts", X, y, max_iter=4, **kw))  # fmt: skip
    # Adam's gate steps are slow (module docstring of engines/natural.py): no CAVI target
    # here, but the run climbs from its closed-form start and the gate has moved
    mini = dict(kw, batch_size=1000, minibatch_from=0, max_iter=60)
    dk = quiet_fit("mixture_of_experts", Xd, yd, **mini)
    fresh = quiet_fit("mixture_of_experts", Xd, yd, **dict(mini, max_iter=1))
    h = dk.objective_history
    assert dk.restarts[0]["batch_size"] == 1000 and len(h) == 61
    assert h[-1] > fresh.objective_history[-1]
    pairs = zip(dk.gate.parameters(), fresh.gate.parameters(), strict=True)
    moved = [(a - b).abs().max() for a, b in pairs]
    assert max(moved) > 1e-3


def test_exact_median_beyond_what_is_gathered(client, monkeypatch):
    """The subsets init's median over all rows, counted in buckets when too many to gather,
    is torch.median's (the lower median), with and without ties."""
    X, y = two_lines(20_001, seed=3)
    y[:3000] = (X[:3000] * np.array([1.0, -2.0, 0.5])).sum(1)  # exact fits: ties at 0
    data = D.as_dask_data(*chunked(X, y, 3000), client)
    src = D.DaskSource(data, client, {}, (None, None), False)
    W = torch.tensor([[1.0, -2.0, 0.5], [-1.5, 0.5, 3.0]], dtype=torch.float64)
    v = D.subset_residuals(torch.from_numpy(X), torch.from_numpy(y), W).min(-1).values
    sample = v[torch.randperm(len(v), generator=torch.Generator().manual_seed(0))[:200]]
    for gather in (50, 10**7):
        monkeypatch.setattr(D, "GATHER", gather)
        assert src._median_min_sq(W, None, sample) == v.median()
    y[:12_000] = (X[:12_000] * np.array([1.0, -2.0, 0.5])).sum(1)  # the median itself tied
    data = D.as_dask_data(*chunked(X, y, 3000), client)
    src = D.DaskSource(data, client, {}, (None, None), False)
    v = D.subset_residuals(torch.from_numpy(X), torch.from_numpy(y), W).min(-1).values
    monkeypatch.setattr(D, "GATHER", 50)
    assert src._median_min_sq(W, None, v[:200]) == v.median()


def test_unreachable_scheduler_is_one_line_error(monkeypatch):
    X, y = two_lines(100)
    monkeypatch.setattr(D, "CONNECT_TIMEOUT", 1.0)
    with pytest.raises(pyro_moe.SchedulerError) as e:
        pyro_moe.fit("mixture_of_models", X, y, scheduler="tcp://127.0.0.1:9")
    assert "tcp://127.0.0.1:9" in str(e.value) and "\n" not in str(e.value)
    assert isinstance(e.value, pyro_moe.errors.PyroMoeError)


def test_refusals_name_what_is_wrong(client, tmp_path):
    X, y = two_lines(2000)
    Xd, yd = chunked(X, y, 500)
    with pytest.raises(InputError, match="optimizer='adam'"):
        pyro_moe.fit("mixture_of_models", Xd, yd, method="svi", optimizer="adam")
    with pytest.raises(InputError, match="method='nuts'"):
        pyro_moe.fit("mixture_of_models", Xd, yd, method="nuts")
    with pytest.raises(InputError, match="init='random'"):
        pyro_moe.fit("mixture_of_models", Xd, yd, init="random", n_init=1)
    with pytest.raises(InputError, match="search"):
        pyro_moe.fit("mixture_of_models", Xd, yd, search=True)
    bad = y.copy()
    bad[1700] = np.nan
    # UE-2: the row in the data, not within its chunk (1700 is row 200 of the 4th chunk)
    with pytest.raises(InputError, match="y has NaN.*first at row 1700"):
        pyro_moe.fit("mixture_of_models", Xd, da.from_array(bad, chunks=500))
    with pytest.raises(InputError, match="rows"):
        pyro_moe.fit("mixture_of_models", Xd, yd[:100])
    with pytest.raises(InputError, match="store"):
        pyro_moe.fit("mixture_of_models", str(tmp_path / "nothing.csv"), None)


def _npy_data(tmp_path, rows: int, declared: int, missing: bool = False) -> D.DaskData:
    """Two chunks of 100 declared rows; the second reads ``rows`` rows of its file (or a
    file that is missing: an OSError when the task reads it)."""
    X, y = two_lines(100 + rows)
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "y.npy", y)
    px, py = str(tmp_path / "X.npy"), str(tmp_path / "y.npy")
    if missing:
        px = str(tmp_path / "gone.npy")
    first = (D.NpySlice(str(tmp_path / "X.npy"), 0, 100), D.NpySlice(py, 0, 100))
    second = (D.NpySlice(px, 100, 100 + declared), D.NpySlice(py, 100, 100 + declared))
    return D.DaskData([first, second], [100, declared], X.shape[1])


def test_a_bad_chunk_is_one_input_error_naming_its_rows(client, tmp_path):
    """WE-10: a chunk whose data has fewer rows than declared was an IndexError (in the
    head's row gather); one whose read raises OSError (a storage fault) came back raw."""
    with pytest.raises(InputError, match=r"rows 100\.\.200 of X holds 50 rows.*declares 100"):
        quiet_fit("mixture_of_models", _npy_data(tmp_path, 50, 100), None, n_init=1)
    with pytest.raises(InputError, match=r"cannot read rows 100\.\.200 of the data: .*Error"):
        quiet_fit("mixture_of_models", _npy_data(tmp_path, 100, 100, missing=True), None)


def test_a_column_too_tiny_for_float64_says_to_rescale(client):
    """SW-3 on Dask: the sum of squares of X * 1e-200 underflows to 0, which counted as
    scale 1 (a weight pinned at 0); it is refused as in memory."""
    X, y = two_lines(400)
    with pytest.raises(InputError, match="rescale the data"):
        quiet_fit("mixture_of_models", *chunked(X * 1e-200, y, 200), n_init=1, max_iter=2)


def test_a_gate_on_a_thread_based_cluster_matches_in_memory():
    """The gate-loss tasks of one pass got the same gate object on an in-process cluster
    and their backward passes raced on its .grad: each task now works on its own copy."""
    X, y = two_lines(4000, seed=1)
    kw = dict(experts=2, n_init=1, max_iter=3, tol=0.0)
    mem = quiet_fit("mixture_of_experts", X, y, **kw)
    cluster = distributed.LocalCluster(
        n_workers=1, threads_per_worker=4, processes=False, dashboard_address=None
    )
    try:
        for _ in range(2):
            dk = quiet_fit(
                "mixture_of_experts", *chunked(X, y, 250), scheduler=cluster.scheduler_address, **kw
            )
            same(dk, mem)
    finally:
        cluster.close()


def test_cli_fits_a_store(client, capsys, tmp_path, monkeypatch):
    from cli_helpers import run_cli

    X, y = two_lines(3000, seed=5)
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "y.npy", y)
    code, out, err = run_cli(
        capsys, "fit", tmp_path, "-k", "2", "--restarts", "1", "--max-iter", "5", "--json"
    )
    assert code == 0, err
    mem = quiet_fit("mixture_of_models", X, y, experts=2, n_init=1, max_iter=5)
    assert abs(json.loads(out)["objective"] - float(mem.objective_history[-1])) < 1e-6
    monkeypatch.setattr(D, "CONNECT_TIMEOUT", 1.0)
    code, out, err = run_cli(capsys, "fit", tmp_path, "--scheduler", "tcp://127.0.0.1:9")
    assert code != 0 and "cannot reach the Dask scheduler" in err
    code, out, err = run_cli(capsys, "fit", tmp_path, "--target", "y")
    assert code != 0 and "--target" in err


@pytest.mark.slow
def test_a_worker_lost_mid_fit_does_not_change_the_answer(client, monkeypatch):
    """Last in the file: it kills a worker of the shared cluster (its nanny restarts it)."""
    X, y = two_lines(20_000, seed=4)
    kw = dict(experts=2, n_init=1, max_iter=10, tol=0.0)
    mem = quiet_fit("mixture_of_models", X, y, **kw)
    pids = list(client.run(os.getpid).values())
    original = D.DaskSource.map
    killed = []

    def map_then_kill(self, fn, *args):
        if self.passes == 6 and not killed:  # mid-fit: after a few iterations
            os.kill(pids[0], signal.SIGKILL)
            killed.append(pids[0])
        return original(self, fn, *args)

    monkeypatch.setattr(D.DaskSource, "map", map_then_kill)
    dk = quiet_fit("mixture_of_models", *chunked(X, y, 2500), **kw)
    assert killed
    same(dk, mem, lengths=False)


# ---- curves of distributed points, zarr stores ------------------------------------------
RINGS = np.array([[100.0, 120.0, 40.0], [260.0, 140.0, 60.0], [180.0, 300.0, 50.0]])


def rings(N: int, seed: int = 0) -> np.ndarray:
    """N points on three circles (x0, y0, r) of RINGS, radial noise 0.5 px."""
    g = np.random.default_rng(seed)
    k, th = g.integers(0, 3, N), g.uniform(0, 2 * np.pi, N)
    r = RINGS[k, 2] + 0.5 * g.normal(size=N)
    return np.c_[RINGS[k, 0] + r * np.cos(th), RINGS[k, 1] + r * np.sin(th)]


def sorted_circles(result) -> np.ndarray:
    """The circles of the posterior mean, sorted: a fit of distributed points reports no
    geometric refinement (CurveFit.refined needs every point's responsibilities)."""
    plain = pyro_moe.CurveFit(result.result, result.geometry)
    return np.array(sorted((c.x0, c.y0, c.r) for c in plain.circles()))


@pytest.mark.slow
def test_circles_of_a_dask_array_match_in_memory(client):
    """2e5 points as a Dask array: the circles of the in-memory fit_circles of the same
    points within 0.01 px (each ring has ~6.7e4 points of 0.5 px noise: the fit's own
    standard error of a centre is ~0.5 / sqrt(6.7e4 / 2) = 0.003 px, and two fits that both
    converge to tol 1e-8 sit far closer); and, started from the same subsample fit, the
    in-memory CAVI's objective history to 1e-10."""
    from pyro_moe.curves.design import curve_design, curve_layout
    from pyro_moe.likelihood import noise_log_density
    from pyro_moe.model_file import load_model

    P = rings(200_000)
    dk = quiet_fit_curves(da.from_array(P, chunks=(50_000, 2)), experts=3)
    assert dk.restarts[0]["subsample"] == 50_000 and dk.restarts[0]["init"] == "start"
    mem = quiet_fit_curves(P, experts=3)
    assert np.abs(sorted_circles(dk) - sorted_circles(mem)).max() < 0.01
    assert np.abs(sorted_circles(dk) - RINGS[np.argsort(RINGS[:, 0])]).max() < 0.05
    # the same start in memory: the design in the Dask fit's standard coordinates, q(Z)
    # one E-step from the subsample fit's globals, the same noise support and beta
    lay = curve_layout(("circle",) * 3, load_model("mixture_of_models").expert_catalog)
    X, y = (
        torch.from_numpy(a) for a in curve_design(lay, dk.geometry.standardization.to_standard(P))
    )
    bounds = dk.hyper.noise_bounds
    start = D.Start.from_result(dk.subsample_fit.result)
    R = start.log_responsibilities(X, y, noise_log_density(bounds)).exp()
    again = quiet_fit(
        "mixture_of_models", X, y, experts=3, n_init=1, responsibilities=R,
        noise_expert=dk.noise_expert,
        noise_range=None if bounds is None else tuple(bounds.tolist()), per_expert_noise=True,
        noise_precision=dk.subsample_fit.hyper.noise_precision, prior_units="unit",
    )  # fmt: skip
    same(dk, again)


def quiet_fit_curves(*args, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return pyro_moe.fit_circles(*args, **kw)


def test_curve_points_errors_name_the_problem(client, tmp_path):
    P = rings(3000)
    with pytest.raises(InputError, match=r"shape \(N, 2\)"):
        pyro_moe.fit_circles(da.from_array(np.c_[P, P[:, :1]], chunks=(1000, 3)), experts=3)
    bad = P.copy()
    bad[2500] = np.nan
    with pytest.raises(InputError, match=r"NaN or infinite values in 1 rows .*\[2500\]"):
        pyro_moe.fit_circles(da.from_array(bad, chunks=(1000, 2)), experts=3)
    np.save(tmp_path / "points.npy", bad)
    with pytest.raises(InputError, match="2500"):
        pyro_moe.fit_circles(tmp_path / "points.npy", experts=3, workers=1)


zarr = pytest.importorskip("zarr")


def test_zarr_stores_of_X_y_and_of_points(client, tmp_path):
    """A zarr group with arrays X and y fits as the in-memory data; a zarr array of points
    gives the circles of the in-memory fit_circles (all 20k points are the subsample here,
    so the start is that very fit, and the Dask CAVI from it stays at its fixed point)."""
    X, y = two_lines(4000, seed=2)
    store = str(tmp_path / "data.zarr")
    da.to_zarr(da.from_array(X, chunks=(1000, 3)), store, component="X")
    da.to_zarr(da.from_array(y, chunks=1000), store, component="y")
    kw = dict(experts=2, n_init=1, max_iter=5)
    same(quiet_fit("mixture_of_models", store, None, **kw),
         quiet_fit("mixture_of_models", X, y, **kw))  # fmt: skip
    P = rings(20_000, seed=1)
    da.to_zarr(da.from_array(P, chunks=(5000, 2)), str(tmp_path / "points.zarr"))
    dk = quiet_fit_curves(str(tmp_path / "points.zarr"), experts=3)
    mem = quiet_fit_curves(P, experts=3)
    assert np.abs(sorted_circles(dk) - sorted_circles(mem)).max() < 1e-4
