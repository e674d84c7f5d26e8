"""The fixed costs of a closed-form fit (issue #31): read_model's results kept by
fingerprint, the e-step's kept data products. Both must leave every number as it was."""

from __future__ import annotations

import warnings

import torch

import pyro_moe
from pyro_moe.closed_form import sites
from pyro_moe.closed_form import updates as U
from pyro_moe.engines import source
from pyro_moe.engines.source import InMemory
from pyro_moe.model_file import load_model


def _data(N=300, K=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(N, 3, generator=g, dtype=torch.float64)
    W = 2 * torch.randn(K, 3, generator=g, dtype=torch.float64)
    z = torch.randint(K, (N,), generator=g)
    y = (X * W[z]).sum(-1) + 0.3 * torch.randn(N, generator=g, dtype=torch.float64)
    return X, y


def _fit(X, y, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pyro_moe.fit("mixture_of_models", X, y, experts=2, n_init=2, max_iter=30, **kw)


def test_read_model_is_traced_once_per_fingerprint(monkeypatch):
    calls = []
    real = sites._read_model
    monkeypatch.setattr(sites, "_read_model", lambda *a: calls.append(1) or real(*a))
    sites._read_cache.clear()
    X, y = _data()
    first = _fit(X, y)
    assert len(calls) == 1
    again = _fit(X.clone(), y.clone())  # the same values: not traced again
    assert len(calls) == 1
    assert torch.equal(first.history.objective, again.history.objective)
    _fit(X, y + 1e-9)  # other data: traced
    assert len(calls) == 2
    _fit(X, y, prior_var_min=1e-9)  # an engine option is not read by read_model: kept
    assert len(calls) == 2
    _fit(X, y, concentration=2.0)  # another config: traced
    assert len(calls) == 3


def test_read_model_hands_out_copies():
    """A result holds tensors of the Conjugate (its concentration): changing them must not
    change what the next fit reads."""
    sites._read_cache.clear()
    model = load_model("mixture_of_models")
    X, y = _data()
    config = model.config(X, y, 2, seed=0)
    a = sites.read_model(model, X, y, config)
    a.concentration.fill_(123.0)
    a.prior_mean.fill_(7.0)
    b = sites.read_model(model, X, y, config)
    assert not torch.equal(b.concentration, a.concentration)
    assert torch.equal(b.concentration, config.concentration.to(b.concentration))
    assert not torch.equal(b.prior_mean, a.prior_mean)


def test_cached_and_traced_fits_agree():
    """The same fit, its file traced (cache cleared) or not: identical histories."""
    X, y = _data(seed=3)
    sites._read_cache.clear()
    cold = _fit(X, y)
    warm = _fit(X, y)
    assert torch.equal(cold.history.objective, warm.history.objective)
    assert torch.equal(cold.responsibilities, warm.responsibilities)


def test_kept_products_give_the_same_e_step():
    """The e-step with the data's products kept (one chunk) is bit for bit the one that
    forms them, and a source keeps them only when its rows make one chunk."""
    X, y = _data(N=500, K=3)
    g = torch.Generator().manual_seed(1)
    K = 3
    cov = torch.eye(3, dtype=torch.float64).expand(K, 3, 3) * 0.01
    q = U.WeightPosterior(torch.randn(K, 3, generator=g, dtype=torch.float64), cov, None)
    lp = torch.log_softmax(torch.randn(1, K, generator=g, dtype=torch.float64), -1).expand(500, K)
    beta = torch.tensor(2.0, dtype=torch.float64)
    plain = U.e_step(X, y, q, lp, beta.log(), beta)
    kept = U.e_step(X, y, q, lp, beta.log(), beta, products=U.z_products(X, y))
    assert torch.equal(plain.log_r, kept.log_r) and torch.equal(plain.lse, kept.lse)
    assert torch.equal(plain.stats.S, kept.stats.S) and torch.equal(plain.stats.s, kept.stats.s)
    src = InMemory(X, y)
    src.log_r = plain.log_r.clone()
    src.e_step(q, lp, beta.log(), beta, None, None)
    assert src.products is not None
    big = 1 + U.chunk_rows(10**6, 10 + 2 * K)
    assert not U.single_chunk(big, 4, K)


def _pass_inputs(N, K, seed, maps_too):
    g = torch.Generator().manual_seed(seed)
    X, y = _data(N=N, K=K, seed=seed)
    n = X.shape[1]
    cov = torch.eye(n, dtype=torch.float64).expand(K, n, n) * 0.01
    q = U.WeightPosterior(torch.randn(K, n, generator=g, dtype=torch.float64), cov, None)
    maps = None
    if maps_too:  # heterogeneous experts: T_k (n + 1, d), the last row the target's map
        maps = torch.eye(n + 1, dtype=torch.float64).repeat(K, 1, 1)
        maps[:, :n] += 0.1 * torch.randn(K, n, n + 1, generator=g, dtype=torch.float64)
    return X, y, q, maps


def test_several_chunks_are_each_chunk_alone_bit_for_bit():
    """Over several chunks the pass writes into kept buffers and reads the rows point-last:
    each chunk's log r is bit for bit the one-chunk pass on its rows alone, sum lse is their
    parts summed in order, and the statistics are the reference sums (to rounding); with a
    source keeping its rows point-last, bit for bit the pass that copies them."""
    for K, noise, maps_too in ((2, False, False), (3, True, False), (2, True, True)):
        C = K + int(noise)
        rows = U.chunk_rows(10**6, 10 + 2 * C)
        N = 2 * rows + 777  # three chunks, the last one short
        X, y, q, maps = _pass_inputs(N, K, K, maps_too)
        g = torch.Generator().manual_seed(5)
        lp = torch.log_softmax(torch.randn(N, C, generator=g, dtype=torch.float64), -1)
        beta = torch.tensor(3.0, dtype=torch.float64)
        u = torch.tensor(-2.0, dtype=torch.float64) if noise else None
        full = U.e_step(X, y, q, lp, beta.log(), beta, u, maps=maps)
        lse = None
        for sl in U.chunks(N, rows):
            part = U.e_step(X[sl], y[sl], q, lp[sl], beta.log(), beta, u, maps=maps)
            assert torch.equal(full.log_r[sl], part.log_r)
            lse = part.lse if lse is None else lse + part.lse
        assert torch.equal(full.lse, lse)
        ref = U.sufficient_stats(X, y, full.log_r[:, :K].exp(), maps)
        assert torch.allclose(full.stats.S, ref.S, rtol=1e-12, atol=0)
        assert torch.allclose(full.stats.s, ref.s, rtol=1e-12, atol=0)
        assert torch.allclose(full.stats.yy, ref.yy, rtol=1e-12, atol=0)
        src = InMemory(X, y)
        src.log_r = full.log_r.clone()
        kept = src.e_step(q, lp, beta.log(), beta, u, maps)
        assert src.products is not None and src.products[1] is None  # rows only, no products
        assert torch.equal(kept.log_r, full.log_r) and torch.equal(kept.lse, full.lse)
        assert torch.equal(kept.stats.S, full.stats.S) and torch.equal(kept.r_sum, full.r_sum)


def test_rows_beyond_the_cap_are_not_kept(monkeypatch):
    """Above POINT_LAST_ELEMENTS the source keeps no second copy and the pass copies each
    chunk: the same numbers."""
    K = 2
    rows = U.chunk_rows(10**6, 10 + 2 * K)
    N = rows + 5
    X, y, q, _ = _pass_inputs(N, K, 0, False)
    lp = torch.full((1, K), -0.7, dtype=torch.float64).expand(N, K)
    beta = torch.tensor(3.0, dtype=torch.float64)
    plain = U.e_step(X, y, q, lp, beta.log(), beta)
    monkeypatch.setattr(source, "POINT_LAST_ELEMENTS", N * 4 - 1)
    src = InMemory(X, y)
    src.log_r = plain.log_r.clone()
    est = src.e_step(q, lp, beta.log(), beta, None, None)
    assert src.products is None
    assert torch.equal(est.log_r, plain.log_r) and torch.equal(est.lse, plain.lse)
