"""The fixed costs of a closed-form fit (issue #31): read_model's results kept by
fingerprint, the e-step's kept data products. Both must leave every number as it was."""

from __future__ import annotations

import warnings

import pytest
import torch
from conftest import observed_model

import pyro_moe
from pyro_moe.catalog import MODELS_DIR
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


def _count_readings(monkeypatch) -> list:
    """Count the readings of a model file: the full ones and the batched ones that went
    through."""
    calls = []
    full, batched = sites._read_model, sites._read_batched
    monkeypatch.setattr(sites, "_read_model", lambda *a: calls.append("full") or full(*a))

    def counted(*a):
        conj = batched(*a)
        if conj is not None:
            calls.append("batched")
        return conj

    monkeypatch.setattr(sites, "_read_batched", counted)
    sites._read_cache.clear()
    sites._plans.clear()
    return calls


def test_read_model_is_traced_once_per_fingerprint(monkeypatch):
    calls = _count_readings(monkeypatch)
    X, y = _data()
    first = _fit(X, y)
    assert calls == ["full"]
    again = _fit(X.clone(), y.clone())  # the same values: not traced again
    assert calls == ["full"]
    assert torch.equal(first.history.objective, again.history.objective)
    _fit(X, y + 1e-9)  # other data, the same structure: read again, from one batched trace
    assert calls == ["full", "batched"]
    _fit(X, y, prior_var_min=1e-9)  # an engine option is not read by read_model: kept
    assert len(calls) == 2
    _fit(X, y, concentration=2.0)  # another config's values, its structure the same
    assert calls == ["full", "batched", "batched"]
    _fit(X, y, noise_expert=True)  # another structure: read in full
    assert calls[-1] == "full"


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


# ---- the batched reading of new data (one trace) reads what the full reading reads ----
def _two_readings(model, X, y, config, X2, y2, config2):
    """(the batched reading of (X2, y2), the full one), the plan learned on (X, y)."""
    sites._read_cache.clear()
    sites._plans.clear()
    sites.read_model(model, X, y, config)
    skey = sites._structure_key(model, X2, y2, config2, False)
    plan = sites._plans.get(skey)
    assert plan, "the plan of this structure was learned"
    batched = sites._read_batched(model, X2, y2, config2, False, plan)
    full = sites._read_model(model, X2, y2, config2, False)
    return batched, full


@pytest.mark.parametrize(
    "name, settings",
    [
        ("mixture_of_models", {}),
        ("mixture_of_models", {"noise_expert": True}),
        ("mixture_of_models", {"per_expert_noise": True}),
        ("mixture_of_experts", {}),
        ("mixture_of_experts", {"noise_expert": True}),
        ("regularized_experts", {}),
    ],
)
def test_the_batched_reading_is_the_full_reading(name, settings):
    model = load_model(name)
    X, y = _data(N=200, seed=1)
    X2, y2 = _data(N=150, seed=2)
    config = model.config(X, y, 2, **settings)
    config2 = model.config(X2, y2, 2, **settings)
    batched, full = _two_readings(model, X, y, config, X2, y2, config2)
    assert batched is not None and sites._same(batched, full)


def test_a_latent_noise_precision_and_expert_maps_are_read_batched(tmp_path):
    """A Gamma prior on beta (a latent site replayed at the draws) and the curve experts'
    maps (their own targets): the batched reading of new data is the full one."""
    text = (MODELS_DIR / "mixture_of_models.py").read_text()
    text = text.replace(
        "    return None\n", "    return dist.Gamma(config.const(2.0), config.const(0.5))\n", 1
    )
    path = tmp_path / "gamma_noise.py"
    path.write_text(text)
    model = load_model(str(path))
    X, y = _data(N=120, seed=4)
    X2, y2 = _data(N=90, seed=5)
    batched, full = _two_readings(
        model, X, y, model.config(X, y, 2), X2, y2, model.config(X2, y2, 2)
    )
    assert batched is not None and full.noise_prior is not None and sites._same(batched, full)
    maps = torch.eye(4, dtype=torch.float64)[:, :4].repeat(2, 1, 1)
    maps[1, :3] += 0.1
    builtin = load_model("mixture_of_models")
    batched, full = _two_readings(
        builtin, X, y, builtin.config(X, y, 2, maps=maps), X2, y2,
        builtin.config(X2, y2, 2, maps=maps),
    )  # fmt: skip
    assert batched is not None and sites._same(batched, full)


def _branching(tmp_path, edit: str, name: str):
    return load_model(str(observed_model(tmp_path, edit, name=name)))


def test_a_branch_on_the_data_is_refused_on_new_data_after_a_batched_plan(tmp_path):
    """A file whose likelihood is the linear Gaussian on the first data and not on the next
    (a branch on the data's values): read in full on the first, learned as a plan, and
    still refused by name on the next, with the full reading's message."""
    model = _branching(
        tmp_path, "dist.Normal(mean if bool((y < 4).all()) else mean**3, scale)", "branch"
    )
    X, y = _data(N=100, seed=6)
    y = y.clamp(max=3.0)
    config = model.config(X, y, 2, learn=("gate",))
    sites._read_cache.clear()
    sites._plans.clear()
    sites.read_model(model, X, y, config)
    assert any(sites._plans.values()), "the plan was learned on data the branch leaves linear"
    y2 = y.clone()
    y2[0] = 5.0
    with pytest.raises(pyro_moe.NonConjugateError, match="site 'y'.*random draws"):
        sites.read_model(model, X, y2, model.config(X, y2, 2, learn=("gate",)))


def test_a_site_added_on_new_data_is_refused_by_name(tmp_path):
    """A structure that changes with the data's values: the batched reading's sites differ
    from the plan's, and the full reading refuses the new site by name."""
    extra = (
        "dist.Normal(mean, scale) if bool((y < 4).all()) else "
        "dist.Normal(mean + pyro.sample('shift', dist.Normal(config.const(0.0), "
        "config.const(1.0))), scale)"
    )
    model = _branching(tmp_path, extra, "extra_site")
    X, y = _data(N=100, seed=7)
    y = y.clamp(max=3.0)
    config = model.config(X, y, 2, learn=("gate",))
    sites._read_cache.clear()
    sites._plans.clear()
    sites.read_model(model, X, y, config)
    assert any(sites._plans.values())
    y2 = y.clone()
    y2[0] = 5.0
    with pytest.raises(pyro_moe.NonConjugateError, match="'shift'"):
        sites.read_model(model, X, y2, model.config(X, y2, 2, learn=("gate",)))


def test_a_file_that_cannot_run_batched_is_read_draw_by_draw(tmp_path):
    """A file written for one draw only (w reshaped to (K, n)): its batched reading fails,
    its plan is False, and every reading is the full one (the same Conjugate as before)."""
    model = _branching(tmp_path, "dist.Normal(mean, scale)", "one_draw")
    text = model.path.read_text().replace(
        "mean = Vindex(X[idx] @ w.transpose(-1, -2))[..., z]",
        "mean = Vindex(X[idx] @ w.reshape(config.experts, config.features).T)[..., z]",
    )
    model.path.write_text(text)
    model = load_model(str(model.path))
    X, y = _data(N=100, seed=8)
    config = model.config(X, y, 2, learn=("gate",))
    sites._read_cache.clear()
    sites._plans.clear()
    conj = sites.read_model(model, X, y, config)
    assert list(sites._plans.values()) == [False]
    assert sites._same(conj, sites._read_model(model, X, y, config, False))


def test_fits_read_batched_or_in_full_are_bit_for_bit_the_same(monkeypatch):
    """New data read from one batched trace, or in full (no plan kept): identical
    histories and responsibilities."""
    X, y = _data(seed=9)
    X2, y2 = _data(seed=10)
    sites._read_cache.clear()
    sites._plans.clear()
    _fit(X, y)
    calls = []
    real = sites._read_batched
    monkeypatch.setattr(sites, "_read_batched", lambda *a: calls.append(1) or real(*a))
    batched = _fit(X2, y2)
    assert calls
    sites._read_cache.clear()
    sites._plans.clear()
    full = _fit(X2, y2)
    assert torch.equal(batched.history.objective, full.history.objective)
    assert torch.equal(batched.responsibilities, full.responsibilities)


def test_large_data_is_read_draw_by_draw(monkeypatch):
    """Above BATCHED_ELEMENTS (D x N x C of the stacked draws) no plan is kept or used: the
    memory of the reading stays O(N C)."""
    monkeypatch.setattr(sites, "BATCHED_ELEMENTS", 100)
    calls = _count_readings(monkeypatch)
    X, y = _data(N=200)
    model = load_model("mixture_of_models")
    sites.read_model(model, X, y, model.config(X, y, 2))
    sites.read_model(model, X, y + 1.0, model.config(X, y + 1.0, 2))
    assert calls == ["full", "full"] and not sites._plans
