"""The daemon's own configuration, `mapid.toml` (docs/design.md 3).

Every key has a default, so a missing file is a valid configuration. A broken file is
reported with its line and the defaults (or, on reload, the last good values) stay in force.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from mapid import paths
from mapid.daemon.config import remote_config
from mapid.daemon.config.remote_config import RemoteConfig

CONFIG_FILE = "mapid.toml"
PROFILES_DIR = "profiles"
LOG_LEVELS = ("debug", "info", "warning", "error")
WATCH_MODES = ("auto", "poll", "off")


@dataclass(frozen=True)
class ConfigProblem:
    """A problem in one configuration file, for reload reports and `mapid check-config`."""

    file: str
    message: str
    line: int | None = None
    blocks_start: bool = False
    """The daemon must not start with it (a `[remote]` problem: no TCP without CURVE)."""

    def to_wire(self) -> dict[str, Any]:
        data: dict[str, Any] = {"file": self.file, "message": self.message}
        if self.line is not None:
            data["line"] = self.line
        return data

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        return f"{where}: {self.message}"


@dataclass(frozen=True)
class DaemonConfig:
    config_dir: Path
    state_dir: Path
    runtime_dir: Path
    system: bool = False
    default_profile: str | None = None
    lease_s: float = 60.0
    events_hwm: int = 10_000
    log_level: str = "info"
    max_in_flight: int = 64
    """Requests one client may have running at once; more get MAPI_E_BUSY."""
    max_handles: int = 10_000
    watch: str = "auto"
    """How to notice edits: "auto" (inotify, polling when out of watches), "poll" (network
    file systems without inotify), or "off" (SIGHUP and mapictl reload only)."""
    provider_timeout: float = 30.0
    """How long one provider may take to log on or off before it counts as failed."""
    spooler_retry_s: float = 30.0
    """The spooler's first wait after a temporary send failure (doubled after each)."""
    spooler_retry_max_s: float = 3600.0
    """The longest wait between two tries of a transport that keeps failing."""
    shared_linger_s: float = 10.0
    """How long a shared provider's logon (a Maildir store, a vCard book, an SMTP transport)
    stays up after the last session of its profile logged off, for the next one (0: it
    logs off with the last session)."""
    remote: RemoteConfig | None = None
    """`[remote]`: TCP endpoints with CURVE, bound at start beside the ipc sockets."""
    metrics_listen: tuple[str, int] | None = None
    """`metrics_listen = "127.0.0.1:9464"`: where /metrics is served (None: not at all)."""
    outbox_alert_s: float = 900.0
    """A message waiting in an Outbox longer than this is stuck mail: the spooler's row,
    `mapictl status` and (with desktop_notifications) the desktop say so."""
    desktop_notifications: bool = False
    """Tell the desktop (org.freedesktop.Notifications on the session bus) of new mail, a
    send that failed for good and stuck mail."""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def config_file(self) -> Path:
        return self.config_dir / CONFIG_FILE

    @property
    def profiles_dir(self) -> Path:
        return self.config_dir / PROFILES_DIR

    @classmethod
    def defaults(cls, system: bool = False) -> DaemonConfig:
        return cls(
            config_dir=paths.config_dir(system),
            state_dir=paths.state_dir(system),
            runtime_dir=paths.runtime_dir(system),
            system=system,
        )


_LINE_RE = re.compile(r"at line (\d+)")

MAX_FILE_BYTES = 1024 * 1024
"""The largest `mapid.toml` or profile file read. A real one is a few kilobytes; without a
cap one 47 MB file took the daemon to 975 MB at every reload."""


class FileTooLarge(Exception):
    """A configuration file over MAX_FILE_BYTES: reported as that file's problem."""

    def __init__(self, path: Path, size: int) -> None:
        super().__init__(
            f"file is {size} bytes, more than the {MAX_FILE_BYTES} bytes (1 MiB) a"
            " configuration file may have; not read"
        )


def read_config_text(path: Path) -> str:
    """The text of one configuration file, refusing one over MAX_FILE_BYTES before reading it.

    Raises OSError, UnicodeDecodeError or FileTooLarge.
    """
    with open(path, "rb") as file:
        size = os.fstat(file.fileno()).st_size
        if size > MAX_FILE_BYTES:
            raise FileTooLarge(path, size)
        data = file.read(MAX_FILE_BYTES + 1)  # it may have grown since the fstat
    if len(data) > MAX_FILE_BYTES:
        raise FileTooLarge(path, len(data))
    return data.decode("utf-8")


def parse_toml(file: Path, text: str) -> tuple[dict[str, Any] | None, ConfigProblem | None]:
    """tomllib's reading of `text`, or the problem that names the file and why.

    Nesting deep enough to exhaust Python's recursion (`a = [[[...]]]` 3 000 deep) is that
    file's problem like a syntax error, never an exception out of a reload.
    """
    try:
        return tomllib.loads(text), None
    except tomllib.TOMLDecodeError as exc:
        return None, toml_problem(file, exc)
    except RecursionError:
        return None, ConfigProblem(str(file), "not readable: values are nested too deeply")


def toml_problem(file: Path, exc: tomllib.TOMLDecodeError) -> ConfigProblem:
    """A TOML syntax error with the line tomllib names."""
    match = _LINE_RE.search(str(exc))
    line = int(match.group(1)) if match else None
    return ConfigProblem(str(file), f"not valid TOML: {exc}", line)


def find_line(text: str, key: str) -> int | None:
    """The line of the first `key =` (also `"key" =`, `a.key =`, or inside an inline table),
    to point a problem at it."""
    name = rf"""["']?{re.escape(key)}["']?"""
    for pattern in (rf"^[ \t]*{name}[ \t]*=", rf"(?:^|[\s{{,.]){name}[ \t]*="):
        for number, row in enumerate(text.splitlines(), 1):
            if re.search(pattern, row):
                return number
    return None


def _number(
    data: dict[str, Any], key: str, kind: type, low: float, problems: list[str]
) -> Any | None:
    if key not in data:
        return None
    value = data[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < low:
        problems.append(f"{key} must be a number >= {low:g}")
        return None
    if kind is int and not isinstance(value, int):
        problems.append(f"{key} must be a whole number")
        return None
    return kind(value)


def parse_listen(value: object) -> tuple[str, int] | None:
    """("host", port) of "host:port" or "[v6]:port"; None when it is not one."""
    if not isinstance(value, str) or ":" not in value:
        return None
    host, _, port = value.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        return None
    return host, int(port)


def load_daemon_config(base: DaemonConfig) -> tuple[DaemonConfig, list[ConfigProblem]]:
    """Read `mapid.toml`; `base` gives the directories and, where the file is broken, the
    values that stay in force (the whole of `base` when the file does not parse)."""
    file = base.config_file
    try:
        text = read_config_text(file)
    except FileNotFoundError:  # no file: every key takes its default
        return DaemonConfig(base.config_dir, base.state_dir, base.runtime_dir, base.system), []
    except OSError as exc:
        return base, [ConfigProblem(str(file), f"cannot read: {exc.strerror}")]
    except (UnicodeDecodeError, FileTooLarge) as exc:
        return base, [ConfigProblem(str(file), f"cannot read: {exc}")]
    data, problem = parse_toml(file, text)
    if data is None:
        assert problem is not None
        return base, [problem]
    messages: list[str] = []
    changes: dict[str, Any] = {}
    if "default_profile" in data:
        value = data["default_profile"]
        if isinstance(value, str) and value:
            changes["default_profile"] = value
        else:
            messages.append("default_profile must be a profile name")
    for key, kind, low in (
        ("lease_s", float, 0),
        ("events_hwm", int, 1),
        ("max_in_flight", int, 1),
        ("max_handles", int, 1),
        ("provider_timeout", float, 0.1),
        ("spooler_retry_s", float, 0.1),
        ("spooler_retry_max_s", float, 0.1),
        ("shared_linger_s", float, 0),
        ("outbox_alert_s", float, 1),
    ):
        value = _number(data, key, kind, low, messages)
        if value is not None:
            changes[key] = value
    if "watch" in data:
        if data["watch"] in WATCH_MODES:
            changes["watch"] = data["watch"]
        else:
            messages.append(f"watch must be one of {', '.join(WATCH_MODES)}")
    if "desktop_notifications" in data:
        if isinstance(data["desktop_notifications"], bool):
            changes["desktop_notifications"] = data["desktop_notifications"]
        else:
            messages.append("desktop_notifications must be true or false")
    if "metrics_listen" in data:
        listen = parse_listen(data["metrics_listen"])
        if listen is None:
            messages.append(
                'metrics_listen must be "host:port" (e.g. "127.0.0.1:9464"; "[::1]:9464")'
            )
        else:
            changes["metrics_listen"] = listen
    if "log_level" in data:
        level = data["log_level"]
        if isinstance(level, str) and level.lower() in LOG_LEVELS:
            changes["log_level"] = level.lower()
        else:
            messages.append(f"log_level must be one of {', '.join(LOG_LEVELS)}")
    known = {"default_profile", "log_level", "watch", "lease_s", "events_hwm", "max_in_flight"}
    known |= {"max_handles", "provider_timeout", "spooler_retry_s", "spooler_retry_max_s"}
    known |= {"outbox_alert_s", "desktop_notifications", "metrics_listen", "shared_linger_s"}
    known.add(remote_config.SECTION)
    remote, remote_problems = remote_config.parse(data.get(remote_config.SECTION), text)
    extra = {k: v for k, v in data.items() if k not in known}
    problems = [ConfigProblem(str(file), m, find_line(text, m.split(" ", 1)[0])) for m in messages]
    # A key the file does not set takes its default; a key set wrongly keeps its last value.
    fresh = DaemonConfig(base.config_dir, base.state_dir, base.runtime_dir, base.system)
    for message in messages:
        key = message.split(" ", 1)[0]
        if hasattr(base, key):
            changes.setdefault(key, getattr(base, key))
    changes["remote"] = base.remote if remote_problems else remote
    problems += [ConfigProblem(str(file), m, n, blocks_start=True) for m, n in remote_problems]
    return replace(fresh, extra=extra, **changes), problems
