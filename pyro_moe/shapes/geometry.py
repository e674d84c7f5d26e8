"""The geometry of a curve fit: what each expert's weights mean as a curve, in pixels.

Every curve fit — circles, conics, or a mix of kinds — is described by one
:class:`Geometry`: the experts' names and kinds, the design's column names (monomials of
a point), the target's name, and the :class:`~pyro_moe.shapes.points.Standardization` of
the points. A :class:`~pyro_moe.result.FitResult` carries it, and reads its weights back as
curves (:meth:`Geometry.curves`) and its design rows back as points
(:meth:`Geometry.pixel_points`) through it.

How a kind reads its weights is written once, in :data:`FORMS` (features, response,
offset): a circle (x - x0)^2 + (y - y0)^2 = r^2 is the regression of t = xx + yy on
phi = [x, y, 1] with w = (2 x0, 2 y0, r^2 - x0^2 - y0^2); a conic
x^2 = B'xy + C'y^2 + D'x + E'y + F' is the regression of t = xx on [xy, yy, x, y, 1];
a line x = a y + c regresses t = x on [y, 1].

Two layouts of the design (:attr:`Geometry.shared`):

* *shared*: every expert has the same form, so the design X is that form's features and
  the target its t (CAVI's fast path; no expert maps);
* *mapped*: experts of different forms see one design of every monomial they use and a
  reference response, each through its own map T_k (:mod:`pyro_moe.experts`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import InputError
from .curves import circle_from_weights, conic_from_weights, line_from_weights
from .points import Standardization

__all__ = ["FORMS", "KINDS", "MONOMIALS", "Geometry", "curve_of", "monomials", "target_name"]

#: Monomials of a point (x, y), in the order the design's columns use.
MONOMIALS = ("xx", "xy", "yy", "x", "y", "1")
#: How an expert's weights read as a curve: the form (features, response, offset) of each
#: kind. An expert of another form declares ``kind=None`` and is reported by its weights.
FORMS: Mapping[str, tuple[tuple[str, ...], str, Mapping[str, float]]] = {
    "circle": (("x", "y", "1"), "xx", {"yy": 1.0}),
    "conic": (("xy", "yy", "x", "y", "1"), "xx", {}),
    "line": (("y", "1"), "x", {}),
}
KINDS = tuple(FORMS)
_READERS = {"circle": circle_from_weights, "conic": conic_from_weights, "line": line_from_weights}


def monomials(xy: np.ndarray) -> dict[str, np.ndarray]:
    """The monomials of (N, 2) points, by name."""
    x, y = xy[:, 0], xy[:, 1]
    return {"xx": x * x, "xy": x * y, "yy": y * y, "x": x, "y": y, "1": np.ones_like(x)}


def target_name(response: str, offset: Mapping[str, float]) -> str:
    """The name of t = response + sum_m c_m m, e.g. ``"xx+yy"`` for the circle."""
    parts = [response]
    for m, c in offset.items():
        parts.append(m if c == 1.0 else f"{c:g}*{m}")
    return "+".join(parts)


def curve_of(kind: str | None, w: np.ndarray, standardization: Standardization | None = None):
    """An expert's weights read as its kind of curve (a Circle, Conic or Line; in pixel
    units when ``standardization`` is given), or its weights for an expert without a
    kind (``kind=None``: ``w`` as given)."""
    w = np.asarray(w, dtype=np.float64)
    if kind is None:
        return w
    curve = _READERS[kind](w[: len(FORMS[kind][0])])
    return curve.to_pixels(standardization) if standardization is not None else curve


@dataclass(frozen=True, eq=False)
class Geometry:
    """How a curve fit's design and weights map back to the picture.

    Attributes:
        names: each expert's name as asked for (``("circle", "circle")``,
            ``("circle", "ellipse")``).
        kinds: each expert's kind of curve ("circle", "conic", "line") or None.
        columns: the design X's column names (monomials).
        target: the name of y (``"xx+yy"`` for a shared circle design, the reference
            response ``"xx"`` for a mapped one).
        standardization: pixels = centre + scale * standard coordinates.
        shared: True when every expert regresses y on X (no expert maps).
    """

    names: tuple[str, ...]
    kinds: tuple[str | None, ...]
    columns: tuple[str, ...]
    target: str
    standardization: Standardization
    shared: bool

    def __post_init__(self) -> None:
        if len(self.names) != len(self.kinds) or not self.names:
            raise InputError(f"a geometry needs one kind per expert: {self.names}, {self.kinds}")
        for kind in self.kinds:
            if kind is not None and kind not in FORMS:
                raise InputError(f"unknown curve kind {kind!r}; use one of {', '.join(KINDS)}")
        object.__setattr__(self, "names", tuple(self.names))
        object.__setattr__(self, "kinds", tuple(self.kinds))
        object.__setattr__(self, "columns", tuple(self.columns))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Geometry):
            return NotImplemented
        return self.as_dict() == other.as_dict()

    __hash__ = None  # type: ignore[assignment]

    @classmethod
    def of(
        cls, kind: str, experts: int, standardization: Standardization | None = None
    ) -> Geometry:
        """``experts`` experts of one built-in form (``"circle"``, ``"conic"``, ``"line"``)
        on a shared design, in the units of ``standardization`` (None: the identity, for
        points fitted as they are)."""
        if kind not in FORMS:
            raise InputError(f"unknown curve kind {kind!r}; use one of {', '.join(KINDS)}")
        features, response, offset = FORMS[kind]
        st = standardization if standardization is not None else Standardization.identity()
        return cls((kind,) * experts, (kind,) * experts, features, target_name(response, offset),
                   st, True)  # fmt: skip

    @property
    def experts(self) -> int:
        return len(self.names)

    @property
    def design(self) -> str:
        """ "circle" or "conic" for a shared design of that kind, else "experts"."""
        kinds = set(self.kinds)
        if self.shared and len(kinds) == 1 and next(iter(kinds)) in ("circle", "conic"):
            return str(next(iter(kinds)))
        return "experts"

    def curves(self, W: np.ndarray) -> list:
        """Each expert's weights (K, n) as its kind of curve in pixel units."""
        W = np.asarray(W, dtype=np.float64)
        if W.shape[0] != self.experts:
            raise InputError(f"{W.shape[0]} weight rows for {self.experts} experts")
        st = self.standardization
        return [curve_of(kind, w, st) for kind, w in zip(self.kinds, W, strict=True)]

    def pixel_points(self, X: np.ndarray, y: np.ndarray) -> np.ndarray:
        """The fitted points (N, 2) in pixel units, read back from the design: the
        columns named ``x`` and ``y`` of [X, y]."""
        Z = np.column_stack([np.asarray(X, dtype=np.float64), np.asarray(y, dtype=np.float64)])
        names = [*self.columns, self.target]
        try:
            cols = [names.index("x"), names.index("y")]
        except ValueError:
            raise InputError(f"the design {names} does not hold the points' x and y") from None
        return self.standardization.to_pixels(Z[:, cols])

    def repeated(self, experts: int) -> Geometry:
        """The same geometry with ``experts`` experts of its one form (to choose K)."""
        if not self.shared or len(set(self.names)) != 1:
            raise InputError(
                f"only experts of one name can be repeated (to choose K), not {self.names}"
            )
        return Geometry((self.names[0],) * experts, (self.kinds[0],) * experts, self.columns,
                        self.target, self.standardization, True)  # fmt: skip

    def permuted(self, perm: Sequence[int]) -> Geometry:
        """The geometry with its experts reordered: new expert k = old expert perm[k]."""
        return Geometry(
            names=tuple(self.names[i] for i in perm),
            kinds=tuple(self.kinds[i] for i in perm),
            columns=self.columns,
            target=self.target,
            standardization=self.standardization,
            shared=self.shared,
        )

    # ---- persistence: a JSON-able dict ---------------------------------------------
    def as_dict(self) -> dict[str, Any]:
        st = self.standardization
        return {
            "design": self.design,
            "names": list(self.names),
            "kinds": list(self.kinds),
            "columns": list(self.columns),
            "target": self.target,
            "center": [float(c) for c in st.center],
            "scale": float(st.scale),
            "shared": self.shared,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], experts: int | None = None) -> Geometry:
        """Rebuild from :meth:`as_dict`; also reads the ``shapes`` dicts of results saved
        before the geometry type (``{"design": "circle" | "conic" | "experts", ...}``)."""
        try:
            st = Standardization(np.asarray(d["center"], float), float(d["scale"]))
            if "names" in d:
                return cls(
                    names=tuple(d["names"]),
                    kinds=tuple(d["kinds"]),
                    columns=tuple(d["columns"]),
                    target=str(d["target"]),
                    standardization=st,
                    shared=bool(d["shared"]),
                )
            design = d["design"]
            if design in ("circle", "conic"):
                if experts is None:
                    raise InputError("the number of experts is needed to read this geometry")
                features, response, offset = FORMS[design]
                return cls(
                    names=(design,) * experts,
                    kinds=(design,) * experts,
                    columns=features,
                    target=target_name(response, offset),
                    standardization=st,
                    shared=True,
                )
            return cls(
                names=tuple(d["experts"]),
                kinds=tuple(d["kinds"]),
                columns=tuple(d["columns"]),
                target=str(d["response"]),
                standardization=st,
                shared=False,
            )
        except (KeyError, TypeError, ValueError) as e:
            raise InputError(f"not a curve geometry: {dict(d)!r} ({e})") from e
