"""MixtureOfExpertsRegressor: scikit-learn's estimator checks, and the estimator inside
Pipeline, cross_val_score and GridSearchCV; its score is the held-out log predictive
density of :meth:`Prediction.log_prob`."""

from __future__ import annotations

import pickle
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("sklearn")

from sklearn.model_selection import GridSearchCV, KFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import PolynomialFeatures, StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

import pyro_moe
from pyro_moe.errors import InputError
from pyro_moe.sklearn import MixtureOfExpertsRegressor

#: small, quick settings: the checks fit dozens of times on 20-200 points
QUICK = dict(experts=2, n_init=1, max_iter=30)

#: the checks that do not apply, with the reason (none today: poor_score is a tag, see
#: MixtureOfExpertsRegressor.__sklearn_tags__: score is a log density, not R^2)
EXPECTED_FAILED: dict[str, str] = {}


@parametrize_with_checks(
    [MixtureOfExpertsRegressor(**QUICK)], expected_failed_checks=lambda est: EXPECTED_FAILED
)
@pytest.mark.filterwarnings("ignore::pyro_moe.errors.ConvergenceWarning")
def test_scikit_learn_estimator_checks(estimator, check):
    check(estimator)


def two_regimes(n=90, seed=0):
    """y = 2 x + noise 0.3 below x = 0, -2 x + 3 + noise 1.5 above: two regimes."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-2, 2, n)
    y = np.where(
        x < 0, 2 * x + 0.3 * rng.standard_normal(n), 3 - 2 * x + 1.5 * rng.standard_normal(n)
    )
    return x[:, None], y


def test_score_is_the_mean_log_predictive_density_of_the_result():
    X, y = two_regimes()
    est = MixtureOfExpertsRegressor(experts=2, n_init=1).fit(X[:60], y[:60])
    D = np.column_stack([X[60:], np.ones(30)])
    want = est.result_.predict(D).log_prob(y[60:]).mean().item()
    assert est.score(X[60:], y[60:]) == pytest.approx(want, rel=1e-12)
    assert est.log_prob(X[60:], y[60:]).shape == (30,)


@pytest.mark.filterwarnings("ignore::pyro_moe.errors.ConvergenceWarning")
def test_cross_val_score_in_a_pipeline_beats_one_linear_model():
    X, y = two_regimes()
    cv = KFold(3, shuffle=True, random_state=0)
    two = cross_val_score(MixtureOfExpertsRegressor(experts=2, n_init=1), X, y, cv=cv)
    one = cross_val_score(MixtureOfExpertsRegressor(experts=1, n_init=1), X, y, cv=cv)
    assert two.shape == (3,) and np.isfinite(two).all()
    assert two.mean() > one.mean() + 0.2  # the regimes' noise differs by a factor of 5
    pipe = make_pipeline(
        StandardScaler(),
        PolynomialFeatures(2, include_bias=False),
        MixtureOfExpertsRegressor("mixture_of_models", experts=2, n_init=1),
    )
    assert np.isfinite(cross_val_score(pipe, X, y, cv=cv)).all()


@pytest.mark.filterwarnings("ignore::pyro_moe.errors.ConvergenceWarning")
def test_grid_search_chooses_experts_by_held_out_density():
    X, y = two_regimes()
    grid = GridSearchCV(MixtureOfExpertsRegressor(n_init=1), {"experts": [1, 2]}, cv=3)
    grid.fit(X, y)
    assert grid.best_params_ == {"experts": 2}


def test_svi_defaults_predict_as_cavi_on_the_built_in_file():
    """Natural-gradient SVI on the full batch with step 1 is CAVI (pyro_moe.engines.svi):
    with their defaults the two engines give the same held-out score, so the benchmark's
    agreement of CAVI and SVI (benchmarks/results/regression.md) is not luck of the data."""
    X, y = two_regimes()
    cv = KFold(3, shuffle=True, random_state=0)
    est = {m: MixtureOfExpertsRegressor(experts=2, n_init=2, method=m) for m in ("cavi", "svi")}
    scores = {m: cross_val_score(e, X, y, cv=cv) for m, e in est.items()}
    np.testing.assert_allclose(scores["svi"], scores["cavi"], atol=1e-6)
    fitted = est["svi"].fit(X, y)
    assert set(fitted.result_.info["steps"].values()) <= {"natural", "closed form"}


def test_auto_chooses_k_with_select_experts():
    X, y = two_regimes()
    est = MixtureOfExpertsRegressor("mixture_of_models", max_experts=3, n_init=1).fit(X, y)
    assert est.selection_ is not None and est.experts_ == est.selection_.experts
    assert [row["experts"] for row in est.selection_.table] == [1, 2, 3]


def test_interval_sample_and_pickle():
    X, y = two_regimes()
    est = MixtureOfExpertsRegressor(experts=2, n_init=1).fit(X, y)
    band = est.predict_interval(X, 0.9)
    inside = np.mean((band[:, 0] <= y) & (y <= band[:, 1]))
    assert band.shape == (90, 2) and 0.8 < inside <= 1.0
    draws = est.sample(X, 400, random_state=0)
    assert draws.shape == (400, 90)
    # the draws' mean and sd are the predictive mixture's
    np.testing.assert_allclose(
        draws.mean(0), est.predict(X), atol=4 * est.predict_std(X).max() / 20
    )
    again = pickle.loads(pickle.dumps(est))
    np.testing.assert_allclose(again.predict(X), est.predict(X), rtol=1e-12)


def test_bad_experts_and_options_are_refused():
    X, y = two_regimes()
    with pytest.raises(InputError, match="'auto'"):
        MixtureOfExpertsRegressor(experts="many").fit(X, y)
    with pytest.raises(InputError, match="estimator's own parameters"):
        MixtureOfExpertsRegressor(options={"seed": 3}).fit(X, y)


def test_importing_pyro_moe_does_not_import_sklearn():
    code = "import sys, pyro_moe; pyro_moe.fit; assert 'sklearn' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
    assert pyro_moe  # the package under test


def test_classifier_predicts_probabilities_of_its_labels():
    """MixtureOfExpertsClassifier (logistic experts): probabilities in the order of
    classes_, any two labels, score the mean held-out log-likelihood (above the null
    model's on gated data), and a pickle round trip keeps the predictions."""
    import warnings

    from pyro_moe.datasets import gated_logistic
    from pyro_moe.sklearn import MixtureOfExpertsClassifier

    X, y, _ = gated_logistic(200, seed=0)
    Xt, yt, _ = gated_logistic(200, seed=1)
    labels = np.array(["no", "yes"])
    est = MixtureOfExpertsClassifier(n_init=1, max_iter=200, tol=1e-6, draws=200)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", pyro_moe.ConvergenceWarning)
        est.fit(X[:, :1], labels[y.astype(int)])
    assert list(est.classes_) == ["no", "yes"]
    proba = est.predict_proba(Xt[:, :1])
    assert proba.shape == (200, 2) and np.allclose(proba.sum(1), 1.0)
    assert set(est.predict(Xt[:, :1])) <= {"no", "yes"}
    score = est.score(Xt[:, :1], labels[yt.astype(int)])
    p0 = y.mean()
    null = float(np.mean(yt * np.log(p0) + (1 - yt) * np.log(1 - p0)))
    assert score > null + 0.1, (score, null)
    again = pickle.loads(pickle.dumps(est))
    np.testing.assert_allclose(again.predict_proba(Xt[:, :1]), proba, rtol=1e-12)
    with pytest.raises(InputError, match="not among"):
        est.score(Xt[:, :1], np.array(["maybe"] * 200))
