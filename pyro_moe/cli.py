"""The ``pyro-moe`` command line: circles and conics from binary images, mixtures on tables.

Subcommands::

    pyro-moe demo                       recover the circles of the built-in synthetic image
    pyro-moe circles IMAGE [options]    circles of a binary image, in pixel coordinates
    pyro-moe conics IMAGE [options]     conics (ellipses, parabolas, hyperbolas) of an image
    pyro-moe fit DATA.csv --target COL  a mixture of linear experts on a CSV table

Exit status: 0 on success (convergence warnings included, printed as one
``pyro-moe: warning: ...`` line each on stderr), 2 for a usage error (bad options, an
unknown model name, a model file that cannot be loaded), 1 for a run that failed (an
unreadable image, bad data, a model CAVI cannot fit, ...), with one
``pyro-moe: error: ...`` line on stderr and no traceback unless ``--debug`` is given.
Output files (``--plot``, ``--save``) are written to temporary files next to their
destination and renamed only once every output of the run is complete, so a failed run
leaves no partial file behind.

Pixel convention: x = column, y = row, origin at the top-left pixel.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import importlib.util
import json
import math
import os
import sys
import tempfile
import traceback
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn, TextIO

import numpy as np

import pyro_moe
from pyro_moe.config import LEARNABLE
from pyro_moe.errors import ModelFileError, PyroMoeError
from pyro_moe.model_file import Model
from pyro_moe.result import FitResult

PROG = "pyro-moe"
AUTO = "auto"  # ``--experts auto``: choose K by the ELBO (pyro_moe.selection)
DEMO_LEARN = "noise_precision"

# Exit statuses.
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class UsageError(Exception):
    """A bad command line found after parsing (exit status 2)."""


class RunError(Exception):
    """A run that failed for a reason outside the library (exit status 1), e.g. a bad CSV."""


# --------------------------------------------------------------------------- argparse


class _Formatter(argparse.ArgumentDefaultsHelpFormatter):
    """Show each option's default, except ``None`` (those helps say the default in words)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or isinstance(action, argparse._StoreTrueAction):
            return action.help
        return super()._get_help_string(action)


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line on stderr and exit status 2."""

    def error(self, message: str) -> NoReturn:
        """Print ``pyro-moe: error: MESSAGE (see 'PROG --help')`` and exit with status 2."""
        self.exit(EXIT_USAGE, f"{PROG}: error: {_one_line(message)} (see '{self.prog} --help')\n")


def _experts_arg(text: str) -> int | str:
    """``--experts``: an integer K >= 1, or ``auto`` (model selection; circles and conics)."""
    if text.strip().lower() == AUTO:
        return AUTO
    return _int_at_least(1, "an integer >= 1")(text)


def _expert_names_arg(text: str) -> list[str]:
    """``curves --experts``: comma-separated expert names (checked against the model file)."""
    names = [s.strip() for s in text.split(",") if s.strip()]
    if not names:
        raise argparse.ArgumentTypeError(f"must name at least one expert, got {text!r}")
    return names


def _int_at_least(minimum: int, wording: str) -> Callable[[str], int]:
    """An argparse type: an integer >= ``minimum``, else "must be <wording>, got ..."."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {wording}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be {wording}, got {value}")
        return value

    return parse


_positive_int = _int_at_least(1, "a positive integer")
_nonnegative_int = _int_at_least(0, "an integer >= 0")


def _max_points_arg(text: str) -> int:
    value = _positive_int(text)
    if value < 3:
        raise argparse.ArgumentTypeError(f"must be an integer >= 3, got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text!r}")
    return value


def _threshold_arg(text: str) -> float | str:
    """``--threshold``: a finite number or ``otsu``."""
    if text.strip().lower() == "otsu":
        return "otsu"
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number or 'otsu', got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number or 'otsu', got {text!r}")
    return value


def _learn_arg(text: str) -> str:
    """``--learn``: ``all``, ``none`` or a comma-separated list of learnable names."""
    value = text.strip()
    if value in ("all", "none"):
        return value
    names = [s.strip() for s in value.split(",") if s.strip()]
    unknown = [n for n in names if n not in LEARNABLE]
    if not names or unknown:
        raise argparse.ArgumentTypeError(
            f"unknown hyperparameter(s) {', '.join(unknown) or repr(text)}; use 'all', 'none' "
            f"or a comma-separated list of {', '.join(LEARNABLE)}"
        )
    return ",".join(names)


def _columns_arg(text: str) -> list[str]:
    names = [s.strip() for s in text.split(",")]
    if not names or any(not n for n in names):
        raise argparse.ArgumentTypeError(f"must be a comma-separated list of names, got {text!r}")
    return names


def _add_global_options(parser: argparse.ArgumentParser, *, top: bool) -> None:
    """``--debug`` and ``--threads``; accepted before or after the subcommand."""
    default = None if top else argparse.SUPPRESS
    parser.add_argument(
        "--debug",
        action="store_true",
        default=False if top else argparse.SUPPRESS,
        help="show full tracebacks on errors (default: off)",
    )
    parser.add_argument(
        "--threads",
        type=_positive_int,
        default=default,
        metavar="N",
        help="number of CPU threads for torch (torch.set_num_threads); "
        "default: leave torch's setting alone",
    )


def _add_fit_options(
    p: argparse.ArgumentParser, *, default_model: str, experts: bool = True
) -> None:
    """Options shared by ``circles``, ``conics``, ``curves`` (which has its own
    ``--experts``) and ``fit``."""
    models = ", ".join(pyro_moe.builtin_models())
    if experts:
        p.add_argument(
            "--experts",
            "-k",
            type=_experts_arg,
            default=2,
            metavar="K",
            help="number of experts (curves / linear models), an integer >= 1; circles and "
            "conics also take 'auto': fit K = 1..--max-experts and keep the smallest "
            "admissible K (distinct, used experts) whose ELBO + log K! is within 3 nats of "
            "the best",
        )
    p.add_argument(
        "--model",
        default=default_model,
        metavar="NAME|FILE",
        help=f"built-in model name ({models}) or the path of a model file",
    )
    p.add_argument(
        "--method",
        choices=pyro_moe.fitting.METHODS,
        default="cavi",
        help="cavi: closed-form variational EM; svi: Pyro stochastic variational inference",
    )
    p.add_argument(
        "--restarts",
        type=_positive_int,
        default=5,
        metavar="N",
        help="number of restarts; the run with the best objective is kept",
    )
    p.add_argument("--seed", type=_nonnegative_int, default=0, metavar="S", help="random seed")
    p.add_argument(
        "--learn",
        type=_learn_arg,
        default=None,
        metavar="WHAT",
        help=f"hyperparameters to point-estimate: all, none, or a comma-separated list of "
        f"{', '.join(LEARNABLE)}; the rest stay at the model file's values (default: the "
        "model file's SETTINGS['learn'], noise_precision for mixture_of_models)",
    )
    p.add_argument(
        "--max-iter",
        type=_positive_int,
        default=None,
        metavar="N",
        help="iteration (CAVI) or step (SVI) limit (default: the engine's, 1000 for CAVI)",
    )
    p.add_argument(
        "--tol",
        type=_positive_float,
        default=None,
        metavar="TOL",
        help="relative change of the objective that counts as converged "
        "(default: the engine's, 1e-8 for CAVI)",
    )
    p.add_argument(
        "--device",
        type=_device_arg,
        default=None,
        metavar="DEV",
        help="where to compute: cpu, cuda, cuda:1, ... (default: cpu)",
    )
    p.add_argument(
        "--json",
        action="store_true",
        help="print one JSON object instead of a table (default: off)",
    )
    p.add_argument(
        "--save",
        type=Path,
        default=None,
        metavar="NPZ",
        help="save the fit (posteriors, hyperparameters, history) as a .npz file, "
        "readable with pyro_moe.FitResult.load (default: not saved)",
    )


def _add_image_options(p: argparse.ArgumentParser) -> None:
    """Options of the image subcommands (``circles``, ``conics``)."""
    p.add_argument("image", type=Path, metavar="IMAGE", help="image file (PNG, JPEG, TIFF, ...)")
    p.add_argument(
        "--max-points",
        type=_max_points_arg,
        default=None,
        metavar="M",
        help="use at most M foreground pixels, drawn at random with --seed (default: all)",
    )
    p.add_argument(
        "--threshold",
        type=_threshold_arg,
        default="otsu",
        metavar="T|otsu",
        help="gray level in [0, 1] separating foreground from background, or otsu",
    )
    p.add_argument(
        "--invert",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="--invert: foreground is the dark side; --no-invert: the bright side "
        "(default: automatic, the side that covers less than half the image)",
    )
    p.add_argument(
        "--edges",
        action="store_true",
        help="keep only the boundary pixels of filled shapes (default: off)",
    )
    p.add_argument(
        "--plot",
        type=Path,
        default=None,
        metavar="PNG",
        help="write a PNG of the points coloured by expert with the fitted curves "
        "(default: no plot)",
    )


def _add_curve_options(p: argparse.ArgumentParser, design: str) -> None:
    """``--max-experts`` and ``--noise-expert`` of ``circles`` / ``conics``."""
    p.add_argument(
        "--max-experts",
        type=_positive_int,
        default=5,
        metavar="K",
        help="largest K tried by --experts auto",
    )
    on = design == "circle"
    p.add_argument(
        "--noise-expert",
        action=argparse.BooleanOptionalAction,
        default=True if on else None,
        help="add a uniform background component for stray pixels (outliers) and print "
        "the outlier share; --no-noise-expert: every point belongs to a curve"
        + ("" if on else " (default: the model file's SETTINGS['noise_expert'])"),
    )


def build_parser() -> argparse.ArgumentParser:
    """The ``pyro-moe`` argument parser with its subcommands."""
    parser = _Parser(
        prog=PROG,
        description="Bayesian mixtures of linear models and mixtures of experts: circles and "
        "conics from binary images, mixtures of linear experts on tables.",
        epilog="Run 'pyro-moe COMMAND --help' for the options of a command. Exit status: 0 "
        "success, 1 failed run, 2 usage error.",
        formatter_class=_Formatter,
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {pyro_moe.__version__}")
    _add_global_options(parser, top=True)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    demo = sub.add_parser(
        "demo",
        help="recover the circles of the built-in synthetic image",
        description="Build the built-in 160x160 binary image (two concentric circles and a "
        "third one), fit one circle per true circle (mixture_of_models, CAVI) and compare "
        "the recovered circles with the true ones in pixel units, with the study's error S "
        "(sum of squared differences of x0, y0 and r over the best matching).",
        formatter_class=_Formatter,
    )
    _add_global_options(demo, top=False)
    demo.add_argument(
        "--restarts", type=_positive_int, default=5, metavar="N", help="number of restarts"
    )
    demo.add_argument("--seed", type=_nonnegative_int, default=0, metavar="S", help="random seed")
    demo.add_argument("--json", action="store_true", help="print one JSON object (default: table)")
    demo.add_argument(
        "--plot", type=Path, default=None, metavar="PNG", help="write a PNG (default: no plot)"
    )
    demo.set_defaults(handler=cmd_demo)

    for design, fitter in (("circle", "fit_circles"), ("conic", "fit_conics")):
        what = (
            "x0, y0, r, share of points and validity per circle"
            if design == "circle"
            else "kind, centre, semi-axes and angle per conic"
        )
        p = sub.add_parser(
            f"{design}s",
            help=f"fit {design}s to the foreground pixels of an image",
            description=f"Fit K {design}s to the foreground pixels of IMAGE "
            f"(pyro_moe.{fitter}) and print {what} in pixel coordinates (x = column, "
            "y = row from the top-left), with the objective, ELBO, iterations and seconds.",
            formatter_class=_Formatter,
        )
        _add_global_options(p, top=False)
        _add_image_options(p)
        _add_fit_options(p, default_model="mixture_of_models")
        _add_curve_options(p, design)
        p.set_defaults(handler=cmd_curves, design=design)

    mix = sub.add_parser(
        "curves",
        help="fit a mix of curve kinds (circle, ellipse, conic, line) to an image",
        description="Fit one expert per name in --experts to the foreground pixels of IMAGE, "
        "each with its own feature map as the model file declares it (EXPERTS in "
        "models/mixture_of_models.py: circle, ellipse, conic, line), and print each as its own "
        "kind of curve in pixel coordinates (x = column, y = row from the top-left), with "
        "posterior standard deviations, shares, the objective, ELBO, iterations and seconds.",
        formatter_class=_Formatter,
    )
    _add_global_options(mix, top=False)
    _add_image_options(mix)
    mix.add_argument(
        "--experts",
        "-k",
        type=_expert_names_arg,
        required=True,
        metavar="NAMES",
        help="comma-separated expert names, one per curve, e.g. circle,ellipse",
    )
    _add_fit_options(mix, default_model="mixture_of_models", experts=False)
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
    mix.set_defaults(handler=cmd_mixed_curves, design="experts")

    fit = sub.add_parser(
        "fit",
        help="fit a mixture of linear experts to a CSV table",
        description="Fit a mixture of K linear experts y = w_k^T x to a CSV table (header row "
        "required) and print, per expert, the posterior mean weights, the weight share and "
        "the noise precision, with the objective, ELBO, iterations and seconds.",
        formatter_class=_Formatter,
    )
    _add_global_options(fit, top=False)
    fit.add_argument("data", type=Path, metavar="DATA.csv", help="CSV file with a header row")
    fit.add_argument("--target", required=True, metavar="COL", help="name of the target column")
    fit.add_argument(
        "--features",
        type=_columns_arg,
        default=None,
        metavar="COL,...",
        help="comma-separated feature columns (default: every column but the target)",
    )
    fit.add_argument(
        "--intercept",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="add a column of ones (named '(intercept)') to the features",
    )
    _add_fit_options(fit, default_model="mixture_of_models")
    fit.set_defaults(handler=cmd_fit, plot=None)

    cmp_ = sub.add_parser(
        "compare",
        help="fit one model by SVI and by CAVI and compare them",
        description="Fit the same model file to the same data by closed-form variational EM "
        "(CAVI) and by Pyro SVI, align the experts (Hungarian on posterior means) and print "
        "final objectives, their gap, the distance between posterior means, circles (for "
        "images), iterations, wall time and time to within 0.1 %% of each final objective. "
        "SOURCE is an image (circles) or a CSV file (with --target).",
        formatter_class=_Formatter,
    )
    _add_global_options(cmp_, top=False)
    cmp_.add_argument("source", type=Path, metavar="SOURCE", help="an image, or a .csv table")
    cmp_.add_argument("--target", default=None, metavar="COL", help="target column (CSV only)")
    cmp_.add_argument(
        "--features",
        type=_columns_arg,
        default=None,
        metavar="COL,...",
        help="feature columns (CSV only; default: every column but the target, plus ones)",
    )
    cmp_.add_argument(
        "--max-points",
        type=_max_points_arg,
        default=2000,
        metavar="M",
        help="at most M foreground pixels, drawn at random (images only)",
    )
    cmp_.add_argument(
        "-k", "--experts", type=_experts_arg, default=2, metavar="K", help="number of experts"
    )
    cmp_.add_argument("--model", default="mixture_of_models", metavar="NAME|FILE", help="model")
    cmp_.add_argument(
        "--restarts", type=_positive_int, default=1, metavar="N", help="restarts of each method"
    )
    cmp_.add_argument("--seed", type=_nonnegative_int, default=0, metavar="S", help="random seed")
    cmp_.add_argument("--json", action="store_true", help="print the table as JSON")
    cmp_.add_argument(
        "--plot",
        type=Path,
        default=None,
        metavar="PNG",
        help="write the objective-vs-time figure and the fitted curves (default: no plot)",
    )
    cmp_.set_defaults(handler=cmd_compare)

    rep = sub.add_parser(
        "reproduce",
        help="reproduce the study's computational experiment",
        description="The study's experiment: the S table for the prior choices f1/f2/f3 on "
        "Synthetic 1-3 (median and spread over seeds, by CAVI and by SVI, with the noise "
        "expert as an extra row) next to the published one, the noise-level sweep, and the "
        "eye image when its data are present. Writes report.md, results.json and PNG figures "
        "to --out and prints the table. Progress goes to stderr.",
        formatter_class=_Formatter,
    )
    _add_global_options(rep, top=False)
    rep.add_argument(
        "--quick", action="store_true", help="3 seeds, fewer SVI fits and sweep levels"
    )
    rep.add_argument(
        "--out", type=Path, default=Path("reproduce_out"), metavar="DIR", help="output folder"
    )
    rep.add_argument(
        "--seeds",
        type=_positive_int,
        default=None,
        metavar="N",
        help="seeds per cell of the S table (default: 10, or 3 with --quick)",
    )
    rep.add_argument("--cavi-only", action="store_true", help="skip the SVI column (the slow one)")
    rep.add_argument("--json", action="store_true", help="print the results as JSON")
    rep.add_argument(
        "--eye",
        type=Path,
        default=None,
        metavar="PATH",
        help="the eye mask image or its folder (default: ../shared/data/emprior when present)",
    )
    rep.set_defaults(handler=cmd_reproduce)
    return parser


# --------------------------------------------------------------------------- output files


class StagedOutputs:
    """Output files written to temporaries beside their destinations, renamed together.

    ``stage(path)`` gives a temporary path in the destination's directory; ``commit()``
    renames every staged file to its destination. Leaving the ``with`` block by an
    exception (or without a commit) removes the temporaries, so a failed run leaves no
    partial output behind.
    """

    def __init__(self) -> None:
        self._staged: list[tuple[Path, Path]] = []

    def __enter__(self) -> StagedOutputs:
        return self

    def __exit__(self, *exc: object) -> None:
        self.discard()

    def stage(self, destination: Path) -> Path:
        """A fresh temporary file next to ``destination`` (removed unless committed)."""
        fd, tmp = tempfile.mkstemp(
            prefix=f".{destination.name}.", suffix=".tmp", dir=destination.parent
        )
        os.close(fd)
        self._staged.append((Path(tmp), destination))
        return Path(tmp)

    def commit(self) -> None:
        """Rename every staged file to its destination (with the usual umask permissions)."""
        umask = os.umask(0)
        os.umask(umask)
        for tmp, destination in self._staged:
            os.chmod(tmp, 0o666 & ~umask)
            os.replace(tmp, destination)
        self._staged.clear()

    def discard(self) -> None:
        """Remove the staged temporaries that were not committed."""
        for tmp, _ in self._staged:
            with contextlib.suppress(OSError):
                tmp.unlink()
        self._staged.clear()


def _check_output_paths(*paths: Path | None) -> None:
    """Fail early (before fitting) when an output's directory does not exist."""
    for path in paths:
        if path is None:
            continue
        if path.is_dir():
            raise UsageError(f"output path {path} is a directory; give a file name")
        parent = path.parent if str(path.parent) else Path(".")
        if not parent.is_dir():
            raise UsageError(f"cannot write {path}: directory {parent} does not exist")


def _write_outputs(
    result: FitResult,
    *,
    save: Path | None,
    plot: Path | None,
    draw: Callable[[FitResult, Path], None] | None = None,
) -> None:
    """Write ``--plot`` and ``--save`` atomically (both or neither)."""
    if save is None and plot is None:
        return
    with StagedOutputs() as outputs:
        try:
            if plot is not None and draw is not None:
                draw(result, outputs.stage(plot))
            if save is not None:
                result.save(outputs.stage(save))
            outputs.commit()
        except OSError as e:
            raise RunError(f"cannot write the output files: {e}") from e


# --------------------------------------------------------------------------- formatting


def _one_line(text: str) -> str:
    """Collapse a message to a single line."""
    return " ".join(str(text).split())


def _finite(value: float) -> float | None:
    """A float for JSON, or None when it is NaN or infinite (JSON has no NaN)."""
    value = float(value)
    return value if math.isfinite(value) else None


def _fmt(value: float | None, digits: int = 3) -> str:
    if value is None:
        return "-"
    if not math.isfinite(value):
        return str(value)
    return f"{value:.{digits}f}"


def _num(value: float) -> str:
    """A number for a table: fixed point for ordinary magnitudes, else scientific."""
    value = float(value)
    if not math.isfinite(value):
        return str(value)
    if value == 0 or 1e-3 <= abs(value) < 1e5:
        return f"{value:.4f}"
    return f"{value:.3e}"


def format_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """An aligned text table: the first column left-aligned, the others right-aligned."""
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]

    def line(cells: Sequence[str]) -> str:
        out = [
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ]
        return "  ".join(out).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(headers), rule, *(line(r) for r in rows)])


def _summary_lines(result: FitResult) -> list[str]:
    return [
        f"objective   {result.objective:.6g} nats",
        f"ELBO        {result.elbo:.6g} nats",
        f"iterations  {result.iterations}",
        f"seconds     {result.wall_time:.3g}",
        f"converged   {'yes' if result.converged else 'no'}",
        f"method      {result.method}",
        f"model       {result.model_name}",
    ]


def _summary_json(result: FitResult) -> dict[str, Any]:
    return {
        "objective": _finite(result.objective),
        "elbo": _finite(result.elbo),
        "iterations": int(result.iterations),
        "seconds": float(result.wall_time),
        "method": result.method,
        "model": result.model_name,
        "converged": bool(result.converged),
        "points": len(result.y),
    }


def _shares(result: FitResult) -> list[float]:
    """Share of the points per expert: the mean responsibility (the noise expert excluded,
    so the shares sum to 1 minus the noise expert's share)."""
    return [float(s) for s in result.responsibilities.mean(0)[: result.experts].cpu()]


def _outlier_json(result: FitResult) -> dict[str, Any]:
    """``noise_expert``; ``outlier_share``: the share of points the noise expert explains
    best; ``noise_share``: its mean responsibility, so that the experts' shares plus
    ``noise_share`` sum to 1 (both 0.0 without a noise expert)."""
    noise = result.responsibilities[:, result.experts :].sum(-1).mean()
    return {
        "noise_expert": bool(result.noise_expert),
        "outlier_share": float(result.outliers.float().mean()),
        "noise_share": float(noise) if result.noise_expert else 0.0,
    }


def _selection_json(selection: Any) -> dict[str, Any]:
    rows = [
        {
            "experts": row["experts"],
            "objective": _finite(row["objective"]),
            "score": _finite(row["score"]),
            "converged": row["converged"],
            "distinct": row["distinct"],
            "admissible": row["admissible"],
            "note": row["note"],
        }
        for row in selection.table
    ]
    return {"experts": selection.experts, "criterion": selection.criterion, "table": rows}


def _selection_lines(selection: Any) -> list[str]:
    headers = ["K", "objective", "ELBO + log K!", "distinct", "admissible", "note"]
    rows = [
        [
            f"{row['experts']}{' *' if row['experts'] == selection.experts else ''}",
            _num(row["objective"]),
            _num(row["score"]),
            str(row["distinct"]),
            "yes" if row["admissible"] else "no",
            row["note"] or "-",
        ]
        for row in selection.table
    ]
    return [
        f"K chosen by --experts auto: {selection.experts} ({selection.criterion})",
        format_table(headers, rows),
    ]


def _emit_json(obj: dict[str, Any], out: TextIO) -> None:
    out.write(json.dumps(obj, indent=2, allow_nan=False) + "\n")


# --------------------------------------------------------------------------- plotting


def _pixel_points(result: FitResult) -> np.ndarray:
    """The fitted points in pixel coordinates, from the standardized design of a shape fit."""
    return result.pixel_points()


def plot_curves(result: FitResult, path: Path) -> None:
    """Save a PNG of the points coloured by their most responsible expert, with the fitted
    circles or conics overlaid (pixel coordinates, y down)."""
    import matplotlib
    from matplotlib.figure import Figure

    from pyro_moe.plots import draw_curves

    xy = _pixel_points(result)
    label = result.responsibilities.argmax(-1).cpu().numpy()
    K = result.experts
    colours = [matplotlib.colormaps["tab10"](k % 10) for k in range(K)]
    fig = Figure(figsize=(6, 6), dpi=100)
    ax = fig.add_subplot()
    ax.scatter(xy[:, 0], xy[:, 1], s=4, c=[colours[k] for k in label], linewidths=0)
    lo, hi = xy.min(0), xy.max(0)
    pad = 0.1 * float(max(hi - lo)) + 1.0
    design = (result.shapes or {}).get("design")
    draw_curves(ax, result, (lo[0] - pad, hi[0] + pad), (lo[1] - pad, hi[1] + pad), labels=False)
    ax.set_xlim(lo[0] - pad, hi[0] + pad)
    ax.set_ylim(hi[1] + pad, lo[1] - pad)  # image convention: y grows downwards
    ax.set_aspect("equal")
    ax.set_xlabel("x (column)")
    ax.set_ylabel("y (row)")
    what = f"{K} {design}s" if design in ("circle", "conic") else "+".join(result.shapes["experts"])
    ax.set_title(f"{what}, {result.method.upper()}, objective {result.objective:.4g}")
    fig.savefig(path, format="png")


# --------------------------------------------------------------------------- commands


@dataclass
class Context:
    """What a command needs besides its arguments: where to print."""

    out: TextIO


def _load_model(spec: str) -> Model:
    """Load ``--model`` (a ModelFileError becomes a usage error in :func:`main`)."""
    return pyro_moe.load_model(spec)


def _check_method(method: str) -> None:
    if method == "svi" and importlib.util.find_spec("pyro_moe.svi") is None:
        raise UsageError("--method svi is not available in this version of pyro_moe; use cavi")


def _fit_options(args: argparse.Namespace) -> dict[str, Any]:
    """Keyword arguments of ``pyro_moe.fit`` from the common options."""
    options: dict[str, Any] = {
        "method": args.method,
        "n_init": args.restarts,
        "seed": args.seed,
        "learn": args.learn,
    }
    if args.max_iter is not None:
        options["max_iter"] = args.max_iter
    if args.tol is not None:
        options["tol"] = args.tol
    if args.device is not None:
        options["device"] = args.device
    return options


def _device_arg(text: str) -> str:
    """``--device``: a torch device that exists on this machine."""
    import torch

    try:
        device = torch.device(text)
    except RuntimeError as e:
        raise argparse.ArgumentTypeError(f"not a torch device: {text!r}") from e
    if device.type == "cuda" and not torch.cuda.is_available():
        raise argparse.ArgumentTypeError(f"{text!r}: CUDA is not available on this machine")
    if device.type not in ("cpu", "cuda"):
        raise argparse.ArgumentTypeError(f"{text!r}: only cpu and cuda devices are supported")
    return text


def resolve_experts(spec: int | str, *, allow_auto: bool = False) -> int | str:
    """The number of experts to fit, or ``AUTO`` (model selection) where ``allow_auto``.

    Only ``circles`` and ``conics`` select K (:func:`pyro_moe.selection.select_curves`);
    elsewhere ``auto`` is a usage error.
    """
    if spec == AUTO:
        if not allow_auto:
            raise UsageError("--experts auto is available for circles and conics only")
        return AUTO
    return int(spec)


def cmd_demo(args: argparse.Namespace, ctx: Context) -> int:
    """``pyro-moe demo``: true vs recovered circles of the built-in image."""
    from pyro_moe.shapes import circle_error, demo_image, match_circles

    _check_output_paths(args.plot)
    image, true = demo_image()
    result = pyro_moe.fit_circles(
        image,
        experts=len(true),
        model="mixture_of_models",
        method="cavi",
        learn=DEMO_LEARN,
        n_init=args.restarts,
        seed=args.seed,
    )
    found = result.circles()
    pairs = dict(match_circles(true, found))
    error = circle_error(true, found)
    _write_outputs(result, save=None, plot=args.plot, draw=plot_curves)
    if args.json:
        rows = []
        for i, t in enumerate(true):
            j = pairs.get(i)
            rows.append(
                {
                    "true": {"x0": t.x0, "y0": t.y0, "r": t.r},
                    "recovered": None if j is None else _circle_json(found[j]),
                }
            )
        _emit_json(
            {
                "image_shape": list(image.shape),
                "circles": rows,
                "S": _finite(error),
                **_summary_json(result),
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
    headers = [
        "circle",
        "true x0",
        "true y0",
        "true r",
        "found x0",
        "found y0",
        "found r",
        "sq. error",
    ]
    rows_txt = []
    for i, t in enumerate(true):
        j = pairs.get(i)
        if j is None:
            rows_txt.append([str(i + 1), _fmt(t.x0), _fmt(t.y0), _fmt(t.r), "-", "-", "-", "-"])
            continue
        c = found[j]
        sq = (t.x0 - c.x0) ** 2 + (t.y0 - c.y0) ** 2 + (t.r - c.r) ** 2
        rows_txt.append(
            [
                str(i + 1),
                _fmt(t.x0),
                _fmt(t.y0),
                _fmt(t.r),
                _fmt(c.x0),
                _fmt(c.y0),
                _fmt(c.r),
                f"{sq:.3g}",
            ]
        )
    print(format_table(headers, rows_txt), file=ctx.out)
    print(file=ctx.out)
    print(f"S = {error:.4g} px^2 (sum over circles of squared errors in x0, y0, r)", file=ctx.out)
    print("\n".join(_summary_lines(result)), file=ctx.out)
    return EXIT_OK


def _circle_json(c: Any) -> dict[str, Any]:
    return {
        "x0": _finite(c.x0),
        "y0": _finite(c.y0),
        "r": _finite(c.r) if c.valid else None,
        "valid": bool(c.valid),
    }


def _conic_json(c: Any) -> dict[str, Any]:
    return {
        "kind": c.kind,
        "center": None if c.center is None else [_finite(v) for v in c.center],
        "semi_axes": None if c.semi_axes is None else [_finite(v) for v in c.semi_axes],
        "angle_degrees": None if c.angle is None else _finite(math.degrees(c.angle)),
        "coefficients": [_finite(v) for v in c.coefficients],
    }


def cmd_curves(args: argparse.Namespace, ctx: Context) -> int:
    """``pyro-moe circles`` / ``pyro-moe conics``: curves of a binary image.

    ``--experts auto`` selects K (:func:`pyro_moe.selection.select_curves`); circles get
    delta-method standard deviations of x0, y0, r (:func:`pyro_moe.uncertainty.
    circle_uncertainty`), and the outlier share is printed when a noise expert is fitted.
    """
    from pyro_moe.selection import select_curves
    from pyro_moe.uncertainty import circle_uncertainty, conic_uncertainty

    _check_method(args.method)
    _check_output_paths(args.plot, args.save)
    model = _load_model(args.model)
    spec = resolve_experts(args.experts, allow_auto=True)
    common = {
        "model": model,
        "max_points": args.max_points,
        "image_options": {"threshold": args.threshold, "invert": args.invert, "edges": args.edges},
        "noise_expert": args.noise_expert,
        **_fit_options(args),
    }
    selection = None
    if spec == AUTO:
        options = dict(common)
        options.pop("n_init")
        selection = select_curves(
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
    experts = result.experts
    shares = _shares(result)
    outliers = _outlier_json(result)
    extra = {} if selection is None else {"selection": _selection_json(selection)}
    _write_outputs(result, save=args.save, plot=args.plot, draw=plot_curves)
    if args.design == "circle":
        curves = result.circles()
        sds = circle_uncertainty(result)
        if args.json:
            items = [
                {
                    **_circle_json(c),
                    "share": s,
                    "sd_x0": _finite(u.sd_x0),
                    "sd_y0": _finite(u.sd_y0),
                    "sd_r": None if u.sd_r is None else _finite(u.sd_r),
                }
                for c, s, u in zip(curves, shares, sds, strict=True)
            ]
            _emit_json({"circles": items, **outliers, **extra, **_summary_json(result)}, ctx.out)
            return EXIT_OK
        headers = ["circle", "x0", "y0", "r", "share", "valid", "sd x0", "sd y0", "sd r"]
        rows = [
            [
                str(k + 1),
                _fmt(c.x0),
                _fmt(c.y0),
                _fmt(c.r) if c.valid else "invalid",
                f"{s:.3f}",
                "yes" if c.valid else "no",
                _fmt(u.sd_x0),
                _fmt(u.sd_y0),
                _fmt(u.sd_r),
            ]
            for k, (c, s, u) in enumerate(zip(curves, shares, sds, strict=True))
        ]
    else:
        conics = result.conics()
        if args.json:
            items = [
                {**_conic_json(c), "share": s, "sd": u.sd}
                for c, s, u in zip(conics, shares, conic_uncertainty(result), strict=True)
            ]
            _emit_json({"conics": items, **outliers, **extra, **_summary_json(result)}, ctx.out)
            return EXIT_OK
        headers = ["conic", "kind", "cx", "cy", "a", "b", "angle (deg)", "share"]
        rows = []
        for k, (c, s) in enumerate(zip(conics, shares, strict=True)):
            cx, cy = c.center if c.center is not None else (None, None)
            a, b = c.semi_axes if c.semi_axes is not None else (None, None)
            angle = None if c.angle is None else math.degrees(c.angle)
            rows.append(
                [
                    str(k + 1),
                    c.kind,
                    _fmt(cx),
                    _fmt(cy),
                    _fmt(a),
                    _fmt(b),
                    _fmt(angle, 2),
                    f"{s:.3f}",
                ]
            )
    _print_curves(
        ctx,
        f"{args.image}: {len(result.y)} points, K = {experts} {args.design}s",
        format_table(headers, rows),
        "(sd: posterior standard deviations, delta method, pixels)"
        if args.design == "circle"
        else None,
        result,
        outliers,
        selection,
    )
    return EXIT_OK


def _print_curves(
    ctx: Context,
    title: str,
    table: str,
    note: str | None,
    result: FitResult,
    outliers: dict[str, Any],
    selection: Any = None,
) -> None:
    """The text report of ``circles``, ``conics`` and ``curves``: title, table, note, the
    selection of K, the outlier share and the fit summary."""
    print(f"{title} (pixel units: x = column, y = row from the top-left)", file=ctx.out)
    print(file=ctx.out)
    print(table, file=ctx.out)
    if note:
        print(note, file=ctx.out)
    print(file=ctx.out)
    if selection is not None:
        print("\n".join(_selection_lines(selection)), file=ctx.out)
        print(file=ctx.out)
    if outliers["noise_expert"]:
        print(f"outliers    {outliers['outlier_share']:.3f} of the points", file=ctx.out)
    print("\n".join(_summary_lines(result)), file=ctx.out)


def cmd_mixed_curves(args: argparse.Namespace, ctx: Context) -> int:
    """``pyro-moe curves IMAGE --experts circle,ellipse``: one expert per name, each with its
    own feature map (:mod:`pyro_moe.experts`), reported as its own kind of curve."""
    from pyro_moe.shapes import Circle, Conic, Line
    from pyro_moe.uncertainty import curve_uncertainty

    _check_method(args.method)
    _check_output_paths(args.plot, args.save)
    model = _load_model(args.model)
    result = pyro_moe.fit_curves(
        str(args.image),
        experts=args.experts,
        model=model,
        max_points=args.max_points,
        image_options={"threshold": args.threshold, "invert": args.invert, "edges": args.edges},
        noise_expert=args.noise_expert,
        allow_mixed_targets=args.allow_mixed_targets,
        **_fit_options(args),
    )
    shares = _shares(result)
    outliers = _outlier_json(result)
    curves = result.curves()
    sds = curve_uncertainty(result)
    _write_outputs(result, save=args.save, plot=args.plot, draw=plot_curves)
    if args.json:
        items = []
        for name, c, s, u in zip(args.experts, curves, shares, sds, strict=True):
            item: dict[str, Any] = {"expert": name, "share": s}
            if isinstance(c, Circle):
                item.update(kind="circle", **_circle_json(c))
                item.update(sd_x0=_finite(u.sd_x0), sd_y0=_finite(u.sd_y0))
                item["sd_r"] = None if u.sd_r is None else _finite(u.sd_r)
            elif isinstance(c, Conic):
                item.update(_conic_json(c))
                item["sd"] = u.sd
            elif isinstance(c, Line):
                item.update(kind="line", **{k: _finite(v) for k, v in c.as_dict().items()})
            else:
                item.update(kind=None, weights=[_finite(v) for v in c])
            items.append(item)
        _emit_json({"curves": items, **outliers, **_summary_json(result)}, ctx.out)
        return EXIT_OK
    headers = ["expert", "name", "curve (pixels)", "sd", "share"]
    rows = []
    for k, (name, c, s, u) in enumerate(zip(args.experts, curves, shares, sds, strict=True)):
        if isinstance(c, Circle):
            what = f"circle x0={_fmt(c.x0)} y0={_fmt(c.y0)} r={_fmt(c.r) if c.valid else 'invalid'}"
            sd = f"{_fmt(u.sd_x0)} {_fmt(u.sd_y0)} {_fmt(u.sd_r)}"
        elif isinstance(c, Conic):
            what = c.kind
            if c.center is not None:
                what += f" centre=({_fmt(c.center[0])}, {_fmt(c.center[1])})"
            if c.semi_axes is not None:
                what += f" axes=({_fmt(c.semi_axes[0])}, {_fmt(c.semi_axes[1])})"
            if c.angle is not None:
                what += f" angle={_fmt(math.degrees(c.angle), 2)}deg"
            sd = "-" if u.sd is None else " ".join(_fmt(u.sd[f]) for f in ("cx", "cy", "a", "b"))
        elif isinstance(c, Line):
            what, sd = f"line x = {_fmt(c.a)} y + {_fmt(c.c)}", "-"
        else:
            what, sd = "weights " + " ".join(_fmt(float(v)) for v in c), "-"
        rows.append([str(k + 1), name, what, sd, f"{s:.3f}"])
    _print_curves(
        ctx,
        f"{args.image}: {len(result.y)} points, experts {', '.join(args.experts)}",
        format_table(headers, rows),
        "(sd: posterior standard deviations, delta method, pixels: circles x0 y0 r, "
        "conics cx cy a b)",
        result,
        outliers,
    )
    return EXIT_OK


def cmd_compare(args: argparse.Namespace, ctx: Context) -> int:
    """``pyro-moe compare``: SVI beside CAVI on one model and one data set."""
    _check_output_paths(args.plot)
    model = _load_model(args.model)
    experts = resolve_experts(args.experts)
    common = {"n_init": args.restarts}
    if args.source.suffix.lower() == ".csv":
        if args.target is None:
            raise UsageError("a CSV source needs --target COL")
        X, y, _ = read_csv_columns(args.source, args.target, args.features)
        X = np.column_stack([X, np.ones(len(y))])
        comparison = pyro_moe.compare(model, X, y, experts=experts, seed=args.seed, **common)
    else:
        comparison = pyro_moe.compare_circles(
            str(args.source),
            experts=experts,
            model=model,
            max_points=args.max_points,
            seed=args.seed,
            **common,
        )
    if args.plot is not None:
        with StagedOutputs() as outputs:
            try:
                fig = comparison.plot()
                fig.savefig(outputs.stage(args.plot), format="png", dpi=120)
                outputs.commit()
            except OSError as e:
                raise RunError(f"cannot write the plot: {e}") from e
        import matplotlib.pyplot as plt

        plt.close(fig)
    rows = comparison.table()
    if args.json:
        _emit_json({"source": str(args.source), "model": model.name, "rows": rows}, ctx.out)
        return EXIT_OK
    print(
        f"{args.source}: {len(comparison.cavi.y)} points, K = {experts}, {model.name}", file=ctx.out
    )
    print(file=ctx.out)
    print(comparison.to_markdown(), file=ctx.out)
    return EXIT_OK


def cmd_reproduce(args: argparse.Namespace, ctx: Context) -> int:
    """``pyro-moe reproduce``: the study's S table, noise sweep and eye image."""
    from pyro_moe.reproduce import main_table, reproduce

    if not args.out.parent.is_dir():
        raise UsageError(f"the folder of --out does not exist: {args.out.parent}")

    def progress(done: int, total: int, label: str) -> None:
        print(f"[{done}/{total}] {label}", file=sys.stderr, flush=True)

    report = reproduce(
        quick=args.quick,
        out=args.out,
        eye=args.eye,
        seeds=args.seeds,
        methods=("cavi",) if args.cavi_only else ("cavi", "svi"),
        progress=progress,
    )
    if args.json:
        print(report.to_json(), file=ctx.out)
    else:
        print(main_table(report), file=ctx.out)
        print(f"\nreport: {report.report_path}", file=ctx.out)
    return EXIT_OK


# --------------------------------------------------------------------------- CSV


def read_csv_columns(
    path: Path, target: str, features: Sequence[str] | None
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Read ``target`` and ``features`` (default: every other column) from a CSV file.

    The first row is the header. Returns ``(X (N, n), y (N,), feature names)``. Raises
    :class:`RunError` for a missing or unreadable file, a missing column, a row with the
    wrong number of fields, and empty, non-numeric, NaN or infinite values (naming the
    row and column).
    """
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = [row for row in csv.reader(f) if any(cell.strip() for cell in row)]
    except FileNotFoundError:
        raise RunError(f"no such file: {path}") from None
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise RunError(f"cannot read CSV file {path}: {e}") from None
    if not rows:
        raise RunError(f"{path} is empty; a header row with the column names is required")
    header = [h.strip() for h in rows[0]]
    dupes = sorted({h for h in header if header.count(h) > 1})
    if dupes:
        raise RunError(f"{path}: duplicate column name(s) {', '.join(map(repr, dupes))}")
    if target not in header:
        raise RunError(f"{path} has no column {target!r} (--target); columns: {', '.join(header)}")
    if features is None:
        features = [h for h in header if h != target]
    else:
        missing = [c for c in features if c not in header]
        if missing:
            raise RunError(
                f"{path} has no column(s) {', '.join(map(repr, missing))} (--features); "
                f"columns: {', '.join(header)}"
            )
        if target in features:
            raise RunError(f"the target column {target!r} is also a feature (--features)")
    if not features:
        raise RunError(f"{path} has no feature columns besides the target {target!r}")
    body = rows[1:]
    if not body:
        raise RunError(f"{path} has a header row but no data rows")
    wanted = [header.index(c) for c in [*features, target]]
    values = np.empty((len(body), len(wanted)), dtype=np.float64)
    for i, row in enumerate(body):
        line = i + 2  # 1-based, after the header
        if len(row) != len(header):
            raise RunError(
                f"{path}, line {line}: {len(row)} fields, but the header has {len(header)}"
            )
        for j, col in enumerate(wanted):
            cell = row[col].strip()
            name = header[col]
            if not cell:
                raise RunError(f"{path}, line {line}, column {name!r}: missing value")
            try:
                v = float(cell)
            except ValueError:
                raise RunError(
                    f"{path}, line {line}, column {name!r}: {cell!r} is not a number"
                ) from None
            if not math.isfinite(v):
                raise RunError(f"{path}, line {line}, column {name!r}: {cell!r} (NaN or inf)")
            values[i, j] = v
    return values[:, :-1], values[:, -1], list(features)


def cmd_fit(args: argparse.Namespace, ctx: Context) -> int:
    """``pyro-moe fit``: a mixture of linear experts on a CSV table."""
    _check_method(args.method)
    _check_output_paths(args.save)
    model = _load_model(args.model)
    experts = resolve_experts(args.experts)
    X, y, names = read_csv_columns(args.data, args.target, args.features)
    if args.intercept:
        X = np.column_stack([X, np.ones(len(y))])
        names = [*names, "(intercept)"]
    result = pyro_moe.fit(model, X, y, experts=experts, **_fit_options(args))
    _write_outputs(result, save=args.save, plot=None)
    mean = result.mean.detach().cpu().numpy()
    sd = np.sqrt(np.diagonal(result.cov.detach().cpu().numpy(), axis1=-2, axis2=-1))
    share = result.weights.detach().cpu().numpy()
    beta = result.noise_precision.detach().cpu().numpy().reshape(-1)
    betas = [float(beta[k] if beta.size == result.experts else beta[0]) for k in range(experts)]
    if args.json:
        items = [
            {
                "weights": {n: _finite(mean[k, j]) for j, n in enumerate(names)},
                "weight_sd": {n: _finite(sd[k, j]) for j, n in enumerate(names)},
                "share": _finite(share[k]),
                "noise_precision": _finite(betas[k]),
            }
            for k in range(experts)
        ]
        _emit_json(
            {"target": args.target, "features": names, "experts": items, **_summary_json(result)},
            ctx.out,
        )
        return EXIT_OK
    print(
        f"{args.data}: {len(y)} rows, target {args.target!r}, {len(names)} features, "
        f"K = {experts} experts",
        file=ctx.out,
    )
    print(file=ctx.out)
    headers = ["expert", *names, "share", "noise precision"]
    rows = [
        [
            str(k + 1),
            *(_num(mean[k, j]) for j in range(len(names))),
            f"{share[k]:.3f}",
            _num(betas[k]),
        ]
        for k in range(experts)
    ]
    print(format_table(headers, rows), file=ctx.out)
    print("(posterior mean weights per feature)", file=ctx.out)
    print(file=ctx.out)
    print("\n".join(_summary_lines(result)), file=ctx.out)
    return EXIT_OK


# --------------------------------------------------------------------------- main


@contextlib.contextmanager
def _reported_warnings(debug: bool) -> Iterator[None]:
    """Print the warnings of a successful run as one ``pyro-moe: warning: ...`` line each.

    Convergence warnings and other ``UserWarning``s are shown (all warnings with
    ``--debug``); when the run fails only its error line is printed (plus the warnings
    with ``--debug``).
    """
    from pyro_moe.errors import ConvergenceWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        failed = True
        try:
            yield
            failed = False
        finally:
            if debug or not failed:
                seen: set[str] = set()
                for w in caught:
                    ours = issubclass(w.category, ConvergenceWarning)
                    if not (ours or debug or issubclass(w.category, UserWarning)):
                        continue
                    msg = _one_line(str(w.message))
                    if not ours:
                        msg = f"{w.category.__name__}: {msg}"
                    if msg not in seen:
                        seen.add(msg)
                        print(f"{PROG}: warning: {msg}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``pyro-moe`` with ``argv`` (default: ``sys.argv[1:]``); return the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help, --version, or a usage error (already printed)
        return e.code if isinstance(e.code, int) else (EXIT_OK if e.code is None else EXIT_USAGE)
    debug = bool(getattr(args, "debug", False))

    def fail(status: int, message: str, exc: BaseException) -> int:
        if debug:
            traceback.print_exception(exc, file=sys.stderr)
        print(f"{PROG}: {message}", file=sys.stderr)
        return status

    try:
        if getattr(args, "threads", None) is not None:
            import torch

            torch.set_num_threads(args.threads)
        with _reported_warnings(debug):
            return args.handler(args, Context(out=sys.stdout))
    except UsageError as e:
        return fail(
            EXIT_USAGE, f"error: {_one_line(str(e))} (see '{PROG} {args.command} --help')", e
        )
    except ModelFileError as e:
        return fail(EXIT_USAGE, f"error: {_one_line(str(e))}", e)
    except (PyroMoeError, RunError) as e:
        return fail(EXIT_FAILED, f"error: {_one_line(str(e))}", e)
    except KeyboardInterrupt as e:
        return fail(EXIT_INTERRUPTED, "interrupted", e)
    except Exception as e:
        return fail(
            EXIT_FAILED,
            f"internal error: {type(e).__name__}: {_one_line(str(e))}; rerun with --debug",
            e,
        )


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
