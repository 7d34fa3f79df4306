"""Status rows stay true: what a row states follows the change it describes, paced.

Monitors read the status table and its events (docs/protocol.md 7.2), so a row's values must
follow changes made by other programs within a second or two (a TABLE_ROW_MODIFIED), and a
burst of such changes must be a few events, never one per change. Read here through a
plain SUB socket on the daemon's event endpoint and through session.status_table.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest
import zmq

from mapid.client import Client
from mapid.constants import ResourceType
from mapid.paths import read_connection_file

from conftest import DaemonFactory, DaemonProc, standard_profile
from smtp_server import SmtpServer, smtp_section

PLAIN = b"From: Grace <grace@example.org>\nTo: ada@example.org\nSubject: %d\n\nHello.\n"


class StatusEvents:
    """The status-table events of one session, from the daemon's PUB socket."""

    def __init__(self, daemon: DaemonProc, session: str) -> None:
        info = read_connection_file(daemon.runtime)
        assert info is not None
        self.sock: zmq.Socket[Any] = zmq.Context.instance().socket(zmq.SUB)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(info.events)
        self.sock.setsockopt(zmq.SUBSCRIBE, b"hb")
        self.sock.setsockopt(zmq.SUBSCRIBE, f"status.{session}".encode())
        self.seen: list[tuple[float, dict[str, Any]]] = []
        """(the daemon's timestamp, row) of every TABLE_ROW_MODIFIED."""
        deadline = time.monotonic() + 10
        while not self._one(deadline - time.monotonic(), heartbeat=True):  # subscribed
            assert time.monotonic() < deadline, "no heartbeat"

    def _one(self, timeout: float, *, heartbeat: bool = False) -> bool:
        if not self.sock.poll(max(0, int(timeout * 1000))):
            return False
        topic, data = self.sock.recv_multipart()
        event = msgpack.unpackb(data, raw=False, strict_map_key=False)
        if topic.startswith(b"status.") and event["type"] == "TABLE_ROW_MODIFIED":
            self.seen.append((event["ts"].to_unix(), event["row"]))
        return heartbeat and topic == b"hb"

    def rows_of(self, dll: str) -> list[tuple[float, dict[str, Any]]]:
        return [(at, row) for at, row in self.seen if row.get("PR_PROVIDER_DLL_NAME") == dll]

    def wait(self, dll: str, check: Callable[[dict[str, Any]], bool], timeout: float) -> float:
        """When (the daemon's time.time()) that provider's row was modified to pass
        `check`."""
        deadline = time.monotonic() + timeout
        while True:
            for at, row in self.rows_of(dll):
                if check(row):
                    return at
            left = deadline - time.monotonic()
            assert left > 0, f"no such {dll} row within {timeout} s: {self.rows_of(dll)}"
            self._one(left)

    def during(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            self._one(left)

    def close(self) -> None:
        self.sock.close(linger=0)


@pytest.fixture
def events() -> Iterator[list[StatusEvents]]:
    made: list[StatusEvents] = []
    yield made
    for one in made:
        one.close()


def logon(daemon: DaemonProc, made: list[StatusEvents]) -> tuple[Client, bytes, StatusEvents]:
    client = daemon.client()
    logged = client.session_logon("alpha", ["MAPI_NEW_SESSION"])
    listener = StatusEvents(daemon, str(logged["session"]))
    made.append(listener)
    return client, bytes(logged["token"]), listener


def row_of(client: Client, token: bytes, dll: str) -> dict[str, Any]:
    rows = client.session_status_table(token)["rows"]
    [row] = [r for r in rows if r.get("PR_PROVIDER_DLL_NAME") == dll]
    return dict(row)


def mta_deliver(root: Path, data: bytes, key: str) -> None:
    """As an MTA delivers: written in tmp/, then renamed into new/."""
    tmp = root / "tmp" / key
    tmp.write_bytes(data)
    os.rename(tmp, root / "new" / key)


def counted(count: int) -> Callable[[dict[str, Any]], bool]:
    wanted = f": {count} message{'' if count == 1 else 's'} in Inbox"
    return lambda row: str(row.get("PR_STATUS_STRING", "")).endswith(wanted)


def test_the_store_row_counts_mail_another_program_delivers(
    make_daemon: DaemonFactory, tmp_path: Path, events: list[StatusEvents]
) -> None:
    daemon = make_daemon(profiles={"alpha": standard_profile(tmp_path / "alpha")})
    client, token, listener = logon(daemon, events)
    root = tmp_path / "alpha" / "Mail"
    assert counted(0)(row_of(client, token, "maildir"))

    before = time.time()
    mta_deliver(root, PLAIN % 1, "1704099600.M1P9Q1.mx")
    took = listener.wait("maildir", counted(1), timeout=5) - before
    assert took < 2.5, f"the row followed the delivery after {took:.2f} s"
    assert counted(1)(row_of(client, token, "maildir"))

    # Gone again (mutt deletes it): the row follows that too.
    (root / "new" / "1704099600.M1P9Q1.mx").unlink()
    listener.wait("maildir", counted(0), timeout=5)
    assert counted(0)(row_of(client, token, "maildir"))


def test_a_burst_of_deliveries_is_a_few_row_changes(
    make_daemon: DaemonFactory, tmp_path: Path, events: list[StatusEvents]
) -> None:
    daemon = make_daemon(profiles={"alpha": standard_profile(tmp_path / "alpha")})
    client, token, listener = logon(daemon, events)
    root = tmp_path / "alpha" / "Mail"

    started = time.monotonic()
    for i in range(200):  # spread over a second or two: many watch batches, many refreshes
        mta_deliver(root, PLAIN % i, f"1704099600.M{i}P9Q{i}.mx")
        if i % 10 == 9:
            time.sleep(0.05)
    listener.wait("maildir", counted(200), timeout=10)
    listener.during(1.5)  # and nothing more after the last
    span = time.monotonic() - started
    modified = listener.rows_of("maildir")
    assert counted(200)(modified[-1][1]), modified[-1]
    assert counted(200)(row_of(client, token, "maildir"))
    # Two a second at most: a few for the whole burst, never one a message.
    assert 1 <= len(modified) <= 2 * span + 1, (len(modified), span)
    assert len(modified) <= 8, len(modified)
    gaps = [b - a for (a, _), (b, _) in itertools.pairwise(modified)]
    assert all(gap > 0.3 for gap in gaps), gaps


def test_the_contact_count_follows_a_burst_of_cards_paced(
    make_daemon: DaemonFactory, tmp_path: Path, events: list[StatusEvents]
) -> None:
    daemon = make_daemon(profiles={"alpha": standard_profile(tmp_path / "alpha")})
    client, token, listener = logon(daemon, events)
    folder = tmp_path / "alpha" / "contacts"
    assert row_of(client, token, "vcard")["PR_STATUS_STRING"] == "2 contacts"

    started = time.monotonic()
    for i in range(60):  # vdirsyncer's way: a temp name, then renamed into place
        card = f"BEGIN:VCARD\nVERSION:4.0\nUID:c-{i}\nFN:Card {i}\nEMAIL:c{i}@example.org\n"
        tmp = folder / f".c-{i}.vcf.tmp"
        tmp.write_text(card + "END:VCARD\n")
        tmp.rename(folder / f"c-{i}.vcf")
        time.sleep(0.025)
    listener.wait("vcard", lambda r: r["PR_STATUS_STRING"] == "62 contacts", timeout=10)
    listener.during(1.5)
    span = time.monotonic() - started
    modified = listener.rows_of("vcard")
    assert modified[-1][1]["PR_STATUS_STRING"] == "62 contacts"
    assert 1 <= len(modified) <= 2 * span + 1, (len(modified), span)
    gaps = [b - a for (a, _), (b, _) in itertools.pairwise(modified)]
    assert all(gap > 0.3 for gap in gaps), gaps


def test_the_transport_row_stops_saying_connected_when_the_server_hangs_up(
    make_daemon: DaemonFactory,
    tmp_path: Path,
    smtp_server: SmtpServer,
    events: list[StatusEvents],
) -> None:
    profile = standard_profile(tmp_path / "alpha") + smtp_section(smtp_server)
    daemon = make_daemon(profiles={"alpha": profile})
    client, token, listener = logon(daemon, events)
    rows = client.session_status_table(token)["rows"]
    [row] = [r for r in rows if r["PR_RESOURCE_TYPE"] == ResourceType.MAPI_TRANSPORT_PROVIDER]
    status = client.session_open_entry(token, row["PR_ENTRYID"])["handle"]
    client.status_validate_state(token, status, ["FORCE_XP_CONNECT"])
    assert row_of(client, token, "smtp")["PR_STATUS_STRING"].startswith("Connected:")
    smtp_server.wait_connections(1)

    before = time.time()
    smtp_server.stop()  # the server goes away, cutting the idle connection
    ready = listener.wait("smtp", lambda r: r["PR_STATUS_STRING"].startswith("Ready:"), 5)
    took = ready - before
    assert took < 2.5, took
    assert row_of(client, token, "smtp")["PR_STATUS_STRING"].startswith("Ready:")
