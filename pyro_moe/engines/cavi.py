"""Closed-form variational EM (CAVI) for the model files, with restarts.

One iteration (derivation section 6) is the closed-form sweep
(:func:`pyro_moe.engines.sweep.sweep`) with step size 1 over the full batch, each step the
exact maximiser of the objective over its block with the others fixed, so the recorded
objective never decreases:

    q(W) -> q(pi) -> [w0] -> [A] -> [beta or q(beta)] -> [gate V] -> q(Z) -> record F

F = ELBO (+ R(w0) for the regularized model) (+ log p(V) with a gate prior) is the total
in nats. The gate step is a few L-BFGS iterations on sum_ik r_ik log g_ik(V) [+ log p(V)],
rejected if it does not increase that term.

Floors for noise-free data (which drive beta -> inf and A_k -> 0, where an unguarded
implementation fails in its Cholesky): beta <= ``noise_precision_max`` (default
1e10 / Var(y)) and every eigenvalue of A_k >= ``prior_var_min`` (default 1e-10). Both are
exact constrained maximisers, so monotonicity holds with them. The floors and the gate's
options are the sweep's (:data:`pyro_moe.engines.options.CLOSED_FORM`), shared with
natural-gradient SVI.
"""

from __future__ import annotations

import torch

from ..closed_form.sites import read_model
from ..parameters import ENGINE_OPTIONS
from .base import Progress, Run, Variational
from .source import DataSource, InMemory
from .sweep import sweep

OPTIONS = ENGINE_OPTIONS["cavi"]


class CAVI(Variational):
    """Closed-form variational EM on a conjugate model file (``method="cavi"``).

    :meth:`prepare` reads the model file's sites (:func:`pyro_moe.closed_form.sites.read_model`),
    which refuses a non-conjugate site by name; every restart then runs the closed-form
    sweep with step size 1 over the full batch. X (N, n) and y (N,) are float64 tensors on
    the device to compute on.
    """

    name = "cavi"
    declared = OPTIONS

    def prepare(self) -> None:
        self.conj = read_model(self.model, self.X, self.y, self.config)

    def schedule_prior_mean(self) -> torch.Tensor:
        return self.conj.prior_mean

    def run(self, how: str, seed: int, restart: int, progress: Progress) -> Run:
        return sweep(self.source(), self.config, self.conj, self.options, how, seed, restart,
                     progress)  # fmt: skip

    def source(self) -> DataSource:
        """Where the sweep's passes over the data run: here, in this process."""
        return InMemory(self.X, self.y)
