"""A logon's open of a Maildir reuses the last full open only while nothing it looked at
changed: a folder removed is made again, a message delivered is counted, and a change in
the same clock tick as the last open (the "racily clean" case) is not missed."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from mapid.providers.maildir.disk import RACY_NS, open_maildir
from mapid.providers.maildir.names import STANDARD_FOLDERS


def _age(root: Path, seconds: float) -> None:
    """Every directory of the tree as if last changed `seconds` ago."""
    then = time.time_ns() - int(seconds * 1e9)
    for path in [root, *[p for p in root.rglob("*") if p.is_dir()]]:
        os.utime(path, ns=(then, then))


def _deliver(root: Path, name: str) -> None:
    (root / "new" / name).write_bytes(b"Subject: hi\n\nbody\n")


def test_an_unchanged_tree_is_answered_from_the_last_open(tmp_path: Path) -> None:
    root = tmp_path / "Mail"
    first = open_maildir(root)
    _age(root, 10)
    full = open_maildir(root)  # not racy any more: this one is remembered
    assert full == first
    assert open_maildir(root, reuse=True) is full


def test_a_removed_standard_folder_is_made_again(tmp_path: Path) -> None:
    root = tmp_path / "Mail"
    open_maildir(root)
    _age(root, 10)
    open_maildir(root)
    for name in STANDARD_FOLDERS:
        shutil.rmtree(root / f".{name}")
    open_maildir(root, reuse=True)
    for name in STANDARD_FOLDERS:
        assert (root / f".{name}" / "cur").is_dir()
        assert (root / f".{name}" / "new").is_dir()


def test_a_removed_cur_of_a_folder_is_made_again(tmp_path: Path) -> None:
    root = tmp_path / "Mail"
    open_maildir(root)
    _age(root, 10)
    open_maildir(root)
    (root / ".Sent" / "cur").rmdir()
    open_maildir(root, reuse=True)
    assert (root / ".Sent" / "cur").is_dir()


def test_a_delivered_message_is_counted(tmp_path: Path) -> None:
    root = tmp_path / "Mail"
    open_maildir(root)
    _age(root, 10)
    assert open_maildir(root).inbox_count == 0
    _deliver(root, "1.M1P1Q1.host")
    assert open_maildir(root, reuse=True).inbox_count == 1


def test_a_change_in_the_same_tick_as_the_last_open_is_not_missed(tmp_path: Path) -> None:
    root = tmp_path / "Mail"
    open_maildir(root)
    _age(root, RACY_NS / 1e9 / 4)  # changed a moment ago: too recent to trust
    new = root / "new"
    before = os.stat(new)
    assert open_maildir(root).inbox_count == 0
    _deliver(root, "1.M1P1Q1.host")
    os.utime(new, ns=(before.st_atime_ns, before.st_mtime_ns))  # the tick did not move
    assert open_maildir(root, reuse=True).inbox_count == 1
