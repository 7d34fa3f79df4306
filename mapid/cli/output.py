"""How mapictl shows things: wire values made JSON-safe, MAPI bits decoded into names, and
the rich tables a person reads.

Every command renders through here, so the human and the `--json` forms of the same data
stay in step, and a status row looks the same in `status`, `status --watch` and
`status-table`.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TextIO

from rich.console import Console, Group, RenderableType
from rich.text import Text

from mapid.cli.tables import Col, FitTable
from mapid.constants import (
    LogonFlags,
    ObjectType,
    ResourceFlags,
    ResourceMethods,
    ResourceType,
    StatusCode,
    flag_names,
)

# Status-row columns whose integers are MAPI flags or enums: decoded into names everywhere
# mapictl shows a row (docs/protocol.md 7.2). flag_names keeps unknown bits as "0x…".
FLAG_COLUMNS: dict[str, type[Any]] = {
    "PR_STATUS_CODE": StatusCode,
    "PR_RESOURCE_FLAGS": ResourceFlags,
    "PR_RESOURCE_METHODS": ResourceMethods,
}
ENUM_COLUMNS: dict[str, type[Any]] = {
    "PR_RESOURCE_TYPE": ResourceType,
    "PR_OBJECT_TYPE": ObjectType,
}


# --- JSON ----------------------------------------------------------------------------------


def jsonable(value: Any) -> Any:
    """A wire value as JSON: bytes as lowercase hex, datetimes as ISO 8601, keys as str."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).hex()
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {_json_key(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [jsonable(v) for v in value]
    if isinstance(value, float) and value != value:  # NaN is not JSON
        return None
    return value


def _json_key(key: object) -> str:
    if isinstance(key, (bytes, bytearray)):
        return bytes(key).hex()
    return str(key)


def dumps(value: Any) -> str:
    """One compact JSON line (the unit of every `--json` output)."""
    return json.dumps(jsonable(value), ensure_ascii=False, separators=(",", ":"))


def emit_json(value: Any, file: TextIO | None = None) -> None:
    """Print one JSON line and flush, so a pipe reader sees it at once."""
    out = file if file is not None else sys.stdout
    out.write(dumps(value) + "\n")
    out.flush()


# --- decoding ------------------------------------------------------------------------------


ACCOUNT_TYPES = frozenset(
    {
        ResourceType.MAPI_STORE_PROVIDER,
        ResourceType.MAPI_AB_PROVIDER,
        ResourceType.MAPI_TRANSPORT_PROVIDER,
    }
)
"""Rows that stand for an account's provider: these get a `state` (account_state)."""


def account_state(row: Mapping[str, Any]) -> str | None:
    """What a person asks of an account first: "online", "offline", "syncing 40%" or
    "failed", read from PR_STATUS_CODE and PR_REMOTE_PROGRESS; None for rows that are not
    a provider's (the session, the spooler)."""
    kind, code = row.get("PR_RESOURCE_TYPE"), row.get("PR_STATUS_CODE")
    if not isinstance(code, int) or kind not in ACCOUNT_TYPES:
        return None
    if code & StatusCode.STATUS_FAILURE:
        return "failed"
    if code & StatusCode.STATUS_OFFLINE:
        return "offline"
    progress = row.get("PR_REMOTE_PROGRESS")
    if isinstance(progress, int) and not isinstance(progress, bool) and 0 <= progress < 100:
        return f"syncing {progress}%"
    return "online" if code & StatusCode.STATUS_AVAILABLE else None


def decode_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """A status row with its flag and enum columns as MAPI names (lists for flags), and,
    for a provider's row, its `state` (account_state)."""
    out: dict[str, Any] = {}
    for key, value in row.items():
        if isinstance(value, int) and not isinstance(value, bool):
            if key in FLAG_COLUMNS:
                out[key] = flag_names(FLAG_COLUMNS[key], value)
                continue
            if key in ENUM_COLUMNS:
                out[key] = flag_names(ENUM_COLUMNS[key], value)[0]
                continue
        out[key] = value
    state = account_state(row)
    if state is not None:
        out["state"] = state
    return out


def decode_session(info: Mapping[str, Any]) -> dict[str, Any]:
    """A SESSION map with its logon flags as names."""
    out = dict(info)
    flags = out.get("flags")
    if isinstance(flags, int) and not isinstance(flags, bool):
        out["flags"] = flag_names(LogonFlags, flags)
    return out


def sort_rows(rows: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Rows in PR_ROWID order, the order the daemon adds them in."""
    return sorted(rows, key=lambda r: _int(r.get("PR_ROWID"), 0))


def _int(value: object, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


# --- the status view -----------------------------------------------------------------------


def status_view(
    hello: Mapping[str, Any] | None,
    snapshot: Mapping[str, Any],
    sessions: Sequence[Mapping[str, Any]],
    tables: Mapping[str, Sequence[Mapping[str, Any]]],
    now: dt.datetime | None = None,
) -> dict[str, Any]:
    """The one shape behind `status` (both forms) and `status --watch --json`."""
    now = now or dt.datetime.now(dt.UTC)
    daemon: dict[str, Any] | None = None
    if hello is not None:
        daemon = {k: hello.get(k) for k in ("version", "protocol", "pid", "epoch", "started")}
        started = hello.get("started")
        if isinstance(started, dt.datetime):
            daemon["uptime_s"] = round(max(0.0, (now - started).total_seconds()), 3)
        daemon["config_gen"] = hello.get("config_gen")
    return {
        "daemon": daemon,
        "epoch": snapshot.get("epoch"),
        "seq": snapshot.get("seq"),
        "config": dict(snapshot.get("config") or {}),
        "sessions": [
            {
                **decode_session(info),
                "status": [decode_row(r) for r in sort_rows(tables.get(info["session"], []))],
            }
            for info in sessions
        ],
    }


def format_duration(seconds: float) -> str:
    """`3d 4h`, `2h 5m`, `4m 12s`, `9s`: enough precision for an uptime."""
    total = int(seconds)
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    if minutes:
        return f"{minutes}m {secs}s"
    return f"{secs}s"


def format_time(value: object) -> str:
    """A wire datetime (or epoch float) in local time, to the second."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = dt.datetime.fromtimestamp(value, dt.UTC)
    if isinstance(value, dt.datetime):
        return value.astimezone().strftime("%Y-%m-%d %H:%M:%S")
    return "-" if value is None else str(value)


def yes_no(value: object) -> str:
    return "yes" if value else "no"


def _names(value: object) -> str:
    if isinstance(value, list):
        return "\n".join(str(v) for v in value) if value else "-"
    return "-" if value is None else str(value)


def daemon_lines(view: Mapping[str, Any]) -> list[Text]:
    """The daemon line and the config line of `status`."""
    lines: list[Text] = []
    daemon = view.get("daemon")
    if daemon:
        line = Text()
        line.append("mapid ", style="bold")
        line.append(f"{daemon.get('version')}", style="bold")
        line.append(f"  pid {daemon.get('pid')}  epoch {daemon.get('epoch')}")
        if "uptime_s" in daemon:
            line.append(f"  up {format_duration(float(daemon['uptime_s']))}")
        line.append(f"  protocol {daemon.get('protocol')}")
        lines.append(line)
    else:
        lines.append(Text(f"mapid epoch {view.get('epoch')}", style="bold"))
    lines.extend(config_lines(view.get("config") or {}))
    return lines


def config_lines(config: Mapping[str, Any]) -> list[Text]:
    """`config gen N, last reload TIME ok`, then one line per reload error."""
    line = Text(f"config gen {config.get('gen', '-')}")
    report = config.get("last_reload")
    errors: list[Any] = []
    if isinstance(report, Mapping):
        line.append(f", last reload {format_time(report.get('ts'))} ")
        if report.get("ok", True):
            line.append("ok", style="green")
        else:
            line.append("with errors", style="bold red")
        changes = [
            f"{what} {', '.join(map(str, report.get(what) or []))}"
            for what in ("added", "removed", "changed")
            if report.get(what)
        ]
        if changes:
            line.append(f" ({'; '.join(changes)})")
        errors = list(report.get("errors") or [])
    watcher = config.get("watcher")
    if watcher:
        line.append(f"; watching files: {watcher}")
    lines = [line]
    if config.get("watcher_warning"):
        lines.append(Text(f"  warning: {config['watcher_warning']}", style="yellow"))
    if config.get("mail_watcher_warning"):
        lines.append(Text(f"  mail folders: {config['mail_watcher_warning']}", style="yellow"))
    for err in errors:
        if isinstance(err, Mapping):
            where = str(err.get("file", "?"))
            if err.get("line") is not None:
                where += f":{err['line']}"
            lines.append(Text(f"  error: {where}: {err.get('message', '')}", style="red"))
        else:
            lines.append(Text(f"  error: {err}", style="red"))
    return lines


def session_line(info: Mapping[str, Any]) -> Text:
    """`session ID  profile P  shared no  members 1  state active`."""
    line = Text()
    line.append("session ", style="bold")
    line.append(str(info.get("session")), style="bold cyan")
    line.append(f"  profile {info.get('profile')}")
    line.append(f"  shared {yes_no(info.get('shared'))}")
    line.append(f"  members {info.get('members')}")
    state = str(info.get("state"))
    line.append("  state ")
    line.append(state, style="green" if state == "active" else "yellow")
    return line


def _status_style(codes: object) -> str:
    names = codes if isinstance(codes, list) else []
    if "STATUS_FAILURE" in names:
        return "bold red"
    if "STATUS_OFFLINE" in names:
        return "yellow"
    if "STATUS_AVAILABLE" in names:
        return "green"
    return ""


_STATE_STYLE = {
    "online": "bold green",
    "offline": "bold yellow",
    "syncing": "bold cyan",
    "failed": "bold red",
}

STATUS_LABEL_WIDTH = len("methods ")


def _labelled(label: str, names: object) -> list[str]:
    """`flags   A` then `        B`: a row's flags or methods under its status code, so the
    table needs one column of MAPI names, not three (it fits 80 columns with room for the
    names); nothing for no names."""
    if not isinstance(names, list) or not names:
        return []
    lead = label.ljust(STATUS_LABEL_WIDTH)
    return [lead + str(names[0])] + [" " * STATUS_LABEL_WIDTH + str(n) for n in names[1:]]


def status_table(rows: Sequence[Mapping[str, Any]], title: str | None = None) -> FitTable:
    """Decoded status rows (see decode_row) as a table a person can read.

    The Name column stacks the row's name, its resource type and provider, and its status
    string: free text, cut with an ellipsis when the table is too wide. The Status column
    stacks a provider's state (online, offline, syncing N%, failed), the status code, then
    the resource flags and methods, one MAPI name a line: a key column, kept whole while
    the names can give way."""
    table = FitTable(
        Col("#", keep=True, right=True),
        Col("Name", min_width=24),
        Col("Status", keep=True),
        title=title,
    )
    for row in rows:
        code = row.get("PR_STATUS_CODE")
        name = Text(str(row.get("PR_DISPLAY_NAME", "")), style="bold")
        kind = _names(row.get("PR_RESOURCE_TYPE"))
        if row.get("PR_PROVIDER_DLL_NAME"):
            kind += f" ({row['PR_PROVIDER_DLL_NAME']})"
        name.append(f"\n{kind}", style="cyan")
        if row.get("PR_STATUS_STRING"):
            name.append(f"\n{row['PR_STATUS_STRING']}", style="italic")
        state = Text()
        if row.get("state"):
            state.append(
                f"{row['state']}\n", style=_STATE_STYLE.get(str(row["state"]).split()[0], "")
            )
        state.append(_names(code), style=_status_style(code))
        for line in _labelled("flags", row.get("PR_RESOURCE_FLAGS")) + _labelled(
            "methods", row.get("PR_RESOURCE_METHODS")
        ):
            state.append("\n")
            state.append(line[:STATUS_LABEL_WIDTH], style="dim")
            state.append(line[STATUS_LABEL_WIDTH:])
        table.add_row(str(row.get("PR_ROWID", "")), name, state)
    return table


STUCK_MAIL = re.compile(r"^\d+ messages? waiting longer than [^;]*")
"""The words a spooler row starts with while mail is stuck (mapid/daemon/spool/stuck.py)."""


def stuck_lines(rows: Sequence[Mapping[str, Any]]) -> list[Text]:
    """A line of its own, whole and loud, for each spooler row that reports stuck mail."""
    found = (STUCK_MAIL.match(str(r.get("PR_STATUS_STRING") or "")) for r in rows)
    return [Text(f"stuck mail: {m.group(0)}", style="bold yellow") for m in found if m]


def status_renderable(view: Mapping[str, Any]) -> RenderableType:
    """The whole `status` output: daemon line, config line, then each session and its rows."""
    parts: list[RenderableType] = [*daemon_lines(view)]
    sessions = view.get("sessions") or []
    if not sessions:
        parts.append(Text("no sessions", style="dim"))
    for info in sessions:
        parts.append(Text(""))
        parts.append(session_line(info))
        parts.extend(stuck_lines(info.get("status") or []))
        parts.append(status_table(info.get("status") or []))
    return Group(*parts)


def format_since(value: object, now: dt.datetime | None = None) -> str:
    """When something started, as ps shows it: the time of day for today, else the date
    (format_time has both; --json the full ISO time)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = dt.datetime.fromtimestamp(value, dt.UTC)
    if not isinstance(value, dt.datetime):
        return "-" if value is None else str(value)
    local = value.astimezone()
    today = (now or dt.datetime.now(dt.UTC)).astimezone().date()
    return local.strftime("%H:%M:%S") if local.date() == today else local.strftime("%Y-%m-%d")


def sessions_table(sessions: Sequence[Mapping[str, Any]]) -> FitTable:
    """`daemon.sessions` (decoded with decode_session) as a table. The id and profile
    (what other commands take) and the logon flags (MAPI names) are kept whole; the start
    is as short as ps's, so a row fits 80 columns."""
    table = FitTable(
        Col("Session", keep=True),
        Col("Profile", keep=True),
        Col("Shared", keep=True),
        Col("Members", keep=True, right=True),
        Col("State", keep=True),
        Col("Flags", keep=True),
        Col("Since", min_width=10),
    )
    for info in sessions:
        table.add_row(
            str(info.get("session")),
            str(info.get("profile")),
            yes_no(info.get("shared")),
            str(info.get("members")),
            str(info.get("state")),
            _names(info.get("flags")),
            format_since(info.get("created")),
        )
    return table


NON_TTY_WIDTH = 80
"""The width off a terminal, as systemctl's: a pipe or a file gets lines of at most 80
cells unless COLUMNS says otherwise."""


def console(stderr: bool = False) -> Console:
    """A console for one invocation, as wide as the terminal it writes to (followed as it
    is resized, by `status --watch` too), else COLUMNS when set (rich reads it), else 80.
    Tables fit that width (mapid.cli.tables); `--json` never goes through a console."""
    stream = sys.stderr if stderr else sys.stdout
    return Console(file=stream, stderr=stderr, width=console_width(stream), highlight=False)


def console_width(stream: TextIO) -> int | None:
    """The width to give a console writing to `stream`: None lets rich use COLUMNS or the
    terminal's size; off a terminal, without COLUMNS, NON_TTY_WIDTH."""
    columns = os.environ.get("COLUMNS", "")
    if (columns.isdigit() and int(columns) > 0) or _isatty(stream):
        return None
    return NON_TTY_WIDTH


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
