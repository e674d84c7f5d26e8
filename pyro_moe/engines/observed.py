"""The in-memory data source of robust and logistic experts.

:class:`ObservedSource` is :class:`~pyro_moe.engines.source.InMemory` whose local step is
the observation model's own (:class:`~pyro_moe.closed_form.robust.RobustExperts`: q(lambda)
and q(Z); :class:`~pyro_moe.closed_form.logistic.LogisticExperts`: the Jaakkola-Jordan xi
and q(Z)) instead of the Gaussian fused E-step; the sweep (:func:`pyro_moe.engines.sweep.sweep`)
is otherwise the same code, CAVI's and natural-gradient SVI's. A distributed source has no
such step yet and is refused by name.
"""

from __future__ import annotations

import torch

from ..closed_form import updates as U
from ..closed_form.observations import Observation
from ..errors import InputError
from .source import InMemory, LogPrior, point_last

__all__ = ["ObservedSource", "observed_source"]


class ObservedSource(InMemory):
    """:class:`InMemory` with the local step of ``obs`` (module docstring)."""

    def __init__(self, X: torch.Tensor, y: torch.Tensor, obs: Observation):
        super().__init__(X, y)
        self.obs = obs

    def initial(self, how: str, K: int, seed: int, **kw) -> tuple[U.Stats, torch.Tensor]:
        log_r = self.obs.initial(how, self.X, self.y, K, seed, **kw)
        r = log_r.exp()
        stats = self.obs.start_stats(self.X, self.y, r[:, :K], kw.get("maps"))
        self.log_r = point_last(log_r)
        return stats, r.sum(0)

    def e_step(self, q, log_prior, e_log_beta, e_beta, noise, maps) -> U.EStep:
        est = self.obs.e_step(self.X, self.y, q, log_prior, e_log_beta, e_beta, noise, maps)
        self.log_r = point_last(est.log_r)
        return est

    def held_out(self, groups, q, lp: LogPrior, e_log_beta, e_beta, noise, maps) -> torch.Tensor:
        sums = []
        for rows in groups:
            x_g = self.X[rows]
            est = self.obs.e_step(x_g, self.y[rows], q, lp(x_g), e_log_beta, e_beta, noise, maps)
            sums.append(est.lse)
        return torch.stack(sums)


def observed_source(source, obs: Observation) -> ObservedSource:
    """``source``'s rows with the local step of ``obs``; data in memory only."""
    if not isinstance(source, InMemory):
        raise InputError(
            f"{obs.kind} experts are fitted in memory only: their local step has no "
            "distributed (Dask) version yet"
        )
    return ObservedSource(source.X, source.y, obs)
