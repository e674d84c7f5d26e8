"""Restarts, shared by the engines: which initialisation each restart uses, the loop that
keeps the best final objective (as scikit-learn's ``mixture/_base.py`` does with
``n_init``), the warning when the kept run did not converge, and fresh gates per restart.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable
from typing import Any, TypeVar

import torch

from .errors import ConvergenceWarning, InputError

R = TypeVar("R")


def init_schedule(options, prior_mean: torch.Tensor) -> list[str]:
    """The initialisation of each restart.

    ``init="auto"``: "prior" first when the prior means differ between experts (it breaks
    the symmetry), then "subsets"; given responsibilities make a single "given" run.
    """
    if options.n_init < 1:
        raise InputError(f"n_init must be at least 1, got {options.n_init}")
    if options.responsibilities is not None:
        return ["given"]
    if isinstance(options.init, list | tuple):
        return list(options.init)
    if options.init != "auto":
        return [options.init] * options.n_init
    distinct = not torch.allclose(prior_mean, prior_mean[:1].expand_as(prior_mean))
    first = ["prior"] if distinct else []
    return (first + ["subsets"] * options.n_init)[: options.n_init]


def best_of_restarts(
    inits: list[str],
    seed: int,
    run_one: Callable[[str, int, int], R],
    describe: Callable[[R], dict[str, Any]],
) -> tuple[R, list[dict[str, Any]]]:
    """Run ``run_one(init, seed + i, i)`` for each restart; keep the best final objective.

    Runs expose ``objective`` (a list, last entry final). Returns the best run and one
    summary per restart: ``{"init", "seed", **describe(run)}``.
    """
    best: R | None = None
    summaries = []
    for i, how in enumerate(inits):
        run = run_one(how, seed + i, i)
        summaries.append({"init": how, "seed": seed + i, **describe(run)})
        if best is None or run.objective[-1] > best.objective[-1]:
            best = run
    assert best is not None
    return best, summaries


def warn_not_converged(message: str) -> None:
    """A :class:`ConvergenceWarning` pointing at the caller of ``pyro_moe.fit``."""
    warnings.warn(message, ConvergenceWarning, stacklevel=4)


def fresh_gate(gate: torch.nn.Module | None, seed: int, restart: int) -> torch.nn.Module | None:
    """A copy of ``gate``; from the second restart on, re-initialised under ``seed``."""
    if gate is None:
        return None
    gate = copy.deepcopy(gate)
    if restart > 0:
        device = next(gate.parameters()).device
        gate = gate.cpu()  # re-initialised from the CPU generator: the same on every device
        with torch.random.fork_rng(devices=[]), torch.device("cpu"):
            torch.manual_seed(seed)
            for module in gate.modules():
                if hasattr(module, "reset_parameters"):
                    module.reset_parameters()
        gate = gate.to(device)
    return gate
