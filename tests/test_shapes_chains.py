"""Unit tests of pyro_moe.shapes.chains (the edge chains' own tests on photos are in
tests/test_photos.py)."""

from __future__ import annotations

import numpy as np
import pytest

from pyro_moe.shapes.chains import arc_cover, longest_arc


def _hit(pattern: str) -> np.ndarray:
    return np.array([c == "#" for c in pattern])


@pytest.mark.parametrize(
    "pattern,plain,bridged",
    [
        ("###.#####.###.......", 5 / 20, 13 / 20),  # single holes inside one arc
        ("##..##..##..##..##..", 2 / 20, 2 / 20),  # two-arc holes still break it
        ("#.#.#.#.#.#.#.#.#.#.", 1 / 20, 1.0),  # every other arc: bridged all round
        ("....................", 0.0, 0.0),
        ("####################", 1.0, 1.0),
        ("##.......#########.#", 9 / 20, 13 / 20),  # bridged across the wrap
    ],
)
def test_longest_arc_bridges_single_holes_only_when_asked(pattern, plain, bridged):
    hit = _hit(pattern)
    assert longest_arc(hit) == pytest.approx(plain)
    assert longest_arc(hit, holes=1) == pytest.approx(bridged)


def test_arc_cover_of_a_half_circle_covers_half():
    th = np.linspace(0, np.pi, 200, endpoint=False) + 1e-3
    P = np.column_stack([10 + 5 * np.cos(th), 20 + 5 * np.sin(th)])
    w = np.array([20.0, 40.0, 25.0 - 100.0 - 400.0])  # 2 x0, 2 y0, r^2 - x0^2 - y0^2
    hit = arc_cover(P, w, "circle", 36)
    assert hit.mean() == pytest.approx(0.5, abs=1 / 36)
    assert longest_arc(hit) == pytest.approx(hit.mean())
