"""Root's reads and writes inside a printer's folders refuse links and special files."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import pytest

from octobrixd.system import nofollow
from octobrixd.system.nofollow import UnsafePathError


@pytest.fixture
def top(tmp_path: Path) -> Path:
    (tmp_path / "basedir" / "data").mkdir(parents=True)
    (tmp_path / "basedir" / "config.yaml").write_text("a: 1\n")
    (tmp_path / "secret").write_text("root only\n")
    return tmp_path


def test_reads_a_regular_file(top: Path) -> None:
    assert nofollow.read_text(top, "basedir/config.yaml") == "a: 1\n"


def test_a_link_as_the_file_is_refused(top: Path) -> None:
    (top / "basedir" / "users.yaml").symlink_to(top / "secret")
    with pytest.raises(UnsafePathError, match="it is a link"):
        nofollow.read_text(top, "basedir/users.yaml")


def test_a_link_on_the_way_is_refused(top: Path) -> None:
    (top / "basedir" / "logs").symlink_to(top / "basedir" / "data")
    (top / "basedir" / "data" / "x").write_text("reachable only through the link")
    with pytest.raises(UnsafePathError, match="link or not a folder"):
        nofollow.read_text(top, "basedir/logs/x")


def test_a_fifo_is_refused_without_hanging(top: Path) -> None:
    os.mkfifo(top / "basedir" / "fifo.yaml")
    done = threading.Event()

    def read() -> None:
        with pytest.raises(UnsafePathError, match="not a regular file"):
            nofollow.read_text(top, "basedir/fifo.yaml")
        done.set()

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    thread.join(timeout=10)
    assert done.is_set(), "reading a FIFO hung"


def test_a_missing_file_is_file_not_found(top: Path) -> None:
    with pytest.raises(FileNotFoundError):
        nofollow.read_text(top, "basedir/nothing.yaml")


def test_a_file_larger_than_the_limit_is_refused(top: Path) -> None:
    (top / "basedir" / "big").write_bytes(b"x" * 101)
    assert nofollow.read_bytes(top, "basedir/big", limit=101) == b"x" * 101
    with pytest.raises(UnsafePathError, match="larger than 100 bytes"):
        nofollow.read_bytes(top, "basedir/big", limit=100)


def test_relative_paths_only(top: Path) -> None:
    for bad in ("/etc/shadow", "basedir/../secret", ""):
        with pytest.raises(ValueError):
            nofollow.read_text(top, bad)


def test_write_replaces_a_planted_link_without_writing_through_it(top: Path) -> None:
    planted = top / "basedir" / "config.yaml"
    planted.unlink()
    planted.symlink_to(top / "secret")
    nofollow.write_atomic(top, "basedir/config.yaml", "b: 2\n", mode=0o640, uid=os.getuid(), gid=os.getgid())
    assert (top / "secret").read_text() == "root only\n"
    assert not planted.is_symlink()
    assert planted.read_text() == "b: 2\n"
    assert planted.stat().st_mode & 0o777 == 0o640
    assert [p.name for p in (top / "basedir").iterdir() if p.name.endswith(".tmp")] == []


def test_write_refuses_a_linked_folder(top: Path) -> None:
    (top / "elsewhere").mkdir()
    (top / "basedir" / "plugins").symlink_to(top / "elsewhere")
    with pytest.raises(UnsafePathError):
        nofollow.write_atomic(top, "basedir/plugins/x.py", "print(1)\n")
    assert list((top / "elsewhere").iterdir()) == []


def test_make_dir_sets_mode_and_refuses_a_link(top: Path) -> None:
    nofollow.make_dir(top, "home", mode=0o700)
    assert (top / "home").is_dir() and (top / "home").stat().st_mode & 0o777 == 0o700
    (top / "elsewhere").mkdir(mode=0o755)
    (top / "elsewhere").chmod(0o755)
    (top / "basedir" / "uploads").symlink_to(top / "elsewhere")
    with pytest.raises(UnsafePathError):
        nofollow.make_dir(top, "basedir/uploads", mode=0o700)
    assert (top / "elsewhere").stat().st_mode & 0o777 == 0o755
    assert (top / "basedir" / "uploads").is_symlink()


def test_list_dir_reports_links_as_links(top: Path) -> None:
    (top / "basedir" / "link").symlink_to(top / "secret")
    names = dict(nofollow.list_dir(top, "basedir"))
    assert set(names) == {"config.yaml", "data", "link"}
    assert stat.S_ISLNK(names["link"].st_mode)
    assert nofollow.is_regular_file(top, "basedir/config.yaml")
    assert not nofollow.is_regular_file(top, "basedir/link")
