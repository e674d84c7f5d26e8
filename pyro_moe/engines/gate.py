"""The gate's M-step of CAVI: ascent on the gate's expected log-probabilities

    G(V) = sum_ik r_ik log softmax_k(V(x_i))  [+ log p(V)].

Every CAVI iteration with a learned gate calls :meth:`GateFitter.step`; the step is
rejected unless it does not lower G, so the CAVI objective never decreases. Two optimisers:

* L-BFGS with a strong Wolfe line search (the default, ``GATE_METHOD = "lbfgs"``);
* damped Gauss-Newton (Levenberg-Marquardt; :class:`GateLayers`; ``gate_method="auto"``,
  the default of ``models/mixture_of_experts.py``, for the gates of known form: a linear
  softmax gate and the two-layer softmax(V1^T sigma(V2^T x))): GATE_NEWTON_STEPS (1)
  iteration per sweep,
  warm-started (θ and the damping carried over), from the gradient and the Gauss-Newton
  curvature of G summed over row chunks in a few batched torch calls (exact Newton for a
  linear gate and for the last layer given the hidden one); the Dask fitter sums the same
  terms over its chunks. 1.7-8.7x faster per fit on the regression data (median 4.6x);
  the two reach different fixed points of a many-basined MLP gate, so each model file
  says which it takes (:data:`GATE_METHOD`).

The equations and the measurements are in ``docs/cavi_notes.md`` section 6, the gate
prior's in section 7.
"""

from __future__ import annotations

import copy

import torch

from ..closed_form import updates as U
from ..config import ScaledInput, gate_weights
from ..errors import InputError

GATE_WARM_START_N = 100_000  # the gate's L-BFGS keeps its history from this many points
GATE_MAX_BACKOFF = 16  # at most this many CAVI iterations between gate steps
GATE_PRESAMPLE = 65_536  # rows of the subsample a large gate move is first fitted on
GATE_PRESAMPLE_GAIN = 1e-4  # ... while the last gate step gained more than this many nats/point
#: the gate's optimiser when neither the fit's ``gate_method`` nor the model file's
#: SETTINGS["gate_method"] names one: "lbfgs"; "auto" (Gauss-Newton for a gate of known
#: form, :meth:`GateLayers.of`, in the data's dtype, below GATE_WARM_START_N points; else
#: L-BFGS), "newton" (refuses another gate). The two walk into different fixed points of an
#: MLP gate's many-basined objective (both converged, docs/cavi_notes.md section 6): on the
#: regression data Gauss-Newton's are as good or better and 1.7-8.7x cheaper
#: (models/mixture_of_experts.py takes "auto"); on the study's eye fit with the noise expert
#: and the logistic experts' test data L-BFGS's are better (their files keep L-BFGS)
GATE_METHOD = "lbfgs"
#: the L-BFGS closure's loss and gradient by GateLayers.terms (written by hand, no curvature)
#: for a gate of known form in the data's dtype; False: autograd through the module (the
#: same sums to rounding; the terms 250-290 us per evaluation at N = 1000, K = 4, H = 8,
#: autograd's closure 530-710 us; whole fits 1.0-1.34x, docs/cavi_notes.md section 6)
GATE_LBFGS_BY_HAND = True
#: Gauss-Newton iterations per CAVI sweep (at most gate_steps; fewer once one gains nothing):
#: one, as measured on the regression data (benchmarks/results/gate_step.md: every fit at
#: N <= 1000 under 8 CPU s; three took up to 18 s, NPreg N = 1000, K = 4)
GATE_NEWTON_STEPS = 1
#: a sweep's first Newton iteration reuses the curvature of up to this many sweeps ago
GATE_CURVATURE_AGE = 3
GATE_NEWTON_TRIES = 12  # damping increases (x10 each) before a Newton iteration gives up
GATE_DAMPING = (1e-8, 1e-3, 1e8)  # Levenberg-Marquardt lambda: floor, start, ceiling
#: a sweep's Newton iterations stop once one gained at most this times max(|G|, N) nats
GATE_NEWTON_GAIN = 1e-12
_ACTIVATIONS = {torch.nn.Sigmoid: "sigmoid", torch.nn.Tanh: "tanh"}


class GateLayers:
    """A gate of known form, for the Gauss-Newton step. Logits

        z(x) = Θ1 h~(x),   h~ = [σ(Θ2 x~), 1]  (two layers)  or  h~ = x~  (a linear gate),

    x~ = [x / s, 1] (s the :class:`~pyro_moe.config.ScaledInput` scale, none without it;
    the 1 only where the layer has a bias), Θ1 = [V1, b1] (K, H+1), Θ2 = [V2, b2] (H, n+1),
    σ the sigmoid or tanh; θ = [vec Θ1, vec Θ2] (row-major).

    :meth:`terms` sums over row chunks the data term D(θ) = sum_ik r_ik log g_ik, its
    gradient and its Gauss-Newton curvature. With g_i = softmax(z_i), s_i = sum_k r_ik,
    e_i = r_i - s_i g_i (the gradient in z_i) and A_i = s_i (diag g_i - g_i g_i^T) (minus
    the Hessian in z_i, exact):

        dD/dΘ1 = sum_i e_i h~_i^T,   dD/dΘ2 = sum_i (σ'_i ∘ V1^T e_i) x~_i^T,
        C(θ)   = sum_i J_i^T A_i J_i,   J_i = dz_i/dθ,

    in blocks: C11 = sum_i A_i ⊗ h~_i h~_i^T, C22 = sum_i B_i^T A_i B_i ⊗ x~_i x~_i^T,
    C12 = sum_i (A_i B_i) ⊗ h~_i x~_i^T (index order (k, j) x (j', l)), with
    B_i = V1 diag(σ'_i) = dz_i/dh_i. C11 is the exact Hessian of -D in Θ1 (G is concave in
    the last layer given the hidden one, and in a linear gate); C drops the term
    sum_i e_i . d²z_i/dΘ2² of the hidden layer, so C is positive semi-definite everywhere.

    :meth:`of` recognises nn.Linear and nn.Sequential(Linear, Sigmoid | Tanh, Linear),
    inside ScaledInput or not; any other gate is None (L-BFGS then)."""

    def __init__(
        self,
        out: torch.nn.Linear,
        hidden: torch.nn.Linear | None,
        act: str | None,
        scale: torch.Tensor | None,
    ):
        self.out, self.hidden, self.act, self.scale = out, hidden, act, scale
        self.layers = [out] if hidden is None else [out, hidden]
        self.shapes = [
            (lin.out_features, lin.in_features + int(lin.bias is not None)) for lin in self.layers
        ]
        self.sizes = [a * b for a, b in self.shapes]
        self.P = sum(self.sizes)
        # 1 on the entries the gate prior covers (the weights), 0 on the biases
        self.weight_mask = torch.cat(
            [self._matrix(lin, weight=True).reshape(-1) for lin in self.layers]
        )

    @classmethod
    def of(cls, gate: torch.nn.Module) -> GateLayers | None:
        """The layers of ``gate`` when its form is known, else None."""
        scale = None
        if isinstance(gate, ScaledInput):
            gate, scale = gate.inner, gate.scale
        if any(not p.requires_grad for p in gate.parameters()):
            return None
        if isinstance(gate, torch.nn.Linear):
            return cls(gate, None, None, scale)
        if isinstance(gate, torch.nn.Sequential) and len(gate) == 3:
            first, act, last = gate
            kind = _ACTIVATIONS.get(type(act))
            if isinstance(first, torch.nn.Linear) and isinstance(last, torch.nn.Linear) and kind:
                return cls(last, first, kind, scale)
        return None

    @staticmethod
    def _matrix(lin: torch.nn.Linear, weight: bool = False) -> torch.Tensor:
        """[W, b] of a layer (weight: its mask, 1 on W and 0 on b)."""
        W = torch.ones_like(lin.weight) if weight else lin.weight
        if lin.bias is None:
            return W.detach()
        b = torch.zeros_like(lin.bias) if weight else lin.bias
        return torch.cat([W, b[:, None]], 1).detach()

    def theta(self) -> torch.Tensor:
        """θ = [vec Θ1, vec Θ2] at the gate's present parameters."""
        return torch.cat([self._matrix(lin).reshape(-1) for lin in self.layers])

    def matrices(self, theta: torch.Tensor) -> list[torch.Tensor]:
        """Θ1 (and Θ2) as views of θ."""
        return [
            m.view(shape) for m, shape in zip(theta.split(self.sizes), self.shapes, strict=True)
        ]

    def assign(self, theta: torch.Tensor) -> None:
        """Set the gate's parameters to θ."""
        with torch.no_grad():
            for lin, M in zip(self.layers, self.matrices(theta), strict=True):
                lin.weight.copy_(M[:, : lin.in_features])
                if lin.bias is not None:
                    lin.bias.copy_(M[:, lin.in_features])

    @staticmethod
    def _augment(x: torch.Tensor, lin: torch.nn.Linear) -> torch.Tensor:
        """[x; 1] of point-last rows x (d, m) (x itself for a layer without a bias)."""
        return x if lin.bias is None else torch.cat([x, x.new_ones(1, x.shape[1])], 0)

    def _buffers(self, X: torch.Tensor, rows: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """[x; 1] (b2, rows) and, with a hidden layer, [h; 1] (b1, rows) for full chunks of
        :meth:`terms`, their bias rows set to 1 (rows of anything else are written per
        chunk). Measured at 1e6 rows (regularized experts): _augment's new_ones and cat were
        0.59 of the 4.2 s of the 45 passes of a fit."""

        def buffer(lin: torch.nn.Linear, width: int) -> torch.Tensor:
            b = X.new_empty(width + int(lin.bias is not None), rows)
            if lin.bias is not None:
                b[width].fill_(1.0)
            return b

        last = self.layers[-1]
        xb = buffer(last, last.in_features)
        hb = buffer(self.out, self.out.in_features) if self.hidden is not None else None
        return xb, hb

    def width(self, K: int) -> int:
        """The widest per-row temporary of :meth:`terms` (elements), for the chunk size."""
        b1 = self.shapes[0][1]
        if self.hidden is None:
            return max(K * K, b1 * b1)
        H, b2 = self.shapes[1]
        return max(K * K, b1 * b1, H * H, b2 * b2, K * H, b1 * b2)

    def terms(
        self,
        X: torch.Tensor,
        rt: torch.Tensor,
        theta: torch.Tensor,
        rows: int,
        out: torch.Tensor,
        curvature: bool,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """D(θ), dD/dθ (P,) and, with ``curvature``, C(θ) (P, P) (class docstring), summed
        over chunks of ``rows`` rows of X (N, n) and r^T (K, N) (``rt``); log g (N, K) is
        written into ``out``. Point-last inside (rows along the last axis: the softmax
        over K and every product with the rows then run over long contiguous rows)."""
        mats = self.matrices(theta)
        T1 = mats[0]
        K, b1 = T1.shape
        s1 = self.sizes[0]
        D = X.new_zeros(())
        grads = [torch.zeros_like(M) for M in mats]
        C = X.new_zeros(self.P, self.P) if curvature else None
        hidden = self.hidden is not None
        if hidden:
            T2 = mats[1]
            H, b2 = T2.shape
            V1 = T1[:, :H]
            if curvature:
                V1t = V1.T.contiguous()
                VV = (V1[:, :, None] * V1[:, None, :]).reshape(K, H * H).T.contiguous()
        eye = torch.eye(K, dtype=X.dtype, device=X.device)[:, :, None]
        # full chunks write [x; 1] and [h; 1] into buffers kept for the call (the same
        # values and layout as the concatenations of _augment, which the last chunk makes)
        bufs = self._buffers(X, rows) if X.shape[0] > rows else None
        for sl in U.chunks(X.shape[0], rows):
            m = sl.stop - sl.start
            x = (X[sl] if self.scale is None else X[sl] / self.scale).T
            full = bufs is not None and m == rows
            if full:
                xb = bufs[0]
                xb[: x.shape[0]].copy_(x)
            else:
                xb = self._augment(x, self.layers[-1])  # (b2, m)
            if hidden:
                if full:
                    hb = bufs[1]
                    h = torch.matmul(T2, xb, out=hb[:H])
                else:
                    h = T2 @ xb
                if self.act == "sigmoid":
                    h = torch.sigmoid_(h)
                    dh = h * (1.0 - h)
                else:
                    h = torch.tanh_(h)
                    dh = 1.0 - h * h
                if not full:
                    hb = self._augment(h, self.out)  # (b1, m)
            else:
                hb = xb
            lg = torch.log_softmax(T1 @ hb, 0)  # (K, m)
            out[sl] = lg.T
            r = rt[:, sl]
            D += (r * lg).sum()
            g = lg.exp_()
            sg = r.sum(0, keepdim=True) * g  # s_i g_i
            e = r - sg
            grads[0] += e @ hb.T
            if hidden:
                grads[1] += ((V1.T @ e) * dh) @ xb.T
            if C is None:
                continue
            A = (eye * sg[:, None, :] - sg[:, None, :] * g[None, :, :]).reshape(K * K, m)
            hh = (hb[:, None, :] * hb[None, :, :]).reshape(b1 * b1, m)
            C[:s1, :s1] += (A @ hh.T).view(K, K, b1, b1).permute(0, 2, 1, 3).reshape(s1, s1)
            if not hidden:
                continue
            s2 = H * b2
            u = V1t @ g  # V1^T g_i (H, m)
            AB = sg[:, None, :] * (V1[:, :, None] - u[None, :, :]) * dh[None]  # A_i B_i (K, H, m)
            su = sg.sum(0, keepdim=True) * u
            BAB = (VV @ sg).view(H, H, m) - su[:, None, :] * u[None, :, :]
            BAB = BAB * (dh[:, None, :] * dh[None, :, :])  # B_i^T A_i B_i (H, H, m)
            xx = (xb[:, None, :] * xb[None, :, :]).reshape(b2 * b2, m)
            C[s1:, s1:] += (
                (BAB.reshape(H * H, m) @ xx.T)
                .view(H, H, b2, b2)
                .permute(0, 2, 1, 3)
                .reshape(s2, s2)
            )
            hx = (hb[:, None, :] * xb[None, :, :]).reshape(b1 * b2, m)
            C12 = (AB.reshape(K * H, m) @ hx.T).view(K, H, b1, b2).permute(0, 2, 1, 3)
            C12 = C12.reshape(s1, s2)
            C[:s1, s1:] += C12
            C[s1:, :s1] += C12.T
        return D, torch.cat([G.reshape(-1) for G in grads]), C


class GateFitter:
    """The gate M-step across CAVI iterations: ascent on

        G(V) = sum_ik r_ik log softmax_k(V(x_i))  [+ log p(V)],

    with the gate prior log p(V) = -|W|^2 / (2 s^2) + const on the gate's weights W
    (``prior_scale`` = s; MAP for V, see ``docs/cavi_notes.md`` section 7).

    ``method`` (None: :data:`GATE_METHOD`): "auto" takes the damped Gauss-Newton step
    (:meth:`_newton`, :class:`GateLayers`) for a gate of known form in the data's dtype
    below GATE_WARM_START_N points, else L-BFGS; "newton" refuses another gate; "lbfgs"
    always takes L-BFGS. Gauss-Newton
    runs min(``steps``, GATE_NEWTON_STEPS) iterations per sweep, L-BFGS ``steps``.

    Objective, gradient (and curvature) are summed over row chunks (bounded temporaries,
    cache-sized blocks). The L-BFGS may run on a float32 copy of the gate (``dtype``) and
    keep its curvature history from one CAVI iteration to the next (``warm``); either way
    the candidate is scored in the data's dtype and rejected unless it does not lower G,
    so the objective never decreases.

    L-BFGS's closure keeps the log softmax it computed (data dtype only) with the parameters
    it was computed at; when L-BFGS ends on the last point it evaluated (as it usually
    does), the accept test reuses it instead of another pass over the data (the
    Gauss-Newton step returns the log softmax of its last kept candidate).
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
        method: str | None = None,
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
        self.weights = gate_weights(gate)  # (held: listing a module's parameters is slow)
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
        # Gauss-Newton where the gate's form is known and the rows are here, in their dtype
        method = GATE_METHOD if method is None else method
        if method not in ("auto", "newton", "lbfgs"):
            raise InputError(f"the gate's method must be auto, newton or lbfgs, got {method!r}")
        # a gate of known form in the data's dtype: its terms by hand (GateLayers.terms) for
        # the L-BFGS closure and, where asked, the Gauss-Newton step
        form = GateLayers.of(gate) if self.work is gate else None
        if form is not None:
            self.newton_rows = U.chunk_rows(N, form.width(form.shapes[0][0]))
        self.known = form if GATE_LBFGS_BY_HAND else None
        self._rt: tuple[torch.Tensor, torch.Tensor] | None = None
        # "auto" keeps L-BFGS from GATE_WARM_START_N points: there its warm start and
        # presample beat the curvature's O(N P^2) pass (regularized experts at 1e5 points,
        # benchmarks/results/gate_step.md: 28 ms per iteration against 61 ms)
        large = method == "auto" and self.N >= GATE_WARM_START_N
        self.layers = form if method != "lbfgs" and not large else None
        if method == "newton" and self.layers is None:
            raise InputError(
                "the gate's Gauss-Newton step needs a linear gate or nn.Sequential(Linear, "
                "Sigmoid or Tanh, Linear), in the data's dtype; use method='lbfgs'"
            )
        if self.layers is not None:
            L = self.layers
            self.newton_steps = min(steps, GATE_NEWTON_STEPS)
            mask = L.weight_mask.to(X)
            # the gate prior's precision on θ: 1 / s^2 on the weights, 0 on the biases
            self.precision = mask / prior_scale**2 if prior_scale is not None else 0 * mask
            self.damping = GATE_DAMPING[1]
            # the softmax's null directions: one column of Θ1 moved by the same amount in
            # every row (z + c h~_j for all k) leaves g unchanged; with no prior on that column
            # (the biases; all columns without a gate prior) C + P is singular along it
            K, b1 = L.shapes[0]
            flat = self.precision[: K * b1].view(K, b1)
            free = (flat == 0).all(0).nonzero().flatten()
            U_null = X.new_zeros(L.P, len(free))
            for c, j in enumerate(free.tolist()):
                U_null[torch.arange(K, device=X.device) * b1 + j, c] = 1.0 / K**0.5
            self.null = U_null @ U_null.T
            # (M, scale) of a recent sweep's curvature (see _newton, _system)
            self.curvature: tuple[torch.Tensor, torch.Tensor] | None = None
            self.curvature_age = 0

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
            return U.gate_log_prior(self.weights, self.prior_scale).to(self.X.dtype)

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
            if self.prior_scale is not None and self.known is None:  # (else by hand)
                penalty = self._penalty(N)
                penalty.backward()
                total += penalty.detach().to(total.dtype)
            self._cached = None  # the last evaluation's buffer goes before a new one comes
            return self._data_loss(r, total)

        return closure

    def _data_loss(self, r: torch.Tensor, total: torch.Tensor) -> torch.Tensor:
        """``total`` plus -(1/N) sum_ik r_ik log g_ik(V), summed over row chunks, its
        gradient accumulated into the working parameters; keeps the log softmax it computed
        (data dtype only). A gate of known form (:class:`GateLayers`) in the data's dtype
        is evaluated by :meth:`GateLayers.terms` (the same sum and its gradient, written by
        hand: GATE_LBFGS_BY_HAND), any other by autograd."""
        N = self.N
        keep = self.work is self.gate  # the log softmax is in the data's dtype
        if self.known is not None:
            return self._known_loss(r, total)
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

    def _known_loss(self, r: torch.Tensor, total: torch.Tensor) -> torch.Tensor:
        """:meth:`_data_loss` by :meth:`GateLayers.terms` (no curvature) at the present θ,
        with the gate prior's term: -(1/N) D(θ) + θ^T P θ / (2N) and its gradient
        -(1/N) dD/dθ + P θ / N (P = 1/s^2 on the weights) added to the parameters' own."""
        L, N = self.known, self.N
        assert L is not None
        if self._rt is None or self._rt[0] is not r:  # r^T once per gate step
            self._rt = (r, r.T.contiguous())
        out = self.X.new_empty(r.shape)
        theta = L.theta()
        D, grad, _ = L.terms(self.X, self._rt[1], theta, self.newton_rows, out, False)
        loss, grad = -D / N, -grad / N
        if self.prior_scale is not None:  # + |W|^2 / (2 s^2 N), gradient W / (s^2 N)
            pen = L.weight_mask.to(theta) * theta / (self.prior_scale**2 * N)
            loss, grad = loss + 0.5 * (pen * theta).sum(), grad + pen
        grads = grad.split(L.sizes)
        for lin, G, shape in zip(L.layers, grads, L.shapes, strict=True):
            G = G.view(shape)
            parts = [(lin.weight, G[:, : lin.in_features])]
            if lin.bias is not None:
                parts.append((lin.bias, G[:, lin.in_features]))
            for p, g in parts:
                p.grad = g.clone() if p.grad is None else p.grad + g
        total += loss
        self._cached = (self._flat_params(), out)
        return total

    def _newton_start(self, r: torch.Tensor):
        """r as :meth:`_newton_terms` reads it (point-last, as the terms run) and two
        (N, K) buffers for log g (a subclass with the rows elsewhere: None)."""
        return r.T.contiguous(), r.new_empty(r.shape), r.new_empty(r.shape)

    def _newton_terms(self, r, theta: torch.Tensor, curvature: bool, out):
        """:meth:`GateLayers.terms` over all rows (log g into ``out``)."""
        assert self.layers is not None
        return self.layers.terms(self.X, r, theta, self.newton_rows, out, curvature)

    def _system(self, C: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The Newton system's matrix M = C + P (+ the mean curvature on the softmax's null
        directions, so that round-off in the gradient along them, 0 exactly, does not move
        θ there; the rest of the step is unchanged) and the damping's scale diag(C + P)
        (floored at 1e-12 of its mean)."""
        M = C + torch.diag(self.precision)
        d = M.diagonal()
        mean = d.mean()
        scale = d + 1e-12 * mean.clamp(min=1e-300)
        return M + mean * self.null, scale

    def _newton(self, r: torch.Tensor) -> torch.Tensor | None:
        """Damped Gauss-Newton (Levenberg-Marquardt) ascent on

            G(θ) = D(θ) - θ^T P θ / 2,   P = diag(1/s^2 on the weights, 0 on the biases)

        from the present parameters (:class:`GateLayers`): at most ``newton_steps``
        iterations of

            θ <- θ + d,   (C + P + λ diag(C + P)) d = dD/dθ - P θ,

        each kept only if G does not decrease (else λ x10 and d is retaken, at most
        GATE_NEWTON_TRIES times). After a kept step λ follows the ratio of the gain to the
        quadratic model's m(d) = d.g - d.(C + P).d / 2 (/3 above 0.75, x2 below 0.25) and
        is carried to the next sweep (the warm start, with θ itself). The iterations stop
        once m(d) or a kept gain is at most GATE_NEWTON_GAIN max(|G|, N) nats: the gate's
        M-step is then solved to rounding. Leaves the gate at the last kept θ; returns
        log g (N, K) there."""
        L, N = self.layers, self.N
        assert L is not None
        P = self.precision
        lo, _, hi = GATE_DAMPING
        theta = L.theta()
        r, buf, spare = self._newton_start(r)
        # the curvature is the last one computed while it is younger than
        # GATE_CURVATURE_AGE sweeps and its last step was well modelled, else fresh here
        fresh = self.curvature is None or self.curvature_age >= GATE_CURVATURE_AGE
        D, grad, C = self._newton_terms(r, theta, fresh, buf)
        if fresh:
            self.curvature, self.curvature_age = self._system(C), 0
        else:
            self.curvature_age += 1
        system = self.curvature
        G = D - 0.5 * (P * theta * theta).sum()
        grad = grad - P * theta
        lam = self.damping
        eps = GATE_NEWTON_GAIN * max(abs(float(G)), N)
        for it in range(self.newton_steps):
            assert system is not None
            M, scale = system
            kept, gain, model = False, 0.0, 0.0
            more = it + 1 < self.newton_steps  # the curvature at the candidate is needed
            for _ in range(GATE_NEWTON_TRIES):
                chol, info = torch.linalg.cholesky_ex(M + torch.diag(lam * scale))
                if int(info) != 0:
                    lam = min(lam * 10.0, hi)
                    continue
                delta = torch.cholesky_solve(grad[:, None], chol)[:, 0]
                model = float(delta @ grad - 0.5 * delta @ (M @ delta))
                if model <= eps:  # nothing left to gain at this damping or less
                    break
                cand = theta + delta
                Dc, gc, Cc = self._newton_terms(r, cand, more, spare)
                Gc = Dc - 0.5 * (P * cand * cand).sum()
                if bool(Gc >= G):  # (False for a NaN)
                    gain = float(Gc - G)
                    ratio = gain / model
                    if ratio > 0.75:
                        lam = max(lam / 3.0, lo)
                    elif ratio < 0.25:
                        lam = min(lam * 2.0, hi)
                        self.curvature = None  # a poor model: a fresh curvature next sweep
                    theta, G, grad, C = cand, Gc, gc - P * cand, Cc
                    buf, spare = spare, buf
                    kept = True
                    break
                lam = min(lam * 10.0, hi)
                self.curvature = None
            if not kept or gain <= eps:
                break
            if C is not None:
                system = self._system(C)
                self.curvature, self.curvature_age = system, 0
        self.damping = lam
        L.assign(theta)
        return buf

    def _lbfgs_step(self, r: torch.Tensor) -> torch.Tensor | None:
        """L-BFGS from the present parameters; leaves the gate at its end and returns the
        log softmax there when the closure kept it (else None)."""
        if self.opt is None or not self.warm:
            self.opt = self._lbfgs()
        rw = r if not torch.is_tensor(r) or r.dtype == self.Xw.dtype else r.to(self.Xw.dtype)
        if self.sample is not None and self.last_gain > GATE_PRESAMPLE_GAIN * self.N:
            self._presample(rw)
        self.opt.step(self._closure(rw))
        self._rt = None
        with torch.no_grad():
            if self.work is not self.gate:
                for p, w in zip(self.params, self.wparams, strict=True):
                    p.copy_(w)
        cached, self._cached = self._cached, None
        if cached is not None and torch.equal(cached[0], self._flat_params()):
            return cached[1]
        return None

    def step(self, r: torch.Tensor, current: torch.Tensor) -> torch.Tensor:
        """One gate M-step given r (N, K) and ``current`` = log softmax of V at the present
        parameters (N, K); returns the log softmax at the kept parameters: Gauss-Newton
        (:meth:`_newton`) or L-BFGS, kept only if G does not decrease."""
        before = self.expected(r, current) + self.log_prior()
        saved = [p.detach().clone() for p in self.params]
        new = self._newton(r) if self.layers is not None else self._lbfgs_step(r)
        if new is None:
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
