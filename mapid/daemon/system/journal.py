"""journald's native protocol: each log record is one datagram of structured fields.

Under systemd (JOURNAL_STREAM names our stderr) logs.setup() puts a JournalHandler on the
root logger. It sends every record to journald's socket as `NAME=value` fields
(systemd.journal-fields(7), https://systemd.io/JOURNAL_NATIVE_PROTOCOL/): MESSAGE,
PRIORITY, SYSLOG_IDENTIFIER, CODE_FILE/CODE_LINE/CODE_FUNC, LOGGER, THREAD_NAME and the
MAPID_* fields of the session, profile, service and op the record is about, so
`journalctl -u mapid MAPID_PROFILE=Work` works. A value holding a newline (a traceback)
goes in the protocol's binary form. A record too big for one datagram goes in a sealed
memfd passed with SCM_RIGHTS, as sd_journal_send() does. When journald cannot take a record
(no socket, a full queue for a second) it is written as a `<N>` line to stderr, the
journal's stream, so nothing is lost.

MAPID_JOURNAL_SOCKET overrides the socket's path (the tests bind their own).
"""

from __future__ import annotations

import array
import errno
import fcntl
import logging
import os
import re
import socket
import struct
from collections.abc import Callable, Iterable, Mapping

DEFAULT_SOCKET = "/run/systemd/journal/socket"
SOCKET_ENV = "MAPID_JOURNAL_SOCKET"
IDENTIFIER = "mapid"
SEND_TIMEOUT = 1.0
"""Seconds a record may wait for room in journald's queue before it goes to stderr."""

_PRIORITIES = {
    logging.CRITICAL: 2,
    logging.ERROR: 3,
    logging.WARNING: 4,
    logging.INFO: 6,
    logging.DEBUG: 7,
}
"""Python's levels as syslog priorities (crit, err, warning, info, debug)."""

_FIELD_NAME = re.compile(r"[A-Z0-9][A-Z0-9_]{0,63}")
_SEALS = fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SEAL
_TOO_BIG = frozenset({errno.EMSGSIZE, errno.ENOBUFS})


def priority(level: int) -> int:
    """The syslog priority of a Python log level (PRIORITY=, and `<N>` on a line)."""
    for threshold in (logging.CRITICAL, logging.ERROR, logging.WARNING, logging.INFO):
        if level >= threshold:
            return _PRIORITIES[threshold]
    return _PRIORITIES[logging.DEBUG]


def socket_path(environ: Mapping[str, str] | None = None) -> str:
    return (os.environ if environ is None else environ).get(SOCKET_ENV) or DEFAULT_SOCKET


def valid_field_name(name: str) -> bool:
    """Upper-case letters, digits and `_`, not starting with `_` (journald's own), <= 64."""
    return _FIELD_NAME.fullmatch(name) is not None


def encode(fields: Iterable[tuple[str, str]]) -> bytes:
    """The datagram: `NAME=value\\n`, or `NAME\\n` + 64-bit LE length + value + `\\n`."""
    out = bytearray()
    for name, value in fields:
        if not valid_field_name(name):
            raise ValueError(f"not a journal field name: {name!r}")
        data = value.encode("utf-8", "backslashreplace")
        if b"\n" in data:
            out += name.encode("ascii") + b"\n" + struct.pack("<Q", len(data)) + data + b"\n"
        else:
            out += name.encode("ascii") + b"=" + data + b"\n"
    return bytes(out)


def decode(data: bytes) -> list[tuple[str, str]]:
    """The fields of one datagram, in order (the inverse of encode, for tests and tools)."""
    fields: list[tuple[str, str]] = []
    pos = 0
    while pos < len(data):
        end = data.index(b"\n", pos)
        line = data[pos:end]
        if b"=" in line:
            name, _, value = line.partition(b"=")
            pos = end + 1
        else:
            name = line
            (size,) = struct.unpack_from("<Q", data, end + 1)
            start = end + 1 + 8
            value = data[start : start + size]
            if data[start + size : start + size + 1] != b"\n":
                raise ValueError(f"field {name!r}: no newline after {size} bytes")
            pos = start + size + 1
        fields.append((name.decode("ascii"), value.decode("utf-8", "replace")))
    return fields


class JournalHandler(logging.Handler):
    """Sends each record to journald; `fallback` takes those journald cannot.

    `message` formats MESSAGE; `context` gives a record's own fields (MAPID_SESSION ...).
    """

    def __init__(
        self,
        path: str,
        message: logging.Formatter,
        context: Callable[[logging.LogRecord], Mapping[str, str]],
        fallback: logging.Handler,
    ) -> None:
        super().__init__()
        self.path = path
        self.message = message
        self.context = context
        self.fallback = fallback
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.settimeout(SEND_TIMEOUT)

    def fields(self, record: logging.LogRecord) -> list[tuple[str, str]]:
        found = [
            ("MESSAGE", self.message.format(record)),
            ("PRIORITY", str(priority(record.levelno))),
            ("SYSLOG_IDENTIFIER", IDENTIFIER),
        ]
        optional = [
            ("CODE_FILE", record.pathname),
            ("CODE_LINE", str(record.lineno) if record.lineno else None),
            ("CODE_FUNC", record.funcName),
            ("LOGGER", record.name),
            ("THREAD_NAME", record.threadName),
            *self.context(record).items(),
        ]
        found.extend((k, v) for k, v in optional if v and valid_field_name(k))
        return found

    def emit(self, record: logging.LogRecord) -> None:
        try:
            data = encode(self.fields(record))
        except Exception:
            self.handleError(record)
            return
        try:
            self.send(data)
        except OSError:
            self.fallback.handle(record)

    def send(self, data: bytes) -> None:
        try:
            self.sock.sendto(data, self.path)
        except OSError as exc:
            if exc.errno not in _TOO_BIG:
                raise
            self._send_memfd(data)

    def _send_memfd(self, data: bytes) -> None:
        """A record over the datagram limit, in a sealed memfd (journald reads it)."""
        fd = os.memfd_create("mapid-journal", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            fcntl.fcntl(fd, fcntl.F_ADD_SEALS, _SEALS)
            rights = array.array("i", [fd])
            self.sock.sendmsg([], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, rights)], 0, self.path)
        finally:
            os.close(fd)

    def close(self) -> None:
        self.sock.close()
        self.fallback.close()
        super().close()
