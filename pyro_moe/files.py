"""Output files, written once and all-or-nothing: the one atomic writer of pyro_moe.

Every file the library or the command line writes (a saved result, a plot, a report)
goes through :class:`StagedOutputs`: each output is written to a temporary file in its
destination's directory, and the temporaries are renamed onto their destinations only
when every one of them is complete. Leaving the ``with`` block by an exception removes
them, so a failed run leaves no partial file behind. :func:`atomic_write` is the
one-file case.

A destination that exists and is not a regular file (a directory, a FIFO, a device node,
a symbolic link) is refused: renaming over it would replace it with a regular file.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path

from .errors import InputError

__all__ = ["StagedOutputs", "atomic_write", "check_destination", "check_source", "same_file"]


def check_source(path: str | Path, what: str = "file") -> Path:
    """``path`` as a :class:`~pathlib.Path` that names a regular file to read, or
    InputError: missing ("no such ``what``"), a loop of symbolic links, a directory, or
    something that is not a regular file (a FIFO would block the read forever, a device
    such as ``/dev/zero`` never ends). Symbolic links to regular files are followed."""
    path = Path(path)
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        if os.path.islink(path):
            raise InputError(f"no such {what}: {path} is a broken symbolic link") from None
        raise InputError(f"no such {what}: {path}") from None
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise InputError(f"cannot read {path}: a loop of symbolic links") from None
        raise InputError(f"cannot read {path}: {e.strerror or e}") from None
    if stat.S_ISDIR(mode):
        raise InputError(f"cannot read {path}: it is a directory, not a {what}")
    if not stat.S_ISREG(mode):
        kind = "a FIFO" if stat.S_ISFIFO(mode) else "a device or socket"
        raise InputError(f"cannot read {path}: it is {kind}, not a regular file")
    return path


def same_file(a: str | Path, b: str | Path) -> bool:
    """Whether ``a`` and ``b`` name the same existing file (after links), or the same path."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.abspath(a) == os.path.abspath(b)


def check_destination(path: str | Path) -> Path:
    """``path`` as a :class:`~pathlib.Path` that can be written atomically, or InputError.

    Its directory must exist; the path itself must be absent or a regular file.
    """
    if str(path).endswith(("/", os.sep)):
        raise InputError(f"cannot write {path}: it names a directory; give a file name")
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise InputError(f"cannot write {path}: directory {parent} does not exist")
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return path
    except OSError as e:
        raise InputError(f"cannot write {path}: {e.strerror or e}") from e
    if stat.S_ISDIR(mode):
        raise InputError(f"cannot write {path}: it is a directory; give a file name")
    if not stat.S_ISREG(mode):
        raise InputError(
            f"cannot write {path}: it exists and is not a regular file (a link, FIFO or "
            "device); refusing to replace it"
        )
    return path


class StagedOutputs:
    """Output files written to temporaries beside their destinations, renamed together.

    ``stage(path)`` checks ``path`` (:func:`check_destination`) and gives a temporary path
    in its directory; ``commit()`` renames every staged file to its destination with the
    permissions of an ordinary new file (``0o666`` less the umask). Leaving the ``with``
    block by an exception, or without a commit, removes the temporaries (and the folders
    ``stage(..., make_parents=True)`` created for them).
    """

    def __init__(self) -> None:
        self._staged: list[tuple[Path, Path]] = []
        self._made: list[Path] = []

    def __enter__(self) -> StagedOutputs:
        return self

    def __exit__(self, *exc: object) -> None:
        self.discard()

    def stage(self, destination: str | Path, *, make_parents: bool = False) -> Path:
        """A fresh temporary file next to ``destination`` (removed unless committed);
        with ``make_parents`` its missing folders are created (and removed on discard)."""
        parent = Path(destination).parent
        if make_parents and not parent.is_dir():
            missing = [d for d in (parent, *parent.parents) if not d.exists()]
            try:
                parent.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise InputError(f"cannot create {parent}: {e.strerror or e}") from e
            self._made.extend(reversed(missing))
        destination = check_destination(destination)
        parent = destination.parent if str(destination.parent) else Path(".")
        try:
            fd, tmp = tempfile.mkstemp(prefix=f".{destination.name}.", suffix=".tmp", dir=parent)
        except OSError as e:
            raise InputError(f"cannot write {destination}: {e.strerror or e}") from e
        os.close(fd)
        self._staged.append((Path(tmp), destination))
        return Path(tmp)

    def commit(self) -> None:
        """Rename every staged file to its destination."""
        for _, destination in self._staged:  # nothing else appeared there meanwhile
            check_destination(destination)
        umask = os.umask(0)
        os.umask(umask)
        for tmp, destination in self._staged:
            os.chmod(tmp, 0o666 & ~umask)
            os.replace(tmp, destination)
        self._staged.clear()
        self._made.clear()

    def discard(self) -> None:
        """Remove the staged temporaries that were not committed."""
        for tmp, _ in self._staged:
            with contextlib.suppress(OSError):
                tmp.unlink()
        self._staged.clear()
        for folder in reversed(self._made):  # innermost first; only if still empty
            with contextlib.suppress(OSError):
                folder.rmdir()
        self._made.clear()


def atomic_write(path: str | Path, write: Callable[[Path], object]) -> Path:
    """Write one file atomically: ``write(tmp)`` fills a temporary beside ``path``, which
    then replaces ``path``. Returns ``path``; an :class:`OSError` while writing becomes an
    :class:`~pyro_moe.errors.InputError` naming the file, and nothing is left behind."""
    path = check_destination(path)
    with StagedOutputs() as out:
        tmp = out.stage(path)
        try:
            write(tmp)
            out.commit()
        except OSError as e:
            raise InputError(f"cannot write {path}: {e.strerror or e}") from e
    return path
