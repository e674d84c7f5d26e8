"""The gate's M-step of CAVI: penalised L-BFGS on the gate's expected log-probabilities.

    G(V) = sum_ik r_ik log softmax_k(V(x_i))  [+ log p(V)]

Every CAVI iteration with a learned gate calls :meth:`GateFitter.step`; the step is
rejected unless it does not lower G, so the CAVI objective never decreases. The notes on
its speed (warm start, subsample, float32) are in ``docs/cavi_notes.md`` section 6, the gate
prior's in section 7.
"""

from __future__ import annotations

import copy

import torch

from ..closed_form import updates as U
from ..config import gate_weights

GATE_WARM_START_N = 100_000  # the gate's L-BFGS keeps its history from this many points
GATE_MAX_BACKOFF = 16  # at most this many CAVI iterations between gate steps
GATE_PRESAMPLE = 65_536  # rows of the subsample a large gate move is first fitted on
GATE_PRESAMPLE_GAIN = 1e-4  # ... while the last gate step gained more than this many nats/point


class GateFitter:
    """The gate M-step across CAVI iterations: L-BFGS on

        G(V) = sum_ik r_ik log softmax_k(V(x_i))  [+ log p(V)],

    with the gate prior log p(V) = -|W|^2 / (2 s^2) + const on the gate's weights W
    (``prior_scale`` = s; MAP for V, see ``docs/cavi_notes.md`` section 7).

    Objective and gradient are summed over row chunks (bounded temporaries, cache-sized
    blocks). The L-BFGS may run on a float32 copy of the gate (``dtype``) and keep its
    curvature history from one CAVI iteration to the next (``warm``); either way the
    candidate is scored in the data's dtype and rejected unless it does not lower G,
    so the objective never decreases.

    The closure keeps the log softmax it computed (data dtype only) with the parameters it
    was computed at; when L-BFGS ends on the last point it evaluated (as it usually does),
    the accept test reuses it instead of another pass over the data.
    """

    def __init__(
        self,
        gate: torch.nn.Module,
        X: torch.Tensor,
        steps: int,
        dtype: torch.dtype | None = None,
        warm: bool = False,
        tolerance: float | None = None,
        prior_scale: float | None = None,
        N: int | None = None,
    ):
        # X: the design (N, n); a subclass that holds the data elsewhere (on a cluster,
        # pyro_moe.distributed) passes rows of it and the data's N
        self.gate, self.X, self.steps, self.warm = gate, X, steps, warm
        self.N = X.shape[0] if N is None else int(N)
        self.prior_scale = prior_scale
        self.tolerance = tolerance if tolerance is not None else 1e-14
        self.params = [p for p in gate.parameters() if p.requires_grad]
        dtype = dtype or X.dtype
        if dtype == X.dtype:
            self.work, self.Xw = gate, X
        else:
            self.work = copy.deepcopy(gate).to(dtype)
            self.Xw = X.to(dtype)
        self.wparams = [p for p in self.work.parameters() if p.requires_grad]
        self.wweights = [p for p in gate_weights(self.work) if p.requires_grad]
        self.opt: torch.optim.LBFGS | None = None
        N = self.N
        self.rows = U.chunk_rows(N, 4 * max(8, sum(p.numel() for p in self.params) // 4))
        self._cached: tuple[torch.Tensor, torch.Tensor] | None = None  # (params, log softmax)
        # a large move of the gate is first found on a subsample (see step)
        self.sample = None
        if warm and N > 2 * GATE_PRESAMPLE:
            gen = torch.Generator(device="cpu").manual_seed(0)  # the same rows on every device
            self.sample = torch.randperm(N, generator=gen, device="cpu")[:GATE_PRESAMPLE].to(
                X.device
            )
        self.last_gain = float("inf")

    def _flat_params(self) -> torch.Tensor:
        return torch.cat([p.detach().reshape(-1) for p in self.params])

    def log_softmax(self) -> torch.Tensor:
        """log softmax_k(V(x_i)) (N, K) in the data's dtype, chunked, without gradients."""
        with torch.no_grad():
            parts = [
                torch.log_softmax(self.gate(self.X[sl]), -1)
                for sl in U.chunks(self.X.shape[0], self.rows)
            ]
        return torch.cat(parts) if len(parts) > 1 else parts[0]

    def log_prior(self) -> torch.Tensor:
        """log p(V) at the present parameters (0 without a gate prior), in the data's dtype."""
        if self.prior_scale is None:
            return self.X.new_zeros(())
        with torch.no_grad():
            return U.gate_log_prior(gate_weights(self.gate), self.prior_scale).to(self.X.dtype)

    def _lbfgs(self) -> torch.optim.LBFGS:
        """The gate's L-BFGS (strong Wolfe line search) over the working parameters."""
        return torch.optim.LBFGS(
            self.wparams, max_iter=self.steps, line_search_fn="strong_wolfe",
            tolerance_grad=1e-10, tolerance_change=self.tolerance,
        )  # fmt: skip

    def _penalty(self, N: int) -> torch.Tensor:
        """-log p(V) / N up to a constant: |W|^2 / (2 s^2 N) on the working weights."""
        assert self.prior_scale is not None
        return sum((w * w).sum() for w in self.wweights) / (2 * self.prior_scale**2 * N)

    def expected(self, r, log_g) -> torch.Tensor:
        """sum_ik r_ik log g_ik: the gate's data term at the log softmax ``log_g``."""
        return (r * log_g).sum()

    def sample_rows(self, r) -> tuple[torch.Tensor, torch.Tensor]:
        """The presample's rows of the (working) design and of r."""
        assert self.sample is not None
        return self.Xw[self.sample], r[self.sample]

    def _presample(self, r: torch.Tensor) -> None:
        """L-BFGS on the subsample's term, -(1/m) sum_{i in S} r_i . log g(x_i) + |W|^2 /
        (2 s^2 N), an unbiased estimate of the full loss: it moves the parameters most of
        the way at m/N of the cost; the full-data step then polishes and decides."""
        assert self.sample is not None
        Xs, rs = self.sample_rows(r)
        N, m = self.N, len(self.sample)
        opt = self._lbfgs()

        def closure():
            opt.zero_grad()
            loss = -(rs * torch.log_softmax(self.work(Xs), -1)).sum() / m
            if self.prior_scale is not None:
                loss = loss + self._penalty(N)
            loss.backward()
            return loss

        opt.step(closure)

    def _closure(self, r: torch.Tensor):
        N = self.N

        def closure():
            assert self.opt is not None
            self.opt.zero_grad()
            total = self.X.new_zeros(())  # summed in the data's dtype
            if self.prior_scale is not None:
                penalty = self._penalty(N)
                penalty.backward()
                total += penalty.detach().to(total.dtype)
            self._cached = None  # the last evaluation's buffer goes before a new one comes
            return self._data_loss(r, total)

        return closure

    def _data_loss(self, r: torch.Tensor, total: torch.Tensor) -> torch.Tensor:
        """``total`` plus -(1/N) sum_ik r_ik log g_ik(V), summed over row chunks, its
        gradient accumulated into the working parameters; keeps the log softmax it computed
        (data dtype only)."""
        N = self.N
        keep = self.work is self.gate  # the log softmax is in the data's dtype
        out = self.X.new_empty(N, r.shape[-1]) if keep else None
        for sl in U.chunks(N, self.rows):
            log_g = torch.log_softmax(self.work(self.Xw[sl]), -1)
            loss = -(r[sl] * log_g).sum() / N
            loss.backward()
            total += loss.detach().to(total.dtype)
            if out is not None:
                out[sl] = log_g.detach()
        self._cached = (self._flat_params(), out) if out is not None else None
        return total

    def step(self, r: torch.Tensor, current: torch.Tensor) -> torch.Tensor:
        """One gate M-step given r (N, K) and ``current`` = log softmax of V at the present
        parameters (N, K); returns the log softmax at the kept parameters."""
        before = self.expected(r, current) + self.log_prior()
        saved = [p.detach().clone() for p in self.params]
        if self.opt is None or not self.warm:
            self.opt = self._lbfgs()
        rw = r if not torch.is_tensor(r) or r.dtype == self.Xw.dtype else r.to(self.Xw.dtype)
        if self.sample is not None and self.last_gain > GATE_PRESAMPLE_GAIN * self.N:
            self._presample(rw)
        self.opt.step(self._closure(rw))
        with torch.no_grad():
            if self.work is not self.gate:
                for p, w in zip(self.params, self.wparams, strict=True):
                    p.copy_(w)
        cached, self._cached = self._cached, None
        if cached is not None and torch.equal(cached[0], self._flat_params()):
            new = cached[1]
        else:
            new = self.log_softmax()
        after = self.expected(r, new) + self.log_prior()
        if after >= before:
            self.last_gain = float(after - before)
            return new
        with torch.no_grad():  # rejected: back to the saved parameters, fresh curvature
            for p, s in zip(self.params, saved, strict=True):
                p.copy_(s)
            if self.work is not self.gate:
                for w, s in zip(self.wparams, saved, strict=True):
                    w.copy_(s)
        self.opt = None
        return current
