"""Hyperparameters and settings handed to a model file's ``model`` and ``guide``.

A model file reads its hyperparameters through :meth:`Config.hyper`: a hyperparameter
that is *learned* becomes a ``pyro.param`` (the point estimate of the M-step, or of SVI's
type-II maximum likelihood), one that is *held fixed* is a constant tensor. Both engines
(CAVI and SVI) see the same model through the same object.

Names of the hyperparameters (each file uses a subset):

=====================  ===========  ==========================================
name                   shape        meaning
=====================  ===========  ==========================================
``prior_mean``         (K, n)       w0_k, prior mean of expert k's weights
``prior_cov``          (K, n, n)    A_k, prior covariance of expert k's weights
``noise_precision``    () or (K,)   beta, precision of y_i | z_i = k: one shared by the
                                    experts, or beta_k, one per expert
                                    (``SETTINGS["per_expert_noise"]``)
``concentration``      (C,)         mu, Dirichlet concentration of pi (never learned);
                                    C = K, or K + 1 with the noise expert
``regularization_cov`` (n, n)       Xi, covariance of w0_k - w0_k' (never learned)
``gate``               module       the gate network V (mixtures of experts)
``noise_weight``       ()           rho, the noise expert's share in a gated model
                                    (learned with the gate)
``maps``               (K, n+1, d)  T_k, each expert's own features and target
                                    (heterogeneous experts; never learned)
``gate_prior_scale``   float        s of the gate prior p(V) = N(0, s^2 I) on the
                                    gate's weights (never learned; None: no prior)
=====================  ===========  ==========================================
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

import pyro
import torch
from pyro.distributions import constraints

from .catalog import LEARNABLE
from .errors import InputError

_CONSTRAINTS = {
    "prior_mean": constraints.real,
    "prior_cov": constraints.positive_definite,
    "noise_precision": constraints.positive,
}


@dataclass
class Config:
    """Hyperparameter values and settings of one fit.

    Attributes:
        experts: number of experts K (the noise expert, when on, is not counted).
        features: dimension n of the design rows x_i.
        prior_mean: w0, shape (K, n).
        prior_cov: A, shape (K, n, n), positive definite.
        noise_precision: beta > 0: a 0-dim tensor (shared by the experts) or beta_k, shape
            (K,), one per expert (:attr:`per_expert_noise`).
        concentration: mu, shape (K,), the Dirichlet concentration of the mixture weights.
        regularization_cov: Xi, shape (n, n), or None when the model has no regularizer.
        gate: the gate network (``torch.nn.Module`` mapping (N, n) to (N, K) logits) or None.
        gate_hidden: the hidden width the gate was built with (to rebuild it from the file).
        noise_bounds: (lo, hi) of the noise expert's uniform density over the targets, or
            None without a noise expert. With it there are K + 1 mixture components: the K
            experts, then the noise expert (last), with its own Dirichlet share or gate output.
        noise_weight: rho, the noise expert's share in a gated model (learned with the gate):
            g(x) = [(1 - rho) softmax(V(x)), rho], constant in x (see ``log_gate``).
        gate_prior_scale: s of the Gaussian prior p(V) = N(0, s^2 I) on the gate's weights
            (:func:`gate_weights`), or None. The model file decides whether to use it (its
            ``gate_prior``); the built-in gated files do with the noise expert only.
        learn: names of the hyperparameters that are point-estimated; the rest are fixed.
        maps: expert maps T (K, n + 1, d) for experts with their own features and targets
            (:mod:`pyro_moe.experts`): expert k sees phi = T_k[:n] z and t = T_k[n] z of
            z = [x, y] (d = the design's width + 1), its weights padded to n. None: every
            expert uses the design x and the target y.
    """

    experts: int
    features: int
    prior_mean: torch.Tensor
    prior_cov: torch.Tensor
    noise_precision: torch.Tensor
    concentration: torch.Tensor
    regularization_cov: torch.Tensor | None = None
    gate: torch.nn.Module | None = None
    gate_hidden: int | None = None
    noise_bounds: torch.Tensor | None = None
    noise_weight: torch.Tensor | None = None
    gate_prior_scale: float | None = None
    learn: frozenset[str] = field(default_factory=lambda: frozenset(LEARNABLE))
    maps: torch.Tensor | None = None

    def __post_init__(self) -> None:
        unknown = set(self.learn) - set(LEARNABLE)
        if unknown:
            raise InputError(
                f"cannot learn {sorted(unknown)}: learnable hyperparameters are {list(LEARNABLE)}"
            )
        self.learn = frozenset(self.learn)
        K, n = self.experts, self.features
        _check_shape("prior_mean", self.prior_mean, (K, n))
        _check_shape("prior_cov", self.prior_cov, (K, n, n))
        _check_shape("concentration", self.concentration, (self.components,))
        _check_pd("prior_cov (A)", self.prior_cov)
        beta = self.noise_precision
        if tuple(beta.shape) not in ((), (K,)):
            raise InputError(
                f"noise_precision must be a number or one per expert, shape ({K},), "
                f"got shape {tuple(beta.shape)}"
            )
        if bool((beta <= 0).any()) or not bool(torch.isfinite(beta).all()):
            raise InputError(f"noise_precision must be positive and finite, got {beta}")
        if (self.concentration <= 0).any():
            raise InputError("the Dirichlet concentration must be positive")
        if self.regularization_cov is not None:
            _check_shape("regularization_cov", self.regularization_cov, (n, n))
            _check_pd("regularization_cov (Xi)", self.regularization_cov)
        if self.maps is not None:
            if self.maps.dim() != 3 or tuple(self.maps.shape[:2]) != (K, n + 1):
                raise InputError(
                    f"expert maps must have shape ({K}, {n + 1}, d), got {tuple(self.maps.shape)}"
                )
            if self.regularization_cov is not None and not (self.maps == self.maps[:1]).all():
                raise InputError(
                    "the prior regularization ties w0_k - w0_k' coordinate by coordinate, which "
                    "means nothing between experts with different feature maps; use one kind "
                    "of expert with a regularized model"
                )
        s = self.gate_prior_scale
        if s is not None and not (isinstance(s, int | float) and 0 < s < float("inf")):
            raise InputError(f"gate_prior_scale must be a positive number or None, got {s!r}")

    @property
    def noise_expert(self) -> bool:
        return self.noise_bounds is not None

    @property
    def per_expert_noise(self) -> bool:
        """True when each expert has its own noise precision beta_k."""
        return self.noise_precision.dim() == 1

    @property
    def components(self) -> int:
        """Mixture components: K experts, plus one when the noise expert is on."""
        return self.experts + int(self.noise_expert)

    def learns(self, name: str) -> bool:
        """True when hyperparameter ``name`` is point-estimated rather than held fixed."""
        return name in self.learn

    def hyper(self, name: str) -> torch.Tensor:
        """The value a model file uses for hyperparameter ``name``.

        A learned one is registered as ``pyro.param(name)`` (initialised from this config);
        a fixed one is returned as a constant.
        """
        value = getattr(self, name)
        if name in self.learn:
            return pyro.param(name, value.detach().clone(), constraint=_CONSTRAINTS[name])
        return value

    def gate_logits(self, X: torch.Tensor) -> torch.Tensor:
        """Gate log-probabilities (N, C), registering the gate (and rho) as parameters when
        the gate is learned. See :meth:`log_gate`."""
        gate = self.registered_gate()
        rho = self.noise_weight
        if self.noise_expert and "gate" in self.learn:
            rho = pyro.param(
                "noise_weight", rho.detach().clone(), constraint=constraints.unit_interval
            )
        return log_gate(gate, X, rho if self.noise_expert else None)

    def registered_gate(self) -> torch.nn.Module:
        """The gate network, registered as ``pyro.module("gate")`` when it is learned."""
        if self.gate is None:
            raise InputError("this model needs a gate network, but the config has none")
        return pyro.module("gate", self.gate) if "gate" in self.learn else self.gate

    def const(self, value) -> torch.Tensor:
        """A constant on this fit's dtype and device, for numbers in a model file's priors.

        Write ``dist.Gamma(config.const(1.0), config.const(0.1))`` rather than
        ``dist.Gamma(1.0, 0.1)``: plain floats become float32 CPU tensors, which mix badly
        with float64 data (Pyro's ELBO refuses them) and with CUDA.
        """
        return torch.as_tensor(value, dtype=self.dtype, device=self.device)

    @property
    def dtype(self) -> torch.dtype:
        return self.prior_mean.dtype

    @property
    def device(self) -> torch.device:
        return self.prior_mean.device


def learn_set(learn: str | Iterable[str] | None) -> frozenset[str]:
    """Normalise a ``learn`` argument: None or "all" → everything, "none" → nothing."""
    if learn is None or (isinstance(learn, str) and learn == "all"):
        return frozenset(LEARNABLE)
    if isinstance(learn, str) and learn == "none":
        return frozenset()
    if isinstance(learn, str):
        learn = [s.strip() for s in learn.split(",") if s.strip()]
    allowed = f"'all', 'none' or names among {', '.join(LEARNABLE)}"
    if not isinstance(learn, list | tuple | set | frozenset) or not all(
        isinstance(s, str) for s in learn
    ):
        raise InputError(f"learn={learn!r} is not allowed: learn must be {allowed}")
    learn = frozenset(learn)
    unknown = sorted(learn - set(LEARNABLE))
    if unknown:
        raise InputError(f"learn: cannot learn {unknown}; learn must be {allowed}")
    return learn


def _check_shape(name: str, value: torch.Tensor, shape: tuple[int, ...]) -> None:
    if tuple(value.shape) != shape:
        raise InputError(f"{name} must have shape {shape}, got {tuple(value.shape)}")
    if not torch.isfinite(value).all():
        raise InputError(f"{name} contains NaN or inf")


def _check_pd(name: str, value: torch.Tensor) -> None:
    sym = torch.allclose(value, value.transpose(-1, -2), rtol=1e-8, atol=1e-12)
    _, info = torch.linalg.cholesky_ex(value)
    if not sym or bool((info != 0).any()):
        raise InputError(f"{name} must be symmetric positive definite")


class ScaledInput(torch.nn.Module):
    """A model file's gate network V fed x / s, s_j = rms(x_j) of the fitted data's column j
    (1 for an all-zero column): g(x) = softmax(V(x / s)).

    The gate then sees its inputs in the data's own units, as the default weight prior does
    (:func:`pyro_moe.fitting.weight_scale`): scaling a column of X by c scales s_j by c and
    leaves g, the fit and the gate prior p(V) unchanged (an unscaled sigmoid layer saturates
    on coordinates ~1e4 and is nearly linear on ~1e-3). ``s`` is a buffer, saved with the
    gate's ``state_dict``; ``inner`` is the model file's ``make_gate`` network.
    """

    def __init__(self, inner: torch.nn.Module, scale: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("scale", scale.detach().clone())
        self.inner = inner

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        return self.inner(X / self.scale)


def input_scale(rms: torch.Tensor) -> torch.Tensor:
    """The gate's s (n,) from the columns' root mean squares rms(x_j): s_j = rms(x_j), 1
    where a column is all zero."""
    return torch.where(rms > 0, rms, torch.ones_like(rms))


def log_gate(gate: torch.nn.Module, X: torch.Tensor, noise_weight=None) -> torch.Tensor:
    """log g(x) (N, C): log softmax(V(x)) over the K experts, and with a noise expert

        log g_k(x) = log(1 - rho) + log softmax_k(V(x)),   log g_K(x) = log rho.

    The noise share rho is constant in x: uniform clutter does not depend on where a point
    lies, and rho then has an exact M-step (rho = mean_i r_iK) while the gate models only
    which expert explains a point. (Measured on the study's Synthetic 3 with the
    regularized model without a gate prior, median S over 10 seeds was 0.022 with this
    share and 0.023 with an x-dependent extra gate output: a sharp gate routes stray points
    between the circle experts, and that solution has the higher ELBO. The gate prior
    p(V) of the gated model files removes it: ``gate_prior`` in
    ``models/regularized_experts.py``, ``docs/cavi_notes.md`` section 7.)
    """
    logits = torch.log_softmax(gate(X), -1)
    if noise_weight is None:
        return logits
    rho = noise_weight.reshape(1, 1).expand(X.shape[0], 1)
    return torch.cat([logits + torch.log1p(-rho), torch.log(rho)], -1)


def gate_weights(gate: torch.nn.Module) -> list[torch.Tensor]:
    """The gate parameters that carry the gate prior: its weight matrices (every parameter
    with two or more dimensions, V1 and V2 of a two-layer gate), not its biases.

    A gate with zero weights is constant in x, g(x) = softmax(b) with b the output bias: the
    mixture of models' shares. With the biases flat (no prior), p(V) = N(0, s^2 I) on the
    weights shrinks the gate towards a constant gate, not towards equal shares.
    """
    return [p for p in gate.parameters() if p.dim() >= 2]


#: the share of the targets trimmed from each end for :func:`robust_variance`
TRIM = 0.025
#: Var(y) over the trimmed variance beyond which the trimmed one is the targets' spread (a
#: few extreme targets): far beyond what clean data of O(1) clusters give, so they keep
#: Var(y) (and the in-memory fit the distributed one's, which has no order statistics)
ROBUST_RATIO = 1e6


def robust_variance(y: torch.Tensor) -> float:
    """Var(y), or the variance of y without its TRIM smallest and largest values (at least
    one each) where Var(y) is more than :data:`ROBUST_RATIO` times that: the targets' spread
    without the pull of a few extreme ones (one y of 1e12 among O(1) targets makes Var(y)
    ~1e22, and scales from it, 1 / Var(y) or 1e10 / Var(y), no longer fit the others). A
    trimmed variance, not the MAD: the MAD is 0 when half the targets are equal (points on
    a circle of exact data)."""
    n = y.numel()
    var = float(y.var()) if n > 1 else 0.0
    k = max(1, math.ceil(TRIM * n))
    if n > 2 * k + 1:
        trimmed = float(y.reshape(-1).sort().values[k : n - k].var())
        if trimmed > 0 and var > ROBUST_RATIO * trimmed:
            return trimmed
    return var
