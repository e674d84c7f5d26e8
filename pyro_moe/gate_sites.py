"""The gate of a mixture of experts as latent sites (NUTS's ``gate="sampled"``).

The gate's parameters V become two latent sites of the model file, ``gate_weights`` (the
weights a file's gate prior covers, flattened) and ``gate_biases`` (the rest), with prior

    p(V) = the file's gate prior on the weights (where it has one), N(0, s^2) on the rest,
    s = GATE_PRIOR_SCALE,

so that the sampler (:mod:`pyro_moe.engines.nuts`) draws them and the pointwise
log-likelihood of each draw (:meth:`pyro_moe.result.FitResult.pointwise_log_likelihood`,
:func:`pyro_moe.joint.file_joint`) reads that draw's gate. It knows nothing of a result, so
both the result and the log joint can read it.
"""

from __future__ import annotations

import copy
import types
from collections.abc import Mapping

import pyro
import torch

from .config import Config, gate_weights
from .errors import InputError
from .likelihood import trace_model
from .model_file import Model

# ---- the gate as latent sites (NUTS's gate="sampled") -----------------------------------
#: the latent sites of a sampled gate: its weight matrices and its biases, each flattened
GATE_SITES = ("gate_weights", "gate_biases")
#: sd of the N(0, s^2) prior on a sampled gate's parameters that the model file leaves
#: without one: weakly informative for logistic regression on inputs of unit scale
#: (Gelman, Jakulin, Pittau & Su 2008, "A weakly informative default prior distribution
#: for logistic and other regression models"); the gate sees x / rms(x)
#: (:class:`pyro_moe.config.ScaledInput`), so a unit change of a logit per unit of
#: scaled input has prior sd 2.5: flat enough for any split the data support, proper so
#: that an expert the data leave empty does not send the gate's bias to infinity.
GATE_PRIOR_SCALE = 2.5


def _gate_split(gate: torch.nn.Module) -> tuple[list[str], list[str]]:
    """The gate's parameter names: its weights (those of :func:`gate_weights`, the ones a
    file's gate prior covers) and the rest (biases), in ``named_parameters`` order."""
    weights = {id(p) for p in gate_weights(gate)}
    named = list(gate.named_parameters())
    return (
        [n for n, p in named if id(p) in weights],
        [n for n, p in named if id(p) not in weights],
    )


def gate_values(gate: torch.nn.Module, flat: Mapping[str, torch.Tensor]) -> dict:
    """The gate's parameters by name from the flat site values ``gate_weights`` (P,) and
    ``gate_biases`` (Q,) (leading batch dims allowed): :data:`GATE_SITES`' inverse."""
    weights, biases = _gate_split(gate)
    shapes = dict(gate.named_parameters())
    out = {}
    for site, names in zip(GATE_SITES, (weights, biases), strict=True):
        v = flat[site]
        sizes = [shapes[n].numel() for n in names]
        for n, part in zip(names, torch.split(v, sizes, -1), strict=True):
            out[n] = part.reshape(*v.shape[:-1], *shapes[n].shape)
    return out


def gate_flat(gate: torch.nn.Module, values: Mapping[str, torch.Tensor] | None = None) -> dict:
    """:data:`GATE_SITES`' values (leading batch dims allowed) from the gate's parameters
    by name (``values``; default the gate's own, detached): :func:`gate_values`' inverse."""
    weights, biases = _gate_split(gate)
    if values is None:
        values = {n: p.detach() for n, p in gate.named_parameters()}
    shapes = dict(gate.named_parameters())
    out = {}
    for site, names in zip(GATE_SITES, (weights, biases), strict=True):
        parts = [
            values[n].reshape(*values[n].shape[: values[n].dim() - shapes[n].dim()], -1)
            for n in names
        ]
        out[site] = torch.cat(parts, -1)
    return out


class _DrawnGate(torch.nn.Module):
    """The model file's gate network evaluated at drawn parameters
    (:func:`torch.func.functional_call`); ``parameters()`` yields the drawn values, so
    :func:`pyro_moe.config.gate_weights` reads them."""

    def __init__(self, gate: torch.nn.Module, values: dict[str, torch.Tensor]):
        super().__init__()
        self.gate = gate
        self.values = values

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.func.functional_call(self.gate, self.values, (x,))

    def parameters(self, recurse: bool = True):
        names = [n for n, _ in self.gate.named_parameters()]
        yield from (self.values[n] for n in names)


def sampled_gate_model(model: Model, X: torch.Tensor, y: torch.Tensor, config: Config):
    """(the model file with its gate's parameters as latent sites, the prior's description).

    The wrapped model samples ``gate_weights`` (the P weights of
    :func:`pyro_moe.config.gate_weights`, flattened) and ``gate_biases`` (the Q others), runs
    the file with the gate evaluated at them, and hides the file's observed ``gate_prior``
    site: where the file has one (``log p(V)`` on the weights), that very distribution is
    the weights' prior (a latent site's, no longer an observed constant); the biases, which
    the file's gate prior leaves flat (improper), and the weights of a file without a gate
    prior get N(0, :data:`GATE_PRIOR_SCALE`^2) each. The noise expert's share rho stays at
    its fitted value."""
    if config.gate is None:
        raise InputError("gate='sampled' needs a gated model file (a mixture of experts)")
    node = trace_model(model, X, y, config).nodes.get("gate_prior")
    file_prior = None if node is None or not node["is_observed"] else node["fn"]
    inner = pyro.poutine.block(model.model, hide=["gate_prior"])

    def wrapped(X, y, config, subsample=None):
        gate = config.gate
        weights, biases = _gate_split(gate)
        shapes = dict(gate.named_parameters())
        P = sum(shapes[n].numel() for n in weights)
        Q = sum(shapes[n].numel() for n in biases)
        zero = torch.zeros((), dtype=X.dtype, device=X.device)
        default = pyro.distributions.Normal(zero, zero + GATE_PRIOR_SCALE)
        prior_w = file_prior if file_prior is not None else default.expand([P]).to_event(1)
        flat = {
            "gate_weights": pyro.sample("gate_weights", prior_w),
            "gate_biases": pyro.sample("gate_biases", default.expand([Q]).to_event(1)),
        }
        drawn = copy.copy(config)
        drawn.gate = _DrawnGate(gate, gate_values(gate, flat))
        return inner(X, y, drawn, subsample)

    module = types.ModuleType(model.module.__name__)
    module.__dict__.update(model.module.__dict__)
    module.model = wrapped
    wrapped_model = Model(model.name, model.path, module, model.settings, model.text)
    if file_prior is not None:
        how = (
            "the weights: the model file's gate prior (its site 'gate_prior'); the biases: "
            f"N(0, {GATE_PRIOR_SCALE}^2), the file leaving them flat (improper)"
        )
    else:
        how = (
            f"N(0, {GATE_PRIOR_SCALE}^2) on every weight and bias: the model file has no gate "
            "prior, and a flat one is improper (pyro_moe.gate_sites.GATE_PRIOR_SCALE says why 2.5)"
        )
    return wrapped_model, how
