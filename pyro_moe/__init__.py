"""pyro_moe: Bayesian mixtures of linear models and mixtures of experts on Pyro.

Fit a model file two ways, on the same model: Pyro SVI and closed-form variational EM.

    >>> import pyro_moe
    >>> model = pyro_moe.load_model("mixture_of_experts")
    >>> result = pyro_moe.fit(model, X, y, experts=2, method="cavi")   # doctest: +SKIP
"""

from .compare import Comparison, compare, compare_circles
from .config import Config
from .curve_fitting import fit_circles, fit_conics, fit_curves
from .errors import (
    ConvergenceWarning,
    ImageError,
    InputError,
    ModelFileError,
    NonConjugateError,
    NumericalError,
    PyroMoeError,
)
from .fitting import fit
from .model_file import Model, builtin_models, load_model
from .result import FitResult, Prediction
from .selection import Selection, select_circles, select_curves, select_experts
from .uncertainty import circle_uncertainty, conic_uncertainty, curve_uncertainty

__version__ = "0.1.0"

__all__ = [
    "Comparison",
    "Config",
    "ConvergenceWarning",
    "FitResult",
    "ImageError",
    "InputError",
    "Model",
    "ModelFileError",
    "NonConjugateError",
    "NumericalError",
    "Prediction",
    "PyroMoeError",
    "Selection",
    "builtin_models",
    "circle_uncertainty",
    "compare",
    "compare_circles",
    "conic_uncertainty",
    "curve_uncertainty",
    "fit",
    "fit_circles",
    "fit_conics",
    "fit_curves",
    "load_model",
    "select_circles",
    "select_curves",
    "select_experts",
]
