"""MkDocs hooks of the docs site (mkdocs.yml ``hooks:``); nothing here is hand-copied output.

* ``<!-- cli-reference -->`` in a page becomes the ``--help`` of ``pyro-moe`` and of every
  subcommand, rendered from the argparse parser itself (:func:`pyro_moe.cli.build_parser`).
* ``<!-- cli-json-schema -->`` becomes the JSON schema of ``--json``
  (``docs/reference/cli-json.schema.json``, which ``tests/test_docs_site.py`` validates
  real output against).
* Sphinx cross-reference roles left in docstrings (``:func:`x```, rendered by Markdown as
  ``:func:<code>x</code>``) are shown as the bare code.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROLE = re.compile(r":(?:func|class|meth|mod|data|attr|exc|obj):(<code>)")
HELP_WIDTH = "88"


def cli_help() -> list[tuple[str, str]]:
    """(command line, help text) for ``pyro-moe`` and each subcommand, in parser order."""
    from pyro_moe.cli import build_parser

    old = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = HELP_WIDTH  # argparse wraps to the terminal width
    try:
        parser = build_parser()
        pages = [("pyro-moe --help", parser.format_help())]
        sub = next(a for a in parser._actions if a.dest == "command")
        for name, child in sub.choices.items():
            pages.append((f"pyro-moe {name} --help", child.format_help()))
    finally:
        if old is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = old
    return pages


def cli_reference() -> str:
    parts = []
    for line, text in cli_help():
        title = line.removesuffix(" --help")
        parts.append(f"## `{title}`\n\n```text\n$ {line}\n{text.rstrip()}\n```\n")
    return "\n".join(parts)


def on_page_markdown(markdown: str, page, config, files) -> str:
    if "<!-- cli-reference -->" in markdown:
        markdown = markdown.replace("<!-- cli-reference -->", cli_reference())
    if "<!-- cli-json-schema -->" in markdown:
        schema = (DOCS / "reference" / "cli-json.schema.json").read_text().rstrip()
        markdown = markdown.replace("<!-- cli-json-schema -->", f"```json\n{schema}\n```")
    return markdown


def on_page_content(html: str, page, config, files) -> str:
    return ROLE.sub(r"\1", html)
