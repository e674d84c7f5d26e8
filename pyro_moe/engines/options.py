"""Engine options, declared once and validated once for every engine.

Each engine declares its options as a mapping ``name -> Option(default, constraint)``
(scikit-learn's ``_parameter_constraints`` in spirit); :func:`resolve` merges the options
every engine shares (:data:`COMMON`) with the engine's own, refuses unknown names, checks
each value against its constraint and returns a frozen :class:`Options`. A bad value is
one :class:`~pyro_moe.errors.InputError` that names the option, the value and what is
allowed, whatever the engine.

The shared options mean the same thing in every engine: ``max_iter`` is the number of
objective-improving iterations (a CAVI sweep, one SVI step), ``tol`` the relative change
of the objective that counts as converged, ``n_init`` the restarts (the best final
objective is kept), ``seed`` the seed of the first restart (restart i uses seed + i).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import numpy as np
import torch

from ..errors import InputError

__all__ = [
    "CLOSED_FORM",
    "COMMON",
    "INITS",
    "Constraint",
    "Option",
    "Options",
    "boolean",
    "integer",
    "number",
    "one_of",
    "resolve",
]

#: Initialisation strategies of q(Z) (:mod:`pyro_moe.closed_form.init`); "auto" picks.
INITS = ("auto", "prior", "subsets", "random")
#: Seeds are restart seeds seed, seed + 1, ...: numpy and torch accept [0, 2**32).
SEED_MAX = 2**32 - 1 - 1000
#: At most this many restarts (seed + i stays below 2**32; each restart is a full fit).
MAX_RESTARTS = 1000


@dataclass(frozen=True)
class Constraint:
    """A predicate on an option's value with the words that say what is allowed."""

    check: Callable[[Any], bool]
    allowed: str

    def __call__(self, value: Any) -> bool:
        try:
            return bool(self.check(value))
        except (TypeError, ValueError):
            return False


def _is_int(v: Any) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _is_real(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def integer(low: int | None = None, high: int | None = None, *, none: bool = False) -> Constraint:
    """An integer in [low, high] (either end open when None); ``none``: None allowed too."""

    def check(v: Any) -> bool:
        if v is None:
            return none
        return _is_int(v) and (low is None or v >= low) and (high is None or v <= high)

    words = "an integer" + (f" >= {low}" if low is not None else "")
    words += f" <= {high}" if high is not None else ""
    return Constraint(check, words + (" or None" if none else ""))


def number(
    low: float | None = None,
    *,
    strict: bool = False,
    high: float | None = None,
    high_strict: bool = False,
    none: bool = False,
) -> Constraint:
    """A finite real number above ``low`` (``strict``: > low, else >= low) and below
    ``high``; ``none``: None allowed too. NaN and inf are never allowed."""

    def check(v: Any) -> bool:
        if v is None:
            return none
        if not _is_real(v) or not math.isfinite(v):
            return False
        if low is not None and (v <= low if strict else v < low):
            return False
        return high is None or (v < high if high_strict else v <= high)

    words = "a finite number"
    if low is not None:
        words += f" {'>' if strict else '>='} {low}"
    if high is not None:
        words += f" {'<' if high_strict else '<='} {high}"
    return Constraint(check, words + (" or None" if none else ""))


def one_of(*values: Any, none: bool = False) -> Constraint:
    """One of ``values`` (compared with ==, bools apart from ints)."""

    def check(v: Any) -> bool:
        if v is None:
            return none
        return any(type(v) is type(w) and v == w for w in values)

    words = "one of " + ", ".join(repr(v) for v in values)
    return Constraint(check, words + (" or None" if none else ""))


def boolean(*, none: bool = False) -> Constraint:
    """True or False (``none``: or None, meaning 'decide for me')."""
    return Constraint(
        lambda v: isinstance(v, bool) or (none and v is None),
        "True or False" + (" or None" if none else ""),
    )


def _init_ok(v: Any) -> bool:
    if isinstance(v, str):
        return v in INITS
    if isinstance(v, list | tuple):
        return len(v) > 0 and all(isinstance(s, str) and s in INITS[1:] for s in v)
    return False


def _responsibilities_ok(v: Any) -> bool:
    if v is None:
        return True
    if torch.is_tensor(v):
        return v.dim() == 2 and not v.is_complex()
    a = np.asarray(v)
    return a.ndim == 2 and np.issubdtype(a.dtype, np.number) and not np.iscomplexobj(a)


@dataclass(frozen=True)
class Option:
    """One option: its default and its constraint."""

    default: Any
    constraint: Constraint
    doc: str = ""


#: The options every engine takes, with the same meaning everywhere.
COMMON: Mapping[str, Option] = MappingProxyType(
    {
        "n_init": Option(5, integer(1, MAX_RESTARTS), "restarts; the best final objective is kept"),
        "init": Option(
            "auto",
            Constraint(
                _init_ok,
                "one of 'auto', 'prior', 'subsets', 'random', or a non-empty list of "
                "'prior'/'subsets'/'random' (one per restart)",
            ),
            "initialisation of q(Z) for each restart",
        ),
        "seed": Option(0, integer(0, SEED_MAX), "seed of the first restart"),
        "responsibilities": Option(
            None,
            Constraint(_responsibilities_ok, "None or a real (N, C) array"),
            "initial q(Z); overrides init",
        ),
        "progress": Option(None, boolean(none=True), "progress bar (None: on a terminal)"),
        "max_iter": Option(None, integer(1), "iteration limit (a CAVI sweep, an SVI step)"),
        "tol": Option(None, number(0.0), "relative change of the objective to converge"),
    }
)


#: The closed-form sweep's options (:mod:`pyro_moe.engines.sweep`), declared once and read
#: by every engine that runs it (CAVI, natural-gradient SVI, both on Dask too).
#:
#: prior_var_min, noise_precision_max: the floors for noise-free data (eigenvalues of A_k
#: >= prior_var_min, beta <= noise_precision_max, default 1e10 / Var(y)).
#: gate_steps: the gate's iterations per step: L-BFGS iterations of its closed-form
#: M-step on the full batch, Adam steps on a minibatch (None: 10 and 1). gate_dtype:
#: "auto" (the data's dtype), "float32" or "float64"; the accept test is always in the
#: data's dtype. gate_warm_start: keep the L-BFGS history across sweeps (None: from
#: GATE_WARM_START_N points). Measured (benchmarks/results/cavi.md, and 15 iterations at
#: 1e6 points: float64 warm 8.8 s, float32 warm 16.6 s, same objective): float32 does not
#: pay here, because converged float32 L-BFGS never meets its tolerance and spends every
#: step; below 1e5 points the float64 cold start is cheap. gate_skip_tol: a gate step that
#: gained at most min(gate_skip_tol, tol) * max(|F|, N) nats is skipped for the next 1, 2,
#: 4, ... GATE_MAX_BACKOFF sweeps (the gate is the costliest block), never after the first
#: step, and the fit is not declared converged on a sweep that held the gate. With the
#: warm start, while the last gate step gained > GATE_PRESAMPLE_GAIN nats per point,
#: L-BFGS first runs on a subsample of GATE_PRESAMPLE rows (docs/cavi_notes.md section 6).
CLOSED_FORM: Mapping[str, Option] = MappingProxyType(
    {
        "prior_var_min": Option(1e-10, number(0.0, strict=True), "floor of A_k's eigenvalues"),
        "noise_precision_max": Option(
            None, number(0.0, strict=True, none=True), "ceiling of beta (None: 1e10 / Var y)"
        ),
        "gate_steps": Option(
            None, integer(1, none=True), "gate iterations per step (None: 10 L-BFGS, 1 Adam)"
        ),
        "gate_dtype": Option("auto", one_of("auto", "float32", "float64"), "the gate's dtype"),
        "gate_warm_start": Option(None, boolean(none=True), "keep L-BFGS history"),
        "gate_tolerance": Option(
            None, number(0.0, strict=True, none=True), "L-BFGS tolerance_change"
        ),
        "gate_skip_tol": Option(1e-7, number(0.0), "skip gate steps that gain less"),
    }
)


#: Shared options whose default each engine declares (None asks for it).
_ENGINE_DEFAULTS = ("max_iter", "tol")


class Options(Mapping[str, Any]):
    """Validated, read-only options of one fit: ``options.tol``, ``options["tol"]``."""

    def __init__(self, engine: str, values: Mapping[str, Any]):
        self._engine = engine
        self._values = dict(values)

    def __getattr__(self, name: str) -> Any:
        try:
            return self.__dict__["_values"][name]
        except KeyError:
            raise AttributeError(f"{self._engine} has no option {name!r}") from None

    def __getitem__(self, name: str) -> Any:
        return self._values[name]

    def __iter__(self):
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        shown = ", ".join(f"{k}={v!r}" for k, v in self._values.items() if k != "responsibilities")
        return f"Options[{self._engine}]({shown})"


def resolve(
    engine: str,
    declared: Mapping[str, Option],
    given: Mapping[str, Any],
    *,
    aliases: Mapping[str, str] | None = None,
) -> Options:
    """Merge :data:`COMMON` with an engine's ``declared`` options, check ``given``.

    ``None`` for ``max_iter`` or ``tol`` means the engine's default (declared under the
    same name). ``aliases`` maps an engine's older option names to the shared ones (e.g.
    SVI's ``max_steps`` to ``max_iter``); giving both is an error.
    """
    table = {**COMMON, **declared}
    values = dict(given)
    for old, new in (aliases or {}).items():
        if old in values:
            if values.get(new) is not None:
                raise InputError(f"give {new} or {old}, not both (they are the same limit)")
            values[new] = values.pop(old)
    unknown = sorted(set(values) - set(table))
    if unknown:
        raise InputError(
            f"unknown option(s) {', '.join(unknown)} for method={engine!r}; "
            f"known: {', '.join(sorted(table))}"
        )
    out: dict[str, Any] = {}
    for name, option in table.items():
        value = values.get(name, option.default)
        if value is None and name in _ENGINE_DEFAULTS:
            value = option.default  # the engine's own default (declared under this name)
            if value is None:
                raise InputError(f"engine {engine!r} declares no default for {name}")
        if isinstance(value, numbers.Integral) and not isinstance(value, bool):
            value = int(value)  # numpy integers and the like
        if not option.constraint(value):
            raise InputError(
                f"{name}={_show(value)} is not allowed for method={engine!r}: "
                f"{name} must be {option.constraint.allowed}"
            )
        out[name] = list(value) if name == "init" and not isinstance(value, str) else value
    return Options(engine, out)


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
