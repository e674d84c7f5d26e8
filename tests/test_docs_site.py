"""The docs site's promises (``mkdocs.yml``; ``make docs`` builds it with warnings as errors):
the API reference documents every public name, docstring math has one style, and the
``--json`` schema of ``docs/reference/cli-json.schema.json`` describes the real output."""

from __future__ import annotations

import importlib
import json
import re
from pathlib import Path

import jsonschema
import pytest
from cli_helpers import circles_png, run_cli, table_csv

import pyro_moe

ROOT = Path(__file__).resolve().parent.parent
API = ROOT / "docs" / "reference" / "api.md"
SCHEMA = json.loads((ROOT / "docs" / "reference" / "cli-json.schema.json").read_text())


def _documented() -> dict[str, object]:
    """Name -> object of every ``::: pyro_moe.module.Name`` directive of the API page."""
    found = {}
    for path in re.findall(r"^::: (pyro_moe\.[\w.]+)\s*$", API.read_text(), re.M):
        module, name = path.rsplit(".", 1)
        assert name not in found, f"{name} documented twice"
        found[name] = getattr(importlib.import_module(module), name)
    return found


def test_api_reference_covers_every_public_name():
    documented = _documented()
    assert sorted(documented) == sorted(pyro_moe.__all__)
    for name, obj in documented.items():  # documented where it lives, as pyro_moe exposes it
        assert obj is getattr(pyro_moe, name), name


def test_one_docstring_math_style():
    """LaTeX between $ ... $ (pymdownx.arithmatex); Sphinx's math role does not render."""
    offenders = [
        str(p.relative_to(ROOT))
        for folder in ("pyro_moe", "models")
        for p in (ROOT / folder).rglob("*.py")
        if re.search(r":math:`|\.\. math::", p.read_text())
    ]
    assert not offenders


def _validate(document: dict, command: str) -> None:
    schema = {"$schema": SCHEMA["$schema"], "$defs": SCHEMA["$defs"]}
    jsonschema.Draft202012Validator({**schema, "$ref": f"#/$defs/{command}"}).validate(document)
    jsonschema.Draft202012Validator(SCHEMA).validate(document)  # the whole schema too


def test_schema_is_a_valid_schema_and_rejects_a_wrong_document():
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    with pytest.raises(jsonschema.ValidationError):
        _validate({"circles": [{"x0": "40"}]}, "circles")


@pytest.mark.parametrize(
    "command, argv",
    [
        ("circles", ["circles", "{png}", "-k", "2", "--restarts", "1"]),
        ("circles", ["circles", "{png}", "-k", "auto", "--max-experts", "2", "--restarts", "1"]),
        ("conics", ["conics", "{png}", "-k", "2", "--restarts", "1"]),
        ("curves", ["curves", "{png}", "-k", "circle,line", "--allow-mixed-targets"]),
        ("fit", ["fit", "{csv}", "--target", "y", "-k", "2", "--restarts", "1"]),
        ("demo", ["demo", "--restarts", "1"]),
    ],
    ids=["circles", "circles-auto", "conics", "curves", "fit", "demo"],
)
def test_json_output_validates_against_the_schema(capsys, tmp_path, command, argv):
    files = {"png": circles_png(tmp_path), "csv": table_csv(tmp_path)}
    code, out, err = run_cli(capsys, *(a.format(**files) for a in argv), "--json")
    assert code == 0, err
    _validate(json.loads(out), command)


@pytest.mark.slow
def test_compare_json_validates_against_the_schema(capsys, tmp_path):
    argv = ["compare", circles_png(tmp_path), "--max-points", "300", "--max-iter", "300"]
    code, out, err = run_cli(capsys, *argv, "--noise-expert", "--lr", "0.01", "--json")
    assert code == 0, err
    document = json.loads(out)
    _validate(document, "compare")
    assert [row["method"] for row in document["rows"]] == ["cavi", "svi"]


def test_batch_json_lines_validate_against_the_schema(capsys, tmp_path):
    png = circles_png(tmp_path)
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b,c\n1,2,3\n")
    code, out, err = run_cli(capsys, "circles", png, bad, "-k", "2", "--restarts", "1", "--json")
    assert code == 1, err
    lines = [json.loads(line) for line in out.splitlines()]
    assert [line["ok"] for line in lines] == [True, False]
    for line in lines:
        _validate(line, "batch")
    with pytest.raises(jsonschema.ValidationError):  # a failed line must say why
        _validate({"input": "x", "ok": False, "warnings": []}, "batch")
