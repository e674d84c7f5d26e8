"""Summaries over seeds (:mod:`pyro_moe.study.stats`)."""

from __future__ import annotations

import math

from pyro_moe.study.stats import quantile, summary


def test_quantile_keeps_invalid_circles():
    assert quantile([1.0, 2.0, 3.0], 0.5) == 2.0
    assert quantile([1.0, 2.0], 0.25) == 1.25
    assert quantile([1.0, math.inf, math.inf], 0.5) == math.inf
    assert quantile([1.0, 2.0, math.inf], 0.25) == 1.5


def test_summary_counts_invalid_values():
    s = summary([3.0, 1.0, math.inf])
    assert s["n"] == 3 and s["median"] == 3.0 and s["min"] == 1.0 and s["invalid"] == 1
    assert math.isnan(summary([])["median"])
