"""The CAVI objective never decreases, for every model, learned and fixed hyperparameters."""

from __future__ import annotations

import warnings

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pyro_moe

LEARN = [
    "all",
    "none",
    ["noise_precision"],
    ["prior_mean", "prior_cov"],
    ["prior_cov", "noise_precision", "gate"],
]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    model=st.sampled_from(["mixture_of_models", "mixture_of_experts", "regularized_experts"]),
    N=st.integers(4, 40),
    n=st.integers(1, 3),
    K=st.integers(1, 3),
    learn=st.sampled_from(LEARN),
    init=st.sampled_from(["prior", "subsets", "random"]),
    seed=st.integers(0, 2**16),
    noise=st.floats(0.0, 1.0),
)
def test_objective_never_decreases(model, N, n, K, learn, init, seed, noise):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(N, n))
    W = rng.normal(size=(K, n)) * 2
    y = (X * W[rng.integers(0, K, N)]).sum(1) + noise * rng.normal(size=N)
    prior_mean = rng.normal(size=(K, n))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", pyro_moe.ConvergenceWarning)
        result = pyro_moe.fit(
            model,
            X,
            y,
            experts=min(K, N),
            n_init=1,
            init=init,
            max_iter=40,
            learn=learn,
            seed=seed,
            prior_mean=prior_mean[: min(K, N)],
            regularization_cov=0.5 if model == "regularized_experts" else None,
        )
    h = result.objective_history.numpy()
    assert np.isfinite(h).all()
    drops = h[:-1] - h[1:]
    # round-off only. On exact data the floors (beta <= 1e10/Var y, eig A >= 1e-10) make
    # precisions of 1e10 next to O(1) terms; drops of 3e-8 at |F| = 27 were seen there. An
    # update out of order or off its maximiser drops the objective by far more (> 1e-4).
    assert drops.max(initial=0.0) <= 1e-8 * (np.abs(h).max() + N), (drops.max(), h)
