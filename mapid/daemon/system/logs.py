"""The daemon's log lines, fit for journald: one event a line, with its level and session.

Under journald (JOURNAL_STREAM names our stderr) each line starts with the syslog priority
`<N>` (the sd-daemon(3) convention), so `journalctl -p warning` works, and carries no
timestamp, since the journal has its own. Elsewhere each line starts with a UTC timestamp.
A request that names a session logs with `session=<id>`: the request server sets
SESSION_ID for the task that runs it, and tasks started from there inherit it.
"""

from __future__ import annotations

import contextvars
import logging
import os
import sys
import time
from collections.abc import Mapping

SESSION_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "mapid_session_id", default=None
)

_PRIORITIES = {
    logging.CRITICAL: 2,
    logging.ERROR: 3,
    logging.WARNING: 4,
    logging.INFO: 6,
    logging.DEBUG: 7,
}
"""Python's levels as syslog priorities (crit, err, warning, info, debug)."""


def priority(level: int) -> int:
    for threshold in (logging.CRITICAL, logging.ERROR, logging.WARNING, logging.INFO):
        if level >= threshold:
            return _PRIORITIES[threshold]
    return _PRIORITIES[logging.DEBUG]


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
    """`[<N>|TIME] LEVEL logger[ session=ID]: message`, a traceback folded into the line."""

    converter = staticmethod(time.gmtime)

    def __init__(self, journald: bool) -> None:
        super().__init__(datefmt="%Y-%m-%dT%H:%M:%SZ")
        self.journald = journald

    def format(self, record: logging.LogRecord) -> str:
        session = getattr(record, "session_id", None) or SESSION_ID.get()
        where = f"{record.name} session={session}" if session else record.name
        text = f"{record.levelname} {where}: {record.getMessage()}"
        if record.exc_info:
            record.exc_text = record.exc_text or self.formatException(record.exc_info)
        if record.exc_text:
            text = f"{text} | {record.exc_text}"
        if record.stack_info:
            text = f"{text} | {self.formatStack(record.stack_info)}"
        text = text.replace("\r\n", "\n").replace("\n", " | ")
        if self.journald:
            return f"<{priority(record.levelno)}>{text}"
        return f"{self.formatTime(record, self.datefmt)} {text}"


def setup(level: str) -> None:
    """Log to stderr at `level` (debug, info, warning, error)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(LineFormatter(under_journald()))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
