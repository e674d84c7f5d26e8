"""The stored notebooks are ``notebooks/_build.py``'s, executed: their cells equal their
source there (outputs aside), every code cell ran and kept its outputs, each notebook keeps
at least one figure, and nothing volatile (execution timestamps, the kernel's version) is
stored. ``pytest --nbmake notebooks`` (``make test``) runs them again; this file only reads.

After editing ``_build.py``: ``.venv/bin/python notebooks/_build.py`` (README, Development).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
REBUILD = "rerun: .venv/bin/python notebooks/_build.py"


def _load_build():
    spec = importlib.util.spec_from_file_location("_notebook_build", NOTEBOOKS / "_build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


BUILD = _load_build()
NAMES = list(BUILD.NOTEBOOKS)


def _stored(name: str) -> nbformat.NotebookNode:
    return nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)


def test_every_stored_notebook_has_a_source_and_every_source_is_stored():
    stored = {p.stem for p in NOTEBOOKS.glob("*.ipynb")}
    assert stored == set(NAMES), f"notebooks/ and _build.py's NOTEBOOKS differ; {REBUILD}"


@pytest.mark.parametrize("name", NAMES)
def test_stored_cells_equal_their_source(name):
    def cells(nb):
        return [(c.cell_type, c.get("id"), c.source) for c in nb.cells]

    assert cells(_stored(name)) == cells(BUILD.notebook(name)), f"{name} is stale; {REBUILD}"


@pytest.mark.parametrize("name", NAMES)
def test_stored_with_outputs_and_a_figure(name):
    nb = _stored(name)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    counts = [c.execution_count for c in code]
    assert counts == list(range(1, len(code) + 1)), f"{name}: not executed in order; {REBUILD}"
    outputs = [o for c in code for o in c.outputs]
    assert outputs, f"{name}: no outputs"
    assert not [o for o in outputs if o.output_type == "error"], name
    assert not [o for o in outputs if o.get("name") == "stderr"], f"{name}: stderr output"
    figures = [o for o in outputs if "image/png" in o.get("data", {})]
    assert figures, f"{name}: no figure"


@pytest.mark.parametrize("name", NAMES)
def test_no_volatile_metadata(name):
    nb = _stored(name)
    assert nb.metadata.get("language_info") == {"name": "python"}, name
    assert "widgets" not in nb.metadata, name
    for cell in nb.cells:
        assert "execution" not in cell.metadata, f"{name}: execution timing stored"


def test_the_docs_list_every_notebook():
    nav = (ROOT / "mkdocs.yml").read_text()
    missing = [n for n in NAMES if f"notebooks/{n}.ipynb" not in nav]
    assert not missing, f"add to the nav of mkdocs.yml: {missing}"
