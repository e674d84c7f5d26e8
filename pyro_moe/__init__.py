"""pyro_moe: Bayesian mixtures of linear models and mixtures of experts on Pyro.

Fit a model file two ways, on the same model: Pyro SVI and closed-form variational EM.

    >>> import pyro_moe
    >>> model = pyro_moe.load_model("mixture_of_experts")
    >>> result = pyro_moe.fit(model, X, y, experts=2, method="cavi")   # doctest: +SKIP

The public names are loaded on first use (a module ``__getattr__``, PEP 562): ``import
pyro_moe`` imports neither torch nor Pyro, so the command line answers ``--help`` and
``--version`` at once; ``pyro_moe.fit`` or ``from pyro_moe import fit`` imports what
``fit`` needs.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

#: Public name -> the module that defines it.
_HOMES = {
    "Comparison": "comparison",
    "compare": "comparison",
    "compare_circles": "comparison",
    "Config": "config",
    "CurveFit": "curves.result",
    "fit_circles": "curves.fitting",
    "fit_conics": "curves.fitting",
    "fit_curves": "curves.fitting",
    "ConvergenceWarning": "errors",
    "EngineWarning": "errors",
    "ImageError": "errors",
    "InputError": "errors",
    "ModelFileError": "errors",
    "NonConjugateError": "errors",
    "NumericalError": "errors",
    "PyroMoeError": "errors",
    "SchedulerError": "errors",
    "fit": "fitting",
    "Model": "model_file",
    "builtin_models": "model_file",
    "load_model": "model_file",
    "FitResult": "result",
    "Prediction": "result",
    "SearchPolicy": "search",
    "CurveReport": "curves.selection",
    "Selection": "selection",
    "curve_reports": "curves.selection",
    "select_circles": "curves.selection",
    "select_curves": "curves.selection",
    "select_experts": "selection",
    "circle_uncertainty": "curves.uncertainty",
    "conic_uncertainty": "curves.uncertainty",
    "curve_uncertainty": "curves.uncertainty",
}

#: submodules reachable as attributes of the package, imported on first use
_SUBMODULES = ("diagnostics",)

__all__ = [
    "Comparison",
    "Config",
    "ConvergenceWarning",
    "CurveFit",
    "CurveReport",
    "EngineWarning",
    "FitResult",
    "ImageError",
    "InputError",
    "Model",
    "ModelFileError",
    "NonConjugateError",
    "NumericalError",
    "Prediction",
    "PyroMoeError",
    "SchedulerError",
    "SearchPolicy",
    "Selection",
    "builtin_models",
    "circle_uncertainty",
    "compare",
    "compare_circles",
    "conic_uncertainty",
    "curve_reports",
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

if TYPE_CHECKING:  # what type checkers and IDEs see; never run
    from .comparison import Comparison, compare, compare_circles
    from .config import Config
    from .curves.fitting import fit_circles, fit_conics, fit_curves
    from .curves.result import CurveFit
    from .curves.selection import CurveReport, curve_reports, select_circles, select_curves
    from .curves.uncertainty import circle_uncertainty, conic_uncertainty, curve_uncertainty
    from .errors import (
        ConvergenceWarning,
        EngineWarning,
        ImageError,
        InputError,
        ModelFileError,
        NonConjugateError,
        NumericalError,
        PyroMoeError,
        SchedulerError,
    )
    from .fitting import fit
    from .model_file import Model, builtin_models, load_model
    from .result import FitResult, Prediction
    from .search import SearchPolicy
    from .selection import Selection, select_experts


def __getattr__(name: str) -> Any:
    """Import a public name's module on first use and keep the name (PEP 562)."""
    if name in _SUBMODULES:  # pyro_moe.diagnostics after a plain ``import pyro_moe``
        return importlib.import_module(f".{name}", __name__)
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{home}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
