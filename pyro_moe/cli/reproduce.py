"""``pyro-moe reproduce``: the study's experiment (:mod:`pyro_moe.study`), its report
written to ``--out`` and its S table printed."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from .base import EXIT_OK, Context, UsageError
from .options import add_command, add_json_option, positive_int


def register(sub: Any) -> None:
    p = add_command(
        sub,
        "reproduce",
        help="reproduce the study's computational experiment",
        description="The study's experiment: the S table for the prior choices f1/f2/f3 on "
        "Synthetic 1-3 (median and spread over seeds, by CAVI and by SVI, with the noise "
        "expert as an extra row) next to the published one, the noise-level sweep, and the "
        "eye image when its data are present. Writes report.md, results.json and PNG figures "
        "to --out and prints the table. Progress goes to stderr.",
    )
    p.add_argument("--quick", action="store_true", help="3 seeds, fewer SVI fits and sweep levels")
    p.add_argument(
        "--out", type=Path, default=Path("reproduce_out"), metavar="DIR", help="output folder"
    )
    p.add_argument(
        "--seeds",
        type=positive_int,
        default=None,
        metavar="N",
        help="seeds per cell of the S table (default: 10, or 3 with --quick)",
    )
    p.add_argument("--cavi-only", action="store_true", help="skip the SVI column (the slow one)")
    add_json_option(p, "print the results as JSON")
    p.add_argument(
        "--eye",
        type=Path,
        default=None,
        metavar="PATH",
        help="the eye mask image or its folder (default: ../shared/data/emprior when present)",
    )
    p.set_defaults(handler=run)


def run(args: argparse.Namespace, ctx: Context) -> int:
    """Run :func:`pyro_moe.study.reproduce`, progress on stderr; print the S table or JSON."""
    from pyro_moe.errors import InputError
    from pyro_moe.study import main_table, reproduce
    from pyro_moe.study.runner import check_out_dir

    try:
        check_out_dir(args.out)  # before any fit (the eye image is read first too)
    except InputError as e:
        raise UsageError(str(e)) from e

    def progress(done: int, total: int, label: str) -> None:
        print(f"[{done}/{total}] {label}", file=sys.stderr, flush=True)

    report = reproduce(
        quick=args.quick,
        out=args.out,
        eye=args.eye,
        seeds=args.seeds,
        methods=("cavi",) if args.cavi_only else ("cavi", "svi"),
        progress=progress,
        outputs=ctx.outputs,  # committed after the table is printed (closed pipe: none)
    )
    if args.json:
        print(report.to_json(), file=ctx.out)
    else:
        print(main_table(report), file=ctx.out)
        print(f"\nreport: {report.report_path}", file=ctx.out)
    return EXIT_OK
