"""The ``pyro-moe`` command line: circles and conics from binary images, mixtures on tables.

Subcommands (one module each)::

    pyro-moe demo                       recover the circles of the built-in synthetic image
    pyro-moe circles IMAGE [options]    circles of a binary image, in pixel coordinates
    pyro-moe conics IMAGE [options]     conics (ellipses, parabolas, hyperbolas) of an image
    pyro-moe curves IMAGE -k NAMES      a mix of curve kinds, one expert per name
    pyro-moe fit DATA.csv --target COL  a mixture of linear experts on a CSV table
    pyro-moe compare SOURCE             SVI beside CAVI on one model
    pyro-moe reproduce [--quick]        the study's computational experiment

Exit status: 0 on success (convergence warnings included, printed as one
``pyro-moe: warning: ...`` line each on stderr), 2 for a usage error (bad options, an
unknown model name, a model file that cannot be loaded), 1 for a run that failed (an
unreadable image, bad data, a model CAVI cannot fit, ...), with one
``pyro-moe: error: ...`` line on stderr and no traceback unless ``--debug`` is given.
Output files (``--plot``, ``--save``) are written to temporary files next to their
destination and renamed only once every output of the run is complete
(:mod:`pyro_moe.files`), so a failed run leaves no partial file behind.

Pixel convention: x = column, y = row, origin at the top-left pixel.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import signal
import sys
import threading
import traceback
import warnings
from collections.abc import Iterator, Sequence

from . import compare, curves, demo, fit, reproduce
from .base import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    PROG,
    Context,
    RunError,
    Terminated,
    UsageError,
    one_line,
)
from .options import Formatter, Parser, add_global_options
from .render import without_timings

__all__ = ["build_parser", "main"]

COMMANDS = (demo, curves, fit, compare, reproduce)


def build_parser() -> argparse.ArgumentParser:
    """The ``pyro-moe`` argument parser with its subcommands."""
    import pyro_moe

    parser = Parser(
        prog=PROG,
        description="Bayesian mixtures of linear models and mixtures of experts: circles and "
        "conics from binary images, mixtures of linear experts on tables.",
        epilog="Run 'pyro-moe COMMAND --help' for the options of a command. Exit status: 0 "
        "success, 1 failed run, 2 usage error.",
        formatter_class=Formatter,
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {pyro_moe.__version__}")
    add_global_options(parser, top=True)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in COMMANDS:
        command.register(sub)
    return parser


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
                    msg = one_line(str(w.message))
                    if not ours:
                        msg = f"{w.category.__name__}: {msg}"
                    if msg not in seen:
                        seen.add(msg)
                        print(f"{PROG}: warning: {msg}", file=sys.stderr)


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so that the interpreter's last flush of a closed pipe
    does not print "Exception ignored ... BrokenPipeError"."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


@contextlib.contextmanager
def _terminate_cleanly() -> Iterator[None]:
    """SIGTERM and SIGHUP raise :class:`~pyro_moe.cli.base.Terminated` while the command
    runs, so that they are handled like Ctrl-C: staged outputs removed, worker pools
    stopped, one line, exit status 128 + the signal. (Only in the main thread; elsewhere
    the handlers cannot be set and are left alone.)"""
    wanted = [getattr(signal, n) for n in ("SIGTERM", "SIGHUP") if hasattr(signal, n)]
    previous = {}
    raised = False

    def handler(signum: int, frame: object) -> None:
        nonlocal raised
        if not raised:  # once: a second signal must not interrupt the clean-up
            raised = True
            raise Terminated(signum)

    if threading.current_thread() is threading.main_thread():
        for signum in wanted:
            with contextlib.suppress(OSError, ValueError):
                previous[signum] = signal.signal(signum, handler)
    try:
        yield
    finally:
        for signum, old in previous.items():
            with contextlib.suppress(OSError, ValueError, TypeError):
                signal.signal(signum, old)


@contextlib.contextmanager
def _stdout_to_stderr() -> Iterator[None]:
    """While the command runs, whatever writes to stdout goes to stderr: Python's
    ``print`` (``sys.stdout``) and file descriptor 1 itself (a model file's ``os.write(1,
    ...)``, a subprocess, a C extension), so that stdout holds only the command's output
    (e.g. pure JSON with ``--json``). File descriptor 1 is restored afterwards."""
    saved = None
    with contextlib.suppress(OSError, ValueError, AttributeError):
        sys.stdout.flush()  # what was printed before goes first
    with contextlib.suppress(OSError):
        saved = os.dup(1)
        os.dup2(2, 1)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        if saved is not None:
            with contextlib.suppress(OSError):
                os.dup2(saved, 1)
            os.close(saved)


def _deliver(printed: str) -> None:
    """Write the command's text to stdout; a closed stdout or a full disk is a RunError
    (the output files are then not committed)."""
    if sys.stdout is None:
        raise RunError("cannot print the result: standard output is closed")
    try:
        sys.stdout.write(printed)
        sys.stdout.flush()
    except BrokenPipeError:
        raise
    except (OSError, ValueError) as e:
        _silence_stdout()  # the interpreter's last flush must not fail again
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise RunError(f"cannot print the result to standard output: {reason}") from None


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``pyro-moe`` with ``argv`` (default: ``sys.argv[1:]``); return the exit status."""
    from pyro_moe.errors import ModelFileError, PyroMoeError

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

    from pyro_moe.files import StagedOutputs

    try:
        if getattr(args, "threads", None) is not None:
            import torch

            torch.set_num_threads(args.threads)
        if getattr(args, "deterministic", False):  # torch's parallel sums depend on the
            import torch  # thread count (their order differs): one thread, the same bytes

            torch.set_num_threads(1)
        # The command prints into a buffer and stages its files; the text is written out
        # and the files committed only at the end, so a closed pipe or Ctrl-C leaves no
        # file of a run that did not finish. A model file's prints go to stderr (stdout
        # holds only the command's output, e.g. pure JSON with --json).
        text = io.StringIO()
        if sys.stdout is None:  # started with stdout closed: nowhere to print the result
            raise RunError("standard output is closed: nowhere to print the result")
        with _terminate_cleanly(), StagedOutputs() as staged, _reported_warnings(debug):
            with _stdout_to_stderr():
                status = args.handler(args, Context(out=text, outputs=staged))
            printed = text.getvalue()
            if getattr(args, "deterministic", False):
                if not getattr(args, "json", False):
                    raise UsageError("--deterministic goes with --json")
                printed = without_timings(printed)
            _deliver(printed)
            try:
                staged.commit()
            except OSError as e:
                raise RunError(f"cannot write the output files: {e}") from e
        return status
    except BrokenPipeError:  # the reader went away (| head, | true): quietly done
        _silence_stdout()
        return EXIT_OK
    except UsageError as e:
        return fail(
            EXIT_USAGE, f"error: {one_line(str(e))} (see '{PROG} {args.command} --help')", e
        )
    except ModelFileError as e:
        return fail(EXIT_USAGE, f"error: {one_line(str(e))}", e)
    except (PyroMoeError, RunError) as e:
        return fail(EXIT_FAILED, f"error: {one_line(str(e))}", e)
    except KeyboardInterrupt as e:
        return fail(EXIT_INTERRUPTED, "interrupted (no output written)", e)
    except Terminated as e:
        return fail(128 + e.signum, f"terminated by {e.name} (no output written)", e)
    except Exception as e:
        return fail(
            EXIT_FAILED,
            f"internal error: {type(e).__name__}: {one_line(str(e))}; rerun with --debug",
            e,
        )
