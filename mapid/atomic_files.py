"""Files that are either the old version or the new one, never half of each.

Every file mapid writes whole (profiles and mapid.toml, the pending-deletions list, the
connection file, CURVE keys, the Maildir folder index and uid file, vCards) lands through
here: a temporary file beside the target (dot-prefixed, so globs and watchers skip it),
fsynced, renamed over the target (or beside it with no-replace semantics), and the
directory fsynced so the rename itself survives a crash. A failure leaves the target as
it was and removes the temporary file.

In the shared core (not the daemon) because the providers need it too and may not import
the daemon (tests/test_layout.py).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import cast

_DIR_FSYNC_REFUSED = frozenset({errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP})
"""What some filesystems (and FUSE mounts) answer to fsync on a directory: nothing to do."""


def fsync_dir(directory: str | os.PathLike[str]) -> None:
    """Make the renames, links and removals made in `directory` durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in _DIR_FSYNC_REFUSED:
            raise
    finally:
        os.close(fd)


def unlink_quietly(path: str | os.PathLike[str]) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def temp_beside(target: Path, mode: int = 0o600) -> tuple[int, Path]:
    """An open, dot-prefixed temporary file in `target`'s directory, with `mode`."""
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        os.fchmod(fd, mode)
    except BaseException:
        os.close(fd)
        os.unlink(name)
        raise
    return fd, Path(name)


def write_temp(
    target: Path,
    data: bytes,
    *,
    mode: int = 0o600,
    owner: os.stat_result | None = None,
    durable: bool = True,
) -> Path:
    """`data` in a temporary file beside `target`, ready to be renamed into place.

    With `owner` (the stat of the file it replaces), owner and group are kept where we are
    allowed to (say root:mapid 0640 in /etc/mapid)."""
    fd, tmp = temp_beside(target, mode)
    try:
        with os.fdopen(fd, "wb") as file:
            if owner is not None:
                _copy_owner(file.fileno(), owner)
            file.write(data)
            if durable:
                file.flush()
                os.fsync(file.fileno())
    except BaseException:
        unlink_quietly(tmp)
        raise
    return tmp


def _copy_owner(fd: int, owner: os.stat_result) -> None:
    mine = os.fstat(fd)
    if (mine.st_uid, mine.st_gid) == (owner.st_uid, owner.st_gid):
        return
    try:
        os.fchown(fd, owner.st_uid, owner.st_gid)
    except PermissionError:
        with contextlib.suppress(PermissionError):
            os.fchown(fd, -1, owner.st_gid)


def write_atomic(
    target: str | os.PathLike[str],
    data: bytes,
    *,
    mode: int = 0o600,
    durable: bool = True,
) -> None:
    """Replace `target` with `data` in one step; with `durable`, fsync file and directory.

    `mode` is the new file's permission bits (0o600 by default: mapid's files are private
    unless said otherwise)."""
    path = Path(target)
    tmp = write_temp(path, data, mode=mode, durable=durable)
    try:
        os.replace(tmp, path)
    except BaseException:
        unlink_quietly(tmp)
        raise
    if durable:
        fsync_dir(path.parent)


def create_atomic(target: str | os.PathLike[str], data: bytes, *, mode: int = 0o600) -> None:
    """Create `target` with `data`, whole and durable; `FileExistsError` if it exists, and
    then nothing is changed (a file someone created meanwhile is never clobbered)."""
    path = Path(target)
    tmp = write_temp(path, data, mode=mode)
    landed = False
    try:
        atomic_rename(tmp, path)
        landed = True
    finally:
        if not landed:
            unlink_quietly(tmp)


def atomic_rename(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
    """Rename `src` to `dst`, refusing (`FileExistsError`) if `dst` exists; durable.

    Linux `renameat2(RENAME_NOREPLACE)` does this atomically. Where it is missing (no glibc
    wrapper, old kernel, a filesystem without the flag) a hard link plus unlink is just as
    safe, though for a moment both names exist. Where hard links are not possible either
    (some FUSE filesystems, directories) the fallback checks and then renames, which can race
    with a file created in between; mapid's files live on local filesystems, so that is rare.
    """
    _rename_noreplace(os.fspath(src), os.fspath(dst))
    fsync_dir(Path(dst).parent)
    if Path(src).parent != Path(dst).parent:
        fsync_dir(Path(src).parent)


def atomic_delete(path: str | os.PathLike[str]) -> None:
    """Remove `path` (a symlink itself, not its target) and make the removal durable."""
    os.unlink(path)
    fsync_dir(Path(path).parent)


AT_FDCWD = -100
RENAME_NOREPLACE = 1
_NO_RENAMEAT2 = {errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP}
_NO_HARD_LINKS = {errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS, errno.EMLINK}


def _load_renameat2() -> Callable[..., int] | None:
    try:
        function = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p]
    function.argtypes += [ctypes.c_uint]
    function.restype = ctypes.c_int
    return cast("Callable[..., int]", function)


_renameat2 = _load_renameat2()


def _rename_noreplace(src: str, dst: str) -> None:
    if _renameat2 is not None:
        if _renameat2(AT_FDCWD, os.fsencode(src), AT_FDCWD, os.fsencode(dst), RENAME_NOREPLACE):
            code = ctypes.get_errno()
            if code not in _NO_RENAMEAT2:
                raise OSError(code, os.strerror(code), src, None, dst)
        else:
            return
    link_then_unlink(src, dst)


def link_then_unlink(src: str, dst: str) -> None:
    """The no-replace rename where renameat2 is missing (public so tests can run it)."""
    try:
        os.link(src, dst, follow_symlinks=False)
    except OSError as exc:
        if exc.errno not in _NO_HARD_LINKS:
            raise
        if os.path.lexists(dst):
            raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), src, None, dst) from None
        os.rename(src, dst)
        return
    os.unlink(src)
