"""Every repository path cited in the docs, docstrings and comments exists.

Scanned: the ``.py`` and ``.md`` files of ``pyro_moe/``, ``models/``, ``benchmarks/`` and
``docs/``, and ``README.md`` -- their whole text (docstrings, comments, help strings alike).
A citation is

* a path starting with a top-level folder (``docs/derivation.md``, ``models/<name>.py``,
  ``pyro_moe/cavi/``, ``benchmarks/results/cavi.{json,md}``, ``tests/test_docs.py``): it
  must exist relative to the repository root; ``{a,b}`` is expanded, ``*`` globs, text from
  a ``<`` on is a placeholder, and a path without its suffix (``notebooks/01_quickstart``)
  is fine when one file of that stem exists;
* a path starting with ``../``: taken relative to the citing file, it must exist AND stay
  inside the repository (``../shared/docs/derivation.md`` is outside a clone);
  The one exception is the study's data folder, ``../shared/data/`` (``EXTERNAL``): the data
  sets live beside the clone, not in it, and the code says so (tests needing them skip);
* a bare ``NAME.md``: some file of the repository must have that name (``NOTES.md`` after
  it moved to ``docs/cavi_notes.md`` has none), except the files the code writes
  (``OUTPUT_NAMES``).

Citations like "section 6" are text and are not checked.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCANNED = ("pyro_moe", "models", "benchmarks", "docs")
SCANNED_FILES = ("README.md",)
SUFFIXES = (".py", ".md")
TOP = ("docs", "models", "pyro_moe", "benchmarks", "tests", "notebooks")
# Names of files the code writes (not files of the repository) that the text mentions bare.
OUTPUT_NAMES = {"report.md"}  # pyro-moe reproduce --out DIR writes DIR/report.md
# Outside the repository on purpose: the study's data sets, read in place when present.
EXTERNAL = ("../shared/data/",)

_PART = r"(?:[\w.*-]|/|\{[\w.,-]*\})"
ROOTED = re.compile(rf"(?<![\w./-])(?:{'|'.join(TOP)})/{_PART}*")
PARENT = re.compile(rf"(?<![\w./-])(?:\.\./)+{_PART}+")
BARE_MD = re.compile(r"(?<![\w./-])[\w-]+\.md\b")
SKIP_DIRS = {".git", ".venv", "__pycache__", "build", "dist", ".ipynb_checkpoints"}


def _expand(path: str) -> list[str]:
    """``a.{json,md}`` -> ``[a.json, a.md]`` (every brace group)."""
    m = re.search(r"\{([^{}]*)\}", path)
    if not m:
        return [path]
    return [
        done
        for alt in m.group(1).split(",")
        for done in _expand(path[: m.start()] + alt + path[m.end() :])
    ]


def _repo_names() -> set[str]:
    names = set()
    for _dirpath, dirnames, filenames in os.walk(ROOT):
        dirnames[:] = [d for d in dirnames if d not in SKIP_DIRS and not d.endswith(".egg-info")]
        names.update(filenames)
    return names


def _exists(path: str, base: Path) -> str | None:
    """None when ``path`` (relative to ``base``) names something in the repository, else why not."""
    target = Path(os.path.normpath(base / path))
    if not target.is_relative_to(ROOT):
        return "outside the repository"
    if "*" in path:
        rel = target.relative_to(ROOT).as_posix()
        return None if any(ROOT.glob(rel)) else "matches nothing"
    if target.exists():
        return None
    if target.suffix == "" and any(target.parent.glob(target.name + ".*")):
        return None
    return "does not exist"


def scanned_files() -> list[Path]:
    files = [ROOT / f for f in SCANNED_FILES]
    for top in SCANNED:
        for dirpath, dirnames, filenames in os.walk(ROOT / top):
            dirnames[:] = [d for d in dirnames if d not in SKIP_DIRS]
            files += [Path(dirpath) / f for f in filenames if f.endswith(SUFFIXES)]
    return sorted(files)


def check_text(text: str, where: Path, names: set[str]) -> list[tuple[int, str, str]]:
    """(line, cited path, why) for each broken citation of ``text``, as if it were the file
    ``where`` (``../`` paths are relative to its folder); ``names``: the repository's file names."""
    broken = []
    for lineno, line in enumerate(text.splitlines(), 1):
        found = [(m.group(0), ROOT) for m in ROOTED.finditer(line)]
        found += [
            (m.group(0), where.parent)
            for m in PARENT.finditer(line)
            if not m.group(0).startswith(EXTERNAL)
        ]
        for cited, base in found:
            cited = cited.rstrip(".")
            for path in _expand(cited):
                why = _exists(path, base)
                if why:
                    broken.append((lineno, cited, why))
                    break
        for m in BARE_MD.finditer(line):
            if m.group(0) not in names and m.group(0) not in OUTPUT_NAMES:
                broken.append((lineno, m.group(0), "no file of that name"))
    return broken


def broken_citations() -> list[str]:
    """``file:line: path (why)`` for every cited path of the scanned files that does not exist."""
    names = _repo_names()
    return [
        f"{file.relative_to(ROOT)}:{lineno}: {cited} ({why})"
        for file in scanned_files()
        for lineno, cited, why in check_text(file.read_text(encoding="utf-8"), file, names)
    ]


def test_every_cited_repository_path_exists():
    broken = broken_citations()
    assert not broken, "cited paths that do not exist:\n" + "\n".join(broken)


def test_the_checker_accepts_and_reports():
    """The checker itself, on a text as if it were docs/sample.md."""
    text = (
        "See `docs/derivation.md` section 6, models/<name>.py, `benchmarks/results/cavi.{json,md}`,\n"
        "notebooks/01_quickstart, pyro_moe/engines/, README.md and [the notes](cavi_notes.md).\n"
        "Wrong: `pyro_moe/cavi/NOTES.md`, NOTES.md, ../shared/docs/derivation.md, tests/nope_*.py,\n"
        "benchmarks/results/cavi.{json,txt}, ../README.md, ../../README.md.\n"
    )
    broken = check_text(text, ROOT / "docs" / "sample.md", _repo_names())
    assert broken == [
        (3, "pyro_moe/cavi/NOTES.md", "does not exist"),
        (3, "tests/nope_*.py", "matches nothing"),
        (3, "../shared/docs/derivation.md", "does not exist"),
        (3, "NOTES.md", "no file of that name"),
        (4, "benchmarks/results/cavi.{json,txt}", "does not exist"),
        (4, "../../README.md", "outside the repository"),
    ]
