"""Experts with their own feature maps: the study's "learning with expert information".

Expert k of a heterogeneous mixture has its own feature map phi_k and target map t_k, both
linear combinations of named *columns* of the data (the curve application names monomials
of a point, ``xx, xy, yy, x, y, 1``: :mod:`pyro_moe.curves.design`), and models
t_k | z = k ~ N(w_k^T phi_k, 1/beta) with w_k in R^{n_k}. An :class:`Expert` declares phi_k
by column names, and t_k as a *response* column plus a known *offset* (a linear combination
of other columns); its ``kind`` is an opaque label that the layer above reads (the curve
application: how the weights read as a curve). For example, with monomials of a point:

* circle  (x - x0)^2 + (y - y0)^2 = r^2:   phi = [x, y, 1],          t = xx + yy
* conic   x^2 = B'xy + C'y^2 + D'x + E'y + F':  phi = [xy, yy, x, y, 1], t = xx
* line    x = a y + c:                     phi = [y, 1],             t = x

**One design for all.** A fit sees one design X (the columns any expert uses, except the
reference response) and one target y (the reference response: the first expert's), so
Z = [X, y] has d columns. Expert k is the linear map T_k, shape (n+1, d) with n = max_k
n_k: rows 1..n_k give phi_k = T_k[:n_k] z, row n+1 gives t_k = T_k[n] z, and rows
n_k+1..n are zero. The padded weights w_k[n_k:] then never meet the data: their q equals
their prior N(0, I) and they add exactly nothing to the ELBO (KL 0), so the padded model
*is* the heterogeneous one. Every engine works in the z-space of this layout: CAVI's
statistics are sum_i r_ik z_i z_i^T mapped by T_k (:mod:`pyro_moe.closed_form.updates`), Pyro's
likelihood evaluates N(t_k | w_k^T phi_k, 1/beta) at y through the shifted mean
w_k^T phi_k - (t_k - y), which is the same density value (:func:`pyro_moe.parts.expert_locs`).

**Shared or mixed targets.** Experts with the same response share the target up to a
known shift (the circle's t = xx + yy is xx shifted by yy, a function of the point):
N(t_k | mu, s^2) = N(xx | mu - yy, s^2), so every component is a density of the same
quantity xx and the mixture, its responsibilities and its ELBO mean what they say. A line
expert's response is x, not xx: its likelihood is a density of a *different* quantity, the
ELBO adds densities in different units (rescaling x changes the line expert's log-density
by a constant per point, so it changes which expert wins), and responsibilities compare
incommensurable numbers. :func:`layout` refuses mixed responses unless
``allow_mixed_targets=True``, and then warns (:class:`MixedTargetsWarning`).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from .errors import InputError

__all__ = ["Expert", "Layout", "MixedTargetsWarning", "check_maps", "layout"]


class MixedTargetsWarning(UserWarning):
    """Experts model different target quantities: the ELBO mixes densities of both."""


@dataclass(frozen=True)
class Expert:
    """One expert's maps: phi = ``features`` (column names), t = ``response`` +
    sum(c * m for m, c in ``offset``); ``kind`` is an opaque label for the layer above
    (the curve application reads it as the kind of curve, :mod:`pyro_moe.curves.design`)."""

    kind: str | None
    features: tuple[str, ...]
    response: str
    offset: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(set(self.features)) != len(self.features) or not self.features:
            raise InputError(
                f"an expert's features must be distinct and non-empty: {self.features}"
            )
        if self.response in self.features or self.response in self.offset:
            raise InputError(f"the response {self.response!r} cannot also be a feature or offset")

    @property
    def size(self) -> int:
        """n_k, the number of weights."""
        return len(self.features)


@dataclass(frozen=True)
class Layout:
    """The shared design of a heterogeneous mixture (see the module docstring).

    Attributes:
        names: the experts' names as asked for (e.g. ``("circle", "ellipse")``).
        experts: their :class:`Expert` declarations.
        columns: the names of the design X's columns; y is ``response``.
        response: the reference response (the first expert's).
        maps: T, shape (K, n + 1, d) float64, d = len(columns) + 1.
        mixed_targets: True when some expert has another response.
    """

    names: tuple[str, ...]
    experts: tuple[Expert, ...]
    columns: tuple[str, ...]
    response: str
    maps: torch.Tensor
    mixed_targets: bool

    @property
    def features(self) -> int:
        """n = max_k n_k, the padded length of the weights."""
        return self.maps.shape[1] - 1

    def design(self, values: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """(X (N, d - 1), y (N,)) from the data's columns by name (each (N,))."""
        return np.column_stack([values[c] for c in self.columns]), values[self.response]

    def as_dict(self) -> dict:
        """What a saved result needs to rebuild the layout: names, kinds, columns."""
        return {
            "experts": list(self.names),
            "kinds": [e.kind for e in self.experts],
            "columns": list(self.columns),
            "response": self.response,
        }


def layout(
    names: Sequence[str],
    catalog: Mapping[str, Expert],
    *,
    allow_mixed_targets: bool = False,
    order: Sequence[str] | None = None,
) -> Layout:
    """The :class:`Layout` of experts ``names`` declared in ``catalog`` (a model file's
    ``EXPERTS``). Mixed responses need ``allow_mixed_targets=True`` and then warn. The
    design's columns follow ``order`` (the curve application's monomials), then any other
    column in the order the experts first use it."""
    if isinstance(names, str):
        names = [s.strip() for s in names.split(",") if s.strip()]
    names = tuple(names)
    if not names:
        raise InputError("give at least one expert, e.g. experts=['circle', 'ellipse']")
    unknown = [n for n in names if n not in catalog]
    if unknown:
        raise InputError(
            f"unknown expert(s) {', '.join(map(repr, unknown))}; "
            f"the model file declares {', '.join(catalog)}"
        )
    experts = tuple(catalog[n] for n in names)
    response = experts[0].response
    mixed = any(e.response != response for e in experts)
    if mixed:
        responses = sorted({e.response for e in experts})
        message = (
            f"the experts {list(names)} model different targets ({', '.join(responses)}): "
            "their likelihoods are densities of different quantities, so the ELBO adds "
            "numbers in different units and the responsibilities compare them; a change of "
            "units shifts which expert wins"
        )
        if not allow_mixed_targets:
            raise InputError(
                message + "; pass allow_mixed_targets=True (pyro-moe: --allow-mixed-targets) to "
                "fit them anyway"
            )
        warnings.warn(message, MixedTargetsWarning, stacklevel=3)
    used = {m for e in experts for m in (*e.features, e.response, *e.offset)}
    seen = [m for e in experts for m in (*e.features, e.response, *e.offset)]
    ranked = [*(order or ()), *dict.fromkeys(seen)]
    columns = tuple(m for m in dict.fromkeys(ranked) if m in used and m != response)
    z_index = {m: j for j, m in enumerate((*columns, response))}
    n = max(e.size for e in experts)
    maps = torch.zeros(len(experts), n + 1, len(z_index), dtype=torch.float64, device="cpu")
    for k, e in enumerate(experts):  # K small: building the maps, not touching data
        for j, m in enumerate(e.features):
            maps[k, j, z_index[m]] = 1.0
        maps[k, n, z_index[e.response]] = 1.0
        for m, c in e.offset.items():
            maps[k, n, z_index[m]] += float(c)
    return Layout(names, experts, columns, response, maps, mixed)


def check_maps(maps: torch.Tensor, experts: int, width: int) -> torch.Tensor:
    """Validate expert maps T (K, n + 1, d) against K experts and a design of ``width``
    columns (d = width + 1)."""
    if maps.dim() != 3 or maps.shape[0] != experts or maps.shape[2] != width + 1:
        raise InputError(
            f"expert maps must have shape ({experts}, n + 1, {width + 1}), got {tuple(maps.shape)}"
        )
    if not torch.isfinite(maps).all():
        raise InputError("expert maps contain NaN or inf")
    if (maps[:, -1].abs().sum(-1) == 0).any():
        raise InputError("every expert needs a target map (the last row of its map is zero)")
    return maps
