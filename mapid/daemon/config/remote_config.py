"""The `[remote]` table of `mapid.toml`: TCP endpoints, always with CURVE (docs/protocol.md 9).

```toml
[remote]
request = "tcp://0.0.0.0:5555"   # the ROUTER (requests, replies, private notifications)
events = "tcp://0.0.0.0:5556"    # the XPUB (public events, heartbeats)
```

There is no way to turn CURVE off: `curve = true` may be written for clarity, anything else
is an error, and so is any problem in the table; the daemon refuses to start on one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

SECTION = "remote"
KEYS = ("request", "events", "curve")
_HOST_PORT = re.compile(r"^tcp://(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.*-]+):(?P<port>\d+)$")


@dataclass(frozen=True)
class RemoteConfig:
    """Where the TCP endpoints bind, in addition to the local ipc sockets."""

    request: str
    events: str


def _line(text: str, key: str) -> int | None:
    """The line of `key =` inside `[remote]` (or of `remote.key =`, or the header)."""
    inside = False
    header: int | None = None
    for number, row in enumerate(text.splitlines(), 1):
        stripped = row.strip()
        if stripped.startswith("["):
            inside = re.match(r"^\[\s*remote\s*\]", stripped) is not None
            if inside:
                header = number
            continue
        if inside and re.match(rf"^{re.escape(key)}\s*=", stripped):
            return number
        if re.match(rf"^remote\s*\.\s*{re.escape(key)}\s*=", stripped):
            return number
    return header


def _toml(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else repr(value)


def _endpoint(value: Any, key: str) -> str | None:
    if not isinstance(value, str):
        return None
    match = _HOST_PORT.match(value.strip())
    if match is None or not 0 < int(match.group("port")) < 65536:
        return None
    return value.strip()


def parse(data: Any, text: str) -> tuple[RemoteConfig | None, list[tuple[str, int | None]]]:
    """The `[remote]` table (None when absent) and its problems as (message, line)."""
    if data is None:
        return None, []
    if not isinstance(data, dict):
        return None, [("[remote] must be a table with request and events", _line(text, ""))]
    problems: list[tuple[str, int | None]] = []
    for key in data:
        if key not in KEYS:
            problems.append(
                (f"[remote] has no key {key!r} (known: {', '.join(KEYS)})", _line(text, key))
            )
    if "curve" in data and data["curve"] is not True:
        problems.append(
            (
                f"[remote] curve = {_toml(data['curve'])} is refused: TCP endpoints always use "
                "CURVE; remove the key (or write curve = true), or remove [remote] to serve "
                "the local sockets only",
                _line(text, "curve"),
            )
        )
    found: dict[str, str] = {}
    for key in ("request", "events"):
        if key not in data:
            problems.append(
                (f'[remote] needs {key} = "tcp://HOST:PORT" as well', _line(text, "request"))
            )
            continue
        endpoint = _endpoint(data[key], key)
        if endpoint is None:
            problems.append(
                (
                    f'[remote] {key} must be "tcp://HOST:PORT" (HOST an address, a name, '
                    f"[IPv6] or *; PORT 1-65535), not {data[key]!r}",
                    _line(text, key),
                )
            )
        else:
            found[key] = endpoint
    if len(found) == 2 and found["request"] == found["events"]:
        problems.append(
            ("[remote] request and events need two different ports", _line(text, "events"))
        )
    if problems:
        return None, problems
    return RemoteConfig(request=found["request"], events=found["events"]), []
