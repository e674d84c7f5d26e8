"""Output files: staged, renamed together on commit, never a partial file or a temporary."""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

import pytest

import pyro_moe
from pyro_moe.files import StagedOutputs, atomic_write, check_destination


@pytest.fixture
def umask():
    """A umask that differs from mkstemp's 0o600 and from the usual 0o022, restored after."""
    old = os.umask(0o027)
    try:
        yield 0o027
    finally:
        os.umask(old)


def _listing(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def test_staged_files_appear_only_on_commit(tmp_path, umask):
    a, b = tmp_path / "a.txt", tmp_path / "b.bin"
    with StagedOutputs() as out:
        ta, tb = out.stage(a), out.stage(b)
        assert ta.parent == tmp_path and tb.parent == tmp_path
        assert ta != tb and ta.name != "a.txt" and tb.name != "b.bin"
        ta.write_text("alpha")
        tb.write_bytes(b"\x00\x01")
        assert not a.exists() and not b.exists()
        assert len(_listing(tmp_path)) == 2  # only the two temporaries
        out.commit()
        assert _listing(tmp_path) == ["a.txt", "b.bin"]
    assert _listing(tmp_path) == ["a.txt", "b.bin"]
    assert a.read_text() == "alpha" and b.read_bytes() == b"\x00\x01"
    for p in (a, b):
        assert stat.S_IMODE(p.stat().st_mode) == 0o666 & ~umask == 0o640


def test_mode_follows_the_umask(tmp_path):
    old = os.umask(0o002)
    try:
        path = atomic_write(tmp_path / "f.txt", lambda p: p.write_text("x"))
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o664


def test_leaving_without_commit_leaves_nothing(tmp_path):
    with StagedOutputs() as out:
        out.stage(tmp_path / "a.txt").write_text("alpha")
    assert _listing(tmp_path) == []


def test_folders_made_for_staged_files_go_with_them_unless_committed(tmp_path):
    with StagedOutputs() as out:
        out.stage(tmp_path / "a" / "b" / "f.txt", make_parents=True).write_text("x")
    assert list(tmp_path.iterdir()) == []  # discarded: the folders made for it too
    with StagedOutputs() as out:
        out.stage(tmp_path / "a" / "b" / "f.txt", make_parents=True).write_text("x")
        out.commit()
    assert (tmp_path / "a" / "b" / "f.txt").read_text() == "x"


def test_an_exception_leaves_no_file_and_no_temporary(tmp_path):
    class Boom(Exception):
        pass

    with pytest.raises(Boom), StagedOutputs() as out:
        out.stage(tmp_path / "a.txt").write_text("alpha")
        out.stage(tmp_path / "b.txt").write_text("beta")
        raise Boom
    assert _listing(tmp_path) == []


def test_an_exception_keeps_the_old_file(tmp_path):
    old = tmp_path / "result.npz"
    old.write_text("old")
    with pytest.raises(RuntimeError), StagedOutputs() as out:
        out.stage(old).write_text("new, half written")
        raise RuntimeError("writer failed")
    assert _listing(tmp_path) == ["result.npz"]
    assert old.read_text() == "old"


def test_an_existing_file_is_replaced_atomically(tmp_path, umask):
    path = tmp_path / "out.txt"
    path.write_text("old contents, longer than the new ones")
    os.chmod(path, 0o600)
    inode = path.stat().st_ino
    with StagedOutputs() as out:
        tmp = out.stage(path)
        tmp.write_text("new")
        tmp_inode = tmp.stat().st_ino
        assert path.read_text().startswith("old")  # untouched until the commit
        out.commit()
    assert path.read_text() == "new"
    # replaced by rename (the staged file's inode), not rewritten in place
    assert path.stat().st_ino == tmp_inode != inode
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask
    assert _listing(tmp_path) == ["out.txt"]


def test_atomic_write_returns_the_path(tmp_path):
    seen = []

    def write(tmp: Path) -> None:
        seen.append(tmp)
        tmp.write_text("hello")

    path = atomic_write(str(tmp_path / "h.txt"), write)
    assert path == tmp_path / "h.txt" and isinstance(path, Path)
    assert path.read_text() == "hello"
    assert seen[0].parent == tmp_path and seen[0] != path
    assert _listing(tmp_path) == ["h.txt"]


def test_a_relative_path_is_written_in_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert check_destination("rel.txt") == Path("rel.txt")
    atomic_write("rel.txt", lambda p: p.write_text("here"))
    assert (tmp_path / "rel.txt").read_text() == "here"
    assert _listing(tmp_path) == ["rel.txt"]


# ---- destinations that are refused ----------------------------------------------------


def _directory(tmp_path: Path) -> tuple[Path, list[Path]]:
    path = tmp_path / "out"
    path.mkdir()
    return path, []


def _file_link(tmp_path: Path) -> tuple[Path, list[Path]]:
    target = tmp_path / "target.txt"
    target.write_text("target")
    path = tmp_path / "link.txt"
    path.symlink_to(target)
    return path, [target]


def _dangling_link(tmp_path: Path) -> tuple[Path, list[Path]]:
    path = tmp_path / "dangling.txt"
    path.symlink_to(tmp_path / "absent.txt")
    return path, []


def _dir_link(tmp_path: Path) -> tuple[Path, list[Path]]:
    target = tmp_path / "dir"
    target.mkdir()
    path = tmp_path / "dirlink"
    path.symlink_to(target, target_is_directory=True)
    return path, [target]


def _fifo(tmp_path: Path) -> tuple[Path, list[Path]]:
    path = tmp_path / "pipe"
    os.mkfifo(path)
    return path, []


def _snapshot(tmp_path: Path) -> dict[str, tuple]:
    """Every entry under tmp_path (links not followed): its type, and a file's contents."""
    snap = {}
    for p in sorted(tmp_path.rglob("*")):
        st = os.lstat(p)
        content = p.read_text() if stat.S_ISREG(st.st_mode) else None
        link = os.readlink(p) if stat.S_ISLNK(st.st_mode) else None
        snap[str(p.relative_to(tmp_path))] = (stat.S_IFMT(st.st_mode), st.st_ino, content, link)
    return snap


REFUSED = {
    "directory": (_directory, "is a directory"),
    "link to a file": (_file_link, "not a regular file"),
    "dangling link": (_dangling_link, "not a regular file"),
    "link to a directory": (_dir_link, "not a regular file"),
    "fifo": (_fifo, "not a regular file"),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_a_destination_that_is_not_a_regular_file_is_refused(tmp_path, case):
    make, message = REFUSED[case]
    path, _ = make(tmp_path)
    before = _snapshot(tmp_path)
    with pytest.raises(pyro_moe.InputError, match=message):
        check_destination(path)
    with pytest.raises(pyro_moe.InputError, match=message), StagedOutputs() as out:
        out.stage(tmp_path / "first.txt").write_text("first")
        out.stage(path)
    with pytest.raises(pyro_moe.InputError, match=message):
        atomic_write(path, lambda p: p.write_text("written"))
    # nothing written: the destination, a link's target, and the directory are as they were
    assert _snapshot(tmp_path) == before


def test_a_link_and_its_target_stay_untouched(tmp_path):
    path, (target,) = _file_link(tmp_path)
    with pytest.raises(pyro_moe.InputError, match=re.escape(str(path))):
        atomic_write(path, lambda p: p.write_text("written"))
    assert path.is_symlink() and os.readlink(path) == str(target)
    assert target.read_text() == "target"
    assert _listing(tmp_path) == ["link.txt", "target.txt"]


def test_a_missing_directory_is_refused(tmp_path):
    path = tmp_path / "absent" / "out.txt"
    with pytest.raises(pyro_moe.InputError, match="does not exist"):
        check_destination(path)
    with pytest.raises(pyro_moe.InputError, match="does not exist"):
        atomic_write(path, lambda p: p.write_text("x"))
    with pytest.raises(pyro_moe.InputError, match="does not exist"), StagedOutputs() as out:
        out.stage(path)
    assert _listing(tmp_path) == []


def test_a_file_as_directory_is_refused(tmp_path):
    (tmp_path / "plain").write_text("a file")
    with pytest.raises(pyro_moe.InputError, match="does not exist"):
        check_destination(tmp_path / "plain" / "out.txt")
    assert _listing(tmp_path) == ["plain"]


def test_a_destination_that_became_a_directory_is_refused_at_commit(tmp_path):
    path = tmp_path / "late"
    with pytest.raises(pyro_moe.InputError, match="is a directory"), StagedOutputs() as out:
        out.stage(path).write_text("x")
        path.mkdir()
        out.commit()
    assert _listing(tmp_path) == ["late"] and path.is_dir()
    assert list(path.iterdir()) == []


# ---- errors while writing -------------------------------------------------------------


def test_atomic_write_turns_an_oserror_into_an_input_error(tmp_path):
    path = tmp_path / "report.txt"
    seen = []

    def write(tmp: Path) -> None:
        seen.append(tmp)
        tmp.write_text("partial")
        raise OSError(28, "No space left on device")

    with pytest.raises(pyro_moe.InputError, match="report.txt") as info:
        atomic_write(path, write)
    assert "No space left on device" in str(info.value)
    assert isinstance(info.value.__cause__, OSError)
    assert not seen[0].exists()
    assert _listing(tmp_path) == []


def test_atomic_write_keeps_the_old_file_when_the_writer_fails(tmp_path):
    path = tmp_path / "report.txt"
    path.write_text("old")

    def write(tmp: Path) -> None:
        tmp.write_text("partial")
        raise PermissionError(13, "Permission denied")

    with pytest.raises(pyro_moe.InputError, match="Permission denied"):
        atomic_write(path, write)
    assert path.read_text() == "old"
    assert _listing(tmp_path) == ["report.txt"]


def test_atomic_write_lets_other_errors_through(tmp_path):
    def write(tmp: Path) -> None:
        tmp.write_text("partial")
        raise KeyError("not an OSError")

    with pytest.raises(KeyError):
        atomic_write(tmp_path / "x.txt", write)
    assert _listing(tmp_path) == []


def test_a_refused_commit_writes_none_of_the_files(tmp_path):
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    with pytest.raises(pyro_moe.InputError), StagedOutputs() as out:
        out.stage(a).write_text("alpha")
        out.stage(b).write_text("beta")
        b.mkdir()  # something appeared at the second destination before the commit
        out.commit()
    assert not a.exists()


def test_a_trailing_slash_names_a_directory_not_a_file(tmp_path):
    with pytest.raises(pyro_moe.InputError, match="names a directory"):
        atomic_write(f"{tmp_path}/nope/", lambda p: p.write_text("x"))
    assert _listing(tmp_path) == []
