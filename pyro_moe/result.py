"""One result type for every engine (CAVI and SVI): posteriors, hyperparameters, history.

The objective is the total ELBO in nats (plus the prior regularizer R(w0) for the
regularized model and the gate prior log p(V) where the model has one, reported together as
``regularizer``), so curves from CAVI and SVI on the same model and data overlay.

Saved as ``.npz`` (:meth:`FitResult.save`) with these arrays:

``X`` (N, n), ``y`` (N,), ``responsibilities`` (N, K), ``log_gate`` (N, K; gated models),
``alpha`` (K,; mixtures of models), ``mean`` (K, n), ``cov`` (K, n, n), ``prior_mean`` (K, n),
``prior_cov`` (K, n, n), ``noise_precision`` () (E[beta] when beta has a Gamma posterior,
whose ``noise_shape``/``noise_rate`` are saved too), ``concentration`` (K,),
``regularization_cov`` (n, n; regularized model), ``objective_history``, ``elbo_history``,
``time_history`` (seconds), ``maps`` (K, n+1, d; experts with their own feature maps,
:mod:`pyro_moe.experts`), ``gate/<name>`` (gate parameters) and a JSON ``meta`` string
(method, model, iterations, wall time, converged, learn, shapes standardization).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import InputError


@dataclass
class Prediction:
    """Posterior predictive of y at new rows x (a mixture of Gaussians over experts).

    Expert k predicts N(m_k^T x, 1/beta + x^T B_k x); with weights g_k(x) the mixture has
    mean sum_k g_k mu_k and variance sum_k g_k (s_k^2 + mu_k^2) - mean^2. A noise expert adds
    a component Uniform(lo, hi) with its weight g_0(x) (mean (lo+hi)/2, second moment
    (lo^2 + lo hi + hi^2)/3).
    """

    mean: torch.Tensor  # (N,)
    variance: torch.Tensor  # (N,)
    expert_weights: torch.Tensor  # (N, K)
    expert_means: torch.Tensor  # (N, K)
    expert_variances: torch.Tensor  # (N, K)
    noise_weight: torch.Tensor | None = None  # (N,) weight of the noise expert
    noise_bounds: torch.Tensor | None = None  # (lo, hi) of its uniform density

    def interval(self, level: float = 0.95) -> torch.Tensor:
        """Central prediction interval of the mixture, (N, 2), from mixture quantiles.

        Quantiles are found by bisection on the mixture CDF (exact up to 1e-10 in y).
        """
        if not 0 < level < 1:
            raise InputError(f"level must be in (0, 1), got {level}")
        sd = self.expert_variances.sqrt()
        lo_q, hi_q = (1 - level) / 2, (1 + level) / 2
        lo = (self.expert_means - 10 * sd).min(-1).values
        hi = (self.expert_means + 10 * sd).max(-1).values
        if self.noise_weight is not None:
            lo = lo.clamp(max=float(self.noise_bounds[0]))
            hi = hi.clamp(min=float(self.noise_bounds[1]))
        out = []
        for q in (lo_q, hi_q):
            a, b = lo.clone(), hi.clone()
            for _ in range(80):
                mid = 0.5 * (a + b)
                cdf = self.cdf(mid)
                below = cdf < q
                a = torch.where(below, mid, a)
                b = torch.where(below, b, mid)
            out.append(0.5 * (a + b))
        return torch.stack(out, -1)

    def cdf(self, y: torch.Tensor) -> torch.Tensor:
        """The predictive CDF at y (one value per row)."""
        z = (y.unsqueeze(-1) - self.expert_means) / self.expert_variances.sqrt()
        out = (self.expert_weights * _normal_cdf(z)).sum(-1)
        if self.noise_weight is not None:
            lo, hi = self.noise_bounds.unbind(-1)
            out = out + self.noise_weight * ((y - lo) / (hi - lo)).clamp(0, 1)
        return out


def _normal_cdf(z: torch.Tensor) -> torch.Tensor:
    return 0.5 * (1 + torch.erf(z / math.sqrt(2)))


@dataclass
class FitResult:
    """Posterior q(Z) q(W) [q(pi)] [q(beta)], point-estimated hyperparameters and history."""

    method: str
    model_name: str
    model_path: str
    X: torch.Tensor
    y: torch.Tensor
    responsibilities: torch.Tensor
    mean: torch.Tensor
    cov: torch.Tensor
    prior_mean: torch.Tensor
    prior_cov: torch.Tensor
    noise_precision: torch.Tensor
    concentration: torch.Tensor
    objective_history: torch.Tensor
    elbo_history: torch.Tensor
    time_history: torch.Tensor
    iterations: int
    wall_time: float
    converged: bool
    learn: tuple[str, ...] = ()
    alpha: torch.Tensor | None = None
    log_gate: torch.Tensor | None = None
    noise_shape: torch.Tensor | None = None
    noise_rate: torch.Tensor | None = None
    regularization_cov: torch.Tensor | None = None
    gate_state: dict[str, torch.Tensor] | None = None
    gate_hidden: int | None = None
    restarts: list[dict[str, Any]] = field(default_factory=list)
    # {"design": "circle"|"conic"|"experts", "center", "scale"[, "experts", "kinds",
    #  "columns", "response"]} (see curve_fitting.curve_design / experts_design)
    shapes: dict[str, Any] | None = None
    noise_bounds: torch.Tensor | None = None  # (lo, hi) of the noise expert, if any
    noise_weight: torch.Tensor | None = None  # rho, the noise share of a gated model
    maps: torch.Tensor | None = None  # (K, n+1, d) each expert's own features and target

    # ---- summaries ---------------------------------------------------------------------
    @property
    def experts(self) -> int:
        return self.mean.shape[0]

    @property
    def objective(self) -> float:
        """Final objective F = ELBO (+ R(w0) for the regularized model) (+ log p(V) with a
        gate prior), in nats."""
        return float(self.objective_history[-1])

    @property
    def elbo(self) -> float:
        """Final ELBO in nats (without the regularizer and the gate prior)."""
        return float(self.elbo_history[-1])

    @property
    def regularizer(self) -> float:
        """F - ELBO: R(w0) (regularized model) plus log p(V) (gate prior), in nats."""
        return self.objective - self.elbo

    @property
    def noise_expert(self) -> bool:
        return self.noise_bounds is not None

    @property
    def outliers(self) -> torch.Tensor:
        """Boolean mask (N,): points most responsibly explained by the noise expert."""
        if not self.noise_expert:
            return torch.zeros(len(self.y), dtype=torch.bool, device=self.y.device)
        return self.responsibilities.argmax(-1) == self.experts

    @property
    def weights(self) -> torch.Tensor:
        """Mixture weights (C,): E_q[pi] or the average responsibility; noise expert last."""
        if self.alpha is not None:
            return self.alpha / self.alpha.sum()
        return self.responsibilities.mean(0)

    def summary(self) -> str:
        lines = [
            f"{self.method.upper()} fit of {self.model_name!r}: K={self.experts}, N={len(self.y)}",
            f"  objective {self.objective:.6g} nats (ELBO {self.elbo:.6g}), "
            f"{self.iterations} iterations, {self.wall_time:.3g} s, converged={self.converged}",
        ]
        return "\n".join(lines)

    # ---- prediction --------------------------------------------------------------------
    def gate_network(self) -> torch.nn.Module | None:
        """The gate with its fitted parameters, rebuilt from the model file (gated models)."""
        if self.gate_state is None:
            return None
        from .model_file import load_model

        model = load_model(self.model_path if Path(self.model_path).is_file() else self.model_name)
        with torch.device(self.X.device):  # built where the data are, then overwritten
            gate = model.module.make_gate(self.X.shape[1], self.experts, self.gate_hidden)
        gate = gate.to(dtype=self.X.dtype)
        gate.load_state_dict(self.gate_state)
        return gate

    def expert_weights(self, X: torch.Tensor) -> torch.Tensor:
        """g_k(x) (N, C) for rows of X: the gate's softmax, or E_q[pi]; noise expert last."""
        gate = self.gate_network()
        if gate is None:
            return self.weights.expand(X.shape[0], -1)
        from .config import log_gate

        with torch.no_grad():
            return log_gate(gate, X, self.noise_weight).exp()

    def predict(self, X) -> Prediction:
        """Posterior predictive mean and variance at the rows of X (a mixture over experts)."""
        X = torch.as_tensor(X, dtype=self.X.dtype, device=self.X.device)
        if X.dim() != 2 or X.shape[1] != self.X.shape[1]:
            raise InputError(f"X must have shape (N, {self.X.shape[1]}), got {tuple(X.shape)}")
        g = self.expert_weights(X)
        K = self.experts
        if self.maps is None:
            mu = X @ self.mean.T
            var = 1.0 / self.noise_precision + ((X @ self.cov) * X).sum(-1).T
        else:
            mu, var = self._mapped_predictive(X)
        mean = (g[:, :K] * mu).sum(-1)
        second = (g[:, :K] * (var + mu * mu)).sum(-1)
        g0 = None
        if self.noise_expert:
            g0 = g[:, K]
            lo, hi = self.noise_bounds.unbind(-1)
            mean = mean + g0 * (lo + hi) / 2
            second = second + g0 * (lo * lo + lo * hi + hi * hi) / 3
        variance = (second - mean * mean).clamp_min(0)
        return Prediction(mean, variance, g[:, :K], mu, var, g0, self.noise_bounds)

    def _mapped_predictive(self, X: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Expert means and variances of y with expert maps: t_k = y + T_k[n, :-1] x, so
        y = w_k^T phi_k(x) - T_k[n, :-1] x + noise, phi_k(x) = T_k[:n, :-1] x."""
        T = self.maps
        if bool((T[:, -1, -1] != 1).any()) or bool((T[:, :-1, -1] != 0).any()):
            raise InputError(
                "these experts model different targets (mixed targets), so there is no "
                "predictive density of one y; predict with experts that share the response"
            )
        phi = torch.einsum("nd,kjd->nkj", X, T[:, :-1, :-1])
        mu = (phi * self.mean).sum(-1) - X @ T[:, -1, :-1].T
        quad = torch.einsum("nkj,kjl,nkl->nk", phi, self.cov, phi)
        return mu, 1.0 / self.noise_precision + quad

    # ---- shapes ------------------------------------------------------------------------
    def _standardization(self):
        from .curve_fitting import standardization_of

        return standardization_of(self.shapes)

    def pixel_points(self) -> np.ndarray:
        """The fitted points (N, 2) in pixel units, read back from the shape design
        (circle: X = [x, y, 1]; conic: X = [xy, y^2, x, y, 1]; experts with their own
        maps: the columns named in ``shapes``; all standardized)."""
        st = self._standardization()
        design = self.shapes["design"]
        if design in ("circle", "conic"):
            cols = slice(0, 2) if design == "circle" else slice(2, 4)
            return st.to_pixels(self.X[:, cols].detach().cpu().numpy())
        Z = torch.cat([self.X, self.y.unsqueeze(-1)], -1).detach().cpu().numpy()
        names = [*self.shapes["columns"], self.shapes["response"]]
        return st.to_pixels(Z[:, [names.index("x"), names.index("y")]])

    @property
    def expert_kinds(self) -> list[str | None]:
        """The kind of curve each expert is ("circle", "conic", "line" or None)."""
        if not self.shapes or "design" not in self.shapes:
            raise InputError("this result was not fitted on shape data (no curve design)")
        if self.shapes["design"] in ("circle", "conic"):
            return [self.shapes["design"]] * self.experts
        return list(self.shapes["kinds"])

    def curves(self) -> list:
        """Each expert as its own kind of curve, in pixel units, from E_q[w_k]: a Circle for
        a circle expert, a Conic for a conic (ellipse) expert, a Line for a line expert, the
        weights for an expert without a kind (:mod:`pyro_moe.experts`)."""
        from .experts import curve_of

        st = self._standardization()
        W = self.mean.detach().cpu().numpy()
        return [curve_of(kind, w, st) for kind, w in zip(self.expert_kinds, W, strict=True)]

    def circles(self) -> list:
        """One circle per expert, in pixel units (x = column, y = row), from E_q[w_k]."""
        from .shapes import circle_from_weights, circle_to_pixels

        st = self._standardization()
        if self.shapes["design"] != "circle":
            if set(self.expert_kinds) == {"circle"}:
                return self.curves()
            raise InputError(
                f"the experts are {self.expert_kinds}, not all circles; use result.curves()"
            )
        return [circle_to_pixels(circle_from_weights(w), st) for w in self.mean.cpu().numpy()]

    def conics(self) -> list:
        """One conic per expert, in pixel units, from E_q[w_k]."""
        from .shapes import conic_from_weights, conic_to_pixels

        st = self._standardization()
        if self.shapes["design"] != "conic":
            if set(self.expert_kinds) == {"conic"}:
                return self.curves()
            raise InputError(
                f"the experts are {self.expert_kinds}, not all conics; use result.curves()"
            )
        return [conic_to_pixels(conic_from_weights(w), st) for w in self.mean.cpu().numpy()]

    # ---- persistence -------------------------------------------------------------------
    _ARRAYS = (
        "X y responsibilities mean cov prior_mean prior_cov noise_precision concentration "
        "objective_history elbo_history time_history alpha log_gate noise_shape noise_rate "
        "regularization_cov noise_bounds noise_weight maps"
    ).split()

    def save(self, path: str | Path) -> Path:
        """Write a ``.npz`` (see the module docstring); atomic: a temp file, then a rename."""
        path = Path(path)
        arrays = {k: _np(getattr(self, k)) for k in self._ARRAYS if getattr(self, k) is not None}
        for name, value in (self.gate_state or {}).items():
            arrays[f"gate/{name}"] = _np(value)
        meta = {
            "method": self.method,
            "model_name": self.model_name,
            "model_path": self.model_path,
            "iterations": self.iterations,
            "wall_time": self.wall_time,
            "converged": self.converged,
            "learn": list(self.learn),
            "gate_hidden": self.gate_hidden,
            "restarts": self.restarts,
            "shapes": self.shapes,
        }
        arrays["meta"] = np.array(json.dumps(meta, default=_jsonable))
        fd, tmp = tempfile.mkstemp(suffix=".npz", dir=path.parent if str(path.parent) else ".")
        os.close(fd)
        try:
            np.savez(tmp, **arrays)
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; a saved result is a normal file
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path

    @classmethod
    def load(cls, path: str | Path) -> FitResult:
        """Read a result written by :meth:`save`."""
        try:
            data = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise InputError(f"cannot read a saved result from {path}: {e}") from e
        with data:
            meta = json.loads(str(data["meta"]))
            kw = {k: torch.from_numpy(data[k].copy()) for k in cls._ARRAYS if k in data.files}
            gate = {
                k[5:]: torch.from_numpy(data[k].copy()) for k in data.files if k.startswith("gate/")
            }
        return cls(
            **kw,
            method=meta["method"],
            model_name=meta["model_name"],
            model_path=meta["model_path"],
            iterations=meta["iterations"],
            wall_time=meta["wall_time"],
            converged=meta["converged"],
            learn=tuple(meta["learn"]),
            gate_hidden=meta["gate_hidden"],
            restarts=meta["restarts"],
            shapes=meta["shapes"],
            gate_state=gate or None,
        )


def _np(t) -> np.ndarray:
    return t.detach().cpu().numpy() if torch.is_tensor(t) else np.asarray(t)


def _jsonable(o):
    if isinstance(o, np.ndarray | torch.Tensor):
        return _np(o).tolist()
    if isinstance(o, np.generic):
        return o.item()
    raise TypeError(f"not JSON serialisable: {type(o)}")
