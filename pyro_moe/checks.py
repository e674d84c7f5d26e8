"""Checks of the public arguments that are not engine options, written once.

The engine options (``max_iter``, ``tol``, ``seed``, ...) are declared and checked in
:mod:`pyro_moe.engines.options`; this module checks what every entry point takes besides
them: arrays (X, y, points, the rows given to ``predict``), a device, a count. A bad value
is one :class:`~pyro_moe.errors.InputError` that names the argument, the value and what
is allowed, for the API and the command line alike (the CLI's argument types call these
functions).

The rule for arrays: a real numeric array (numpy, torch, or nested lists of numbers);
complex values are refused (the imaginary part is never dropped silently), so are
strings, objects, dates and time spans, NaN or inf, None, and masked arrays with masked
entries (the mask is never ignored; drop or fill the masked rows yourself). Long double
arrays are read as float64, sparse tensors as dense ones; a meta tensor (no values) is
refused. A tensor that requires grad is read as data (detached):
no gradient flows through a fit.
"""

from __future__ import annotations

import functools
import numbers
import random
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np
import torch

from .errors import InputError

__all__ = ["as_array", "check_count", "check_device", "check_magnitude", "keeps_global_rngs"]

#: The largest magnitude a data value may have: its square (in X^T X) must stay finite in
#: float64 with room for sums over N points (1e150^2 = 1e300 < 1.8e308).
MAX_MAGNITUDE = 1e150


def check_device(device: Any) -> torch.device | None:
    """``device`` as a :class:`torch.device` that exists here (cpu, or cuda when
    available), or None; anything else is an InputError."""
    if device is None:
        return None
    if not isinstance(device, str | torch.device):
        raise InputError(f"device={device!r} is not allowed: give 'cpu', 'cuda' or 'cuda:N'")
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise InputError(
            f"device={device!r} is not a torch device: give 'cpu', 'cuda' or 'cuda:N'"
        ) from None
    if dev.type not in ("cpu", "cuda"):
        raise InputError(f"device={device!r}: only cpu and cuda devices are supported")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(f"device={device!r}: CUDA is not available on this machine")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise InputError(
                f"device={device!r}: this machine has {torch.cuda.device_count()} CUDA device(s)"
            )
    return dev


def check_count(name: str, value: Any, low: int = 1, high: int | None = None) -> int:
    """``value`` as an int in [low, high] (bools refused), else InputError naming ``name``."""
    ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if ok:
        value = int(value)
        ok = value >= low and (high is None or value <= high)
    if not ok:
        allowed = f"an integer >= {low}" + (f" and <= {high}" if high is not None else "")
        raise InputError(f"{name}={value!r} is not allowed: {name} must be {allowed}")
    return value


def as_array(
    name: str,
    value: Any,
    *,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
    finite: bool = True,
) -> torch.Tensor:
    """``value`` as a real tensor of ``dtype`` on ``device`` (see the module docstring).

    Raises InputError for a non-numeric or complex array, and (``finite``) for NaN or inf,
    naming the first bad row.
    """
    if value is None:
        raise InputError(f"{name} is None: give an array of numbers")
    if torch.is_tensor(value):
        t = value.detach()
        if t.device.type == "meta":
            raise InputError(f"{name} is a tensor on the meta device: it holds no values")
        if t.layout != torch.strided:  # sparse: its values, as a dense tensor
            try:
                t = t.to_dense()
            except (RuntimeError, TypeError, NotImplementedError) as e:
                raise InputError(f"{name} is a {t.layout} tensor that cannot be made dense: "
                                 f"{e}") from None  # fmt: skip
    else:
        a = numeric_array(name, value)
        try:
            t = torch.from_numpy(a)
        except TypeError:  # a type torch cannot hold (e.g. some unsigned widths)
            t = torch.from_numpy(a.astype(np.float64))
    if t.is_complex():
        raise InputError(
            f"{name} is complex: pyro_moe fits real data; pass the real part (or the "
            "real and imaginary parts as separate columns) yourself"
        )
    try:
        t = t.to(dtype=dtype, device=device)
    except (RuntimeError, TypeError) as e:
        raise InputError(f"{name} cannot be converted to {dtype} on {device}: {e}") from None
    if finite and t.numel():
        bad = ~torch.isfinite(t)
        if bad.any():
            rows = bad.reshape(t.shape[0], -1).any(-1) if t.dim() else bad.reshape(1)
            first = int(rows.nonzero()[0])
            raise InputError(
                f"{name} has NaN or inf in {int(rows.sum())} row(s), first at row {first}"
            )
    return t


def numeric_array(name: str, value: Any) -> np.ndarray:
    """``value`` as a numpy array torch can read: bool, integer, float (long double read as
    float64) or complex (refused by the caller); a masked array with masked entries,
    dates and time spans, strings and objects that are not numbers are InputErrors."""
    if np.ma.isMaskedArray(value):
        if np.ma.getmaskarray(value).any():
            raise InputError(f"{name} is a masked array with masked entries: {MASKED}")
        value = np.ma.getdata(value)
    try:
        a = np.asarray(value)
    except (TypeError, ValueError) as e:
        raise InputError(f"{name} must be a numeric array: {e}") from None
    if a.dtype == object:
        try:
            a = a.astype(np.float64)
        except (TypeError, ValueError):
            raise InputError(
                f"{name} must be a numeric array, got an array of {_kinds(a)}"
            ) from None
    if a.dtype.kind in "mM":
        raise InputError(
            f"{name} has dtype {a.dtype} (dates or time spans): convert it to numbers first, "
            "e.g. divide by np.timedelta64(1, 's')"
        )
    if not (np.issubdtype(a.dtype, np.number) or a.dtype == bool):
        raise InputError(f"{name} must be a numeric array, got dtype {a.dtype}")
    if a.dtype.kind == "c" and a.dtype.itemsize > 16:  # complex long double
        a = a.astype(np.complex128)
    elif a.dtype.kind == "f" and a.dtype.itemsize > 8:  # long double: torch has no such type
        with np.errstate(over="ignore"):
            a = a.astype(np.float64)  # beyond float64's range: inf, refused as such
    return a if a.flags.c_contiguous and a.flags.writeable else a.copy()


#: What a masked array with masked entries gets told (by :func:`as_array` and
#: :func:`pyro_moe.shapes.points.validate_points`).
MASKED = (
    "masked values are not dropped nor filled silently; drop the masked rows yourself "
    "(e.g. a[~np.ma.getmaskarray(a).any(axis=1)]) or fill them (a.filled(value))"
)


def check_magnitude(name: str, t: torch.Tensor) -> None:
    """InputError when a value of ``t`` exceeds :data:`MAX_MAGNITUDE` in absolute value
    (its square would overflow float64); the message says to rescale."""
    if t.numel() and float(t.abs().max()) > MAX_MAGNITUDE:
        raise InputError(
            f"{name} has values up to {float(t.abs().max()):.3g}, beyond {MAX_MAGNITUDE:.0e}: "
            "their squares overflow float64; rescale the data (the fit does not depend on "
            "the scale of each column)"
        )


def _kinds(a: np.ndarray) -> str:
    kinds = sorted({type(v).__name__ for v in a.reshape(-1)[:100]})
    return ", ".join(kinds)


F = TypeVar("F", bound=Callable[..., Any])


def keeps_global_rngs(fn: F) -> F:
    """Decorate a fitting function so that it leaves the caller's global random states as
    they were: torch's (CPU and CUDA, :func:`torch.random.fork_rng`), numpy's legacy
    ``np.random`` and Python's ``random`` (Pyro's ``set_rng_seed`` seeds all three). A fit
    draws from its own seeded generators; the caller's next ``torch.rand`` is the same
    with or without it."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        cuda = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
        np_state, py_state = np.random.get_state(), random.getstate()  # noqa: NPY002
        try:
            with torch.random.fork_rng(devices=cuda):
                return fn(*args, **kwargs)
        finally:
            np.random.set_state(np_state)  # noqa: NPY002
            random.setstate(py_state)

    return wrapper  # type: ignore[return-value]
