"""``pyro-moe demo``: the circles of the built-in synthetic image, true against recovered."""

from __future__ import annotations

import argparse
from functools import partial
from typing import Any

from .base import EXIT_OK, Context, check_output_paths, write_outputs
from .options import add_command, add_json_option, add_plot_option, add_run_options
from .render import (
    circle_json,
    curve_plot_title,
    emit_json,
    finite,
    fmt,
    format_table,
    plot_png,
    summary_json,
    summary_lines,
)

DEMO_LEARN = "noise_precision"


def register(sub: Any) -> None:
    p = add_command(
        sub,
        "demo",
        help="recover the circles of the built-in synthetic image",
        description="Build the built-in 160x160 binary image (two concentric circles and a "
        "third one), fit one circle per true circle (mixture_of_models, CAVI) and compare "
        "the recovered circles with the true ones in pixel units, with the study's error S "
        "(sum of squared differences of x0, y0 and r over the best matching).",
    )
    add_run_options(p)
    add_json_option(p, "print one JSON object (default: table)")
    add_plot_option(p, "write a plot of the fit (default: no plot)")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace, ctx: Context) -> int:
    """True against recovered circles of the built-in image, with the study's error S."""
    import pyro_moe
    from pyro_moe.shapes import circle_error, demo_image, match_circles

    check_output_paths(args.plot)
    image, true = demo_image()
    result = pyro_moe.fit_circles(
        image,
        experts=len(true),
        model="mixture_of_models",
        method="cavi",
        learn=DEMO_LEARN,
        n_init=args.n_init,
        seed=args.seed,
    )
    found = result.circles()
    pairs = dict(match_circles(true, found))
    error = circle_error(true, found)
    title = curve_plot_title(result, f"{len(true)} circles")
    write_outputs(
        result, save=None, plot=args.plot, draw=partial(plot_png, title=title), staged=ctx.outputs
    )
    if args.json:
        rows = []
        for i, t in enumerate(true):
            j = pairs.get(i)
            rows.append(
                {
                    "true": {"x0": t.x0, "y0": t.y0, "r": t.r},
                    "recovered": None if j is None else circle_json(found[j]),
                }
            )
        emit_json(
            {
                "image_shape": list(image.shape),
                "circles": rows,
                "S": finite(error),
                **summary_json(result),
            },
            ctx.out,
        )
        return EXIT_OK
    h, w = image.shape
    print(
        f"Built-in demo: {len(true)} circles in a {w}x{h} binary image "
        f"({int(image.sum())} foreground pixels); K = {len(true)}, "
        f"{result.model_name}, {result.method.upper()}",
        file=ctx.out,
    )
    print(file=ctx.out)
    headers = ["circle", "true x0", "true y0", "true r", "found x0", "found y0", "found r"]
    headers.append("sq. error")
    rows_txt = []
    for i, t in enumerate(true):
        j = pairs.get(i)
        if j is None:
            rows_txt.append([str(i + 1), fmt(t.x0), fmt(t.y0), fmt(t.r), "-", "-", "-", "-"])
            continue
        c = found[j]
        sq = (t.x0 - c.x0) ** 2 + (t.y0 - c.y0) ** 2 + (t.r - c.r) ** 2
        rows_txt.append(
            [
                str(i + 1),
                *(fmt(v) for v in (t.x0, t.y0, t.r, c.x0, c.y0, c.r)),
                f"{sq:.3g}",
            ]
        )
    print(format_table(headers, rows_txt), file=ctx.out)
    print(file=ctx.out)
    print(f"S = {error:.4g} px^2 (sum over circles of squared errors in x0, y0, r)", file=ctx.out)
    print("\n".join(summary_lines(result)), file=ctx.out)
    return EXIT_OK
