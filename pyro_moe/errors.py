"""Exception types of pyro_moe.

Every error the library raises on purpose derives from :class:`PyroMoeError`, so a
caller (and the CLI) can tell "you gave me something wrong" from a bug.
"""

from __future__ import annotations

import inspect
import os

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


class PyroMoeError(Exception):
    """Base class of every error pyro_moe raises on purpose."""


class InputError(PyroMoeError, ValueError):
    """Bad input data or arguments: says what is wrong and what to do."""


class ImageError(InputError):
    """An image that cannot be read, or that holds no usable foreground."""


class ModelFileError(PyroMoeError):
    """A model file that cannot be found, loaded, or understood."""


class NonConjugateError(PyroMoeError):
    """CAVI was asked to fit a model with a site that has no closed-form update.

    The message names the site and its distribution and suggests ``method="svi"``.
    """


class NumericalError(PyroMoeError, ArithmeticError):
    """A fit that broke down numerically (a factorisation that failed, a non-finite
    objective) on data that passed the input checks: degenerate data (duplicated or
    collinear rows, extreme values) or a bug. The message says which engine and what to try.
    """


class SchedulerError(PyroMoeError):
    """The Dask scheduler of a distributed fit cannot be reached (a one-line error, no
    traceback of Dask's)."""


class ConvergenceWarning(UserWarning):
    """The best run stopped at ``max_iter`` before meeting its tolerance."""


class EngineWarning(UserWarning):
    """An engine ran another step than the one asked for (natural-gradient SVI on a model
    file without a natural-gradient step runs Adam): the message names the sites and the
    optimizer that fitted them."""


def find_stack_level() -> int:
    """The ``stacklevel`` of the first frame outside pyro_moe (NumPyro's helper of the
    same name): a warning then points at the user's line, however deep it was raised."""
    frame = inspect.currentframe()
    level = 0
    while frame is not None:
        if not os.path.abspath(frame.f_code.co_filename).startswith(_PACKAGE_DIR + os.sep):
            break
        frame = frame.f_back
        level += 1
    return max(level, 1)
