"""Numeric tables from CSV files: named columns as arrays, every bad cell named.

:func:`read_csv` reads named columns of a CSV file (a header row first) into float64
arrays; :func:`read_xy` reads a target column and feature columns as the ``(X, y)`` of
:func:`pyro_moe.fit`. Both raise :class:`~pyro_moe.errors.InputError` with the file, line
and column for a missing or unreadable file, a missing or duplicated column, a row with the
wrong number of fields, and an empty, non-numeric, NaN or infinite value.

    >>> from pyro_moe.tables import read_xy
    >>> X, y, names = read_xy("data.csv", "y", ["a", "b"])   # doctest: +SKIP
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .errors import InputError

__all__ = ["read_csv", "read_numeric", "read_xy"]


def _all_rows(path: Path) -> list[list[str]]:
    """Every non-blank row of a CSV file; an InputError naming the file when it is missing,
    unreadable or empty; a FIFO or a device (``/dev/zero``) is refused before it is opened,
    since reading it would block or never end."""
    from .files import check_source

    check_source(path, "file")
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = [row for row in csv.reader(f) if any(cell.strip() for cell in row)]
    except FileNotFoundError:
        raise InputError(f"no such file: {path}") from None
    except IsADirectoryError:
        raise InputError(f"{path} is a directory, not a CSV file") from None
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise InputError(f"cannot read CSV file {path}: {e}") from None
    if not rows:
        raise InputError(f"{path} is empty; a header row with the column names is required")
    return rows


def _rows(path: Path) -> tuple[list[str], list[list[str]]]:
    """The header (stripped names) and the data rows of a CSV file; blank lines skipped."""
    rows = _all_rows(path)
    header = [h.strip() for h in rows[0]]
    dupes = sorted({h for h in header if header.count(h) > 1})
    if dupes:
        raise InputError(f"{path}: duplicate column name(s) {', '.join(map(repr, dupes))}")
    return header, rows[1:]


def _values(
    path: Path,
    header: list[str],
    body: list[list[str]],
    columns: Sequence[str],
    first_line: int = 2,
) -> np.ndarray:
    """The ``columns`` of ``body`` as an (N, len(columns)) float64 array, checked cell by
    cell (``first_line``: the file's 1-based line of ``body[0]``, 2 after a header)."""
    if not body:
        raise InputError(f"{path} has a header row but no data rows")
    wanted = [header.index(c) for c in columns]
    values = np.empty((len(body), len(wanted)), dtype=np.float64)
    for i, row in enumerate(body):
        line = i + first_line
        if len(row) != len(header):
            raise InputError(
                f"{path}, line {line}: {len(row)} fields, but the header has {len(header)}"
            )
        for j, col in enumerate(wanted):
            cell = row[col].strip()
            name = header[col]
            if not cell:
                raise InputError(f"{path}, line {line}, column {name!r}: missing value")
            try:
                v = float(cell)
            except ValueError:
                raise InputError(
                    f"{path}, line {line}, column {name!r}: {cell!r} is not a number"
                ) from None
            if not math.isfinite(v):
                raise InputError(f"{path}, line {line}, column {name!r}: {cell!r} (NaN or inf)")
            values[i, j] = v
    return values


def _missing(path: Path, header: list[str], names: Sequence[str], what: str) -> None:
    missing = [c for c in names if c not in header]
    if missing:
        raise InputError(
            f"{path} has no column(s) {', '.join(map(repr, missing))} ({what}); "
            f"columns: {', '.join(header)}"
        )


def read_csv(path: str | Path, columns: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """Named columns of a CSV file (header row first) as float64 arrays of shape (N,).

    Args:
        path: the CSV file (UTF-8, an optional byte-order mark; blank lines are skipped).
        columns: the names to read, in the order wanted (default: every column).

    Returns:
        ``{name: values}`` in the order of ``columns``.

    Raises:
        InputError: naming the file (and the line and column) when it is missing,
            unreadable or empty, a column is missing or duplicated, a row has the wrong
            number of fields, or a wanted value is empty, not a number, NaN or infinite.
    """
    path = Path(path)
    header, body = _rows(path)
    names = list(header if columns is None else columns)
    _missing(path, header, names, "asked for")
    values = _values(path, header, body, names)
    return {name: values[:, j].copy() for j, name in enumerate(names)}


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def read_numeric(path: str | Path) -> tuple[list[str] | None, np.ndarray]:
    """Every column of a CSV file with or without a header row: ``(names, values (N, m))``.

    The first row is data, and ``names`` None, when every one of its cells is a number;
    else it is the header. Raises :class:`~pyro_moe.errors.InputError` as :func:`read_csv`
    does (file, line and column of a bad cell).
    """
    path = Path(path)
    rows = _all_rows(path)
    if all(_is_number(c.strip()) for c in rows[0]):
        names = [str(j + 1) for j in range(len(rows[0]))]
        return None, _values(path, names, rows, names, first_line=1)
    header, body = _rows(path)
    return header, _values(path, header, body, header)


def read_xy(
    path: str | Path, target: str, features: Sequence[str] | None = None
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """A regression table: ``(X (N, n), y (N,), feature names)`` from a CSV file.

    ``features`` default to every column but ``target``, in file order. Raises
    :class:`~pyro_moe.errors.InputError` as :func:`read_csv` does, and when the target is
    missing, is also a feature, or no feature column is left.
    """
    path = Path(path)
    header, body = _rows(path)
    if target not in header:
        raise InputError(
            f"{path} has no column {target!r} (the target); columns: {', '.join(header)}"
        )
    if features is None:
        features = [h for h in header if h != target]
    else:
        features = list(features)
        _missing(path, header, features, "the features")
        if target in features:
            raise InputError(f"the target column {target!r} is also a feature")
    if not features:
        raise InputError(f"{path} has no feature columns besides the target {target!r}")
    values = _values(path, header, body, [*features, target])
    return values[:, :-1], values[:, -1], list(features)
