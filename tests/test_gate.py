"""The gate's M-step (pyro_moe.engines.gate): the Gauss-Newton terms against autograd, its
optimum against L-BFGS's, and the step never lowering G."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pyro_moe.config import ScaledInput
from pyro_moe.engines.gate import GateFitter, GateLayers
from pyro_moe.errors import InputError

N, n, H = 60, 3, 5


def make_gate(kind: str, K: int, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    if kind == "linear":
        inner = torch.nn.Linear(n, K)
    elif kind == "linear, no bias":
        inner = torch.nn.Linear(n, K, bias=False)
    else:
        act = torch.nn.Sigmoid() if kind == "sigmoid" else torch.nn.Tanh()
        inner = torch.nn.Sequential(torch.nn.Linear(n, H), act, torch.nn.Linear(H, K))
    scale = torch.linspace(0.5, 2.0, n, dtype=torch.float64)
    return ScaledInput(inner.double(), scale)


def data(K: int, seed: int = 0, share: float = 0.9):
    g = torch.Generator().manual_seed(seed)
    X = 2 * torch.randn(N, n, generator=g, dtype=torch.float64)
    r = torch.rand(N, K, generator=g, dtype=torch.float64)
    return X, share * r / r.sum(1, keepdim=True)  # rows summing to < 1: a noise expert's share


def data_term(gate, X, r):
    return (r * torch.log_softmax(gate(X), -1)).sum()


KINDS = ["linear", "linear, no bias", "sigmoid", "tanh"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("rows", [N, 7])
def test_terms_are_the_data_term_its_gradient_and_its_gauss_newton_curvature(kind, rows):
    K = 3
    gate = make_gate(kind, K)
    X, r = data(K)
    L = GateLayers.of(gate)
    assert L is not None
    theta = L.theta() + 0.1  # away from the gate's own parameters
    out = torch.empty(N, K, dtype=X.dtype)
    D, grad, C = L.terms(X, r.T.contiguous(), theta, rows, out, True)
    L.assign(theta)
    expected = data_term(gate, X, r)
    assert float(D) == pytest.approx(float(expected.detach()), rel=1e-13)
    assert torch.allclose(out, torch.log_softmax(gate(X), -1), atol=1e-13)
    # the gradient in θ = [vec Θ1, vec Θ2] from autograd on the module's parameters
    layers = L.layers
    auto = torch.autograd.grad(expected, [p for lin in layers for p in lin.parameters()])
    parts, at = [], 0
    for lin in layers:
        W = auto[at]
        b = auto[at + 1] if lin.bias is not None else None
        at += 2 if lin.bias is not None else 1
        parts.append((W if b is None else torch.cat([W, b[:, None]], 1)).reshape(-1))
    assert torch.allclose(grad, torch.cat(parts), atol=1e-12)

    # the curvature: sum_i J_i^T A_i J_i, J_i = dz_i/dθ by torch.func
    J = torch.func.jacrev(lambda t: torch.func.functional_call(gate, _params(gate, L, t), (X,)))(
        theta
    )
    g = torch.softmax(gate(X), -1).detach()
    s = r.sum(1)
    A = s[:, None, None] * (torch.diag_embed(g) - g[:, :, None] * g[:, None, :])
    assert C is not None
    assert torch.allclose(C, torch.einsum("nkp,nkl,nlq->pq", J, A, J), atol=1e-11)
    assert torch.allclose(C, C.T)


def _params(gate, L: GateLayers, theta):
    """The gate's parameters as functions of θ (for torch.func)."""
    out = {}
    names = {id(p): name for name, p in gate.named_parameters()}
    for lin, M in zip(L.layers, L.matrices(theta), strict=True):
        out[names[id(lin.weight)]] = M[:, : lin.in_features]
        if lin.bias is not None:
            out[names[id(lin.bias)]] = M[:, lin.in_features]
    return out


@pytest.mark.parametrize("kind", ["linear", "linear, no bias"])
def test_a_linear_gate_curvature_is_the_exact_hessian(kind):
    K = 3
    gate = make_gate(kind, K)
    X, r = data(K, seed=1)
    L = GateLayers.of(gate)
    theta = L.theta()
    _, _, C = L.terms(X, r.T.contiguous(), theta, N, torch.empty(N, K, dtype=X.dtype), True)

    def D(t):
        return data_term(
            lambda x: torch.func.functional_call(gate, _params(gate, L, t), (x,)), X, r
        )

    assert torch.allclose(C, -torch.func.hessian(D)(theta), atol=1e-11)


def G(fitter: GateFitter, r) -> float:
    return float(fitter.expected(r, fitter.log_softmax()) + fitter.log_prior())


@pytest.mark.parametrize("kind", ["linear", "sigmoid"])
def test_newton_steps_reach_the_optimum_lbfgs_reaches(kind):
    """Repeated gate steps on fixed r: G(V) is concave in a linear gate with a prior (one
    optimum); for the MLP both optimisers start at the same point and reach the same G."""
    K, s = 3, 1.0
    X, r = data(K, seed=2)
    results = {}
    for method in ("newton", "lbfgs"):
        gate = make_gate(kind, K, seed=3)
        fitter = GateFitter(gate, X, 10, prior_scale=s, method=method)
        ls = fitter.log_softmax()
        for _ in range(200 if method == "newton" else 50):
            ls = fitter.step(r, ls)
        results[method] = (G(fitter, r), fitter.log_softmax())
    (g_newton, p_newton), (g_lbfgs, p_lbfgs) = results["newton"], results["lbfgs"]
    assert g_newton == pytest.approx(g_lbfgs, abs=1e-7)
    if kind == "linear":  # one optimum (the biases up to a common shift: compare g itself)
        assert torch.allclose(p_newton, p_lbfgs, atol=1e-5)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    kind=st.sampled_from(KINDS),
    K=st.integers(2, 4),
    seed=st.integers(0, 10_000),
    scale=st.sampled_from([None, 0.1, 3.0]),
    share=st.sampled_from([1.0, 0.7]),
    steps=st.integers(1, 3),
)
def test_a_gate_step_never_lowers_g(kind, K, seed, scale, share, steps):
    """Each step returns the log softmax at the kept parameters, and G there is not below G
    before, for any r (rows summing to one or less), start and prior."""
    X, r = data(K, seed=seed, share=share)
    gate = make_gate(kind, K, seed=seed)
    fitter = GateFitter(gate, X, steps, prior_scale=scale, method="newton")
    assert fitter.layers is not None
    ls = fitter.log_softmax()
    for _ in range(4):
        before = float(fitter.expected(r, ls) + fitter.log_prior())
        ls = fitter.step(r, ls)
        assert torch.allclose(ls, fitter.log_softmax(), atol=1e-12)
        assert float(fitter.expected(r, ls) + fitter.log_prior()) >= before


def test_gates_of_another_form_take_lbfgs():
    K = 2
    X, r = data(K)
    other = ScaledInput(
        torch.nn.Sequential(torch.nn.Linear(n, H), torch.nn.ReLU(), torch.nn.Linear(H, K)).double(),
        torch.ones(n, dtype=torch.float64),
    )
    assert GateLayers.of(other) is None
    fitter = GateFitter(other, X, 10)
    assert fitter.layers is None
    ls = fitter.log_softmax()
    before = float(fitter.expected(r, ls))
    assert float(fitter.expected(r, fitter.step(r, ls))) >= before
    with pytest.raises(InputError, match="Gauss-Newton"):
        GateFitter(other, X, 10, method="newton")
    with pytest.raises(InputError, match="auto, newton or lbfgs"):
        GateFitter(make_gate("linear", K), X, 10, method="bfgs")


def test_a_float32_working_copy_takes_lbfgs():
    """gate_dtype="float32" asks for a float32 copy of the gate: L-BFGS's (the Gauss-Newton
    terms run in the data's dtype)."""
    X, _ = data(2)
    assert GateFitter(make_gate("sigmoid", 2), X, 10, dtype=torch.float32).layers is None
    assert GateFitter(make_gate("sigmoid", 2), X, 10, method="auto").layers is not None


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("scale", [None, 0.5])
def test_the_lbfgs_closure_by_hand_is_autograds(kind, scale, monkeypatch):
    """The L-BFGS closure of a gate of known form (GateLayers.terms, written by hand, the
    gate prior's term too) returns autograd's loss and leaves its gradients, and both
    L-BFGS steps end at the same G."""
    import pyro_moe.engines.gate as gate_module

    K = 3
    X, r = data(K, seed=4)
    out = {}
    for by_hand in (True, False):
        monkeypatch.setattr(gate_module, "GATE_LBFGS_BY_HAND", by_hand)
        fitter = GateFitter(make_gate(kind, K, seed=5), X, 10, prior_scale=scale, method="lbfgs")
        assert (fitter.known is not None) == by_hand
        fitter.opt = fitter._lbfgs()
        loss = float(fitter._closure(r)())
        grads = [p.grad.clone() for p in fitter.params]
        ls = fitter.step(r, fitter.log_softmax())
        out[by_hand] = (loss, grads, G(fitter, r), ls, fitter)
    (l1, g1, G1, ls1, f1), (l0, g0, G0, _, _) = out[True], out[False]
    assert l1 == pytest.approx(l0, rel=1e-13)
    for a, b in zip(g1, g0, strict=True):
        assert torch.allclose(a, b, rtol=1e-10, atol=1e-14)
    assert G1 == pytest.approx(G0, rel=1e-9)
    # the log softmax the closure kept is the one at the kept parameters
    assert torch.allclose(ls1, f1.log_softmax(), atol=1e-12)
