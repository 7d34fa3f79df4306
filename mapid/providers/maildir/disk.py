"""The Maildir on disk: blocking file operations only (they run in the daemon's thread pool).

Opening a tree (its `mapid.uid`, cur/new/tmp, the standard folders), Maildir keys, and
writes the Maildir way: written in tmp/, fsynced (or left to the flusher, flush.py), linked
into new/ or cur/ and never over an existing file. No asyncio and no MAPI objects here.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import mailbox
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from mapid.atomic_files import fsync_dir
from mapid.errors import ErrorCode, MapiError
from mapid.providers import store_uid
from mapid.providers.maildir.flush import Durable
from mapid.providers.maildir.index import FolderIndex, join_name, split_name
from mapid.providers.maildir.names import STANDARD_FOLDERS
from mapid.providers.maildir.tree import folder_path, is_ready, make_folder_dirs

__all__ = [
    "UID_FILE",
    "Locked",
    "MaildirState",
    "load_or_create_uid",
    "move_file",
    "new_key",
    "open_maildir",
    "place_message",
    "same_bytes",
    "where",
    "write_message",
]

UID_FILE = "mapid.uid"


@dataclass(frozen=True)
class MaildirState:
    """What logon learns from the tree."""

    root: Path
    uid: bytes
    inbox_count: int


def load_or_create_uid(root: Path) -> bytes:
    """The store's MAPIUID from `mapid.uid` in the root, written on first use."""
    return store_uid.load_or_create_uid(root / UID_FILE)


def _count_keys(folder: Path) -> int:
    """Messages in a folder's cur/ and new/, by name only: len(mailbox.Maildir) stats
    every file, 0.4 s of each logon on a folder of 100 000."""
    keys = {
        name.partition(":")[0]
        for sub in ("cur", "new")
        for name in os.listdir(folder / sub)
        if not name.startswith(".")
    }
    return len(keys)


_OPENED: dict[Path, tuple[tuple[int, ...], MaildirState]] = {}
"""The last full open of each root, with the stamp of the directories it looked at."""
RACY_NS = 1_000_000_000
"""A stamp this close to the present is not trusted: a change in the same clock tick of the
file system would leave the directory's mtime as it was (git's "racily clean")."""


def _stamp(root: Path) -> tuple[int, ...] | None:
    """Inode and mtime of the directories open_maildir reads or makes, or None if one is
    missing. Removing cur/ or new/, a standard folder or `mapid.uid`, or delivering a
    message to the Inbox changes one of them."""
    top = os.fspath(root)
    paths = [top, f"{top}/cur", f"{top}/new"]
    paths.extend(f"{top}/.{name}" for name in STANDARD_FOLDERS)
    stamp: list[int] = []
    try:
        for path in paths:
            st = os.stat(path)
            stamp.append(st.st_ino)
            stamp.append(st.st_mtime_ns)
    except OSError:
        return None
    if time.time_ns() - max(stamp[1::2]) < RACY_NS:
        return None
    return tuple(stamp)


def open_maildir(root: Path, *, reuse: bool = False) -> MaildirState:
    """Create what is missing of the tree (root, cur/new/tmp, standard folders) and read it.

    A Maildir is made only where the path is missing or an empty directory. An existing
    directory with files but no cur/ and new/ is somebody's other data (`/etc`, a thesis),
    so it is refused and nothing is written into it.

    `reuse` (a logon) answers from the last full open of `root` when none of the
    directories it looked at changed since (`_stamp`): nine stat calls instead of some
    forty system calls and the Inbox listing, which were a third of a logon's CPU with
    many sessions of one profile. validate_state opens in full.
    """
    stamp = _stamp(root)
    if reuse and stamp is not None:
        cached = _OPENED.get(root)
        if cached is not None and cached[0] == stamp:
            return cached[1]
    state = _open_maildir(root)
    if stamp is not None and stamp == _stamp(root):  # nothing changed while it was read
        _OPENED[root] = (stamp, state)
    else:
        _OPENED.pop(root, None)
    return state


def _open_maildir(root: Path) -> MaildirState:
    if root.exists() and not root.is_dir():
        raise MapiError(ErrorCode.MAPI_E_NOT_FOUND, f"Maildir path {root} is not a folder")
    refuse_foreign_directory(root)
    try:
        root.parent.mkdir(parents=True, exist_ok=True)
        mailbox.Maildir(root, create=True)
        for sub in ("cur", "new", "tmp"):  # mailbox leaves an existing empty folder as it is
            (root / sub).mkdir(mode=0o700, exist_ok=True)
        for name in STANDARD_FOLDERS:  # also one left without cur/ or new/: not a folder else
            if not is_ready(folder_path(root, name)):
                make_folder_dirs(root, name)
        return MaildirState(root.resolve(), load_or_create_uid(root), _count_keys(root))
    except PermissionError as exc:
        raise MapiError(ErrorCode.MAPI_E_NO_ACCESS, f"Maildir {root}: {exc}") from exc
    except OSError as exc:
        raise MapiError(ErrorCode.MAPI_E_CALL_FAILED, f"Maildir {root}: {exc}") from exc


def refuse_foreign_directory(root: Path) -> None:
    """MAPI_E_NOT_FOUND for an existing, non-empty directory that is not a Maildir."""
    try:
        if is_ready(root) or (root / UID_FILE).exists():
            return  # a Maildir, or one of ours that lost its cur/ or new/
        with os.scandir(root) as entries:
            if next(entries, None) is None:
                return  # an empty directory becomes the Maildir
    except FileNotFoundError:
        return  # a missing path is made
    except PermissionError as exc:
        raise MapiError(ErrorCode.MAPI_E_NO_ACCESS, f"Maildir {root}: {exc}") from exc
    raise MapiError(
        ErrorCode.MAPI_E_NOT_FOUND,
        f"{root} is not a Maildir (it has no cur/ and new/) and is not empty: mapid makes a"
        " Maildir only in a missing or empty directory; point the service's path at a"
        " Maildir or at a new directory",
    )


_COUNTER = itertools.count(1)
_COUNTER_LOCK = threading.Lock()


def new_key() -> str:
    """A Maildir key as the spec makes one: time, microseconds, pid, a counter, the host."""
    now = time.time()
    with _COUNTER_LOCK:
        count = next(_COUNTER)
    return f"{int(now)}.M{int(now % 1 * 1e6):06d}P{os.getpid()}Q{count}.{_key_host()}"


@functools.cache
def _key_host() -> str:
    """The host part of keys, read once (the pid, the counter and the time keep keys
    unique even if the host is renamed meanwhile)."""
    return socket.gethostname().replace("/", r"\057").replace(":", r"\072")


def _file_name(key: str, sub: str, flags: str) -> str:
    return key if sub == "new" else join_name(key, flags)


def write_message(
    folder: Path,
    data: bytes,
    *,
    sub: str,
    flags: str = "",
    key: str | None = None,
    taken: Callable[[str], bool] | None = None,
) -> tuple[str, str]:
    """Deliver `data` into a folder the Maildir way: written and fsynced in tmp/, then
    linked into `sub` (never over an existing file) and the tmp name removed. Returns
    (key, file name); a `key` that `taken` says is in use gets a fresh one."""
    use, name, _ = _write(folder, data, sub=sub, flags=flags, key=key, taken=taken, sync=True)
    fsync_dir(folder / sub)
    return use, name


def place_message(
    folder: Path,
    data: bytes,
    *,
    sub: str,
    flags: str = "",
    key: str | None = None,
    taken: Callable[[str], bool] | None = None,
) -> tuple[str, str, int]:
    """write_message without its fsyncs: the whole file is in place (a killed daemon loses
    nothing), and the caller hands the returned descriptor and the folder `sub` to the
    flusher, which makes them durable with other writes in one disk commit."""
    return _write(folder, data, sub=sub, flags=flags, key=key, taken=taken, sync=False)


def _write(
    folder: Path,
    data: bytes,
    *,
    sub: str,
    flags: str,
    key: str | None,
    taken: Callable[[str], bool] | None,
    sync: bool,
) -> tuple[str, str, int]:
    """(key, file name, descriptor left open when not `sync`, else -1)."""
    if key is not None and taken is not None and taken(key):
        key = None
    for _ in range(100):
        use = key or new_key()
        tmp = folder / "tmp" / use
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            key = None
            continue
        keep = False
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            if sync:
                os.fsync(fd)
            name = _file_name(use, sub, flags)
            try:
                os.link(tmp, folder / sub / name)
            except FileExistsError:
                key = None
                continue
            keep = not sync
        finally:
            if not keep:
                os.close(fd)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        return use, name, fd if keep else -1
    raise MapiError(ErrorCode.MAPI_E_CALL_FAILED, f"cannot find a free Maildir key in {folder}")


def same_bytes(path: Path, data: bytes) -> bool:
    try:
        return path.read_bytes() == data
    except FileNotFoundError:
        return False


def where(index: FolderIndex, key: str) -> tuple[str, str]:
    """Where a message's file is now (locate lists the folder for a key it does not
    know, so a message renamed by mutt a moment ago is found too)."""
    found = index.locate(key)
    if found is None:
        raise MapiError(
            ErrorCode.MAPI_E_NOT_FOUND,
            "no such message (deleted or moved meanwhile)",
        )
    return found


def move_file(
    src: FolderIndex,
    key: str,
    dst: FolderIndex,
    *,
    flags: str | None = None,
    durable: Durable | None = None,
) -> tuple[str, str]:
    """Rename a message into another folder, keeping its key unless the target has it."""
    sub, name = where(src, key)
    keep = split_name(name)[1] if flags is None else flags
    new = key if not dst.has(key) else new_key()
    target_name = join_name(new, keep)
    os.rename(src.path / sub / name, dst.path / "cur" / target_name)
    if durable is None:
        fsync_dir(dst.path / "cur")
        fsync_dir(src.path / sub)
    else:
        durable.add(None, dst.path / "cur", src.path / sub)
    src.note_gone(key, quiet=True)
    dst.note_file(new, "cur", target_name, quiet=True)
    return new, target_name


class Locked:
    """Holds the locks of several folder indexes, always taken in the same order."""

    def __init__(self, *indexes: FolderIndex) -> None:
        self._indexes = sorted({id(i): i for i in indexes}.values(), key=lambda i: str(i.path))
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> None:
        for index in self._indexes:
            self._stack.enter_context(index.lock)

    def __exit__(self, *exc: object) -> None:
        self._stack.close()
