"""Engine options, validated once for every engine (declared in :mod:`pyro_moe.parameters`).

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

import numbers
from collections.abc import Mapping
from typing import Any

from ..errors import InputError
from ..parameters import (
    CLOSED_FORM,
    COMMON,
    DEFAULT_RESTARTS,
    INITS,
    Constraint,
    Option,
    boolean,
    integer,
    number,
    one_of,
)

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
    "with_file_defaults",
]

#: Shared options whose default each engine declares (None asks for it).
_ENGINE_DEFAULTS = ("max_iter", "tol")
#: Engine options a model file may default in its SETTINGS (None given asks for it): the
#: gate's optimiser is measured per file (docs/cavi_notes.md section 6).
FILE_DEFAULTS = ("gate_method",)


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
    starts = out["init"] if isinstance(out["init"], list) else None
    if out["n_init"] is None:  # one restart per listed start, else the default count
        out["n_init"] = len(starts) if starts is not None else DEFAULT_RESTARTS
    elif starts is not None and len(starts) != out["n_init"]:
        raise InputError(
            f"init lists {len(starts)} starts but n_init={out['n_init']}; give one start per "
            "restart (or leave n_init out)"
        )
    return Options(engine, out)


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def with_file_defaults(
    options: Options, declared: Mapping[str, Option], settings: Mapping[str, Any], where: str
) -> Options:
    """``options`` with each :data:`FILE_DEFAULTS` option left None (and declared by the
    engine) taken from a model file's ``settings``, checked against its constraint (an
    :class:`~pyro_moe.errors.InputError` naming the file, ``where``, if not allowed)."""
    values = dict(options)
    for name in FILE_DEFAULTS:
        if name not in declared or values.get(name) is not None or name not in settings:
            continue
        value = settings[name]
        if not declared[name].constraint(value):
            raise InputError(
                f"{where}: SETTINGS[{name!r}]={_show(value)} is not allowed: {name} must be "
                f"{declared[name].constraint.allowed}"
            )
        values[name] = value
    if values == dict(options):
        return options
    out = Options(options._engine, values)
    noted = {k: v for k, v in vars(options).items() if k not in ("_engine", "_values")}
    vars(out).update(noted)  # what an engine noted on its options (SVI's ``defaulted``)
    return out
