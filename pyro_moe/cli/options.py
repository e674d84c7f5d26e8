"""The option groups of the commands (argparse builders) and the argument types they use.

Every argument type raises :class:`argparse.ArgumentTypeError` with "must be ..., got ...",
so a bad value is one usage-error line (status 2). :func:`fit_options` turns the common
fitting options into keyword arguments of :func:`pyro_moe.fit`.
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from .base import EXIT_USAGE, PROG, UsageError, one_line, plot_format

AUTO = "auto"  # ``--experts auto``: choose K by the ELBO (pyro_moe.selection)


class Formatter(argparse.ArgumentDefaultsHelpFormatter):
    """Show each option's default, except ``None`` (those helps say the default in words)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or isinstance(action, argparse._StoreTrueAction):
            return action.help
        return super()._get_help_string(action)


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line on stderr and exit status 2."""

    def error(self, message: str) -> NoReturn:
        """Print ``pyro-moe: error: MESSAGE (see 'PROG --help')`` and exit with status 2."""
        self.exit(EXIT_USAGE, f"{PROG}: error: {one_line(message)} (see '{self.prog} --help')\n")


# --------------------------------------------------------------------------- argument types


def int_at_least(minimum: int, wording: str, maximum: int | None = None) -> Callable[[str], int]:
    """An argparse type: an integer >= ``minimum`` (and <= ``maximum``), else "must be
    <wording>, got ..." (a usage error, exit status 2)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {wording}, got {text!r}") from None
        if value < minimum or (maximum is not None and value > maximum):
            raise argparse.ArgumentTypeError(f"must be {wording}, got {value}")
        return value

    return parse


positive_int = int_at_least(1, "a positive integer")
nonnegative_int = int_at_least(0, "an integer >= 0")
#: the largest --threads (torch takes a C int; no machine has more cores)
MAX_THREADS = 4096
threads_arg = int_at_least(1, f"an integer from 1 to {MAX_THREADS}", MAX_THREADS)


def seed_arg(text: str) -> int:
    """``--seed``: an integer in the range every engine accepts (restart i uses seed + i)."""
    from pyro_moe.parameters import SEED_MAX

    return int_at_least(0, f"an integer from 0 to {SEED_MAX}", SEED_MAX)(text)


def experts_arg(text: str) -> int | str:
    """``--experts``: an integer K >= 1, or ``auto`` (model selection; circles and conics)."""
    if text.strip().lower() == AUTO:
        return AUTO
    return int_at_least(1, "an integer >= 1")(text)


def expert_names_arg(text: str) -> list[str]:
    """``curves --experts``: comma-separated expert names (checked against the model file)."""
    names = [s.strip() for s in text.split(",") if s.strip()]
    if not names:
        raise argparse.ArgumentTypeError(f"must name at least one expert, got {text!r}")
    return names


def max_points_arg(text: str) -> int:
    value = positive_int(text)
    if value < 3:
        raise argparse.ArgumentTypeError(f"must be an integer >= 3, got {value}")
    return value


def out_path(text: str) -> Path:
    """``--save`` / ``--plot``: a file name (a trailing ``/`` names a directory: refused
    here, since :class:`~pathlib.Path` would strip it)."""
    if not text or text.endswith(("/", os.sep)):
        raise argparse.ArgumentTypeError(f"must name a file, got the directory {text!r}")
    return Path(text)


#: The file endings ``--plot`` writes (in the format they name, by matplotlib); a name
#: without an ending gets a PNG.
PLOT_FORMATS = ("png", "pdf", "svg", "svgz", "eps", "ps", "jpg", "jpeg", "tif", "tiff", "webp")


def plot_path(text: str) -> Path:
    """``--plot``: a file name ending in one of :data:`PLOT_FORMATS` (or in none: PNG)."""
    path = out_path(text)
    if plot_format(path) not in PLOT_FORMATS:
        raise argparse.ArgumentTypeError(
            f"cannot write a plot as {path.suffix!r} ({text!r}); give a file name ending in "
            f"{', '.join('.' + f for f in PLOT_FORMATS)}"
        )
    return path


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text!r}")
    return value


def threshold_arg(text: str) -> float | str:
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


def learn_arg(text: str) -> str:
    """``--learn``: ``all``, ``none`` or a comma-separated list of learnable names."""
    from pyro_moe.catalog import LEARNABLE

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


def columns_arg(text: str) -> list[str]:
    names = [s.strip() for s in text.split(",")]
    if not names or any(not n for n in names):
        raise argparse.ArgumentTypeError(f"must be a comma-separated list of names, got {text!r}")
    return names


def device_arg(text: str) -> str:
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


def _doc(name: str) -> str:
    """The help of an option: its text in :mod:`pyro_moe.parameters`, the one table."""
    from pyro_moe.parameters import COMMON, ENGINE_OPTIONS

    if name in COMMON:
        return COMMON[name].doc
    return next(opts[name].doc for opts in ENGINE_OPTIONS.values() if name in opts)


def _engine_defaults(name: str) -> str:
    """``(default: the engine's: cavi 1000, svi 3000, nuts 1000)``, from the engines' own
    declarations (:data:`pyro_moe.parameters.ENGINE_OPTIONS`)."""
    from pyro_moe.parameters import SVI_TOL, engine_defaults

    shown = {e: f"{v:g}" for e, v in engine_defaults(name).items()}
    if name == "tol":  # SVI's depends on its optimizer
        shown["svi"] = "by optimizer (" + ", ".join(f"{k} {v:g}" for k, v in SVI_TOL.items()) + ")"
    return "(default: the engine's: " + ", ".join(f"{e} {v}" for e, v in shown.items()) + ")"


# --------------------------------------------------------------------------- option groups


def add_global_options(parser: argparse.ArgumentParser, *, top: bool) -> None:
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
        type=threads_arg,
        default=default,
        metavar="N",
        help="number of CPU threads for torch (torch.set_num_threads); "
        "default: leave torch's setting alone",
    )


def add_command(sub: Any, name: str, **kwargs: Any) -> argparse.ArgumentParser:
    """A subcommand parser with the shared formatter and the global options."""
    p = sub.add_parser(name, formatter_class=Formatter, **kwargs)
    add_global_options(p, top=False)
    return p


def add_run_options(p: argparse.ArgumentParser, *, restarts: int = 5, each: str = "") -> None:
    """``--n-init`` (alias ``--restarts``) and ``--seed``: the API's names and help."""
    p.add_argument(
        "--n-init",
        "--restarts",
        dest="n_init",
        type=positive_int,
        default=restarts,
        metavar="N",
        help=_doc("n_init") + each,
    )
    p.add_argument("--seed", type=seed_arg, default=0, metavar="S", help=_doc("seed"))


def add_fit_options(
    p: argparse.ArgumentParser,
    *,
    default_model: str,
    experts: bool = True,
    both_methods: bool = False,
    restarts: int = 5,
) -> None:
    """Options shared by ``circles``, ``conics``, ``curves`` (which has its own
    ``--experts``), ``fit`` and ``compare`` (``both_methods``: no ``--method`` and no
    ``--save``, since it fits every method; ``--lr`` goes to SVI alone)."""
    from pyro_moe.catalog import LEARNABLE, builtin_models

    models = ", ".join(builtin_models())
    if experts:
        p.add_argument(
            "--experts",
            "-k",
            type=experts_arg,
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
    if not both_methods:
        p.add_argument(
            "--method",
            default="cavi",
            metavar="NAME",
            help="the engine: cavi (closed-form variational EM), svi (Pyro stochastic "
            "variational inference), or any other engine registered in pyro_moe.engines",
        )
    add_run_options(p, restarts=restarts, each=" (each method)" if both_methods else "")
    p.add_argument(
        "--learn",
        type=learn_arg,
        default=None,
        metavar="WHAT",
        help=f"hyperparameters to point-estimate: all, none, or a comma-separated list of "
        f"{', '.join(LEARNABLE)}; the rest stay at the model file's values (default: the "
        "model file's SETTINGS['learn'], noise_precision for mixture_of_models)",
    )
    p.add_argument(
        "--max-iter",
        type=positive_int,
        default=None,
        metavar="N",
        help=_doc("max_iter") + " " + _engine_defaults("max_iter"),
    )
    p.add_argument(
        "--tol",
        type=positive_float,
        default=None,
        metavar="TOL",
        help=_doc("tol") + " " + _engine_defaults("tol"),
    )
    p.add_argument(
        "--lr",
        type=positive_float,
        default=None,
        metavar="LR",
        help=_doc("lr")
        + ("" if both_methods else "; only for --method svi")
        + " (default: the engine's; 0.002, 0.01 where q(W) is whitened)",
    )
    p.add_argument(
        "--device",
        type=device_arg,
        default=None,
        metavar="DEV",
        help="where to compute: cpu, cuda, cuda:1, ... (default: cpu)",
    )
    add_json_option(p, "print one JSON object instead of a table (default: off)")
    if both_methods:
        return
    p.add_argument(
        "--save",
        type=out_path,
        default=None,
        metavar="NPZ",
        help="save the fit (posteriors, hyperparameters, history) as a .npz file, "
        "readable with pyro_moe.FitResult.load (default: not saved)",
    )


def add_json_option(p: argparse.ArgumentParser, help: str) -> None:
    p.add_argument("--json", action="store_true", help=help)
    p.add_argument(
        "--deterministic",
        action="store_true",
        help="with --json: leave out the wall-clock timings (every 'seconds' and "
        "'timings_s' field) and compute on one thread, so runs with the same seed print the "
        "same bytes whatever --threads (default: off)",
    )


def add_plot_option(p: argparse.ArgumentParser, help: str) -> None:
    p.add_argument(
        "--plot",
        type=plot_path,
        default=None,
        metavar="FILE",
        help=help + "; the format is the file's ending: .png (or none), .pdf, .svg, .jpg, ...",
    )


def add_image_options(p: argparse.ArgumentParser) -> None:
    """Options of the image subcommands (``circles``, ``conics``, ``curves``)."""
    p.add_argument(
        "image",
        type=Path,
        nargs="+",
        metavar="INPUT",
        help="image file (PNG, JPEG, TIFF, ...) or point set (.csv with or without a header, "
        ".npy: columns x, y); several inputs or a directory run in batch mode (one process, a "
        "progress bar on stderr, with --json one JSON line per input; exit status 1 when any "
        "input failed)",
    )
    p.add_argument(
        "--max-points",
        type=max_points_arg,
        default=None,
        metavar="M",
        help="use at most M foreground pixels, drawn at random with --seed (default: all)",
    )
    p.add_argument(
        "--max-pixels",
        type=nonnegative_int,
        default=None,
        metavar="P",
        help="refuse image files of more than P pixels (default: 100000000; 0: no limit)",
    )
    p.add_argument(
        "--threshold",
        type=threshold_arg,
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
        help="keep only edge points: the boundary of a binary mask, or Canny's edges of a "
        "gray or colour photo (default: off)",
    )
    p.add_argument(
        "--edge-sigma",
        type=positive_float,
        default=None,
        metavar="S",
        help="with --edges on a photo: Canny's smoothing scale in pixels (default: the "
        "smallest of 1, 1.5, ..., 6 whose edges are at most 6 (H + W) pixels)",
    )
    add_plot_option(
        p,
        "write a plot of the points coloured by expert with the fitted curves (default: no plot)",
    )


def add_curve_options(p: argparse.ArgumentParser) -> None:
    """``--max-experts`` and ``--noise-expert`` of ``circles`` / ``conics``."""
    p.add_argument(
        "--max-experts",
        type=positive_int,
        default=None,
        metavar="K",
        help="largest K tried by --experts auto (default: from the picture, one more than "
        "the candidate curves of its edge chains; 5 for points off the pixel grid)",
    )
    p.add_argument(
        "--noise-expert",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="add a uniform background component for stray pixels (outliers) and print "
        "the outlier share; --no-noise-expert: every point belongs to a curve (default: "
        "on, pyro_moe.curves.fitting.CURVE_DEFAULTS, as the API)",
    )


# --------------------------------------------------------------------------- from options


def image_options(args: argparse.Namespace) -> dict[str, Any]:
    """``image_options`` of the curve fitters from ``--threshold``, ``--invert``, ``--edges``,
    ``--edge-sigma``."""
    options = {"threshold": args.threshold, "invert": args.invert, "edges": args.edges}
    if args.edge_sigma is not None and not args.edges:
        raise UsageError("--edge-sigma is Canny's scale for --edges; give --edges with it")
    if args.edge_sigma is not None:
        options["edge_sigma"] = args.edge_sigma
    if args.max_pixels is not None:
        options["max_pixels"] = args.max_pixels or None
    return options


def fit_options(args: argparse.Namespace) -> dict[str, Any]:
    """Keyword arguments of ``pyro_moe.fit`` from the common options (no ``method`` nor
    ``lr`` for ``compare``, which has no ``--method``: it takes ``--lr`` for SVI alone)."""
    options: dict[str, Any] = {"n_init": args.n_init, "seed": args.seed, "learn": args.learn}
    method = getattr(args, "method", None)
    if method is not None:
        options["method"] = method
        if args.lr is not None:
            from pyro_moe.engines import ENGINES

            if "lr" not in ENGINES[method].declared:
                raise UsageError(f"--lr is an option of SVI; --method {method} has none")
            options["lr"] = args.lr
    if args.max_iter is not None:
        options["max_iter"] = args.max_iter
    if args.tol is not None:
        options["tol"] = args.tol
    if args.device is not None:
        options["device"] = args.device
    return options


def check_method(method: str) -> None:
    """A usage error unless ``method`` names a registered engine (:mod:`pyro_moe.engines`)."""
    from pyro_moe.engines import ENGINES

    if method not in ENGINES:
        raise UsageError(
            f"--method {method} is not an engine of this pyro_moe; use one of "
            f"{', '.join(sorted(ENGINES))}"
        )


def resolve_experts(spec: int | str, *, allow_auto: bool = False) -> int | str:
    """The number of experts to fit, or ``AUTO`` (model selection) where ``allow_auto``.

    Only ``circles`` and ``conics`` select K (:func:`pyro_moe.select_curves`); elsewhere
    ``auto`` is a usage error.
    """
    if spec == AUTO:
        if not allow_auto:
            raise UsageError("--experts auto is available for circles and conics only")
        return AUTO
    return int(spec)
