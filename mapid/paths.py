"""Where mapid keeps its files, for the daemon and clients (docs/design.md 3, docs/protocol.md 1).

Every directory can be overridden by an environment variable so that tests and benchmarks
run daemons side by side.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CONNECTION_FILE = "mapid.json"
REQUEST_SOCKET = "request.sock"
EVENTS_SOCKET = "events.sock"

SYSTEM_RUNTIME_DIR = Path("/run/mapid")
SYSTEM_CONFIG_DIR = Path("/etc/mapid")
SYSTEM_STATE_DIR = Path("/var/lib/mapid")


def _xdg(var: str, fallback: str) -> Path:
    value = os.environ.get(var)
    if value and os.path.isabs(value):
        return Path(value)
    return Path.home() / fallback


def runtime_dir(system: bool = False) -> Path:
    """The runtime directory: `$MAPID_RUNTIME_DIR`, else the user's or the system's."""
    override = os.environ.get("MAPID_RUNTIME_DIR")
    if override:
        return Path(override)
    if system:
        return SYSTEM_RUNTIME_DIR
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg and os.path.isabs(xdg):
        return Path(xdg) / "mapid"
    return Path(f"/tmp/mapid-{os.getuid()}")


def client_runtime_dir() -> Path:
    """Where a client finds the daemon: `$MAPID_RUNTIME_DIR`; else the user's daemon, or the
    machine's (/run/mapid) when only that one runs and this user may read its connection
    file (a member of group `mapid`)."""
    mine = runtime_dir()
    if os.environ.get("MAPID_RUNTIME_DIR") or (mine / CONNECTION_FILE).exists():
        return mine
    if os.access(SYSTEM_RUNTIME_DIR / CONNECTION_FILE, os.R_OK):
        return SYSTEM_RUNTIME_DIR
    return mine


def config_dir(system: bool = False) -> Path:
    override = os.environ.get("MAPID_CONFIG_DIR")
    if override:
        return Path(override)
    if system:
        return SYSTEM_CONFIG_DIR
    return _xdg("XDG_CONFIG_HOME", ".config") / "mapid"


def state_dir(system: bool = False) -> Path:
    override = os.environ.get("MAPID_STATE_DIR")
    if override:
        return Path(override)
    if system:
        return SYSTEM_STATE_DIR
    return _xdg("XDG_STATE_HOME", ".local/state") / "mapid"


def data_dir() -> Path:
    """Where the embedded default profile keeps its Maildir and vCard folder."""
    return _xdg("XDG_DATA_HOME", ".local/share") / "mapid"


@dataclass(frozen=True)
class ConnectionInfo:
    """The connection file a running daemon writes (docs/protocol.md 1)."""

    protocol: int
    version: str
    pid: int
    epoch: str
    request: str
    events: str
    curve_server_key: str | None = None

    @classmethod
    def from_mapping(cls, data: dict[str, Any]) -> ConnectionInfo:
        return cls(
            protocol=int(data["protocol"]),
            version=str(data["version"]),
            pid=int(data["pid"]),
            epoch=str(data["epoch"]),
            request=str(data["request"]),
            events=str(data["events"]),
            curve_server_key=data.get("curve_server_key"),
        )

    def to_mapping(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "protocol": self.protocol,
            "version": self.version,
            "pid": self.pid,
            "epoch": self.epoch,
            "request": self.request,
            "events": self.events,
        }
        if self.curve_server_key is not None:
            data["curve_server_key"] = self.curve_server_key
        return data


def read_connection_file(directory: Path) -> ConnectionInfo | None:
    """The daemon's connection file in `directory`, or None when there is none (yet)."""
    try:
        text = (directory / CONNECTION_FILE).read_text(encoding="utf-8")
        return ConnectionInfo.from_mapping(json.loads(text))
    except (OSError, ValueError, KeyError, TypeError):
        return None
