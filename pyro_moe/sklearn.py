"""scikit-learn estimators on top of :func:`pyro_moe.fit` (the optional extra
``pyro_moe[sklearn]``; ``import pyro_moe`` does not import scikit-learn).

:class:`MixtureOfExpertsRegressor` fits a model file (default: the built-in
``mixture_of_experts``) to X (N, n) and y (N,), the design [X, 1] with ``fit_intercept``;
it works inside ``Pipeline`` (scaling, polynomial or spline features before it),
``cross_val_score`` and ``GridSearchCV``. Its :meth:`~MixtureOfExpertsRegressor.score` is
the mean log predictive density of held-out targets,

    score(X, y) = (1/N) sum_i log p(y_i | x_i, training data)

(:meth:`pyro_moe.result.Prediction.log_prob`), not R^2: larger is better, as scikit-learn's
model selection expects, and it rewards a predictive band that is right, not only a mean.

    from sklearn.model_selection import cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import PolynomialFeatures, StandardScaler
    from pyro_moe.sklearn import MixtureOfExpertsRegressor

    est = make_pipeline(StandardScaler(), PolynomialFeatures(3, include_bias=False),
                        MixtureOfExpertsRegressor())
    cross_val_score(est, X, y, cv=5)   # held-out log predictive density per point
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from .errors import InputError
from .fitting import fit
from .result import FitResult, Prediction
from .selection import select_experts

__all__ = ["MixtureOfExpertsClassifier", "MixtureOfExpertsRegressor"]


class _ModelFileEstimator:
    """What both estimators share: the design (an intercept column), the keywords of
    :func:`pyro_moe.fit`, the score (the mean held-out log-likelihood of the file's own
    predictive, nats per point: ``log_prob`` is each estimator's) and pickling through the
    result's ``.npz`` format."""

    def _design(self, X) -> np.ndarray:
        if not self.fit_intercept:
            return X
        return np.column_stack([X, np.ones(len(X), dtype=X.dtype)])

    def _fit_kwargs(self) -> dict[str, Any]:
        kw = dict(self.options or {})
        taken = {"experts", "method", "n_init", "seed", "max_iter", "tol"} & set(kw)
        if taken:
            raise InputError(f"options: give {sorted(taken)} as the estimator's own parameters")
        kw.update(method=self.method, seed=self.seed, max_iter=self.max_iter, tol=self.tol)
        if self.n_init is not None:
            kw["n_init"] = self.n_init
        return kw

    def score(self, X, y, sample_weight=None) -> float:
        """The mean held-out log predictive density (nats per point), weighted by
        ``sample_weight`` when given."""
        return float(np.average(self.log_prob(X, y), weights=sample_weight))

    # ---- pickling: the result through its own .npz format ---------------------------------
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        result = state.pop("result_", None)
        if result is not None:
            state["selection_"] = None if state.get("selection_") is None else "dropped"
            with tempfile.TemporaryDirectory() as tmp:
                path = result.save(Path(tmp) / "result.npz")
                state["_result_npz"] = path.read_bytes()
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        blob = state.pop("_result_npz", None)
        self.__dict__.update(state)
        if blob is not None:
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / "result.npz"
                path.write_bytes(blob)
                self.result_ = FitResult.load(path, model=self.model)


class MixtureOfExpertsRegressor(_ModelFileEstimator, RegressorMixin, BaseEstimator):
    """A Bayesian mixture of linear experts as a scikit-learn regressor.

    Args:
        model: a built-in model name, a model file's path or a loaded
            :class:`~pyro_moe.model_file.Model` (default ``"mixture_of_experts"``).
        experts: K, or ``"auto"``: K chosen by :func:`pyro_moe.select_experts` among
            ``1..max_experts`` on the training data.
        max_experts: the largest K that ``experts="auto"`` tries.
        method: the engine (``"cavi"``, ``"svi"``, ``"nuts"``).
        n_init: restarts (None: :func:`pyro_moe.fit`'s default).
        seed: the seed of the first restart; the fit is deterministic given it.
        fit_intercept: append a column of ones to X (the experts' intercepts; the gate's
            bias). Leave it on unless the design already has one.
        max_iter, tol: the engine's iteration limit and convergence tolerance (None: its
            defaults).
        options: further keywords of :func:`pyro_moe.fit` (``per_expert_noise``,
            ``noise_expert``, ``learn``, engine options such as ``lr``), a dict.

    Attributes (after ``fit``):
        result_: the :class:`~pyro_moe.result.FitResult`.
        experts_: the K fitted.
        selection_: the :class:`~pyro_moe.selection.Selection` with ``experts="auto"``,
            else None.
        n_iter_: the iterations of the kept fit (CAVI sweeps, SVI steps).
        n_features_in_: n.
    """

    def __init__(
        self,
        model: Any = "mixture_of_experts",
        experts: int | str = "auto",
        max_experts: int = 4,
        method: str = "cavi",
        n_init: int | None = None,
        seed: int = 0,
        fit_intercept: bool = True,
        max_iter: int | None = None,
        tol: float | None = None,
        options: dict | None = None,
    ) -> None:
        self.model = model
        self.experts = experts
        self.max_experts = max_experts
        self.method = method
        self.n_init = n_init
        self.seed = seed
        self.fit_intercept = fit_intercept
        self.max_iter = max_iter
        self.tol = tol
        self.options = options

    # ---- scikit-learn's protocol --------------------------------------------------------
    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        # score is the mean log predictive density (nats per point), not R^2: the check
        # that a regressor's score on its training data exceeds 0.5 does not apply
        tags.regressor_tags.poor_score = True
        return tags

    def fit(self, X, y) -> MixtureOfExpertsRegressor:
        """Fit the model file to X (N, n) and y (N,): one fit with ``experts`` experts, or
        :func:`pyro_moe.select_experts`'s choice with ``experts="auto"``."""
        X, y = validate_data(self, X, y, y_numeric=True, dtype=np.float64, ensure_min_samples=2)
        D = self._design(X)
        kw = self._fit_kwargs()
        self.selection_ = None
        if isinstance(self.experts, str):
            if self.experts != "auto":
                raise InputError(f"experts must be an integer or 'auto', got {self.experts!r}")
            kw.setdefault("n_init", 5)
            self.selection_ = select_experts(self.model, D, y, max_experts=self.max_experts, **kw)
            self.result_ = self.selection_.result
        else:
            self.result_ = fit(self.model, D, y, experts=self.experts, **kw)
        self.experts_ = int(self.result_.experts)
        self.n_iter_ = int(self.result_.iterations)
        return self

    def predictive(self, X) -> Prediction:
        """The posterior predictive at the rows of X (:meth:`FitResult.predict`)."""
        check_is_fitted(self, "result_")
        X = validate_data(self, X, reset=False, dtype=np.float64)
        return self.result_.predict(self._design(X))

    def predict(self, X) -> np.ndarray:
        """The posterior predictive mean E[y | x, data] (N,)."""
        return self.predictive(X).mean.detach().cpu().numpy()

    def predict_std(self, X) -> np.ndarray:
        """The posterior predictive standard deviation (N,)."""
        return self.predictive(X).variance.sqrt().detach().cpu().numpy()

    def predict_interval(self, X, level: float = 0.95) -> np.ndarray:
        """The central ``level`` interval of the predictive mixture, (N, 2)
        (:meth:`Prediction.interval`)."""
        return self.predictive(X).interval(level).detach().cpu().numpy()

    def log_prob(self, X, y) -> np.ndarray:
        """log p(y_i | x_i, training data) (N,) (:meth:`Prediction.log_prob`)."""
        pred = self.predictive(X)
        y = np.asarray(y, dtype=np.float64).reshape(-1)
        return pred.log_prob(torch.as_tensor(y)).detach().cpu().numpy()

    def sample(self, X, n_samples: int = 1, random_state: int | None = None) -> np.ndarray:
        """Draws of y from the predictive mixture at each row, (n_samples, N): an expert
        k ~ g(x) (the noise expert among them), then y ~ N(mu_k(x), s_k(x)^2) (or the
        noise expert's uniform)."""
        pred = self.predictive(X)
        if pred.likelihood != "Normal":
            raise InputError(
                f"sample draws from the closed form's Gaussian experts; this model file's "
                f"'y' is {pred.likelihood}"
            )
        rng = np.random.default_rng(random_state)
        g = pred.expert_weights.detach().cpu().numpy()
        mu = pred.expert_means.detach().cpu().numpy()
        sd = pred.expert_variances.sqrt().detach().cpu().numpy()
        if pred.noise_weight is not None:
            lo, hi = pred.noise_bounds.detach().cpu().numpy()
            g = np.column_stack([g, pred.noise_weight.detach().cpu().numpy()])
        N, C = g.shape
        cum = np.cumsum(g / g.sum(1, keepdims=True), 1)
        u = rng.random((n_samples, N, 1))
        k = np.minimum((u > cum).sum(-1), C - 1)  # (S, N)
        K = mu.shape[1]
        kk = np.minimum(k, K - 1)
        rows = np.arange(N)
        draws = mu[rows, kk] + sd[rows, kk] * rng.standard_normal((n_samples, N))
        if pred.noise_weight is not None:
            draws = np.where(k == K, rng.uniform(lo, hi, (n_samples, N)), draws)
        return draws


class MixtureOfExpertsClassifier(_ModelFileEstimator, ClassifierMixin, BaseEstimator):
    """A Bayesian mixture of logistic experts with a gate as a scikit-learn classifier
    (two classes): the built-in ``logistic_experts`` file by default, fitted in closed form
    by the Jaakkola-Jordan bound (``pyro_moe/closed_form/logistic.py``).

    :meth:`predict_proba` is the posterior predictive P(y | x, data) of the file's own
    Bernoulli likelihood (:meth:`pyro_moe.result.FitResult.predict`, ``draws`` Monte Carlo
    draws of q); :meth:`score` the mean held-out log-likelihood per point (nats; larger is
    better), not the accuracy.

    Args:
        model: a model file with a Bernoulli ``y`` (default ``"logistic_experts"``).
        experts: K.
        method, n_init, seed, fit_intercept, max_iter, tol, options: as
            :class:`MixtureOfExpertsRegressor`'s.
        draws: posterior draws of the predictive.

    Attributes (after ``fit``): ``result_``, ``classes_`` (the two labels; the second is
    y = 1 of the model), ``experts_``, ``n_iter_``, ``n_features_in_``.
    """

    def __init__(
        self,
        model: Any = "logistic_experts",
        experts: int = 2,
        method: str = "cavi",
        n_init: int | None = None,
        seed: int = 0,
        fit_intercept: bool = True,
        max_iter: int | None = None,
        tol: float | None = None,
        draws: int = 500,
        options: dict | None = None,
    ) -> None:
        self.model = model
        self.experts = experts
        self.method = method
        self.n_init = n_init
        self.seed = seed
        self.fit_intercept = fit_intercept
        self.max_iter = max_iter
        self.tol = tol
        self.draws = draws
        self.options = options

    def fit(self, X, y) -> MixtureOfExpertsClassifier:
        """Fit the model file to X (N, n) and labels y (N,) of two classes."""
        X, y = validate_data(self, X, y, dtype=np.float64, ensure_min_samples=2)
        check_classification_targets(y)
        self.classes_, codes = np.unique(y, return_inverse=True)
        if len(self.classes_) != 2:
            raise InputError(f"MixtureOfExpertsClassifier needs two classes, got {self.classes_}")
        self.result_ = fit(
            self.model, self._design(X), codes.astype(np.float64), experts=self.experts,
            **self._fit_kwargs(),
        )  # fmt: skip
        self.experts_ = int(self.result_.experts)
        self.n_iter_ = int(self.result_.iterations)
        return self

    def predictive(self, X) -> Prediction:
        """The posterior predictive at the rows of X (Bernoulli: ``mean`` is P(y = 1))."""
        check_is_fitted(self, "result_")
        X = validate_data(self, X, reset=False, dtype=np.float64)
        pred = self.result_.predict(self._design(X), draws=self.draws, seed=self.seed)
        if pred.likelihood != "Bernoulli":
            raise InputError(f"the model file's 'y' is {pred.likelihood}, not Bernoulli")
        return pred

    def predict_proba(self, X) -> np.ndarray:
        """P(class | x, data), (N, 2), columns in the order of ``classes_``."""
        p = self.predictive(X).mean.detach().cpu().numpy()
        return np.column_stack([1.0 - p, p])

    def predict(self, X) -> np.ndarray:
        """The more probable class of each row."""
        return self.classes_[(self.predict_proba(X)[:, 1] > 0.5).astype(int)]

    def log_prob(self, X, y) -> np.ndarray:
        """log P(y_i | x_i, training data) (N,) of labels y (of ``classes_``)."""
        check_is_fitted(self, "result_")
        y = np.asarray(y).reshape(-1)
        unknown = ~np.isin(y, self.classes_)
        if unknown.any():
            raise InputError(f"labels {np.unique(y[unknown])} are not among {self.classes_}")
        code = (y == self.classes_[1]).astype(np.float64)
        return self.predictive(X).log_prob(torch.as_tensor(code)).detach().cpu().numpy()
