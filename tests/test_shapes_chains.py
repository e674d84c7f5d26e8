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


def _ring_and_branches() -> np.ndarray:
    """A one-pixel ring, a line that meets it (a junction), a loose arc, a diamond loop and
    stray pixels."""
    from skimage.draw import circle_perimeter

    mask = np.zeros((90, 120), dtype=bool)
    rr, cc = circle_perimeter(40, 40, 25)
    mask[rr, cc] = True
    mask[40, 65:110] = True  # a line from the ring's right side
    rr, cc = circle_perimeter(70, 95, 12)
    keep = cc < 95  # its left half: an open arc
    mask[rr[keep], cc[keep]] = True
    for k in range(13):  # a diamond loop: its first pixel's neighbours go down-left, down-right
        for r, c in ((8 + k, 100 - k), (8 + k, 100 + k), (32 - k, 100 - k), (32 - k, 100 + k)):
            mask[r, c] = True
    mask[5, 5] = mask[85, 3] = True
    return mask


def _reference_chains(mask: np.ndarray, min_length: int) -> list[np.ndarray]:
    """The rule of edge_chains by hand: a pixel walk along each junction-free run, from its
    first end in raster order (a loop: its first pixel), the first free neighbour in raster
    order taken at each step."""
    from skimage.morphology import skeletonize

    m = skeletonize(mask)
    pad = np.pad(m, 1)
    deg = sum(np.roll(np.roll(pad, dr, 0), dc, 1) for dr in (-1, 0, 1) for dc in (-1, 0, 1))
    m &= (deg[1:-1, 1:-1] - 1) <= 2
    pixels = sorted(zip(*np.nonzero(m), strict=True))
    on = set(pixels)

    def near(p):
        return [q for q in ((p[0] + dr, p[1] + dc) for dr in (-1, 0, 1) for dc in (-1, 0, 1))
                if q != p and q in on]  # fmt: skip

    seen: set = set()
    runs = []
    for p in pixels:  # a run: its pixels, by flood fill
        if p in seen:
            continue
        run, todo = [], [p]
        seen.add(p)
        while todo:
            q = todo.pop()
            run.append(q)
            for r in near(q):
                if r not in seen:
                    seen.add(r)
                    todo.append(r)
        runs.append(sorted(run))
    out = []
    for run in runs:
        if len(run) < min_length:
            continue
        ends = [p for p in run if len(near(p)) <= 1]
        walk, done = [(ends or run)[0]], {(ends or run)[0]}
        while True:
            nxt = [q for q in sorted(near(walk[-1])) if q not in done]
            if not nxt:
                break
            walk.append(nxt[0])
            done.add(nxt[0])
        out.append(np.array(walk))
    return out


def test_edge_chains_walk_each_run_from_its_first_end_without_junctions():
    from pyro_moe.shapes.chains import edge_chains

    mask = _ring_and_branches()
    got = edge_chains(mask, min_length=5)
    want = _reference_chains(mask, 5)
    assert len(got) == len(want) >= 3
    for g, w in zip(got, want, strict=True):
        np.testing.assert_array_equal(g, w)
        steps = np.abs(np.diff(g, axis=0))
        assert steps.max() <= 1 and (steps.sum(1) > 0).all()  # 8-neighbours, in order


def _reference_arcs(chain: np.ndarray, min_length: int = 10) -> list[np.ndarray]:
    """The arcs of one chain by the module's rule, one chain at a time."""
    from pyro_moe.shapes.chains import CORNER_SPAN, MAX_TURN, MIN_CURVATURE, TANGENT_SPAN

    M, h = len(chain), TANGENT_SPAN
    i = np.arange(M)
    d = (chain[np.clip(i + h, 0, M - 1)] - chain[np.clip(i - h, 0, M - 1)]).astype(float)
    theta = np.unwrap(np.arctan2(d[:, 0], d[:, 1]))
    s = CORNER_SPAN // 2
    cut = np.abs(theta[np.clip(i + s, 0, M - 1)] - theta[np.clip(i - s, 0, M - 1)]) > MAX_TURN
    kappa = np.convolve(np.gradient(theta), np.ones(2 * h + 1) / (2 * h + 1), mode="same")
    sign = np.where(kappa > MIN_CURVATURE, 1, np.where(kappa < -MIN_CURVATURE, -1, 0))
    nz = np.flatnonzero(sign)
    cut[nz[1:][sign[nz[1:]] != sign[nz[:-1]]]] = True
    edges = np.diff(np.concatenate([[0], (~cut).astype(np.int8), [0]]))
    starts, stops = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    return [np.arange(a, b) for a, b in zip(starts, stops, strict=True) if b - a >= min_length]


def test_the_arcs_of_all_chains_at_once_are_each_chains_own():
    from pyro_moe.shapes.chains import _arcs, chain_arcs

    t = np.linspace(0, 2 * np.pi, 160)
    wave = np.column_stack([40 + 30 * np.sin(t), np.arange(160)]).round().astype(int)
    s = np.linspace(0, 1.5 * np.pi, 120)
    hook = np.column_stack([50 + 20 * np.cos(s), 50 + 20 * np.sin(s)]).round().astype(int)
    corner = np.array([(r, 0) for r in range(30)] + [(29, c) for c in range(1, 30)])
    chains = [wave, corner[:6], hook, corner, wave[::-1]]
    batch = _arcs(chains)
    assert batch[1] == []  # shorter than MIN_ARC
    assert sum(len(a) for a in batch) >= 6  # the wave's inflections, the corner cut
    for ch, arcs in zip(chains, batch, strict=True):
        want = _reference_arcs(ch) if len(ch) >= 10 else []
        assert len(arcs) == len(want)
        for a, b in zip(arcs, want, strict=True):
            np.testing.assert_array_equal(a, b)
        assert len(chain_arcs(ch)) == len(want)
