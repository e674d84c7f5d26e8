"""The design of a curve fit: the experts' names, their layout over the monomials of a
point (each expert's kind checked against its form, :data:`~pyro_moe.shapes.geometry.FORMS`),
the design X and target y of standardized points, and the target's range over the points'
box (the noise expert's support). The one home of these, read by
:mod:`pyro_moe.curves.fitting` (points in memory) and :mod:`pyro_moe.curves.distributed`
(each chunk of distributed points)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from ..checks import check_count
from ..errors import InputError
from ..experts import Expert, Layout, layout
from ..shapes.geometry import FORMS, KINDS, MONOMIALS, monomials

__all__ = [
    "RANGE_GRID",
    "check_curve_expert",
    "curve_design",
    "curve_layout",
    "expert_names",
    "form_design",
    "one_form",
    "target_range",
]

#: grid points per axis over the bounding box when the target's range is found
RANGE_GRID = 129


#: The monomials of one coordinate: the axis (0: x, 1: y) each depends on alone.
_ONE_AXIS = {"xx": 0, "x": 0, "yy": 1, "y": 1}


def target_range(
    points: np.ndarray,
    response: str,
    offset: dict | None = None,
    *,
    targets: np.ndarray | None = None,
) -> tuple[float, float]:
    """(lo, hi): the range of the target t = response + sum_m c_m m (monomials of a point,
    :func:`pyro_moe.shapes.geometry.monomials`) over the bounding box of ``points`` (N, 2).

    This is the support of the noise expert of a curve fit. Stray pixels fall anywhere in
    the picture, so their density is uniform over the *box* the points span, mapped to the
    target, not over the range of the targets observed: on a clean ring t = x^2 + y^2 is
    nearly constant, its observed range is tiny, and a uniform density over it
    (1 / range) beats any Gaussian expert, so every point was called an outlier (measured:
    a one-pixel circle of r = 40 came back as r = 1.2 with outliers 1.000). Over the box the
    range of x^2 + y^2 is that of the box's squared radii, and a clean curve keeps its
    points. The range is taken on a RANGE_GRID x RANGE_GRID grid of the box (the targets
    are quadratic, so their extremes lie on it up to (box / RANGE_GRID)^2) joined with the
    observed targets, so every target lies inside it.

    A target of one monomial of each coordinate at most (the circle's x^2 + y^2, the
    conic's x^2) is read on the grid's two axes alone: the grid's t_ij = a_i + b_j, and
    floating-point addition never decreases when either term grows, so its extremes are
    min a + min b and max a + max b, the same numbers as the grid's (RANGE_GRID values
    per axis instead of RANGE_GRID^2). ``targets``: the observed targets (N,) when the
    caller has them (the curve design's y), else computed from ``points``.
    """
    # one column at a time (numpy reduces an (N, 2) array over its rows several times slower)
    axes = [np.linspace(v.min(), v.max(), RANGE_GRID) for v in (points[:, 0], points[:, 1])]
    terms = [(response, None), *(offset or {}).items()]
    if targets is None:
        m = monomials(points)
        targets = m[response]
        for name, c in (offset or {}).items():
            targets = targets + c * m[name]
    on_axis = [_ONE_AXIS.get(name) for name, _ in terms]
    if len(terms) <= 2 and None not in on_axis and len(set(on_axis)) == len(terms):
        parts = []
        for (name, c), axis in zip(terms, on_axis, strict=True):
            v = axes[axis] if name in ("x", "y") else axes[axis] * axes[axis]
            parts.append(v if c is None else c * v)
        lo = parts[0].min() + parts[1].min() if len(parts) == 2 else parts[0].min()
        hi = parts[0].max() + parts[1].max() if len(parts) == 2 else parts[0].max()
        return float(min(lo, targets.min())), float(max(hi, targets.max()))
    gx, gy = np.meshgrid(*axes)
    m = monomials(np.column_stack([gx.ravel(), gy.ravel()]))
    t = m[response]
    for name, c in (offset or {}).items():
        t = t + c * m[name]
    return float(min(t.min(), targets.min())), float(max(t.max(), targets.max()))


def expert_names(
    experts: int | Sequence[str] | str, design: str = "circle", points: int | None = None
) -> tuple[str, ...]:
    """The experts' names: ``design`` repeated for a count, else the names given (a list,
    or a comma-separated string such as ``"circle,ellipse"``). A count above ``points``
    (the number of points, when known) is the same :class:`InputError` as
    :func:`pyro_moe.fit`'s, raised before anything is built."""
    if isinstance(experts, str):
        names = tuple(s.strip() for s in experts.split(",") if s.strip())
    elif isinstance(experts, Sequence) and not isinstance(experts, bytes):
        names = tuple(experts)
    else:
        if not isinstance(experts, int | np.integer) or isinstance(experts, bool) or experts < 1:
            raise InputError(f"experts must be an integer >= 1 or expert names, got {experts!r}")
        check_experts(int(experts), points)
        if design not in ("circle", "conic"):
            raise InputError(f"unknown design {design!r}; use one of circle, conic")
        return (design,) * int(experts)
    check_experts(len(names), points)
    return names


def check_experts(experts, points: int | None) -> int:
    """``experts`` as a count >= 1 that is at most ``points`` (when known): the check of
    :func:`pyro_moe.fit`, made before a curve fit builds anything of size K."""
    experts = check_count("experts", experts, 1)
    if points is not None and experts > points:
        raise InputError(f"experts = {experts} is more than the number of points ({points})")
    return experts


def check_curve_expert(name: str, expert: Expert) -> None:
    """An expert of a curve fit: its columns are monomials of a point (:data:`MONOMIALS`)
    and, when it has a kind, it reads its weights in that kind's form (:data:`FORMS`)."""
    if expert.kind is not None and expert.kind not in KINDS:
        raise InputError(
            f"expert {name!r}: unknown expert kind {expert.kind!r}; "
            f"use one of {', '.join(KINDS)} or None"
        )
    if expert.kind is not None:
        features, response, offset = FORMS[expert.kind]
        declared = (tuple(expert.features), expert.response, dict(expert.offset))
        if declared != (features, response, offset):
            raise InputError(
                f"expert {name!r}: a {expert.kind} expert reads its weights in the form "
                f"features={features}, response={response!r}, offset={offset}; declare another "
                "form with kind=None"
            )
    names = (*expert.features, expert.response, *expert.offset)
    unknown = sorted(set(names) - set(MONOMIALS))
    if unknown:
        raise InputError(
            f"expert {name!r}: unknown monomial(s) {unknown}; use {', '.join(MONOMIALS)}"
        )


def curve_layout(
    names: Sequence[str], catalog: Mapping[str, Expert], *, allow_mixed_targets: bool = False
) -> Layout:
    """The :func:`pyro_moe.experts.layout` of curve experts ``names`` (each checked by
    :func:`check_curve_expert`), its columns in the order of :data:`MONOMIALS`."""
    for name in dict.fromkeys(names):
        if name in catalog:
            check_curve_expert(name, catalog[name])
    return layout(names, catalog, allow_mixed_targets=allow_mixed_targets, order=MONOMIALS)


def one_form(names: Sequence[str], catalog: Mapping[str, Expert]) -> Expert | None:
    """The expert of ``names`` when they all name one expert of ``catalog`` (checked by
    :func:`check_curve_expert`), else None. Experts of one form need no
    :func:`curve_layout`: they share their own design (:func:`form_design`) and no maps,
    and the layout's torch maps cost more than the rest of a small fit's design."""
    if not names or any(n != names[0] for n in names) or names[0] not in catalog:
        return None
    check_curve_expert(names[0], catalog[names[0]])
    return catalog[names[0]]


def form_design(e: Expert, standard: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The design X (N, n) and target y (N,) of standardized points (N, 2) shared by
    experts of one form ``e``: its own features phi(x, y) and target
    t = response + sum_m c_m m (a circle: X = [x, y, 1], t = x^2 + y^2)."""
    m = monomials(standard)
    X = np.column_stack([m[c] for c in e.features])
    y = m[e.response]
    for name, c in e.offset.items():
        y = y + c * m[name]
    return X, y


def curve_design(lay, standard: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The design X (N, n) and target y (N,) of standardized points (N, 2) for the experts
    of layout ``lay`` (:func:`curve_layout`): experts of one form share their
    own features phi(x, y) and target t = response + sum_m c_m m (:func:`form_design`);
    experts of several forms see the layout's common monomials
    (:meth:`~pyro_moe.experts.Layout.design`), each through its map. The one place the
    design is built: in memory, and on each chunk of distributed points."""
    e = lay.experts[0]
    if all(f == e for f in lay.experts):
        return form_design(e, standard)
    return lay.design(monomials(np.asarray(standard, dtype=np.float64)))
