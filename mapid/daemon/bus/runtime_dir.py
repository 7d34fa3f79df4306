"""The private runtime directory and the connection file (docs/protocol.md 1, docs/design.md 9).

The directory's permissions are the security boundary of the local sockets, so the daemon
refuses to bind in one that another user owns or that others can enter. In system mode the
directory is 0750 and its group (`mapid`, or the daemon's own group) is who may connect;
systemd's RuntimeDirectory= with the unit's User=, Group= and RuntimeDirectoryMode=0750
makes exactly such a directory.
"""

from __future__ import annotations

import contextlib
import grp
import json
import os
import pwd
import stat
from pathlib import Path

from mapid.atomic_files import write_atomic
from mapid.paths import CONNECTION_FILE, ConnectionInfo

USER_MODE = 0o700
SYSTEM_MODE = 0o750
SYSTEM_GROUP = "mapid"
"""The group whose members may use the machine's daemon (systemd/sysusers.d/mapid.conf)."""


class RuntimeDirError(Exception):
    """The runtime directory cannot be used safely; the message says how to fix it."""


def _group_id(name: str) -> int | None:
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        return None


def _name(table: str, number: int) -> str:
    try:
        if table == "user":
            return pwd.getpwuid(number).pw_name
        return grp.getgrgid(number).gr_name
    except KeyError:
        return str(number)


def allowed_groups() -> set[int]:
    """The groups a system-mode directory may have: the daemon's own and `mapid`."""
    groups = {os.getegid()}
    mapid = _group_id(SYSTEM_GROUP)
    if mapid is not None:
        groups.add(mapid)
    return groups


def prepare(directory: Path, system: bool = False) -> None:
    """Create `directory` (mode 0700, or 0750 in system mode) or check the existing one."""
    mode = SYSTEM_MODE if system else USER_MODE
    try:
        directory.mkdir(mode=mode, parents=False)
        os.chmod(directory, mode)  # mkdir's mode is filtered by the umask
        group = _group_id(SYSTEM_GROUP) if system else None
        if group is not None and group != os.stat(directory).st_gid:
            # Root or a member of mapid hands the sockets to the group; anyone else keeps
            # their own group, which allowed_groups() accepts.
            with contextlib.suppress(PermissionError):
                os.chown(directory, -1, group)
        return
    except FileNotFoundError:
        directory.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        return prepare(directory, system)
    except FileExistsError:
        pass
    check(directory, system)


def check(directory: Path, system: bool = False) -> None:
    """Refuse, as `prepare` would, an existing runtime directory; a missing one is fine.

    This writes nothing, so the daemon runs it before anything else it does at start: a
    start that will be refused must not have written a default profile first.
    """
    mode = SYSTEM_MODE if system else USER_MODE
    try:
        info = os.lstat(directory)
    except FileNotFoundError:
        return
    if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode):
        raise RuntimeDirError(
            f"runtime directory {directory} is not a directory; remove it and start again"
        )
    if info.st_uid != os.getuid():
        owner, me = _name("user", info.st_uid), _name("user", os.getuid())
        raise RuntimeDirError(
            f"runtime directory {directory} belongs to {owner} (uid {info.st_uid}), not to "
            f"{me} (uid {os.getuid()}) who runs the daemon; run `chown {me} {directory}` or "
            "remove it, or set MAPID_RUNTIME_DIR to a directory of yours"
        )
    loose = stat.S_IMODE(info.st_mode) & ~mode
    if loose:
        raise RuntimeDirError(
            f"runtime directory {directory} has mode {stat.S_IMODE(info.st_mode):04o}, "
            f"looser than {mode:04o}; run `chmod {mode:o} {directory}`"
        )
    if system and stat.S_IMODE(info.st_mode) & 0o070 and info.st_gid not in allowed_groups():
        group = _group_id(SYSTEM_GROUP)
        fix = SYSTEM_GROUP if group is not None else _name("group", os.getegid())
        raise RuntimeDirError(
            f"runtime directory {directory} has group {_name('group', info.st_gid)}, whose "
            f"members would reach the daemon's sockets; run `chgrp {fix} {directory}` "
            f"(or `chmod 700 {directory}`)"
        )


def write_connection_file(directory: Path, info: ConnectionInfo, system: bool = False) -> Path:
    """Write the connection file with an atomic rename, so readers never see half.

    0600, or 0640 in system mode, where the directory's group are the clients that read it.
    """
    target = directory / CONNECTION_FILE
    data = (json.dumps(info.to_mapping()) + "\n").encode("utf-8")
    # The runtime directory is a tmpfs that does not outlive the boot: no fsync.
    write_atomic(target, data, mode=0o640 if system else 0o600, durable=False)
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
