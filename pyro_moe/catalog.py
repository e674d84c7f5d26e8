"""What the package offers, known without importing torch or Pyro: the built-in model
files and the names of the learnable hyperparameters.

The command line builds its parser (``--help``, ``--version``) from these alone, so that it
answers before any heavy library is imported; :mod:`pyro_moe.model_file` and
:mod:`pyro_moe.config` take them from here.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

__all__ = ["LEARNABLE", "MODELS_DIR", "builtin_models"]

#: Hyperparameters a fit may point-estimate (``fit(..., learn=...)``; :mod:`pyro_moe.config`).
LEARNABLE = ("prior_mean", "prior_cov", "noise_precision", "gate")


def _models_dir() -> Path:
    """The built-in model files: in a checkout, the top-level ``models/`` beside the package
    (the editable install and a checkout on ``PYTHONPATH`` alike); in an installed wheel, the
    package ``pyro_moe.models``, which setup.py maps to that folder."""
    beside = Path(__file__).resolve().parent.parent / "models"
    if (beside / "__init__.py").is_file() and (beside / "mixture_of_models.py").is_file():
        return beside
    spec = importlib.util.find_spec(f"{__package__}.models")
    if spec is not None and spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations))).resolve()
    return beside


MODELS_DIR = _models_dir()


def builtin_models() -> list[str]:
    """Names of the model files shipped in ``models/``."""
    return sorted(p.stem for p in MODELS_DIR.glob("*.py") if not p.stem.startswith("_"))
