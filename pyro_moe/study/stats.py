"""Summaries over seeds that keep an invalid circle (S = inf) visible."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

__all__ = ["quantile", "summary"]


def quantile(values: Sequence[float], q: float) -> float:
    """Linear-interpolation quantile that keeps inf (an invalid circle) as inf."""
    v = sorted(values)
    if not v:
        return math.nan
    p = q * (len(v) - 1)
    lo, hi = math.floor(p), math.ceil(p)
    if v[lo] == v[hi]:
        return float(v[lo])
    return float(v[lo] + (v[hi] - v[lo]) * (p - lo))


def summary(values: Sequence[float]) -> dict[str, Any]:
    """``n``, ``median``, ``q25``, ``q75``, ``min``, ``max`` and ``invalid`` (non-finite
    values) of ``values``."""
    vals = [float(x) for x in values]
    return {
        "n": len(vals),
        "median": quantile(vals, 0.5),
        "q25": quantile(vals, 0.25),
        "q75": quantile(vals, 0.75),
        "min": min(vals) if vals else math.nan,
        "max": max(vals) if vals else math.nan,
        "invalid": sum(not math.isfinite(x) for x in vals),
    }
