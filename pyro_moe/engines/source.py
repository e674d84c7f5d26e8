"""Where the closed-form sweep's passes over the data run: the data-source protocol.

The sweep (:func:`pyro_moe.engines.sweep.sweep`, CAVI's iteration and natural-gradient
SVI's) works on per-expert quantities only; every pass over the N rows goes through a
*source*, an object with the methods of :class:`DataSource`. Two implement it:

* :class:`InMemory`: the data in this process's memory, all N rows at once;
* :class:`pyro_moe.distributed.DaskSource`: the data in row chunks on a Dask cluster, each
  pass one task per chunk and its small per-chunk statistics summed on the client.

The helpers the sources share (:func:`point_last`, :func:`log_gate_of`,
:func:`target_variance`, :class:`LogPrior`, :func:`held_out_sums`) are public here, so no
module reads another's private names.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch

from ..closed_form import updates as U
from ..closed_form.init import initial_log_responsibilities
from ..config import log_gate, robust_variance
from .gate import GateFitter

__all__ = [
    "POINT_LAST_ELEMENTS",
    "DataSource",
    "InMemory",
    "LogPrior",
    "held_out_sums",
    "log_gate_of",
    "point_last",
    "target_variance",
]


def point_last(t: torch.Tensor) -> torch.Tensor:
    """``t`` (N, C) as the (N, C) view of a (C, N) tensor, the layout the e-step reads
    (one transposed copy per gate step, against a strided read in every e-step); no copy
    when it is already so."""
    return t.T.contiguous().T


def log_gate_of(log_softmax: torch.Tensor, rho: torch.Tensor | None) -> torch.Tensor:
    """:func:`pyro_moe.config.log_gate` from the gate's log softmax (N, K), point-last
    (:func:`point_last`): log g_ik = log(1 - rho) + log softmax_k, log g_iK = log rho;
    ``log_softmax`` itself without a noise expert (rho None)."""
    if rho is None:
        return log_softmax
    N, K = log_softmax.shape
    out = log_softmax.new_empty(K + 1, N)
    torch.add(log_softmax.T, torch.log1p(-rho), out=out[:K])
    out[K] = torch.log(rho)
    return out.T


def target_variance(var: float, mean_sq: float) -> float:
    """Var(y), or for constant targets their mean square, else 1: the scale of the
    targets that beta's ceiling (1e10 / Var y) and default (1 / Var y) are measured in.
    A Var(y) under 1e-18 of the mean square is rounding (targets constant up to ~100 ulps,
    e.g. x^2 + y^2 of points exactly on a circle): such targets count as constant."""
    if var > 1e-18 * mean_sq:
        return var
    return mean_sq or 1.0


@dataclass
class LogPrior:
    """The E-step's log prior of any rows: the mixture's row E[log pi] broadcast over them
    (``row`` (1, C)), or the gate's log g(x) with the noise share (``gate`` at its present
    parameters, :func:`pyro_moe.config.log_gate`). Evaluated where the rows are (this
    process, or a Dask worker for its chunk)."""

    row: torch.Tensor | None = None
    gate: torch.nn.Module | None = None
    share: torch.Tensor | None = None

    def __call__(self, X: torch.Tensor) -> torch.Tensor:
        if self.row is not None:
            return self.row.expand(X.shape[0], self.row.shape[-1])
        with torch.no_grad():
            return log_gate(self.gate, X, self.share)


def held_out_sums(X, y, groups, q, lp: LogPrior, e_log_beta, e_beta, noise, maps) -> torch.Tensor:
    """Per group g of row indices into X, the data term sum_{i in g} lse_i of the ELBO with
    q(z_i) optimal given the globals (:func:`~pyro_moe.closed_form.updates.e_step`); 0 for
    a group with no rows here. Shape (G,). A distributed source sums it over its chunks,
    each with the groups' rows that it holds."""
    sums = []
    for rows in groups:
        if rows.numel() == 0:
            sums.append(X.new_zeros(()))
            continue
        x_g = X[rows]
        est = U.e_step(x_g, y[rows], q, lp(x_g), e_log_beta, e_beta, noise, maps=maps)
        sums.append(est.lse)
    return torch.stack(sums)


@runtime_checkable
class DataSource(Protocol):
    """The passes over the data that one closed-form sweep makes (module docstring).

    A source keeps the present q(Z) (or what made it) between passes; the sweep never sees
    an (N, C) array except through :meth:`log_responsibilities` at the end. A log prior of
    all rows (what :meth:`e_step` takes) is whatever the source's :meth:`log_prior` or
    :meth:`full_log_prior` returns: a tensor in memory, a recipe on a cluster.
    """

    #: the number of rows N
    N: int

    def target_variance(self) -> float:
        """:func:`target_variance` of y: Var(y), or for constant targets their mean square."""
        ...

    def initial(self, how: str, K: int, seed: int, **kw: Any) -> tuple[U.Stats, torch.Tensor]:
        """Form the initial q(Z) from strategy ``how`` (keyword arguments those of
        :func:`~pyro_moe.closed_form.init.initial_log_responsibilities`) and keep it;
        return its sufficient statistics over the K Gaussian experts and sum_i r_ik (C,)."""
        ...

    def e_step(self, q, log_prior, e_log_beta, e_beta, noise, maps) -> U.EStep:
        """The local step on all rows: q(z_i) proportional to exp(log prior_ik + E log
        p(y_i | w_k, beta)) given the globals, kept; returns its statistics, sum_i r_ik and
        sum_i lse_i, the ELBO's data term (:func:`~pyro_moe.closed_form.updates.e_step`)."""
        ...

    def log_prior(self, row: torch.Tensor | None, gate_log_softmax, rho) -> Any:
        """The E-step's log prior of all rows: a mixture's ``row`` E[log pi] (1, C), or the
        gate's log softmax (from :meth:`gate_layout`) with the noise share ``rho``."""
        ...

    def full_log_prior(self, lp: LogPrior) -> Any:
        """The E-step's log prior of all rows from a :class:`LogPrior` (the gate evaluated
        at its present parameters, not a fitter's cached log softmax)."""
        ...

    def gate_fitter(
        self, gate, steps, dtype, warm, tolerance, prior_scale, method=None
    ) -> GateFitter:
        """The gate's M-step over these rows (:class:`~pyro_moe.engines.gate.GateFitter`;
        ``method`` the ``gate_method`` option, None: GATE_METHOD)."""
        ...

    def gate_layout(self, log_softmax: Any) -> Any:
        """The fitter's log softmax in the layout :meth:`log_prior` reads."""
        ...

    def gate_responsibilities(self, K: int) -> Any:
        """r (N, K) of the Gaussian experts under the present q(Z), as the fitter reads it."""
        ...

    def log_responsibilities(self) -> torch.Tensor:
        """log q(Z) (N, C) of the present q(Z) (a distributed source: (0, C) when it does not
        gather its rows)."""
        ...

    def batch(
        self, rows: torch.Tensor, upcoming: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """X[rows], y[rows], a minibatch on the client; ``upcoming``, the next batch's rows,
        may be fetched ahead."""
        ...

    def all_rows(self, K: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        """X and the present r (N, K) of all rows (the gate's first Adam step, before any
        minibatch), or None where the data are not in this process."""
        ...

    def held_out(self, groups, q, lp: LogPrior, e_log_beta, e_beta, noise, maps) -> torch.Tensor:
        """:func:`held_out_sums` (G,) over the evaluation subsample's groups (row indices)."""
        ...


#: the rows are kept point-last (a second copy of the data) up to this many elements of it
#: (512 MB in float64: 1e7 points with n = 3 and up to 1.3e7 rows at n = 4), beyond it each
#: chunk is copied into that layout in every pass
POINT_LAST_ELEMENTS = 1 << 26


class InMemory:
    """The data in this process's memory: every pass of the sweep over all N rows at once
    (the one-chunk case of :class:`pyro_moe.distributed.DaskSource`), and a minibatch's rows.
    Implements :class:`DataSource`.

    It keeps log q(Z) (N, C) point-last between the passes (:func:`point_last`), and, when
    the rows make one chunk of the e-step (:func:`~pyro_moe.closed_form.updates.single_chunk`),
    the data's products z_I z_J (:func:`~pyro_moe.closed_form.updates.z_products`) from the
    first pass on, instead of forming them in every pass; over several chunks, the rows
    point-last (:func:`~pyro_moe.closed_form.updates.point_last_rows`, one more copy of the
    data) instead of a transposing copy of every chunk in every pass.
    """

    def __init__(self, X: torch.Tensor, y: torch.Tensor):
        self.X, self.y = X, y
        self.N = X.shape[0]
        self.log_r: torch.Tensor | None = None
        self.products: tuple[torch.Tensor, torch.Tensor | None] | None = None

    def target_variance(self) -> float:
        N, y = self.N, self.y
        # robust: one extreme target (1e12 among O(1) ones) made beta's ceiling 1e10 / Var(y)
        # so low that no expert could fit the others (issue 29, SW-5)
        var, mean_sq = float(y.var()) if N > 1 else 0.0, float(y.square().mean())
        robust = robust_variance(y)
        if robust < var:  # a few extreme targets: a robust spread and scale
            var, mean_sq = robust, min(mean_sq, float(y.square().median()))
        return target_variance(var, mean_sq)

    def gate_fitter(
        self, gate, steps, dtype, warm, tolerance, prior_scale, method=None
    ) -> GateFitter:
        return GateFitter(gate, self.X, steps, dtype, warm, tolerance, prior_scale, method=method)

    def gate_layout(self, log_softmax: torch.Tensor) -> torch.Tensor:
        return point_last(log_softmax)

    def log_prior(self, row: torch.Tensor | None, gate_log_softmax, rho) -> torch.Tensor:
        if row is not None:
            return row.expand(self.N, row.shape[-1])
        return log_gate_of(gate_log_softmax, rho)

    def full_log_prior(self, lp: LogPrior) -> torch.Tensor:
        return lp(self.X)

    def initial(self, how: str, K: int, seed: int, **kw) -> tuple[U.Stats, torch.Tensor]:
        log_r = initial_log_responsibilities(how, self.X, self.y, K, seed, **kw)
        r = log_r.exp()
        # the noise expert has no weights
        stats, r_sum = U.sufficient_stats(self.X, self.y, r[:, :K], kw.get("maps")), r.sum(0)
        del r
        self.log_r = point_last(log_r)  # the e-step's layout: (N, C) view of a (C, N) buffer
        return stats, r_sum

    def gate_responsibilities(self, K: int) -> torch.Tensor:
        """r (N, K), row-major for the gate."""
        assert self.log_r is not None
        return self.log_r[:, :K].contiguous().exp_()

    def e_step(self, q, log_prior, e_log_beta, e_beta, noise, maps) -> U.EStep:
        """log r is written in place (no second (N, C) buffer)."""
        if self.products is None:  # the products too when the rows make one chunk
            d = self.X.shape[1] + 1
            if U.single_chunk(self.N, d, log_prior.shape[-1]):
                self.products = U.z_products(self.X, self.y)
            elif self.N * d <= POINT_LAST_ELEMENTS:
                self.products = U.point_last_rows(self.X, self.y)
        est = U.e_step(
            self.X,
            self.y,
            q,
            log_prior,
            e_log_beta,
            e_beta,
            noise,
            out=self.log_r,
            maps=maps,
            products=self.products,
        )
        self.log_r = est.log_r
        return est

    def log_responsibilities(self) -> torch.Tensor:
        assert self.log_r is not None
        return self.log_r

    def batch(self, rows: torch.Tensor, upcoming: torch.Tensor | None = None):
        return self.X[rows], self.y[rows]

    def all_rows(self, K: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        return self.X, self.gate_responsibilities(K)

    def held_out(self, groups, q, lp: LogPrior, e_log_beta, e_beta, noise, maps) -> torch.Tensor:
        return held_out_sums(self.X, self.y, groups, q, lp, e_log_beta, e_beta, noise, maps)
