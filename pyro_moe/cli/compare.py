"""``pyro-moe compare SOURCE``: one model fitted by SVI and by CAVI, side by side (an image:
circles; a CSV table with ``--target``: linear experts)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from .base import EXIT_OK, Context, RunError, UsageError, check_output_paths, load_model
from .options import (
    add_command,
    add_fit_options,
    add_plot_option,
    columns_arg,
    experts_arg,
    fit_options,
    max_points_arg,
    plot_format,
    resolve_experts,
)
from .render import emit_json

#: ``--max-points`` of an image when none is given.
MAX_POINTS = 2000


def register(sub: Any) -> None:
    p = add_command(
        sub,
        "compare",
        help="fit one model by SVI and by CAVI and compare them",
        description="Fit the same model file to the same data by closed-form variational EM "
        "(CAVI) and by Pyro SVI, align the experts (Hungarian on posterior means) and print "
        "final objectives, their gap, the distance between posterior means, circles (for "
        "images), iterations, wall time and time to within 0.1 % of each final objective. "
        "SOURCE is an image (circles) or a CSV file (with --target).",
    )
    p.add_argument("source", type=Path, metavar="SOURCE", help="an image, or a .csv table")
    p.add_argument("--target", default=None, metavar="COL", help="target column (CSV only)")
    p.add_argument(
        "--features",
        type=columns_arg,
        default=None,
        metavar="COL,...",
        help="feature columns (CSV only; default: every column but the target, plus ones)",
    )
    p.add_argument(
        "--max-points",
        type=max_points_arg,
        default=None,
        metavar="M",
        help=f"at most M foreground pixels, drawn at random (images only; default: {MAX_POINTS})",
    )
    p.add_argument(
        "-k", "--experts", type=experts_arg, default=2, metavar="K", help="number of experts"
    )
    add_fit_options(
        p, default_model="mixture_of_models", experts=False, both_methods=True, restarts=1
    )
    p.add_argument(
        "--noise-expert",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="add a uniform background component for stray points (outliers) to both fits; "
        "--no-noise-expert: none (default: the model file's SETTINGS['noise_expert'])",
    )
    add_plot_option(
        p, "write the objective-vs-time figure and the fitted curves (default: no plot)"
    )
    p.set_defaults(handler=run)


def run(args: argparse.Namespace, ctx: Context) -> int:
    """SVI beside CAVI on one model and one data set: objectives, gap, distances, times."""
    import numpy as np

    import pyro_moe
    from pyro_moe.files import StagedOutputs
    from pyro_moe.tables import read_xy

    check_output_paths(args.plot, inputs=[args.source])
    table = args.source.suffix.lower() == ".csv"
    wrong = ("--max-points",) if table else ("--target", "--features")
    for flag in wrong:
        if getattr(args, flag[2:].replace("-", "_")) is not None:
            where = "images" if table else "CSV tables"
            raise UsageError(f"{flag} applies to {where}; {args.source} is not one")
    model = load_model(args.model)
    experts = resolve_experts(args.experts)
    common = {**fit_options(args), "noise_expert": args.noise_expert}
    seed = common.pop("seed")
    if args.lr is not None:
        common["svi_options"] = {"lr": args.lr}
    if table:
        if args.target is None:
            raise UsageError("a CSV source needs --target COL")
        X, y, _ = read_xy(args.source, args.target, args.features)
        X = np.column_stack([X, np.ones(len(y))])
        comparison = pyro_moe.compare(model, X, y, experts=experts, seed=seed, **common)
    else:
        comparison = pyro_moe.compare_circles(
            str(args.source),
            experts=experts,
            model=model,
            max_points=MAX_POINTS if args.max_points is None else args.max_points,
            seed=seed,
            **common,
        )
    if args.plot is not None:
        import matplotlib.pyplot as plt

        fig = comparison.plot()
        try:
            with StagedOutputs() as own:
                outputs = own if ctx.outputs is None else ctx.outputs  # committed by main
                try:
                    fig.savefig(outputs.stage(args.plot), format=plot_format(args.plot), dpi=120)
                    if ctx.outputs is None:
                        outputs.commit()
                except OSError as e:
                    raise RunError(f"cannot write {args.plot}: {e.strerror or e}") from e
        finally:
            plt.close(fig)
    rows = comparison.table()
    if args.json:
        emit_json({"source": str(args.source), "model": model.name, "rows": rows}, ctx.out)
        return EXIT_OK
    print(
        f"{args.source}: {len(comparison.cavi.y)} points, K = {experts}, {model.name}", file=ctx.out
    )
    print(file=ctx.out)
    print(comparison.to_markdown(), file=ctx.out)
    return EXIT_OK
