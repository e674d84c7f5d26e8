"""``pyro-moe circles``, ``conics`` and ``curves``: the curves of a binary image.

``circles`` and ``conics`` fit K curves of one kind (``--experts auto`` selects K);
``curves`` fits one expert per name (``--experts circle,ellipse``), each with its own
feature map. All three print through one renderer (:func:`pyro_moe.cli.render.
render_curves`), each expert as its own kind of curve, and plot through
:func:`pyro_moe.plots.plot_fit`.
"""

from __future__ import annotations

import argparse
from functools import partial
from typing import Any

from .base import EXIT_OK, Context, check_output_paths, load_model, write_outputs
from .options import (
    AUTO,
    add_command,
    add_curve_options,
    add_fit_options,
    add_image_options,
    check_method,
    expert_names_arg,
    fit_options,
    image_options,
    resolve_experts,
)
from .render import curve_plot_title, plot_png, render_curves


def register(sub: Any) -> None:
    for design, fitter in (("circle", "fit_circles"), ("conic", "fit_conics")):
        what = (
            "x0, y0, r, share of points and validity per circle"
            if design == "circle"
            else "kind, centre, semi-axes and angle per conic"
        )
        p = add_command(
            sub,
            f"{design}s",
            help=f"fit {design}s to the foreground pixels of an image",
            description=f"Fit K {design}s to the foreground pixels of IMAGE "
            f"(pyro_moe.{fitter}) and print {what} in pixel coordinates (x = column, "
            "y = row from the top-left), with the objective, ELBO, iterations and seconds.",
        )
        add_image_options(p)
        add_fit_options(p, default_model="mixture_of_models")
        add_curve_options(p, design)
        p.set_defaults(handler=run_kind, design=design)

    mix = add_command(
        sub,
        "curves",
        help="fit a mix of curve kinds (circle, ellipse, conic, line) to an image",
        description="Fit one expert per name in --experts to the foreground pixels of IMAGE, "
        "each with its own feature map as the model file declares it (EXPERTS in "
        "models/mixture_of_models.py: circle, ellipse, conic, line), and print each as its own "
        "kind of curve in pixel coordinates (x = column, y = row from the top-left), with "
        "posterior standard deviations, shares, the objective, ELBO, iterations and seconds.",
    )
    add_image_options(mix)
    mix.add_argument(
        "--experts",
        "-k",
        type=expert_names_arg,
        required=True,
        metavar="NAMES",
        help="comma-separated expert names, one per curve, e.g. circle,ellipse",
    )
    add_fit_options(mix, default_model="mixture_of_models", experts=False)
    mix.add_argument(
        "--noise-expert",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="add a uniform background component for stray pixels (outliers)",
    )
    mix.add_argument(
        "--allow-mixed-targets",
        action="store_true",
        help="allow experts that model different targets (a line's x beside a conic's x^2): "
        "the ELBO then adds densities of different quantities (default: refused)",
    )
    mix.set_defaults(handler=run_mixed, design="experts")


def run_kind(args: argparse.Namespace, ctx: Context) -> int:
    """``circles`` / ``conics``: K curves of one kind, or K chosen by ``--experts auto``
    (:func:`pyro_moe.select_curves`); posterior sds per curve, and the outlier share when a
    noise expert is fitted."""
    import pyro_moe

    check_method(args.method)
    check_output_paths(args.plot, args.save)
    model = load_model(args.model)
    spec = resolve_experts(args.experts, allow_auto=True)
    common = {
        "model": model,
        "max_points": args.max_points,
        "image_options": image_options(args),
        "noise_expert": args.noise_expert,
        **fit_options(args),
    }
    selection = None
    if spec == AUTO:
        options = dict(common)
        options.pop("n_init")
        selection = pyro_moe.select_curves(
            str(args.image),
            design=args.design,
            max_experts=args.max_experts,
            n_init=args.restarts,
            **options,
        )
        result = selection.result
    else:
        fitter = pyro_moe.fit_circles if args.design == "circle" else pyro_moe.fit_conics
        result = fitter(str(args.image), experts=spec, **common)
    what = f"{result.experts} {args.design}s"
    draw = partial(plot_png, title=curve_plot_title(result, what))
    write_outputs(result, save=args.save, plot=args.plot, draw=draw, staged=ctx.outputs)
    render_curves(
        result,
        ctx.out,
        layout=f"{args.design}s",
        title=f"{args.image}: {len(result.y)} points, K = {what}",
        as_json=args.json,
        selection=selection,
    )
    return EXIT_OK


def run_mixed(args: argparse.Namespace, ctx: Context) -> int:
    """``curves IMAGE --experts circle,ellipse``: one expert per name, each with its own
    feature map (:mod:`pyro_moe.experts`), reported as its own kind of curve."""
    import pyro_moe

    check_method(args.method)
    check_output_paths(args.plot, args.save)
    model = load_model(args.model)
    result = pyro_moe.fit_curves(
        str(args.image),
        experts=args.experts,
        model=model,
        max_points=args.max_points,
        image_options=image_options(args),
        noise_expert=args.noise_expert,
        allow_mixed_targets=args.allow_mixed_targets,
        **fit_options(args),
    )
    draw = partial(plot_png, title=curve_plot_title(result, "+".join(args.experts)))
    write_outputs(result, save=args.save, plot=args.plot, draw=draw, staged=ctx.outputs)
    render_curves(
        result,
        ctx.out,
        layout="curves",
        title=f"{args.image}: {len(result.y)} points, experts {', '.join(args.experts)}",
        as_json=args.json,
        names=args.experts,
    )
    return EXIT_OK
