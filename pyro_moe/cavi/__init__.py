"""Closed-form variational EM (coordinate ascent, CAVI) for the model files."""

from .conjugacy import Conjugate, read_model
from .engine import Options, fit_cavi, gate_step

__all__ = ["Conjugate", "Options", "fit_cavi", "gate_step", "read_model"]
