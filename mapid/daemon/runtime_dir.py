"""The private runtime directory and the connection file (PROTOCOL.md 1, DESIGN.md 9).

The directory's permissions are the security boundary of the local sockets, so the daemon
refuses to bind in one that another user owns or that others can enter.
"""

from __future__ import annotations

import json
import os
import stat
import tempfile
from pathlib import Path

from mapid.paths import CONNECTION_FILE, ConnectionInfo

USER_MODE = 0o700
SYSTEM_MODE = 0o750


class RuntimeDirError(Exception):
    """The runtime directory cannot be used safely; the message says how to fix it."""


def prepare(directory: Path, system: bool = False) -> None:
    """Create `directory` (mode 0700, or 0750 in system mode) or check the existing one."""
    mode = SYSTEM_MODE if system else USER_MODE
    try:
        directory.mkdir(mode=mode, parents=False)
        os.chmod(directory, mode)  # mkdir's mode is filtered by the umask
        return
    except FileNotFoundError:
        directory.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        return prepare(directory, system)
    except FileExistsError:
        pass
    info = os.lstat(directory)
    if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode):
        raise RuntimeDirError(
            f"runtime directory {directory} is not a directory; remove it and start again"
        )
    if info.st_uid != os.getuid():
        raise RuntimeDirError(
            f"runtime directory {directory} belongs to uid {info.st_uid}, not to this user "
            f"(uid {os.getuid()}); remove it, or set MAPID_RUNTIME_DIR to a directory of yours"
        )
    loose = stat.S_IMODE(info.st_mode) & ~mode
    if loose:
        raise RuntimeDirError(
            f"runtime directory {directory} has mode {stat.S_IMODE(info.st_mode):04o}, "
            f"looser than {mode:04o}; run `chmod {mode:o} {directory}`"
        )


def write_connection_file(directory: Path, info: ConnectionInfo) -> Path:
    """Write the connection file 0600 with an atomic rename, so readers never see half."""
    target = directory / CONNECTION_FILE
    fd, tmp = tempfile.mkstemp(prefix=".mapid.json.", dir=directory)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(info.to_mapping(), handle)
            handle.write("\n")
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def remove_connection_file(directory: Path, pid: int) -> None:
    """Remove the connection file if it is still ours."""
    target = directory / CONNECTION_FILE
    try:
        data = json.loads(target.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    if isinstance(data, dict) and data.get("pid") == pid:
        target.unlink(missing_ok=True)


def live_daemon_pid(directory: Path) -> int | None:
    """The pid of another daemon that still runs on this directory, if any."""
    try:
        data = json.loads((directory / CONNECTION_FILE).read_text(encoding="utf-8"))
        pid = int(data["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if pid == os.getpid():
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        return pid
    return pid
