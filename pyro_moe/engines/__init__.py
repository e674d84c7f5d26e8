"""Inference engines as plug-ins: one template (:class:`~pyro_moe.engines.base.Engine`),
one options type (:mod:`~pyro_moe.engines.options`), engines registered by name.

``pyro_moe.fit(..., method=NAME)`` looks the engine up here. Built in: ``"cavi"``
(:class:`~pyro_moe.engines.cavi.CAVI`, closed-form variational EM) and ``"svi"``
(:class:`~pyro_moe.engines.svi.SVI`, Pyro SVI) and ``"nuts"`` (:class:`~pyro_moe.engines.nuts.NUTS`,
Pyro's NUTS on the exact posterior at CAVI's hyperparameters). CAVI and natural-gradient
SVI run one closed-form sweep (:mod:`~pyro_moe.engines.sweep`) over a data source
(:class:`~pyro_moe.engines.source.DataSource`). A new variational engine subclasses
:class:`~pyro_moe.engines.base.Variational`, declares its options, implements ``run`` (one
restart) and calls :func:`register`; another kind (a sampler) subclasses
:class:`~pyro_moe.engines.base.Engine` and implements ``run_fit``.
"""

from __future__ import annotations

from ..errors import InputError
from .base import Engine, Progress, Run, Variational
from .cavi import CAVI
from .nuts import NUTS
from .options import COMMON, Option, Options
from .svi import SVI

__all__ = [
    "CAVI",
    "COMMON",
    "ENGINES",
    "NUTS",
    "SVI",
    "Engine",
    "Option",
    "Options",
    "Progress",
    "Run",
    "Variational",
    "get_engine",
    "register",
]

#: The registered engines by name.
ENGINES: dict[str, type[Engine]] = {}


def register(engine: type[Engine]) -> type[Engine]:
    """Register an engine class under its ``name`` (usable as a class decorator)."""
    if not (isinstance(engine, type) and issubclass(engine, Engine)) or not engine.name:
        raise TypeError(f"{engine!r} is not an Engine subclass with a name")
    ENGINES[engine.name] = engine
    return engine


def get_engine(name: str) -> type[Engine]:
    """The engine registered as ``name``, or :class:`~pyro_moe.errors.InputError`."""
    try:
        return ENGINES[name]
    except (KeyError, TypeError):
        raise InputError(
            f"unknown method {name!r}; use one of {', '.join(sorted(ENGINES))}"
        ) from None


register(CAVI)
register(SVI)
register(NUTS)
