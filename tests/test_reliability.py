"""One contract for every bad input through the API (issue 17): a result or one
``PyroMoeError``, never another exception; each reproducer of the issue is a case here, and
a property test drives the public API with generated bad arguments and arrays."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, Phase, assume, given, settings
from hypothesis import strategies as st

import pyro_moe
from pyro_moe import FitResult, InputError, ModelFileError, PyroMoeError, fit, fit_circles
from pyro_moe.model_file import MODELS_DIR

RNG = np.random.default_rng(0)
N = 30
X = np.column_stack([RNG.normal(size=N), np.ones(N)])
Y = X @ [2.0, 1.0] + 0.1 * RNG.normal(size=N)
TH = np.linspace(0, 2 * np.pi, 40, endpoint=False)
CIRCLE = np.column_stack([3 + 2 * np.cos(TH), 1 + 2 * np.sin(TH)])


def _fit(X=X, y=Y, **kw):
    kw = {"experts": 2, "n_init": 1, "max_iter": 30, **kw}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", pyro_moe.ConvergenceWarning)
        return fit(kw.pop("model", "mixture_of_models"), X, y, **kw)


@pytest.fixture(scope="module")
def result() -> FitResult:
    return _fit()


# ---- arguments: one InputError naming the argument -------------------------------------
@pytest.mark.parametrize(
    "kw, name",
    [
        ({"max_iter": 0}, "max_iter"),
        ({"max_iter": -1}, "max_iter"),
        ({"max_iter": 2.5}, "max_iter"),
        ({"tol": "abc"}, "tol"),
        ({"tol": -1}, "tol"),
        ({"tol": math.nan}, "tol"),
        ({"tol": math.inf}, "tol"),
        ({"n_init": 1.5}, "n_init"),
        ({"seed": None}, "seed"),
        ({"seed": -1}, "seed"),
        ({"seed": 1.5}, "seed"),
        ({"seed": 2**64}, "seed"),
        ({"seed": -1, "method": "svi"}, "seed"),
        ({"learn": 123}, "learn"),
        ({"learn": ["gate"]}, "learn"),
        ({"learn": "nonsense"}, "learn"),
        ({"device": "nonsense"}, "device"),
        ({"device": 3}, "device"),
        ({"init": []}, "init"),
        ({"prior_mean": np.zeros((3, 3))}, "prior_mean"),
        ({"prior_var_min": -1}, "prior_var_min"),
        ({"gate_steps": -1}, "gate_steps"),
        ({"gate_dtype": "nonsense"}, "gate_dtype"),
        ({"gate_hidden": 4}, "gate_hidden"),  # the mixture of models has no gate
        ({"experts": 0}, "experts"),
        ({"experts": True}, "experts"),
        ({"experts": 2.0}, "experts"),
    ],
)
def test_a_bad_argument_is_one_input_error_naming_it(kw, name):
    with pytest.raises(InputError, match=name):
        _fit(**kw)


def test_a_learn_list_naming_the_gate_of_a_gateless_model_says_it_is_ignored():
    with pytest.warns(UserWarning, match="has no gate; 'gate' is ignored") as caught:
        res = _fit(learn=["prior_cov", "gate"])
    assert set(res.learn) == {"prior_cov"}
    assert caught[0].filename == __file__  # the warning points at the caller's line


def test_gate_hidden_zero_is_refused_for_a_gated_model():
    with pytest.raises(InputError, match="gate_hidden"):
        _fit(model="mixture_of_experts", gate_hidden=0)


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA present")
def test_cuda_without_cuda_is_an_input_error():
    with pytest.raises(InputError, match="CUDA is not available"):
        _fit(device="cuda")


@pytest.mark.parametrize(
    "X_, y_, what",
    [
        (X.astype(complex), Y, "X is complex"),
        (X, Y + 1j, "y is complex"),
        (np.array([["a", "b"]] * N), Y, "X must be a numeric"),
        (X, np.where(np.arange(N) == 3, np.nan, Y), "y has NaN"),
        (X * 1e200, Y, "overflow"),
    ],
)
def test_bad_arrays_are_refused(X_, y_, what):
    with pytest.raises(InputError, match=what):
        _fit(X_, y_)


def test_a_tensor_that_requires_grad_is_read_as_data():
    Xt = torch.tensor(X, requires_grad=True)
    res = _fit(Xt)
    assert not res.X.requires_grad and torch.isfinite(res.mean).all()


def test_fit_circles_refuses_an_n_by_3_array():
    with pytest.raises(InputError, match=r"shape \(40, 3\)"):
        fit_circles(np.column_stack([CIRCLE, np.ones(40)]), experts=1, n_init=1)


def test_integer_and_boolean_images_are_still_images():
    img = np.zeros((32, 32), dtype=bool)
    rr, cc = np.nonzero(np.abs(np.hypot(*np.mgrid[-16:16, -16:16]) - 10) < 0.8)
    img[rr, cc] = True
    for arr in (img, img.astype(np.uint8) * 255):
        (c,) = fit_circles(arr, experts=1, n_init=1).circles()
        assert abs(c.r - 10) < 0.5


# ---- predict, load, save ----------------------------------------------------------------
@pytest.mark.parametrize(
    "rows, what",
    [([[np.nan, 1.0]], "NaN"), ("abc", "numeric"), (np.array([[1 + 1j, 1]]), "complex")],
)
def test_predict_refuses_bad_rows(result, rows, what):
    with pytest.raises(InputError, match=what):
        result.predict(rows)


def test_load_refuses_what_it_cannot_read(result, tmp_path):
    good = result.save(tmp_path / "a.npz").read_bytes()
    (tmp_path / "trunc.npz").write_bytes(good[: len(good) // 2])
    (tmp_path / "empty.npz").write_bytes(b"")
    np.savez(tmp_path / "other.npz", a=np.zeros(3))
    np.save(tmp_path / "x.npy", np.zeros(3))
    for name in ("trunc.npz", "empty.npz", "other.npz", "x.npy", "missing.npz"):
        with pytest.raises(InputError, match="cannot read a saved result"):
            FitResult.load(tmp_path / name)


def test_save_refuses_what_is_not_a_regular_file(result, tmp_path):
    for dest in (tmp_path / "no" / "a.npz", tmp_path, Path("/dev/null")):
        with pytest.raises(InputError, match="cannot write"):
            result.save(dest)


# ---- degenerate data: a valid result, never a floating-point or LinAlg error ------------
@pytest.mark.parametrize(
    "X_, y_, K",
    [
        (X, np.full(N, 3.0), 2),  # constant targets
        (X, np.zeros(N), 2),  # all-zero targets
        (X[:1], Y[:1], 1),  # one row
        (np.repeat(X[:1], 10, 0), np.full(10, 2.0), 2),  # duplicate rows
        (np.column_stack([X, 2 * X[:, :1]]), Y, 2),  # collinear columns
        (X, X @ [2.0, 1.0], 1),  # an exact fit
    ],
    ids=["constant", "zero", "one-row", "duplicates", "collinear", "exact"],
)
def test_degenerate_data_give_a_valid_result(X_, y_, K):
    res = _fit(X_, y_, experts=K, max_iter=200)
    assert torch.isfinite(res.mean).all() and float(res.noise_precision) > 0
    assert math.isfinite(res.objective)


def test_an_exact_circle_gives_a_valid_result():
    (c,) = fit_circles(CIRCLE, experts=1, n_init=1).circles()
    assert abs(c.x0 - 3) < 1e-6 and abs(c.y0 - 1) < 1e-6 and abs(c.r - 2) < 1e-6


def test_noise_precision_stays_positive_when_the_residual_sum_cancels():
    from pyro_moe.closed_form.updates import update_noise_gamma, update_noise_precision

    beta = update_noise_precision(torch.tensor(-8e-13, dtype=torch.float64), 10.0, 1e10)
    assert float(beta) == pytest.approx(1e10)
    _, b = update_noise_gamma(torch.tensor(-1.0), 10.0, torch.tensor(1.0), torch.tensor(0.5))
    assert float(b) == 0.5


# ---- scale invariance ----------------------------------------------------------------------
@pytest.mark.parametrize("c, d", [(1e6, 1e6), (1e-6, 1e12)])
def test_scaling_the_data_scales_the_answer(c, d):
    rng = np.random.default_rng(1)
    x = rng.normal(size=120)
    X2 = np.column_stack([x, np.ones(120)])
    y2 = np.where(rng.random(120) < 0.5, 2 * x + 1, -3 * x + 0.5) + 0.05 * rng.normal(size=120)
    ref = _fit(X2, y2, n_init=2, max_iter=500)
    big = _fit(X2 * c, y2 * d, n_init=2, max_iter=500)
    np.testing.assert_allclose(big.mean.numpy() * c / d, ref.mean.numpy(), rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(big.responsibilities, ref.responsibilities, atol=1e-6)
    # the default weight prior is in the data's units: A_k = diag(rms(y) / rms(x_j))^2
    np.testing.assert_allclose(
        big.prior_cov.numpy() * (c / d) ** 2, ref.prior_cov.numpy(), rtol=1e-10
    )


@pytest.mark.parametrize("c, d", [(1e4, 1e4), (1e-3, 1e3)])
def test_the_gate_sees_its_inputs_in_the_data_units(c, d):
    rng = np.random.default_rng(1)
    x = rng.normal(size=200)
    X2 = np.column_stack([x, np.ones(200)])
    y2 = np.where(x < 0, 2 * x + 1, -3 * x + 0.5) + 0.05 * rng.normal(size=200)
    ref = _fit(X2, y2, model="mixture_of_experts", n_init=1, max_iter=200)
    big = _fit(X2 * c, y2 * d, model="mixture_of_experts", n_init=1, max_iter=200)
    # F changes by -N log d (the density of y d); the fit itself does not change
    assert big.objective + 200 * math.log(d) == pytest.approx(ref.objective, abs=0.05)
    np.testing.assert_allclose(big.mean.numpy() * c / d, ref.mean.numpy(), atol=2e-3)
    np.testing.assert_allclose(big.responsibilities, ref.responsibilities, atol=1e-3)


# ---- model files ------------------------------------------------------------------------
def _edited(tmp_path: Path, old: str, new: str, name: str = "edited") -> Path:
    text = (MODELS_DIR / "mixture_of_models.py").read_text()
    assert old in text
    path = tmp_path / f"{name}.py"
    path.write_text(text.replace(old, new))
    return path


BETA_LINE = "    beta = parts.noise_precision(config, noise_prior(config))\n"


@pytest.mark.parametrize("method", ["cavi", "svi"])
def test_a_model_failing_beyond_eight_rows_fails_with_file_and_line(tmp_path, method):
    path = _edited(tmp_path, BETA_LINE, BETA_LINE + "    assert X.shape[0] <= 8, 'rows'\n")
    line = path.read_text().splitlines().index("    assert X.shape[0] <= 8, 'rows'") + 1
    with pytest.raises(ModelFileError, match=rf"{path.name}, line {line}: AssertionError"):
        _fit(model=path, method=method, max_iter=3)


def test_a_guide_that_raises_under_svi_is_a_model_file_error(tmp_path):
    head = "def guide(X, y, config, subsample=None):\n"
    path = _edited(tmp_path, head, head + "    raise ValueError('broken guide')\n")
    with pytest.raises(ModelFileError, match="under SVI: broken guide"):
        _fit(model=path, method="svi", max_iter=3)


def test_sys_exit_at_import_is_a_model_file_error(tmp_path):
    path = tmp_path / "exits.py"
    path.write_text("import sys\nsys.exit(3)\n")
    with pytest.raises(ModelFileError, match="line 2.*SystemExit"):
        pyro_moe.load_model(path)


# ---- the property test ---------------------------------------------------------------------
BAD_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=4),
    st.lists(st.integers(-2, 2), max_size=3),
    st.just(1 + 1j),
    st.just(np.zeros((2, 2))),
)
ARGUMENTS = (
    "experts", "n_init", "init", "tol", "max_iter", "seed", "learn", "prior_mean", "prior_cov",
    "noise_precision", "concentration", "device", "progress", "noise_expert", "method",
    "responsibilities", "lr", "prior_var_min", "gate_steps", "gate_hidden",
)  # fmt: skip
FLOATS = st.floats(allow_nan=True, allow_infinity=True, width=64)
ARRAYS = st.one_of(
    st.lists(st.lists(FLOATS, min_size=1, max_size=3), min_size=1, max_size=6),
    st.lists(FLOATS, min_size=1, max_size=6),
    st.lists(st.lists(st.one_of(FLOATS, st.text(max_size=2)), min_size=2, max_size=2), max_size=6),
    st.just(np.zeros((0, 2))),
    st.just(np.ones((5, 2)) * (1 + 2j)),
)


#: no shrinking: a failing example is reported as drawn (each one costs a fit)
PHASES = (Phase.explicit, Phase.reuse, Phase.generate)


def _contract(call) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            call()
        except PyroMoeError:
            pass


@settings(
    max_examples=60, deadline=None, derandomize=True, phases=PHASES,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)  # fmt: skip
@given(st.dictionaries(st.sampled_from(ARGUMENTS), BAD_VALUES, min_size=1, max_size=2))
def test_fit_with_generated_arguments_gives_a_result_or_a_pyro_moe_error(kw):
    # a valid but long request (10**9 iterations, 1000 restarts) is not a bad input
    for name, most in (("max_iter", 1000), ("n_init", 10)):
        assume(not (isinstance(kw.get(name), int) and kw[name] > most))
    _contract(lambda: fit("mixture_of_models", X[:12], Y[:12], **{"max_iter": 5, **kw}))


@settings(max_examples=60, deadline=None, derandomize=True, phases=PHASES)
@given(ARRAYS, ARRAYS)
def test_fit_with_generated_arrays_gives_a_result_or_a_pyro_moe_error(X_, y_):
    _contract(lambda: fit("mixture_of_models", X_, y_, experts=1, n_init=1, max_iter=5))


@settings(max_examples=40, deadline=None, derandomize=True, phases=PHASES)
@given(ARRAYS, st.one_of(st.integers(-1, 3), BAD_VALUES))
def test_curves_and_predict_with_generated_input_give_a_result_or_a_pyro_moe_error(arr, k):
    _contract(lambda: fit_circles(arr, experts=k, n_init=1, max_iter=5))
    _contract(lambda: pyro_moe.select_experts("mixture_of_models", arr, arr, max_experts=2))
    _contract(lambda: _RESULT.predict(arr))
    _contract(lambda: FitResult.load(str(arr)[:50] + ".npz"))


_RESULT = _fit()
