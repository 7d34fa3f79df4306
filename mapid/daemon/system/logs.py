"""The daemon's log, fit for journald: one event a record, with its level and session.

Under journald (JOURNAL_STREAM names our stderr) every record goes to the journal with the
native protocol (journal.py): its text as MESSAGE, its PRIORITY, where in the code it was
logged, and the MAPID_SESSION, MAPID_PROFILE, MAPID_SERVICE and MAPID_OP it is about, so
`journalctl -u mapid MAPID_PROFILE=Work` finds a profile's records. When journald's socket
cannot take a record it goes to stderr as a line starting with the syslog priority `<N>`
(the sd-daemon(3) convention) and no timestamp, since the journal has its own. Elsewhere
each line starts with a UTC timestamp.

A request names its op, session and profile for every record logged while it runs: the
request server calls enter_request() for the task that runs it, and tasks started from
there inherit it. A record about a session logged elsewhere (a logon at start, a lease
that ran out) names it with `extra=about(...)`. Values are ids and names only: never a
token, a password or a request's arguments.
"""

from __future__ import annotations

import contextvars
import logging
import os
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from mapid.daemon.system import journal
from mapid.daemon.system.journal import priority

SESSION_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "mapid_session_id", default=None
)
PROFILE: contextvars.ContextVar[str | None] = contextvars.ContextVar("mapid_profile", default=None)
OP: contextvars.ContextVar[str | None] = contextvars.ContextVar("mapid_op", default=None)

FIELDS = {
    "mapid_session": "MAPID_SESSION",
    "mapid_profile": "MAPID_PROFILE",
    "mapid_service": "MAPID_SERVICE",
    "mapid_op": "MAPID_OP",
}
"""The `extra=` keys of a record and the journal fields they become."""

__all__ = [
    "FIELDS",
    "OP",
    "PROFILE",
    "SESSION_ID",
    "LineFormatter",
    "about",
    "context_fields",
    "enter_request",
    "leave_request",
    "priority",
    "setup",
    "under_journald",
]


class _Named(Protocol):
    @property
    def name(self) -> str: ...


class SessionLike(Protocol):
    """What enter_request reads of a session: its id and its profile's name."""

    @property
    def id(self) -> str: ...

    @property
    def profile(self) -> _Named: ...


@dataclass(frozen=True)
class RequestMark:
    session: contextvars.Token[str | None]
    profile: contextvars.Token[str | None]
    op: contextvars.Token[str | None]


def enter_request(op: str, session: SessionLike | None) -> RequestMark:
    """Name `op` and its session (if any) in every record of this context from now on."""
    return RequestMark(
        SESSION_ID.set(session.id if session is not None else None),
        PROFILE.set(session.profile.name if session is not None else None),
        OP.set(op),
    )


def leave_request(mark: RequestMark) -> None:
    OP.reset(mark.op)
    PROFILE.reset(mark.profile)
    SESSION_ID.reset(mark.session)


def about(
    session: str | None = None, profile: str | None = None, service: str | None = None
) -> dict[str, str]:
    """`extra=` for a record about a session, a profile or a service of a profile."""
    given = {"mapid_session": session, "mapid_profile": profile, "mapid_service": service}
    return {key: value for key, value in given.items() if value}


def context_fields(record: logging.LogRecord) -> dict[str, str]:
    """The MAPID_* journal fields of a record: its `extra=`, else its request's context."""
    found = {
        "mapid_session": getattr(record, "session_id", None) or SESSION_ID.get(),
        "mapid_profile": PROFILE.get(),
        "mapid_op": OP.get(),
    }
    for key in FIELDS:
        value = getattr(record, key, None)
        if value:
            found[key] = value
    return {FIELDS[key]: str(value) for key, value in found.items() if value}


def under_journald(environ: Mapping[str, str] | None = None, fd: int = 2) -> bool:
    """Whether `fd` is the journal stream systemd set up (JOURNAL_STREAM is `dev:inode`).

    The variable alone is not enough: a program started from a service inherits it even
    when its stderr goes elsewhere.
    """
    value = (os.environ if environ is None else environ).get("JOURNAL_STREAM", "")
    device, _, inode = value.partition(":")
    try:
        info = os.fstat(fd)
        return (info.st_dev, info.st_ino) == (int(device), int(inode))
    except (OSError, ValueError):
        return False


class LineFormatter(logging.Formatter):
    """`[<N>|TIME] LEVEL logger[ session=ID]: message`, a traceback folded into the line.

    With `journald=None` the text alone, its traceback on lines of their own: the MESSAGE
    of a journal record.
    """

    converter = staticmethod(time.gmtime)

    def __init__(self, journald: bool | None) -> None:
        super().__init__(datefmt="%Y-%m-%dT%H:%M:%SZ")
        self.journald = journald

    def format(self, record: logging.LogRecord) -> str:
        session = context_fields(record).get("MAPID_SESSION")
        where = f"{record.name} session={session}" if session else record.name
        text = f"{record.levelname} {where}: {record.getMessage()}"
        if record.exc_info:
            record.exc_text = record.exc_text or self.formatException(record.exc_info)
        if record.exc_text:
            text = f"{text}\n{record.exc_text}"
        if record.stack_info:
            text = f"{text}\n{self.formatStack(record.stack_info)}"
        text = text.replace("\r\n", "\n")
        if self.journald is None:
            return text
        text = text.replace("\n", " | ")
        if self.journald:
            return f"<{priority(record.levelno)}>{text}"
        return f"{self.formatTime(record, self.datefmt)} {text}"


def handler(environ: Mapping[str, str] | None = None) -> logging.Handler:
    """Journal records when stderr is the journal and its socket is there, else lines."""
    lines = logging.StreamHandler(sys.stderr)
    if not under_journald(environ):
        lines.setFormatter(LineFormatter(journald=False))
        return lines
    lines.setFormatter(LineFormatter(journald=True))
    path = journal.socket_path(environ)
    if not os.path.exists(path):
        return lines
    return journal.JournalHandler(path, LineFormatter(journald=None), context_fields, lines)


def setup(level: str) -> None:
    """Log at `level` (debug, info, warning, error) to the journal or to stderr."""
    root = logging.getLogger()
    for old in root.handlers:
        old.close()
    root.handlers[:] = [handler()]
    root.setLevel(level.upper())
