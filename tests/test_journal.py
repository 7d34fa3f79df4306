"""The daemon's log under journald, over the native protocol (systemd.journal-fields(7)).

The test binds a real AF_UNIX datagram socket where journald's would be
(MAPID_JOURNAL_SOCKET) and starts the real daemon with JOURNAL_STREAM naming its stderr:
every record then arrives as one datagram of fields, with MESSAGE, PRIORITY,
SYSLOG_IDENTIFIER=mapid, the code location and the MAPID_* fields of the session, profile,
service and op it is about. A record too big for a datagram comes in a sealed memfd; a
journald that does not answer leaves the record on stderr as a `<N>` line.
"""

from __future__ import annotations

import array
import fcntl
import io
import logging
import os
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mapid.daemon.system import journal, logs

from conftest import DaemonProc, prepare_daemon, standard_profile


class FakeJournald:
    """A bound datagram socket that collects what arrives, as journald's socket would."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.1)
        self.records: list[dict[str, str]] = []
        self.raw: list[bytes] = []
        self.fds_seen = 0
        self.lock = threading.Lock()
        self.running = True
        self.thread = threading.Thread(target=self._receive, daemon=True)
        self.thread.start()

    def _receive(self) -> None:
        while self.running:
            try:
                data, ancdata, _flags, _addr = self.sock.recvmsg(
                    1 << 20, socket.CMSG_SPACE(4 * array.array("i").itemsize)
                )
            except TimeoutError:
                continue
            except OSError:
                return
            for level, kind, payload in ancdata:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    fds = array.array("i")
                    fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
                    for fd in fds:
                        data += self._read_memfd(fd)
            with self.lock:
                self.raw.append(data)
                self.records.append(dict(journal.decode(data)))

    def _read_memfd(self, fd: int) -> bytes:
        try:
            seals = fcntl.fcntl(fd, fcntl.F_GET_SEALS)
            assert seals & fcntl.F_SEAL_WRITE and seals & fcntl.F_SEAL_SHRINK, seals
            self.fds_seen += 1
            os.lseek(fd, 0, os.SEEK_SET)
            chunks = []
            while chunk := os.read(fd, 1 << 16):
                chunks.append(chunk)
            return b"".join(chunks)
        finally:
            os.close(fd)

    def wait_for(self, what: str, timeout: float = 10.0, **fields: str) -> dict[str, str]:
        """The first record whose fields include `fields` and whose MESSAGE has `what`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                for record in self.records:
                    if what in record.get("MESSAGE", "") and all(
                        record.get(k) == v for k, v in fields.items()
                    ):
                        return record
            time.sleep(0.05)
        with self.lock:
            seen = "\n".join(r.get("MESSAGE", "") for r in self.records)
        raise AssertionError(f"no record with {what!r} and {fields}; got:\n{seen}")

    def close(self) -> None:
        self.running = False
        self.thread.join(5)
        self.sock.close()


@pytest.fixture
def journald() -> Iterator[FakeJournald]:
    folder = Path(tempfile.mkdtemp(prefix="mapid-j-", dir="/tmp"))  # short socket path
    fake = FakeJournald(folder / "socket")
    yield fake
    fake.close()
    shutil.rmtree(folder, ignore_errors=True)


CRASHING = '[services.bad]\nservice = "providers_for_tests:Crashing"\n'


def journal_daemon(tmp_path: Path, socket_path: Path) -> DaemonProc:
    """A daemon whose stderr is a file that JOURNAL_STREAM names, journald at socket_path."""
    profiles = {
        "alpha": standard_profile(tmp_path / "a"),
        "Work": standard_profile(tmp_path / "w"),
        "Broken": CRASHING,
    }
    proc = prepare_daemon(tmp_path / "d", profiles=profiles)
    proc.log_path.touch()
    info = proc.log_path.stat()
    proc.env["JOURNAL_STREAM"] = f"{info.st_dev}:{info.st_ino}"
    proc.env[journal.SOCKET_ENV] = str(socket_path)
    return proc


def test_the_daemon_logs_structured_records_to_journald(
    tmp_path: Path, journald: FakeJournald
) -> None:
    proc = journal_daemon(tmp_path, journald.path)
    try:
        proc.start()
        client = proc.client()
        ready = journald.wait_for("ready", PRIORITY="6")
        assert ready["SYSLOG_IDENTIFIER"] == "mapid" and ready["LOGGER"] == "mapid.daemon"
        assert "MAPID_SESSION" not in ready and "MAPID_OP" not in ready

        work = client.session_logon("Work", ["MAPI_NEW_SESSION"])
        session = work["session"]
        logon = journald.wait_for("logged on to profile Work", MAPID_SESSION=session)
        assert logon["MAPID_PROFILE"] == "Work" and logon["MAPID_OP"] == "session.logon"
        assert logon["PRIORITY"] == "6"
        assert logon["CODE_FILE"].endswith(os.path.join("sessions", "manager.py"))
        assert int(logon["CODE_LINE"]) > 0 and logon["CODE_FUNC"] == "_log_on"
        assert logon["MESSAGE"].startswith(f"INFO mapid.sessions session={session}: session ")

        # A provider that raises: an error record about the profile, its service and the op,
        # with the whole traceback in MESSAGE on lines of its own (the binary field form).
        broken = client.session_logon("Broken", ["MAPI_NEW_SESSION"])
        crash = journald.wait_for("provider bad/store of profile Broken failed")
        assert crash["PRIORITY"] == "3"
        assert crash["MAPID_PROFILE"] == "Broken" and crash["MAPID_SERVICE"] == "bad"
        assert crash["MAPID_SESSION"] == broken["session"]
        assert crash["MAPID_OP"] == "session.logon"
        assert "\nTraceback (most recent call last):\n" in crash["MESSAGE"]
        assert crash["MESSAGE"].rstrip().endswith("RuntimeError: provider bug")
        assert crash["CODE_FILE"].endswith("logon.py")
        disabled = journald.wait_for("service disabled", MAPID_SERVICE="bad", PRIORITY="4")
        assert disabled["MAPID_PROFILE"] == "Broken"

        client.session_logoff(work["token"])
        ended = journald.wait_for(f"session {session} ended", MAPID_SESSION=session)
        assert ended["MAPID_OP"] == "session.logoff" and ended["MAPID_PROFILE"] == "Work"

        assert proc.stop() == 0
    finally:
        proc.close()
    with journald.lock:
        raw = list(journald.raw)
        records = list(journald.records)
    for record in records:  # every name as journald wants it, never a secret in a value
        assert all(journal.valid_field_name(name) for name in record), record
        assert record["SYSLOG_IDENTIFIER"] == "mapid"
        assert {"MESSAGE", "PRIORITY", "CODE_FILE", "CODE_LINE", "CODE_FUNC"} <= set(record)
    for token in (work["token"], broken["token"]):
        assert not any(bytes(token).hex().encode() in data for data in raw)
        assert not any(bytes(token) in data for data in raw)
    # journald took every record: nothing went to the stream as a line.
    assert "<6>" not in proc.log() and "<3>" not in proc.log(), proc.log()


def test_a_journald_that_does_not_answer_leaves_the_line_on_stderr(tmp_path: Path) -> None:
    path = Path(tempfile.mkdtemp(prefix="mapid-j-", dir="/tmp")) / "socket"
    gone = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    gone.bind(str(path))
    gone.close()  # the file stays, nobody reads: ECONNREFUSED
    stream = io.StringIO()
    fallback = logging.StreamHandler(stream)
    fallback.setFormatter(logs.LineFormatter(journald=True))
    handler = journal.JournalHandler(
        str(path), logs.LineFormatter(journald=None), logs.context_fields, fallback
    )
    try:
        record = logging.LogRecord(
            "mapid.test", logging.WARNING, __file__, 1, "hi %s", ("x",), None
        )
        handler.handle(record)
    finally:
        handler.close()
        shutil.rmtree(path.parent, ignore_errors=True)
    assert stream.getvalue() == "<4>WARNING mapid.test: hi x\n"


def test_a_record_too_big_for_a_datagram_comes_in_a_sealed_memfd(journald: FakeJournald) -> None:
    stream = io.StringIO()
    handler = journal.JournalHandler(
        str(journald.path),
        logs.LineFormatter(journald=None),
        logs.context_fields,
        logging.StreamHandler(stream),
    )
    big = "x" * (1 << 19)  # 512 KiB: over the datagram limit (the socket's send buffer)
    try:
        record = logging.LogRecord("mapid.test", logging.ERROR, __file__, 7, big, None, None)
        record.mapid_profile = "Work"
        handler.handle(record)
        found = journald.wait_for(big, MAPID_PROFILE="Work", PRIORITY="3")
    finally:
        handler.close()
    assert journald.fds_seen == 1 and stream.getvalue() == ""
    assert found["MESSAGE"] == f"ERROR mapid.test: {big}"


def test_the_protocol_encoding_and_the_field_names() -> None:
    data = journal.encode([("MESSAGE", "one\ntwo"), ("PRIORITY", "6"), ("MAPID_OP", "x=y")])
    assert (
        data == b"MESSAGE\n" + (7).to_bytes(8, "little") + b"one\ntwo\nPRIORITY=6\nMAPID_OP=x=y\n"
    )
    assert journal.decode(data) == [("MESSAGE", "one\ntwo"), ("PRIORITY", "6"), ("MAPID_OP", "x=y")]
    for bad in ("_PID", "mapid_op", "MAPID-OP", "", "A" * 65):
        assert not journal.valid_field_name(bad)
        with pytest.raises(ValueError):
            journal.encode([(bad, "v")])
    assert journal.valid_field_name("MAPID_PROFILE") and journal.valid_field_name("CODE_LINE")


def test_journald_only_when_stderr_is_the_journal_stream_and_its_socket_exists(
    journald: FakeJournald, tmp_path: Path
) -> None:
    info = os.fstat(2)
    stream = f"{info.st_dev}:{info.st_ino}"
    chosen = logs.handler({"JOURNAL_STREAM": stream, journal.SOCKET_ENV: str(journald.path)})
    try:
        assert isinstance(chosen, journal.JournalHandler)
    finally:
        chosen.close()
    missing = {"JOURNAL_STREAM": stream, journal.SOCKET_ENV: str(tmp_path / "none")}
    for environ in (missing, {"JOURNAL_STREAM": "1:2"}, {}):
        plain = logs.handler(environ)
        assert not isinstance(plain, journal.JournalHandler)
        assert isinstance(plain.formatter, logs.LineFormatter)
        assert plain.formatter.journald is (environ is missing)


def test_a_request_names_its_op_session_and_profile_until_it_ends(
    journald: FakeJournald,
) -> None:
    """What the request server does around every op (logs.enter_request/leave_request)."""

    class Profile:
        name = "Work"

    class Session:
        id = "3f2a9c0d41b7e655"
        profile = Profile()

    handler = journal.JournalHandler(
        str(journald.path),
        logs.LineFormatter(journald=None),
        logs.context_fields,
        logging.StreamHandler(io.StringIO()),
    )
    log = logging.getLogger("mapid.test.request")
    log.addHandler(handler)
    log.propagate = False
    try:
        mark = logs.enter_request("services.configure", Session())
        try:
            log.error("op %s failed", "services.configure")
        finally:
            logs.leave_request(mark)
        log.warning("after the request", extra=logs.about(profile="Home", service="mail"))
        inside = journald.wait_for("op services.configure failed")
        after = journald.wait_for("after the request")
    finally:
        log.removeHandler(handler)
        handler.close()
    assert inside["MAPID_OP"] == "services.configure"
    assert inside["MAPID_SESSION"] == "3f2a9c0d41b7e655" and inside["MAPID_PROFILE"] == "Work"
    assert inside["MESSAGE"] == (
        "ERROR mapid.test.request session=3f2a9c0d41b7e655: op services.configure failed"
    )
    assert inside["CODE_FUNC"] == "test_a_request_names_its_op_session_and_profile_until_it_ends"
    assert after["MAPID_PROFILE"] == "Home" and after["MAPID_SERVICE"] == "mail"
    assert "MAPID_OP" not in after and "MAPID_SESSION" not in after
