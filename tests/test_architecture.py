"""docs/architecture.md is checked against the code: its table of rooms lists every module
of the package, and imports only go down that table (a room imports only rooms above it or
itself, type-only and function-level imports included)."""

from __future__ import annotations

import re
from pathlib import Path

from test_imports import ROOT, analyse, modules

DOC = ROOT / "docs" / "architecture.md"


def rooms(text: str | None = None) -> list[tuple[str, list[str]]]:
    """The table's rows in order: (first cell, the paths it names: files ``pyro_moe/x.py``
    or folders ``pyro_moe/x/``, ``models/``)."""
    text = DOC.read_text(encoding="utf-8") if text is None else text
    rows = []
    for line in text.splitlines():
        if not line.startswith("| `"):
            continue
        cell = line.split("|")[1]
        paths = re.findall(r"`([^`]+)`", cell)
        rows.append((cell.strip(), [p for p in paths if p.startswith(("pyro_moe/", "models/"))]))
    return rows


def room_of(module_file: str, table: list[tuple[str, list[str]]]) -> int | None:
    """The row whose most specific path holds ``module_file`` (relative to the root)."""
    best, length = None, -1
    for i, (_, paths) in enumerate(table):
        for p in paths:
            hit = module_file == p or (p.endswith("/") and module_file.startswith(p))
            if hit and len(p) > length:
                best, length = i, len(p)
    return best


def test_every_module_has_a_room():
    table = rooms()
    assert len(table) >= 8, "the rooms table was not found in docs/architecture.md"
    missing = [
        path.relative_to(ROOT).as_posix()
        for path in modules().values()
        if path is not None and room_of(path.relative_to(ROOT).as_posix(), table) is None
    ]
    assert missing == [], f"modules docs/architecture.md does not list: {missing}"


def test_every_path_the_table_names_exists():
    for _, paths in rooms():
        for p in paths:
            assert (ROOT / p).exists(), f"docs/architecture.md names {p}, which does not exist"


def test_imports_only_go_down_the_table():
    table = rooms()
    mods = {name: path for name, path in modules().items() if path is not None}
    up = []
    for e in analyse():
        if e.source not in mods or e.target not in mods:
            continue
        src = room_of(mods[e.source].relative_to(ROOT).as_posix(), table)
        dst = room_of(mods[e.target].relative_to(ROOT).as_posix(), table)
        if src is not None and dst is not None and dst > src:
            up.append(f"{e.file}:{e.line} ({table[src][0]} -> {table[dst][0]}): {e.text}")
    assert up == [], "imports that go up docs/architecture.md's table:\n" + "\n".join(up)


def test_the_check_itself(tmp_path: Path):
    text = (
        "| room | what |\n|---|---|\n"
        "| `pyro_moe/a.py`, `pyro_moe/b/` | low |\n"
        "| `pyro_moe/b/c.py` | high |\n"
    )
    table = rooms(text)
    assert [p for _, p in table] == [["pyro_moe/a.py", "pyro_moe/b/"], ["pyro_moe/b/c.py"]]
    assert room_of("pyro_moe/b/c.py", table) == 1  # the most specific path wins
    assert room_of("pyro_moe/b/d.py", table) == 0
    assert room_of("pyro_moe/e.py", table) is None
