"""What every command shares: exit statuses, the two CLI error types, where to print,
and the output files (checked before fitting, written all-or-nothing by
:mod:`pyro_moe.files`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from pyro_moe.errors import InputError

if TYPE_CHECKING:
    from pyro_moe.files import StagedOutputs
    from pyro_moe.model_file import Model
    from pyro_moe.result import FitResult

PROG = "pyro-moe"

# Exit statuses.
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class UsageError(Exception):
    """A bad command line found after parsing (exit status 2)."""


class RunError(Exception):
    """A run that failed for a reason outside the library (exit status 1)."""


class Terminated(BaseException):
    """SIGTERM or SIGHUP arrived (raised by :func:`pyro_moe.cli.main`'s handler, so that
    staged outputs and worker pools are cleaned up as for Ctrl-C): exit status 128 +
    the signal's number."""

    def __init__(self, signum: int) -> None:
        import signal

        super().__init__(signum)
        self.signum = signum
        self.name = signal.Signals(signum).name


@dataclass
class Context:
    """What a command needs besides its arguments: where to print, and where to stage its
    output files (``outputs``: committed by :func:`pyro_moe.cli.main` only once the printed
    output has been delivered; None: :func:`write_outputs` commits at once)."""

    out: TextIO
    outputs: StagedOutputs | None = None


def one_line(text: str) -> str:
    """Collapse a message to a single line."""
    return " ".join(str(text).split())


def load_model(spec: str) -> Model:
    """Load ``--model`` (a ModelFileError becomes a usage error in :func:`pyro_moe.cli.main`)."""
    import pyro_moe

    return pyro_moe.load_model(spec)


def check_output_paths(*paths: Path | None, inputs: Sequence[Path | str] = ()) -> None:
    """Fail early (before fitting) when an output cannot be written atomically: its folder
    is missing, or it is a directory, link, FIFO or device; when two outputs name the same
    file (one would be lost); or when an output is one of the ``inputs`` (it would be
    replaced). A usage error, status 2."""
    from pyro_moe.files import check_destination, same_file

    given = [p for p in paths if p is not None]
    for i, path in enumerate(given):
        try:
            check_destination(path)
        except InputError as e:
            raise UsageError(str(e)) from e
        for other in given[:i]:
            if same_file(path, other):
                raise UsageError(
                    f"two outputs are the same file {path}: one would be lost; give "
                    "--plot and --save different paths"
                )
        for source in inputs:
            if same_file(path, source):
                raise UsageError(f"refusing to write {path} over the input {source}")


def plot_format(path: Path) -> str:
    """The matplotlib format of ``--plot PATH``, by its ending (none: png)."""
    suffix = path.suffix.lower().lstrip(".")
    return suffix or "png"


def write_outputs(
    result: FitResult,
    *,
    save: Path | None,
    plot: Path | None,
    draw: Callable[..., None] | None = None,
    staged: StagedOutputs | None = None,
) -> None:
    """Write ``--plot`` and ``--save`` together (both or neither, :class:`pyro_moe.files.
    StagedOutputs`); ``draw(result, path, format=...)`` writes the plot in the format of
    its ending (:func:`plot_format`). An OSError on the way is a
    failed run and leaves no file."""
    from pyro_moe.files import StagedOutputs

    if save is None and plot is None:
        return
    with StagedOutputs() as own:
        outputs = own if staged is None else staged
        current = plot if plot is not None and draw is not None else save
        try:
            if plot is not None and draw is not None:
                draw(result, outputs.stage(plot), format=plot_format(plot))
            current = save
            if save is not None:
                result.save(outputs.stage(save))
            if staged is None:
                outputs.commit()
        except OSError as e:  # named by its destination, not by its temporary file
            raise RunError(f"cannot write {current}: {e.strerror or e}") from e
        except InputError as e:
            if isinstance(e.__cause__, OSError):  # result.save's atomic write
                raise RunError(f"cannot write {current}: {e.__cause__.strerror or e}") from e
            raise
