"""``pyro-moe circles``, ``conics`` and ``curves``: the curves of an image or a point set.

``circles`` and ``conics`` fit K curves of one kind (``--experts auto`` selects K);
``curves`` fits one expert per name (``--experts circle,ellipse``), each with its own
feature map. An input is an image or a point set (``.csv``/``.txt``/``.npy`` of x, y:
:func:`pyro_moe.shapes.points.read_points`). All three print through one renderer
(:func:`pyro_moe.cli.render.render_curves`), each expert as its own kind of curve with its
validity (:func:`pyro_moe.curve_reports`), and plot through :func:`pyro_moe.plots.plot_fit`.
Several inputs, or a directory, run in batch mode (:func:`_batch`): one process, a progress
bar, JSON lines, a failed input reported in its line.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
import warnings
from functools import partial
from pathlib import Path
from typing import Any

from .base import (
    EXIT_FAILED,
    EXIT_OK,
    PROG,
    Context,
    RunError,
    UsageError,
    check_output_paths,
    load_model,
    one_line,
    write_outputs,
)
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
            help=f"fit {design}s to the foreground pixels of an image, or to a point set",
            description=f"Fit K {design}s to the foreground pixels of an image, or to the "
            "points of a CSV or .npy file, for each INPUT "
            f"(pyro_moe.{fitter}) and print {what} in pixel coordinates (x = column, "
            "y = row from the top-left), with the objective, ELBO, iterations and seconds.",
        )
        add_image_options(p)
        add_fit_options(p, default_model="mixture_of_models")
        add_curve_options(p)
        p.set_defaults(handler=run_kind, design=design)

    mix = add_command(
        sub,
        "curves",
        help="fit a mix of curve kinds (circle, ellipse, conic, line) to an image",
        description="Fit one expert per name in --experts to the foreground pixels (or the "
        "points) of each INPUT, "
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
        default=None,
        help="add a uniform background component for stray pixels (outliers) (default: on, "
        "pyro_moe.curves.fitting.CURVE_DEFAULTS, as the API)",
    )
    mix.add_argument(
        "--allow-mixed-targets",
        action="store_true",
        help="allow experts that model different targets (a line's x beside a conic's x^2): "
        "the ELBO then adds densities of different quantities (default: refused)",
    )
    mix.set_defaults(handler=run_mixed, design="experts")


#: File endings a directory given as input is searched for (images and point sets).
INPUT_SUFFIXES = (
    ".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif", ".webp", ".pgm", ".ppm",
    ".pbm", ".csv", ".txt", ".npy",
)  # fmt: skip


def expand_inputs(paths: list[Path]) -> list[Path]:
    """The inputs of a run: each path as given, a directory replaced by its entries whose
    names end in :data:`INPUT_SUFFIXES` (sorted; hidden entries and sub-folders skipped;
    a broken link, a FIFO or a device is kept, and fails in its own line).
    A directory without such entries is a usage error."""
    out: list[Path] = []
    for path in paths:
        if path.is_dir():
            found = sorted(
                p for p in path.iterdir()
                if not p.is_dir() and not p.name.startswith(".")
                and p.suffix.lower() in INPUT_SUFFIXES
            )  # fmt: skip
            if not found:
                raise UsageError(
                    f"{path} is a directory without images or point sets "
                    f"({', '.join(INPUT_SUFFIXES)})"
                )
            out.extend(found)
        else:
            out.append(path)
    return out


def _fit_kind(args: argparse.Namespace, source: str, model: Any, spec: int | str):
    """One input of ``circles`` / ``conics``: (result, selection or None, title)."""
    import pyro_moe

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
            source, design=args.design, max_experts=args.max_experts, n_init=args.n_init,
            **options,
        )  # fmt: skip
        result = selection.result
    else:
        fitter = pyro_moe.fit_circles if args.design == "circle" else pyro_moe.fit_conics
        result = fitter(source, experts=spec, **common)
    what = f"{result.experts} {args.design}s"
    return result, selection, f"{source}: {len(result.y)} points, K = {what}", what


def _fit_mixed(args: argparse.Namespace, source: str, model: Any, spec: Any):
    """One input of ``curves``: (result, None, title, what)."""
    import pyro_moe

    result = pyro_moe.fit_curves(
        source,
        experts=args.experts,
        model=model,
        max_points=args.max_points,
        image_options=image_options(args),
        noise_expert=args.noise_expert,
        allow_mixed_targets=args.allow_mixed_targets,
        **fit_options(args),
    )
    title = f"{source}: {len(result.y)} points, experts {', '.join(args.experts)}"
    return result, None, title, "+".join(args.experts)


def _run(args: argparse.Namespace, ctx: Context, fit_one: Any, spec: Any, layout: str) -> int:
    """Fit every input (:func:`expand_inputs`) and print each; one input runs as before
    (its error is the command's), several are a batch (:func:`_batch`)."""
    check_method(args.method)
    check_output_paths(args.plot, args.save, inputs=args.image)
    model = load_model(args.model)
    inputs = expand_inputs(list(args.image))
    names = args.experts if layout == "curves" else None
    if len(inputs) == 1 and not args.image[0].is_dir():
        result, selection, title, what = fit_one(args, str(inputs[0]), model, spec)
        draw = partial(plot_png, title=curve_plot_title(result, what))
        write_outputs(result, save=args.save, plot=args.plot, draw=draw, staged=ctx.outputs)
        render_curves(result, ctx.out, layout=layout, title=title, as_json=args.json,
                      selection=selection, names=names)  # fmt: skip
        return EXIT_OK
    if args.plot is not None or args.save is not None:
        raise UsageError("--plot and --save take one input; give one image or point set")
    return _batch(args, ctx, inputs, lambda src: fit_one(args, src, model, spec), layout, names)


def _batch(
    args: argparse.Namespace,
    ctx: Context,
    inputs: list[Path],
    fit_one: Any,
    layout: str,
    names: Any,
) -> int:
    """Batch mode: every input fitted in this one process (torch imported once), with a
    progress bar on stderr. ``--json``: one JSON object per line and input, with its
    ``input`` path, ``ok``, its ``warnings``, ``input_seconds`` (its wall time: reading,
    fitting, reporting) and, when it failed, its ``error`` (the others still run); else each input's table under a ``== PATH`` line. Exit status 0
    when every input succeeded, else 1."""
    from tqdm import tqdm

    from pyro_moe.errors import PyroMoeError

    failed = 0
    for path in tqdm(inputs, desc=f"{PROG} {args.command}", unit="input", file=sys.stderr):
        source = str(path)
        started = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                result, selection, title, _ = fit_one(source)
                error = None
            except (PyroMoeError, RunError) as e:
                error = one_line(str(e))
            except Exception as e:  # one bad input must not stop the others
                error = f"internal error: {type(e).__name__}: {one_line(str(e))}"
        elapsed = {"input_seconds": time.perf_counter() - started}
        said = [one_line(str(w.message)) for w in caught if issubclass(w.category, UserWarning)]
        said = list(dict.fromkeys(said))
        if error is not None:
            failed += 1
            if args.json:
                ctx.out.write(json.dumps(
                    {"input": source, "ok": False, "error": error, "warnings": said, **elapsed},
                    allow_nan=False) + "\n")  # fmt: skip
            else:
                print(f"== {source}: error: {error}\n", file=ctx.out)
            continue
        if args.json:
            buf = io.StringIO()
            render_curves(result, buf, layout=layout, title=title, as_json=True,
                          selection=selection, names=names, source=source)  # fmt: skip
            line = {**json.loads(buf.getvalue()), "warnings": said, **elapsed}
            ctx.out.write(json.dumps(line, allow_nan=False) + "\n")
        else:
            print(f"== {source}", file=ctx.out)
            for w in said:
                print(f"warning: {w}", file=ctx.out)
            render_curves(result, ctx.out, layout=layout, title=title, selection=selection,
                          names=names)  # fmt: skip
            print(file=ctx.out)
    if not args.json:
        print(f"{len(inputs) - failed} of {len(inputs)} inputs fitted", file=ctx.out)
    return EXIT_OK if failed == 0 else EXIT_FAILED


def run_kind(args: argparse.Namespace, ctx: Context) -> int:
    """``circles`` / ``conics``: K curves of one kind, or K chosen by ``--experts auto``
    (:func:`pyro_moe.select_curves`); posterior sds per curve, and the outlier share when a
    noise expert is fitted; several inputs or a directory: batch mode (:func:`_batch`)."""
    spec = resolve_experts(args.experts, allow_auto=True)
    return _run(args, ctx, _fit_kind, spec, f"{args.design}s")


def run_mixed(args: argparse.Namespace, ctx: Context) -> int:
    """``curves IMAGE --experts circle,ellipse``: one expert per name, each with its own
    feature map (:mod:`pyro_moe.experts`), reported as its own kind of curve; several
    inputs or a directory: batch mode."""
    return _run(args, ctx, _fit_mixed, None, "curves")
